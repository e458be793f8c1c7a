#!/usr/bin/env bash
# Install, train on the bundled restaurant-booking sample, export the artifact,
# start the API, send one request and print the answer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
model_dir="artifacts/sample"
# The sample's own recipe (slotfill/resources/sample/recipe.json): the default model, fewer epochs, one thread.
.venv/bin/slotfill train --data sample --config sample --out "$model_dir" --overwrite
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/slotfill serve --model "$model_dir" --port "$port" > artifacts/serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
.venv/bin/python scripts/ask.py "http://127.0.0.1:$port" "book a table for four at an italian place tomorrow at 7pm"
