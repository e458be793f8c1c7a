"""The no-op baseline for ``bench/load.py``: ``POST /v1/tag`` parses the service's own request model
(``service.schemas.TagRequest``: same strict validation of ``text``/``tokens``) and answers a small
fixed JSON without running any model.

Run the way ``service/main.py`` runs the service (``uvicorn.run`` with loop and http ``auto``, i.e.
uvloop and httptools when installed, no access log, no server header, no proxy headers):

    .venv/bin/python bench/noop_app.py --port 8001 [--workers 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:  # ``service`` importable when run as a script from anywhere
    sys.path.insert(0, str(REPO))

from fastapi import FastAPI  # noqa: E402

from service.schemas import TagRequest  # noqa: E402

app = FastAPI(title="slotfill no-op baseline")

FIXED = {"tokens": [], "labels": [], "slots": [], "intent": None, "model": {"name": "noop", "version": "0"}}


@app.post("/v1/tag")
async def tag(body: TagRequest) -> dict:
    return FIXED


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    # The same uvicorn options as service.main.serve() (loop/http "auto" are uvicorn's defaults there too).
    uvicorn.run("noop_app:app", app_dir=str(BENCH), host=args.host, port=args.port, workers=args.workers,
                loop="auto", http="auto", log_level=args.log_level, access_log=False, server_header=False,
                proxy_headers=False, timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
