"""A `slotfill compare` table from runs already trained with `slotfill train`, one row per configuration.

`slotfill compare` trains every configuration itself, one run at a time; long experiments (contextual
models, distillation) are trained as separate `slotfill train` runs, two side by side. This reads their
artifacts (report.json, model_card.json) and measures in-process tagging speed of each, after training, on
the test split, exactly as `compare` does, so both tables mean the same thing.

    .venv/bin/python bench/summarize_runs.py --data ../shared/datasets/atis \\
        --row bilstm-crf=runs/atis-base --row minilm-bilstm-crf=runs/atis-ctx --out bench/results/x.json

Each ``--row NAME=DIR`` takes every ``DIR/seed*/`` artifact.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slotfill.data import load_corpus  # noqa: E402
from slotfill.inference.predictor import Predictor  # noqa: E402
from training.compare import comparison_table, tagging_speed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--row", action="append", required=True, help="NAME=DIR with DIR/seed*/ artifacts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the results as JSON here (and the table beside it as .md)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.data)
    sentences = [list(e.tokens) for e in (corpus.test or corpus.valid)]
    results: dict[str, list[dict]] = {}
    seeds = 0
    for spec in args.row:
        name, _, directory = spec.partition("=")
        runs = sorted(Path(directory).glob("seed*/manifest.json"))
        if not runs:
            parser.error(f"--row {spec}: no DIR/seed*/manifest.json")
        seeds = max(seeds, len(runs))
        for manifest in runs:
            run = manifest.parent
            report = json.loads((run / "report.json").read_text())
            card = json.loads((run / "model_card.json").read_text())
            predictor = Predictor.load(run)
            single, batched = tagging_speed(predictor, sentences)
            results.setdefault(name, []).append({
                "run": str(run), "seed": card["training"]["seed"], "slot_f1": report["slot_f1"],
                "intent_accuracy": report["intent_accuracy"], "split": report["split"],
                "train_seconds": card["train_seconds"], "epochs": report.get("best_epoch"),
                "parameters": card["parameters"], "backend": predictor.backend,
                "tag_single_per_second": single, "tag_batch64_per_second": batched})
            print(f"{name} {run.name}: slot F1 {100 * report['slot_f1']:.2f}, {single:.0f}/s one at a time "
                  f"({predictor.backend})", file=sys.stderr, flush=True)
    table = comparison_table(results, args.data, seeds)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"data": str(args.data), "threads": args.threads, "results": results},
                                       indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
