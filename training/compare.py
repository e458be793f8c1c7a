"""``slotfill compare``: several configurations x several seeds -> a Markdown table."""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Any

from slotfill.artifact.files import atomic_write_json, atomic_write_text
from slotfill.errors import ConfigError
from slotfill.inference.predictor import Predictor
from slotfill.scoring.reporting import markdown_table, mean_std

from .config import TrainConfig
from .pipeline import Trainer

# name -> settings applied on top of the base configuration
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "default": {},  # `slotfill train`'s defaults (a BiLSTM-CRF), plus any --config/--set given
    "lstm": {"cell": "lstm", "bidirectional": False, "decoder": "softmax"},
    "gru": {"cell": "gru", "bidirectional": False, "decoder": "softmax"},
    "bilstm": {"cell": "lstm", "bidirectional": True, "decoder": "softmax"},
    "bigru": {"cell": "gru", "bidirectional": True, "decoder": "softmax"},
    "bilstm-crf": {"cell": "lstm", "bidirectional": True, "decoder": "crf"},
    "bigru-crf": {"cell": "gru", "bidirectional": True, "decoder": "crf"},
    # The default BiLSTM-CRF over frozen all-MiniLM-L6-v2 word states (a learned mix of its layers).
    "minilm-bilstm-crf": {"cell": "lstm", "bidirectional": True, "decoder": "crf", "contextual": "minilm"},
    # JointBERT-style: the transformer fine-tuned with a token classifier and an intent head on top.
    "minilm-tokencls": {"contextual": "minilm", "contextual_finetune": True, "contextual_layers": "last",
                        "word_dim": 0, "char_dim": 0, "num_layers": 0, "decoder": "softmax", "dropout": 0.1,
                        "epochs": 10, "patience": 3, "export_onnx": False},
    # The default BiLSTM-CRF distilled from the same seed's minilm-bilstm-crf (listed before it).
    "bilstm-crf-distilled": {"cell": "lstm", "bidirectional": True, "decoder": "crf",
                             "distill_from": "@minilm-bilstm-crf"},
    # The same three over all-mpnet-base-v2 (BERT-base size; `slotfill encoders fetch mpnet` first).
    "mpnet-bilstm-crf": {"cell": "lstm", "bidirectional": True, "decoder": "crf", "contextual": "mpnet"},
    "mpnet-tokencls": {"contextual": "mpnet", "contextual_finetune": True, "contextual_layers": "last",
                       "word_dim": 0, "char_dim": 0, "num_layers": 0, "decoder": "softmax", "dropout": 0.1,
                       "epochs": 10, "patience": 3, "export_onnx": False},
    # The encoder-free default recipe distilled from mpnet-bilstm-crf (listed before it; or give the teacher
    # with --set distill_from=DIR, where "{seed}" stands for the run's seed), over one slot-substituted copy of
    # each sentence.
    "bilstm-crf-distilled-mpnet": {"cell": "lstm", "bidirectional": True, "decoder": "crf",
                                   "distill_from": "@mpnet-bilstm-crf", "augment": 1, "distill_temperature": 1.0},
}
DEFAULT_CONFIGS = ["lstm", "gru", "bilstm", "bigru", "bilstm-crf", "bigru-crf"]


def tagging_speed(predictor: Predictor, texts: list[list[str]], *, limit: int = 500) -> tuple[float, float]:
    """Sentences per second, one at a time and in batches of 64 (in-process, after load)."""
    sample = texts[:limit]
    predictor.predict_tokens(sample[:8])  # warm-up
    started = time.perf_counter()
    for tokens in sample:
        predictor.predict_tokens([tokens])
    single = len(sample) / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, len(sample), 64):
        predictor.predict_tokens(sample[i:i + 64])
    batched = len(sample) / (time.perf_counter() - started)
    return single, batched


