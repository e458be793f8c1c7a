"""Knowledge distillation: a student tagger learns from a trained teacher's soft labels as well as the gold ones.

The teacher (typically the contextual tagger) runs once over the training sentences; its emissions
and intent logits are kept per sentence. At every step the student minimises::

    (1 - w) * gold loss + w * (cross-entropy to the teacher's slot distribution
                               + intent_loss_weight * cross-entropy to the teacher's intent distribution)

For a CRF teacher and a CRF student the slot term is the exact cross-entropy between the teacher's
sequence distribution ``q`` and the student's ``p``::

    -E_q[log p(y)] = log Z_p - E_q[score_p(y)]

and ``score_p`` is linear in the student's emissions and transitions, so ``E_q[score_p]`` only
needs the teacher's expected sufficient statistics: its token marginals and its expected transition
counts, which are the gradient of the teacher's ``log Z`` with respect to its own potentials (one
forward algorithm and its backward pass per batch). With a one-hot teacher this is exactly the
CRF's negative log-likelihood of the gold path. A softmax student learns the teacher's token
marginals with a per-token cross-entropy. The temperature divides the teacher's scores before its
distributions are taken (a softer teacher shows more of what it considers plausible).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from slotfill.artifact.artifact import LoadedModel
from slotfill.errors import ConfigError
from slotfill.inference.engines import TorchEngine
from slotfill.inference.predictor import Predictor
from slotfill.models.contextual import pad_states
from slotfill.models.crf import log_partition
from slotfill.models.tagger import SlotTagger, TaggerOutput
from slotfill.text.tokenizer import normalize_token

from .feature_cache import WordStateCache, compute_states, default_cache_dir


@dataclass
class Teacher:
    """Per-sentence teacher scores for the training set and the teacher's CRF potentials."""

    emissions: list[np.ndarray]  # one (T, K) float32 array per training sentence
    intent_logits: np.ndarray | None  # (N, I) float32
    potentials: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # transitions (K, K), start, end
    temperature: float


def teacher_norms(teacher: LoadedModel, token_lists: Sequence[Sequence[str]]) -> list[list[str]]:
    """The sentences' tokens normalised the teacher's way."""
    return [[normalize_token(token, teacher.tokenizer) or token for token in tokens] for tokens in token_lists]


def teacher_state_cache(teacher: LoadedModel, cache: str | None) -> WordStateCache | None:
    """The feature cache (``cache``: a folder, ``"off"`` or None for the default; :mod:`training.feature_cache`)
    of a teacher's frozen encoder, keyed by the encoder its model card records and the layers, pooling and
    window it reads; None for a teacher without a frozen encoder on record (no transformer, a fine-tuned one,
    or an artifact from before the record)."""
    record = teacher.card.get("encoder")
    if teacher.model.contextual is None or not isinstance(record, dict) or record.get("frozen") is not True \
            or not isinstance(record.get("sha256"), str):
        return None
    config = teacher.config
    root = None if cache == "off" else Path(cache or default_cache_dir())
    return WordStateCache(root, record["sha256"], layers=config.contextual_layers, pooling=config.contextual_pooling,
                          window=config.contextual_window)


def teacher_word_states(teacher: LoadedModel, parts: Sequence[tuple[str, list[list[str]]]], cache: str | None,
                        log: Callable[[str], None], progress: bool = False) -> list[np.ndarray] | None:
    """The frozen transformer word states (T, L, E) of a teacher over ``parts`` ((what, sentences normalised
    the teacher's way)), in order, through :func:`teacher_state_cache`.

    The teacher's training stored the states of its own training sentences under that key, so the sentences
    it was trained on are read, not encoded again; other parts (slot-substituted copies) are computed once and
    stored. None without a frozen encoder on record: the teacher's network then runs whole.
    """
    store = teacher_state_cache(teacher, cache)
    if store is None:
        return None
    states: list[np.ndarray] = []
    for what, sentences in parts:
        def compute(indices: list[int], sentences=sentences, what=what) -> list[np.ndarray]:
            log(f"computing the teacher's contextual word states of {len(indices)} {what}")
            return compute_states(teacher.model.contextual, teacher.aligner, sentences, indices, torch.device("cpu"),
                                  progress, desc=f"teacher: {what}")

        states += store.states(sentences, compute, log, f"{what} (teacher)") if sentences else []
    return states


