"""Training checkpoints: one safetensors file holding weights, optimizer state, RNG and loop state.

Everything sits in a single file written by atomic rename, so a run killed at any
moment leaves either the previous complete checkpoint or the new complete one.
The rename is the commit point of an epoch: the file also carries the best weights so
far and the metrics of every committed epoch, so nothing else in the state directory
has to be consistent with it after a kill (metrics.jsonl is rewritten from it on resume).
Non-tensor state travels as JSON in the safetensors metadata; nothing is pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors_bytes

from slotfill.artifact.files import atomic_write_bytes
from slotfill.errors import SlotfillError


@dataclass
class Restored:
    """What :func:`load_checkpoint` hands back besides the tensors it loads in place."""

    state: dict[str, Any]
    best: dict[str, torch.Tensor]  # the best epoch's weights so far
    history: list[dict[str, Any]]  # one metrics record per committed epoch


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict[str, Any], *, best: dict[str, torch.Tensor],
                    history: list[dict[str, Any]]) -> None:
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for key, value in best.items():
        tensors[f"best.{key}"] = value.detach().cpu().contiguous()
    optim_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in optim_state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "state": state,
        "param_groups": optim_state["param_groups"],
        "optim_scalars": scalars,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "history": history,
    }
    data = save_safetensors_bytes(tensors, metadata={"slotfill": json.dumps(meta)})
    atomic_write_bytes(path, data)


def remove_partial_writes(directory: Path) -> list[Path]:
    """Delete temp files a killed :func:`atomic_write_bytes` left in ``directory``; returns them.

    They are never read (a checkpoint is only ever ``last.safetensors``), but each kill would
    otherwise leave one more behind.
    """
    removed = []
    for candidate in directory.glob(".*.tmp") if directory.is_dir() else ():
        if candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()["slotfill"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, KeyError, ValueError, OSError) as exc:
        raise SlotfillError(f"{path}: unreadable checkpoint ({exc}); delete it to start over") from None
    return meta, tensors


def checkpoint_epoch(path: Path) -> int | None:
    """The last epoch a checkpoint file committed, or None when there is no complete one."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return int(json.loads(handle.metadata()["slotfill"])["state"]["epoch"])
    except (SafetensorError, KeyError, ValueError, TypeError, OSError):
        return None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> Restored:
    """Restore everything saved by :func:`save_checkpoint` into the objects given."""
    meta, tensors = _read(path)
    best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
    if not best or not isinstance(meta.get("history"), list):
        raise SlotfillError(f"{path}: unreadable checkpoint (no best weights or metrics history); delete it to "
                            "start over")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise SlotfillError(f"{path}: checkpoint does not fit this configuration ({str(exc).splitlines()[0]})") from None
    optim_state: dict[str, Any] = {"state": {}, "param_groups": meta["param_groups"]}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state["state"].setdefault(int(index), {})[name] = value
    for index, scalars in meta["optim_scalars"].items():
        optim_state["state"].setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict(optim_state)
    if scheduler is not None and meta["scheduler"] is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    return Restored(state=meta["state"], best=best, history=meta["history"])
