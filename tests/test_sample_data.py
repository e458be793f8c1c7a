"""The embedded restaurant-booking sample: deterministic, shipped as generated, really held out."""

from __future__ import annotations

from collections import Counter

import pytest

from slotfill import schemes
from slotfill.data import load_corpus, read_folder_split
from slotfill.data.sample import (
    DEFAULT_SIZES,
    INTENTS,
    POOLS,
    SLOTS,
    TEMPLATES,
    fill,
    generate,
    generate_splits,
    main,
    sample_data_dir,
)
from slotfill.text.tokenizer import TokenizerConfig, norms


@pytest.fixture(scope="module")
def splits():
    return generate_splits()


def _values(examples, slot=None):
    """Every (slot, value text) in ``examples``."""
    out = set()
    for example in examples:
        for label, start, end in schemes.spans(example.tags):
            if slot is None or label == slot:
                out.add((label, " ".join(example.tokens[start:end])))
    return out


def test_committed_files_equal_generator_output(tmp_path):
    main(["--out", str(tmp_path)])
    shipped = sample_data_dir()
    for split in DEFAULT_SIZES:
        for name in ("seq.in", "seq.out", "label"):
            assert (tmp_path / split / name).read_bytes() == (shipped / split / name).read_bytes(), (
                f"{shipped / split / name} differs from the generator; regenerate with "
                "python -m slotfill.data.sample --out slotfill/resources/sample"
            )


def test_shipped_corpus_loads_with_expected_sizes():
    corpus = load_corpus(sample_data_dir())
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (2000, 300, 300)


def test_deterministic_and_seed_dependent():
    assert generate(50, seed=7) == generate(50, seed=7)
    assert generate(50, seed=7) != generate(50, seed=8)
    assert generate(50, seed=7, split="test") != generate(50, seed=7, split="train")


def test_coverage_of_slots_intents_templates(splits):
    train = splits["train"]
    assert sum(len(t) for t in TEMPLATES.values()) >= 60
    assert set(TEMPLATES) == set(INTENTS) and 5 <= len(INTENTS) <= 6
    assert {label for label, _ in _values(train)} == set(SLOTS)
    assert Counter(e.intent for e in train).keys() == set(INTENTS)
    # multiword values ("san francisco", "half past eight", "four people") are common
    multiword = {slot for slot, value in _values(train) if " " in value}
    assert {"party_size", "date", "time", "location", "restaurant_name"} <= multiword


def test_valid_iob2_and_tokeniser_consistent(splits):
    """Tags are valid and the text tokenises back to the same tokens (so serving sees what training saw)."""
    for examples in splits.values():
        for example in examples:
            assert schemes.validate(example.tags) == []
            assert norms(example.text, TokenizerConfig()) == list(example.tokens)


def test_no_sentence_shared_between_splits(splits):
    texts = {split: {e.text for e in examples} for split, examples in splits.items()}
    assert len(texts["train"]) == 2000
    assert not texts["train"] & texts["test"]
    assert not texts["train"] & texts["valid"]
    assert not texts["valid"] & texts["test"]


def test_test_values_include_ones_never_seen_in_train(splits):
    train_values = _values(splits["train"])
    test_values = _values(splits["test"])
    unseen = test_values - train_values
    unseen_slots = {slot for slot, _ in unseen}
    assert unseen_slots == set(SLOTS), f"slots without unseen test values: {set(SLOTS) - unseen_slots}"
    # and a sizeable share of test sentences contain at least one unseen value
    with_unseen = sum(bool(_values([e]) - train_values) for e in splits["test"])
    assert with_unseen >= 0.4 * len(splits["test"])
    # the test-only pools never leak into train or valid
    for slot, pools in POOLS.items():
        test_only = {value for _, value in pools["test"]}
        assert not test_only & {v for _, v in _values(splits["train"] + splits["valid"], slot)}


def test_product_brief_example_is_in_the_training_distribution(splits):
    values = {"party": "for [four]", "cuisine": "[italian]", "date": "[tomorrow]", "time": "at [7pm]"}
    template = "book a table {party} at a {cuisine} place {date} {time}"
    assert template in TEMPLATES["book_table"]
    example = fill(template, values, "book_table")
    assert example.text == "book a table for four at an italian place tomorrow at 7pm"
    assert " ".join(example.tags) == "O O O O B-party_size O O B-cuisine O B-date O B-time"
    train_values = _values(splits["train"])
    assert {("party_size", "four"), ("cuisine", "italian"), ("date", "tomorrow"), ("time", "7pm")} <= train_values


def test_read_back_sources_point_at_files():
    examples = read_folder_split(sample_data_dir() / "test")
    assert examples[0].source == f"{sample_data_dir() / 'test' / 'seq.in'}:1"
    assert examples[0].intent in INTENTS

