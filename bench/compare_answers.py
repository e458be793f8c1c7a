"""Do two source trees give the same answers? Tags a test split with each and compares them answer by answer.

    .venv/bin/python bench/compare_answers.py --tree-a /tmp/slotfill-before --model-a /tmp/atis-before \\
        --tree-b . --model-b runs/atis --backend onnx-int8

Each side runs in its own process with its tree first on ``sys.path`` (so a ``git worktree`` of another commit
uses that commit's code) and tags every utterance of ``DATA/test/seq.in`` once one at a time and once in calls
of ``--batch``. Prints one JSON object: answers compared, answers identical in full, answers with the same
labels and intent, and how many token/span/intent confidences differ and by how much at most.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TAGGER = """
import json, sys
tree, model, backend, data, batch, out = sys.argv[1:7]
sys.path.insert(0, tree)
from slotfill.inference.predictor import Predictor
predictor = Predictor.load(model, backend=backend, threads=1)
texts = [line.strip() for line in open(data, encoding="utf-8") if line.strip()]
answers = []
for size in (1, int(batch)):
    for start in range(0, len(texts), size):
        answers += [p.to_dict() for p in predictor.predict_texts(texts[start:start + size])]
json.dump(answers, open(out, "w"))
"""


def tag(tree: Path, model: Path, backend: str, data: Path, batch: int, out: Path) -> list[dict]:
    result = subprocess.run([sys.executable, "-c", TAGGER, str(tree), str(model), backend, str(data), str(batch),
                             str(out)], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: tagging with {tree} and {model} failed: {last}")
    return json.loads(out.read_text())


def confidences(answer: dict) -> list[float]:
    intent = [answer["intent"]["confidence"]] if answer.get("intent") else []
    return [t["confidence"] for t in answer["tokens"]] + [s["confidence"] for s in answer["slots"]] + intent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree-a", type=Path, required=True)
    parser.add_argument("--model-a", type=Path, required=True)
    parser.add_argument("--tree-b", type=Path, required=True)
    parser.add_argument("--model-b", type=Path, required=True)
    parser.add_argument("--backend", default="onnx-int8")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "atis")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    for name in ("tree_a", "model_a", "tree_b", "model_b"):
        if not getattr(args, name).is_dir():
            parser.error(f"--{name.replace('_', '-')}: {getattr(args, name)} is not a directory")
    data = args.data / "test" / "seq.in"
    if not data.is_file():
        parser.error(f"{data} does not exist")
    if args.batch < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    with tempfile.TemporaryDirectory() as work:
        a = tag(args.tree_a.resolve(), args.model_a.resolve(), args.backend, data, args.batch, Path(work) / "a.json")
        b = tag(args.tree_b.resolve(), args.model_b.resolve(), args.backend, data, args.batch, Path(work) / "b.json")
    same_tags = sum(x["labels"] == y["labels"] and (x["intent"] or {}).get("name") == (y["intent"] or {}).get("name")
                    for x, y in zip(a, b))
    gaps = [abs(p - q) for x, y in zip(a, b) if x["labels"] == y["labels"]
            for p, q in zip(confidences(x), confidences(y))]
    print(json.dumps({
        "backend": args.backend, "answers": len(a), "identical": sum(x == y for x, y in zip(a, b)),
        "same_labels_and_intent": same_tags, "confidences_compared": len(gaps),
        "confidences_differing": sum(g > 0 for g in gaps), "max_confidence_difference": max(gaps, default=0.0),
    }))
    return 0 if same_tags == len(a) else 1


if __name__ == "__main__":
    sys.exit(main())
