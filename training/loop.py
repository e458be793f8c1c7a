"""The training loop: epochs of shuffled batches, the optimizer and its schedule, a checkpoint per epoch,
resume, early stopping on the dev selection score, and data-parallel steps under torchrun."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from slotfill.artifact.files import atomic_write_json, atomic_write_text
from slotfill.errors import ConfigError, SlotfillError
from slotfill.models.contextual import pad_states
from slotfill.models.tagger import SlotTagger

from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distillation import Teacher
from .finish import evaluate
from .prepare import TrainingData
from .timing import format_duration, time_left

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
class LoopOutcome:
    """What the loop leaves for the finishing step (the model itself was trained in place)."""

    state: LoopState
    history: list[dict[str, Any]]  # one metrics.jsonl record per epoch (rank 0; empty on the others)
    best: dict[str, torch.Tensor] | None  # weights of the best epoch (rank 0; None on the others)


class TrainingLoop:
    """Trains a model on prepared data, one checkpoint in ``state_dir`` per epoch."""

    def __init__(self, config: TrainConfig, data: TrainingData, state_dir: Path, *, resume: bool,
                 dist: distributed.Dist, progress: bool, log: Callable[[str], None]):
        self.config = config
        self.data = data
        self.state_dir = state_dir
        self.resume = resume
        self.dist = dist
        self.progress = progress
        self.log = log

    def _batches(self, epoch: int) -> list[list[int]]:
        """Shuffled batches of similar length (less padding), deterministic for (seed, epoch)."""
        encoded = self.data.encoded
        size = self.config.batch_size
        gen = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        order = torch.randperm(len(encoded), generator=gen).tolist()
        chunk = size * 32
        batches = []
        for start in range(0, len(order), chunk):
            block = sorted(order[start:start + chunk], key=lambda i: len(encoded[i].words))
            batches.extend(block[i:i + size] for i in range(0, len(block), size))
        perm = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in perm]

    def _collate(self, indices: list[int], gen: torch.Generator) -> dict[str, torch.Tensor]:
        items = [self.data.encoded[i] for i in indices]
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
            word_ids = word_ids.masked_fill(drop, self.data.featurizer.words.unk_id)
        batch = {"word_ids": word_ids, "char_ids": torch.from_numpy(chars), "lengths": torch.from_numpy(lengths),
                 "tags": torch.from_numpy(tags), "intents": torch.tensor([e.intent for e in items])}
        if items[0].contextual is not None:  # a frozen transformer: its word states were computed once
            batch["contextual"] = pad_states([e.contextual for e in items], steps)
        elif self.data.aligner is not None:
            batch["subwords"] = self.data.aligner.encode([self.data.train_norms[i] for i in indices]).tensors()
        return batch

    @staticmethod
    def _teacher_batch(teacher: Teacher, indices: list[int], steps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's emissions (B, T, K), zero-padded, and intent logits (B, I) or None."""
        k = teacher.emissions[indices[0]].shape[1]
        emissions = np.zeros((len(indices), steps, k), dtype=np.float32)
        for b, i in enumerate(indices):
            emissions[b, : len(teacher.emissions[i])] = teacher.emissions[i]
        intents = torch.from_numpy(teacher.intent_logits[indices]) if teacher.intent_logits is not None else None
        return torch.from_numpy(emissions), intents

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

    def run(self, model: SlotTagger) -> LoopOutcome:
        """Train ``model`` (on its device) in place, from scratch or from the last checkpoint."""
        cfg, ctx, data = self.config, self.dist, self.data
        steps_per_epoch = math.ceil(len(data.encoded) / cfg.batch_size)
        optimizer, scheduler = self._optimizer(model, steps_per_epoch * cfg.epochs)
        run_info = {"config": cfg.to_dict(), "data": str(data.data_dir), "labels": data.labels,
                    "intents": data.intents}
        state = LoopState()
        last_path = self.state_dir / "last.safetensors"
        metrics_path = self.state_dir / "metrics.jsonl"
        history: list[dict] = []
        best: dict[str, torch.Tensor] | None = None  # weights of the best epoch so far (rank 0)
        # Rank 0 decides, so that all ranks resume from the same checkpoint or all start afresh.
        if ctx.broadcast_flag(self.resume and last_path.exists()):
            run_path = self.state_dir / "run.json"
            previous = json.loads(run_path.read_text()) if run_path.exists() else {}
            if previous and (previous.get("labels") != data.labels or previous.get("config") != cfg.to_dict()):
                raise ConfigError(f"{self.state_dir.parent}: --resume with different settings or data than the "
                                  "interrupted run")
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
            if self.resume:
                self.log(f"--resume: no checkpoint to resume from ({last_path} does not exist); training from scratch")
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
                 f"{len(data.encoded)} sentences{where}, {len(data.labels)} labels, {len(data.intents)} intents, "
                 f"{model.num_parameters():,} parameters")
        self.log(self._plan(state, steps_per_epoch))

        epoch_seconds: list[float] = []  # wall time of each epoch run by this process, its dev check included
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            if ctx.broadcast_flag(state.bad_epochs >= cfg.patience > 0):
                break
            if ctx.enabled:
                # Each rank draws differently, and every draw follows from (seed, epoch, rank) alone: the
                # checkpoint holds one generator state, yet a resumed job repeats an uninterrupted one.
                gen = torch.Generator().manual_seed(_seed(cfg.seed, epoch, ctx.rank, 0))
                torch.manual_seed(_seed(cfg.seed, epoch, ctx.rank, 1))
            else:
                gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
            model.train()
            epoch_started = started = time.perf_counter()
            total_loss, seen = 0.0, 0
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
                if data.teachers:
                    from .distillation import ensemble_distillation_loss

                    scores = []
                    for teacher in data.teachers:
                        emissions, intents = self._teacher_batch(teacher, indices, batch["word_ids"].size(1))
                        scores.append((teacher, emissions.to(ctx.device),
                                       None if intents is None else intents.to(ctx.device)))
                    kd = ensemble_distillation_loss(model, out, batch["word_ids"].ne(0), scores, cfg.intent_loss_weight)
                    out.loss = (1.0 - cfg.distill_weight) * out.loss + cfg.distill_weight * kd
                loss = out.loss
                if not torch.isfinite(loss):
                    raise TrainingError(f"the loss became {loss.item()} at epoch {epoch}, batch {step + 1}; lower the "
                                        f"learning rate (lr={cfg.lr}) or check the data")
                optimizer.zero_grad(set_to_none=True)
                objective = (distributed.shard_objective(out, real, len(batches[step]), ctx.world_size)
                             if ctx.enabled else loss)
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
                dev = evaluate(model, data, data.valid_examples, frozen_states=True)
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
            epoch_seconds.append(time.perf_counter() - epoch_started)
            intent = "" if dev["intent_accuracy"] is None else f"  intent acc {100 * dev['intent_accuracy']:.2f}"
            self.log(f"epoch {epoch}: loss {record['train_loss']:.4f}  dev slot F1 {100 * dev['slot_f1']:.2f}{intent}"
                     f"  ({seen / elapsed:.0f} sentences/s){'  *' if record.get('best') else ''}"
                     f"  [{self._time_left(state, epoch_seconds)}]")
        return LoopOutcome(state=state, history=history, best=best)

    def _plan(self, state: LoopState, steps_per_epoch: int) -> str:
        """The line logged before the first epoch: how many epochs at most, of how many batches, and when
        early stopping ends the run."""
        cfg = self.config
        first = state.epoch + 1
        if first > cfg.epochs:
            return f"all {cfg.epochs} epochs are done; finishing"
        epochs = (f"epoch {first} of at most {cfg.epochs}" if first > 1
                  else f"at most {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}")
        stopping = ("no early stopping (patience 0)" if cfg.patience == 0 else
                    f"stopping early after {cfg.patience} epoch{'s' if cfg.patience != 1 else ''} in a row without a better dev selection score "
                    f"(patience {cfg.patience})")
        return (f"starting {epochs}, {steps_per_epoch} batches of up to {cfg.batch_size} sentences each; "
                f"{stopping}")

    def _time_left(self, state: LoopState, epoch_seconds: list[float]) -> str:
        """An estimate of the time left, from the mean epoch time: up to the maximum epochs, and until early
        stopping would end the run if no better epoch came."""
        cfg = self.config
        left = cfg.epochs - state.epoch
        if left <= 0:
            return "that was the last epoch"
        if cfg.patience and state.bad_epochs >= cfg.patience:
            return (f"stopping early: {state.bad_epochs} epoch{'s' if state.bad_epochs != 1 else ''} in a row without a "
                    "better dev selection score")
        mean = format_duration(time_left(epoch_seconds, 1))
        text = f"{mean}/epoch; at most {format_duration(time_left(epoch_seconds, left))} left ({left} epoch{'s' if left != 1 else ''})"
        if cfg.patience:
            until_stop = cfg.patience - state.bad_epochs
            if until_stop < left:
                text += (f", {format_duration(time_left(epoch_seconds, until_stop))} if no better epoch comes "
                         f"({until_stop} more)")
        return text


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers, the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") >> 1


def _restore_metrics(path: Path, history: list[dict]) -> list[dict]:
    """On resume, make metrics.jsonl hold exactly the epochs the checkpoint committed; returns them.

    Lines of an epoch killed before its checkpoint was renamed into place go (it runs again and
    logs again), and so does a line cut short by the kill; lines lost after it are restored.
    """
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in history))
    return history
