"""The fused torch RNN / LSTM / GRU inside RecurrentEncoder against the textbook equations.

The references below are written from the equations, step by step, in plain tensor ops, and
read the *same* weights as the fused layer. PyTorch stores each layer's gate weights stacked
along dim 0, for direction ``d`` (suffix ``""`` or ``"_reverse"``) of layer ``l``::

    weight_ih_l{l}{d}: (G*H, D_in)   weight_hh_l{l}{d}: (G*H, H)
    bias_ih_l{l}{d}:   (G*H,)        bias_hh_l{l}{d}:   (G*H,)

with G blocks in this order:

    LSTM (G = 4): i, f, g, o
        i  = σ(W_ii x + b_ii + W_hi h + b_hi)        input gate
        f  = σ(W_if x + b_if + W_hf h + b_hf)        forget gate
        g  = tanh(W_ig x + b_ig + W_hg h + b_hg)     candidate cell
        o  = σ(W_io x + b_io + W_ho h + b_ho)        output gate
        c' = f ⊙ c + i ⊙ g
        h' = o ⊙ tanh(c')

    GRU (G = 3): r, z, n
        r  = σ(W_ir x + b_ir + W_hr h + b_hr)        reset gate
        z  = σ(W_iz x + b_iz + W_hz h + b_hz)        update gate
        n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        h' = (1 − z) ⊙ n + z ⊙ h
      Note the reset gate multiplies (W_hn h + b_hn), *after* the matrix product (as in cuDNN);
      the original paper's n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn) is a different model.

    Elman RNN (G = 1, nonlinearity tanh):
        h' = tanh(W_ih x + b_ih + W_hh h + b_hh)

Initial states are zero. A bidirectional layer runs a second set of weights right to left,
starting at the sequence's last *real* token, and concatenates [forward; backward] per step.
Layer l + 1 reads that concatenation.
"""

from __future__ import annotations

import pytest
import torch

from slotfill.models.encoder import RecurrentEncoder

CELLS = ["rnn", "lstm", "gru"]
HIDDEN = 4
INPUT = 3


# ---------------------------------------------------------------------------- reference cells


def lstm_cell(x, state, w_ih, w_hh, b_ih, b_hh):
    """x: (D,), state: (h (H,), c (H,)) -> (h', c')."""
    h, c = state
    w_ii, w_if, w_ig, w_io = w_ih.chunk(4)
    w_hi, w_hf, w_hg, w_ho = w_hh.chunk(4)
    b_ii, b_if, b_ig, b_io = b_ih.chunk(4)
    b_hi, b_hf, b_hg, b_ho = b_hh.chunk(4)
    i = torch.sigmoid(w_ii @ x + b_ii + w_hi @ h + b_hi)
    f = torch.sigmoid(w_if @ x + b_if + w_hf @ h + b_hf)
    g = torch.tanh(w_ig @ x + b_ig + w_hg @ h + b_hg)
    o = torch.sigmoid(w_io @ x + b_io + w_ho @ h + b_ho)
    c_next = f * c + i * g
    h_next = o * torch.tanh(c_next)
    return h_next, c_next


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """x: (D,), h: (H,) -> h'."""
    w_ir, w_iz, w_in = w_ih.chunk(3)
    w_hr, w_hz, w_hn = w_hh.chunk(3)
    b_ir, b_iz, b_in = b_ih.chunk(3)
    b_hr, b_hz, b_hn = b_hh.chunk(3)
    r = torch.sigmoid(w_ir @ x + b_ir + w_hr @ h + b_hr)
    z = torch.sigmoid(w_iz @ x + b_iz + w_hz @ h + b_hz)
    n = torch.tanh(w_in @ x + b_in + r * (w_hn @ h + b_hn))
    return (1 - z) * n + z * h


def gru_cell_reset_before_product(x, h, w_ih, w_hh, b_ih, b_hh):
    """The paper's variant, n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn): NOT what torch computes."""
    w_ir, w_iz, w_in = w_ih.chunk(3)
    w_hr, w_hz, w_hn = w_hh.chunk(3)
    b_ir, b_iz, b_in = b_ih.chunk(3)
    b_hr, b_hz, b_hn = b_hh.chunk(3)
    r = torch.sigmoid(w_ir @ x + b_ir + w_hr @ h + b_hr)
    z = torch.sigmoid(w_iz @ x + b_iz + w_hz @ h + b_hz)
    n = torch.tanh(w_in @ x + b_in + w_hn @ (r * h) + b_hn)
    return (1 - z) * n + z * h


def elman_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """x: (D,), h: (H,) -> h'."""
    return torch.tanh(w_ih @ x + b_ih + w_hh @ h + b_hh)


