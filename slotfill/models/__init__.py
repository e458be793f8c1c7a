"""Slot tagger models: configuration, recurrent encoder, CRF and the tagger itself."""

from .config import TaggerConfig
from .crf import CRF, allowed_transitions
from .encoder import RecurrentEncoder
from .tagger import SlotTagger, TaggerOutput

__all__ = ["CRF", "RecurrentEncoder", "SlotTagger", "TaggerConfig", "TaggerOutput", "allowed_transitions"]
