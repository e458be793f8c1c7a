"""Inference: raw text or tokens in, labels, slot spans with offsets, confidences and intent out."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import fastdecode
from .decoding import (
    CRFTables,
    ForwardBackward,
    forward_backward,
    path_segment_probabilities,
    path_segment_probability,
    softmax,
    viterbi,
)
from .engines import Engine, OnnxEngine, TorchEngine, resolve_backend
from .model_io import Artifact, LoadedModel, load_model, read_artifact
from .predictions import IntentPrediction, Prediction, SlotPrediction, TokenPrediction
from .schemes import parse_tag, repair, spans
from .text import Token, normalize_token, tokenize


def _pick(scores: np.ndarray, paths: np.ndarray) -> np.ndarray:
    """scores (B, T, K) at each position's decoded label paths (B, T) -> (B, T)."""
    batch, steps = paths.shape
    return scores[np.arange(batch)[:, None], np.arange(steps)[None, :], paths]


class SpanConfidence:
    """How sure the model is of each predicted span, for one decoded batch.

    Under a CRF a span's confidence is the probability that its positions carry exactly the predicted
    labels, from the compiled kernels' ``posteriors`` (see :class:`~slotfill.fastdecode.PathPosteriors`)
    or NumPy's forward-backward ``fb`` (see :func:`~slotfill.decoding.path_segment_probabilities`);
    under softmax decoding the tokens are independent decisions and it is the product of theirs.
    """

    # Up to this many spans, one call per span costs less than the vectorised call's fixed cost (an ATIS
    # utterance has about 3 spans, a micro-batch of 8 about 25).
    PER_SPAN_MAX = 6

    def __init__(self, paths: np.ndarray, token_conf: np.ndarray, fb: ForwardBackward | None = None,
                 emissions: np.ndarray | None = None, tables: CRFTables | None = None,
                 posteriors: fastdecode.PathPosteriors | None = None):
        self.paths, self.token_conf = paths, token_conf  # (B, T) each
        self.fb, self.emissions, self.tables = fb, emissions, tables
        self.posteriors = posteriors

    def many(self, rows: Sequence[int], starts: Sequence[int], ends: Sequence[int]) -> np.ndarray:
        """(N,) confidences of the spans ``[starts[i], ends[i])`` of batch rows ``rows[i]``."""
        if self.posteriors is not None:
            if len(rows) <= self.PER_SPAN_MAX:
                return np.array([self.posteriors.segment(r, s, e) for r, s, e in zip(rows, starts, ends)])
            return self.posteriors.segments(rows, starts, ends)
        if self.fb is not None:
            if len(rows) <= self.PER_SPAN_MAX:
                return np.array([path_segment_probability(self.fb, self.emissions, self.tables, r, self.paths[r], s, e)
                                 for r, s, e in zip(rows, starts, ends)], dtype=np.float64)
            return path_segment_probabilities(self.fb, self.emissions, self.tables, self.paths, rows, starts, ends)
        return np.array([np.prod(self.token_conf[r, s:e]) for r, s, e in zip(rows, starts, ends)], dtype=np.float64)

    def __call__(self, row: int, start: int, end: int) -> float:
        return float(self.many([row], [start], [end])[0])


