#!/usr/bin/env bash
# HTTP A/B of two source trees (e.g. two commits) serving their own artifacts, in interleaved rounds, so that
# a slow spell of a shared machine hits both sides alike. Each run: start `python -m service` from the tree,
# wait for /ready, 3 s of unmeasured load, then one wrk run; prints "A <requests/s>" / "B <requests/s>" per round.
#
#   git worktree add /tmp/slotfill-before <commit>          # the tree to compare against
#   bash bench/ab_http.sh /tmp/slotfill-before MODEL_A . MODEL_B [ROUNDS] [CONNECTIONS] [SECONDS]
#
# Both trees run with this checkout's .venv; settings come from the environment as usual (SLOTFILL_BACKEND,
# SLOTFILL_MODEL_THREAD, SLOTFILL_LOG_LEVEL, ...; unset, the service's defaults). ENV_A / ENV_B add settings for one
# side only, as space-separated VAR=value words: to compare two settings on one tree,
#   ENV_A="SLOTFILL_MODEL_THREAD=false" ENV_B="SLOTFILL_MODEL_THREAD=true" bash bench/ab_http.sh . MODEL . MODEL
# Requests: the first 100 ATIS test utterances as {"text": ...}; BODY_A / BODY_B add request fields to one side's
# bodies, as a JSON object: to price an option on one tree,
#   BODY_B='{"alternatives": 3}' bash bench/ab_http.sh . MODEL . MODEL
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
if [ $# -lt 4 ]; then
    echo "usage: bash bench/ab_http.sh TREE_A MODEL_A TREE_B MODEL_B [ROUNDS=4] [CONNECTIONS=16] [SECONDS=10]" >&2
    exit 2
fi
for dir in "$1" "$2" "$3" "$4"; do
    [ -d "$dir" ] || { echo "error: $dir is not a directory" >&2; exit 2; }
done
TREE_A=$(cd "$1" && pwd); MODEL_A=$(cd "$2" && pwd); TREE_B=$(cd "$3" && pwd); MODEL_B=$(cd "$4" && pwd)
ROUNDS=${5:-4}; CONNECTIONS=${6:-16}; SECONDS_PER_RUN=${7:-10}
for number in "$ROUNDS" "$CONNECTIONS" "$SECONDS_PER_RUN"; do
    [[ "$number" =~ ^[1-9][0-9]*$ ]] || { echo "error: ROUNDS, CONNECTIONS and SECONDS must be whole numbers >= 1, got $number" >&2; exit 2; }
done
PYTHON="$REPO/.venv/bin/python"
DATA="$REPO/../shared/datasets/atis/test/seq.in"
for need in "$PYTHON" "$DATA"; do
    [ -e "$need" ] || { echo "error: $need does not exist" >&2; exit 2; }
done
command -v wrk >/dev/null || { echo "error: wrk is not installed (apt-get install -y wrk)" >&2; exit 2; }
BODIES_A=$(mktemp); BODIES_B=$(mktemp)
trap 'rm -f "$BODIES_A" "$BODIES_B"; [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null || true' EXIT
make_bodies() {  # $1 extra fields (a JSON object), $2 the file
    head -100 "$DATA" | "$PYTHON" -c '
import json, sys
extra = json.loads(sys.argv[1]) if sys.argv[1] else {}
if not isinstance(extra, dict):
    raise SystemExit("error: BODY_A / BODY_B must be a JSON object")
for line in sys.stdin:
    print(json.dumps({"text": line.strip(), **extra}))
' "$1" > "$2"
}
make_bodies "${BODY_A:-}" "$BODIES_A"
make_bodies "${BODY_B:-}" "$BODIES_B"
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

for word in ${ENV_A:-} ${ENV_B:-}; do
    [[ "$word" =~ ^[A-Z_][A-Z0-9_]*=[^[:space:]]*$ ]] || { echo "error: ENV_A / ENV_B hold VAR=value words, got $word" >&2; exit 2; }
done

run() {  # $1 label, $2 tree, $3 model, $4 extra VAR=value words, $5 the bodies
    # shellcheck disable=SC2086  # $4 is split into its words on purpose
    (cd "$2" && exec env SLOTFILL_MODEL_DIR="$3" OMP_NUM_THREADS=1 $4 \
        "$PYTHON" -m service --port "$PORT") > /dev/null 2>&1 &
    SERVER=$!
    for _ in $(seq 150); do
        curl -sf "http://127.0.0.1:$PORT/ready" > /dev/null && break
        kill -0 "$SERVER" 2>/dev/null || { echo "error: the server from $2 exited before it was ready" >&2; exit 1; }
        sleep 0.2
    done
    wrk -t2 -c"$CONNECTIONS" -d3s -s bench/load_post.lua "http://127.0.0.1:$PORT" -- "$5" > /dev/null
    local report
    report=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s bench/load_post.lua "http://127.0.0.1:$PORT" -- "$5")
    echo "$report" | grep WRK_JSON | "$PYTHON" -c '
import json, sys
label = sys.argv[1]
r = json.loads(sys.stdin.read().split("WRK_JSON", 1)[1])
rate = r["requests"] / (r["duration_us"] / 1e6)
errors = sum(r["errors"].values())
print(f"{label} {rate:.0f}" + (f" ({errors} errors)" if errors else ""))
' "$1"
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
    sleep 1
}

for _ in $(seq "$ROUNDS"); do
    run A "$TREE_A" "$MODEL_A" "${ENV_A:-}" "$BODIES_A"
    run B "$TREE_B" "$MODEL_B" "${ENV_B:-}" "$BODIES_B"
done
