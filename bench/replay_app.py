"""The service with its model's cost taken out: the ceiling the HTTP stack leaves for the model.

    .venv/bin/python bench/replay_app.py --model runs/atis --port 8004 [--data ../shared/datasets/atis]

Serves ``POST /v1/tag`` and every other route exactly as ``python -m service`` does (``service.main.serve``:
same app factory code, middleware, validation, micro-batching, response building, access log, metrics), but
the predictor answers the ``--data`` test utterances (``test/seq.in``, stripped, as ``bench/suite.py`` and
``bench/ab_http.sh`` send them) from answers it computed once at start-up with the real model; any other text
goes to the real model. Its rate against the no-op endpoint's is the most any model could leave slotfill's
service on this machine; the rate with the real model then shows what the model itself costs. Settings come
from ``SLOTFILL_*`` as for the service (``--backend`` picks the model that computes the answers).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:  # ``service`` and ``slotfill`` importable when run as a script from anywhere
    sys.path.insert(0, str(REPO))

DATA_ENV = "SLOTFILL_REPLAY_DATA"


class ReplayPredictor:
    """A loaded predictor whose answers to known texts are looked up instead of computed; everything else
    (name, labels, tokenizer, other texts) is the predictor's own."""

    def __init__(self, predictor: Any, texts: Sequence[str]) -> None:
        self._predictor = predictor
        unique = list(dict.fromkeys(texts))
        self._answers = dict(zip(unique, predictor.predict_texts(unique)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)

    def predict_texts(self, texts: Sequence[str]) -> list[Any]:
        answers = self._answers
        found = [answers.get(text) for text in texts]
        missing = [text for text, answer in zip(texts, found) if answer is None]
        if missing:
            computed = iter(self._predictor.predict_texts(missing))
            found = [answer if answer is not None else next(computed) for answer in found]
        return found


def create() -> Any:
    """The uvicorn factory: ``service.app.create_app_from_env`` with the replaying predictor."""
    from service.app import configure_process, create_app
    from service.settings import load_settings
    from service.state import settings_loader

    settings = load_settings()
    configure_process(settings)
    lines = Path(os.environ[DATA_ENV], "test", "seq.in").read_text(encoding="utf-8").splitlines()
    texts = [line.strip() for line in lines if line.strip()]
    load = settings_loader(settings)
    app = create_app(settings, loader=lambda model_dir: ReplayPredictor(load(model_dir), texts))
    app.state.gc_freeze = True  # as create_app_from_env
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "atis")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8004)
    parser.add_argument("--backend", help="backend of the model that computes the answers (default: SLOTFILL_BACKEND)")
    args = parser.parse_args(argv)
    if not (args.data / "test" / "seq.in").is_file():
        parser.error(f"{args.data / 'test' / 'seq.in'} does not exist")
    os.environ[DATA_ENV] = str(args.data.resolve())
    from service.main import serve
    from slotfill.errors import SlotfillError

    try:
        # One worker: the factory is imported from this script's folder, which only this process has on its path.
        serve(args.model, args.host, args.port, 1, factory="replay_app:create", backend=args.backend)
    except SlotfillError as exc:  # no model there, a bad manifest, a backend that cannot run: one line
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
