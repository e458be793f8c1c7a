"""Saving and loading a complete tagger artifact (see :mod:`slotfill.artifact` for the layout)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifact import (MANIFEST, ONNX_FILE, ONNX_INT8_FILE, QUANTIZATION_FILE, atomic_write_json, atomic_write_text,
                       load_weights, read_json, save_weights, verify_manifest, write_manifest)
from .errors import ArtifactError, ConfigError
from .features import Featurizer
from .models.config import TaggerConfig
from .text import TokenizerConfig
from .vocab import Vocab

if TYPE_CHECKING:
    from .models.tagger import SlotTagger
    from .subwords import SubwordAligner

CALIBRATION_FILE = "calibration.json"
ENCODER_TOKENIZER = "encoder_tokenizer.json"  # the transformer front-end's tokenizer (tokenizers JSON)


@dataclass
class Artifact:
    """Everything in a verified artifact except the network itself; needs no torch.

    ``directory`` is None for a model that lives only in memory (during training).
    """

    featurizer: Featurizer
    tokenizer: TokenizerConfig
    card: dict[str, Any]
    report: dict[str, Any] | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    config: TaggerConfig | None = None
    directory: Path | None = None
    calibration: dict[str, Any] | None = None  # temperatures (see slotfill.calibration)
    aligner: "SubwordAligner | None" = None  # sub-word pieces for a transformer front-end
    quantization: dict[str, Any] | None = None  # how the int8 graph compared (see slotfill.onnx_quantize)

    @property
    def has_onnx(self) -> bool:
        """Whether the manifest vouches for an ONNX graph (an unlisted ``model.onnx`` is ignored)."""
        return ONNX_FILE in self.manifest.get("files", {})

    @property
    def has_int8(self) -> bool:
        """Whether the manifest vouches for the int8 graph (see :mod:`slotfill.onnx_quantize`)."""
        return ONNX_INT8_FILE in self.manifest.get("files", {})


@dataclass
class LoadedModel(Artifact):
    """An artifact with its torch network loaded (``config`` is the model's)."""

    model: "SlotTagger | None" = None

    def __post_init__(self) -> None:
        if self.model is None:
            raise TypeError("LoadedModel needs a model")
        self.config = self.model.config


def save_model(directory: str | Path, model: "SlotTagger", featurizer: Featurizer, tokenizer: TokenizerConfig,
               card: dict[str, Any], report: dict[str, Any] | None = None, report_text: str | None = None,
               calibration: dict[str, float] | None = None, aligner: "SubwordAligner | None" = None) -> dict:
    """Write every artifact file atomically, then the manifest last; returns the manifest.

    A reader that finds a manifest whose hashes match knows the whole artifact is complete.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    # An old manifest must not vouch for files that are about to change, and an old ONNX
    # graph would no longer match the new weights.
    (directory / MANIFEST).unlink(missing_ok=True)
    for stale in (ONNX_FILE, ONNX_INT8_FILE, QUANTIZATION_FILE):
        (directory / stale).unlink(missing_ok=True)
    atomic_write_json(directory / "config.json", config.to_dict())
    save_weights(model, directory / "model.safetensors")
    atomic_write_json(directory / "tokenizer.json", tokenizer.to_dict())
    atomic_write_text(directory / "vocab.json", featurizer.words.to_json())
    atomic_write_text(directory / "chars.json", featurizer.chars.to_json())
    atomic_write_text(directory / "labels.txt", "".join(f"{config.id2label[i]}\n" for i in range(config.num_labels)))
    atomic_write_text(directory / "intents.txt", "".join(f"{config.id2intent[i]}\n" for i in range(config.num_intents)))
    atomic_write_json(directory / "model_card.json", card)
    names = ["config.json", "model.safetensors", "tokenizer.json", "vocab.json", "chars.json", "labels.txt",
             "intents.txt", "model_card.json"]
    (directory / ENCODER_TOKENIZER).unlink(missing_ok=True)
    if config.contextual_dim:
        if aligner is None:
            raise ValueError("a model with a transformer front-end is saved with its tokenizer (aligner)")
        atomic_write_text(directory / ENCODER_TOKENIZER, aligner.tokenizer.to_str())
        names.append(ENCODER_TOKENIZER)
    (directory / CALIBRATION_FILE).unlink(missing_ok=True)
    if calibration is not None:
        atomic_write_json(directory / CALIBRATION_FILE, calibration)
        names.append(CALIBRATION_FILE)
    if report is not None:
        atomic_write_json(directory / "report.json", report)
        names.append("report.json")
        if report_text is not None:
            atomic_write_text(directory / "report.txt", report_text)
            names.append("report.txt")
    return write_manifest(directory, names, extra={"name": card.get("name"), "version": card.get("version")})


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return text.splitlines()


def read_artifact(directory: str | Path) -> Artifact:
    """Verify an artifact and read everything but the network (no torch).

    Raises :class:`ArtifactError` naming the problem; never unpickles.
    """
    directory = Path(directory)
    manifest, digest = verify_manifest(directory)
    try:
        config = TaggerConfig.from_dict(read_json(directory / "config.json"))
        tokenizer = TokenizerConfig.from_dict(read_json(directory / "tokenizer.json"))
    except ConfigError as exc:
        raise ArtifactError(f"{directory}: {exc}") from None
    words = Vocab.load(directory / "vocab.json")
    chars = Vocab.load(directory / "chars.json")
    if len(words) != config.vocab_size:
        raise ArtifactError(f"{directory / 'vocab.json'}: {len(words)} words, config.json says {config.vocab_size}")
    if len(chars) != config.num_chars:
        raise ArtifactError(f"{directory / 'chars.json'}: {len(chars)} characters, config.json says {config.num_chars}")
    labels = _lines(directory / "labels.txt")
    if labels != [config.id2label[i] for i in range(config.num_labels)]:
        raise ArtifactError(f"{directory / 'labels.txt'}: does not match id2label in config.json")
    intents = _lines(directory / "intents.txt")
    if intents != [config.id2intent[i] for i in range(config.num_intents)]:
        raise ArtifactError(f"{directory / 'intents.txt'}: does not match id2intent in config.json")
    card = read_json(directory / "model_card.json")
    if not isinstance(card, dict):
        raise ArtifactError(f"{directory / 'model_card.json'}: must be a JSON object")
    report = read_json(directory / "report.json") if "report.json" in manifest["files"] else None
    featurizer = Featurizer(words, chars, config.max_word_chars)
    calibration = None
    if CALIBRATION_FILE in manifest["files"]:
        calibration = read_json(directory / CALIBRATION_FILE)
        temperatures = [calibration.get(k) if isinstance(calibration, dict) else None
                        for k in ("slot_temperature", "intent_temperature")]
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 1e-3 <= t <= 1e3 for t in temperatures):
            raise ArtifactError(f"{directory / CALIBRATION_FILE}: slot_temperature and intent_temperature must be "
                                f"numbers between 0.001 and 1000")
    quantization = None
    if QUANTIZATION_FILE in manifest["files"]:
        quantization = read_json(directory / QUANTIZATION_FILE)
        if not isinstance(quantization, dict):
            raise ArtifactError(f"{directory / QUANTIZATION_FILE}: must be a JSON object")
    aligner = None
    if config.contextual_dim:
        from .subwords import SubwordAligner, load_tokenizer, special_tokens

        if ENCODER_TOKENIZER not in manifest["files"]:
            raise ArtifactError(f"{directory}: the model has a transformer front-end but the manifest lists no "
                                f"{ENCODER_TOKENIZER}")
        encoder_tokenizer = load_tokenizer(directory / ENCODER_TOKENIZER)
        if special_tokens(encoder_tokenizer) != config.contextual_tokens:
            raise ArtifactError(f"{directory / ENCODER_TOKENIZER}: its special tokens do not match "
                                f"contextual_tokens in config.json")
        aligner = SubwordAligner(encoder_tokenizer, config.contextual_tokens, config.contextual_window)
    return Artifact(featurizer=featurizer, tokenizer=tokenizer, card=card, report=report, manifest=manifest,
                    digest=digest, config=config, directory=directory, calibration=calibration, aligner=aligner,
                    quantization=quantization)


def load_model(directory: str | Path) -> LoadedModel:
    """Verify and load an artifact with its torch network. Raises :class:`ArtifactError`; never unpickles."""
    from .models.tagger import SlotTagger

    artifact = read_artifact(directory)
    model = SlotTagger(artifact.config)
    load_weights(model, artifact.directory / "model.safetensors")
    model.eval()
    return LoadedModel(featurizer=artifact.featurizer, tokenizer=artifact.tokenizer, card=artifact.card,
                       report=artifact.report, manifest=artifact.manifest, digest=artifact.digest,
                       directory=artifact.directory, calibration=artifact.calibration, aligner=artifact.aligner,
                       model=model)


def card_summary(card: dict[str, Any]) -> str:
    return json.dumps({k: card.get(k) for k in ("name", "version", "created")})
