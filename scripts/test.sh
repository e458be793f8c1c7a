#!/usr/bin/env bash
# Install slotfill with its test dependencies and run the test suite.
# Extra arguments go to pytest (e.g. `-m slow` for the tests that train on ATIS/SNIPS).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh dev
# The Docker tests build and run the images. Where no engine answers but ../shared/tools/docker-local.sh
# is present (a machine that reaches the package registries but no container registry), it installs and
# starts one and builds the local base image; if that fails, those tests skip and say why.
if ! docker info >/dev/null 2>&1 && [ -f ../shared/tools/docker-local.sh ]; then
    bash ../shared/tools/docker-local.sh >/dev/null 2>&1 || echo "scripts/test.sh: no Docker engine; the Docker tests will skip" >&2
fi
# The browser tests (-m browser) drive Debian's chromium through chromium-driver (tests/browser_testlib.py).
# Where either is missing and apt-get is there, install them quietly; if that fails, those tests skip and say why.
if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; fi
    { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
        >/dev/null 2>&1 || echo "scripts/test.sh: could not install chromium and chromium-driver; the browser tests will skip" >&2
fi
if [ "$#" -eq 0 ]; then
    set -- -m "not slow"
fi
exec .venv/bin/python -m pytest "$@"
