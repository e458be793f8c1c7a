"""The SlotTagger model: config round trips, losses, padding, persistence."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from slotfill.errors import ArtifactError, ConfigError
from slotfill.models.config import TaggerConfig
from slotfill.models.tagger import IGNORE_INTENT, SlotTagger

LABELS = ["O", "B-city", "I-city", "B-date", "I-date"]


def make_config(**overrides) -> TaggerConfig:
    settings = dict(vocab_size=30, num_chars=20, id2label=dict(enumerate(LABELS)), id2intent={0: "a", 1: "b"},
                    word_dim=8, char_dim=4, char_channels=6, hidden_size=10, dropout=0.0)
    settings.update(overrides)
    return TaggerConfig(**settings)


def random_batch(lengths, vocab=30, chars=20, width=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    steps = max(lengths)
    words = torch.zeros(len(lengths), steps, dtype=torch.long)
    char_ids = torch.zeros(len(lengths), steps, width, dtype=torch.long)
    for b, n in enumerate(lengths):
        words[b, :n] = torch.randint(2, vocab, (n,), generator=gen)
        char_ids[b, :n] = torch.randint(1, chars, (n, width), generator=gen)
    return words, char_ids, torch.tensor(lengths)


@pytest.mark.parametrize("decoder", ["crf", "softmax"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_forward_shapes_and_loss_only_with_tags(decoder, cell):
    model = SlotTagger(make_config(decoder=decoder, cell=cell))
    words, chars, lengths = random_batch([4, 2, 3])
    out = model(words, chars, lengths)
    assert out.emissions.shape == (3, 4, len(LABELS))
    assert out.intent_logits.shape == (3, 2)
    assert out.loss is None
    tags = torch.randint(0, 1, (3, 4))
    out = model(words, chars, lengths, tags=tags, intents=torch.tensor([0, 1, IGNORE_INTENT]))
    assert out.loss is not None and out.loss.item() > 0
    assert out.intent_loss is not None
    out.loss.backward()
    assert model.word_embedding.weight.grad is not None


def test_padding_does_not_change_emissions():
    model = SlotTagger(make_config()).eval()
    words, chars, lengths = random_batch([5, 2])
    batched = model(words, chars, lengths).emissions
    alone = model(words[1:, :2], chars[1:, :2], lengths[1:]).emissions
    torch.testing.assert_close(batched[1, :2], alone[0], atol=1e-6, rtol=0)
    padded_words = words.clone()
    padded_words[1, 2:] = 0
    padded_chars = chars.clone()
    padded_chars[1, 2:] = 7  # garbage behind the padding must not matter
    again = model(padded_words, padded_chars, lengths).emissions
    torch.testing.assert_close(again[1, :2], batched[1, :2], atol=1e-6, rtol=0)


def test_intent_loss_ignored_when_no_intents_given():
    model = SlotTagger(make_config())
    words, chars, lengths = random_batch([3, 3])
    tags = torch.zeros(2, 3, dtype=torch.long)
    out = model(words, chars, lengths, tags=tags, intents=torch.tensor([IGNORE_INTENT, IGNORE_INTENT]))
    assert out.intent_loss is None
    assert torch.equal(out.loss, out.slot_loss)


def test_model_without_intents_has_no_head():
    model = SlotTagger(make_config(id2intent={}))
    words, chars, lengths = random_batch([3])
    assert model(words, chars, lengths).intent_logits is None


def test_config_json_round_trip_restores_int_keys():
    config = make_config()
    data = json.loads(json.dumps(config.to_dict()))
    assert set(data["id2label"]) == {"0", "1", "2", "3", "4"}
    again = TaggerConfig.from_dict(data)
    assert again == config
    assert again.id2label[1] == "B-city"


@pytest.mark.parametrize("key,value,message", [
    ("vocab_size", 10**9, "exceeds the limit"),
    ("hidden_size", 10**6, "exceeds the limit"),
    ("cell", "transformer", "must be one of"),
    ("dropout", 1.5, "[0, 1)"),
    ("vocab_size", -3, "positive integer"),
    ("char_kernel", 4, "odd"),
])
def test_config_rejects_bad_values(key, value, message):
    data = make_config().to_dict()
    data[key] = value
    with pytest.raises(ConfigError, match=key) as info:
        TaggerConfig.from_dict(data)
    assert message in str(info.value)


@pytest.mark.parametrize("key", ["vocab_size", "num_chars", "id2label"])
def test_config_rejects_unknown_and_missing_keys(key):
    data = make_config().to_dict()
    with pytest.raises(ConfigError, match="unknown key"):
        TaggerConfig.from_dict({**data, "hiden_size": 3})
    del data[key]
    with pytest.raises(ConfigError, match=f"missing key.*{key}"):
        TaggerConfig.from_dict(data)


def test_an_architecture_alone_is_a_config_but_builds_no_model():
    architecture = TaggerConfig(cell="gru", hidden_size=12)
    architecture.validate_architecture()
    assert architecture.architecture()["hidden_size"] == 12 and "vocab_size" not in architecture.architecture()
    with pytest.raises(ConfigError, match="vocab_size: must be a positive integer, got 0"):
        SlotTagger(architecture)
    with pytest.raises(ConfigError, match="id2label: needs at least one label"):
        SlotTagger(dataclasses.replace(architecture, vocab_size=30, num_chars=20))
    complete = dataclasses.replace(architecture, vocab_size=30, num_chars=20, id2label=dict(enumerate(LABELS)))
    assert SlotTagger(complete).encoder.rnn.hidden_size == 12
    with pytest.raises(ConfigError, match="cell: must be one of rnn, lstm, gru"):
        TaggerConfig(cell="transformer").validate_architecture()
    # A transformer front-end may stand in for the words and the recurrent layer.
    TaggerConfig(word_dim=0, num_layers=0).validate_architecture(contextual=True)
    with pytest.raises(ConfigError, match="word_dim: must be a positive integer, got 0"):
        TaggerConfig(word_dim=0).validate_architecture()


def test_save_and_load_pretrained_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = SlotTagger(make_config()).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = SlotTagger.from_pretrained(tmp_path)
    words, chars, lengths = random_batch([4, 3])
    assert torch.equal(model(words, chars, lengths).emissions, loaded(words, chars, lengths).emissions)


def test_load_rejects_weights_of_another_shape(tmp_path):
    SlotTagger(make_config()).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(make_config(hidden_size=12).to_dict()))
    with pytest.raises(ArtifactError, match="shape"):
        SlotTagger.from_pretrained(tmp_path)


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_char_cnn_matrix_product_equals_the_convolution(kernel):
    from slotfill.models.char_cnn import CharCNN

    torch.manual_seed(kernel)
    cnn = CharCNN(num_chars=20, char_dim=6, channels=7, kernel=kernel).double()
    chars = cnn.embedding(torch.randint(1, 20, (5, 9))).double()  # (N, L, C)
    expected = cnn.conv(chars.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(cnn._convolve(chars), expected, rtol=0, atol=1e-12)
