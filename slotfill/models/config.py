"""The one configuration object a tagger is built from."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from slotfill.errors import ConfigError
from slotfill.schemes import SCHEMES, tag_problem

CELLS = ("rnn", "lstm", "gru")
DECODERS = ("softmax", "crf")
INTENT_POOLINGS = ("max", "mean")

# Upper bounds checked before anything is allocated, so a hostile or corrupt
# config.json cannot make the loader allocate gigabytes.
LIMITS = {
    "vocab_size": 5_000_000,
    "num_chars": 200_000,
    "num_labels": 10_000,
    "num_intents": 10_000,
    "word_dim": 4096,
    "char_dim": 1024,
    "char_channels": 4096,
    "char_kernel": 15,
    "max_word_chars": 256,
    "hidden_size": 8192,
    "num_layers": 16,
    "contextual_dim": 8192,
    "contextual_window": 8192,
}
CONTEXTUAL_LAYERS = ("last", "mix")
CONTEXTUAL_POOLINGS = ("first", "mean")

# Fields the model takes from the training data (its vocabularies, labels and pretrained encoder) when
# it is built; every other field is an architecture setting. A config.json must give the first three.
DATA_FIELDS = ("vocab_size", "num_chars", "id2label", "id2intent", "contextual_dim", "contextual_name",
               "contextual_model", "contextual_tokens")
REQUIRED_FIELDS = ("vocab_size", "num_chars", "id2label")


@dataclass
class TaggerConfig:
    """Architecture of a slot tagger (everything needed to rebuild it, nothing about training).

    The fields in :data:`DATA_FIELDS` come from the training data: with their defaults the config
    holds the architecture alone (as in a training configuration), and the complete config of a model
    is made from it with ``dataclasses.replace`` once the vocabularies and labels are known.
    :meth:`validate` checks a complete config (:class:`SlotTagger` and :meth:`from_dict` call it),
    :meth:`validate_architecture` the architecture settings alone.

    ``id2label`` / ``id2intent`` map output ids to names; JSON turns their keys into
    strings, so :meth:`from_dict` converts them back to ``int``.
    """

    vocab_size: int = 0
    num_chars: int = 0
    id2label: dict[int, str] = field(default_factory=dict)
    id2intent: dict[int, str] = field(default_factory=dict)
    word_dim: int = 100
    char_dim: int = 32
    char_channels: int = 64
    char_kernel: int = 3
    max_word_chars: int = 24
    cell: str = "lstm"
    hidden_size: int = 200
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.5
    decoder: str = "crf"
    scheme: str = "IOB2"
    intent_pooling: str = "max"
    # Contextual front-end (a pretrained transformer, see models/contextual.py); off when contextual_dim is 0.
    # contextual_model is the encoder's Hugging Face config; its weights are in model.safetensors.
    contextual_dim: int = 0
    contextual_name: str = ""
    contextual_model: dict = field(default_factory=dict)
    contextual_layers: str = "mix"
    contextual_pooling: str = "first"
    contextual_window: int = 128
    contextual_tokens: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def num_intents(self) -> int:
        return len(self.id2intent)

    def __post_init__(self) -> None:
        self.id2label = {int(k): v for k, v in self.id2label.items()}
        self.id2intent = {int(k): v for k, v in self.id2intent.items()}

    def architecture(self) -> dict[str, Any]:
        """The architecture settings (every field but :data:`DATA_FIELDS`), by name."""
        return {name: copy.deepcopy(getattr(self, name)) for name in ARCHITECTURE_FIELDS}

    def validate_architecture(self, *, contextual: bool = False) -> None:
        """Check the architecture settings alone (no vocabulary or labels needed).

        ``contextual``: a transformer front-end feeds the words, so they and the recurrent layer
        may go (a pure token classifier): ``word_dim`` and ``num_layers`` may then be 0.
        """
        optional = ("word_dim", "num_layers") if contextual else ()
        for key in ("word_dim", "hidden_size", "num_layers", "max_word_chars"):
            _check_int(key, getattr(self, key), 0 if key in optional else 1)
        for key in ("char_dim", "char_channels", "char_kernel"):
            _check_int(key, getattr(self, key), 0)
        _check_int("contextual_window", self.contextual_window, 4)
        for key in ("word_dim", "char_dim", "char_channels", "char_kernel", "max_word_chars", "hidden_size",
                    "num_layers", "contextual_window"):
            _check_limit(key, getattr(self, key))
        if self.char_kernel % 2 == 0 and self.char_channels > 0 and self.char_dim > 0:
            _fail("char_kernel", f"must be odd (a window centred on each character), got {self.char_kernel}")
        for key, allowed in (("cell", CELLS), ("decoder", DECODERS), ("scheme", SCHEMES),
                             ("intent_pooling", INTENT_POOLINGS), ("contextual_layers", CONTEXTUAL_LAYERS),
                             ("contextual_pooling", CONTEXTUAL_POOLINGS)):
            if getattr(self, key) not in allowed:
                _fail(key, f"must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            _fail("dropout", f"must be in [0, 1), got {self.dropout!r}")

    def validate(self) -> None:
        """Check a complete config: the architecture, and the vocabulary, labels and encoder of the data."""
        for key in ("vocab_size", "num_chars"):
            _check_int(key, getattr(self, key), 1)
        _check_int("contextual_dim", self.contextual_dim, 0)
        self.validate_architecture(contextual=self.contextual_dim > 0)
        for key, value in (("vocab_size", self.vocab_size), ("num_chars", self.num_chars),
                           ("num_labels", self.num_labels), ("num_intents", self.num_intents),
                           ("contextual_dim", self.contextual_dim)):
            _check_limit(key, value)
        if self.num_labels < 1:
            _fail("id2label", "needs at least one label")
        for label in self.id2label.values():
            problem = tag_problem(label, self.scheme) if isinstance(label, str) else "not a string"
            if problem is not None:
                _fail("id2label", f"label {label!r} does not fit the {self.scheme} scheme: {problem}")
        if self.contextual_dim:
            self._validate_contextual()
        for mapping_name in ("id2label", "id2intent"):
            mapping = getattr(self, mapping_name)
            if sorted(mapping) != list(range(len(mapping))):
                _fail(mapping_name, "ids must be 0..n-1")
            if len(set(mapping.values())) != len(mapping):
                _fail(mapping_name, "names must be unique")

    def _validate_contextual(self) -> None:
        from slotfill.text.subwords import TOKEN_KEYS

        model = self.contextual_model
        if not isinstance(model, dict) or not isinstance(model.get("model_type"), str):
            _fail("contextual_model", "must be the encoder's Hugging Face config (with a model_type)")
        if model.get("hidden_size") != self.contextual_dim:
            _fail("contextual_dim", f"{self.contextual_dim} is not the encoder's hidden_size {model.get('hidden_size')!r}")
        limit = model.get("max_position_embeddings")
        if isinstance(limit, int) and self.contextual_window > limit:
            _fail("contextual_window", f"must be an integer from 4 to the encoder's limit {limit}, "
                                       f"got {self.contextual_window!r}")
        tokens = self.contextual_tokens
        if (not isinstance(tokens, dict) or any(key not in tokens for key in TOKEN_KEYS)
                or not all(isinstance(i, int) for key in ("prefix", "suffix") for i in tokens[key])
                or not all(isinstance(tokens[key], int) for key in ("pad", "unk"))):
            _fail("contextual_tokens", f"must give {', '.join(TOKEN_KEYS)} token ids")

    @property
    def input_size(self) -> int:
        """Feature size of a word going into the recurrent layer: words + transformer + characters."""
        return self.word_dim + self.contextual_dim + (self.char_channels if self.uses_char_cnn else 0)

    @property
    def uses_char_cnn(self) -> bool:
        return self.char_dim > 0 and self.char_channels > 0

    @property
    def encoder_output_size(self) -> int:
        if self.num_layers == 0:  # no recurrent layer: the heads read the input features directly
            return self.input_size
        return self.hidden_size * (2 if self.bidirectional else 1)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every tensor in the tagger's ``state_dict``, computed without torch.

        Lets the torch-free loader check a weights file against the config before reading it
        (a test checks this against ``SlotTagger(config).state_dict()``).
        """
        if self.contextual_dim:
            raise ConfigError("model config: the shapes of a transformer front-end come from transformers, not "
                              "from the config alone")
        shapes: dict[str, tuple[int, ...]] = {"word_embedding.weight": (self.vocab_size, self.word_dim)}
        input_size = self.word_dim + self.contextual_dim
        if self.uses_char_cnn:
            shapes["char_cnn.embedding.weight"] = (self.num_chars, self.char_dim)
            shapes["char_cnn.conv.weight"] = (self.char_channels, self.char_dim, self.char_kernel)
            shapes["char_cnn.conv.bias"] = (self.char_channels,)
            input_size += self.char_channels
        gates = {"rnn": 1, "lstm": 4, "gru": 3}[self.cell] * self.hidden_size
        for layer in range(self.num_layers):
            layer_input = input_size if layer == 0 else self.encoder_output_size
            for suffix in ("", "_reverse") if self.bidirectional else ("",):
                prefix = "encoder.rnn."
                shapes[f"{prefix}weight_ih_l{layer}{suffix}"] = (gates, layer_input)
                shapes[f"{prefix}weight_hh_l{layer}{suffix}"] = (gates, self.hidden_size)
                shapes[f"{prefix}bias_ih_l{layer}{suffix}"] = (gates,)
                shapes[f"{prefix}bias_hh_l{layer}{suffix}"] = (gates,)
        shapes["emissions.weight"] = (self.num_labels, self.encoder_output_size)
        shapes["emissions.bias"] = (self.num_labels,)
        if self.num_intents:
            shapes["intent_head.weight"] = (self.num_intents, self.encoder_output_size)
            shapes["intent_head.bias"] = (self.num_intents,)
        if self.decoder == "crf":
            k = self.num_labels
            shapes.update({"crf.transitions": (k, k), "crf.start_transitions": (k,), "crf.end_transitions": (k,)})
        return shapes

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        data["id2intent"] = {str(k): v for k, v in self.id2intent.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaggerConfig":
        if not isinstance(data, dict):
            raise ConfigError("model config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"model config: unknown key(s): {', '.join(unknown)}")
        missing = sorted(name for name in REQUIRED_FIELDS if name not in data)
        if missing:
            raise ConfigError(f"model config: missing key(s): {', '.join(missing)}")
        for key in ("id2label", "id2intent"):
            value = data.get(key, {})
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ConfigError(f"model config: {key}: must map ids to label names")
            try:
                [int(k) for k in value]
            except ValueError:
                raise ConfigError(f"model config: {key}: keys must be integers") from None
        try:
            config = cls(**data)
        except TypeError as exc:
            raise ConfigError(f"model config: {exc}") from None
        config.validate()
        return config


ARCHITECTURE_FIELDS = tuple(f.name for f in dataclasses.fields(TaggerConfig) if f.name not in DATA_FIELDS)


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"model config: {key}: {message}")


def _check_int(key: str, value: Any, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(least, f"an integer >= {least}")
        _fail(key, f"must be {what}, got {value!r}")


def _check_limit(key: str, value: int) -> None:
    if value > LIMITS[key]:
        _fail(key, f"{value} exceeds the limit {LIMITS[key]}")
