#!/usr/bin/env bash
# Create .bench/flair-venv: a separate virtual environment with flair for bench/flair_runner.py, plus the web
# stack (fastapi, uvicorn, uvloop, httptools, pydantic) that bench/peer_app.py needs to serve flair for
# bench/suite.py -- at the versions pinned in requirements/serve.lock, so the peer runs the same HTTP stack as
# slotfill's service. flair pins transformers 4.x, which conflicts with slotfill's environment, hence its own venv.
# Idempotent: does nothing if the venv already imports the pinned torch and flair and the web stack.
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
import fastapi, uvicorn, uvloop, httptools, pydantic
ok = torch.__version__.split("+")[0] == sys.argv[1] and flair.__version__ == sys.argv[2]
print(f"torch {torch.__version__}, flair {flair.__version__}, fastapi {fastapi.__version__}, "
      f"uvicorn {uvicorn.__version__}, pydantic {pydantic.__version__}")
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
# The web stack comes in the same command, at serve.lock's versions when that file has them.
WEB=(fastapi uvicorn uvloop httptools pydantic pydantic-core starlette anyio)
PINS=()
for name in "${WEB[@]}"; do
    pin="$(grep -ioE "^${name}==[^ ;\\]+" "$ROOT/requirements/serve.lock" 2>/dev/null | head -n1 || true)"
    PINS+=("${pin:-$name}")
done
"$VENV/bin/python" -m pip install "torch==$TORCH_VERSION" "flair==$FLAIR_VERSION" "${PINS[@]}"
check
echo "$VENV is ready"
