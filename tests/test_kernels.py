"""The compiled decoding kernels (slotfill/decoding/_kernels.c) give NumPy's paths exactly and its posteriors to
float32 rounding; the predictor gives the same answers with either decoder."""

from __future__ import annotations

import itertools
import shutil
import sysconfig

import numpy as np
import pytest
import torch

from slotfill.decoding import kernels as compiled
from slotfill.decoding.reference import path_posteriors, viterbi
from slotfill.errors import ConfigError
from slotfill.inference.engines import crf_tables
from slotfill.models.crf import CRF
from slotfill.schemes import allowed_transitions


def c_compiler() -> str | None:
    """The C compiler Python's build would use, if it is on this machine."""
    return shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0])


def test_the_compiled_decoder_was_built_where_a_compiler_exists():
    """The extension is optional only where no C compiler exists: with one, a missing build is a failed
    build, and the tests below would otherwise all skip silently."""
    if c_compiler() is None:
        pytest.skip("no C compiler here: slotfill decodes with NumPy")
    assert compiled._kernels is not None, f"{c_compiler()} is present but slotfill.decoding._kernels was not built"


needs_kernels = pytest.mark.skipif(compiled._kernels is None, reason="the compiled decoder was not built")


def labels_for(scheme: str, slots: int) -> list[str]:
    prefixes = {"IOB2": "BI", "BIOES": "BIES"}[scheme]
    return ["O"] + [f"{prefix}-s{i}" for i in range(slots) for prefix in prefixes]


def random_tables(seed: int, labels: list[str], scheme: str | None, scale: float = 2.0):
    torch.manual_seed(seed)
    crf = CRF(len(labels), allowed_transitions(scheme, labels) if scheme else None)
    with torch.no_grad():
        crf.transitions.normal_(0, scale)
        crf.start_transitions.normal_(0, scale)
        crf.end_transitions.normal_(0, scale)
    return crf_tables(crf.double()).astype(np.float32)


def emission_cases(rng: np.random.Generator, batch: int, steps: int, num_tags: int) -> list[np.ndarray]:
    """Peaked (confident), moderate and flat (ambiguous) emissions, and integer ones full of exact ties."""
    cases = [rng.normal(0, scale, (batch, steps, num_tags)) for scale in (0.05, 1.0, 4.0, 12.0)]
    cases.append(np.round(rng.normal(0, 1, (batch, steps, num_tags))))
    return [case.astype(np.float32) for case in cases]


@needs_kernels
@pytest.mark.parametrize("scheme,slots", [("IOB2", 3), ("IOB2", 40), ("BIOES", 20), (None, 10)])
@pytest.mark.parametrize("seed", range(3))
def test_viterbi_paths_equal_numpy_exactly(scheme, slots, seed):
    """Same float32 sums, same tie-breaking (the lowest label): the paths are NumPy's, element for element,
    including past each length (0), on batches of any size and on a single sequence."""
    labels = labels_for(scheme or "IOB2", slots)
    tables = random_tables(seed, labels, scheme)
    kernels = compiled.KernelTables.build(tables)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 25, 24)
    for emissions in emission_cases(rng, 24, 27, len(labels)):
        expected = viterbi(emissions, lengths, tables)
        got = compiled.viterbi(emissions, lengths, kernels)
        assert got.dtype == np.int64 and np.array_equal(got, expected)
        for row in (0, 5):
            alone = emissions[row:row + 1, : lengths[row]]
            assert np.array_equal(compiled.viterbi(alone, lengths[row:row + 1], kernels)[0],
                                  expected[row, : lengths[row]])


