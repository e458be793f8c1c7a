"""Inference: raw text or tokens in, labels, slot spans with offsets, confidences and intent out."""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slotfill.artifact.artifact import Artifact, LoadedModel
from slotfill.decoding.decoders import SoftmaxDecoder, make_decoder
from slotfill.decoding.reference import softmax
from slotfill.inference.engines import Engine, OnnxEngine, TorchEngine, resolve_backend
from slotfill.inference.predictions import (
    Alternative,
    IntentPrediction,
    Prediction,
    RankedIntent,
    RankedLabel,
    SlotPrediction,
    TokenPrediction,
)
from slotfill.schemes import Span, SpanReader
from slotfill.text.tokenizer import Token, normalize_token, tokenize


@dataclass
class Decoded:
    """A decoded batch: label ids ``paths`` (B, T); per row its labels (in the model's scheme) and spans
    (slot, start, end) in token positions; with confidences, ``token_confidence`` (B, T) float64 and each
    row's span confidences; intent probabilities (B, I) or None. ``dropped``: after a confidence floor dropped
    spans (:meth:`Predictor._apply_floors`), per row None or each token's label before the floor where it was
    dropped (None elsewhere)."""

    paths: np.ndarray
    labels: list[list[str]]
    spans: list[list[Span]]
    token_confidence: np.ndarray | None
    span_confidence: list[list[float]] | None
    intent_probs: np.ndarray | None
    dropped: list[list[str | None] | None] | None = None


