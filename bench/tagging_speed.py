"""In-process tagging speed of a trained artifact: sentences/s one at a time and in batches of 64.

    .venv/bin/python bench/tagging_speed.py --model MODEL [--data ../shared/datasets/atis] [--threads 1]
        [--backend auto|torch|onnx] [--alternatives K] [--json]

Loads the artifact with ``Predictor.load`` (manifest verified), warms up, then tags every test
sentence (pre-tokenised, as in the data) one call per sentence, then in calls of 64. Confidences
(CRF marginals) and spans are computed as the service computes them. ``--backend`` is passed to
``Predictor.load`` (onnxruntime gets ``--threads`` intra-op threads); ``--json`` prints the result as
one JSON object on the last stdout line (``bench/suite.py`` reads it). ``--alternatives K`` asks every call
for the K best label sequences too (``predict_tokens(..., alternatives=K)``), to price that option.
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


class LabelsOnly:
    """A predictor's ``predict_labels`` (Viterbi labels and intents, no confidences) behind ``predict_tokens``."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.backend = predictor.backend + " (labels only)"

    def predict_tokens(self, token_lists):
        from slotfill.text.tokenizer import normalize_token

        config = self.predictor.tokenizer_config
        return self.predictor.predict_labels([[normalize_token(t, config) or t for t in tokens]
                                              for tokens in token_lists])


class WithAlternatives:
    """A predictor's ``predict_tokens`` asking for ``k`` alternatives in every call."""

    def __init__(self, predictor, k: int):
        self.predictor, self.k = predictor, k
        self.backend = f"{predictor.backend} (alternatives {k})"

    def predict_tokens(self, token_lists):
        return self.predictor.predict_tokens(token_lists, alternatives=self.k)


class PlainBiLSTM:
    """The baseline the speed targets are quoted against: a plain PyTorch BiLSTM tagger.

    Word embedding (100) -> one bidirectional ``nn.LSTM`` (hidden 200 per direction, the default
    recipe's size) -> linear -> argmax, with the artifact's vocabulary and label count and random
    weights (speed does not depend on them); no characters, CRF, intent, confidences or spans. One
    call: ids via a dict, one tensor, forward, argmax, label strings; batches are padded, not packed.
    Measured in the same run as slotfill, it turns the targets' absolute figures into ratios that
    hold on a slower or faster machine.
    """

    backend = "plain PyTorch BiLSTM"

    def __init__(self, vocab: dict[str, int], labels: list[str], hidden: int = 200, dim: int = 100):
        import torch

        torch.manual_seed(0)
        self.vocab, self.labels = vocab, labels
        self.embedding = torch.nn.Embedding(len(vocab) + 2, dim, padding_idx=0)
        self.lstm = torch.nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.linear = torch.nn.Linear(2 * hidden, len(labels))

    @classmethod
    def like(cls, model_dir: Path) -> "PlainBiLSTM":
        from slotfill.artifact.artifact import Artifact

        artifact = Artifact.from_pretrained(model_dir)
        labels = [artifact.config.id2label[i] for i in range(artifact.config.num_labels)]
        return cls(artifact.featurizer.words.stoi, labels)

    def predict_tokens(self, token_lists):
        import torch

        steps = max(len(tokens) for tokens in token_lists)
        ids = [[self.vocab.get(token.lower(), 1) for token in tokens] + [0] * (steps - len(tokens))
               for tokens in token_lists]
        with torch.inference_mode():
            states, _ = self.lstm(self.embedding(torch.tensor(ids)))
            best = self.linear(states).argmax(-1).tolist()
        return [[self.labels[i] for i in row[:len(tokens)]] for row, tokens in zip(best, token_lists)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "atis")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="passes over the test set; the best is reported")
    parser.add_argument("--backend", choices=["auto", "torch", "onnx", "onnx-int8", "plain"], default="auto",
                        help="inference backend (default auto: onnx when the artifact has a graph); 'plain': the "
                             "baseline, a plain PyTorch BiLSTM tagger (see plain_bilstm)")
    parser.add_argument("--labels-only", action="store_true",
                        help="labels and intents only (Viterbi, no confidences or spans), as evaluation tags")
    parser.add_argument("--alternatives", type=int, default=0, metavar="K",
                        help="ask every call for the K best label sequences too (0: none, the default answer)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last stdout line")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))
    from slotfill.inference.predictor import Predictor
    from training.compare import tagging_speed

    sentences = [line.split() for line in (args.data / "test" / "seq.in").read_text().splitlines() if line.strip()]
    if args.backend == "plain":
        predictor = PlainBiLSTM.like(args.model)
    else:
        predictor = Predictor.load(args.model, backend=args.backend, threads=args.threads)
        if args.labels_only:
            predictor = LabelsOnly(predictor)
        elif args.alternatives:
            predictor = WithAlternatives(predictor, args.alternatives)
    runs = [tagging_speed(predictor, sentences, limit=len(sentences)) for _ in range(args.repeat)]
    single, batched = max(r[0] for r in runs), max(r[1] for r in runs)
    result = {"model": str(args.model), "data": str(args.data), "sentences": len(sentences), "threads": args.threads,
              "backend": predictor.backend, "labels_only": args.labels_only, "alternatives": args.alternatives, "repeat": args.repeat,
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
