"""Evaluating a saved artifact on a data split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slotfill.data import load_corpus
from slotfill.errors import DataError
from slotfill.inference.predictor import Predictor
from slotfill.scoring.errors import ErrorAnalysis, analyse_errors
from slotfill.scoring.metrics import evaluate
from slotfill.text.tokenizer import normalize_token


def evaluate_artifact(model_dir: str | Path, data_dir: str | Path, split: str = "test",
                      batch_size: int = 256, backend: str = "auto") -> dict[str, Any]:
    """The report (:func:`slotfill.scoring.metrics.evaluate`) of the artifact in ``model_dir`` on a split."""
    return evaluate_artifact_with_errors(model_dir, data_dir, split, batch_size, backend)[0]


def evaluate_artifact_with_errors(model_dir: str | Path, data_dir: str | Path, split: str = "test",
                                  batch_size: int = 256, backend: str = "auto") -> tuple[dict[str, Any], ErrorAnalysis]:
    """:func:`evaluate_artifact`'s report and the :class:`~slotfill.scoring.errors.ErrorAnalysis` of the same
    predictions (for errors.jsonl and report.html)."""
    predictor = Predictor.load(model_dir, backend=backend)
    corpus = load_corpus(data_dir, scheme=predictor.config.scheme, tokenizer_config=predictor.tokenizer_config)
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    examples = getattr(corpus, split)
    if not examples:
        where = ("a single file or split folder is read as the training data alone"
                 if Path(data_dir).is_file() or (Path(data_dir) / "seq.in").is_file()
                 else "a data folder holds it as test, valid (or dev), or train")
        raise DataError(f"no '{split}' split found ({where})", data_dir)
    norms = [[normalize_token(t, predictor.tokenizer_config) or t for t in e.tokens] for e in examples]
    pred_tags, pred_intents = predictor.predict_labels(norms, batch_size=batch_size)
    has_intents = predictor.intents is not None and any(e.intent is not None for e in examples)
    scored = ([list(e.tags) for e in examples], pred_tags,
              [e.intent for e in examples] if has_intents else None, pred_intents if has_intents else None)
    report = evaluate(*scored, scheme=predictor.config.scheme)
    report["split"] = split
    analysis = analyse_errors([list(e.tokens) for e in examples], *scored, scheme=predictor.config.scheme)
    return report, analysis
