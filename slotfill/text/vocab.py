"""Vocabularies: string <-> id maps stored as plain text, one entry per line."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from slotfill.artifact.files import check_strings, read_text
from slotfill.errors import ArtifactError

PAD = "<pad>"
UNK = "<unk>"
# A vocabulary at config.py's limit of 5,000,000 words, at about 50 bytes a word in JSON.
MAX_VOCAB_BYTES = 256 * 1024 * 1024


class Vocab:
    """An ordered string table. With ``specials`` (the default) id 0 is padding, id 1 unknown."""

    def __init__(self, items: Iterable[str], *, specials: bool = True):
        self.specials = specials
        head = [PAD, UNK] if specials else []
        self.itos: list[str] = head + [item for item in items if not (specials and item in (PAD, UNK))]
        self.stoi: dict[str, int] = {}
        for index, item in enumerate(self.itos):
            if item in self.stoi:
                raise ValueError(f"duplicate vocabulary entry {item!r}")
            self.stoi[item] = index

    @classmethod
    def build(cls, counts: Counter[str], *, min_freq: int = 1, max_size: int | None = None) -> "Vocab":
        # Sort by frequency, then alphabetically, so the ids do not depend on data order.
        ranked = sorted((item for item, n in counts.items() if n >= min_freq), key=lambda s: (-counts[s], s))
        if max_size is not None:
            ranked = ranked[:max_size]
        return cls(ranked)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, item: str) -> bool:
        return item in self.stoi

    @property
    def unk_id(self) -> int:
        return 1

    def lookup(self, item: str) -> int:
        index = self.stoi.get(item)
        if index is None:
            if not self.specials:
                raise KeyError(item)
            return 1
        return index

    def encode(self, items: Sequence[str]) -> list[int]:
        get, unk = self.stoi.get, 1
        return [get(item, unk) for item in items]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    # Serialisation: JSON list, because vocabulary entries may contain any character.
    def to_json(self) -> str:
        return json.dumps({"specials": self.specials, "items": self.itos[2 if self.specials else 0 :]}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, *, source: str = "vocabulary") -> "Vocab":
        try:
            data = json.loads(text)
            items, specials = data["items"], bool(data["specials"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{source}: not a slotfill vocabulary file ({exc})") from None
        except RecursionError:
            raise ArtifactError(f"{source}: not a slotfill vocabulary file (JSON nested too deeply)") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ArtifactError(f"{source}: vocabulary items must be a list of strings")
        check_strings(source, items, "items")
        try:
            return cls(items, specials=specials)
        except ValueError as exc:
            raise ArtifactError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        return cls.from_json(read_text(path, max_bytes=MAX_VOCAB_BYTES), source=str(path))