def run_comparison(data_dir: Path, out_dir: Path, base: TrainConfig, *, configs: list[str] | None = None,
                   seeds: int = 3, log=print) -> str:
    names = configs or DEFAULT_CONFIGS
    unknown = [n for n in names if n not in CONFIGURATIONS]
    if unknown:
        raise ConfigError(f"--configs: unknown configuration(s) {', '.join(unknown)}; known: {', '.join(CONFIGURATIONS)}")
    results: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        for seed in range(seeds):
            config = copy.deepcopy(base)
            for key, value in CONFIGURATIONS[name].items():
                if key == "distill_from" and base.distill_from:  # a teacher given with --set distill_from
                    continue
                if isinstance(value, str) and value.startswith("@"):  # another configuration's run, same seed
                    teacher = value[1:]
                    if teacher not in names or names.index(teacher) > names.index(name):
                        raise ConfigError(f"--configs: {name} needs {teacher} listed before it")
                    value = str(out_dir / teacher / f"seed{base.seed + seed}")
                config.set(key, value, source=name)
            config.seed = base.seed + seed
            if config.distill_from and "{seed}" in config.distill_from:  # one teacher per seed, trained elsewhere
                config.distill_from = config.distill_from.replace("{seed}", str(config.seed))
            config.name = name
            run_dir = out_dir / name / f"seed{config.seed}"
            trainer = Trainer(data_dir, run_dir, config, overwrite=True, progress=False, log=lambda m: None)
            result = trainer.run()
            predictor = Predictor.load(run_dir)
            examples = trainer.data.test_examples or trainer.data.valid_examples
            single, batched = tagging_speed(predictor, [list(e.tokens) for e in examples])
            row = {"seed": config.seed, "slot_f1": result.report["slot_f1"],
                   "intent_accuracy": result.report["intent_accuracy"], "split": result.report["split"],
                   "train_seconds": result.train_seconds, "epochs": result.epochs,
                   "train_sentences_per_second": result.sentences_per_second, "parameters": result.parameters,
                   "tag_single_per_second": single, "tag_batch64_per_second": batched}
            results.setdefault(name, []).append(row)
            log(f"{name} seed {config.seed}: slot F1 {100 * row['slot_f1']:.2f}  ({row['train_seconds']:.0f}s)")
            atomic_write_json(out_dir / "compare.json", {"data": str(data_dir), "base": base.to_dict(), "results": results})

    return comparison_table(results, data_dir, seeds, out_dir)


def comparison_table(results: dict[str, list[dict[str, Any]]], data_dir: Path, seeds: int,
                     out_dir: Path | None = None) -> str:
    """The Markdown table of ``compare.json``'s results (one row per configuration); written to
    ``out_dir/compare.md`` when given."""
    headers = ["configuration", "slot F1", "intent acc.", "train time (s)", "parameters", "tag/s (1)", "tag/s (64)"]
    rows = []
    for name, runs in results.items():
        intents = [r["intent_accuracy"] for r in runs if r["intent_accuracy"] is not None]
        def spread(values: list[float]) -> str:
            return mean_std(values) if len(values) > 1 else f"{values[0]:.2f} (1 run)"

        rows.append([
            name,
            spread([100 * r["slot_f1"] for r in runs]),
            spread([100 * v for v in intents]) if intents else "n/a",
            f"{statistics.mean(r['train_seconds'] for r in runs):.0f}",
            f"{runs[0]['parameters']:,}",
            f"{statistics.mean(r['tag_single_per_second'] for r in runs):,.0f}",
            f"{statistics.mean(r['tag_batch64_per_second'] for r in runs):,.0f}",
        ])
    split = next(iter(results.values()))[0]["split"]
    table = (f"Data: `{data_dir}` ({split} split), {seeds} seed(s) per configuration, mean ± std.\n\n"
             + markdown_table(headers, rows))
    if out_dir is not None:
        atomic_write_text(out_dir / "compare.md", table + "\n")
    return table
