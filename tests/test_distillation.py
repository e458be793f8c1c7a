"""Knowledge distillation: the soft-label loss is the exact cross-entropy to the teacher, and the pipeline uses it."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from slotfill.errors import ConfigError
from slotfill.models.crf import CRF
from slotfill.models.tagger import TaggerOutput
from training.distillation import (
    Teacher,
    distillation_loss,
    ensemble_distillation_loss,
    teacher_statistics,
)

from .conftest import SMALL_MODEL


class _Student(torch.nn.Module):
    """Just enough of a SlotTagger for the loss: a CRF (or none, for a softmax student)."""

    def __init__(self, crf: CRF | None):
        super().__init__()
        self.crf = crf


def _potentials(crf: CRF) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return tuple(t.clone() for t in crf.constrained_scores(torch.float64))


def _sequence_log_probs(crf: CRF, emissions: torch.Tensor, length: int) -> dict[tuple[int, ...], float]:
    """log p(y) for every tag sequence of one sentence, by enumeration."""
    k = crf.num_tags
    mask = torch.ones(1, length, dtype=torch.bool)
    out = {}
    with torch.no_grad():
        for path in itertools.product(range(k), repeat=length):
            out[path] = float(crf(emissions[None, :length], torch.tensor([path]), mask)[0])  # score - log Z
    assert abs(torch.tensor(list(out.values())).exp().sum().item() - 1.0) < 1e-6
    return out


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_crf_distillation_loss_is_the_exact_cross_entropy_to_the_teacher(temperature):
    torch.manual_seed(0)
    k, lengths = 3, [3, 2]
    teacher_crf, student_crf = CRF(k), CRF(k)
    teacher_emissions = torch.randn(2, 3, k, dtype=torch.float64) * 2
    student_emissions = torch.randn(2, 3, k, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    teacher = Teacher(emissions=[], intent_logits=None, potentials=_potentials(teacher_crf), temperature=temperature)
    out = TaggerOutput(emissions=student_emissions, intent_logits=None)
    loss = distillation_loss(_Student(student_crf), out, mask, teacher_emissions, None, teacher, 1.0)

    # The teacher at this temperature is the CRF with every score divided by it.
    soft = CRF(k)
    with torch.no_grad():
        soft.transitions.copy_(teacher_crf.transitions / temperature)
        soft.start_transitions.copy_(teacher_crf.start_transitions / temperature)
        soft.end_transitions.copy_(teacher_crf.end_transitions / temperature)
    expected = 0.0
    for b, n in enumerate(lengths):
        q = _sequence_log_probs(soft.double(), teacher_emissions[b] / temperature, n)
        p = _sequence_log_probs(student_crf.double(), student_emissions[b].detach(), n)
        expected += -sum(torch.tensor(q[y]).exp().item() * p[y] for y in q)
    assert loss.item() == pytest.approx(expected / 2, rel=1e-6)
    loss.backward()
    assert student_emissions.grad.abs().sum() > 0 and student_crf.transitions.grad.abs().sum() > 0


def test_an_ensemble_loss_is_the_exact_cross_entropy_to_the_mean_of_the_teachers():
    """Two CRF teachers: the loss equals -sum_y (q1(y) + q2(y)) / 2 * log p(y), by enumeration, and the
    intent term is the cross-entropy to the mean of their intent distributions."""
    torch.manual_seed(4)
    k, n = 3, 3
    student_crf = CRF(k)
    student_emissions = torch.randn(1, n, k, dtype=torch.float64)
    student_intents = torch.randn(1, 4, dtype=torch.float64)
    mask = torch.ones(1, n, dtype=torch.bool)
    members, expected = [], 0.0
    p = _sequence_log_probs(student_crf.double(), student_emissions[0], n)
    log_p_intent = torch.log_softmax(student_intents[0], -1)
    for seed in (5, 6):
        torch.manual_seed(seed)
        crf, emissions, intents = CRF(k), torch.randn(1, n, k, dtype=torch.float64) * 2, torch.randn(1, 4)
        members.append((Teacher(emissions=[], intent_logits=None, potentials=_potentials(crf), temperature=1.0),
                        emissions, intents))
        q = _sequence_log_probs(crf.double(), emissions[0], n)
        expected += -sum(torch.tensor(q[y]).exp().item() * p[y] for y in q) / 2
        expected += -0.5 * (torch.softmax(intents[0].double(), -1) * log_p_intent).sum().item() / 2
    out = TaggerOutput(emissions=student_emissions, intent_logits=student_intents)
    loss = ensemble_distillation_loss(_Student(student_crf), out, mask, members, 0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Not the cross-entropy to either teacher alone.
    alone = ensemble_distillation_loss(_Student(student_crf), out, mask, members[:1], 0.5)
    assert abs(alone.item() - loss.item()) > 1e-3


def test_a_certain_teacher_gives_the_gold_negative_log_likelihood():
    torch.manual_seed(1)
    k = 4
    student_crf = CRF(k)
    gold = torch.tensor([[0, 1, 2, 3], [3, 3, 0, 0]])
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    teacher_emissions = torch.nn.functional.one_hot(gold, k).double() * 1000.0
    zeros = (torch.zeros(k, k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64))
    teacher = Teacher(emissions=[], intent_logits=None, potentials=zeros, temperature=1.0)
    emissions = torch.randn(2, 4, k)
    loss = distillation_loss(_Student(student_crf), TaggerOutput(emissions=emissions, intent_logits=None), mask,
                             teacher_emissions, None, teacher, 1.0)
    nll = -student_crf(emissions, gold, mask).sum() / 2
    assert loss.item() == pytest.approx(nll.item(), rel=1e-5)


def test_teacher_statistics_are_its_marginals_and_transition_counts():
    torch.manual_seed(2)
    k = 5
    crf = CRF(k)
    emissions = torch.randn(3, 6, k, dtype=torch.float64)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] + [False] * 5])
    marginals, pairs, start, end = teacher_statistics(emissions, mask, _potentials(crf), 1.0)
    torch.testing.assert_close(marginals, crf.double().marginals(emissions, mask), atol=1e-8, rtol=1e-6)
    assert pairs.sum().item() == pytest.approx(5 + 3 + 0)  # one transition between each pair of real tokens
    assert start.sum().item() == pytest.approx(3) and end.sum().item() == pytest.approx(3)


def test_softmax_student_learns_the_teacher_marginals_and_the_intent_distribution():
    torch.manual_seed(3)
    k = 3
    emissions = torch.randn(1, 2, k, requires_grad=True)
    intent_logits = torch.randn(1, 4, requires_grad=True)
    teacher_emissions = torch.randn(1, 2, k)
    teacher_intents = torch.randn(1, 4)
    mask = torch.ones(1, 2, dtype=torch.bool)
    teacher = Teacher(emissions=[], intent_logits=None, potentials=None, temperature=2.0)
    loss = distillation_loss(_Student(None), TaggerOutput(emissions=emissions, intent_logits=intent_logits), mask,
                             teacher_emissions, teacher_intents, teacher, 0.5)
    q = torch.softmax(teacher_emissions / 2.0, -1)
    expected = -(q * torch.log_softmax(emissions, -1)).sum()
    expected = expected - 0.5 * (torch.softmax(teacher_intents / 2.0, -1) * torch.log_softmax(intent_logits, -1)).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


# ----------------------------------------------------------------------------- the pipeline
def test_distilled_student_trains_from_a_teacher_artifact(sample_dir, sample_model_dir, tmp_path):
    from training.pipeline import train

    logs = []
    result = train(sample_dir, tmp_path / "student",
                   overrides={**SMALL_MODEL, "epochs": 2, "distill_from": str(sample_model_dir), "distill_weight": 0.7,
                              "distill_temperature": 2.0, "calibrate": False, "export_onnx": False},
                   seed=1, progress=False, log=logs.append)
    assert any("distilling from" in line for line in logs)
    card = json.loads((tmp_path / "student" / "model_card.json").read_text())
    assert card["training"]["distill_from"] == str(sample_model_dir)
    assert result.report["slot_f1"] > 0.5


def test_a_student_distils_from_the_mean_of_several_teachers(small_corpus, contextual_model_dir, sample_model_dir,
                                                             tmp_path):
    """distill_from=A,B: each teacher scores the sentences as it would alone (the frozen transformer teacher
    from the feature cache, the other through its network), the student trains on both, its model card says
    so; an empty entry is refused naming the setting."""
    import numpy as np

    from training.config import TrainConfig
    from training.pipeline import train
    from training.prepare import TrainingData

    both = f"{contextual_model_dir}, {sample_model_dir}"
    logs: list[str] = []
    data = TrainingData(small_corpus, TrainConfig.from_dict({**SMALL_MODEL, "distill_from": both}), log=logs.append)
    assert len(data.teachers) == 2
    assert any("mean of 2 teachers" in line for line in logs)
    for teacher, path in zip(data.teachers, (contextual_model_dir, sample_model_dir)):
        alone = TrainingData(small_corpus, TrainConfig.from_dict({**SMALL_MODEL, "distill_from": str(path)}),
                             log=lambda m: None).teachers
        assert len(alone) == 1
        assert all(np.array_equal(a, b) for a, b in zip(teacher.emissions, alone[0].emissions))
        assert np.array_equal(teacher.intent_logits, alone[0].intent_logits)
    assert not all(np.allclose(a, b) for a, b in zip(data.teachers[0].emissions, data.teachers[1].emissions))
    result = train(small_corpus, tmp_path / "student",
                   overrides={**SMALL_MODEL, "distill_from": both, "calibrate": False, "export_onnx": False},
                   seed=0, progress=False, log=lambda m: None)
    card = json.loads((tmp_path / "student" / "model_card.json").read_text())
    assert card["training"]["distill_from"] == both
    assert result.report["slot_f1"] > 0.5
    with pytest.raises(ConfigError, match="distill_from: an empty teacher"):
        TrainConfig.from_dict({"distill_from": f"{sample_model_dir},,"}).validate()


def test_distilling_from_a_model_with_other_labels_is_refused(sample_dir, sample_model_dir, tmp_path):
    from training.pipeline import train

    other = tmp_path / "data"
    for split in ("train", "valid"):
        (other / split).mkdir(parents=True)
        (other / split / "seq.in").write_text("fly to boston\n")
        (other / split / "seq.out").write_text("O O B-city\n")
        (other / split / "label").write_text("flight\n")
    with pytest.raises(ConfigError, match="other slot labels"):
        train(other, tmp_path / "out", overrides={**SMALL_MODEL, "distill_from": str(sample_model_dir)},
              progress=False, log=lambda m: None)


def test_a_crf_student_needs_a_crf_teacher(sample_dir, sample_softmax_model_dir, tmp_path):
    from training.pipeline import train

    with pytest.raises(ConfigError, match="CRF teacher"):
        train(sample_dir, tmp_path / "out", overrides={**SMALL_MODEL, "distill_from": str(sample_softmax_model_dir)},
              progress=False, log=lambda m: None)


def test_the_student_embeddings_start_from_the_teachers_contextual_vectors(small_corpus, contextual_model_dir,
                                                                            sample_model_dir, tmp_path):
    """distill_embeddings: each vocabulary word starts from the transformer teacher's word vectors, averaged
    over its occurrences and projected on their principal directions (uncorrelated columns, decreasing
    variance, unit overall std); the model built from the data carries exactly those rows."""
    import numpy as np

    from slotfill.artifact.artifact import LoadedModel
    from training.config import TrainConfig
    from training.distillation import (
        teacher_norms,
        teacher_word_states,
        teacher_word_vectors,
    )
    from training.prepare import TrainingData

    config = TrainConfig.from_dict({**SMALL_MODEL, "distill_from": str(contextual_model_dir),
                                    "distill_embeddings": True, "epochs": 1})
    data = TrainingData(small_corpus, config, log=lambda m: None)
    vectors, found = data.teacher_vectors
    words = data.featurizer.words.itos
    assert vectors.shape == (len(words), config.model.word_dim)
    assert found.sum() == len(words) - 2  # every word of the training data; not <pad> and <unk>
    kept = vectors[found].astype(np.float64)
    assert kept.std() == pytest.approx(1.0, rel=1e-3)
    covariance = kept.T @ kept
    off_diagonal = covariance - np.diag(np.diag(covariance))
    assert np.abs(off_diagonal).max() < 1e-3 * np.abs(np.diag(covariance)).max()
    assert all(np.diff(np.diag(covariance)) <= 1e-6)
    model = data.build_model()
    assert np.array_equal(model.word_embedding.weight.detach().numpy()[found], vectors[found])
    # The same computation as a function of the teacher and the sentences, deterministic; the encoder run whole
    # (no states given) agrees with its cached float16 states.
    teacher = LoadedModel.from_pretrained(contextual_model_dir)
    norms = teacher_norms(teacher, [e.tokens for e in data.train_examples])
    states = teacher_word_states(teacher, [("training sentences", norms)], None, lambda m: None)
    again, _ = teacher_word_vectors(teacher, norms, words, data.train_norms, config.model.word_dim, states=states)
    assert np.array_equal(again, vectors)
    whole, _ = teacher_word_vectors(teacher, norms, words, data.train_norms, config.model.word_dim)
    assert np.allclose(np.abs(whole), np.abs(vectors), atol=2e-2)
    with pytest.raises(ConfigError, match="no transformer front-end"):
        TrainingData(small_corpus, TrainConfig.from_dict({**SMALL_MODEL, "distill_from": str(sample_model_dir),
                                                          "distill_embeddings": True}), log=lambda m: None)
    with pytest.raises(ConfigError, match="distill_embeddings: needs a teacher"):
        TrainConfig.from_dict({"distill_embeddings": True}).validate()


def test_a_frozen_teachers_encoder_states_come_from_the_feature_cache(small_corpus, contextual_model_dir, tmp_path):
    """The teacher's model card names its frozen encoder by the feature cache's key, so a student reads the
    encoder's states of the teacher's training sentences from the cache its training filled, computes those
    of the slot-substituted copies once (a second student reads them too), and gets the teacher's scores the
    whole network gives, to float16 precision of the states, with the same best labels."""
    import dataclasses

    import numpy as np

    from slotfill.artifact.artifact import LoadedModel
    from slotfill.models.pretrained import resolve_encoder_path
    from training.config import TrainConfig
    from training.distillation import load_teacher, teacher_norms, teacher_word_states
    from training.feature_cache import encoder_digest
    from training.prepare import TrainingData

    teacher = LoadedModel.from_pretrained(contextual_model_dir)
    assert teacher.card["encoder"] == {"name": "all-MiniLM-L6-v2", "frozen": True,
                                       "sha256": encoder_digest(resolve_encoder_path("minilm"))}
    config = TrainConfig.from_dict({**SMALL_MODEL, "distill_from": str(contextual_model_dir), "augment": 1,
                                    "contextual_cache": None})
    logs: list[list[str]] = [[], []]
    first, second = (TrainingData(small_corpus, config, log=logs[run].append) for run in (0, 1))
    copies = len(first.augmented)
    assert copies > 0
    assert any("training sentences (teacher) read from" in line for line in logs[0])
    assert any(f"teacher's contextual word states of {copies} slot-substituted copies" in line for line in logs[0])
    assert not any("computing the teacher's" in line for line in logs[1])
    assert sum("(teacher) read from" in line for line in logs[1]) == 2
    for a, b in zip(first.teachers[0].emissions, second.teachers[0].emissions):
        assert np.array_equal(a, b)

    norms = teacher_norms(teacher, [e.tokens for e in first.train_examples + first.augmented])
    whole = load_teacher(teacher, norms, first.labels, first.intents, "crf", 1.0)  # no states: the whole network
    assert len(whole.emissions) == len(first.teachers[0].emissions) == len(first.train_examples) + copies
    for live, cached in zip(whole.emissions, first.teachers[0].emissions):
        assert live.shape == cached.shape
        assert np.abs(live - cached).max() < 0.05 * max(1.0, np.abs(live).max())
    agree = np.mean([np.array_equal(a.argmax(-1), b.argmax(-1)) for a, b in zip(whole.emissions,
                                                                                first.teachers[0].emissions)])
    assert agree > 0.99
    assert np.allclose(whole.intent_logits, first.teachers[0].intent_logits, atol=0.05)

    # No record of a frozen encoder (an older artifact, or a fine-tuned encoder): the network runs whole.
    for card in ({k: v for k, v in teacher.card.items() if k != "encoder"},
                 {**teacher.card, "encoder": {**teacher.card["encoder"], "frozen": False}}):
        other = dataclasses.replace(teacher, card=card)
        assert teacher_word_states(other, [("training sentences", norms)], None, lambda m: None) is None
