"""The one configuration object a tagger is built from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

from ..schemes import SCHEMES, tag_problem

CELLS = ("rnn", "lstm", "gru")
DECODERS = ("softmax", "crf")

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


@dataclass
class TaggerConfig:
    """Architecture of a slot tagger (everything needed to rebuild it, nothing about training).

    ``id2label`` / ``id2intent`` map output ids to names; JSON turns their keys into
    strings, so :meth:`from_dict` converts them back to ``int``.
    """

    vocab_size: int
    num_chars: int
    id2label: dict[int, str]
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
        self.validate()

    def validate(self) -> None:
        def fail(key: str, message: str) -> None:
            raise ConfigError(f"model config: {key}: {message}")

        # With a transformer front-end the words and the recurrent layer may go (a pure token classifier).
        optional = ("word_dim", "num_layers") if self.contextual_dim else ()
        for key in ("vocab_size", "num_chars", "word_dim", "hidden_size", "num_layers", "max_word_chars"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key in optional else 1):
                fail(key, f"must be a positive integer, got {value!r}")
        for key in ("char_dim", "char_channels", "char_kernel", "contextual_dim"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                fail(key, f"must be a non-negative integer, got {value!r}")
        sizes = {
            **{k: getattr(self, k) for k in LIMITS if k not in ("num_labels", "num_intents")},
            "num_labels": self.num_labels,
            "num_intents": self.num_intents,
        }
        for key, value in sizes.items():
            if value > LIMITS[key]:
                fail(key, f"{value} exceeds the limit {LIMITS[key]}")
        if self.char_kernel % 2 == 0 and self.char_channels > 0 and self.char_dim > 0:
            fail("char_kernel", f"must be odd (a window centred on each character), got {self.char_kernel}")
        if self.cell not in CELLS:
            fail("cell", f"must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.decoder not in DECODERS:
            fail("decoder", f"must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.scheme not in SCHEMES:
            fail("scheme", f"must be one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        if self.intent_pooling not in ("max", "mean"):
            fail("intent_pooling", f"must be 'max' or 'mean', got {self.intent_pooling!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            fail("dropout", f"must be in [0, 1), got {self.dropout!r}")
        if self.num_labels < 1:
            fail("id2label", "needs at least one label")
        for label in self.id2label.values():
            problem = tag_problem(label, self.scheme) if isinstance(label, str) else "not a string"
            if problem is not None:
                fail("id2label", f"label {label!r} does not fit the {self.scheme} scheme: {problem}")
        if self.contextual_dim:
            self._validate_contextual(fail)
        for mapping_name in ("id2label", "id2intent"):
            mapping = getattr(self, mapping_name)
            if sorted(mapping) != list(range(len(mapping))):
                fail(mapping_name, "ids must be 0..n-1")
            if len(set(mapping.values())) != len(mapping):
                fail(mapping_name, "names must be unique")

    def _validate_contextual(self, fail) -> None:
        from ..subwords import TOKEN_KEYS

        model = self.contextual_model
        if not isinstance(model, dict) or not isinstance(model.get("model_type"), str):
            fail("contextual_model", "must be the encoder's Hugging Face config (with a model_type)")
        if model.get("hidden_size") != self.contextual_dim:
            fail("contextual_dim", f"{self.contextual_dim} is not the encoder's hidden_size {model.get('hidden_size')!r}")
        if self.contextual_layers not in CONTEXTUAL_LAYERS:
            fail("contextual_layers", f"must be one of {', '.join(CONTEXTUAL_LAYERS)}, got {self.contextual_layers!r}")
        if self.contextual_pooling not in CONTEXTUAL_POOLINGS:
            fail("contextual_pooling", f"must be one of {', '.join(CONTEXTUAL_POOLINGS)}, got {self.contextual_pooling!r}")
        limit = model.get("max_position_embeddings")
        window = self.contextual_window
        if not isinstance(window, int) or isinstance(window, bool) or window < 4 or (isinstance(limit, int) and window > limit):
            fail("contextual_window", f"must be an integer from 4 to the encoder's limit {limit}, got {window!r}")
        tokens = self.contextual_tokens
        if (not isinstance(tokens, dict) or any(key not in tokens for key in TOKEN_KEYS)
                or not all(isinstance(i, int) for key in ("prefix", "suffix") for i in tokens[key])
                or not all(isinstance(tokens[key], int) for key in ("pad", "unk"))):
            fail("contextual_tokens", f"must give {', '.join(TOKEN_KEYS)} token ids")

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
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING and f.name not in data)
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
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"model config: {exc}") from None
