"""CRF checked against brute-force enumeration of every tag path, plus the constraint tables."""

from __future__ import annotations

import itertools

import pytest
import torch

from slotfill.errors import ConfigError
from slotfill.models.crf import CRF, DISALLOWED
from slotfill.schemes import allowed_transitions

# K = 4 labels per scheme: small enough to enumerate 4**5 paths. BIOES also constrains END.
LABELS = {
    None: ["O", "B-a", "I-a", "B-b"],
    "IOB2": ["O", "B-a", "I-a", "B-b"],
    "IOB1": ["O", "I-a", "B-a", "I-b"],
    "BIOES": ["O", "B-a", "E-a", "S-a"],
}
LENGTHS = [5, 3, 1, 4]  # varying lengths in one batch, T = 5


# ---------------------------------------------------------------------------- brute force


def make_crf(seed: int, scheme: str | None, include_start_end: bool = True) -> CRF:
    """A float64 CRF with large random potentials, so that many paths compete."""
    torch.manual_seed(seed)
    labels = LABELS[scheme]
    constraints = allowed_transitions(scheme, labels) if scheme else None
    crf = CRF(len(labels), constraints, include_start_end=include_start_end).double()
    with torch.no_grad():
        for param in crf.parameters():
            param.normal_(0.0, 2.0)
    return crf


def make_batch(seed: int, num_tags: int, lengths=LENGTHS) -> tuple[torch.Tensor, torch.Tensor]:
    """emissions (B, T, K) float64 with garbage in the padding, mask (B, T) left-aligned."""
    generator = torch.Generator().manual_seed(1000 + seed)
    steps = max(lengths)
    emissions = 3.0 * torch.randn(len(lengths), steps, num_tags, generator=generator, dtype=torch.float64)
    mask = torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]
    emissions = emissions.masked_fill(~mask[:, :, None], 1e3)  # must be ignored
    return emissions, mask


def potentials(crf: CRF) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The constrained (transitions, start, end) straight from the definition."""
    k = crf.num_tags
    allowed = crf.constraint_mask
    neg = torch.tensor(DISALLOWED, dtype=torch.float64)
    start = crf.start_transitions if crf.include_start_end else torch.zeros(k, dtype=torch.float64)
    end = crf.end_transitions if crf.include_start_end else torch.zeros(k, dtype=torch.float64)
    return (
        torch.where(allowed[:k, :k], crf.transitions, neg),
        torch.where(allowed[k, :k], start, neg),
        torch.where(allowed[:k, k + 1], end, neg),
    )


def path_scores(crf: CRF, emissions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every path for one unpadded sequence: emissions (n, K) -> (paths (K**n, n), scores (K**n,))."""
    n, k = emissions.shape
    transitions, start, end = potentials(crf)
    paths = torch.tensor(list(itertools.product(range(k), repeat=n)))
    scores = start[paths[:, 0]] + end[paths[:, -1]]
    scores = scores + emissions[torch.arange(n), paths].sum(1)
    if n > 1:
        scores = scores + transitions[paths[:, :-1], paths[:, 1:]].sum(1)
    return paths, scores


def is_legal(path: list[int], allowed: set[tuple[int, int]], num_tags: int) -> bool:
    start, end = num_tags, num_tags + 1
    steps = [start, *path, end]
    return all((a, b) in allowed for a, b in zip(steps, steps[1:]))


