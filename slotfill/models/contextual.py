"""A pretrained transformer as a word-feature extractor: sub-word states pooled to one vector per word."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from slotfill.errors import ConfigError

LAYER_MODES = ("last", "mix")
POOLINGS = ("first", "mean")


def pad_states(rows: Sequence[np.ndarray], steps: int | None = None) -> torch.Tensor:
    """Frozen word states of several sentences, (T_i, L, E) each (any float dtype), as one zero-padded float32
    batch (B, steps, L, E), ``steps`` the longest T_i unless given: a tagger's ``contextual`` input."""
    steps = max(len(row) for row in rows) if steps is None else steps
    batch = np.zeros((len(rows), steps, *rows[0].shape[1:]), dtype=np.float32)
    for b, row in enumerate(rows):
        batch[b, : len(row)] = row
    return torch.from_numpy(batch)


def build_transformer(hf_config: dict[str, Any]) -> nn.Module:
    """An encoder with random weights from a Hugging Face config dict (the artifact's weights go in after)."""
    from transformers import AutoConfig, AutoModel

    config = dict(hf_config)
    model_type = config.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ConfigError("contextual_model: the encoder config has no model_type")
    try:
        hf = AutoConfig.for_model(model_type, **config)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"contextual_model: {exc}") from None
    model = AutoModel.from_config(hf)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # the [CLS] pooler is not used for word features; it would only be dead weight
    return model


class ContextualEmbedder(nn.Module):
    """Runs the transformer over windows of pieces and pools piece states to words.

    ``layers="mix"`` learns a softmax-weighted sum of all hidden layers (embeddings included) times
    a scale, as ELMo does, which lets a frozen encoder's lower layers contribute; ``"last"`` takes
    the top layer. ``pooling`` is the word's ``first`` piece or the ``mean`` of its pieces.
    """

    def __init__(self, hf_config: dict[str, Any], dim: int, layers: str = "mix", pooling: str = "first"):
        super().__init__()
        self.encoder = build_transformer(hf_config)
        self.dim = dim
        self.layers = layers
        self.pooling = pooling
        self.num_states = int(hf_config.get("num_hidden_layers", 0)) + 1
        if layers == "mix":
            self.layer_weights = nn.Parameter(torch.zeros(self.num_states))
            self.gamma = nn.Parameter(torch.ones(()))

    def states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, first: torch.Tensor,
               last: torch.Tensor) -> torch.Tensor:
        """Word features before mixing: (B, T, L, E) with L = number of layers used (1 for ``last``).

        input_ids, attention_mask: (W, S) pieces per window; first, last: (B, T) flat positions in W * S.
        """
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           output_hidden_states=self.layers == "mix")
        hidden = torch.stack(out.hidden_states, dim=2) if self.layers == "mix" else out.last_hidden_state.unsqueeze(2)
        windows, steps, layers, dim = hidden.shape
        flat_first = first.reshape(-1)
        if self.pooling == "first":
            words = hidden.reshape(windows * steps, layers, dim)[flat_first]
        else:
            # Mean over a word's pieces from running sums within each window.
            sums = hidden.cumsum(dim=1).reshape(windows * steps, layers, dim)
            flat = hidden.reshape(windows * steps, layers, dim)
            flat_last = last.reshape(-1)
            count = (flat_last - flat_first + 1).clamp_min(1).to(hidden.dtype)[:, None, None]
            words = (sums[flat_last] - sums[flat_first] + flat[flat_first]) / count
        return words.reshape(*first.shape, layers, dim)

    def mix(self, states: torch.Tensor) -> torch.Tensor:
        """(B, T, L, E) -> (B, T, E)."""
        if self.layers == "mix":
            weights = torch.softmax(self.layer_weights, dim=0).to(states.dtype)
            return self.gamma * torch.einsum("btle,l->bte", states, weights)
        return states[:, :, -1]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, first: torch.Tensor,
                last: torch.Tensor) -> torch.Tensor:
        """-> (B, T, E) word features."""
        return self.mix(self.states(input_ids, attention_mask, first, last))
