"""A (bi)directional RNN / LSTM / GRU over padded batches that never looks at the padding."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentEncoder(nn.Module):
    """Wraps one fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``batch_first=True``).

    Padded batches are packed, so padding costs no time and cannot leak into real positions:
    in particular the backward direction starts at each sequence's *last real token*, not at
    the padded end of the batch. The output at a real position is therefore the same as running
    that sequence alone, and the output at a padded position is exactly 0.

    Parameters
    ----------
    cell: ``"rnn"`` (Elman, tanh), ``"lstm"`` or ``"gru"``.
    input_size: ``D``, the feature size of the inputs.
    hidden_size: ``H``, per direction.
    num_layers: stacked layers; layer ``l + 1`` reads the (concatenated) outputs of layer ``l``.
    bidirectional: run a second, right-to-left direction and concatenate.
    dropout: between stacked layers only (there is nothing to drop between with one layer, and
        torch warns if asked to).
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown recurrent cell {cell!r}; expected one of {', '.join(CELLS)}")
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.rnn = CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    @property
    def input_size(self) -> int:
        return self.rnn.input_size

    @property
    def output_size(self) -> int:
        """Feature size of :meth:`forward`'s output: ``H * num_directions``."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Encode a right-padded batch.

        inputs: (B, T, D); lengths: (B,) integer, 1 <= length <= T, on any device.
        Returns (B, T, output_size), exactly 0 at padded positions.
        """
        if inputs.dim() != 3:
            raise ValueError(f"inputs must be (B, T, D), got {tuple(inputs.shape)}")
        batch, steps, _ = inputs.shape
        # Packing needs the lengths on the host anyway (they drive the kernel launches).
        lengths = torch.as_tensor(lengths).to(device="cpu", dtype=torch.int64)
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must be ({batch},), got {tuple(lengths.shape)}")
        if batch == 0:
            return inputs.new_zeros(0, steps, self.output_size)
        if int(lengths.min()) < 1 or int(lengths.max()) > steps:
            raise ValueError(f"lengths must be in 1 .. {steps}, got {lengths.tolist()}")

        if bool((lengths == steps).all()):
            # No padding anywhere: packing would only add a sort and two copies.
            outputs, _ = self.rnn(inputs)
            return outputs
        packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        outputs, _ = self.rnn(packed)
        # total_length keeps T even when the longest sequence in the batch is shorter than T,
        # so the output lines up with the caller's mask.
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=steps)
        return outputs
