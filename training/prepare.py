"""Data preparation: what training reads, built once before the first epoch.

The corpus and its held-out dev split, the tokenizer, featurizer, labels and intents, every training
sentence encoded as arrays (slot-substituted copies included), the contextual encoder (its source,
its aligner and the cache of its word states) and the distillation teacher; and the model built
from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from slotfill.data import Example, load_corpus
from slotfill.errors import ConfigError, DataError
from slotfill.models.tagger import IGNORE_INTENT, SlotTagger
from slotfill.schemes import parse_tag
from slotfill.text.features import Featurizer
from slotfill.text.tokenizer import TokenizerConfig, infer_tokenizer_config, normalize_token

from .augment import slot_substitution
from .config import TrainConfig
from .distillation import Teacher
from .feature_cache import encoder_digest
from .tokenizer_check import check_tokenizer, enforce


@dataclass
class Encoded:
    """One training sentence as arrays: word ids (T,), char ids (T, L), tag ids (T,), intent id."""

    words: np.ndarray
    chars: np.ndarray
    tags: np.ndarray
    intent: int
    singletons: np.ndarray
    contextual: np.ndarray | None = None  # (T, L, E) float16 word states of a frozen transformer


def label_order(labels: set[str]) -> list[str]:
    """'O' first, then by slot name with B, I, E, S together, so ids are stable across data orderings."""
    rank = {"B": 0, "I": 1, "E": 2, "S": 3}

    def key(label: str) -> tuple:
        prefix, slot = parse_tag(label)
        return (slot or "", rank.get(prefix, 9))

    return ["O"] + sorted((label for label in labels if label != "O"), key=key)


def normalise_examples(examples: list[Example], tokenizer: TokenizerConfig) -> list[list[str]]:
    return [[normalize_token(token, tokenizer) or token for token in example.tokens] for example in examples]


def load_word_vectors(path: str, featurizer: Featurizer, dim: int, embedding: torch.nn.Embedding) -> int:
    """Initialise embedding rows from a GloVe/word2vec text file; returns how many words were found."""
    found = 0
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read word vectors ({exc.strerror})", path) from None
    with handle, torch.no_grad():
        for line_no, line in enumerate(handle, 1):
            parts = line.rstrip("\n").split(" ")
            if line_no == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header: "count dim"
            if len(parts) != dim + 1:
                raise DataError(f"expected a word and {dim} numbers (word_dim), found {len(parts) - 1} values", path, line_no)
            index = featurizer.words.stoi.get(parts[0])
            if index is None:
                continue
            try:
                embedding.weight[index] = torch.tensor([float(x) for x in parts[1:]])
            except ValueError:
                raise DataError("not a number in the vector", path, line_no) from None
            found += 1
    return found


class TrainingData:
    """The data of one training run, read and encoded from ``data_dir`` as ``config`` says."""

    def __init__(self, data_dir: str | Path, config: TrainConfig, *, log: Callable[[str], None],
                 progress: bool = False):
        self.config = config
        self.data_dir = Path(data_dir)
        self.log = log
        cfg = config
        tokenizer = TokenizerConfig.from_dict(cfg.tokenizer) if cfg.tokenizer else None
        corpus = load_corpus(self.data_dir, scheme=cfg.model.scheme, repair=cfg.repair, tokenizer_config=tokenizer)
        train, valid = list(corpus.train), list(corpus.valid)
        if not valid:
            # No dev split: hold out a seeded fraction of train for early stopping.
            rng = random.Random(cfg.seed)
            order = list(range(len(train)))
            rng.shuffle(order)
            cut = max(1, int(len(train) * cfg.valid_fraction))
            held = set(order[:cut])
            valid = [e for i, e in enumerate(train) if i in held]
            train = [e for i, e in enumerate(train) if i not in held]
            self.log(f"no validation split in {self.data_dir}; holding out {len(valid)} training sentences")
        if not train:
            raise DataError("no training sentences", self.data_dir)
        self.train_examples, self.valid_examples, self.test_examples = train, valid, list(corpus.test)
        inferred = infer_tokenizer_config([e.tokens for e in train])
        self.tokenizer = tokenizer or inferred
        self.train_norms = normalise_examples(train, self.tokenizer)
        # Serving tokenises raw text with self.tokenizer: it must give back the tokens the model trains on.
        # The typed text glues letters together when the data's own style is one token per character.
        self.tokenizer_check = check_tokenizer(train, self.train_norms, self.tokenizer,
                                               glue_characters=inferred.char_tokens == "all",
                                               max_rate=cfg.max_tokenizer_mismatch)
        enforce(self.tokenizer_check, self.data_dir)
        self.log(self.tokenizer_check.summary())
        self.featurizer = Featurizer.build(self.train_norms, min_freq=cfg.min_freq,
                                           max_word_chars=cfg.model.max_word_chars)
        self.labels = label_order({tag for e in train for tag in e.tags} | {"O"})
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        self.intents = sorted({e.intent for e in train if e.intent is not None})
        self.intent2id = {intent: i for i, intent in enumerate(self.intents)}
        counts = Counter(token for norms in self.train_norms for token in norms)
        self.encoded = [self._encode(norms, e, counts) for norms, e in zip(self.train_norms, train)]
        # Copies come after the vocabularies and counts are built: they hold no word the data lacks, and
        # must not make a rare word look frequent.
        self.augmented = slot_substitution(train, cfg.augment, cfg.seed, cfg.model.scheme)
        if self.augmented:
            extra = normalise_examples(self.augmented, self.tokenizer)
            self.encoded += [self._encode(norms, e, counts) for norms, e in zip(extra, self.augmented)]
            self.train_norms = self.train_norms + extra
            self.log(f"slot substitution: {len(self.augmented)} sentences added to {len(train)} "
                     f"({cfg.augment} cop{'y' if cfg.augment == 1 else 'ies'} of each sentence with slots)")
        self.aligner = self.encoder_source = self.encoder_path = self.encoder_sha256 = None
        # The frozen encoder's word states of the dev sentences, by their tokens (see cache_contextual).
        self.frozen_states: dict[tuple[str, ...], np.ndarray] | None = None
        if cfg.contextual:
            self._load_encoder()
        self.teachers: list[Teacher] = []
        self.teacher_vectors = None
        if cfg.distill_from:
            self._load_teachers(train, progress)

    def _load_teachers(self, train: list[Example], progress: bool) -> None:
        """Each teacher's scores of the training sentences and copies, and with ``distill_embeddings`` the
        first teacher's word vectors; a frozen teacher's encoder states are read from (or stored in) the
        feature cache, so teachers over the same encoder share one encoding."""
        from slotfill.artifact.artifact import LoadedModel

        from .distillation import load_teacher, teacher_norms, teacher_word_states, teacher_word_vectors

        cfg = self.config
        paths = cfg.distill_teachers
        for number, path in enumerate(paths):
            started = time.perf_counter()
            teacher = LoadedModel.from_pretrained(path)
            originals = teacher_norms(teacher, [e.tokens for e in train])
            copies = teacher_norms(teacher, [e.tokens for e in self.augmented])
            states = teacher_word_states(teacher, [("training sentences", originals),
                                                   ("slot-substituted copies", copies)],
                                         cfg.contextual_cache, self.log, progress)
            self.teachers.append(load_teacher(teacher, originals + copies, self.labels, self.intents,
                                              cfg.model.decoder, cfg.distill_temperature, states=states))
            self.log(f"teacher {path}: its scores in {time.perf_counter() - started:.0f}s")
            if cfg.distill_embeddings and number == 0:
                started = time.perf_counter()
                self.teacher_vectors = teacher_word_vectors(teacher, originals, self.featurizer.words.itos,
                                                            self.train_norms[: len(train)], cfg.model.word_dim,
                                                            states=None if states is None else states[: len(train)])
                self.log(f"word embeddings from the teacher's contextual vectors: "
                         f"{int(self.teacher_vectors[1].sum())}/{len(self.featurizer.words)} words, "
                         f"{time.perf_counter() - started:.0f}s")
        what = "the teacher" if len(paths) == 1 else f"the mean of {len(paths)} teachers' distributions"
        self.log(f"distilling from {what} (weight {cfg.distill_weight}, temperature {cfg.distill_temperature})")

    def _load_encoder(self) -> None:
        """Load the pretrained encoder's tokenizer, config and weights (the model takes them in build_model)."""
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        from slotfill.models.pretrained import PACKAGED_ENCODERS, resolve_encoder_path
        from slotfill.text.subwords import SubwordAligner, load_tokenizer, special_tokens

        cfg = self.config
        path = resolve_encoder_path(cfg.contextual)
        tokenizer = load_tokenizer(path / "tokenizer.json")
        tokens = special_tokens(tokenizer)
        hf_logging.disable_progress_bar()  # a progress bar per load is noise in a training log
        try:
            hf_config = json.loads(AutoConfig.from_pretrained(path).to_json_string())
            encoder = AutoModel.from_pretrained(path)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"contextual: cannot load the encoder in {path} ({exc})") from None
        weights = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
        name = PACKAGED_ENCODERS.get(cfg.contextual, path.name)
        self.aligner = SubwordAligner(tokenizer, tokens, cfg.model.contextual_window)
        self.encoder_path = path
        self.encoder_sha256 = encoder_digest(path)  # the feature cache's key, and the model card's record
        self.encoder_source = {"name": name, "config": hf_config, "tokens": tokens, "weights": weights}

    def _encode(self, norms: list[str], example: Example, counts: Counter) -> Encoded:
        f = self.featurizer
        char_lists = [f.char_ids(token) for token in norms]
        chars = np.zeros((len(norms), max(len(c) for c in char_lists)), dtype=np.int64)
        for t, ids in enumerate(char_lists):
            chars[t, : len(ids)] = ids
        intent = self.intent2id.get(example.intent, IGNORE_INTENT) if example.intent is not None else IGNORE_INTENT
        return Encoded(words=np.array(f.words.encode(norms), dtype=np.int64), chars=chars,
                       tags=np.array([self.label2id[t] for t in example.tags], dtype=np.int64), intent=intent,
                       singletons=np.array([counts[t] == 1 for t in norms]))

    def build_model(self) -> SlotTagger:
        """The tagger of ``config.model`` completed with this data's vocabularies, labels and encoder,
        seeded, with the encoder's weights and any word vectors loaded."""
        cfg = self.config
        data: dict[str, Any] = {"vocab_size": len(self.featurizer.words), "num_chars": len(self.featurizer.chars),
                                "id2label": dict(enumerate(self.labels)), "id2intent": dict(enumerate(self.intents))}
        source = self.encoder_source
        if source is not None:
            data.update(contextual_dim=int(source["config"]["hidden_size"]), contextual_name=source["name"],
                        contextual_model=source["config"], contextual_tokens=source["tokens"])
        torch.manual_seed(cfg.seed)
        model = SlotTagger(dataclasses.replace(cfg.model, **data))
        if source is not None:
            model.contextual.encoder.load_state_dict(source["weights"], strict=True)
            model.contextual.encoder.requires_grad_(cfg.contextual_finetune)
        if self.teacher_vectors is not None and model.word_embedding is not None:
            vectors, found = self.teacher_vectors
            with torch.no_grad():
                rows = torch.from_numpy(np.flatnonzero(found))
                model.word_embedding.weight[rows] = torch.from_numpy(vectors[found])
        if cfg.word_vectors and model.word_embedding is not None:
            found = load_word_vectors(cfg.word_vectors, self.featurizer, cfg.model.word_dim, model.word_embedding)
            self.log(f"word vectors: {found}/{len(self.featurizer.words)} vocabulary words initialised")
        return model

    def cache_contextual(self, model: SlotTagger, device: torch.device, progress: bool = False) -> None:
        """The frozen transformer's word states of the training sentences (every layer the tagger may mix),
        and of the dev sentences for the evaluation after each epoch: read from the feature cache, or
        computed once and stored there (see :mod:`training.feature_cache`)."""
        from .feature_cache import WordStateCache, compute_states, default_cache_dir

        cfg = self.config
        root = None if cfg.contextual_cache == "off" else Path(cfg.contextual_cache or default_cache_dir())
        cache = WordStateCache(root, self.encoder_sha256, layers=cfg.model.contextual_layers,
                               pooling=cfg.model.contextual_pooling, window=cfg.model.contextual_window)
        name = self.encoder_source["name"]
        started = time.perf_counter()
        for what, sentences in (("training sentences", self.train_norms),
                                ("dev sentences", normalise_examples(self.valid_examples, self.tokenizer))):
            def compute(indices: list[int], sentences=sentences, what=what) -> list[np.ndarray]:
                self.log(f"computing the contextual word states of {len(indices)} {what} (frozen {name})")
                return compute_states(model.contextual, self.aligner, sentences, indices, device, progress,
                                      desc=f"{name}: {what}")

            states = cache.states(sentences, compute, self.log, what)
            if what == "training sentences":
                for encoded, value in zip(self.encoded, states):
                    encoded.contextual = value
            else:
                self.frozen_states = {tuple(tokens): value for tokens, value in zip(sentences, states)}
        self.log(f"contextual word states ready in {time.perf_counter() - started:.0f}s")

    def fingerprint(self) -> str:
        """What every rank must have built identically: vocabularies, labels, tokenizer and the encoded data."""
        examples = self.train_examples + self.augmented
        data = hashlib.sha256(json.dumps([self.train_norms, [e.tags for e in examples],
                                          [e.intent for e in examples]]).encode("utf-8")).hexdigest()
        return json.dumps([self.featurizer.words.itos, self.featurizer.chars.itos, self.labels, self.intents,
                           self.tokenizer.to_dict(), data, len(self.valid_examples)])