def load_teacher(teacher: LoadedModel, norms: list[list[str]], labels: list[str], intents: list[str],
                 student_decoder: str, temperature: float, states: list[np.ndarray] | None = None,
                 batch_size: int = 64) -> Teacher:
    """Run the teacher over the training sentences (``norms``: normalised its own way), from their frozen
    word states where given (:func:`teacher_word_states`), else through its whole network."""
    path = teacher.directory
    config = teacher.config
    teacher_labels = [config.id2label[i] for i in range(config.num_labels)]
    if teacher_labels != labels:
        raise ConfigError(f"distill_from: {path} was trained with other slot labels than this data has "
                          f"({len(teacher_labels)} vs {len(labels)}); distil from a model trained on the same data")
    teacher_intents = [config.id2intent[i] for i in range(config.num_intents)]
    if intents and teacher_intents != intents:
        raise ConfigError(f"distill_from: {path} was trained with other intents than this data has")
    if student_decoder == "crf" and config.decoder != "crf":
        raise ConfigError("distill_from: a CRF student needs a CRF teacher (a softmax teacher has no transition "
                          "statistics to learn from)")
    engine = None
    if states is not None:
        engine = TorchEngine(teacher.model, teacher.featurizer, teacher.aligner,
                             states={tuple(tokens): value for tokens, value in zip(norms, states)})
    predictor = Predictor(teacher, engine=engine)
    emissions: list[np.ndarray | None] = [None] * len(norms)
    logits = np.zeros((len(norms), config.num_intents), dtype=np.float32) if intents else None
    order = sorted(range(len(norms)), key=lambda i: len(norms[i]))  # similar lengths: little padding
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        scores, intent_scores, lens = predictor.run_network([norms[i] for i in rows])
        for j, i in enumerate(rows):
            emissions[i] = np.ascontiguousarray(scores[j, : lens[j]], dtype=np.float32)
            if logits is not None and intent_scores is not None:
                logits[i] = intent_scores[j]
    potentials = None
    if teacher.model.crf is not None:
        with torch.no_grad():
            potentials = tuple(t.detach().clone() for t in teacher.model.crf.constrained_scores(torch.float64))
    return Teacher(emissions=emissions, intent_logits=logits, potentials=potentials,  # type: ignore[arg-type]
                   temperature=temperature)


