"""Where an utterance's time goes inside the predictor, stage by stage, in calls of B utterances.

    .venv/bin/python bench/stage_costs.py --model runs/atis --backend onnx-int8 --batch 16

Reads the first ``--count`` utterances of ``DATA/test/seq.in`` (raw text, as the service gets it), splits them
into calls of ``--batch``, and times each stage over all calls: tokenising, the network (its inputs from the
tokens, graph or torch, outputs; for torch the inputs are also timed on their own), Viterbi, forward-backward
(the confidences; both with the decoder the predictor uses: the compiled kernels, or NumPy under
``SLOTFILL_DECODER=numpy``), the whole ``predict_texts`` (the stages plus assembling spans and the answer), best of
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

from viterbi_speed import best_of  # noqa: E402  (bench/ is on the path when run as a script)

from slotfill import fastdecode  # noqa: E402
from slotfill.decoding import forward_backward, viterbi  # noqa: E402
from slotfill.errors import SlotfillError  # noqa: E402
from slotfill.predictor import Predictor  # noqa: E402


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
    tables, confidence_tables = predictor._tables, predictor._confidence_tables
    if tables is None:
        parser.error(f"{args.model} has no CRF: this breakdown is for CRF taggers")
    if predictor.decoder == "c":  # the compiled kernels (slotfill/fastdecode.py), as the predictor runs them
        kernels, confidence_kernels = predictor._kernels, predictor._confidence_kernels
        paths = [fastdecode.viterbi(em, lens, kernels) for em, _, lens in outputs]

        def decode() -> list:
            return [fastdecode.viterbi(em, lens, kernels) for em, _, lens in outputs]

        def confidences() -> list:
            return [fastdecode.path_posteriors(em, lens, confidence_kernels, path)
                    for (em, _, lens), path in zip(outputs, paths)]
    else:
        def decode() -> list:
            return [viterbi(em, lens, tables) for em, _, lens in outputs]

        def confidences() -> list:
            return [forward_backward(em, lens, confidence_tables) for em, _, lens in outputs]

    stages = {
        "tokenise": lambda: [[predictor.tokenize(text) for text in call] for call in calls],
        "network": lambda: [predictor.run_network(call) for call in norms],
        "viterbi": decode,
        "forward-backward": confidences,
        "predict_texts (all)": lambda: [predictor.predict_texts(call) for call in calls],
    }
    if not hasattr(predictor.engine, "run_tokens"):  # the onnx engines build their inputs inside "network"
        stages = {"network inputs": lambda: [predictor.featurizer.arrays(call) for call in norms], **stages}
        stages = {name: stages[name] for name in ("tokenise", "network inputs", "network", "viterbi",
                                                  "forward-backward", "predict_texts (all)")}
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
