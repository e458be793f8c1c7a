#!/usr/bin/env bash
# Regenerate requirements/serve.lock: every package the API image installs, pinned with sha256
# hashes (pip install --require-hashes refuses anything else). Run after changing the base or
# `serve` dependencies in pyproject.toml; the Dockerfile's api stage installs from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh dev
.venv/bin/python -m pip install --quiet --disable-pip-version-check "pip-tools>=7.4"
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" .venv/bin/pip-compile --quiet --extra serve --generate-hashes \
    --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
    --output-file requirements/serve.lock pyproject.toml