# ---------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("include_start_end", [True, False])
@pytest.mark.parametrize("scheme", [None, "IOB2", "IOB1", "BIOES"])
@pytest.mark.parametrize("seed", range(4))
def test_viterbi_matches_brute_force(seed, scheme, include_start_end):
    crf = make_crf(seed, scheme, include_start_end)
    emissions, mask = make_batch(seed, crf.num_tags)
    paths, scores = crf.viterbi_decode(emissions, mask)
    assert paths.dtype == torch.long and paths.shape == mask.shape
    assert torch.all(paths[~mask] == 0)
    for b, n in enumerate(LENGTHS):
        all_paths, all_scores = path_scores(crf, emissions[b, :n])
        best = int(all_scores.argmax())
        assert paths[b, :n].tolist() == all_paths[best].tolist()
        torch.testing.assert_close(scores[b], all_scores[best])
        if scheme:
            # Same answer as searching only the legal paths: the penalty is a hard constraint.
            allowed = set(allowed_transitions(scheme, LABELS[scheme]))
            legal = torch.tensor([is_legal(p, allowed, crf.num_tags) for p in all_paths.tolist()])
            best_legal = int(torch.where(legal, all_scores, -torch.inf).argmax())
            assert paths[b, :n].tolist() == all_paths[best_legal].tolist()


@pytest.mark.parametrize("include_start_end", [True, False])
@pytest.mark.parametrize("scheme", [None, "IOB2", "IOB1", "BIOES"])
@pytest.mark.parametrize("seed", range(4))
def test_log_partition_and_likelihood_match_brute_force(seed, scheme, include_start_end):
    crf = make_crf(seed, scheme, include_start_end)
    emissions, mask = make_batch(seed, crf.num_tags)
    log_z = crf.log_partition(emissions, mask)
    tags = torch.randint(0, crf.num_tags, mask.shape, generator=torch.Generator().manual_seed(seed))
    tags = tags.masked_fill(~mask, -100)  # ignore-index padding must be accepted
    log_likelihood = crf(emissions, tags, mask)
    assert log_z.shape == log_likelihood.shape == (len(LENGTHS),)
    for b, n in enumerate(LENGTHS):
        all_paths, all_scores = path_scores(crf, emissions[b, :n])
        expected_z = torch.logsumexp(all_scores, 0)
        torch.testing.assert_close(log_z[b], expected_z)
        gold = (all_paths == tags[b, :n]).all(1)
        torch.testing.assert_close(log_likelihood[b], all_scores[gold][0] - expected_z)


@pytest.mark.parametrize("scheme", [None, "IOB2", "IOB1", "BIOES"])
@pytest.mark.parametrize("seed", range(4))
def test_marginals_match_brute_force(seed, scheme):
    crf = make_crf(seed, scheme)
    emissions, mask = make_batch(seed, crf.num_tags)
    marginals = crf.marginals(emissions, mask)
    assert marginals.shape == emissions.shape
    assert torch.all(marginals[~mask] == 0)
    torch.testing.assert_close(marginals.sum(-1), mask.double())
    for b, n in enumerate(LENGTHS):
        all_paths, all_scores = path_scores(crf, emissions[b, :n])
        probs = torch.softmax(all_scores, 0)  # (P,)
        one_hot = torch.nn.functional.one_hot(all_paths, crf.num_tags).double()  # (P, n, K)
        expected = torch.einsum("p,pnk->nk", probs, one_hot)
        torch.testing.assert_close(marginals[b, :n], expected)


def test_log_partition_gradient_is_the_marginals():
    # d log Z / d emissions[b, t, k] = p(y_t = k): ties forward-backward to autograd.
    crf = make_crf(7, "BIOES")
    emissions, mask = make_batch(7, crf.num_tags)
    emissions.requires_grad_(True)
    crf.log_partition(emissions, mask).sum().backward()
    torch.testing.assert_close(emissions.grad, crf.marginals(emissions, mask).detach())


# ---------------------------------------------------------------------------- constraints


