"""Training checkpoints: one safetensors file holding weights, optimizer state, RNG and loop state.

Everything sits in a single file written by atomic rename, so a run killed at any
moment leaves either the previous complete checkpoint or the new complete one.
Non-tensor state travels as JSON in the safetensors metadata; nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors_bytes

from slotfill.artifact import atomic_write_bytes
from slotfill.errors import SlotfillError


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict[str, Any]) -> None:
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
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
    }
    atomic_write_bytes(path, save_safetensors_bytes(tensors, metadata={"slotfill": json.dumps(meta)}))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict:
    """Restore everything saved by :func:`save_checkpoint`; returns the loop state."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()["slotfill"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, KeyError, ValueError, OSError) as exc:
        raise SlotfillError(f"{path}: unreadable checkpoint ({exc}); delete it to start over") from None
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
    return meta["state"]
