#!/usr/bin/env bash
# Install slotfill with its test dependencies and run the test suite.
# Extra arguments go to pytest (e.g. `-m slow` for the tests that train on ATIS/SNIPS).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh dev
if [ "$#" -eq 0 ]; then
    set -- -m "not slow"
fi
exec .venv/bin/python -m pytest "$@"
