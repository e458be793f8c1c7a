"""Tag schemes for slot spans: IOB2 (default), IOB1 and BIOES.

A tag is ``"O"`` or ``PREFIX-type``; the type may itself contain hyphens, dots
and underscores (ATIS: ``B-fromloc.city_name``), so a tag is split on its FIRST
hyphen only.

Every scheme describes the same thing, a list of non-overlapping spans
``(label, start, end)`` with ``end`` exclusive, so conversions go through spans.

- IOB2:  every span starts with ``B-x``; ``I-x`` continues a span of type x.
- IOB1:  spans are ``I-x`` runs; ``B-x`` is only used to start a span right after
  another span of the SAME type (otherwise the two would merge).
- BIOES: ``S-x`` is a one-token span; longer spans are ``B-x (I-x)* E-x``.

Invalid sequences are never fixed silently: :func:`validate` lists the problems,
:func:`spans` and :func:`convert` refuse invalid input, and :func:`repair` applies
the conlleval convention (a stray ``I-x`` starts a new span) only when called.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from slotfill.errors import ConfigError, DataError

SCHEMES = ("IOB2", "IOB1", "BIOES")
DEFAULT_SCHEME = "IOB2"

Span = tuple[str, int, int]

# Prefixes a scheme allows besides "O".
_PREFIXES = {"IOB2": frozenset("BI"), "IOB1": frozenset("BI"), "BIOES": frozenset("BIES")}


def check_scheme(scheme: str) -> str:
    """Return ``scheme`` if it is known, else raise :class:`ConfigError`."""
    if scheme not in _PREFIXES:
        raise ConfigError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    return scheme


def parse_tag(tag: str) -> tuple[str, str | None]:
    """Split a tag on its first hyphen: ``"B-city" -> ("B", "city")``, ``"O" -> ("O", None)``.

    This is syntax only; a tag without a hyphen comes back as ``(tag, None)`` and
    :func:`validate` decides whether it is allowed.
    """
    prefix, sep, label = tag.partition("-")
    if not sep:
        return tag, None
    return prefix, label


def tag_problem(tag: str, scheme: str) -> str | None:
    """Why a single tag is malformed in ``scheme`` (ignoring its neighbours), or None.

    Malformed tags (unknown prefix, missing type) are beyond :func:`repair`.
    """
    if tag == "O":
        return None
    prefix, label = parse_tag(tag)
    if label is None:
        return f"malformed tag {tag!r}: expected 'O' or PREFIX-type"
    if prefix == "O":
        return f"malformed tag {tag!r}: 'O' takes no type"
    if prefix not in _PREFIXES[scheme]:
        allowed = ", ".join(sorted(_PREFIXES[scheme]) + ["O"])
        return f"unknown prefix {prefix!r} in tag {tag!r} for {scheme} (allowed: {allowed})"
    if not label or any(ch.isspace() for ch in label):
        return f"malformed tag {tag!r}: empty or blank type"
    return None


def validate(tags: Sequence[str], scheme: str = DEFAULT_SCHEME) -> list[tuple[int, str]]:
    """Return ``(token index, reason)`` for every invalid position; empty if valid."""
    check_scheme(scheme)
    problems: list[tuple[int, str]] = []
    parsed: list[tuple[str, str | None] | None] = []
    for i, tag in enumerate(tags):
        reason = tag_problem(tag, scheme)
        if reason is not None:
            problems.append((i, reason))
            parsed.append(None)  # unknown: neighbours are not judged against it
        else:
            parsed.append(parse_tag(tag))

    def describe(j: int) -> str:
        return "the start" if j < 0 else repr(tags[j])

    for i, cur in enumerate(parsed):
        if cur is None or cur[0] == "O":
            continue
        prefix, label = cur
        prev = parsed[i - 1] if i > 0 else ("O", None)
        nxt = parsed[i + 1] if i + 1 < len(parsed) else ("O", None)
        prev_same = prev is not None and prev[0] != "O" and prev[1] == label
        if scheme == "IOB2":
            if prefix == "I" and prev is not None and not prev_same:
                problems.append((i, f"{tags[i]!r} follows {describe(i - 1)}; IOB2 spans start with B-{label}"))
        elif scheme == "IOB1":
            if prefix == "B" and prev is not None and not prev_same:
                problems.append(
                    (i, f"{tags[i]!r} follows {describe(i - 1)}; IOB1 uses B- only right after a {label} span")
                )
        else:  # BIOES
            if prefix in "IE" and prev is not None and not (prev_same and prev[0] in "BI"):
                expected = f"expected B-{label} or I-{label} before it"
                problems.append((i, f"{tags[i]!r} follows {describe(i - 1)}; {expected}"))
            if prefix in "BI" and nxt is not None and not (nxt[0] in "IE" and nxt[1] == label):
                after = "the end" if i + 1 >= len(tags) else repr(tags[i + 1])
                problems.append((i, f"{tags[i]!r} is followed by {after}; expected I-{label} or E-{label}"))
    problems.sort(key=lambda p: p[0])
    return problems


def _raise_invalid(tags: Sequence[str], scheme: str) -> None:
    problems = validate(tags, scheme)
    if problems:
        index, reason = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"invalid {scheme} sequence at token {index}: {reason}{more}")


def _lenient_spans(tags: Sequence[str], scheme: str) -> list[Span]:
    """Decode spans the way conlleval does, tolerating structural errors.

    Malformed tags (unknown prefix) must have been rejected before this is called.
    A tag whose type differs from the open span always starts a new span; "I-x"
    after "O" starts a span; in BIOES a span stays open until E/S/O or a new B.
    """
    out: list[Span] = []
    label: str | None = None  # type of the open span
    start = 0
    for i, tag in enumerate(tags):
        prefix, typ = parse_tag(tag)
        if prefix == "O":
            if label is not None:
                out.append((label, start, i))
            label = None
            continue
        starts_new = label != typ
        if scheme == "IOB2" and prefix == "B":
            starts_new = True
        elif scheme == "IOB1" and prefix == "B":
            starts_new = True
        elif scheme == "BIOES" and prefix in "BS":
            starts_new = True
        if starts_new:
            if label is not None:
                out.append((label, start, i))
            label, start = typ, i
        if scheme == "BIOES" and prefix in "ES":
            out.append((label, start, i + 1))
            label = None
    if label is not None:
        out.append((label, start, len(tags)))
    return out


def spans(tags: Sequence[str], scheme: str = DEFAULT_SCHEME) -> list[Span]:
    """Spans ``(label, start, end)`` (end exclusive) of a VALID sequence.

    Raises :class:`DataError` (without a path; readers add it) if ``tags`` is
    invalid in ``scheme``.
    """
    check_scheme(scheme)
    _raise_invalid(tags, scheme)
    return _lenient_spans(tags, scheme)


def tags_from_spans(n_tokens: int, spans: Iterable[Span], scheme: str = DEFAULT_SCHEME) -> list[str]:
    """Encode spans over ``n_tokens`` tokens as tags in ``scheme``.

    Spans must be non-empty, within range and non-overlapping (any order).
    """
    check_scheme(scheme)
    tags = ["O"] * n_tokens
    ordered = sorted(spans, key=lambda s: (s[1], s[2]))
    prev_end = 0
    prev_label: str | None = None
    for label, start, end in ordered:
        if not label or any(ch.isspace() for ch in label):
            raise DataError(f"invalid span label {label!r}")
        if not 0 <= start < end <= n_tokens:
            raise DataError(f"span {label!r} [{start}, {end}) is empty or outside 0..{n_tokens}")
        if start < prev_end:
            raise DataError(f"span {label!r} [{start}, {end}) overlaps the previous span")
        if scheme == "IOB2":
            tags[start] = f"B-{label}"
            for i in range(start + 1, end):
                tags[i] = f"I-{label}"
        elif scheme == "IOB1":
            # B- only where the span touches a previous span of the same type.
            adjacent = prev_end == start and prev_label == label and start > 0
            tags[start] = f"B-{label}" if adjacent else f"I-{label}"
            for i in range(start + 1, end):
                tags[i] = f"I-{label}"
        else:
            if end - start == 1:
                tags[start] = f"S-{label}"
            else:
                tags[start] = f"B-{label}"
                for i in range(start + 1, end - 1):
                    tags[i] = f"I-{label}"
                tags[end - 1] = f"E-{label}"
        prev_end, prev_label = end, label
    return tags


def convert(tags: Sequence[str], source: str, target: str) -> list[str]:
    """Re-encode a valid ``source`` sequence in ``target`` (any pair of schemes)."""
    check_scheme(target)
    return tags_from_spans(len(tags), spans(tags, source), target)


def repair(tags: Sequence[str], scheme: str = DEFAULT_SCHEME) -> list[str]:
    """Fix structural errors the conlleval way and return a valid sequence.

    A span that starts without its opening tag (IOB2 ``O I-x``) becomes a span
    starting there (``O B-x``); in BIOES an unterminated span is closed; in IOB1 a
    needless ``B-x`` becomes ``I-x``. Malformed tags (unknown prefix, no type)
    cannot be repaired and raise :class:`DataError`.
    """
    check_scheme(scheme)
    for i, tag in enumerate(tags):
        reason = tag_problem(tag, scheme)
        if reason is not None:
            raise DataError(f"cannot repair token {i}: {reason}")
    return tags_from_spans(len(tags), _lenient_spans(tags, scheme), scheme)