@torch.no_grad()
def teacher_word_vectors(teacher: LoadedModel, sentences: list[list[str]], words: list[str],
                         norms: list[list[str]], dim: int, states: list[np.ndarray] | None = None,
                         batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The contextual word vectors of a teacher with a transformer front-end, for a student's vocabulary.

    The teacher reads ``sentences`` (the training sentences, normalised its own way; from their frozen
    word states ``states`` where given) and mixes its transformer's layers as it learned to; each
    vocabulary word (``words``, the student's, matched through the student's normalisation ``norms``,
    position for position) gets the mean of its vectors over its occurrences. The means are centred and
    projected on their ``dim`` principal directions, then scaled to unit standard deviation like a fresh
    embedding. Returns the vectors (len(words), dim) and which rows were found.
    """
    embedder = teacher.model.contextual
    if embedder is None:
        raise ConfigError(f"distill_embeddings: the teacher {teacher.directory} has no transformer front-end to "
                          "take word vectors from")
    index = {word: i for i, word in enumerate(words)}
    sums = np.zeros((len(words), embedder.encoder.config.hidden_size))
    counts = np.zeros(len(words))
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        if states is None:
            pieces = teacher.aligner.encode([sentences[i] for i in rows]).tensors()
            vectors = embedder(**pieces).double().numpy()  # (B, T, E)
        else:
            vectors = embedder.mix(pad_states([states[i] for i in rows])).double().numpy()
        for j, i in enumerate(rows):
            for t, word in enumerate(norms[i]):
                k = index.get(word)
                if k is not None:
                    sums[k] += vectors[j, t]
                    counts[k] += 1
    found = counts > 0
    means = sums[found] / counts[found, None]
    means -= means.mean(axis=0)
    _, _, directions = np.linalg.svd(means, full_matrices=False)
    projected = means @ directions[:dim].T
    projected /= projected.std() or 1.0
    out = np.zeros((len(words), dim), dtype=np.float32)
    out[found, : projected.shape[1]] = projected
    return out, found


def teacher_statistics(emissions: torch.Tensor, mask: torch.Tensor,
                       potentials: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, temperature: float):
    """The teacher's expected sufficient statistics for a batch.

    emissions (B, T, K) teacher scores, mask (B, T). Returns token marginals (B, T, K) and, for a CRF
    teacher, expected transition counts summed over the batch (K, K), and expected start and end
    counts (K,) (None for a softmax teacher).
    """
    if potentials is None:
        marginals = torch.softmax(emissions.double() / temperature, dim=-1) * mask.unsqueeze(-1)
        return marginals, None, None, None
    with torch.enable_grad():
        scores = [emissions.double() / temperature] + [p.double() / temperature for p in potentials]
        leaves = [s.detach().requires_grad_(True) for s in scores]
        log_z = log_partition(leaves[0], mask, leaves[1], leaves[2], leaves[3]).sum()
        marginals, transitions, start, end = torch.autograd.grad(log_z, leaves)
    return marginals * mask.unsqueeze(-1), transitions, start, end


def distillation_loss(model: SlotTagger, out: TaggerOutput, mask: torch.Tensor, teacher_emissions: torch.Tensor,
                      teacher_intents: torch.Tensor | None, teacher: Teacher, intent_weight: float) -> torch.Tensor:
    """Cross-entropy of the student to the teacher, per sentence, averaged over the batch."""
    batch = mask.size(0)
    marginals, pair, start, end = teacher_statistics(teacher_emissions, mask, teacher.potentials, teacher.temperature)
    emissions = out.emissions
    if model.crf is not None:
        transitions, student_start, student_end = model.crf.constrained_scores(torch.float64)
        log_z = model.crf.log_partition(emissions.double(), mask).sum()
        expected = ((marginals * emissions.double()).sum() + (pair * transitions).sum()
                    + (start * student_start).sum() + (end * student_end).sum())
        slot = (log_z - expected) / batch
    else:
        log_probs = F.log_softmax(emissions.double(), dim=-1)
        slot = -(marginals * log_probs).sum() / batch
    loss = slot
    if teacher_intents is not None and out.intent_logits is not None:
        target = torch.softmax(teacher_intents.double() / teacher.temperature, dim=-1)
        intent = -(target * F.log_softmax(out.intent_logits.double(), dim=-1)).sum() / batch
        loss = loss + intent_weight * intent
    return loss.to(emissions.dtype)


def ensemble_distillation_loss(model: SlotTagger, out: TaggerOutput, mask: torch.Tensor,
                               teachers: Sequence[tuple[Teacher, torch.Tensor, torch.Tensor | None]],
                               intent_weight: float) -> torch.Tensor:
    """Cross-entropy of the student to the mean of several teachers' distributions, per sentence, averaged
    over the batch; ``teachers``: (teacher, its emissions (B, T, K), its intent logits (B, I) or None).

    The cross-entropy is linear in the target distribution, so to the mean of the teachers' sequence (and
    intent) distributions it is the mean of the cross-entropies to each: no mixture is ever formed.
    """
    total = sum(distillation_loss(model, out, mask, emissions, intents, teacher, intent_weight)
                for teacher, emissions, intents in teachers)
    return total / len(teachers)
