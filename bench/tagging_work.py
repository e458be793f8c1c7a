"""A fixed tagging workload, to be counted under ``valgrind --tool=callgrind`` (instructions, not seconds:
the same for the same code and inputs however busy the machine is).

    valgrind --tool=callgrind --callgrind-out-file=cg.out .venv/bin/python bench/tagging_work.py \
        --tree TREE --model MODEL --mode batch|single --passes 3 [--count 300] [--data ../shared/datasets/atis]

Loads ``--model`` with TREE's code (TREE first on the import path; the default backend), tags the first
``--count`` test sentences once (64 at a time) to warm up, then ``--passes`` times: one sentence per call, or
calls of 64. The cost of the passes is the count of a run with ``--passes N`` minus that of ``--passes 0``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--mode", choices=("single", "batch"), required=True)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets" / "atis")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    try:
        from slotfill.inference.predictor import Predictor
    except ImportError:  # a tree from before the library's folders
        from slotfill.predictor import Predictor
    predictor = Predictor.load(args.model)
    lines = (args.data / "test" / "seq.in").read_text(encoding="utf-8").splitlines()
    sentences = [line.split() for line in lines if line.strip()][: args.count]
    predictor.predict_tokens(sentences[:64])
    for _ in range(args.passes):
        if args.mode == "single":
            for tokens in sentences:
                predictor.predict_tokens([tokens])
        else:
            for start in range(0, len(sentences), 64):
                predictor.predict_tokens(sentences[start:start + 64])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
