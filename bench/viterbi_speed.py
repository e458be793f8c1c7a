"""Batched CRF Viterbi: dense steps against pruned steps, on a trained artifact's real emissions.

    .venv/bin/python bench/viterbi_speed.py --model MODEL [--data ../shared/datasets/atis] [--batch 64]

Runs the artifact's network once over the test split (in calls of ``--batch``, as the service's
micro-batches and ``predict_tokens`` do), then times :func:`slotfill.decoding.viterbi` on those
emissions with every step dense and with pruned steps (the default), best of ``--repeat`` passes.
Checks that both give identical paths and reports the share of rows the pruned step had to redo
densely. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from slotfill import decoding  # noqa: E402
from slotfill.data import load_corpus  # noqa: E402
from slotfill.errors import SlotfillError  # noqa: E402
from slotfill.predictor import Predictor  # noqa: E402
from slotfill.text import normalize_token  # noqa: E402


def best_of(repeat: int, func) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/atis")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for name in ("batch", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    try:
        predictor = Predictor.load(args.model)
        corpus = load_corpus(args.data)
    except (SlotfillError, OSError) as exc:
        parser.error(str(exc))
    tables = predictor._tables
    if tables is None:
        parser.error(f"{args.model}: not a CRF model")
    if not corpus.test:
        parser.error(f"{args.data}: no test split")
    norms = [[normalize_token(t, predictor.tokenizer_config) or t for t in e.tokens] for e in corpus.test]
    batches = [predictor.run_network(norms[i:i + args.batch]) for i in range(0, len(norms), args.batch)]

    def decode_all():
        return [decoding.viterbi(emissions, lengths, tables) for emissions, _, lengths in batches]

    pruned_paths = decode_all()
    redone, stepped, inside = [0], [0], [False]
    dense_step, plan_step = decoding._dense_step, decoding.PruningPlan.step

    def counting_dense(score, tables):
        if inside[0]:  # a row the pruned step could not prove, not a small step taken densely
            redone[0] += score.shape[0]
        return dense_step(score, tables)

    def counting_plan(self, score, tables):
        stepped[0] += score.shape[0]
        inside[0] = True
        try:
            return plan_step(self, score, tables)
        finally:
            inside[0] = False

    decoding._dense_step, decoding.PruningPlan.step = counting_dense, counting_plan
    decode_all()
    decoding._dense_step, decoding.PruningPlan.step = dense_step, plan_step
    pruned = best_of(args.repeat, decode_all)

    minimum = decoding._PRUNE_MIN_ROWS
    decoding._PRUNE_MIN_ROWS = 10**9  # every step dense
    dense_paths = decode_all()
    dense = best_of(args.repeat, decode_all)
    decoding._PRUNE_MIN_ROWS = minimum

    identical = all(np.array_equal(a, b) for a, b in zip(pruned_paths, dense_paths))
    n = len(norms)
    print(json.dumps({
        "model": str(args.model), "data": str(args.data), "sentences": n, "batch": args.batch,
        "labels": int(tables.transitions.shape[0]), "paths_identical": identical,
        "dense_us_per_sentence": round(dense / n * 1e6, 1), "pruned_us_per_sentence": round(pruned / n * 1e6, 1),
        "speedup": round(dense / pruned, 2),
        "pruned_step_rows": stepped[0], "rows_redone_densely": redone[0],
    }))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
