"""The training pipeline: data -> vocabularies -> model -> training loop -> evaluation -> artifact."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import slotfill
from slotfill.artifact import atomic_write_json, atomic_write_text
from slotfill.data import Example, load_corpus
from slotfill.errors import ArtifactError, ConfigError, DataError, SlotfillError
from slotfill.features import Featurizer
from slotfill.metrics import evaluate as evaluate_tags
from slotfill.model_io import LoadedModel, save_model
from slotfill.models.tagger import IGNORE_INTENT, SlotTagger
from slotfill.predictor import Predictor
from slotfill.reporting import format_report, plot_training_curves
from slotfill.schemes import parse_tag
from slotfill.text import TokenizerConfig, infer_tokenizer_config, normalize_token

from . import distributed
from .augment import slot_substitution
from .checkpoint import load_checkpoint, remove_partial_writes, save_checkpoint
from .config import TrainConfig

STATE_DIR = "training"
SELECTION_SCORE = "dev slot F1 + 0.001 x dev intent accuracy"


class TrainingError(SlotfillError):
    """Training cannot go on (e.g. the loss became NaN)."""


def selection_score(dev: dict[str, Any]) -> float:
    """What picks the best epoch: dev slot F1 + 0.001 x dev intent accuracy (0 without intents).

    Slot F1 decides; the intent accuracy, scaled below any difference in slot F1 a dev set of
    fewer than 1000 spans can show, only breaks its ties.
    """
    return dev["slot_f1"] + 1e-3 * (dev["intent_accuracy"] or 0.0)


@dataclass
class LoopState:
    """Where the loop stands after an epoch; every checkpoint holds it."""

    epoch: int = 0  # the last epoch completed
    selection_score: float = -1.0  # of the best epoch so far (see :func:`selection_score`)
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one (early stopping counts them against patience)
    train_seconds: float = 0.0
    sentences: int = 0

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], path: Path) -> "LoopState":
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(state, dict) or sorted(state) != sorted(names):
            raise SlotfillError(f"{path}: unreadable checkpoint (its loop state is not {', '.join(names)}); "
                                "delete it to start over")
        return cls(**state)


@dataclass
class Encoded:
    """One training sentence as arrays: word ids (T,), char ids (T, L), tag ids (T,), intent id."""

    words: np.ndarray
    chars: np.ndarray
    tags: np.ndarray
    intent: int
    singletons: np.ndarray
    contextual: np.ndarray | None = None  # (T, L, E) float16 word states of a frozen transformer


@dataclass
class TrainResult:
    out_dir: Path
    report: dict[str, Any]
    dev_report: dict[str, Any]
    epochs: int
    train_seconds: float
    sentences_per_second: float
    parameters: int
    history: list[dict[str, Any]] = field(default_factory=list)


def label_order(labels: set[str]) -> list[str]:
    """'O' first, then by slot name with B, I, E, S together, so ids are stable across data orderings."""
    rank = {"B": 0, "I": 1, "E": 2, "S": 3}

    def key(label: str) -> tuple:
        prefix, slot = parse_tag(label)
        return (slot or "", rank.get(prefix, 9))

    return ["O"] + sorted((label for label in labels if label != "O"), key=key)


def normalise_examples(examples: list[Example], tokenizer: TokenizerConfig) -> list[list[str]]:
    return [[normalize_token(token, tokenizer) or token for token in example.tokens] for example in examples]


def load_word_vectors(path: str, featurizer: Featurizer, dim: int, embedding: torch.nn.Embedding) -> int:
    """Initialise embedding rows from a GloVe/word2vec text file; returns how many words were found."""
    found = 0
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read word vectors ({exc.strerror})", path) from None
    with handle, torch.no_grad():
        for line_no, line in enumerate(handle, 1):
            parts = line.rstrip("\n").split(" ")
            if line_no == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header: "count dim"
            if len(parts) != dim + 1:
                raise DataError(f"expected a word and {dim} numbers (word_dim), found {len(parts) - 1} values", path, line_no)
            index = featurizer.words.stoi.get(parts[0])
            if index is None:
                continue
            try:
                embedding.weight[index] = torch.tensor([float(x) for x in parts[1:]])
            except ValueError:
                raise DataError("not a number in the vector", path, line_no) from None
            found += 1
    return found


class Trainer:
    def __init__(self, data_dir: str | Path, out_dir: str | Path, config: TrainConfig, *, resume: bool = False,
                 overwrite: bool = False, progress: bool | None = None, log=None):
        config.validate()
        self.config = config
        self.data_dir = Path(data_dir)
        self.out_dir = Path(out_dir)
        self.state_dir = self.out_dir / STATE_DIR
        self.resume = resume
        self.overwrite = overwrite
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.dist = distributed.SINGLE  # set by run(); a lone process unless started by torchrun

    # ------------------------------------------------------------------ data
    def prepare(self) -> None:
        cfg = self.config
        tokenizer = TokenizerConfig.from_dict(cfg.tokenizer) if cfg.tokenizer else None
        corpus = load_corpus(self.data_dir, scheme=cfg.model.scheme, repair=cfg.repair, tokenizer_config=tokenizer)
        train, valid = list(corpus.train), list(corpus.valid)
        if not valid:
            # No dev split: hold out a seeded fraction of train for early stopping.
            rng = random.Random(cfg.seed)
            order = list(range(len(train)))
            rng.shuffle(order)
            cut = max(1, int(len(train) * cfg.valid_fraction))
            held = set(order[:cut])
            valid = [e for i, e in enumerate(train) if i in held]
            train = [e for i, e in enumerate(train) if i not in held]
            self.log(f"no validation split in {self.data_dir}; holding out {len(valid)} training sentences")
        if not train:
            raise DataError("no training sentences", self.data_dir)
        self.train_examples, self.valid_examples, self.test_examples = train, valid, list(corpus.test)
        self.tokenizer = tokenizer or infer_tokenizer_config([e.tokens for e in train])
        self.train_norms = normalise_examples(train, self.tokenizer)
        self.featurizer = Featurizer.build(self.train_norms, min_freq=cfg.min_freq,
                                           max_word_chars=cfg.model.max_word_chars)
        self.labels = label_order({tag for e in train for tag in e.tags} | {"O"})
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        intents = sorted({e.intent for e in train if e.intent is not None})
        self.intents = intents
        self.intent2id = {intent: i for i, intent in enumerate(intents)}
        counts = Counter(token for norms in self.train_norms for token in norms)
        self.encoded = [self._encode(norms, e, counts) for norms, e in zip(self.train_norms, train)]
        # Copies come after the vocabularies and counts are built: they hold no word the data lacks, and
        # must not make a rare word look frequent.
        self.augmented = slot_substitution(train, cfg.augment, cfg.seed, cfg.model.scheme)
        if self.augmented:
            extra = normalise_examples(self.augmented, self.tokenizer)
            self.encoded += [self._encode(norms, e, counts) for norms, e in zip(extra, self.augmented)]
            self.train_norms = self.train_norms + extra
            self.log(f"slot substitution: {len(self.augmented)} sentences added to {len(train)} "
                     f"({cfg.augment} cop{'y' if cfg.augment == 1 else 'ies'} of each sentence with slots)")
        self.aligner = self.encoder_source = None
        if cfg.contextual:
            self._prepare_contextual()
        self.teacher = None
        if cfg.distill_from:
            from .distillation import load_teacher

            self.teacher = load_teacher(cfg.distill_from, [e.tokens for e in train + self.augmented], self.labels,
                                        self.intents, cfg.model.decoder, cfg.distill_temperature)
            self.log(f"distilling from {cfg.distill_from} (weight {cfg.distill_weight}, temperature "
                     f"{cfg.distill_temperature})")

    def _prepare_contextual(self) -> None:
        """Load the pretrained encoder's tokenizer, config and weights (the model takes them in build_model)."""
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        from slotfill.models.contextual import resolve_encoder_path
        from slotfill.subwords import SubwordAligner, load_tokenizer, special_tokens

        cfg = self.config
        path = resolve_encoder_path(cfg.contextual)
        tokenizer = load_tokenizer(path / "tokenizer.json")
        tokens = special_tokens(tokenizer)
        hf_logging.disable_progress_bar()  # a progress bar per load is noise in a training log
        try:
            hf_config = json.loads(AutoConfig.from_pretrained(path).to_json_string())
            encoder = AutoModel.from_pretrained(path)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"contextual: cannot load the encoder in {path} ({exc})") from None
        weights = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
        name = "all-MiniLM-L6-v2" if cfg.contextual == "minilm" else path.name
        self.aligner = SubwordAligner(tokenizer, tokens, cfg.model.contextual_window)
        self.encoder_source = {"name": name, "config": hf_config, "tokens": tokens, "weights": weights}

    def _encode(self, norms: list[str], example: Example, counts: Counter) -> Encoded:
        f = self.featurizer
        char_lists = [f.char_ids(token) for token in norms]
        chars = np.zeros((len(norms), max(len(c) for c in char_lists)), dtype=np.int64)
        for t, ids in enumerate(char_lists):
            chars[t, : len(ids)] = ids
        intent = self.intent2id.get(example.intent, IGNORE_INTENT) if example.intent is not None else IGNORE_INTENT
        return Encoded(words=np.array(f.words.encode(norms), dtype=np.int64), chars=chars,
                       tags=np.array([self.label2id[t] for t in example.tags], dtype=np.int64), intent=intent,
                       singletons=np.array([counts[t] == 1 for t in norms]))

    def _batches(self, epoch: int) -> list[list[int]]:
        """Shuffled batches of similar length (less padding), deterministic for (seed, epoch)."""
        size = self.config.batch_size
        gen = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        order = torch.randperm(len(self.encoded), generator=gen).tolist()
        chunk = size * 32
        batches = []
        for start in range(0, len(order), chunk):
            block = sorted(order[start:start + chunk], key=lambda i: len(self.encoded[i].words))
            batches.extend(block[i:i + size] for i in range(0, len(block), size))
        perm = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in perm]

    def _collate(self, indices: list[int], gen: torch.Generator) -> dict[str, torch.Tensor]:
        items = [self.encoded[i] for i in indices]
        lengths = np.array([len(e.words) for e in items])
        steps, width = int(lengths.max()), max(e.chars.shape[1] for e in items)
        words = np.zeros((len(items), steps), dtype=np.int64)
        chars = np.zeros((len(items), steps, width), dtype=np.int64)
        tags = np.zeros((len(items), steps), dtype=np.int64)
        singles = np.zeros((len(items), steps), dtype=bool)
        for b, e in enumerate(items):
            n = len(e.words)
            words[b, :n], tags[b, :n], singles[b, :n] = e.words, e.tags, e.singletons
            chars[b, :n, : e.chars.shape[1]] = e.chars
        word_ids = torch.from_numpy(words)
        if self.config.singleton_unk > 0:
            # Replace rare training words by <unk> now and then, so the model learns
            # to rely on characters and context for words it will not know at test time.
            drop = torch.from_numpy(singles) & (torch.rand(word_ids.shape, generator=gen) < self.config.singleton_unk)
            word_ids = word_ids.masked_fill(drop, self.featurizer.words.unk_id)
        batch = {"word_ids": word_ids, "char_ids": torch.from_numpy(chars), "lengths": torch.from_numpy(lengths),
                 "tags": torch.from_numpy(tags), "intents": torch.tensor([e.intent for e in items])}
        if items[0].contextual is not None:  # a frozen transformer: its word states were computed once
            first = items[0].contextual
            states = np.zeros((len(items), steps, *first.shape[1:]), dtype=np.float32)
            for b, e in enumerate(items):
                states[b, : len(e.words)] = e.contextual
            batch["contextual"] = torch.from_numpy(states)
        elif self.aligner is not None:
            batch["subwords"] = self.aligner.encode([self.train_norms[i] for i in indices]).tensors()
        return batch

    def _teacher_batch(self, indices: list[int], steps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's emissions (B, T, K), zero-padded, and intent logits (B, I) or None."""
        teacher = self.teacher
        k = teacher.emissions[indices[0]].shape[1]
        emissions = np.zeros((len(indices), steps, k), dtype=np.float32)
        for b, i in enumerate(indices):
            emissions[b, : len(teacher.emissions[i])] = teacher.emissions[i]
        intents = torch.from_numpy(teacher.intent_logits[indices]) if teacher.intent_logits is not None else None
        return torch.from_numpy(emissions), intents

    @torch.no_grad()
    def _cache_contextual(self, model: SlotTagger) -> None:
        """Run the frozen transformer once over the training sentences and keep each word's layer states."""
        embedder = model.contextual
        was_training = embedder.training
        embedder.eval()
        started = time.perf_counter()
        order = sorted(range(len(self.encoded)), key=lambda i: len(self.train_norms[i]))
        for start in range(0, len(order), 64):
            rows = order[start:start + 64]
            pieces = self.aligner.encode([self.train_norms[i] for i in rows]).tensors()
            states = embedder.states(**{k: v.to(self.dist.device) for k, v in pieces.items()}).cpu()
            for j, i in enumerate(rows):
                self.encoded[i].contextual = states[j, : len(self.train_norms[i])].to(torch.float16).numpy()
        embedder.train(was_training)
        self.log(f"contextual word states of {len(order)} training sentences computed in "
                 f"{time.perf_counter() - started:.0f}s (frozen {self.encoder_source['name']})")

    # ------------------------------------------------------------------ model
    def build_model(self) -> SlotTagger:
        """The tagger of ``config.model`` completed with this data's vocabularies, labels and encoder,
        seeded, with the encoder's weights and any word vectors loaded."""
        cfg = self.config
        data: dict[str, Any] = {"vocab_size": len(self.featurizer.words), "num_chars": len(self.featurizer.chars),
                                "id2label": dict(enumerate(self.labels)), "id2intent": dict(enumerate(self.intents))}
        source = self.encoder_source
        if source is not None:
            data.update(contextual_dim=int(source["config"]["hidden_size"]), contextual_name=source["name"],
                        contextual_model=source["config"], contextual_tokens=source["tokens"])
        torch.manual_seed(cfg.seed)
        model = SlotTagger(dataclasses.replace(cfg.model, **data))
        if source is not None:
            model.contextual.encoder.load_state_dict(source["weights"], strict=True)
            model.contextual.encoder.requires_grad_(cfg.contextual_finetune)
        if cfg.word_vectors and model.word_embedding is not None:
            found = load_word_vectors(cfg.word_vectors, self.featurizer, cfg.model.word_dim, model.word_embedding)
            self.log(f"word vectors: {found}/{len(self.featurizer.words)} vocabulary words initialised")
        return model

    def _optimizer(self, model: SlotTagger, total_steps: int):
        cfg = self.config
        # A fine-tuned transformer learns at its own (much lower) rate; a frozen one is not optimised.
        encoder = list(model.contextual.encoder.parameters()) if model.contextual is not None else []
        encoder_ids = {id(p) for p in encoder}
        groups = [{"params": [p for p in model.parameters() if id(p) not in encoder_ids]}]
        if encoder and cfg.contextual_finetune:
            groups.append({"params": encoder, "lr": cfg.contextual_lr})
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warmup = int(total_steps * cfg.warmup_ratio)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if cfg.schedule == "constant":
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            if cfg.schedule == "cosine":
                return 0.5 * (1.0 + math.cos(math.pi * progress))
            return max(0.0, 1.0 - progress)

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def predictor(self, model: SlotTagger) -> Predictor:
        return Predictor(LoadedModel(model=model, featurizer=self.featurizer, tokenizer=self.tokenizer, card=self.card(),
                                     aligner=self.aligner))

    def evaluate(self, model: SlotTagger, examples: list[Example]) -> dict[str, Any]:
        if next(model.parameters()).device.type != "cpu":
            # The Predictor decodes with NumPy: evaluate a CPU copy of a model trained on a GPU.
            model = copy.deepcopy(model).cpu()
        was_training = model.training
        model.eval()
        predictor = self.predictor(model)
        norms = normalise_examples(examples, self.tokenizer)
        pred_tags, pred_intents = predictor.predict_labels(norms, batch_size=self.config.eval_batch_size)
        model.train(was_training)
        has_intents = bool(self.intents) and any(e.intent is not None for e in examples)
        return evaluate_tags([list(e.tags) for e in examples], pred_tags,
                             [e.intent for e in examples] if has_intents else None,
                             pred_intents if has_intents else None)

    def calibrate(self, model: SlotTagger, report: dict[str, Any]) -> dict[str, float] | None:
        """Fit confidence temperatures on dev; add ECE before/after on the report's split to ``report``."""
        if not self.config.calibrate or not self.valid_examples:
            return None
        from slotfill.calibration import calibration_report, fit_temperatures

        def split(examples: list[Example]):
            intents = [e.intent for e in examples] if self.intents else None
            return normalise_examples(examples, self.tokenizer), [list(e.tags) for e in examples], intents

        predictor = self.predictor(model)
        temperatures = fit_temperatures(predictor, *split(self.valid_examples))
        evaluated = self.test_examples or self.valid_examples
        report["calibration"] = calibration_report(predictor, *split(evaluated), temperatures)
        calibration = report["calibration"]
        if "span_ece_before" in calibration:
            self.log(f"confidence calibration: slot temperature {temperatures['slot_temperature']:.3f}, span ECE "
                     f"{calibration['span_ece_before']:.4f} -> {calibration['span_ece_after']:.4f}")
        return temperatures

    def plot_calibration(self, calibration: dict[str, Any]) -> None:
        from slotfill.reporting import plot_reliability

        for kind, temperature in (("span", "slot_temperature"), ("intent", "intent_temperature")):
            if f"{kind}_bins_before" in calibration:
                plot_reliability(calibration[f"{kind}_bins_before"], calibration[f"{kind}_bins_after"],
                                 self.out_dir / f"reliability_{kind}.png",
                                 f"{kind} confidence, temperature {calibration[temperature]:.3f}")

    def export_onnx(self, model: SlotTagger) -> None:
        """Add model.onnx to the artifact, checked against torch on the test (or dev) split."""
        if not self.config.export_onnx:
            return
        if model.config.contextual_dim:
            self.log("ONNX export skipped: the model reads contextual (transformer) features")
            return
        from slotfill.onnx_export import export_onnx

        try:
            check = export_onnx(self.out_dir, normalise_examples(self.test_examples or self.valid_examples,
                                                                 self.tokenizer))
        except ArtifactError as exc:  # the artifact itself is complete and valid; only the graph is left out
            self.log(f"warning: model.onnx not written, the artifact will serve on the torch backend: {exc}")
            return
        self.log(f"wrote model.onnx: labels identical on {check.sentences} sentences, max emission difference "
                 f"{check.max_emission_diff:.1e} (check split), {check.synthetic_max_emission_diff:.1e} (synthetic)")

    def card(self) -> dict[str, Any]:
        return {"name": self.config.name, "version": self.config.version,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "library_version": slotfill.__version__, "training": self.config.to_dict(),
                "data": str(self.data_dir), "train_sentences": len(self.train_examples),
                "augmented_sentences": len(self.augmented)}

    # ------------------------------------------------------------------ loop
    def _check_out_dir(self) -> None:
        last = self.state_dir / "last.safetensors"
        if self.resume:
            return
        if self.out_dir.exists() and any(self.out_dir.iterdir()) and not self.overwrite:
            what = "a training run" if last.exists() else "files"
            raise ConfigError(f"{self.out_dir} already holds {what}; pass --resume to continue it, --overwrite to "
                              "start over, or choose another --out")
        if self.overwrite and self.state_dir.exists():
            for name in ("last.safetensors", "metrics.jsonl"):
                (self.state_dir / name).unlink(missing_ok=True)

    def _claim_out_dir(self) -> None:
        """Rank 0 checks (and with --overwrite clears) the output directory; every rank obeys its verdict.

        The other ranks do not look for themselves: they could already see files rank 0 has begun to write.
        """
        problem = None
        if self.dist.is_main:
            try:
                self._check_out_dir()
            except ConfigError as exc:
                problem = exc
        if not self.dist.broadcast_flag(problem is None):
            raise problem or ConfigError(f"{self.out_dir}: rank 0 refused the output directory (see its message)")

    def _fingerprint(self) -> str:
        """What every rank must have built identically: vocabularies, labels, tokenizer and the encoded data."""
        examples = self.train_examples + self.augmented
        data = hashlib.sha256(json.dumps([self.train_norms, [e.tags for e in examples],
                                          [e.intent for e in examples]]).encode("utf-8")).hexdigest()
        return json.dumps([self.featurizer.words.itos, self.featurizer.chars.itos, self.labels, self.intents,
                           self.tokenizer.to_dict(), data, len(self.valid_examples)])

    def run(self) -> TrainResult:
        """Train, evaluate and export; under torchrun (WORLD_SIZE > 1) as one rank of a data-parallel job."""
        with distributed.process_group() as ctx:
            self.dist = ctx
            if not ctx.is_main:
                # Rank 0 speaks for the job: N copies of every line would only be noise.
                self.log, self.progress = (lambda message: None), False
            return self._train()

    def _train(self) -> TrainResult:
        cfg, ctx = self.config, self.dist
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self._claim_out_dir()
        self.prepare()
        # Sharding by sentence index only works if index i is the same sentence everywhere.
        if not ctx.same_everywhere(self._fingerprint()):
            raise TrainingError("the ranks built different vocabularies, labels or training sets; every rank must "
                                "read the same data with the same settings")
        if ctx.is_main:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            remove_partial_writes(self.state_dir)
            remove_partial_writes(self.out_dir)
        model = self.build_model().to(ctx.device)
        if cfg.contextual and not cfg.contextual_finetune:
            self._cache_contextual(model)
        steps_per_epoch = math.ceil(len(self.encoded) / cfg.batch_size)
        optimizer, scheduler = self._optimizer(model, steps_per_epoch * cfg.epochs)
        run_info = {"config": cfg.to_dict(), "data": str(self.data_dir), "labels": self.labels, "intents": self.intents}
        state = LoopState()
        last_path = self.state_dir / "last.safetensors"
        metrics_path = self.state_dir / "metrics.jsonl"
        history: list[dict] = []
        best: dict[str, torch.Tensor] | None = None  # weights of the best epoch so far (rank 0)
        # Rank 0 decides, so that all ranks resume from the same checkpoint or all start afresh.
        if ctx.broadcast_flag(self.resume and last_path.exists()):
            previous = json.loads((self.state_dir / "run.json").read_text()) if (self.state_dir / "run.json").exists() else {}
            if previous and (previous.get("labels") != self.labels or previous.get("config") != cfg.to_dict()):
                raise ConfigError(f"{self.out_dir}: --resume with different settings or data than the interrupted run")
            restored = load_checkpoint(last_path, model, optimizer, scheduler)
            state, best = LoopState.from_checkpoint(restored.state, last_path), restored.best
            if not ctx.same_everywhere(str(state.epoch)):
                raise TrainingError(f"{last_path}: the ranks read different checkpoints; with several nodes, --out "
                                    "must be on a file system they all share")
            self.log(f"resuming after epoch {state.epoch} (best epoch {state.best_epoch}, selection score "
                     f"{state.selection_score:.5f} = {SELECTION_SCORE})")
            if ctx.is_main:
                history = _restore_metrics(metrics_path, restored.history)
        else:
            if ctx.is_main:
                atomic_write_json(self.state_dir / "run.json", run_info)
                metrics_path.unlink(missing_ok=True)
            torch.manual_seed(cfg.seed)
        net: torch.nn.Module = model
        if ctx.enabled:
            # Wrapping broadcasts rank 0's weights; from here on the gradients are averaged over ranks.
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        where = f" in {ctx.world_size} processes" if ctx.enabled else ""
        arch = cfg.model
        self.log(f"training {arch.cell} ({'bi' if arch.bidirectional else 'uni'}directional, {arch.decoder}) on "
                 f"{len(self.encoded)} sentences{where}, {len(self.labels)} labels, {len(self.intents)} intents, "
                 f"{model.num_parameters():,} parameters")

        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            if ctx.broadcast_flag(state.bad_epochs > cfg.patience > 0):
                break
            if ctx.enabled:
                # Each rank draws differently, and every draw follows from (seed, epoch, rank) alone: the
                # checkpoint holds one generator state, yet a resumed job repeats an uninterrupted one.
                gen = torch.Generator().manual_seed(_seed(cfg.seed, epoch, ctx.rank, 0))
                torch.manual_seed(_seed(cfg.seed, epoch, ctx.rank, 1))
            else:
                gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
            model.train()
            started, total_loss, seen = time.perf_counter(), 0.0, 0
            batches = self._batches(epoch)
            shards = distributed.shard_batches(batches, ctx.rank, ctx.world_size)
            bar = tqdm(shards, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", disable=not self.progress,
                       leave=False, file=sys.stderr)
            for step, (indices, real) in enumerate(bar):
                batch = self._collate(indices, gen)
                if ctx.device.type != "cpu":
                    batch = {key: ({k: v.to(ctx.device) for k, v in value.items()} if isinstance(value, dict)
                                   else value.to(ctx.device)) for key, value in batch.items()}
                out = net(**batch, intent_loss_weight=cfg.intent_loss_weight)
                if self.teacher is not None:
                    from .distillation import distillation_loss

                    teacher_emissions, teacher_intents = self._teacher_batch(indices, batch["word_ids"].size(1))
                    kd = distillation_loss(model, out, batch["word_ids"].ne(0), teacher_emissions.to(ctx.device),
                                           None if teacher_intents is None else teacher_intents.to(ctx.device),
                                           self.teacher, cfg.intent_loss_weight)
                    out.loss = (1.0 - cfg.distill_weight) * out.loss + cfg.distill_weight * kd
                loss = out.loss
                if not torch.isfinite(loss):
                    raise TrainingError(f"the loss became {loss.item()} at epoch {epoch}, batch {step + 1}; lower the "
                                        f"learning rate (lr={cfg.lr}) or check the data")
                optimizer.zero_grad(set_to_none=True)
                objective = _shard_objective(out, real, len(batches[step]), ctx.world_size) if ctx.enabled else loss
                objective.backward()
                if cfg.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
                optimizer.step()
                scheduler.step()
                total_loss += loss.item() * real
                seen += real
                if self.progress:
                    bar.set_postfix(loss=f"{total_loss / max(1, seen):.3f}")
            elapsed = time.perf_counter() - started
            # Sums over ranks: the loss and sentence count of the whole epoch, not of rank 0's shards.
            total_loss, seen = ctx.all_reduce_sum([total_loss, seen])
            seen = int(seen)
            state.train_seconds += elapsed
            state.sentences += seen
            record, score = {}, 0.0
            if ctx.is_main:
                dev = self.evaluate(model, self.valid_examples)
                score = selection_score(dev)
                record = {"epoch": epoch, "train_loss": total_loss / seen, "dev_slot_f1": dev["slot_f1"],
                          "dev_intent_accuracy": dev["intent_accuracy"], "dev_exact_match": dev["exact_match"],
                          "selection_score": score, "lr": optimizer.param_groups[0]["lr"],
                          "epoch_seconds": round(elapsed, 3), "sentences": seen,
                          "sentences_per_second": round(seen / elapsed, 1)}
            # Only rank 0 evaluated; with its score every rank keeps the same best epoch and patience count.
            score = ctx.broadcast([score])[0]
            if score > state.selection_score:
                state.selection_score, state.best_epoch, state.bad_epochs = score, epoch, 0
                if ctx.is_main:
                    best = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
                    record["best"] = True
            else:
                state.bad_epochs += 1
            state.epoch = epoch
            if not ctx.is_main:
                continue
            # The checkpoint's rename commits the epoch. A kill between this append and that rename
            # leaves a line for an epoch that did not happen as far as resume is concerned: resume
            # rewrites metrics.jsonl from the checkpoint's history and runs the epoch again.
            with open(metrics_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            history.append(record)
            save_checkpoint(last_path, model, optimizer, scheduler, dataclasses.asdict(state), best=best,
                            history=history)
            intent = "" if dev["intent_accuracy"] is None else f"  intent acc {100 * dev['intent_accuracy']:.2f}"
            self.log(f"epoch {epoch}: loss {record['train_loss']:.4f}  dev slot F1 {100 * dev['slot_f1']:.2f}{intent}"
                     f"  ({seen / elapsed:.0f} sentences/s){'  *' if record.get('best') else ''}")
        return self.finish(model, state, history, best)

    def finish(self, model: SlotTagger, state: LoopState, history: list[dict],
               best: dict[str, torch.Tensor] | None) -> TrainResult:
        """Rank 0 evaluates the best epoch's weights and exports the artifact; every rank gets its reports."""
        summary = None
        if self.dist.is_main:
            model = model.cpu()
            model.load_state_dict(best)
            model.eval()
            dev_report = self.evaluate(model, self.valid_examples)
            dev_report["split"] = "valid"
            report = dev_report
            if self.test_examples:
                report = self.evaluate(model, self.test_examples)
                report["split"] = "test"
            report["best_epoch"] = state.best_epoch
            temperatures = self.calibrate(model, report)
            atomic_write_json(self.state_dir / "dev_report.json", dev_report)
            text = format_report(report, title=f"{self.config.name} on {self.data_dir} ({report['split']})")
            card = self.card()
            card.update(best_epoch=state.best_epoch, train_seconds=round(state.train_seconds, 2),
                        parameters=model.num_parameters())
            save_model(self.out_dir, model, self.featurizer, self.tokenizer, card, report, text,
                       calibration=temperatures, aligner=self.aligner)
            plot_training_curves(self.state_dir / "metrics.jsonl", self.out_dir / "training_curves.png")
            if "calibration" in report:
                self.plot_calibration(report["calibration"])
            self.export_onnx(model)
            summary = {"report": report, "dev_report": dev_report, "history": history}
        summary = self.dist.broadcast_json(summary)
        speed = state.sentences / state.train_seconds if state.train_seconds else 0.0
        return TrainResult(out_dir=self.out_dir, report=summary["report"], dev_report=summary["dev_report"],
                           epochs=state.epoch, train_seconds=state.train_seconds, sentences_per_second=speed,
                           parameters=model.num_parameters(), history=summary["history"])


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers, the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") >> 1


def _shard_objective(out: Any, real: int, global_size: int, world_size: int) -> torch.Tensor:
    """What one rank back-propagates so that DDP's gradient *average* over ranks is the gradient of
    the global batch's mean loss, as in a single process: the shard's mean loss weighted by its share
    of the batch (zero for a padding shard). Exact when every sentence has an intent label."""
    objective = out.loss * (real * world_size / global_size)
    if out.intent_logits is not None and out.intent_loss is None:
        # A shard without intent labels leaves the intent head out of the graph, and DDP waits
        # for a gradient of every parameter on every rank: give it a zero one.
        objective = objective + 0.0 * out.intent_logits.sum()
    return objective


def _restore_metrics(path: Path, history: list[dict]) -> list[dict]:
    """On resume, make metrics.jsonl hold exactly the epochs the checkpoint committed; returns them.

    Lines of an epoch killed before its checkpoint was renamed into place go (it runs again and
    logs again), and so does a line cut short by the kill; lines lost after it are restored.
    """
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in history))
    return history


def train(data_dir: str | Path, out_dir: str | Path, overrides: dict[str, Any] | None = None, seed: int | None = None,
          *, config: TrainConfig | None = None, resume: bool = False, overwrite: bool = False,
          progress: bool | None = None, log=None) -> TrainResult:
    """Train on ``data_dir`` and export the artifact to ``out_dir``."""
    config = config or TrainConfig()
    for key, value in (overrides or {}).items():
        config.set(key, value, source="overrides")
    if seed is not None:
        config.seed = seed
    return Trainer(data_dir, out_dir, config, resume=resume, overwrite=overwrite, progress=progress, log=log).run()