def run_direction(cell: str, xs: torch.Tensor, weights, reverse: bool, gru=gru_cell) -> torch.Tensor:
    """xs: (n, D) one unpadded sequence -> (n, H) hidden states, aligned with xs."""
    n = xs.size(0)
    h = xs.new_zeros(HIDDEN)
    state = (h, xs.new_zeros(HIDDEN))
    outputs = [None] * n
    for t in reversed(range(n)) if reverse else range(n):
        if cell == "lstm":
            state = lstm_cell(xs[t], state, *weights)
            h = state[0]
        elif cell == "gru":
            h = gru(xs[t], h, *weights)
        else:
            h = elman_cell(xs[t], h, *weights)
        outputs[t] = h
    return torch.stack(outputs)


def layer_weights(rnn: torch.nn.RNNBase, layer: int, reverse: bool):
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    return tuple(getattr(rnn, name + suffix) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def reference_encode(encoder: RecurrentEncoder, xs: torch.Tensor, gru=gru_cell) -> torch.Tensor:
    """xs: (n, D) one unpadded sequence -> (n, output_size), by the equations above."""
    rnn = encoder.rnn
    layer_input = xs
    for layer in range(rnn.num_layers):
        directions = [False, True] if rnn.bidirectional else [False]
        outputs = [
            run_direction(encoder.cell, layer_input, layer_weights(rnn, layer, reverse), reverse, gru)
            for reverse in directions
        ]
        layer_input = torch.cat(outputs, dim=-1)  # [forward; backward] feeds the next layer
    return layer_input


def make_encoder(cell: str, bidirectional: bool, num_layers: int, seed: int = 0) -> RecurrentEncoder:
    """A float64 encoder with weights large enough that every gate is far from saturated-constant."""
    torch.manual_seed(seed)
    encoder = RecurrentEncoder(cell, INPUT, HIDDEN, num_layers=num_layers, bidirectional=bidirectional)
    encoder = encoder.double().eval()
    with torch.no_grad():
        for param in encoder.parameters():
            param.normal_(0.0, 0.6)
    return encoder


def random_inputs(seed: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(len(lengths), max(lengths), INPUT, generator=generator, dtype=torch.float64)
    return inputs, torch.tensor(lengths)


def assert_exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------- equality


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_fused_layer_follows_the_equations(cell, bidirectional, num_layers):
    encoder = make_encoder(cell, bidirectional, num_layers)
    inputs, lengths = random_inputs(1, [6])
    fused = encoder(inputs, lengths)[0]
    assert_exact(fused, reference_encode(encoder, inputs[0]))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_padded_batch_follows_the_equations(cell, bidirectional):
    # Through RecurrentEncoder.forward's packing: the reverse direction of every row must start at
    # that row's last real token, so each row equals the reference run on its real tokens alone.
    encoder = make_encoder(cell, bidirectional, num_layers=2)
    inputs, lengths = random_inputs(2, [5, 2, 4, 1])
    fused = encoder(inputs, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert_exact(fused[b, :n], reference_encode(encoder, inputs[b, :n]))
        assert torch.all(fused[b, n:] == 0)


# ---------------------------------------------------------------------------- the test has teeth


def _swap_blocks(encoder: RecurrentEncoder, first: int, second: int) -> None:
    """Swap gate blocks ``first`` and ``second`` (each H rows) in every weight and bias, in place."""
    h = HIDDEN
    with torch.no_grad():
        for param in encoder.rnn.parameters():
            a = param[first * h : (first + 1) * h].clone()
            param[first * h : (first + 1) * h] = param[second * h : (second + 1) * h]
            param[second * h : (second + 1) * h] = a


@pytest.mark.parametrize(("cell", "first", "second"), [("lstm", 0, 1), ("lstm", 1, 3), ("gru", 0, 1), ("gru", 1, 2)])
def test_gate_order_is_distinguished(cell, first, second):
    # Swapping two gates' blocks (LSTM i<->f, f<->o; GRU r<->z, z<->n) must change the fused output,
    # so a reference that read the blocks in a wrong order could not pass the equality tests above.
    encoder = make_encoder(cell, bidirectional=True, num_layers=2)
    inputs, lengths = random_inputs(3, [6, 3])
    before = encoder(inputs, lengths)
    _swap_blocks(encoder, first, second)
    after = encoder(inputs, lengths)
    assert (before - after).abs().max() > 1e-2
    # The reference, reading the swapped weights in the fixed order, follows the fused layer.
    for b, n in enumerate(lengths.tolist()):
        assert_exact(after[b, :n], reference_encode(encoder, inputs[b, :n]))


def test_gru_reset_gate_is_applied_after_the_hidden_product():
    encoder = make_encoder("gru", bidirectional=False, num_layers=1)
    inputs, lengths = random_inputs(4, [6])
    fused = encoder(inputs, lengths)[0]
    assert_exact(fused, reference_encode(encoder, inputs[0]))
    variant = reference_encode(encoder, inputs[0], gru=gru_cell_reset_before_product)
    assert (fused - variant).abs().max() > 1e-3
