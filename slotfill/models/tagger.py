"""The recurrent slot tagger: word + character features -> RNN -> softmax or CRF, plus an intent head."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from slotfill.models.char_cnn import CharCNN
from slotfill.models.config import TaggerConfig
from slotfill.models.contextual import ContextualEmbedder
from slotfill.models.crf import CRF
from slotfill.models.encoder import RecurrentEncoder
from slotfill.schemes import allowed_transitions

IGNORE_INTENT = -100


@dataclass
class TaggerOutput:
    """emissions: (B, T, K) slot scores; intent_logits: (B, I) or None; losses only when targets are given."""

    emissions: torch.Tensor
    intent_logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    slot_loss: torch.Tensor | None = None
    intent_loss: torch.Tensor | None = None


class SlotTagger(nn.Module):
    """A BiLSTM/GRU(-CRF) slot tagger with a joint intent head; built from a :class:`TaggerConfig` only."""

    def __init__(self, config: TaggerConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.word_embedding: nn.Embedding | None = None
        if config.word_dim:
            self.word_embedding = nn.Embedding(config.vocab_size, config.word_dim, padding_idx=0)
        self.contextual: ContextualEmbedder | None = None
        if config.contextual_dim:
            self.contextual = ContextualEmbedder(config.contextual_model, config.contextual_dim,
                                                 config.contextual_layers, config.contextual_pooling)
        self.char_cnn: CharCNN | None = None
        if config.uses_char_cnn:
            self.char_cnn = CharCNN(config.num_chars, config.char_dim, config.char_channels, config.char_kernel)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder: RecurrentEncoder | None = None
        if config.num_layers:
            self.encoder = RecurrentEncoder(
                config.cell,
                config.input_size,
                config.hidden_size,
                num_layers=config.num_layers,
                bidirectional=config.bidirectional,
                dropout=config.dropout,
            )
        self.emissions = nn.Linear(config.encoder_output_size, config.num_labels)
        self.intent_head = nn.Linear(config.encoder_output_size, config.num_intents) if config.num_intents else None
        self.crf: CRF | None = None
        if config.decoder == "crf":
            constraints = allowed_transitions(config.scheme, config.id2label)
            self.crf = CRF(config.num_labels, constraints)

    def forward(
        self,
        word_ids: torch.Tensor,
        char_ids: torch.Tensor,
        lengths: torch.Tensor,
        tags: torch.Tensor | None = None,
        intents: torch.Tensor | None = None,
        contextual: torch.Tensor | None = None,
        subwords: dict[str, torch.Tensor] | None = None,
        intent_loss_weight: float = 1.0,
    ) -> TaggerOutput:
        """Score a padded batch.

        word_ids: (B, T) long, 0 = padding; char_ids: (B, T, L) long; lengths: (B,) long (>= 1);
        tags: (B, T) long gold label ids (padding ignored); intents: (B,) long, ``IGNORE_INTENT``
        where an utterance has no intent. A model with a transformer front-end reads either
        ``subwords`` (``input_ids``/``attention_mask`` (W, S) and ``first``/``last`` (B, T), see
        :class:`slotfill.text.subwords.SubwordBatch`) or ``contextual``, its word states precomputed by
        :meth:`ContextualEmbedder.states` (B, T, L, E), which a frozen encoder allows.
        """
        mask = word_ids.ne(0)
        features = []
        if self.word_embedding is not None:
            features.append(self.word_embedding(word_ids))
        if self.contextual is not None:
            if contextual is None:
                if subwords is None:
                    raise ValueError("a contextual tagger needs subwords or precomputed contextual states")
                contextual = self.contextual.states(**subwords)
            features.append(self.contextual.mix(contextual.to(self.emissions.weight.dtype))
                            * mask.unsqueeze(-1).to(self.emissions.weight.dtype))
        if self.char_cnn is not None:
            features.append(self.char_cnn(char_ids, mask))
        inputs = self.dropout(torch.cat(features, dim=-1) if len(features) > 1 else features[0])
        states = self.dropout(self.encoder(inputs, lengths)) if self.encoder is not None else inputs  # (B, T, H)
        emissions = self.emissions(states)

        intent_logits = None
        if self.intent_head is not None:
            intent_logits = self.intent_head(self._pool(states, mask))

        output = TaggerOutput(emissions=emissions, intent_logits=intent_logits)
        if tags is not None:
            output.slot_loss = self._slot_loss(emissions, tags, mask)
            output.loss = output.slot_loss
            if intents is not None and intent_logits is not None and bool((intents != IGNORE_INTENT).any()):
                output.intent_loss = F.cross_entropy(intent_logits, intents, ignore_index=IGNORE_INTENT)
                output.loss = output.loss + intent_loss_weight * output.intent_loss
        return output

    def _pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """states (B, T, H), mask (B, T) -> (B, H) over real tokens only."""
        if self.config.intent_pooling == "mean":
            weights = mask.unsqueeze(-1).to(states.dtype)
            return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return states.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)

    def _slot_loss(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Both decoders give a per-sentence sum over tokens, averaged over the batch,
        # so the intent weight means the same thing whichever decoder is used.
        batch = emissions.size(0)
        if self.crf is not None:
            return -self.crf(emissions, tags, mask).sum() / batch
        logits = emissions[mask]
        return F.cross_entropy(logits, tags[mask], reduction="sum") / batch

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # HF-style persistence: config.json + model.safetensors, the one way a tagger's config and weights are
    # written and read; the rest of an artifact (vocabularies, tokenizer, manifest) is
    # slotfill.artifact.artifact's, which calls these.
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``, each atomically."""
        from slotfill.artifact.artifact import save_weights
        from slotfill.artifact.files import atomic_write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / "config.json", self.config.to_dict())
        save_weights(self, directory / "model.safetensors")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "SlotTagger":
        """Rebuild a tagger from ``config.json`` and load ``model.safetensors``, every tensor's name and shape
        checked against the config first. Raises :class:`~slotfill.errors.ArtifactError`."""
        from slotfill.artifact.artifact import check_weights, load_weights, read_config

        directory = Path(directory)
        config = read_config(directory / "config.json", TaggerConfig)
        check_weights(directory, config)  # header and parameter count, before the module allocates anything
        model = cls(config)
        load_weights(model, directory / "model.safetensors")
        model.eval()
        return model