def test_decoded_paths_never_use_forbidden_transitions():
    labels = ["O", "B-a", "I-a", "B-b", "I-b"]
    constraints = allowed_transitions("IOB2", labels)
    allowed = set(constraints)
    o, i_b = labels.index("O"), labels.index("I-b")
    steps = 5
    # Adversarial: O then I-b everywhere is by far the best *unconstrained* path, and the learned
    # transitions reward the forbidden moves too.
    emissions = torch.full((1, steps, len(labels)), -5.0)
    emissions[0, 0, o] = 10.0
    emissions[0, 1:, i_b] = 10.0
    mask = torch.ones(1, steps, dtype=torch.bool)

    free = CRF(len(labels))
    with torch.no_grad():
        free.transitions.fill_(0.0)
    free_path = free.viterbi_decode(emissions, mask)[0][0].tolist()
    assert free_path == [o] + [i_b] * (steps - 1)  # the test really is adversarial
    assert not is_legal(free_path, allowed, len(labels))

    crf = CRF(len(labels), constraints)
    with torch.no_grad():
        crf.transitions.fill_(0.0)
        crf.transitions[o, i_b] = 50.0
        crf.start_transitions.fill_(0.0)
        crf.start_transitions[i_b] = 50.0
    path = crf.viterbi_decode(emissions, mask)[0][0].tolist()
    assert is_legal(path, allowed, len(labels))
    assert path[1] == labels.index("B-b")  # the cheapest repair: open the chunk properly

    # And on many random, large-scale inputs.
    generator = torch.Generator().manual_seed(0)
    emissions = 20.0 * torch.randn(64, 6, len(labels), generator=generator)
    lengths = torch.randint(1, 7, (64,), generator=generator)
    mask = torch.arange(6)[None, :] < lengths[:, None]
    paths = crf.viterbi_decode(emissions, mask)[0]
    for row, n in zip(paths.tolist(), lengths.tolist()):
        assert is_legal(row[:n], allowed, len(labels))


def test_constrained_likelihood_gives_no_mass_to_illegal_paths():
    labels = ["O", "B-a", "I-a"]
    crf = CRF(len(labels), allowed_transitions("IOB2", labels))
    emissions = torch.randn(1, 3, 3)
    mask = torch.ones(1, 3, dtype=torch.bool)
    illegal = torch.tensor([[0, 2, 2]])  # O -> I-a
    assert crf(emissions, illegal, mask).item() < -1000.0
    assert torch.all(crf.marginals(emissions, mask)[0, 0, 2] < 1e-30)  # I-a cannot start


# ---------------------------------------------------------------------------- padding, grads, dtypes


def test_padding_does_not_change_results():
    crf = CRF(5, allowed_transitions("IOB2", ["O", "B-a", "I-a", "B-b", "I-b"]))
    generator = torch.Generator().manual_seed(3)
    lengths = [6, 2, 4, 1]
    emissions = torch.randn(4, 6, 5, generator=generator)
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]
    padded = emissions.masked_fill(~mask[:, :, None], 77.0)
    tags = torch.randint(0, 5, (4, 6), generator=generator)
    batch_paths, batch_scores = crf.viterbi_decode(padded, mask)
    batch_z = crf.log_partition(padded, mask)
    batch_ll = crf(padded, tags, mask)
    batch_marginals = crf.marginals(padded, mask)
    for b, n in enumerate(lengths):
        alone = emissions[b : b + 1, :n]
        alone_mask = torch.ones(1, n, dtype=torch.bool)
        paths, scores = crf.viterbi_decode(alone, alone_mask)
        assert batch_paths[b, :n].tolist() == paths[0].tolist()
        torch.testing.assert_close(batch_scores[b], scores[0])
        torch.testing.assert_close(batch_z[b], crf.log_partition(alone, alone_mask)[0])
        torch.testing.assert_close(batch_ll[b], crf(alone, tags[b : b + 1, :n], alone_mask)[0])
        torch.testing.assert_close(batch_marginals[b, :n], crf.marginals(alone, alone_mask)[0])


def test_viterbi_output_is_zero_at_padding():
    crf = CRF(4)
    emissions = torch.zeros(2, 5, 4)
    emissions[..., 3] = 100.0  # tag 3 wins everywhere, padding included
    mask = torch.tensor([[True, True, False, False, False], [True, True, True, True, True]])
    paths, _ = crf.viterbi_decode(emissions, mask)
    assert paths.tolist() == [[3, 3, 0, 0, 0], [3, 3, 3, 3, 3]]


