"""``slotfill compare``: several configurations x several seeds -> a Markdown table (compare.md, and compare.html)."""

from __future__ import annotations

import copy
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from slotfill.artifact.files import atomic_write_json, atomic_write_text
from slotfill.errors import ConfigError
from slotfill.inference.predictor import Predictor
from slotfill.scoring.html_report import comparison_html
from slotfill.scoring.reporting import markdown_table, mean_std

from .config import TrainConfig
from .pipeline import Trainer
from .timing import format_duration, time_left

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
                        "epochs": 10, "patience": 4, "export_onnx": False},
    # The default BiLSTM-CRF distilled from the same seed's minilm-bilstm-crf (listed before it).
    "bilstm-crf-distilled": {"cell": "lstm", "bidirectional": True, "decoder": "crf",
                             "distill_from": "@minilm-bilstm-crf"},
    # The same three over all-mpnet-base-v2 (BERT-base size; `slotfill encoders fetch mpnet` first); the mean of
    # a word's pieces measured better than its first piece on ATIS (BENCHMARKS.md).
    "mpnet-bilstm-crf": {"cell": "lstm", "bidirectional": True, "decoder": "crf", "contextual": "mpnet",
                         "contextual_pooling": "mean"},
    "mpnet-tokencls": {"contextual": "mpnet", "contextual_finetune": True, "contextual_layers": "last",
                       "word_dim": 0, "char_dim": 0, "num_layers": 0, "decoder": "softmax", "dropout": 0.1,
                       "epochs": 10, "patience": 4, "export_onnx": False},
    # The encoder-free default recipe distilled from mpnet-bilstm-crf (listed before it; or give the teacher
    # with --set distill_from=DIR, where "{seed}" stands for the run's seed), over one slot-substituted copy of
    # each sentence.
    "bilstm-crf-distilled-mpnet": {"cell": "lstm", "bidirectional": True, "decoder": "crf",
                                   "distill_from": "@mpnet-bilstm-crf", "augment": 1, "distill_temperature": 1.0},
}
DEFAULT_CONFIGS = ["lstm", "gru", "bilstm", "bigru", "bilstm-crf", "bigru-crf"]


def tagging_speed(predictor: Predictor, texts: list[list[str]], *, limit: int = 500, passes: int = 3
                  ) -> tuple[float, float]:
    """Sentences per second, one at a time and in calls of 64 (in-process, after load): the best of
    ``passes`` timed passes of each, interleaved.

    One pass of calls of 64 is a handful of calls, a fraction of a second: a garbage collection, another
    process taking the core or a first call's allocations inside it can cut its rate many times over. So
    both modes are warmed up first (one call of every batch size the passes make), the collector runs
    before each pass and is off during it, the two modes alternate (a slow spell of the machine hits
    both), and each mode's fastest pass counts: the disturbances only ever slow a pass down.
    """
    sample = texts[:limit]
    batches = [sample[i:i + 64] for i in range(0, len(sample), 64)]
    for size in sorted({len(batch) for batch in batches}):  # warm-up: each call shape the passes will make
        predictor.predict_tokens(next(batch for batch in batches if len(batch) == size))
    for tokens in sample[:8]:
        predictor.predict_tokens([tokens])

    def timed(calls: list[list[list[str]]]) -> float:
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        try:
            started = time.perf_counter()
            for call in calls:
                predictor.predict_tokens(call)
            return len(sample) / (time.perf_counter() - started)
        finally:
            if enabled:
                gc.enable()

    singles = [[tokens] for tokens in sample]
    single = batched = 0.0
    for _ in range(max(1, passes)):
        single = max(single, timed(singles))
        batched = max(batched, timed(batches))
    return single, batched


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_comparison(data_dir: Path, out_dir: Path, base: TrainConfig, *, configs: list[str] | None = None,
                   seeds: int = 3, log=_log_to_stderr) -> str:
    """Train every configuration over ``seeds`` seeds; ``log`` gets a line as each run starts and one as it
    ends (its slot F1, its duration and an estimate of the time left, from the mean duration of the runs so
    far), on standard error by default, so that they show while the table (standard output) is piped."""
    names = configs or DEFAULT_CONFIGS
    unknown = [n for n in names if n not in CONFIGURATIONS]
    if unknown:
        raise ConfigError(f"--configs: unknown configuration(s) {', '.join(unknown)}; known: {', '.join(CONFIGURATIONS)}")
    results: dict[str, list[dict[str, Any]]] = {}
    total = len(names) * seeds
    durations: list[float] = []  # wall time of each finished run: training, finishing and the speed check
    for name in names:
        for seed in range(seeds):
            started = time.perf_counter()
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
            log(f"compare: run {len(durations) + 1}/{total}: {name} seed {config.seed} ...")
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
            durations.append(time.perf_counter() - started)
            left = total - len(durations)
            eta = f"about {format_duration(time_left(durations, left))} left" if left else "done"
            log(f"compare: run {len(durations)}/{total}: {name} seed {config.seed}: slot F1 {100 * row['slot_f1']:.2f}, "
                f"{format_duration(durations[-1])} (training {row['train_seconds']:.0f}s); {eta}")
            atomic_write_json(out_dir / "compare.json", {"data": str(data_dir), "base": base.to_dict(), "results": results})

    return comparison_table(results, data_dir, seeds, out_dir)


def comparison_table(results: dict[str, list[dict[str, Any]]], data_dir: Path, seeds: int,
                     out_dir: Path | None = None) -> str:
    """The Markdown table of ``compare.json``'s results (one row per configuration); written to
    ``out_dir/compare.md`` when given, and the same table to ``out_dir/compare.html``."""
    headers = ["configuration", "slot F1", "intent acc.", "train time (s)", "parameters", "tag/s (1)", "tag/s (64)"]
    rows = []
    implausible = []
    for name, runs in results.items():
        intents = [r["intent_accuracy"] for r in runs if r["intent_accuracy"] is not None]
        def spread(values: list[float]) -> str:
            return mean_std(values) if len(values) > 1 else f"{values[0]:.2f} (1 run)"

        single = statistics.mean(r["tag_single_per_second"] for r in runs)
        batched = statistics.mean(r["tag_batch64_per_second"] for r in runs)
        # Calls of 64 share every step of the network: slower than one at a time means the measurement
        # was disturbed (another process, a pause), not that batching costs.
        mark = " †" if batched < single else ""
        if mark:
            implausible.append(name)
        rows.append([
            name,
            spread([100 * r["slot_f1"] for r in runs]),
            spread([100 * v for v in intents]) if intents else "n/a",
            f"{statistics.mean(r['train_seconds'] for r in runs):.0f}",
            f"{runs[0]['parameters']:,}",
            f"{single:,.0f}",
            f"{batched:,.0f}{mark}",
        ])
    split = next(iter(results.values()))[0]["split"]
    intro = f"Data: `{data_dir}` ({split} split), {seeds} seed(s) per configuration, mean ± std."
    notes = ""
    if implausible:
        notes = (f"† Implausible: {', '.join(implausible)} tagged fewer sentences per second in calls of 64 than "
                 "one at a time, which only a disturbed measurement gives (another process on the cores, a pause); "
                 "measure again on an idle machine, e.g. with bench/tagging_speed.py.")
    table = f"{intro}\n\n" + markdown_table(headers, rows) + (f"\n{notes}\n" if notes else "")
    if out_dir is not None:
        atomic_write_text(out_dir / "compare.md", table + "\n")
        # The same cells as a page that opens anywhere (no Markdown renderer needed).
        atomic_write_text(out_dir / "compare.html", comparison_html(intro, headers, rows, notes))
    return table
