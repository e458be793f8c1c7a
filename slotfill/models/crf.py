"""A linear-chain conditional random field with hard tagging-scheme constraints.

Conventions (shared with AllenNLP, so its pretrained tables and habits carry over):

* ``K`` real tags have ids ``0 .. K-1``; in the constraint table, id ``K`` is START and
  ``K + 1`` is END.
* ``transitions[i, j]`` scores moving from tag ``i`` at step ``t - 1`` to tag ``j`` at ``t``.
* Masks are left-aligned: every row is a prefix of ``True`` of length >= 1.

Disallowed transitions are given the finite score :data:`~slotfill.decoding.reference.DISALLOWED` rather
than ``-inf``: ``-inf`` turns into NaN gradients as soon as a whole logsumexp row is forbidden,
while ``-1e4`` is already ``exp(-1e4) == 0`` in float32, so probabilities are unaffected.
The constraints (from :func:`slotfill.schemes.allowed_transitions`, the one grammar) are used in
*every* computation (likelihood, partition, Viterbi, marginals), so training optimises exactly
the distribution that decoding searches.
"""

from __future__ import annotations

import torch
from torch import nn

from slotfill.decoding.reference import DISALLOWED

__all__ = ["CRF", "DISALLOWED", "log_partition"]


def log_partition(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """log Z by the forward algorithm, with the sum over previous tags as a matrix product.

    Each step is one (B, K) x (K, K) product instead of a logsumexp over a (B, K, K) tensor,
    several times faster for label sets of ~100 (ATIS). The running log-alphas are shifted by
    their row maximum before exponentiating and the transitions by theirs, so nothing overflows;
    emissions are added in log space, so they cannot underflow; float64 keeps transitions down
    to e^-700 below the best one. Sums that underflow (only forbidden moves lead there) are
    clamped, which keeps them finite with zero gradient.
    """
    dtype = emissions.dtype
    work = torch.float64
    emissions = emissions.to(work)
    trans_shift = transitions.detach().max()
    exp_trans = (transitions.to(work) - trans_shift).exp()  # (K, K); forbidden moves -> 0
    alpha = start.to(work) + emissions[:, 0]  # (B, K) log-alphas
    for t in range(1, emissions.size(1)):
        shift = alpha.detach().amax(dim=1, keepdim=True)
        summed = ((alpha - shift).exp() @ exp_trans).clamp_min(1e-300).log()
        stepped = summed + shift + trans_shift + emissions[:, t]
        alpha = torch.where(mask[:, t].unsqueeze(1), stepped, alpha)
    return torch.logsumexp(alpha + end.to(work), dim=1).to(dtype)


class CRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags.

    The score of a tag sequence ``y_1 .. y_n`` for emissions ``e`` is::

        start[y_1] + sum_t e[t, y_t] + sum_{t>1} transitions[y_{t-1}, y_t] + end[y_n]

    with disallowed transitions (see ``constraints``) replaced by :data:`DISALLOWED`.

    Parameters
    ----------
    num_tags:
        ``K``, the number of real tags.
    constraints:
        Allowed ``(from, to)`` pairs over ``0 .. K+1`` (``K`` = START, ``K+1`` = END), e.g. from
        :func:`slotfill.schemes.allowed_transitions`. ``None`` allows everything.
    include_start_end:
        Learn ``start_transitions`` / ``end_transitions``. When ``False`` they are fixed at zero
        (constraints on START/END still apply).
    """

    def __init__(self, num_tags: int, constraints: list[tuple[int, int]] | None = None, include_start_end: bool = True):
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be >= 1, got {num_tags}")
        self.num_tags = num_tags
        self.include_start_end = include_start_end
        # Initialised as in AllenNLP: xavier-normal transitions, standard-normal start/end.
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        nn.init.xavier_normal_(self.transitions)
        if include_start_end:
            self.start_transitions = nn.Parameter(torch.randn(num_tags))
            self.end_transitions = nn.Parameter(torch.randn(num_tags))
        else:
            self.register_parameter("start_transitions", None)
            self.register_parameter("end_transitions", None)

        # (K+2, K+2) bool, True = allowed. A buffer so that it follows .to(device); not saved with
        # the weights, since it is a function of the scheme and the labels (the model's config).
        if constraints is None:
            constraint_mask = torch.ones(num_tags + 2, num_tags + 2, dtype=torch.bool)
        else:
            constraint_mask = torch.zeros(num_tags + 2, num_tags + 2, dtype=torch.bool)
            for i, j in constraints:
                if not (0 <= i < num_tags + 2 and 0 <= j < num_tags + 2):
                    raise ValueError(f"constraint ({i}, {j}) is outside 0 .. {num_tags + 1}")
                constraint_mask[i, j] = True
        self.register_buffer("constraint_mask", constraint_mask, persistent=False)

    def extra_repr(self) -> str:
        constrained = not bool(self.constraint_mask.all())
        return f"num_tags={self.num_tags}, constrained={constrained}, include_start_end={self.include_start_end}"

    # ------------------------------------------------------------------ helpers

    def _potentials(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Constrained scores in ``dtype``: transitions (K, K), start (K), end (K)."""
        k = self.num_tags
        allowed = self.constraint_mask
        transitions = self.transitions.to(dtype).masked_fill(~allowed[:k, :k], DISALLOWED)
        if self.start_transitions is not None:
            start = self.start_transitions.to(dtype)
            end = self.end_transitions.to(dtype)
        else:
            start = self.transitions.new_zeros(k, dtype=dtype)
            end = self.transitions.new_zeros(k, dtype=dtype)
        start = start.masked_fill(~allowed[k, :k], DISALLOWED)
        end = end.masked_fill(~allowed[:k, k + 1], DISALLOWED)
        return transitions, start, end

    def constrained_scores(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transitions (K, K), start (K) and end (K) scores with the constraints applied, for
        decoders outside torch (see :mod:`slotfill.decoding.reference`)."""
        return self._potentials(dtype)

    def _check(self, emissions: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate shapes and mask layout; return emissions in the compute dtype and a bool mask."""
        if emissions.dim() != 3 or emissions.size(-1) != self.num_tags:
            raise ValueError(f"emissions must be (B, T, {self.num_tags}), got {tuple(emissions.shape)}")
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask must be {tuple(emissions.shape[:2])}, got {tuple(mask.shape)}")
        if emissions.size(1) == 0:
            raise ValueError("sequences must have at least one step")
        mask = mask.bool()
        # One host sync for both conditions; a bad mask would silently give wrong scores.
        bad = (~mask[:, 0]).any() | (mask[:, 1:] & ~mask[:, :-1]).any()
        if bool(bad):
            raise ValueError("mask must be left-aligned (a prefix of True per row) with every length >= 1")
        # Compute in the wider of the emission / parameter dtypes (float64 tests stay float64;
        # half-precision emissions are lifted to the float32 parameters).
        dtype = torch.promote_types(emissions.dtype, self.transitions.dtype)
        return emissions.to(dtype), mask

    def _forward_alphas(
        self, emissions: torch.Tensor, mask: torch.Tensor, transitions: torch.Tensor, start: torch.Tensor
    ) -> torch.Tensor:
        """Forward log-potentials, (B, T, K): ``alpha[b, t, j]`` = log-sum of the scores of all
        prefixes ending in tag ``j`` at step ``t`` (emission at ``t`` included). At padded steps
        the last real alpha is carried along, so ``alpha[:, -1]`` is each sequence's final one.
        """
        alpha = start + emissions[:, 0]  # (B, K)
        alphas = [alpha]
        for t in range(1, emissions.size(1)):
            # (B, K_from, 1) + (K_from, K_to) + (B, 1, K_to) -> logsumexp over K_from
            step = torch.logsumexp(alpha.unsqueeze(2) + transitions + emissions[:, t].unsqueeze(1), dim=1)
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
            alphas.append(alpha)
        return torch.stack(alphas, dim=1)

    # ------------------------------------------------------------------ public API

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Log-likelihood of the gold tags.

        emissions: (B, T, K) float; tags: (B, T) long (values at padded positions are ignored,
        e.g. -100 is fine); mask: (B, T) bool, left-aligned. Returns (B,) ``score(tags) - log Z``;
        the training loss is its negation.
        """
        emissions, mask = self._check(emissions, mask)
        transitions, start, end = self._potentials(emissions.dtype)
        return self._gold_score(emissions, tags, mask, transitions, start, end) - log_partition(
            emissions, mask, transitions, start, end
        )

    def _gold_score(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor,
        transitions: torch.Tensor,
        start: torch.Tensor,
        end: torch.Tensor,
    ) -> torch.Tensor:
        """Unnormalised score of ``tags``, (B,)."""
        if tags.shape != mask.shape:
            raise ValueError(f"tags must be {tuple(mask.shape)}, got {tuple(tags.shape)}")
        # Padded tags may be anything (ignore indices); make them valid indices, then mask out.
        tags = tags.long().masked_fill(~mask, 0)
        zero = emissions.new_zeros(())
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        score = torch.where(mask, emitted, zero).sum(1)
        pairs = transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        score = score + torch.where(mask[:, 1:], pairs, zero).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)  # (B,)
        return score + start[tags[:, 0]] + end[last]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z: logsumexp of the scores of all tag sequences. emissions (B, T, K), mask (B, T) -> (B,)."""
        emissions, mask = self._check(emissions, mask)
        transitions, start, end = self._potentials(emissions.dtype)
        return log_partition(emissions, mask, transitions, start, end)

    @torch.no_grad()
    def viterbi_decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Best tag sequence per row.

        emissions: (B, T, K); mask: (B, T) bool, left-aligned.
        Returns ``(paths (B, T) long, 0 at padded positions; scores (B,))`` where ``scores`` is the
        unnormalised score of each path (subtract :meth:`log_partition` for its log-probability).
        """
        emissions, mask = self._check(emissions, mask)
        transitions, start, end = self._potentials(emissions.dtype)
        batch, steps, k = emissions.shape
        # At padded steps the back-pointer is the identity, so the backtrack walks through the
        # padding unchanged and enters the real part at each row's own last tag.
        identity = torch.arange(k, device=emissions.device).expand(batch, k)
        score = start + emissions[:, 0]  # (B, K)
        backpointers = []
        for t in range(1, steps):
            best, arg = (score.unsqueeze(2) + transitions).max(dim=1)  # over K_from -> (B, K_to)
            real = mask[:, t].unsqueeze(1)
            score = torch.where(real, best + emissions[:, t], score)
            backpointers.append(torch.where(real, arg, identity))
        best_score, tag = (score + end).max(dim=1)  # (B,)
        path = [tag]
        for pointers in reversed(backpointers):
            tag = pointers.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        path.reverse()
        paths = torch.stack(path, dim=1).masked_fill(~mask, 0)
        return paths, best_score

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token posteriors ``p(y_t = k | x)`` by forward-backward in log space.

        emissions (B, T, K), mask (B, T) -> (B, T, K); rows sum to 1 at real positions and are 0
        at padded ones. Differentiable (useful for confidence scores or distillation).
        """
        emissions, mask = self._check(emissions, mask)
        transitions, start, end = self._potentials(emissions.dtype)
        alphas = self._forward_alphas(emissions, mask, transitions, start)  # (B, T, K)
        log_z = torch.logsumexp(alphas[:, -1] + end, dim=1)  # (B,)

        # beta[b, t, i] = log-sum of scores of all suffixes after step t given tag i at t (END
        # included, emission at t excluded). Running right to left and only updating real steps,
        # beta stays ``end`` until the walk reaches each row's last real token.
        beta = end.expand_as(emissions[:, 0])
        betas = [beta]
        for t in range(emissions.size(1) - 2, -1, -1):
            # (K_from, K_to) + (B, 1, K_to) -> logsumexp over K_to
            step = torch.logsumexp(transitions + (emissions[:, t + 1] + beta).unsqueeze(1), dim=2)
            beta = torch.where(mask[:, t + 1].unsqueeze(1), step, beta)
            betas.append(beta)
        betas.reverse()
        log_marginals = alphas + torch.stack(betas, dim=1) - log_z[:, None, None]
        return log_marginals.exp().masked_fill(~mask.unsqueeze(2), 0.0)
