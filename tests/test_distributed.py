"""Data-parallel training under torchrun: shard assignment, and two real gloo processes on the sample data."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from slotfill.inference.predictor import Predictor
from slotfill.models.config import TaggerConfig
from slotfill.models.tagger import IGNORE_INTENT, SlotTagger
from training.checkpoint import checkpoint_epoch
from training.distributed import SINGLE, init_from_env, shard_batch, shard_batches, shard_objective
from training.pipeline import train

from .conftest import REPO, SMALL_MODEL

EPOCHS = 4
SETTINGS = {**SMALL_MODEL, "epochs": EPOCHS}
SEED = 0
TRAIN_SENTENCES = 2000  # the sample data's training split


# ----------------------------------------------------------------------------- sharding (fast)
def tiny_tagger() -> SlotTagger:
    torch.manual_seed(0)
    config = TaggerConfig(vocab_size=30, num_chars=20, id2label={0: "O", 1: "B-city", 2: "I-city"},
                          id2intent={0: "a", 1: "b", 2: "c"}, word_dim=8, char_dim=4, char_channels=6, hidden_size=10,
                          dropout=0.0)
    return SlotTagger(config).eval()


def sentences(ids: list[int], intents: bool = True) -> dict[str, torch.Tensor]:
    """A padded batch of the seeded sentences ``ids`` (sentence i: 2 + i % 5 tokens)."""
    lengths = [2 + i % 5 for i in ids]
    words = torch.zeros(len(ids), max(lengths), dtype=torch.long)
    chars = torch.zeros(len(ids), max(lengths), 4, dtype=torch.long)
    tags = torch.zeros(len(ids), max(lengths), dtype=torch.long)
    for b, (i, n) in enumerate(zip(ids, lengths)):
        gen = torch.Generator().manual_seed(i)
        words[b, :n] = torch.randint(1, 30, (n,), generator=gen)
        chars[b, :n] = torch.randint(1, 20, (n, 4), generator=gen)
        tags[b, :n] = torch.randint(0, 3, (n,), generator=gen)
    labels = torch.tensor([i % 3 if intents else IGNORE_INTENT for i in ids])
    return {"word_ids": words, "char_ids": chars, "lengths": torch.tensor(lengths), "tags": tags, "intents": labels}


@pytest.mark.parametrize("size, world", [(1, 2), (2, 2), (5, 2), (7, 3), (3, 4), (32, 2), (33, 4), (4, 8)])
def test_shards_are_disjoint_cover_the_batch_and_pad_empty_ranks(size, world):
    batch = list(range(100, 100 + size))
    shards = [shard_batch(batch, rank, world) for rank in range(world)]
    real = [indices[:count] for indices, count in shards]
    assert sorted(i for part in real for i in part) == batch  # disjoint and covering
    assert max(map(len, real)) - min(map(len, real)) <= 1
    for indices, count in shards:
        assert indices, "every rank must have a sentence to run, or it would skip the step's all-reduce"
        if count == 0:
            assert len(indices) == 1 and indices[0] in batch
        else:
            assert len(indices) == count

    # What each rank back-propagates: DDP averages the gradients over the ranks, so the objectives'
    # mean must be the global batch's mean loss, which one process would back-propagate.
    model = tiny_tagger()
    objectives = [shard_objective(model(**sentences(indices)), count, size, world) for indices, count in shards]
    whole = model(**sentences(batch)).loss
    assert (sum(objectives) / world).item() == pytest.approx(whole.item(), rel=1e-5)
    for (indices, count), objective in zip(shards, objectives):
        if count == 0:  # padding: nothing to learn, yet a (zero) gradient for every parameter
            assert objective.item() == 0.0
            model.zero_grad(set_to_none=True)
            objective.backward()
            assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_a_shard_without_intent_labels_still_gives_the_intent_head_a_gradient():
    model = tiny_tagger()
    for count in (2, 0):  # a real shard and a padding shard, no sentence with an intent label
        out = model(**sentences([3, 8], intents=False))
        assert out.intent_loss is None
        objective = shard_objective(out, count, 4, 2)
        assert objective.item() == pytest.approx(out.loss.item() * count * 2 / 4)
        model.zero_grad(set_to_none=True)
        objective.backward()
        # DDP waits for a gradient of every parameter on every rank: the head's is there, and zero.
        assert model.intent_head.weight.grad is not None and not model.intent_head.weight.grad.any()
        assert all(p.grad is not None for p in model.parameters())


def test_every_rank_runs_the_same_number_of_steps_for_uneven_batches():
    batches = [list(range(0, 32)), list(range(32, 64)), list(range(64, 71)), [71]]  # 72 sentences, uneven tail
    for world in (2, 3, 5):
        per_rank = [shard_batches(batches, rank, world) for rank in range(world)]
        assert {len(steps) for steps in per_rank} == {len(batches)}
        covered = sorted(i for steps in per_rank for indices, count in steps for i in indices[:count])
        assert covered == list(range(72))


def test_a_lone_process_never_joins_a_process_group():
    assert init_from_env({}) is SINGLE
    assert init_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is SINGLE
    assert SINGLE.all_reduce_sum([1.5, 2]) == [1.5, 2.0]
    assert SINGLE.broadcast_flag(True) and SINGLE.same_everywhere("anything")
    assert SINGLE.broadcast_json({"a": [1]}) == {"a": [1]}


# ----------------------------------------------------------------------------- torchrun (two processes)
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(out, *extra: str, kill_in_checkpoint: int | None = None) -> subprocess.CompletedProcess:
    settings = [f"{key}={value}" for key, value in SETTINGS.items()]
    program = ["-m", "training.cli"]
    if kill_in_checkpoint is not None:  # rank 0 dies half-way through writing that epoch's checkpoint
        program = [str(REPO / "tests" / "helpers" / "kill_in_checkpoint.py"), str(kill_in_checkpoint), "--"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), *program, "train", "--data", "sample", "--out", str(out),
               "--seed", str(SEED), *extra, "--set", *settings]
    # The timeout turns a deadlock between ranks into a failure instead of a hung test run.
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def epochs_logged(out) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "training" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "model"
    result = torchrun(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_torchrun_two_processes_train_like_one(ddp_run, sample_dir, tmp_path):
    out, result = ddp_run
    single = tmp_path / "single"
    train(sample_dir, single, overrides=SETTINGS, seed=SEED, progress=False, log=lambda message: None)

    # One artifact, holding exactly the files a single process writes: rank 1 adds nothing.
    assert [path for path in out.parent.rglob("manifest.json")] == [out / "manifest.json"]
    files = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert files == sorted(p.relative_to(single) for p in single.rglob("*"))
    predictor = Predictor.load(out)
    assert predictor.predict_texts(["book a table for two at 7 pm"])[0].slots

    ddp_dev = json.loads((out / "training" / "dev_report.json").read_text())
    single_dev = json.loads((single / "training" / "dev_report.json").read_text())
    assert abs(ddp_dev["slot_f1"] - single_dev["slot_f1"]) <= 0.03, (ddp_dev["slot_f1"], single_dev["slot_f1"])

    # One line per epoch (rank 0 alone appends), and each counts every training sentence, so the
    # loss and count were summed over both ranks rather than taken from rank 0's half.
    records = [json.loads(line) for line in (out / "training" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    assert all(r["sentences"] == TRAIN_SENTENCES for r in records)
    single_first = json.loads((single / "training" / "metrics.jsonl").read_text().splitlines()[0])
    assert records[0]["train_loss"] == pytest.approx(single_first["train_loss"], rel=0.05)
    assert result.stderr.count("in 2 processes") == 1  # only rank 0 logs


def test_torchrun_resumes_from_the_checkpoint_all_ranks_share(ddp_run, tmp_path):
    reference, _ = ddp_run
    out = tmp_path / "killed"
    # Rank 0 dies half-way through writing epoch 2's checkpoint; torchrun then stops rank 1.
    killed = torchrun(out, kill_in_checkpoint=2)
    assert killed.returncode != 0
    assert checkpoint_epoch(out / "training" / "last.safetensors") == 1
    assert list((out / "training").glob(".last.safetensors.*.tmp"))
    assert not (out / "manifest.json").exists()

    resumed = torchrun(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("resuming after epoch 1 ") == 1
    assert epochs_logged(out) == list(range(1, EPOCHS + 1))
    assert not list((out / "training").glob(".*.tmp"))
    # Every draw is seeded by (seed, epoch, rank) and both ranks load the same checkpoint, so the
    # resumed job ends exactly where the uninterrupted one did.
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()

    # Refusing the directory on rank 0 stops every rank (no rank left waiting in a collective).
    refused = torchrun(out)
    assert refused.returncode != 0
    assert "already holds a training run" in refused.stderr
