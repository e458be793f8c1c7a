#!/usr/bin/env bash
# Create .bench/flair-venv: a separate virtual environment with flair for bench/flair_runner.py.
# flair pins transformers 4.x, which conflicts with slotfill's environment, hence its own venv.
# Idempotent: does nothing if the venv already imports the pinned torch and flair.
#   bash bench/setup.sh    # PYTHON=python3.11 chooses the interpreter; FLAIR_VENV=DIR another venv folder
set -euo pipefail

TORCH_VERSION=2.13.0
FLAIR_VERSION=0.15.1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FLAIR_VENV:-$ROOT/.bench/flair-venv}"
PY="${PYTHON:-python3}"

check() {
    "$VENV/bin/python" - "$TORCH_VERSION" "$FLAIR_VERSION" <<'PYEOF' 2>/dev/null
import sys
import torch, flair
ok = torch.__version__.split("+")[0] == sys.argv[1] and flair.__version__ == sys.argv[2]
print(f"torch {torch.__version__}, flair {flair.__version__}")
sys.exit(0 if ok else 1)
PYEOF
}

if [ -x "$VENV/bin/python" ] && check; then
    echo "$VENV is ready"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# torch must be pinned in the same command as flair, or pip resolves a multi-GB CUDA build of torch.
"$VENV/bin/python" -m pip install "torch==$TORCH_VERSION" "flair==$FLAIR_VERSION"
check
echo "$VENV is ready"
