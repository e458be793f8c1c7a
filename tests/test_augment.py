"""Slot substitution (training/augment.py) and its use by the training pipeline."""

from __future__ import annotations

import json
import random

import pytest

from slotfill.data import Example
from slotfill.errors import ConfigError
from slotfill.schemes import spans, validate
from training.augment import slot_substitution, slot_values, substitute

from .conftest import SMALL_MODEL

EXAMPLES = [
    Example(("fly", "from", "boston", "to", "new", "york"), ("O", "O", "B-from", "O", "B-to", "I-to"), "flight", "a:1"),
    Example(("fly", "from", "san", "francisco", "to", "denver"), ("O", "O", "B-from", "I-from", "O", "B-to"), "flight",
            "a:2"),
    Example(("hello", "there"), ("O", "O"), "greet", "a:3"),
    Example(("fares", "to", "dallas", "fort", "worth"), ("O", "O", "B-to", "I-to", "I-to"), "fare", "a:4"),
]


def test_values_are_collected_per_slot_type_without_repeats():
    values = slot_values(EXAMPLES + EXAMPLES, "IOB2")
    assert values == {"from": [("boston",), ("san", "francisco")],
                      "to": [("new", "york"), ("denver",), ("dallas", "fort", "worth")]}


@pytest.mark.parametrize("scheme", ["IOB2", "BIOES", "IOB1"])
def test_a_copy_keeps_the_context_and_slot_types_and_takes_values_of_the_same_type(scheme):
    from slotfill.schemes import convert

    examples = [Example(e.tokens, tuple(convert(e.tags, "IOB2", scheme)), e.intent, e.source) for e in EXAMPLES]
    values = slot_values(examples, scheme)
    rng = random.Random(3)
    made = 0
    for _ in range(20):
        for original in examples:
            copy = substitute(original, values, rng, scheme)
            if copy is None:
                continue
            made += 1
            assert validate(copy.tags, scheme) == []
            assert copy.intent == original.intent and "slot substitution" in copy.source
            old, new = spans(original.tags, scheme), spans(copy.tags, scheme)
            assert [label for label, _, _ in new] == [label for label, _, _ in old]
            for label, start, end in new:
                assert copy.tokens[start:end] in values[label]
            # The words outside the slots are the original's, in order.
            outside = [t for i, t in enumerate(original.tokens) if original.tags[i] == "O"]
            assert [t for i, t in enumerate(copy.tokens) if copy.tags[i] == "O"] == outside
            assert copy.tokens != original.tokens
    assert made > 20


def test_sentences_without_slots_and_unchanged_draws_add_nothing():
    values = {"from": [("boston",)], "to": [("new", "york")]}
    assert substitute(EXAMPLES[2], values, random.Random(0), "IOB2") is None  # no slots
    assert substitute(EXAMPLES[0], values, random.Random(0), "IOB2") is None  # the only values are its own


def test_copies_follow_from_the_seed_alone():
    first = slot_substitution(EXAMPLES, 3, seed=7, scheme="IOB2")
    assert first == slot_substitution(EXAMPLES, 3, seed=7, scheme="IOB2")
    assert first != slot_substitution(EXAMPLES, 3, seed=8, scheme="IOB2")
    assert len(first) <= 3 * 3  # three sentences have slots
    assert slot_substitution(EXAMPLES, 0, seed=7, scheme="IOB2") == []


def test_augment_setting_is_checked():
    from training.config import TrainConfig

    config = TrainConfig(augment=21)
    with pytest.raises(ConfigError, match="augment"):
        config.validate()


def test_pipeline_trains_on_the_originals_and_the_copies(sample_dir, tmp_path):
    from training.config import TrainConfig
    from training.prepare import TrainingData

    plain = TrainingData(sample_dir, TrainConfig.from_dict(SMALL_MODEL), log=lambda m: None)
    logs: list[str] = []
    augmented = TrainingData(sample_dir, TrainConfig.from_dict({**SMALL_MODEL, "augment": 2}), log=logs.append)
    extra = len(augmented.augmented)
    assert 0 < extra <= 2 * len(plain.train_examples)
    assert len(augmented.encoded) == len(plain.encoded) + extra == len(augmented.train_norms)
    # Same vocabularies and labels: the copies hold only values the data has.
    assert augmented.featurizer.words.itos == plain.featurizer.words.itos
    assert augmented.labels == plain.labels
    assert any(f"slot substitution: {extra} sentences added" in line for line in logs)


def test_distillation_with_copies_runs_the_teacher_on_them(sample_dir, sample_model_dir, tmp_path):
    from training.pipeline import train

    result = train(sample_dir, tmp_path / "student",
                   overrides={**SMALL_MODEL, "epochs": 2, "augment": 1, "distill_from": str(sample_model_dir),
                              "calibrate": False, "export_onnx": False},
                   seed=1, progress=False, log=lambda m: None)
    card = json.loads((tmp_path / "student" / "model_card.json").read_text())
    assert card["augmented_sentences"] > 0 and card["training"]["augment"] == 1
    assert result.report["slot_f1"] > 0.5