class Predictor:
    """A loaded artifact ready to tag. Methods never mutate their inputs and are safe to call from threads.

    ``engine`` runs the network (see :mod:`slotfill.inference.engines`); without one, ``loaded`` must be a
    :class:`LoadedModel` and its torch module is used.
    """

    def __init__(self, loaded: Artifact, model_dir: str | Path | None = None, engine: Engine | None = None):
        if engine is None:
            if not isinstance(loaded, LoadedModel):
                raise TypeError("Predictor needs an engine or a LoadedModel")
            engine = TorchEngine(loaded.model, loaded.featurizer, loaded.aligner)
        self.loaded = loaded
        self.engine = engine
        self.backend = engine.name
        self.config = loaded.config
        self.featurizer = loaded.featurizer
        self.tokenizer_config = loaded.tokenizer
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.labels = [self.config.id2label[i] for i in range(self.config.num_labels)]
        self._reader = SpanReader(self.config.scheme, self.labels)
        self.intents = [self.config.id2intent[i] for i in range(self.config.num_intents)] or None
        self.card = loaded.card
        self.name = str(loaded.card.get("name", "slotfill"))
        self.version = str(loaded.card.get("version", "0"))
        self.created = str(loaded.card.get("created", ""))
        self.metrics = loaded.report or {}
        self.digest = loaded.digest
        # What serving the int8 graph costs in agreement with the float one; None for other backends.
        self.quantization = loaded.quantization if self.backend == "onnx-int8" else None
        self._decoder = make_decoder(engine.crf_tables())
        self.decoder = self._decoder.name  # "c" (compiled kernels) or "numpy"
        # What ``alternatives`` answers: label sequences (a CRF) or each token's top labels (softmax).
        self.sequence_alternatives = not isinstance(self._decoder, SoftmaxDecoder)
        calibration = loaded.calibration or {}
        self.set_temperatures(calibration.get("slot_temperature", 1.0), calibration.get("intent_temperature", 1.0))

    def set_temperatures(self, slot: float = 1.0, intent: float = 1.0) -> None:
        """Temperature scaling of the confidences (see :mod:`slotfill.scoring.calibration`): slot scores and
        intent logits are divided by these before probabilities are taken. Labels never change:
        dividing every score by the same positive number keeps the best path and the argmax."""
        self.slot_temperature = float(slot)
        self.intent_temperature = float(intent)
        self._scorer = self._decoder.with_temperature(self.slot_temperature)

    @classmethod
    def load(cls, model_dir: str | Path, backend: str = "auto", threads: int = 1) -> "Predictor":
        """Verify and load an artifact. ``backend``: ``auto`` (onnx when the artifact has a graph and
        onnxruntime is installed, else torch), ``torch``, ``onnx`` or ``onnx-int8``; ``threads``: onnxruntime
        intra-op threads (torch keeps its process-wide setting)."""
        artifact = Artifact.from_pretrained(model_dir)
        resolved = resolve_backend(artifact, backend)
        if resolved != "torch":
            return cls(artifact, model_dir, OnnxEngine(artifact, threads=threads, name=resolved))
        return cls(LoadedModel.from_pretrained(model_dir), model_dir)

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
    # ``intent_top_k`` (every predict call): 0 (the default) answers the top intent only; k from 1 to the
    # number of intents adds ``intent.ranking``, the k most confident intents with their confidences from
    # the same calibrated softmax as the top one's. A model without intents answers ``intent`` None whatever k.
    # ``min_span_confidence`` (every predict call): None (the default) changes nothing; a float in [0, 1] drops
    # every span whose confidence (as answered, rounded to 6 digits) is below it: it leaves ``slots``, and its
    # tokens are labelled ``O``, each with the model's probability of ``O`` there as its confidence (so the
    # labels stay a valid sequence of the scheme, and spans and labels agree), and each of them keeps the label
    # it lost as ``dropped_label``. A sequence gives each input its own floor (None: none), as the service does
    # for a batch of requests.
    # ``alternatives`` (every predict call): 0 (the default) adds nothing. With k >= 1 a model with a CRF adds
    # ``alternatives``, the k most probable label sequences under the CRF by k-best Viterbi (fewer where the
    # scheme allows fewer), most probable first, each with its slots and probability (calibrated: the slot
    # temperature); the first is the answer's own labels as decoded (before any floor). A model without a CRF
    # tags each token on its own: it gives each token its ``top_labels`` instead, the min(k, number of labels)
    # most probable, most probable first (the first is the model's choice, with the token's confidence).
    def predict_texts(self, texts: Sequence[str], *, intent_top_k: int = 0,
                      min_span_confidence: float | Sequence[float | None] | None = None,
                      alternatives: int = 0) -> list[Prediction]:
        """Tokenise each raw text as in training; offsets refer to that text."""
        self.check_intent_top_k(intent_top_k)
        self.check_alternatives(alternatives)
        floors = self.check_min_span_confidence(min_span_confidence, len(texts))
        token_lists = [self.tokenize(text) for text in texts]
        return self._predict(list(texts), token_lists, intent_top_k, floors, alternatives)

    def predict_tokens(self, token_lists: Sequence[Sequence[str]], *, intent_top_k: int = 0,
                       min_span_confidence: float | Sequence[float | None] | None = None,
                       alternatives: int = 0) -> list[Prediction]:
        """Pre-tokenised input; offsets refer to the tokens joined by single spaces."""
        self.check_intent_top_k(intent_top_k)
        self.check_alternatives(alternatives)
        floors = self.check_min_span_confidence(min_span_confidence, len(token_lists))
        rows = [self._pretokenized(tokens) for tokens in token_lists]
        return self._predict([text for text, _ in rows], [row for _, row in rows], intent_top_k, floors, alternatives)

    def predict_mixed(self, items: Sequence[str | Sequence[str]], *, intent_top_k: int = 0,
                      min_span_confidence: float | Sequence[float | None] | None = None,
                      alternatives: int = 0) -> list[Prediction]:
        """Raw texts (``str``) and pre-split token lists in one padded forward pass, answers in order;
        each answer equals what ``predict_texts`` / ``predict_tokens`` gives for that item."""
        self.check_intent_top_k(intent_top_k)
        self.check_alternatives(alternatives)
        floors = self.check_min_span_confidence(min_span_confidence, len(items))
        texts, tokenised = [], []
        for item in items:
            text, row = (item, self.tokenize(item)) if isinstance(item, str) else self._pretokenized(item)
            texts.append(text)
            tokenised.append(row)
        return self._predict(texts, tokenised, intent_top_k, floors, alternatives)

    @staticmethod
    def check_alternatives(k: object) -> int:
        """``k`` as given, or ValueError: an int >= 1, or 0 for no alternatives."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"alternatives must be an integer, not {type(k).__name__}")
        if k < 0:
            raise ValueError(f"alternatives must be at least 1, or 0 for none; got {k}")
        return int(k)

    @staticmethod
    def check_min_span_confidence(floor: object, count: int) -> list[float | None] | None:
        """One floor per input (None: no floor), or None when no input has one; ValueError unless ``floor`` is
        None, a real number from 0 to 1 (not NaN, not a bool), or a sequence of ``count`` such values or None."""
        if floor is None:
            return None
        values = list(floor) if isinstance(floor, (list, tuple)) else [floor] * count
        if len(values) != count:
            raise ValueError(f"min_span_confidence has {len(values)} values for {count} inputs")
        for value in values:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"min_span_confidence must be a number from 0 to 1, not {type(value).__name__}")
            if not 0.0 <= float(value) <= 1.0:  # NaN fails too
                raise ValueError(f"min_span_confidence must be from 0 to 1; got {value}")
        floors = [None if value is None else float(value) for value in values]
        return floors if any(value is not None for value in floors) else None

    def check_intent_top_k(self, k: object) -> int:
        """``k`` as given, or ValueError: an int from 1 to the number of intents, or 0 for no ranking. Any k
        passes for a model without intents (it answers no intent to rank)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"intent_top_k must be an integer, not {type(k).__name__}")
        count = len(self.intents or ())
        if k < 0 or (count and k > count):
            raise ValueError(f"intent_top_k must be from 1 to the number of intents ({count}), or 0 for no "
                             f"ranking; got {k}")
        return int(k)

    def _pretokenized(self, tokens: Sequence[str]) -> tuple[str, list[Token]]:
        offset, row = 0, []
        for token in tokens:
            row.append(Token(text=token, norm=normalize_token(token, self.tokenizer_config), start=offset,
                             end=offset + len(token)))
            offset += len(token) + 1
        return " ".join(tokens), row

    # ------------------------------------------------------------------ internals
    def _predict(self, texts: list[str], token_lists: list[list[Token]], intent_top_k: int = 0,
                 floors: list[float | None] | None = None, alternatives: int = 0) -> list[Prediction]:
        results: list[Prediction | None] = [None] * len(texts)
        nonempty = [i for i, tokens in enumerate(token_lists) if tokens]
        sequences = alternatives if self.sequence_alternatives else 0
        per_token = 0 if self.sequence_alternatives else alternatives
        for i, tokens in enumerate(token_lists):
            if not tokens:  # nothing to tag (e.g. only punctuation): no slots, no intent evidence
                # The one (empty) label sequence, certain, when a CRF model is asked for alternatives.
                results[i] = Prediction(text=texts[i], tokens=(), slots=(), intent=None,
                                        alternatives=(Alternative((), (), 1.0),) if sequences else None)
        if nonempty:
            norms = [[token.norm or token.text for token in token_lists[i]] for i in nonempty]
            outputs = self.run_network(norms)
            decoded = self.decode(*outputs)
            found = self._alternatives(decoded, outputs[0], outputs[2], sequences) if sequences else None
            top_labels = self._top_labels(outputs[0], outputs[2], per_token) if per_token else None
            if floors is not None:
                self._apply_floors(decoded, outputs[0], outputs[2], [floors[i] for i in nonempty])
            # Rounded to 6 digits through float64: float32 would print 0.99987102 for 0.999871.
            token_probs = np.round(decoded.token_confidence, 6).tolist()
            dropped = decoded.dropped
            for row, i in enumerate(nonempty):
                results[i] = self._assemble(texts[i], token_lists[i], decoded.labels[row], decoded.spans[row],
                                            token_probs[row], decoded.span_confidence[row],
                                            None if decoded.intent_probs is None else decoded.intent_probs[row],
                                            intent_top_k, None if dropped is None else dropped[row],
                                            None if top_labels is None else top_labels[row])
                if found is not None:
                    results[i] = dataclasses.replace(results[i], alternatives=self._assemble_alternatives(
                        texts[i], token_lists[i], found[row]))
        return results  # type: ignore[return-value]

    def predict_labels(self, norms: list[list[str]], batch_size: int = 256) -> tuple[list[list[str]], list[str | None]]:
        """The decoded labels as they are, valid in the scheme or not, and intents, for normalised token
        lists, without confidences (for evaluation: a strict score judges an invalid sequence as such)."""
        labels: list[list[str]] = []
        intents: list[str | None] = []
        for start in range(0, len(norms), batch_size):
            chunk = norms[start:start + batch_size]
            emissions, intent_logits, lengths = self.run_network(chunk)
            paths = self._decoder.best_paths(emissions, lengths)
            for row, n in enumerate(lengths.tolist()):
                labels.append([self.labels[i] for i in paths[row, :n].tolist()])
                intents.append(self.intents[int(intent_logits[row].argmax())] if intent_logits is not None
                               and self.intents else None)
        return labels, intents

    def run_network(self, norms: list[list[str]]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Emissions (B, T, K), intent logits (B, I) or None, and lengths (B,) for normalised tokens."""
        return self.engine.run_tokens(norms)

    def decode(self, emissions: np.ndarray, intent_logits: np.ndarray | None, lengths: np.ndarray, *,
               confidences: bool = True, temperatures: tuple[float, float] | None = None) -> Decoded:
        """Decode the network's outputs (:meth:`run_network`'s, in its order). ``temperatures`` (slot,
        intent) replaces the predictor's own for the confidences."""
        slot_t, intent_t = temperatures or (self.slot_temperature, self.intent_temperature)
        paths = self._decoder.best_paths(emissions, lengths)
        read = self._reader.read
        labels, spans = [], []
        for ids, n in zip(paths.tolist(), lengths.tolist()):
            row_labels, row_spans = read(ids[:n])
            labels.append(row_labels)
            spans.append(row_spans)
        intent_probs = None
        if intent_logits is not None:
            intent_probs = softmax(intent_logits / intent_t if intent_t != 1.0 else intent_logits)
        if not confidences:
            return Decoded(paths, labels, spans, None, None, intent_probs)
        scorer = self._scorer if temperatures is None or slot_t == self.slot_temperature \
            else self._decoder.with_temperature(slot_t)
        rows = [row for row, found in enumerate(spans) for _ in found]
        starts = [start for found in spans for _, start, _ in found]
        ends = [end for found in spans for _, _, end in found]
        posteriors = scorer.posteriors(emissions, lengths, paths, rows, starts, ends)
        span_probs = np.round(posteriors.spans, 6).tolist()
        span_confidence, used = [], 0
        for found in spans:
            span_confidence.append(span_probs[used: used + len(found)])
            used += len(found)
        return Decoded(paths, labels, spans, posteriors.confidence, span_confidence, intent_probs)

    def _alternatives(self, decoded: Decoded, emissions: np.ndarray, lengths: np.ndarray,
                      k: int) -> list[list[tuple[list[str], list[Span], list[float], float]]]:
        """Each row's k most probable paths as (labels, spans, span confidences, probability), the decoded
        path first, probabilities non-increasing.

        The search runs in float64, the decoder's Viterbi in float32: they choose different first paths only
        where the two score the same to float32 rounding (or exactly the same). Then the decoded path leads
        with the first rank's probability, and the path it displaces takes the decoded path's rank and
        probability (or leaves, when the decoded path was not among the k), so the order holds."""
        paths, log_p = self._scorer.k_best(emissions, lengths, k)
        read = self._reader.read
        found: list[list[tuple[list[int], float]]] = []
        for row, n in enumerate(lengths.tolist()):
            best = decoded.paths[row, :n].tolist()
            row_paths = [(paths[row, r, :n].tolist(), float(np.exp(log_p[row, r])))
                         for r in range(k) if log_p[row, r] > -np.inf]
            ids = [path for path, _ in row_paths]
            if ids[0] != best:
                if best in ids:
                    rank = ids.index(best)
                    row_paths[rank] = (ids[0], row_paths[rank][1])
                row_paths[0] = (best, row_paths[0][1])
            found.append(row_paths)
        # The first is the decoded path: its labels, spans and span confidences are the answer's own (before
        # any floor). The others' span confidences, as spans of their own paths: one posterior call on the
        # rows repeated once per further alternative.
        rows = [row for row, row_paths in enumerate(found) for _ in row_paths[1:]]
        others = [path for row_paths in found for path, _ in row_paths[1:]]
        read_rows, probs = [], []
        if rows:
            stacked = np.zeros((len(rows), emissions.shape[1]), dtype=np.int64)
            span_rows, starts, ends = [], [], []
            for index, path in enumerate(others):
                stacked[index, :len(path)] = path
                labels, spans = read(path)
                read_rows.append((labels, spans))
                for _, start, end in spans:
                    span_rows.append(index)
                    starts.append(start)
                    ends.append(end)
            probs = np.round(self._scorer.posteriors(emissions[rows], lengths[rows], stacked, span_rows, starts,
                                                     ends).spans, 6).tolist()
        out, index, used = [], 0, 0
        for row, row_paths in enumerate(found):
            row_out = [(list(decoded.labels[row]), list(decoded.spans[row]), list(decoded.span_confidence[row]),
                        min(1.0, row_paths[0][1]))]
            for _, probability in row_paths[1:]:
                labels, spans = read_rows[index]
                row_out.append((list(labels), list(spans), probs[used:used + len(spans)], min(1.0, probability)))
                used += len(spans)
                index += 1
            out.append(row_out)
        return out

    def _top_labels(self, emissions: np.ndarray, lengths: np.ndarray,
                    k: int) -> list[list[tuple[RankedLabel, ...]]]:
        """Each row's tokens' k most probable labels (a softmax model), with their calibrated probabilities
        rounded to 6 digits as the token confidences are."""
        ids, probs = self._scorer.top_labels(emissions, k)
        names = self.labels
        probs = np.round(probs, 6).tolist()
        ids = ids.tolist()
        return [[tuple(RankedLabel(names[j], p) for j, p in zip(ids[row][t], probs[row][t])) for t in range(n)]
                for row, n in enumerate(lengths.tolist())]

    def _assemble_alternatives(self, text: str, tokens: list[Token],
                               found: list[tuple[list[str], list[Span], list[float], float]]) -> tuple[Alternative, ...]:
        alternatives = []
        for labels, spans, confidences, probability in found:
            slots = tuple(SlotPrediction(slot=slot, value=text[tokens[start].start:tokens[end - 1].end],
                                         start=tokens[start].start, end=tokens[end - 1].end, confidence=conf)
                          for (slot, start, end), conf in zip(spans, confidences))
            alternatives.append(Alternative(labels=tuple(labels), slots=slots, probability=round(probability, 6)))
        return tuple(alternatives)

    def _apply_floors(self, decoded: Decoded, emissions: np.ndarray, lengths: np.ndarray,
                      floors: list[float | None]) -> None:
        """Drop, in place, each row's spans whose (rounded) confidence is below its floor: out of ``spans`` and
        ``span_confidence``, their tokens labelled ``O`` in ``labels`` and ``paths`` (their labels before kept in
        ``dropped``), and those tokens' confidences become the model's probability of ``O`` there (same
        decoder, same temperature)."""
        if "O" not in self.labels:
            raise ValueError("min_span_confidence needs a model with an O label")
        outside = self.labels.index("O")
        paths = decoded.paths.copy()
        changed = []
        dropped: list[list[str | None] | None] = [None] * len(floors)
        for row, floor in enumerate(floors):
            if floor is None:
                continue
            kept, kept_confidence = [], []
            labels = decoded.labels[row]
            for span, confidence in zip(decoded.spans[row], decoded.span_confidence[row]):
                if confidence >= floor:
                    kept.append(span)
                    kept_confidence.append(confidence)
                    continue
                _, start, end = span
                paths[row, start:end] = outside
                if dropped[row] is None:
                    dropped[row] = [None] * len(labels)
                dropped[row][start:end] = labels[start:end]
                labels = labels[:start] + ["O"] * (end - start) + labels[end:]
            if len(kept) != len(decoded.spans[row]):
                decoded.labels[row], decoded.spans[row], decoded.span_confidence[row] = labels, kept, kept_confidence
                changed.append(row)
        if changed:
            decoded.dropped = dropped
            none = np.zeros(0, dtype=np.int64)
            confidence = self._scorer.posteriors(emissions, lengths, paths, none, none, none).confidence
            decoded.token_confidence[changed] = confidence[changed]
            decoded.paths = paths

    def _assemble(self, text: str, tokens: list[Token], labels: list[str], label_spans: list[Span],
                  token_conf: list[float], span_conf: list[float], intent_probs: np.ndarray | None,
                  intent_top_k: int = 0, dropped: list[str | None] | None = None,
                  top_labels: list[tuple[RankedLabel, ...]] | None = None) -> Prediction:
        """One utterance's answer; ``token_conf`` (at least one per token) and ``span_conf`` (one per span)
        are already rounded to 6 digits. With ``intent_top_k`` the intent carries the k most probable intents
        of the same probabilities (:meth:`decode`'s, calibrated), rounded as the top one is. ``dropped`` and
        ``top_labels`` (one per token, when given) become the tokens' ``dropped_label`` and ``top_labels``."""
        if dropped is None and top_labels is None:
            token_predictions = tuple(
                TokenPrediction(text=token.text, start=token.start, end=token.end, label=label, confidence=conf)
                for token, label, conf in zip(tokens, labels, token_conf)
            )
        else:
            token_predictions = tuple(
                TokenPrediction(text=token.text, start=token.start, end=token.end, label=label, confidence=conf,
                                dropped_label=None if dropped is None else dropped[t],
                                top_labels=None if top_labels is None else top_labels[t])
                for t, (token, label, conf) in enumerate(zip(tokens, labels, token_conf))
            )
        slots = []
        for (slot, start, end), conf in zip(label_spans, span_conf):
            char_start, char_end = tokens[start].start, tokens[end - 1].end
            slots.append(SlotPrediction(slot=slot, value=text[char_start:char_end], start=char_start, end=char_end,
                                        confidence=conf))
        intent = None
        if intent_probs is not None and self.intents:
            best = int(intent_probs.argmax())
            ranking = None
            if intent_top_k:
                # Stable on the negated probabilities: a tie keeps the lower index first, as argmax does,
                # so ranking[0] is always the top intent.
                order = np.argsort(-intent_probs, kind="stable")[:intent_top_k].tolist()
                ranking = tuple(RankedIntent(self.intents[i], round(float(intent_probs[i]), 6)) for i in order)
            intent = IntentPrediction(name=self.intents[best], confidence=round(float(intent_probs[best]), 6),
                                      ranking=ranking)
        return Prediction(text=text, tokens=token_predictions, slots=tuple(slots), intent=intent)
