"""In-process tagging speed of a trained artifact: sentences/s one at a time and in batches of 64.

    .venv/bin/python bench/tagging_speed.py --model MODEL [--data ../shared/datasets/atis] [--threads 1]
        [--backend auto|torch|onnx] [--json]

Loads the artifact with ``Predictor.load`` (manifest verified), warms up, then tags every test
sentence (pre-tokenised, as in the data) one call per sentence, then in calls of 64. Confidences
(CRF marginals) and spans are computed as the service computes them. ``--backend`` is passed to
``Predictor.load`` (onnxruntime gets ``--threads`` intra-op threads); ``--json`` prints the result as
one JSON object on the last stdout line (``bench/suite.py`` reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "atis")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="passes over the test set; the best is reported")
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                        help="inference backend (default auto: onnx when the artifact has a graph)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last stdout line")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))
    from slotfill.predictor import Predictor
    from training.compare import tagging_speed

    predictor = Predictor.load(args.model, backend=args.backend, threads=args.threads)
    sentences = [line.split() for line in (args.data / "test" / "seq.in").read_text().splitlines() if line.strip()]
    runs = [tagging_speed(predictor, sentences, limit=len(sentences)) for _ in range(args.repeat)]
    single, batched = max(r[0] for r in runs), max(r[1] for r in runs)
    result = {"model": str(args.model), "data": str(args.data), "sentences": len(sentences), "threads": args.threads,
              "backend": predictor.backend, "repeat": args.repeat,
              "single_per_second": round(single), "batch64_per_second": round(batched),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.machine(),
              "cpus": os.cpu_count(), "torch": torch.__version__, "command": " ".join(sys.argv)}
    print(f"{len(sentences)} sentences, {predictor.backend} backend, {args.threads} thread(s): {single:,.0f}/s one "
          f"at a time, {batched:,.0f}/s in batches of 64")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
