"""Tag schemes: parsing, validation, conversion, repair, spans."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slotfill import schemes
from slotfill.errors import ConfigError, DataError
from slotfill.schemes import SCHEMES, convert, parse_tag, repair, spans, tags_from_spans, validate


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("O", ("O", None)),
        ("B-city", ("B", "city")),
        ("I-fromloc.city_name", ("I", "fromloc.city_name")),
        ("B-round_trip", ("B", "round_trip")),
        ("B-depart-time.period", ("B", "depart-time.period")),  # only the first hyphen splits
        ("city", ("city", None)),
    ],
)
def test_parse_tag(tag, expected):
    assert parse_tag(tag) == expected


def test_default_scheme_is_iob2():
    assert SCHEMES[0] == "IOB2" and schemes.DEFAULT_SCHEME == "IOB2"
    assert spans(["B-x", "I-x"]) == [("x", 0, 2)]


@pytest.mark.parametrize(
    ("tags", "bad_indices"),
    [
        (["B-city", "I-city", "O"], []),
        (["I-city"], [0]),  # at start
        (["O", "I-city"], [1]),  # after O
        (["B-state", "I-city"], [1]),  # after another type
        (["B-a", "I-a", "I-b", "I-b"], [2]),  # only where the bad run starts
        (["B-x", "O", "I-x", "I-y"], [2, 3]),
        (["B-fromloc.city_name", "I-fromloc.city_name"], []),
    ],
)
def test_validate_iob2(tags, bad_indices):
    assert [i for i, _ in validate(tags, "IOB2")] == bad_indices


def test_validate_reason_names_the_problem():
    [(index, reason)] = validate(["O", "I-city"], "IOB2")
    assert index == 1 and "I-city" in reason and "'O'" in reason
    [(_, reason)] = validate(["I-city"], "IOB2")
    assert "start" in reason


@pytest.mark.parametrize(
    ("tags", "scheme", "bad_indices"),
    [
        (["S-x", "B-y", "I-y", "E-y", "O"], "BIOES", []),
        (["B-x", "O"], "BIOES", [0]),  # B not closed
        (["B-x"], "BIOES", [0]),  # B at the end
        (["O", "E-x"], "BIOES", [1]),  # E without B
        (["B-x", "E-y"], "BIOES", [0, 1]),  # type change
        (["B-x", "I-x", "S-x"], "BIOES", [1]),  # I must be followed by I/E
        (["B-x", "B-x"], "BIOES", [0, 1]),  # neither B is closed
        (["I-x", "I-x", "B-x", "I-y"], "IOB1", []),  # B separates two x spans; I-y starts y
        (["O", "B-x"], "IOB1", [1]),  # B only right after the same type
        (["I-y", "B-x"], "IOB1", [1]),
        (["S-x"], "IOB2", [0]),  # unknown prefix in IOB2
        (["E-x"], "IOB1", [0]),
        (["U-x"], "BIOES", [0]),
        (["B-"], "IOB2", [0]),  # empty type
        (["O-x"], "IOB2", [0]),
        (["city"], "IOB2", [0]),
    ],
)
def test_validate_other_schemes_and_malformed(tags, scheme, bad_indices):
    assert [i for i, _ in validate(tags, scheme)] == bad_indices


def test_unknown_prefix_reason():
    [(_, reason)] = validate(["O", "X-city"], "IOB2")
    assert "unknown prefix 'X'" in reason


def test_unknown_scheme_is_config_error():
    with pytest.raises(ConfigError, match="BILOU"):
        validate(["O"], "BILOU")


def test_spans_all_schemes():
    assert spans(["B-a", "I-a", "O", "B-b", "B-b", "I-b"], "IOB2") == [("a", 0, 2), ("b", 3, 4), ("b", 4, 6)]
    assert spans(["I-a", "I-a", "O", "I-b", "B-b", "I-b"], "IOB1") == [("a", 0, 2), ("b", 3, 4), ("b", 4, 6)]
    assert spans(["B-a", "E-a", "O", "S-b", "B-b", "E-b"], "BIOES") == [("a", 0, 2), ("b", 3, 4), ("b", 4, 6)]
    assert spans(["O", "O"]) == []
    assert spans([]) == []


def test_spans_refuses_invalid_sequence():
    with pytest.raises(DataError, match="token 1"):
        spans(["O", "I-x"], "IOB2")


def test_convert_between_schemes():
    iob2 = ["B-a", "I-a", "O", "B-b", "B-b", "I-b", "I-b"]
    iob1 = ["I-a", "I-a", "O", "I-b", "B-b", "I-b", "I-b"]
    bioes = ["B-a", "E-a", "O", "S-b", "B-b", "I-b", "E-b"]
    assert convert(iob2, "IOB2", "BIOES") == bioes
    assert convert(iob2, "IOB2", "IOB1") == iob1
    assert convert(bioes, "BIOES", "IOB2") == iob2
    assert convert(iob1, "IOB1", "BIOES") == bioes


def test_tags_from_spans_rejects_bad_spans():
    with pytest.raises(DataError, match="overlaps"):
        tags_from_spans(5, [("a", 0, 3), ("b", 2, 4)], "IOB2")
    with pytest.raises(DataError, match="outside"):
        tags_from_spans(3, [("a", 2, 4)], "IOB2")
    with pytest.raises(DataError, match="empty"):
        tags_from_spans(3, [("a", 1, 1)], "IOB2")
    # order of the input spans does not matter
    assert tags_from_spans(3, [("b", 2, 3), ("a", 0, 1)]) == ["B-a", "O", "B-b"]


@pytest.mark.parametrize(
    ("tags", "scheme", "expected"),
    [
        (["O", "I-x", "I-x", "O"], "IOB2", ["O", "B-x", "I-x", "O"]),  # conlleval: stray I starts a span
        (["B-y", "I-x"], "IOB2", ["B-y", "B-x"]),
        (["I-x"], "IOB2", ["B-x"]),
        (["O", "B-x", "I-x"], "IOB1", ["O", "I-x", "I-x"]),
        (["B-x", "O", "I-y", "E-y"], "BIOES", ["S-x", "O", "B-y", "E-y"]),
        (["B-x", "I-x"], "BIOES", ["B-x", "E-x"]),
        (["B-x", "I-x", "O"], "IOB2", ["B-x", "I-x", "O"]),  # valid input is unchanged
    ],
)
def test_repair(tags, scheme, expected):
    assert repair(tags, scheme) == expected
    assert validate(expected, scheme) == []


def test_repair_refuses_malformed_tags():
    with pytest.raises(DataError, match="unknown prefix"):
        repair(["O", "X-city"], "IOB2")


# ------------------------------------------------------------------ properties

_labels = st.sampled_from(["a", "b", "fromloc.city_name", "round-trip"])


@st.composite
def _span_lists(draw):
    n = draw(st.integers(min_value=0, max_value=12))
    cuts = sorted(draw(st.sets(st.integers(min_value=0, max_value=n), max_size=8)))
    out = []
    for start, end in zip(cuts, cuts[1:]):
        if draw(st.booleans()):
            out.append((draw(_labels), start, end))
    return n, out


@given(_span_lists(), st.sampled_from(SCHEMES), st.sampled_from(SCHEMES))
def test_spans_roundtrip_and_convert(case, source, target):
    n, span_list = case
    tags = tags_from_spans(n, span_list, source)
    assert len(tags) == n
    assert validate(tags, source) == []
    assert spans(tags, source) == span_list
    converted = convert(tags, source, target)
    assert spans(converted, target) == span_list


@given(st.lists(st.sampled_from(["O", "B-a", "I-a", "B-b", "I-b", "E-a", "S-b"]), max_size=10))
def test_repair_always_yields_valid_iob2(tags):
    iob2_tags = [t for t in tags if t[0] in "BIO"]
    repaired = repair(iob2_tags, "IOB2")
    assert validate(repaired, "IOB2") == []
    # repair only changes prefixes, never types or O positions
    assert [parse_tag(t)[1] for t in repaired] == [parse_tag(t)[1] for t in iob2_tags]


@given(st.lists(st.sampled_from(["O", "B-a", "I-a", "E-a", "S-a", "B-b", "E-b"]), max_size=10))
def test_repair_always_yields_valid_bioes(tags):
    assert validate(repair(tags, "BIOES"), "BIOES") == []


# ------------------------------------------------------------------ the grammar, one rule

def _brute_force_valid(tags: list[str], scheme: str) -> bool:
    """Validity by the definition of each scheme, written from spans: a valid sequence is exactly
    what :func:`tags_from_spans` writes for its own spans (no grammar involved)."""
    if any(schemes.tag_problem(t, scheme) for t in tags):
        return False
    return schemes.tags_from_spans(len(tags), schemes.read_spans(tags, scheme), scheme) == list(tags)


_TAGS = {scheme: ["O"] + [f"{p}-{t}" for p in {"IOB2": "BI", "IOB1": "BI", "BIOES": "BIES"}[scheme] for t in "xy"]
         for scheme in SCHEMES}


@pytest.mark.parametrize("scheme", SCHEMES)
@given(data=st.data())
def test_grammar_verdict_equals_validate_and_the_definition(scheme, data):
    """For random label sequences in each scheme: the transition grammar accepts a sequence (every step,
    START and END included, is an allowed transition) exactly when ``validate`` finds no problem, and
    exactly when the sequence is what its own spans are written as."""
    tags = data.draw(st.lists(st.sampled_from(_TAGS[scheme]), min_size=1, max_size=8))
    labels = _TAGS[scheme]
    allowed = set(schemes.allowed_transitions(scheme, labels))
    ids = [len(labels)] + [labels.index(t) for t in tags] + [len(labels) + 1]  # START ... END
    by_grammar = all((a, b) in allowed for a, b in zip(ids, ids[1:]))
    assert by_grammar == (validate(tags, scheme) == []) == _brute_force_valid(tags, scheme)
    reader = schemes.SpanReader(scheme, labels)
    assert reader.valid(ids[1:-1]) == by_grammar


@pytest.mark.parametrize("scheme", SCHEMES)
@given(data=st.data())
def test_conversion_round_trips_on_valid_sequences(scheme, data):
    tags = data.draw(st.lists(st.sampled_from(_TAGS[scheme]), max_size=8).filter(lambda t: not validate(t, scheme)))
    for target in SCHEMES:
        there = convert(tags, scheme, target)
        assert validate(there, target) == []
        assert convert(there, target, scheme) == list(tags)
        assert spans(there, target) == spans(tags, scheme)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_reader_is_seqevals_default_mode_on_every_short_sequence(scheme):
    """Every sequence of up to five tags over two types, valid or not: the same spans as seqeval's
    conlleval-compatible reading, which the default scores rest on."""
    import itertools

    from seqeval.metrics.sequence_labeling import get_entities

    for n in range(1, 6):
        for tags in itertools.product(_TAGS[scheme], repeat=n):
            expected = sorted((label, start, end + 1) for label, start, end in get_entities(list(tags)))
            assert sorted(schemes.read_spans(list(tags), scheme)) == expected, tags


def test_allowed_transitions_refuses_labels_outside_the_scheme():
    with pytest.raises(ConfigError, match="'S-x' does not fit the IOB2 scheme"):
        schemes.allowed_transitions("IOB2", ["O", "S-x"])
    with pytest.raises(ConfigError, match="unknown tag scheme"):
        schemes.allowed_transitions("BIO", ["O"])


@pytest.mark.parametrize(
    ("scheme", "ids", "labels", "spans_expected"),
    [
        ("IOB2", [2, 2, 0, 1], ["B-x", "I-x", "O", "B-x"], [("x", 0, 2), ("x", 3, 4)]),
        ("BIOES", [1, 0, 2], ["S-x", "O", "S-x"], [("x", 0, 1), ("x", 2, 3)]),
    ],
)
def test_the_reader_repairs_what_the_grammar_refuses(scheme, ids, labels, spans_expected):
    names = {"IOB2": ["O", "B-x", "I-x"], "BIOES": ["O", "B-x", "S-x"]}[scheme]
    reader = schemes.SpanReader(scheme, names)
    got_labels, got_spans = reader.read(ids)
    assert got_spans == spans_expected
    assert got_labels == labels
    assert validate(got_labels, scheme) == []
    if scheme == "IOB2":  # a valid path keeps its labels as they are
        assert reader.read([1, 2, 0, 1]) == (labels, spans_expected)
