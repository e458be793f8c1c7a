"""RecurrentEncoder: padding must neither cost nor leak."""

from __future__ import annotations

import pytest
import torch

from slotfill.models.encoder import RecurrentEncoder

CELLS = ["rnn", "lstm", "gru"]
LENGTHS = [5, 2, 4, 1]  # unsorted on purpose: enforce_sorted=False must restore the order


def make_batch(seed: int, input_size: int = 3, lengths=LENGTHS, steps: int | None = None):
    """inputs (B, T, D) with large garbage in the padding, lengths (B,), mask (B, T)."""
    generator = torch.Generator().manual_seed(seed)
    steps = steps or max(lengths)
    inputs = torch.randn(len(lengths), steps, input_size, generator=generator)
    lengths = torch.tensor(lengths)
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    inputs = inputs.masked_fill(~mask[:, :, None], 50.0)
    return inputs, lengths, mask


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_padded_batch_equals_each_sequence_alone(cell, bidirectional, num_layers):
    torch.manual_seed(0)
    encoder = RecurrentEncoder(cell, 3, 4, num_layers=num_layers, bidirectional=bidirectional).eval()
    inputs, lengths, mask = make_batch(1)
    outputs = encoder(inputs, lengths)
    assert outputs.shape == (len(LENGTHS), inputs.size(1), encoder.output_size)
    assert torch.all(outputs[~mask] == 0)
    for b, n in enumerate(LENGTHS):
        # Alone, the sequence has no padding and takes the unpacked fast path: this also checks
        # that both paths agree.
        alone = encoder(inputs[b : b + 1, :n], torch.tensor([n]))
        torch.testing.assert_close(outputs[b, :n], alone[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_padding_values_do_not_leak(cell, bidirectional):
    torch.manual_seed(0)
    encoder = RecurrentEncoder(cell, 3, 4, num_layers=2, bidirectional=bidirectional).eval()
    inputs, lengths, mask = make_batch(2)
    changed = inputs.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 3) * 1e3
    assert torch.equal(encoder(inputs, lengths), encoder(changed, lengths))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_output_size(cell, bidirectional):
    encoder = RecurrentEncoder(cell, 3, 7, bidirectional=bidirectional)
    assert encoder.output_size == (14 if bidirectional else 7)
    assert encoder(torch.randn(2, 3, 3), torch.tensor([3, 3])).size(-1) == encoder.output_size
    assert isinstance(encoder.rnn, {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell])
    assert encoder.rnn.batch_first


def test_total_length_is_kept_when_every_row_is_padded():
    # The longest sequence (3) is shorter than T (6): the output must still line up with T.
    encoder = RecurrentEncoder("lstm", 3, 4)
    inputs, lengths, mask = make_batch(3, lengths=[3, 1, 2], steps=6)
    outputs = encoder(inputs, lengths)
    assert outputs.shape == (3, 6, 8)
    assert torch.all(outputs[~mask] == 0)


def test_lengths_may_be_a_list_or_live_elsewhere():
    encoder = RecurrentEncoder("gru", 3, 4)
    inputs, lengths, _ = make_batch(4)
    expected = encoder(inputs, lengths)
    torch.testing.assert_close(encoder(inputs, lengths.tolist()), expected, rtol=0, atol=0)
    torch.testing.assert_close(encoder(inputs, lengths.int()), expected, rtol=0, atol=0)


def test_gradients_reach_real_inputs_only():
    encoder = RecurrentEncoder("lstm", 3, 4, bidirectional=True)
    inputs, lengths, mask = make_batch(5)
    inputs.requires_grad_(True)
    encoder(inputs, lengths).sum().backward()
    assert torch.all(inputs.grad[~mask] == 0)
    assert inputs.grad[mask].abs().sum() > 0


def test_dropout_only_between_layers():
    # With one layer torch would warn (an error under our pytest config) if dropout were passed on.
    assert RecurrentEncoder("lstm", 3, 4, num_layers=1, dropout=0.3).rnn.dropout == 0.0
    assert RecurrentEncoder("lstm", 3, 4, num_layers=2, dropout=0.3).rnn.dropout == 0.3


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown recurrent cell 'transformer'"):
        RecurrentEncoder("transformer", 3, 4)
    encoder = RecurrentEncoder("rnn", 3, 4)
    with pytest.raises(ValueError, match="lengths must be in 1 .. 5"):
        encoder(torch.randn(2, 5, 3), torch.tensor([5, 0]))
    with pytest.raises(ValueError, match="lengths must be in 1 .. 5"):
        encoder(torch.randn(2, 5, 3), torch.tensor([6, 2]))
    with pytest.raises(ValueError, match=r"lengths must be \(2,\)"):
        encoder(torch.randn(2, 5, 3), torch.tensor([5]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_inputs_with_cpu_or_cuda_lengths(cell):
    torch.manual_seed(0)
    encoder = RecurrentEncoder(cell, 3, 4, num_layers=2).eval()
    inputs, lengths, mask = make_batch(6)
    expected = encoder(inputs, lengths)
    encoder = encoder.cuda()
    for device_lengths in (lengths, lengths.cuda()):
        outputs = encoder(inputs.cuda(), device_lengths)
        assert outputs.device.type == "cuda"
        torch.testing.assert_close(outputs.cpu(), expected, rtol=1e-4, atol=1e-5)
        assert torch.all(outputs.cpu()[~mask] == 0)
