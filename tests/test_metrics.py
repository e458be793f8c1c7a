from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB1, IOB2, IOBES

from slotfill.schemes import convert
from slotfill.scoring.metrics import (
    evaluate,
    expected_calibration_error,
    intent_matches,
    reliability_bins,
    span_confidence_pairs,
)


def _no_warnings(fn, *args, **kwargs):
    """Run ``fn`` and fail if it emits any warning, independent of the pytest config."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    assert [str(w.message) for w in caught] == []
    return result


# --------------------------------------------------------------------------- intents


@pytest.mark.parametrize(
    ("predicted", "gold", "expected"),
    [
        ("atis_flight", "atis_flight", True),
        ("atis_airfare", "atis_flight", False),
        ("atis_flight", "atis_flight#atis_airfare", True),
        ("atis_airfare", "atis_flight#atis_airfare", True),
        ("atis_flight#atis_airfare", "atis_flight#atis_airfare", True),
        ("atis_airfare#atis_flight", "atis_flight#atis_airfare", False),
        ("atis_flight#atis_airfare", "atis_flight", False),
        ("atis_ground_service", "atis_flight#atis_airfare", False),
        ("atis_fli", "atis_flight#atis_airfare", False),
        (None, "atis_flight", False),
        ("", "atis_flight#", False),
    ],
)
def test_intent_matches_multi_intent_convention(predicted, gold, expected):
    assert intent_matches(predicted, gold) is expected


def test_intent_accuracy_uses_multi_intent_convention():
    gold = [["O"], ["O"], ["O"], ["O"]]
    report = evaluate(
        gold,
        gold,
        ["atis_flight#atis_airfare", "atis_flight#atis_airfare", "atis_flight", "atis_city"],
        ["atis_airfare", "atis_flight", "atis_flight", "atis_flight"],
    )
    assert report["intent_accuracy"] == pytest.approx(3 / 4)
    assert report["exact_match"] == pytest.approx(3 / 4)


# --------------------------------------------------------------------------- slot scores


def test_hand_computed_precision_recall_f1():
    # gold spans: a[0,2) b[3,4); predicted: a[0,2) (right) and b[3,5) (wrong boundary)
    gold = [["B-a", "I-a", "O", "B-b", "O"]]
    pred = [["B-a", "I-a", "O", "B-b", "I-b"]]
    report = _no_warnings(evaluate, gold, pred)
    assert report["slot_precision"] == pytest.approx(0.5)
    assert report["slot_recall"] == pytest.approx(0.5)
    assert report["slot_f1"] == pytest.approx(0.5)
    assert report["per_slot"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert report["per_slot"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_precision_differs_from_recall():
    # 2 gold spans, 1 predicted and it is right: P = 1, R = 1/2, F1 = 2/3
    gold = [["B-a", "O", "B-b"], ["O", "O", "O"]]
    pred = [["B-a", "O", "O"], ["O", "O", "O"]]
    report = _no_warnings(evaluate, gold, pred)
    assert report["slot_precision"] == pytest.approx(1.0)
    assert report["slot_recall"] == pytest.approx(0.5)
    assert report["slot_f1"] == pytest.approx(2 / 3)
    assert report["exact_match"] == pytest.approx(0.5)
    assert report["n_sentences"] == 2
    assert report["n_tokens"] == 6


def test_strict_mode_rejects_orphan_inside_tag():
    gold = [["O", "B-a", "I-a", "O"]]
    pred = [["O", "I-a", "I-a", "O"]]  # conlleval reads I-a after O as the start of a span
    report = _no_warnings(evaluate, gold, pred)
    assert report["slot_f1"] == pytest.approx(1.0)
    assert report["slot_f1_strict"] == pytest.approx(0.0)
    # ... but the tags differ, so the sentence is not an exact match
    assert report["exact_match"] == 0.0


def test_strict_equals_default_on_well_formed_predictions():
    gold = [["B-a", "I-a", "O", "B-b"]]
    pred = [["B-a", "O", "O", "B-b"]]
    report = evaluate(gold, pred)
    assert report["slot_f1_strict"] == pytest.approx(report["slot_f1"]) == pytest.approx(0.5)


def test_macro_versus_micro():
    # type a: 3 gold spans, all found; type b: 1 gold span, missed
    gold = [["B-a", "O", "B-a", "O", "B-a", "O", "B-b"]]
    pred = [["B-a", "O", "B-a", "O", "B-a", "O", "O"]]
    report = evaluate(gold, pred)
    assert report["slot_precision"] == pytest.approx(1.0)
    assert report["slot_recall"] == pytest.approx(0.75)
    assert report["slot_f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert report["slot_f1_macro"] == pytest.approx(0.5)
    assert report["per_slot"]["a"]["support"] == 3
    assert report["per_slot"]["b"]["support"] == 1


def test_per_slot_support_counts_gold_spans_including_predicted_only_types():
    gold = [
        ["B-fromloc.city_name", "I-fromloc.city_name", "O", "B-toloc.city_name"],
        ["B-fromloc.city_name", "O", "B-depart_date.day_name", "O"],
        ["O", "B-toloc.city_name", "O", "O"],
    ]
    pred = [
        ["B-fromloc.city_name", "I-fromloc.city_name", "O", "B-toloc.city_name"],
        ["B-fromloc.city_name", "O", "O", "B-airline_name"],
        ["O", "B-toloc.city_name", "O", "O"],
    ]
    report = evaluate(gold, pred)
    supports = {name: row["support"] for name, row in report["per_slot"].items()}
    assert supports == {
        "fromloc.city_name": 2,
        "toloc.city_name": 2,
        "depart_date.day_name": 1,
        "airline_name": 0,
    }
    assert all(type(row["support"]) is int for row in report["per_slot"].values())
    assert report["per_slot"]["airline_name"]["precision"] == 0.0


def test_gold_types_never_predicted_do_not_warn():
    # ATIS test contains slot types that never occur in training, so they are never predicted
    gold = [["B-flight_stop", "O", "B-return_date.day_name"], ["B-meal_code", "I-meal_code", "O"]]
    pred = [["O", "O", "O"], ["O", "O", "O"]]
    report = _no_warnings(evaluate, gold, pred)
    assert report["slot_precision"] == 0.0
    assert report["slot_recall"] == 0.0
    assert report["slot_f1"] == 0.0
    assert report["slot_f1_strict"] == 0.0
    assert report["slot_f1_macro"] == 0.0
    assert set(report["per_slot"]) == {"flight_stop", "return_date.day_name", "meal_code"}


def test_only_orphan_predictions_without_gold_spans_do_not_warn():
    report = _no_warnings(evaluate, [["O", "O"]], [["O", "I-a"]])
    assert report["slot_f1"] == 0.0
    assert report["slot_f1_strict"] == 0.0
    assert report["per_slot"] == {"a": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}}


def test_no_spans_anywhere():
    report = _no_warnings(evaluate, [["O", "O"], []], [["O", "O"], []])
    assert report["per_slot"] == {}
    assert report["slot_f1"] == report["slot_f1_macro"] == report["slot_f1_strict"] == 0.0
    assert report["exact_match"] == 1.0
    assert report["n_tokens"] == 2


# --------------------------------------------------------------------------- exact match / intents


def test_exact_match_without_intents():
    gold = [["B-a", "O"], ["O", "B-b"], ["O", "O"]]
    pred = [["B-a", "O"], ["O", "O"], ["O", "O"]]
    report = evaluate(gold, pred)
    assert report["intent_accuracy"] is None
    assert report["exact_match"] == pytest.approx(2 / 3)


def test_exact_match_with_intents_requires_both():
    gold = [["B-a", "O"], ["O", "B-b"], ["O", "O"]]
    pred = [["B-a", "O"], ["O", "O"], ["O", "O"]]
    report = evaluate(gold, pred, ["x", "y", "z"], ["x", "y", "wrong"])
    # sentence 0 fully right; 1 has wrong tags; 2 has the wrong intent
    assert report["intent_accuracy"] == pytest.approx(2 / 3)
    assert report["exact_match"] == pytest.approx(1 / 3)


def test_sentences_without_gold_intent_are_judged_on_tags():
    gold = [["O"], ["O"], ["O"]]
    report = evaluate(gold, gold, ["x", None, "z"], ["x", "anything", None])
    assert report["intent_accuracy"] == pytest.approx(1 / 2)
    assert report["exact_match"] == pytest.approx(2 / 3)


def test_all_gold_intents_none_means_no_intent_accuracy():
    report = evaluate([["O"]], [["O"]], [None], None)
    assert report["intent_accuracy"] is None
    assert report["exact_match"] == 1.0


def test_predicted_intents_without_gold_are_ignored():
    report = evaluate([["O"]], [["O"]], None, ["x"])
    assert report["intent_accuracy"] is None


# --------------------------------------------------------------------------- report shape


def test_report_is_json_serialisable_with_python_types():
    gold = [["B-a", "I-a", "O"], ["B-b", "O", "O"]]
    pred = [["B-a", "O", "O"], ["B-b", "O", "B-a"]]
    report = evaluate(gold, pred, ["i", "j"], ["i", "k"])
    assert set(report) == {
        "slot_precision",
        "slot_recall",
        "slot_f1",
        "slot_f1_strict",
        "slot_f1_macro",
        "intent_accuracy",
        "exact_match",
        "per_slot",
        "n_sentences",
        "n_tokens",
        "scheme",
    }
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    for key in ("slot_precision", "slot_recall", "slot_f1", "slot_f1_strict", "slot_f1_macro", "intent_accuracy", "exact_match"):
        assert type(report[key]) is float
        assert 0.0 <= report[key] <= 1.0
    for row in report["per_slot"].values():
        assert {type(row[k]) for k in ("precision", "recall", "f1")} == {float}
    assert type(report["n_sentences"]) is int and type(report["n_tokens"]) is int


def test_accepts_tuples_and_other_sequences():
    report = evaluate((("B-a", "O"),), [np.array(["B-a", "O"]).tolist()])
    assert report["slot_f1"] == 1.0


# --------------------------------------------------------------------------- validation


def test_mismatched_sentence_counts():
    with pytest.raises(ValueError, match="2 sentences but predictions have 1"):
        evaluate([["O"], ["O"]], [["O"]])


def test_mismatched_sentence_length_names_the_index():
    with pytest.raises(ValueError, match=r"sentence 1: gold has 2 tags but prediction has 3"):
        evaluate([["O"], ["O", "O"]], [["O"], ["O", "O", "O"]])


@pytest.mark.parametrize("bad", ["X-a", "B-", "B", "E-a", "b-a", "", None, "S-a"])
def test_invalid_tag_is_rejected_with_position(bad):
    with pytest.raises(ValueError, match=r"pred_tags: sentence 1, token 0: (unknown prefix|malformed tag|None)"):
        evaluate([["O"], ["O"]], [["O"], [bad]])


@pytest.mark.parametrize(("gold", "scheme"), [(["I-a"], "IOB2"), (["B-a"], "BIOES"), (["B-a"], "IOB1")])
def test_an_invalid_gold_sequence_is_rejected_with_position(gold, scheme):
    with pytest.raises(ValueError, match=rf"gold_tags: sentence 0, token 0: invalid {scheme} sequence"):
        evaluate([gold], [["O"]], scheme=scheme)


def test_bioes_and_iob1_tags_are_scored_in_their_scheme():
    """What training hands the scorer: tags in the data's scheme (BIOES S- and E-, IOB1 B- between
    spans), scored like the same spans written in IOB2."""
    gold = [["S-a", "O", "B-b", "E-b"], ["B-c", "I-c", "E-c", "S-c"]]
    pred = [["S-a", "O", "S-b", "O"], ["B-c", "I-c", "E-c", "S-c"]]
    report = evaluate(gold, pred, scheme="BIOES")
    iob2 = evaluate([convert(g, "BIOES", "IOB2") for g in gold], [convert(p, "BIOES", "IOB2") for p in pred])
    assert report["slot_f1"] == pytest.approx(iob2["slot_f1"]) == pytest.approx(0.75)  # 3 of 4 spans on each side
    assert report["scheme"] == "BIOES" and iob2["scheme"] == "IOB2"
    with pytest.raises(ValueError, match="unknown prefix 'S'"):
        evaluate(gold, pred)  # the same tags read as IOB2


def test_string_instead_of_tag_list_is_rejected():
    with pytest.raises(TypeError, match="sentence 0"):
        evaluate(["B-a"], [["B-a"]])


def test_empty_corpus_is_rejected():
    with pytest.raises(ValueError, match="no sentences"):
        evaluate([], [])


def test_intent_count_mismatch_and_missing_predictions():
    with pytest.raises(ValueError, match="gold_intents has 1 entries but there are 2 sentences"):
        evaluate([["O"], ["O"]], [["O"], ["O"]], ["x"], ["x", "y"])
    with pytest.raises(ValueError, match="without pred_intents"):
        evaluate([["O"]], [["O"]], ["x"], None)


# --------------------------------------------------------------------------- against seqeval


def _random_tags(rng: random.Random, length: int, types: list[str], orphan_rate: float) -> list[str]:
    tags = []
    i = 0
    while i < length:
        if rng.random() < 0.5:
            tags.append("O")
            i += 1
            continue
        kind = rng.choice(types)
        span = min(rng.randint(1, 3), length - i)
        first = "I" if rng.random() < orphan_rate else "B"
        tags.append(f"{first}-{kind}")
        tags.extend(f"I-{kind}" for _ in range(span - 1))
        i += span
    return tags


SEQEVAL_SCHEMES = {"IOB2": IOB2, "IOB1": IOB1, "BIOES": IOBES}
PREFIXES = {"IOB2": "BI", "IOB1": "BI", "BIOES": "BIES"}


def _perturb_in(rng: random.Random, tags: list[str], types: list[str], scheme: str) -> list[str]:
    out = list(tags)
    for i in range(len(out)):
        if rng.random() < 0.15:
            out[i] = rng.choice(["O"] + [f"{p}-{t}" for p in PREFIXES[scheme] for t in types])
    return out


@pytest.mark.parametrize("scheme", ["IOB2", "IOB1", "BIOES"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_agrees_with_seqeval_in_each_scheme_on_random_batches(seed, scheme):
    """Default and strict scores, per-type F1 and sentence accuracy equal seqeval's on the same tags in
    their own scheme; predictions include sequences that are invalid in it."""
    rng = random.Random(seed)
    gold_types = ["fromloc.city_name", "toloc.city_name", "depart_time.time", "airline_name", "round_trip"]
    pred_types = gold_types[:3] + ["cost_relative"]  # some gold types never predicted, one never gold
    gold, pred = [], []
    for _ in range(150):
        length = rng.randint(1, 14)
        g = convert(_random_tags(rng, length, gold_types, orphan_rate=0.0), "IOB2", scheme)
        gold.append(g)
        pred.append(_perturb_in(rng, g, pred_types, scheme))

    report = _no_warnings(evaluate, gold, pred, scheme=scheme)
    assert report["slot_f1"] == pytest.approx(f1_score(gold, pred, zero_division=0))
    assert report["slot_precision"] == pytest.approx(precision_score(gold, pred, zero_division=0))
    assert report["slot_recall"] == pytest.approx(recall_score(gold, pred, zero_division=0))
    assert report["slot_f1_macro"] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
    assert report["slot_f1_strict"] == pytest.approx(
        f1_score(gold, pred, mode="strict", scheme=SEQEVAL_SCHEMES[scheme], zero_division=0))
    per_type = f1_score(gold, pred, average=None, zero_division=0)
    assert [report["per_slot"][name]["f1"] for name in sorted(report["per_slot"])] == pytest.approx(list(per_type))
    assert report["exact_match"] == pytest.approx(sum(g == p for g, p in zip(gold, pred)) / len(gold))
    # the perturbation produces invalid sequences, so strict and default really differ here
    assert report["slot_f1_strict"] != pytest.approx(report["slot_f1"])


@pytest.mark.parametrize("scheme", ["IOB2", "IOB1", "BIOES"])
def test_valid_predictions_score_the_same_in_every_scheme(scheme):
    """Conversion is lossless: the same spans give the same scores whichever scheme writes them, and
    strict equals default on valid sequences."""
    rng = random.Random(11)
    types = ["a", "b.c", "d-e"]
    gold = [_random_tags(rng, rng.randint(1, 10), types, 0.0) for _ in range(200)]
    pred = [_random_tags(rng, len(g), types, 0.0) for g in gold]
    here = evaluate([convert(g, "IOB2", scheme) for g in gold], [convert(p, "IOB2", scheme) for p in pred],
                    scheme=scheme)
    iob2 = evaluate(gold, pred)
    for key in ("slot_precision", "slot_recall", "slot_f1", "slot_f1_strict", "slot_f1_macro", "exact_match"):
        assert here[key] == pytest.approx(iob2[key]), key
    assert here["slot_f1_strict"] == pytest.approx(here["slot_f1"])
    assert here["per_slot"] == iob2["per_slot"]


# --------------------------------------------------------------------------- calibration


def test_ece_zero_when_calibrated():
    conf = [0.9] * 10
    correct = [True] * 9 + [False]
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0, abs=1e-12)


def test_ece_overconfident():
    conf = [1.0] * 10
    correct = [1, 0] * 5
    assert expected_calibration_error(conf, correct) == pytest.approx(0.5)


def test_ece_hand_computed_two_bins():
    # 4 predictions at 0.2 (1 right: acc 0.25) and 6 at 0.8 (3 right: acc 0.5), 10 bins
    conf = [0.2] * 4 + [0.8] * 6
    correct = [1, 0, 0, 0] + [1, 1, 1, 0, 0, 0]
    expected = 4 / 10 * abs(0.25 - 0.2) + 6 / 10 * abs(0.5 - 0.8)
    assert expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(expected)
    # one bin: |overall accuracy - overall mean confidence|
    assert expected_calibration_error(conf, correct, n_bins=1) == pytest.approx(abs(0.4 - 0.56))


def test_reliability_bins_counts_and_edges():
    conf = [0.0, 0.05, 0.1, 0.15, 0.55, 0.95, 1.0, 1.0]
    correct = [False, True, True, False, True, True, True, False]
    bins = reliability_bins(conf, correct, n_bins=10)
    assert len(bins) == 10
    assert bins[0]["lo"] == 0.0 and bins[-1]["hi"] == 1.0
    assert all(b["hi"] == pytest.approx(b["lo"] + 0.1) for b in bins)
    assert [b["count"] for b in bins] == [3, 1, 0, 0, 0, 1, 0, 0, 0, 3]
    assert sum(b["count"] for b in bins) == len(conf)
    # (0, 0.1] also holds 0.0; 0.1 is the upper edge of the first bin
    assert bins[0]["mean_confidence"] == pytest.approx((0.0 + 0.05 + 0.1) / 3)
    assert bins[0]["accuracy"] == pytest.approx(2 / 3)
    assert bins[2]["mean_confidence"] is None and bins[2]["accuracy"] is None
    assert bins[9]["accuracy"] == pytest.approx(2 / 3)
    assert json.loads(json.dumps(bins)) == bins


def test_ece_equals_ece_from_bins():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 500)
    correct = rng.uniform(0, 1, 500) < conf ** 2
    bins = reliability_bins(conf, correct)
    from_bins = sum(b["count"] / 500 * abs(b["accuracy"] - b["mean_confidence"]) for b in bins if b["count"])
    assert expected_calibration_error(conf, correct) == pytest.approx(from_bins)
    assert len(bins) == 15


def test_calibration_input_validation():
    with pytest.raises(ValueError, match="2 confidences but 1"):
        expected_calibration_error([0.5, 0.5], [True])
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        expected_calibration_error([1.5], [True])
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        reliability_bins([float("nan")], [True])
    with pytest.raises(ValueError, match="0/1"):
        expected_calibration_error([0.5], [2])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0.5], [True], n_bins=0)
    with pytest.raises(ValueError, match="at least one"):
        expected_calibration_error([], [])
    assert [b["count"] for b in reliability_bins([], [], n_bins=3)] == [0, 0, 0]


# --------------------------------------------------------------------------- span confidences


def test_span_confidence_pairs_judge_each_span_exactly():
    gold = [["B-a", "I-a", "O", "B-b"], ["O", "B-c", "I-c", "O"]]
    predicted = [[("a", 0, 2, 0.9), ("a", 3, 4, 0.6)], [("c", 1, 3, 0.8), ("d", 3, 4, 0.3)]]
    conf, correct = span_confidence_pairs(gold, predicted)
    assert conf.tolist() == [0.9, 0.6, 0.8, 0.3]
    assert correct.tolist() == [True, False, True, False]
    assert correct.dtype == bool and conf.dtype == float


def test_span_confidence_pairs_read_the_gold_in_its_scheme():
    gold = [["S-a", "B-b", "E-b"]]
    conf, correct = span_confidence_pairs(gold, [[("a", 0, 1, 0.7), ("b", 1, 2, 0.2)]], scheme="BIOES")
    assert correct.tolist() == [True, False]
    with pytest.raises(ValueError, match="unknown prefix 'S'"):
        span_confidence_pairs(gold, [[]])


def test_span_confidence_pairs_validation():
    gold = [["B-a", "O"], ["O", "O"]]
    with pytest.raises(ValueError, match="one entry per sentence"):
        span_confidence_pairs(gold, [[("a", 0, 1, 0.5)]])
    with pytest.raises(ValueError, match="gold_tags: sentence 0, token 0"):
        span_confidence_pairs([["I-a"]], [[]])


def test_span_confidence_pairs_feed_ece():
    gold = [["B-a", "O"], ["B-a", "O"]]
    predicted = [[("a", 0, 1, 1.0)], [("a", 1, 2, 1.0)]]
    conf, correct = span_confidence_pairs(gold, predicted)
    assert expected_calibration_error(conf, correct) == pytest.approx(0.5)