@needs_kernels
def test_viterbi_never_takes_a_forbidden_transition():
    labels = labels_for("IOB2", 30)
    tables = random_tables(0, labels, "IOB2")
    kernels = compiled.KernelTables.build(tables)
    emissions = np.full((2, 9, len(labels)), -5.0, dtype=np.float32)
    emissions[:, :, labels.index("I-s7")] = 10.0  # every position screams I-s7
    emissions[1, 4, labels.index("I-s3")] = 30.0
    for path in compiled.viterbi(emissions, np.array([9, 9]), kernels):
        tags = [labels[i] for i in path]
        assert not tags[0].startswith("I-")
        for previous, current in zip(tags, tags[1:]):
            if current.startswith("I-"):
                assert previous[2:] == current[2:]


@needs_kernels
@pytest.mark.parametrize("scheme,slots", [("IOB2", 3), ("IOB2", 40), ("BIOES", 20), (None, 10)])
def test_posteriors_equal_numpy_forward_backward(scheme, slots):
    """Token marginals along the path, log Z and every segment's probability agree with NumPy's float64
    reference; positions past a length are 0."""
    labels = labels_for(scheme or "IOB2", slots)
    tables = random_tables(1, labels, scheme)
    kernels = compiled.KernelTables.build(tables)
    reference = tables.astype(np.float64)
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 15, 12)
    for emissions in emission_cases(rng, 12, 16, len(labels)):
        paths = compiled.viterbi(emissions, lengths, kernels)
        segments = [(row, start, end) for row, n in enumerate(lengths)
                    for start in range(n) for end in range(start + 1, min(n, start + 4) + 1)]
        rows, starts, ends = (np.array(column) for column in zip(*segments))
        post = compiled.path_posteriors(emissions, lengths, kernels, paths, rows, starts, ends)
        want = path_posteriors(emissions.astype(np.float64), lengths, reference, paths, rows, starts, ends)
        mask = np.arange(16)[None, :] < lengths[:, None]
        np.testing.assert_allclose(post.confidence, np.where(mask, want.confidence, 0.0), atol=2e-6)
        assert not post.confidence[~mask].any()
        np.testing.assert_allclose(post.log_z, want.log_z, rtol=1e-5)
        np.testing.assert_allclose(post.spans, want.spans, rtol=2e-4, atol=1e-6)


@needs_kernels
def test_segment_probabilities_equal_brute_force_enumeration():
    labels = labels_for("IOB2", 2)  # 5 labels, 5 positions: 3,125 label sequences
    tables = random_tables(4, labels, "IOB2", scale=1.0)
    kernels = compiled.KernelTables.build(tables)
    emissions = np.random.default_rng(4).normal(0, 1.5, (1, 5, len(labels))).astype(np.float32)
    path = compiled.viterbi(emissions, np.array([5]), kernels)
    segments = [(0, 1), (1, 3), (0, 5), (4, 5), (2, 4)]
    post = compiled.path_posteriors(emissions, np.array([5]), kernels, path, [0] * len(segments),
                                      [s for s, _ in segments], [e for _, e in segments])
    scores = {}
    for candidate in itertools.product(range(len(labels)), repeat=5):
        score = float(tables.start[candidate[0]]) + float(tables.end[candidate[-1]])
        score += sum(float(emissions[0, t, candidate[t]]) for t in range(5))
        score += sum(float(tables.transitions[candidate[t - 1], candidate[t]]) for t in range(1, 5))
        scores[candidate] = score
    log_z = np.logaddexp.reduce(list(scores.values()))
    assert post.log_z[0] == pytest.approx(log_z, rel=1e-6)
    for (start, end), got in zip(segments, post.spans):
        hit = [s for c, s in scores.items() if c[start:end] == tuple(path[0, start:end])]
        expected = np.exp(np.logaddexp.reduce(hit) - log_z)
        assert got == pytest.approx(expected, rel=1e-4)
    for t in range(5):
        hit = [s for c, s in scores.items() if c[t] == path[0, t]]
        assert post.confidence[0, t] == pytest.approx(np.exp(np.logaddexp.reduce(hit) - log_z), rel=1e-4)