def test_nll_gradients_flow_to_transitions_and_emissions():
    labels = ["O", "B-a", "I-a", "B-b", "I-b"]
    crf = CRF(len(labels), allowed_transitions("IOB2", labels))
    emissions = torch.randn(3, 4, len(labels), requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    tags = torch.tensor([[1, 2, 0, 3], [3, 4, 0, 0], [0, 0, 0, 0]])
    nll = -crf(emissions, tags, mask).sum()
    nll.backward()
    for name, param in crf.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert torch.isfinite(emissions.grad).all()
    assert emissions.grad[mask].abs().sum() > 0
    assert torch.all(emissions.grad[~mask] == 0)  # padding gets no gradient
    # Forbidden entries are constants, so they receive exactly zero gradient.
    k = len(labels)
    assert torch.all(crf.transitions.grad[~crf.constraint_mask[:k, :k]] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    crf = make_crf(0, "BIOES").to(dtype)
    emissions, mask = make_batch(0, crf.num_tags)
    emissions = emissions.to(dtype)
    tags = torch.zeros(mask.shape, dtype=torch.long)
    reference = make_crf(0, "BIOES")  # float64
    ref_emissions = emissions.double()
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {}
    assert crf.log_partition(emissions, mask).dtype == dtype
    torch.testing.assert_close(
        crf.log_partition(emissions, mask).double(), reference.log_partition(ref_emissions, mask), **tol
    )
    torch.testing.assert_close(crf(emissions, tags, mask).double(), reference(ref_emissions, tags, mask), **tol)
    torch.testing.assert_close(
        crf.marginals(emissions, mask).double(), reference.marginals(ref_emissions, mask), **tol
    )
    assert torch.equal(crf.viterbi_decode(emissions, mask)[0], reference.viterbi_decode(ref_emissions, mask)[0])


def test_extreme_emissions_stay_finite():
    crf = CRF(3, allowed_transitions("IOB2", ["O", "B-a", "I-a"]))
    emissions = torch.tensor([[[1e4, -1e4, 0.0], [-1e4, 0.0, 1e4], [0.0, 1e4, -1e4]]], requires_grad=True)
    mask = torch.ones(1, 3, dtype=torch.bool)
    nll = -crf(emissions, torch.tensor([[0, 1, 2]]), mask).sum()
    nll.backward()
    assert torch.isfinite(nll) and torch.isfinite(emissions.grad).all()
    assert torch.isfinite(crf.marginals(emissions, mask)).all()


def test_constraint_mask_comes_from_the_scheme_not_the_weights():
    """The constraints are a function of the scheme and the labels (the model's config), so the weights
    do not carry them: a CRF built from the same config decodes with the same ones after loading."""
    constraints = allowed_transitions("BIOES", ["O", "B-a", "I-a", "E-a", "S-a"])
    crf = CRF(5, constraints)
    state = crf.state_dict()
    assert "constraint_mask" not in state
    assert set(map(tuple, crf.constraint_mask.nonzero().tolist())) == set(constraints)
    rebuilt = CRF(5, constraints)
    rebuilt.load_state_dict(state)
    assert torch.equal(rebuilt.constraint_mask, crf.constraint_mask)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_inputs_device():
    crf = make_crf(1, "BIOES")
    emissions, mask = make_batch(1, crf.num_tags)
    expected = crf.viterbi_decode(emissions, mask), crf.log_partition(emissions, mask), crf.marginals(emissions, mask)
    cuda = crf.to("cuda")
    emissions, mask = emissions.cuda(), mask.cuda()
    paths, scores = cuda.viterbi_decode(emissions, mask)
    assert paths.device.type == "cuda"
    assert torch.equal(paths.cpu(), expected[0][0])
    torch.testing.assert_close(scores.cpu(), expected[0][1])
    torch.testing.assert_close(cuda.log_partition(emissions, mask).cpu(), expected[1])
    torch.testing.assert_close(cuda.marginals(emissions, mask).cpu(), expected[2])


def test_rejects_bad_masks_and_shapes():
    crf = CRF(3)
    emissions = torch.randn(2, 3, 3)
    with pytest.raises(ValueError, match="left-aligned"):
        crf.log_partition(emissions, torch.tensor([[True, False, True], [True, True, True]]))
    with pytest.raises(ValueError, match="left-aligned"):
        crf.viterbi_decode(emissions, torch.tensor([[False, False, False], [True, True, True]]))
    with pytest.raises(ValueError, match="emissions"):
        crf.log_partition(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))


# ---------------------------------------------------------------------------- allowed_transitions


def _named(scheme: str, labels: list[str]) -> set[tuple[str, str]]:
    names = labels + ["START", "END"]
    return {(names[i], names[j]) for i, j in allowed_transitions(scheme, labels)}


def test_allowed_transitions_iob2():
    labels = ["O", "B-a", "I-a", "B-b", "I-b"]
    expected = {("START", to) for to in ("O", "B-a", "B-b")}
    expected |= {(frm, "END") for frm in labels}
    expected |= {(frm, to) for frm in labels for to in ("O", "B-a", "B-b")}
    expected |= {("B-a", "I-a"), ("I-a", "I-a"), ("B-b", "I-b"), ("I-b", "I-b")}
    assert _named("IOB2", labels) == expected
    # The ids follow the AllenNLP convention: K = START, K + 1 = END.
    assert (5, 0) in allowed_transitions("IOB2", labels) and (2, 6) in allowed_transitions("IOB2", labels)


def test_allowed_transitions_iob1():
    labels = ["O", "B-a", "I-a", "B-b", "I-b"]
    expected = {("START", to) for to in ("O", "I-a", "I-b")}
    expected |= {(frm, "END") for frm in labels}
    expected |= {(frm, to) for frm in labels for to in ("O", "I-a", "I-b")}
    expected |= {("B-a", "B-a"), ("I-a", "B-a"), ("B-b", "B-b"), ("I-b", "B-b")}
    assert _named("IOB1", labels) == expected


def test_allowed_transitions_bioes():
    labels = ["O", "B-a", "I-a", "E-a", "S-a", "B-b", "E-b", "S-b"]
    openers = ("O", "B-a", "S-a", "B-b", "S-b")
    expected = {("START", to) for to in openers}
    expected |= {(frm, "END") for frm in ("O", "E-a", "S-a", "E-b", "S-b")}
    expected |= {(frm, to) for frm in ("O", "E-a", "S-a", "E-b", "S-b") for to in openers}
    expected |= {("B-a", "I-a"), ("B-a", "E-a"), ("I-a", "I-a"), ("I-a", "E-a"), ("B-b", "E-b")}
    assert _named("BIOES", labels) == expected


def test_allowed_transitions_split_on_first_hyphen_and_accept_mappings():
    labels = ["O", "B-fromloc.city_name", "I-fromloc.city_name", "B-round-trip", "I-round-trip", "I-round"]
    named = _named("IOB2", labels)
    assert ("B-fromloc.city_name", "I-fromloc.city_name") in named
    assert ("B-round-trip", "I-round-trip") in named
    assert ("B-round-trip", "I-round") not in named
    assert ("I-fromloc.city_name", "I-round-trip") not in named
    as_dict = dict(enumerate(labels))
    assert allowed_transitions("IOB2", as_dict) == allowed_transitions("IOB2", labels)


def test_allowed_transitions_errors():
    with pytest.raises(ConfigError, match="scheme"):
        allowed_transitions("BILOU2", ["O"])
    with pytest.raises(ConfigError, match="'E-a'"):
        allowed_transitions("IOB2", ["O", "E-a"])
    with pytest.raises(ConfigError, match="'<pad>'"):
        allowed_transitions("IOB2", ["<pad>", "O"])
    with pytest.raises(ConfigError, match="0 .. num_labels-1"):
        allowed_transitions("IOB2", {1: "O", 2: "B-a"})
