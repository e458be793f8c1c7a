from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2

from slotfill.metrics import (
    _iob2_spans,
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
    with pytest.raises(ValueError, match=r"pred_tags: sentence 1, token 0: invalid IOB2 tag"):
        evaluate([["O"], ["O"]], [["O"], [bad]])


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


def _perturb(rng: random.Random, tags: list[str], types: list[str]) -> list[str]:
    out = list(tags)
    for i in range(len(out)):
        if rng.random() < 0.15:
            out[i] = rng.choice(["O"] + [f"{p}-{t}" for p in "BI" for t in types])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_agrees_with_seqeval_on_random_batches(seed):
    rng = random.Random(seed)
    gold_types = ["fromloc.city_name", "toloc.city_name", "depart_time.time", "airline_name", "round_trip"]
    pred_types = gold_types[:3] + ["cost_relative"]  # some gold types never predicted, one never gold
    gold, pred = [], []
    for _ in range(150):
        length = rng.randint(1, 14)
        g = _random_tags(rng, length, gold_types, orphan_rate=0.0)
        p = _perturb(rng, g, pred_types)
        gold.append(g)
        pred.append(p)

    report = _no_warnings(evaluate, gold, pred)
    assert report["slot_f1"] == pytest.approx(f1_score(gold, pred, zero_division=0))
    assert report["slot_precision"] == pytest.approx(precision_score(gold, pred, zero_division=0))
    assert report["slot_recall"] == pytest.approx(recall_score(gold, pred, zero_division=0))
    assert report["slot_f1_macro"] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
    assert report["slot_f1_strict"] == pytest.approx(
        f1_score(gold, pred, mode="strict", scheme=IOB2, zero_division=0)
    )
    per_type = f1_score(gold, pred, average=None, zero_division=0)
    assert [report["per_slot"][name]["f1"] for name in sorted(report["per_slot"])] == pytest.approx(list(per_type))
    assert report["exact_match"] == pytest.approx(sum(g == p for g, p in zip(gold, pred)) / len(gold))
    # the perturbation produces orphan I- tags, so strict and default really differ here
    assert report["slot_f1_strict"] != pytest.approx(report["slot_f1"])


def test_iob2_spans_match_seqeval_entities():
    rng = random.Random(7)
    tags = ["O", "B-a", "I-a", "B-b", "I-b", "B-c.d", "I-c.d"]
    for _ in range(2000):
        seq = [rng.choice(tags) for _ in range(rng.randint(0, 9))]
        expected = [(label, start, end + 1) for label, start, end in get_entities(seq)]
        assert _iob2_spans(seq) == expected, seq


def test_iob2_spans_conlleval_rules():
    assert _iob2_spans(["O", "I-a", "I-a", "B-a", "I-b", "O", "B-c"]) == [
        ("a", 1, 3),
        ("a", 3, 4),
        ("b", 4, 5),
        ("c", 6, 7),
    ]


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


def test_span_confidence_pairs_sequence_form():
    gold = [["B-a", "I-a", "O", "B-b"], ["O", "B-c", "I-c", "O"]]
    pred = [["B-a", "I-a", "O", "B-a"], ["O", "I-c", "I-c", "I-d"]]
    # sentence 1: I-c after O starts c[1,3); I-d after I-c starts d[3,4)
    conf, correct = span_confidence_pairs(gold, pred, [[0.9, 0.6], [0.8, 0.3]])
    assert conf.tolist() == [0.9, 0.6, 0.8, 0.3]
    assert correct.tolist() == [True, False, True, False]
    assert correct.dtype == bool and conf.dtype == float


def test_span_confidence_pairs_mapping_form_skips_spans_without_confidence():
    gold = [["B-a", "O", "B-b"]]
    pred = [["B-a", "O", "B-c"]]
    conf, correct = span_confidence_pairs(gold, pred, [{("c", 2, 3): 0.4}])
    assert conf.tolist() == [0.4]
    assert correct.tolist() == [False]
    with pytest.raises(ValueError, match="not a predicted span"):
        span_confidence_pairs(gold, pred, [{("b", 2, 3): 0.4}])


def test_span_confidence_pairs_validation():
    gold = [["B-a", "O"], ["O", "O"]]
    pred = [["B-a", "O"], ["O", "O"]]
    with pytest.raises(ValueError, match="sentence 0: 2 confidences for 1 predicted spans"):
        span_confidence_pairs(gold, pred, [[0.5, 0.5], []])
    with pytest.raises(ValueError, match="one entry per sentence"):
        span_confidence_pairs(gold, pred, [[0.5]])
    with pytest.raises(ValueError, match="sentence 1: gold has 2 tags"):
        span_confidence_pairs(gold, [["B-a", "O"], ["O"]], [[0.5], []])


def test_span_confidence_pairs_feed_ece():
    gold = [["B-a", "O"], ["B-a", "O"]]
    pred = [["B-a", "O"], ["O", "B-a"]]
    conf, correct = span_confidence_pairs(gold, pred, [[1.0], [1.0]])
    assert expected_calibration_error(conf, correct) == pytest.approx(0.5)
