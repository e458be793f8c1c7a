"""Slot substitution: more training sentences from the ones there are.

A copy of a sentence has each slot value replaced by another value of the same slot type, drawn
from the values the training set holds for that type ("fly from [boston] to [denver]" becomes "fly
from [pittsburgh] to [san francisco]"). The words around the slots, the intent and the slot types
stay; the tags follow the new values' lengths. The copies teach the tagger to read a slot from its
context rather than from remembered values, and give a distillation teacher sentences it was not
fitted to, whose soft labels carry more than the gold ones (``training/distillation.py``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from slotfill.data import Example
from slotfill.schemes import spans, tags_from_spans


def slot_values(examples: Sequence[Example], scheme: str) -> dict[str, list[tuple[str, ...]]]:
    """Every distinct value (a token tuple) of each slot type, in first-seen order."""
    values: dict[str, dict[tuple[str, ...], None]] = {}
    for example in examples:
        for label, start, end in spans(example.tags, scheme):
            values.setdefault(label, {})[example.tokens[start:end]] = None
    return {label: list(found) for label, found in values.items()}


def substitute(example: Example, values: dict[str, list[tuple[str, ...]]], rng: random.Random,
               scheme: str) -> Example | None:
    """One copy of ``example`` with every slot value redrawn; ``None`` when nothing changed (no slots,
    or every draw gave the value already there)."""
    tokens: list[str] = []
    new_spans = []
    position = 0
    changed = False
    for label, start, end in spans(example.tags, scheme):
        tokens.extend(example.tokens[position:start])
        value = rng.choice(values[label])
        changed = changed or value != example.tokens[start:end]
        new_spans.append((label, len(tokens), len(tokens) + len(value)))
        tokens.extend(value)
        position = end
    if not changed:
        return None
    tokens.extend(example.tokens[position:])
    source = f"{example.source} (slot substitution)" if example.source else "slot substitution"
    return Example(tokens=tokens, tags=tags_from_spans(len(tokens), new_spans, scheme), intent=example.intent,
                   source=source)


def slot_substitution(examples: Sequence[Example], copies: int, seed: int, scheme: str) -> list[Example]:
    """Up to ``copies`` substituted copies of each example (copy by copy, in the examples' order).

    The draws follow from ``seed`` alone. Copies equal to their original are dropped, so sentences
    without slots add nothing.
    """
    if copies <= 0:
        return []
    values = slot_values(examples, scheme)
    rng = random.Random(seed)
    out: list[Example] = []
    for _ in range(copies):
        for example in examples:
            copy = substitute(example, values, rng, scheme)
            if copy is not None:
                out.append(copy)
    return out
