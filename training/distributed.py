"""Data-parallel training under ``torchrun``: process-group set-up, collectives, and batch sharding.

``torchrun --nproc_per_node N -m training.cli train ...`` starts N copies of the trainer with
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set. :func:`process_group` joins them
(gloo on CPU, nccl when CUDA is available) only when WORLD_SIZE > 1: a plain ``slotfill train``
never touches ``torch.distributed`` and behaves exactly as it did before.

``batch_size`` stays the *global* batch: every step each rank takes its stride of the same
global batch a single process would use (see :func:`shard_batch`), so a recipe gives the same
optimisation whatever the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """Where this process sits in the job; the default is a lone process (every collective a no-op)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 evaluates, logs and is the only one to write into the output directory."""
        return self.rank == 0

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks; float64 so sentence counts stay exact integers."""
        if not self.enabled:
            return [float(v) for v in values]
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def broadcast(self, values: Sequence[float], src: int = 0) -> list[float]:
        """Rank ``src``'s values on every rank (the others' arguments are placeholders of the same length)."""
        if not self.enabled:
            return [float(v) for v in values]
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=src)
        return tensor.tolist()

    def broadcast_flag(self, flag: bool, src: int = 0) -> bool:
        """A yes/no decision taken on rank ``src`` (stop early, resume, ...), the same on every rank."""
        return bool(self.broadcast([1.0 if flag else 0.0], src)[0])

    def broadcast_json(self, data: Any, src: int = 0) -> Any:
        """A JSON-able object from rank ``src``, sent as UTF-8 bytes (never pickled)."""
        if not self.enabled:
            return data
        payload = json.dumps(data).encode("utf-8") if self.rank == src else b""
        size = int(self.broadcast([len(payload)], src)[0])
        buffer = torch.zeros(size, dtype=torch.uint8, device=self.device)
        if self.rank == src:
            buffer.copy_(torch.tensor(list(payload), dtype=torch.uint8))
        dist.broadcast(buffer, src=src)
        return json.loads(bytes(buffer.cpu().tolist()).decode("utf-8"))

    def same_everywhere(self, text: str) -> bool:
        """Whether ``text`` is identical on all ranks (compared by a 62-bit slice of its sha256)."""
        if not self.enabled:
            return True
        digest = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 2
        low = torch.tensor([digest], dtype=torch.int64, device=self.device)
        high = low.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        return bool(low.item() == high.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


SINGLE = Dist()


def init_from_env(environ: Mapping[str, str] | None = None) -> Dist:
    """Join the process group torchrun describes in the environment, or return :data:`SINGLE`.

    A group the caller already initialised is used as it is.
    """
    environ = os.environ if environ is None else environ
    world_size = int(environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    rank, local_rank = int(environ["RANK"]), int(environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        # nccl addresses "the current device": pin it before the group exists.
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                rank=rank, world_size=world_size)
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup(context: Dist) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(environ: Mapping[str, str] | None = None) -> Iterator[Dist]:
    """``with process_group() as ctx:`` -- the group is torn down however the block ends."""
    already = dist.is_available() and dist.is_initialized()
    context = init_from_env(environ)
    try:
        yield context
    finally:
        if not already:
            cleanup(context)


def shard_batch(batch: Sequence[int], rank: int, world_size: int) -> tuple[list[int], int]:
    """This rank's part of one global batch: ``(indices, real)``.

    Rank r takes every world_size-th sentence from position r, so the shards are disjoint, cover
    the batch, differ in size by at most one, and (the batch being length-sorted) have similar
    lengths. Every rank thus runs one step per global batch: the step counts can never differ.
    A batch smaller than the world leaves some ranks nothing; they get one sentence of the batch
    as padding with ``real == 0``, so they still join the gradient all-reduce but add nothing.
    """
    indices = list(batch[rank::world_size])
    if indices:
        return indices, len(indices)
    return [batch[rank % len(batch)]], 0


def shard_batches(batches: Sequence[Sequence[int]], rank: int, world_size: int) -> list[tuple[list[int], int]]:
    """:func:`shard_batch` over an epoch's global batches, in the same order on every rank."""
    return [shard_batch(batch, rank, world_size) for batch in batches]


def shard_objective(out: Any, real: int, global_size: int, world_size: int) -> torch.Tensor:
    """What one rank back-propagates so that DDP's gradient *average* over ranks is the gradient of
    the global batch's mean loss, as in a single process: the shard's mean loss weighted by its share
    of the batch (zero for a padding shard). Exact when every sentence has an intent label."""
    objective = out.loss * (real * world_size / global_size)
    if out.intent_logits is not None and out.intent_loss is None:
        # A shard without intent labels leaves the intent head out of the graph, and DDP waits
        # for a gradient of every parameter on every rank: give it a zero one.
        objective = objective + 0.0 * out.intent_logits.sum()
    return objective
