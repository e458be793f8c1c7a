"""One labelled utterance, as every reader returns it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """Tokens with one tag each and an optional intent.

    ``source`` is ``"path:line"`` of where the example was read, so a problem
    found later (in training, in a report) can point back at the data.
    Lists are accepted and stored as tuples, which keeps examples hashable.
    """

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    intent: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        # Frozen dataclass: coerce through object.__setattr__ (runs once, at creation).
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "tags", tuple(self.tags))
        if len(self.tokens) != len(self.tags):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.tags)} tags")

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def text(self) -> str:
        """The tokens joined by single spaces (the text the tags refer to)."""
        return " ".join(self.tokens)