class Predictor:
    """A loaded artifact ready to tag. Methods never mutate their inputs and are safe to call from threads.

    ``engine`` runs the network (see :mod:`slotfill.engines`); without one, ``loaded`` must be a
    :class:`LoadedModel` and its torch module is used.
    """

    def __init__(self, loaded: Artifact, model_dir: str | Path | None = None, engine: Engine | None = None):
        if engine is None:
            if not isinstance(loaded, LoadedModel):
                raise TypeError("Predictor needs an engine or a LoadedModel")
            engine = TorchEngine(loaded.model)
        self.loaded = loaded
        self.engine = engine
        self.backend = engine.name
        self.config = loaded.config
        self.featurizer = loaded.featurizer
        self.aligner = loaded.aligner  # sub-word pieces for a transformer front-end, else None
        self.tokenizer_config = loaded.tokenizer
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.labels = [self.config.id2label[i] for i in range(self.config.num_labels)]
        self._label_parts = [parse_tag(label) for label in self.labels]
        self._begin_label = {slot: f"B-{slot}" for _, slot in self._label_parts if slot is not None}
        self.intents = [self.config.id2intent[i] for i in range(self.config.num_intents)] or None
        self.card = loaded.card
        self.name = str(loaded.card.get("name", "slotfill"))
        self.version = str(loaded.card.get("version", "0"))
        self.created = str(loaded.card.get("created", ""))
        self.metrics = loaded.report or {}
        self.digest = loaded.digest
        # What serving the int8 graph costs in agreement with the float one; None for other backends.
        self.quantization = loaded.quantization if self.backend == "onnx-int8" else None
        # float32 is plenty for confidences rounded to 6 digits, and halves the memory traffic.
        tables = engine.crf_tables()
        self._tables = tables.astype(np.float32) if tables is not None else None
        # CRF decoding: the compiled kernels when they were built (slotfill.fastdecode), else NumPy.
        self.decoder = "c" if self._tables is not None and fastdecode.available() else "numpy"
        self._kernels = fastdecode.KernelTables.build(self._tables) if self.decoder == "c" else None
        self._lock = threading.Lock()
        calibration = getattr(loaded, "calibration", None) or {}
        self.set_temperatures(calibration.get("slot_temperature", 1.0), calibration.get("intent_temperature", 1.0))

    def set_temperatures(self, slot: float = 1.0, intent: float = 1.0) -> None:
        """Temperature scaling of the confidences (see :mod:`slotfill.calibration`): slot scores and
        intent logits are divided by these before probabilities are taken. Labels never change:
        dividing every score by the same positive number keeps the best path and the argmax."""
        self.slot_temperature = float(slot)
        self.intent_temperature = float(intent)
        self._confidence_tables = (self._tables if self._tables is None or self.slot_temperature == 1.0
                                   else self._tables.scaled(1.0 / self.slot_temperature))
        self._confidence_kernels = (None if self._kernels is None else self._kernels if self.slot_temperature == 1.0
                                    else fastdecode.KernelTables.build(self._confidence_tables))

    @classmethod
    def load(cls, model_dir: str | Path, backend: str = "auto", threads: int = 1) -> "Predictor":
        """Verify and load an artifact. ``backend``: ``auto`` (onnx when the artifact has a graph and
        onnxruntime is installed, else torch), ``torch``, ``onnx`` or ``onnx-int8``; ``threads``: onnxruntime
        intra-op threads (torch keeps its process-wide setting)."""
        artifact = read_artifact(model_dir)
        resolved = resolve_backend(artifact, backend)
        if resolved != "torch":
            return cls(artifact, model_dir, OnnxEngine(artifact, threads=threads, name=resolved))
        return cls(load_model(model_dir), model_dir)

    @property
    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "created": self.created, "labels": self.labels,
                "intents": self.intents, "backend": self.backend, "decoder": self.decoder,
                "config": self.config.to_dict(), "tokenizer": self.tokenizer_config.to_dict(),
                "metrics": self.metrics, "digest": self.digest, "quantization": self.quantization}

    def tokenize(self, text: str) -> list[Token]:
        return tokenize(text, self.tokenizer_config)

    def warmup(self) -> None:
        self.predict_texts(["warm up the model", "a"])

    # ------------------------------------------------------------------ public API
    def predict_texts(self, texts: Sequence[str]) -> list[Prediction]:
        """Tokenise each raw text as in training; offsets refer to that text."""
        token_lists = [self.tokenize(text) for text in texts]
        return self._predict(list(texts), token_lists)

    def predict_tokens(self, token_lists: Sequence[Sequence[str]]) -> list[Prediction]:
        """Pre-tokenised input; offsets refer to the tokens joined by single spaces."""
        rows = [self._pretokenized(tokens) for tokens in token_lists]
        return self._predict([text for text, _ in rows], [row for _, row in rows])

    def predict_mixed(self, items: Sequence[str | Sequence[str]]) -> list[Prediction]:
        """Raw texts (``str``) and pre-split token lists in one padded forward pass, answers in order;
        each answer equals what ``predict_texts`` / ``predict_tokens`` gives for that item."""
        texts, tokenised = [], []
        for item in items:
            text, row = (item, self.tokenize(item)) if isinstance(item, str) else self._pretokenized(item)
            texts.append(text)
            tokenised.append(row)
        return self._predict(texts, tokenised)

    def _pretokenized(self, tokens: Sequence[str]) -> tuple[str, list[Token]]:
        offset, row = 0, []
        for token in tokens:
            row.append(Token(text=token, norm=normalize_token(token, self.tokenizer_config), start=offset,
                             end=offset + len(token)))
            offset += len(token) + 1
        return " ".join(tokens), row

    # ------------------------------------------------------------------ internals
    def _predict(self, texts: list[str], token_lists: list[list[Token]]) -> list[Prediction]:
        results: list[Prediction | None] = [None] * len(texts)
        nonempty = [i for i, tokens in enumerate(token_lists) if tokens]
        for i, tokens in enumerate(token_lists):
            if not tokens:  # nothing to tag (e.g. only punctuation): no slots, no intent evidence
                results[i] = Prediction(text=texts[i], tokens=(), slots=(), intent=None)
        if nonempty:
            norms = [[token.norm or token.text for token in token_lists[i]] for i in nonempty]
            label_ids, token_conf, span_conf, intent_probs = self.decode_norms(norms)
            decoded = [self._labels_and_spans(label_ids[row, : len(norms[row])].tolist()) for row in range(len(norms))]
            # The confidences of every span of the batch in one call, rounded like the token confidences.
            rows = [row for row, (_, found) in enumerate(decoded) for _ in found]
            span_probs = (np.round(span_conf.many(rows, [s for _, found in decoded for _, s, _ in found],
                                                  [e for _, found in decoded for _, _, e in found]), 6).tolist()
                          if rows else [])
            token_probs = np.round(np.asarray(token_conf, dtype=np.float64), 6).tolist()  # float32 rounds to 0.99987102
            used = 0
            for row, i in enumerate(nonempty):
                labels, found = decoded[row]
                results[i] = self._assemble(texts[i], token_lists[i], labels, found, token_probs[row],
                                            span_probs[used: used + len(found)],
                                            None if intent_probs is None else intent_probs[row])
                used += len(found)
        return results  # type: ignore[return-value]

    def predict_labels(self, norms: list[list[str]], batch_size: int = 256) -> tuple[list[list[str]], list[str | None]]:
        """Labels and intents for normalised token lists, without confidences (for evaluation)."""
        labels: list[list[str]] = []
        intents: list[str | None] = []
        for start in range(0, len(norms), batch_size):
            chunk = norms[start:start + batch_size]
            paths, _, _, intent_probs = self.decode_norms(chunk, confidences=False)
            for row, tokens in enumerate(chunk):
                labels.append([self.labels[int(i)] for i in paths[row, : len(tokens)]])
                intents.append(self.intents[int(intent_probs[row].argmax())] if intent_probs is not None and self.intents
                               else None)
        return labels, intents

    def decode_norms(self, norms: list[list[str]], confidences: bool = True):
        """Run the network on normalised tokens.

        Returns label ids (B, T), token confidences (B, T) or None, the spans' :class:`SpanConfidence`
        (called as (row, start, end) -> confidence, or ``many`` for arrays) or None, and intent
        probabilities (B, I) or None.
        """
        emissions, intent_logits, lens = self.run_network(norms)
        return self.decode_scores(emissions, lens, intent_logits, confidences)

    # onnxruntime's LSTM runs every row of a batch to the batch's longest length (torch's packed
    # sequences stop each row at its own), so large batches go in chunks of similar lengths.
    CHUNK = 16

    def run_network(self, norms: list[list[str]]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Emissions (B, T, K), intent logits (B, I) or None, and lengths (B,) for normalised tokens."""
        run_tokens = getattr(self.engine, "run_tokens", None)  # the onnx engines: cached character features
        if run_tokens is None or len(norms) <= self.CHUNK:
            if run_tokens is not None:
                return run_tokens(norms)
            word_ids, char_ids, lens = self.featurizer.arrays(norms)
            subwords = self.aligner.encode(norms) if self.aligner is not None else None
            emissions, intent_logits = self.engine.run(word_ids, char_ids, lens, subwords=subwords)
            return emissions, intent_logits, lens
        lens = np.fromiter((len(tokens) for tokens in norms), dtype=np.int64, count=len(norms))
        order = np.argsort(lens, kind="stable")
        emissions = intent_logits = None
        for start in range(0, len(norms), self.CHUNK):
            rows = order[start:start + self.CHUNK]
            chunk_em, chunk_intents, _ = run_tokens([norms[i] for i in rows])
            if emissions is None:
                emissions = np.zeros((len(norms), int(lens.max()), chunk_em.shape[2]), dtype=chunk_em.dtype)
                if chunk_intents is not None:
                    intent_logits = np.empty((len(norms), chunk_intents.shape[1]), dtype=chunk_intents.dtype)
            emissions[rows, : chunk_em.shape[1]] = chunk_em
            if intent_logits is not None:
                intent_logits[rows] = chunk_intents
        return emissions, intent_logits, lens

    def decode_scores(self, emissions: np.ndarray, lens: np.ndarray, intent_logits: np.ndarray | None,
                      confidences: bool = True, temperatures: tuple[float, float] | None = None):
        """:meth:`decode_norms` from the network's outputs: emissions (B, T, K), lengths (B,), intent
        logits (B, I) or None. ``temperatures`` (slot, intent) overrides the predictor's own."""
        slot_t, intent_t = temperatures or (self.slot_temperature, self.intent_temperature)
        intent_probs = None
        if intent_logits is not None:
            intent_probs = softmax(intent_logits / intent_t if intent_t != 1.0 else intent_logits)
        if self._tables is None:
            paths = emissions.argmax(axis=2)
        elif self._kernels is not None:
            paths = fastdecode.viterbi(emissions, lens, self._kernels)
        else:
            paths = viterbi(emissions, lens, self._tables)
        if not confidences:
            return paths, None, None, intent_probs
        scaled = emissions / np.asarray(slot_t, dtype=emissions.dtype) if slot_t != 1.0 else emissions
        if self._tables is not None:
            if temperatures is None:
                tables, kernels = self._confidence_tables, self._confidence_kernels
            else:
                tables = self._tables if slot_t == 1.0 else self._tables.scaled(1.0 / slot_t)
                kernels = (None if self._kernels is None else self._kernels if slot_t == 1.0
                           else fastdecode.KernelTables.build(tables))
            if kernels is not None:
                posteriors = fastdecode.path_posteriors(scaled, lens, kernels, paths)
                token_conf = posteriors.confidence
                span_conf = SpanConfidence(paths, token_conf, posteriors=posteriors)
            else:
                fb = forward_backward(scaled, lens, tables)
                token_conf = _pick(fb.marginals, paths)
                span_conf = SpanConfidence(paths, token_conf, fb, scaled, tables)
        else:  # softmax decoding: the argmax of the scaled probabilities is the argmax of the emissions
            probs = softmax(scaled)
            token_conf = _pick(probs, paths)
            span_conf = SpanConfidence(paths, token_conf)
        return paths, token_conf, span_conf, intent_probs

    def _labels_and_spans(self, ids: list[int]) -> tuple[list[str], list[tuple[str, int, int]]]:
        """Label strings and (slot, start, end) spans for one decoded sequence.

        Softmax decoding can emit an I- without its B-; it is read as the start of a span, as
        conlleval does, rather than dropped, and reported as B-. IOB2 (the default) takes a
        precomputed fast path; other schemes go through :mod:`slotfill.schemes`.
        """
        if self.config.scheme != "IOB2":
            valid = repair([self.labels[i] for i in ids], self.config.scheme)
            return valid, spans(valid, self.config.scheme)
        labels, found = [], []
        current, start = None, 0
        for position, label_id in enumerate(ids):
            prefix, slot = self._label_parts[label_id]
            if prefix == "I" and slot == current:
                labels.append(self.labels[label_id])
                continue
            if current is not None:
                found.append((current, start, position))
                current = None
            if prefix == "O":
                labels.append("O")
            else:
                current, start = slot, position
                labels.append(self.labels[label_id] if prefix == "B" else self._begin_label[slot])
        if current is not None:
            found.append((current, start, len(ids)))
        return labels, found

    def _assemble(self, text: str, tokens: list[Token], labels: list[str], label_spans: list[tuple[str, int, int]],
                  token_conf: list[float], span_conf: list[float], intent_probs: np.ndarray | None) -> Prediction:
        """One utterance's answer; ``token_conf`` (at least one per token) and ``span_conf`` (one per span)
        are already rounded to 6 digits."""
        token_predictions = tuple(
            TokenPrediction(text=token.text, start=token.start, end=token.end, label=label, confidence=conf)
            for token, label, conf in zip(tokens, labels, token_conf)
        )
        slots = []
        for (slot, start, end), conf in zip(label_spans, span_conf):
            char_start, char_end = tokens[start].start, tokens[end - 1].end
            slots.append(SlotPrediction(slot=slot, value=text[char_start:char_end], start=char_start, end=char_end,
                                        confidence=conf))
        intent = None
        if intent_probs is not None and self.intents:
            best = int(intent_probs.argmax())
            intent = IntentPrediction(name=self.intents[best], confidence=round(float(intent_probs[best]), 6))
        return Prediction(text=text, tokens=token_predictions, slots=tuple(slots), intent=intent)
