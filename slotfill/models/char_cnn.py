"""Character-level word features, so unseen words still get a useful representation."""

from __future__ import annotations

import torch
from torch import nn


class CharCNN(nn.Module):
    """Embeds each word's characters, convolves them and max-pools over the word.

    Only real (unpadded) word positions are computed, which keeps the cost
    proportional to the number of tokens rather than to ``B * T``.
    """

    def __init__(self, num_chars: int, char_dim: int, channels: int, kernel: int):
        super().__init__()
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, channels, kernel_size=kernel, padding=kernel // 2)
        self.output_size = channels

    def forward(self, char_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """char_ids: (B, T, L) long, 0 = padding; mask: (B, T) bool -> (B, T, channels)."""
        batch, steps, _ = char_ids.shape
        out = char_ids.new_zeros((batch, steps, self.output_size), dtype=self.conv.weight.dtype)
        words = char_ids[mask]  # (N, L) real words only
        if words.numel() == 0:
            return out
        chars = self.embedding(words).transpose(1, 2)  # (N, char_dim, L)
        features = self.conv(chars)  # (N, channels, L)
        # Padding characters must not win the max: push them to -inf first.
        pad = (words == 0).unsqueeze(1)
        features = features.masked_fill(pad, float("-inf")).amax(dim=2)
        # A word longer than nothing always has >= 1 real char, but guard anyway.
        features = torch.nan_to_num(features, neginf=0.0)
        out[mask] = features
        return out
