"""Where an utterance's time goes inside the predictor, stage by stage, in calls of B utterances.

    .venv/bin/python bench/stage_costs.py --model runs/atis --backend onnx-int8 --batch 16

Reads the first ``--count`` utterances of ``DATA/test/seq.in`` (raw text, as the service gets it), splits them
into calls of ``--batch``, and times each stage over all calls: tokenising, the network (its inputs from the
tokens, graph or torch, outputs), Viterbi, reading the labels' spans, the confidences (forward-backward and the
spans' probabilities; Viterbi and these with the decoder the predictor uses: the compiled kernels, or NumPy under
``SLOTFILL_DECODER=numpy``), the whole ``predict_texts`` (the stages plus assembling the answer), best of
``--repeat`` passes, one thread.
The cycle collector is frozen first, as in a serving process (``service/gc_tuning.py``). Prints microseconds
per utterance.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before NumPy loads its BLAS

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import time  # noqa: E402

from slotfill.decoding.decoders import SoftmaxDecoder  # noqa: E402
from slotfill.errors import SlotfillError  # noqa: E402
from slotfill.inference.predictor import Predictor  # noqa: E402


def best_of(repeat: int, func) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "atis")
    parser.add_argument("--backend", default="onnx-int8")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--count", type=int, default=800)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    for name in ("batch", "count", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    try:
        predictor = Predictor.load(args.model, backend=args.backend, threads=1)
        text = (args.data / "test" / "seq.in").read_text(encoding="utf-8")
    except (SlotfillError, OSError, UnicodeDecodeError) as exc:
        parser.error(str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()][: args.count]
    if not lines:
        parser.error(f"{args.data / 'test' / 'seq.in'} has no utterances")
    calls = [lines[i:i + args.batch] for i in range(0, len(lines), args.batch)]
    tokens = [[predictor.tokenize(text) for text in call] for call in calls]
    norms = [[[t.norm or t.text for t in row] for row in call] for call in tokens]
    outputs = [predictor.run_network(call) for call in norms]
    decoder, scorer, reader = predictor._decoder, predictor._scorer, predictor._reader
    if isinstance(decoder, SoftmaxDecoder):
        parser.error(f"{args.model} has no CRF: this breakdown is for CRF taggers")
    paths = [decoder.best_paths(em, lens) for em, _, lens in outputs]
    spans = [[reader.read(ids[:n])[1] for ids, n in zip(path.tolist(), lens.tolist())]
             for path, (_, _, lens) in zip(paths, outputs)]

    def confidences() -> list:
        out = []
        for (em, _, lens), path, found in zip(outputs, paths, spans):
            rows = [row for row, row_spans in enumerate(found) for _ in row_spans]
            starts = [s for row_spans in found for _, s, _ in row_spans]
            ends = [e for row_spans in found for _, _, e in row_spans]
            out.append(scorer.posteriors(em, lens, path, rows, starts, ends))
        return out

    stages = {
        "tokenise": lambda: [[predictor.tokenize(text) for text in call] for call in calls],
        "network": lambda: [predictor.run_network(call) for call in norms],
        "viterbi": lambda: [decoder.best_paths(em, lens) for em, _, lens in outputs],
        "spans": lambda: [[reader.read(ids[:n]) for ids, n in zip(path.tolist(), lens.tolist())]
                          for path, (_, _, lens) in zip(paths, outputs)],
        "confidences": confidences,
        "predict_texts (all)": lambda: [predictor.predict_texts(call) for call in calls],
    }
    gc.collect()
    gc.freeze()
    result = {}
    for name, stage in stages.items():
        stage()  # warm
        best = best_of(args.repeat, stage)
        result[name] = round(1e6 * best / len(lines), 1)
    if args.json:
        print(json.dumps({"model": str(args.model), "backend": predictor.backend, "decoder": predictor.decoder,
                          "batch": args.batch,
                          "utterances": len(lines), "us_per_utterance": result}))
    else:
        print(f"{predictor.backend}, {predictor.decoder} decoder, calls of {args.batch}, {len(lines)} utterances, "
              "microseconds per utterance:")
        for name, value in result.items():
            print(f"  {name:22s} {value:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