@needs_kernels
def test_bad_lengths_and_paths_are_refused_with_a_clear_error():
    labels = labels_for("IOB2", 2)
    kernels = compiled.KernelTables.build(random_tables(0, labels, "IOB2"))
    emissions = np.zeros((2, 3, len(labels)), dtype=np.float32)
    for lengths in ([0, 3], [4, 1]):
        with pytest.raises(ValueError, match=r"lengths\[\d\] = -?\d+ is outside 1\.\.3"):
            compiled.viterbi(emissions, np.array(lengths), kernels)
    paths = np.zeros((2, 3), dtype=np.int64)
    paths[1, 2] = len(labels)
    none = np.zeros(0, dtype=np.int64)
    with pytest.raises(ValueError, match="paths hold label 5, outside 0..4"):
        compiled.path_posteriors(emissions, np.array([3, 3]), kernels, paths, none, none, none)
    with pytest.raises(ValueError, match="paths have shape"):
        compiled.path_posteriors(emissions, np.array([3, 3]), kernels, paths[:, :2], none, none, none)
    paths[1, 2] = 0
    for rows, starts, ends, problem in (([1, 0], [0, 0], [1, 1], "out of order"), ([2], [0], [1], "outside 0..1"),
                                        ([0], [2], [2], "empty or outside"), ([1], [0], [4], "empty or outside")):
        with pytest.raises(ValueError, match=problem):
            compiled.path_posteriors(emissions, np.array([3, 3]), kernels, paths, rows, starts, ends)


@needs_kernels
def test_decoder_choice_from_the_environment(monkeypatch):
    monkeypatch.setenv("SLOTFILL_DECODER", "numpy")
    assert compiled.available() is False
    monkeypatch.setenv("SLOTFILL_DECODER", "c")
    assert compiled.available() is True
    monkeypatch.setenv("SLOTFILL_DECODER", "fortran")
    with pytest.raises(ConfigError, match="SLOTFILL_DECODER must be one of auto, c, numpy, not 'fortran'"):
        compiled.available()
    monkeypatch.setattr(compiled, "_kernels", None)
    monkeypatch.setenv("SLOTFILL_DECODER", "c")
    with pytest.raises(ConfigError, match="was not built"):
        compiled.available()
    monkeypatch.setenv("SLOTFILL_DECODER", "auto")
    assert compiled.available() is False


@needs_kernels
@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_predictor_answers_equal_with_either_decoder(sample_model_dir, monkeypatch, temperature):
    """The same labels, spans and intents, and confidences within float32 rounding, one at a time and in a
    batch, with and without temperature scaling."""
    from slotfill.inference.predictor import Predictor

    texts = ["book a table for four at an italian place tomorrow at 7pm", "play some jazz", "x",
             "what is the weather like in paris next friday evening"]
    monkeypatch.setenv("SLOTFILL_DECODER", "numpy")
    reference = Predictor.load(sample_model_dir, backend="torch")
    monkeypatch.setenv("SLOTFILL_DECODER", "auto")
    compiled = Predictor.load(sample_model_dir, backend="torch")
    assert (reference.decoder, compiled.decoder) == ("numpy", "c") and compiled.info["decoder"] == "c"
    for predictor in (reference, compiled):
        predictor.set_temperatures(temperature, 1.0)
    answers = [(reference.predict_texts(texts), compiled.predict_texts(texts)),
               ([reference.predict_texts([t])[0] for t in texts], [compiled.predict_texts([t])[0] for t in texts])]
    for want, got in answers:
        for a, b in zip(want, got):
            assert [t.label for t in a.tokens] == [t.label for t in b.tokens]
            assert [(s.slot, s.start, s.end, s.value) for s in a.slots] == [(s.slot, s.start, s.end, s.value)
                                                                             for s in b.slots]
            assert a.intent == b.intent
            assert [t.confidence for t in a.tokens] == pytest.approx([t.confidence for t in b.tokens], abs=5e-6)
            assert [s.confidence for s in a.slots] == pytest.approx([s.confidence for s in b.slots], abs=5e-6)
