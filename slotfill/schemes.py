"""Tag schemes for slot spans: IOB2 (default), IOB1 and BIOES -- the one home of their grammar.

A tag is ``"O"`` or ``PREFIX-type``; the type may itself contain hyphens, dots and underscores
(ATIS: ``B-fromloc.city_name``), so a tag is split on its FIRST hyphen only.

Every scheme describes the same thing, a list of non-overlapping spans ``(label, start, end)``
with ``end`` exclusive, so conversions go through spans.

- IOB2:  every span starts with ``B-x``; ``I-x`` continues a span of type x.
- IOB1:  spans are ``I-x`` runs; ``B-x`` is only used to start a span right after another span
  of the SAME type (otherwise the two would merge).
- BIOES: ``S-x`` is a one-token span; longer spans are ``B-x (I-x)* E-x``.

The grammar is one rule per scheme, :func:`is_allowed` (may tag ``a`` be followed by tag ``b``,
START and END included); everything else derives from it: :func:`validate` (the problems of a
sequence), :func:`allowed_transitions` (the CRF's constraint table, as AllenNLP builds it), the
decoders' pruning tables (through those constraints) and :class:`SpanReader` (the one span
reader). Nothing here imports torch.

Invalid sequences are never fixed silently: :func:`validate` lists the problems, :func:`spans`
and :func:`convert` refuse invalid input, and :func:`repair` applies the conlleval convention
(a stray ``I-x`` starts a new span) only when called. :func:`read_spans` reads any sequence of
well-formed tags the way conlleval and seqeval's default mode do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from slotfill.errors import ConfigError, DataError

SCHEMES = ("IOB2", "IOB1", "BIOES")
DEFAULT_SCHEME = "IOB2"

Span = tuple[str, int, int]
Parsed = tuple[str, "str | None"]  # (prefix, type); ("O", None) for O

# Prefixes a scheme allows besides "O".
_PREFIXES = {"IOB2": frozenset("BI"), "IOB1": frozenset("BI"), "BIOES": frozenset("BIES")}
# Prefixes that always open a new span in the lenient (conlleval) reading.
_OPENERS = {"IOB2": frozenset("B"), "IOB1": frozenset("B"), "BIOES": frozenset("BS")}
# Prefixes after which a span is closed whatever follows (BIOES's E and S).
_CLOSERS = {"IOB2": frozenset(), "IOB1": frozenset(), "BIOES": frozenset("ES")}
# Prefixes that must come right after a B- or I- of their own type ...
_NEED_BEFORE = {"IOB2": frozenset("I"), "IOB1": frozenset("B"), "BIOES": frozenset("IE")}
# ... and prefixes that must be followed by an I- or E- of their own type.
_NEED_AFTER = {"IOB2": frozenset(), "IOB1": frozenset(), "BIOES": frozenset("BI")}
_CONTINUES = {"IOB2": frozenset("I"), "IOB1": frozenset("I"), "BIOES": frozenset("IE")}

START = ("START", None)
END = ("END", None)


def check_scheme(scheme: str) -> str:
    """Return ``scheme`` if it is known, else raise :class:`ConfigError`."""
    if scheme not in _PREFIXES:
        raise ConfigError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    return scheme


def parse_tag(tag: str) -> tuple[str, str | None]:
    """Split a tag on its first hyphen: ``"B-city" -> ("B", "city")``, ``"O" -> ("O", None)``.

    This is syntax only; a tag without a hyphen comes back as ``(tag, None)`` and
    :func:`tag_problem` decides whether it is allowed.
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
    if not isinstance(tag, str):
        return f"malformed tag {tag!r}: not a string"
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


# ----------------------------------------------------------------------------------- the grammar
def _before_ok(scheme: str, prev: Parsed, cur: Parsed) -> bool:
    """Whether ``cur`` may come after ``prev`` as far as ``cur`` is concerned."""
    if cur[0] not in _NEED_BEFORE[scheme]:
        return True
    return prev[0] in ("B", "I") and prev[1] == cur[1]


def _after_ok(scheme: str, prev: Parsed, cur: Parsed) -> bool:
    """Whether ``prev`` may be followed by ``cur`` as far as ``prev`` is concerned."""
    if prev[0] not in _NEED_AFTER[scheme]:
        return True
    return cur[0] in ("I", "E") and cur[1] == prev[1]


def is_allowed(scheme: str, prev: Parsed, cur: Parsed) -> bool:
    """The grammar: may ``prev`` be followed by ``cur``? Both are ``(prefix, type)`` pairs as
    :func:`parse_tag` gives them; ``prev`` may be :data:`START` and ``cur`` :data:`END`."""
    if cur == START or prev == END or (prev == START and cur == END):
        return False  # sequences are never empty
    return _before_ok(scheme, prev, cur) and _after_ok(scheme, prev, cur)


def allowed_transitions(scheme: str, labels: Mapping[int, str] | Sequence[str]) -> list[tuple[int, int]]:
    """The ``(from_id, to_id)`` pairs ``scheme`` permits, for a CRF's constraint table.

    ``labels``: ``id -> label`` (ids ``0 .. K-1``) or a list in id order. Pairs are over
    ``0 .. K+1``, where ``K`` stands for START and ``K + 1`` for END (AllenNLP's convention).
    Raises :class:`ConfigError` for an unknown scheme or a label that does not fit it.
    """
    check_scheme(scheme)
    if isinstance(labels, Mapping):
        if sorted(labels) != list(range(len(labels))):
            raise ConfigError("label ids must be exactly 0 .. num_labels-1")
        names = [labels[i] for i in range(len(labels))]
    else:
        names = list(labels)
    parsed: list[Parsed] = []
    for name in names:
        problem = tag_problem(name, scheme)
        if problem is not None:
            raise ConfigError(f"label {name!r} does not fit the {scheme} scheme: {problem}")
        parsed.append(parse_tag(name))
    parsed += [START, END]  # ids K and K + 1
    return [(i, j) for i, a in enumerate(parsed) for j, b in enumerate(parsed) if is_allowed(scheme, a, b)]


def validate(tags: Sequence[str], scheme: str = DEFAULT_SCHEME) -> list[tuple[int, str]]:
    """Return ``(token index, reason)`` for every invalid position; empty if valid.

    A malformed tag (see :func:`tag_problem`) is reported at its position and its neighbours
    are not judged against it. Every pair of neighbours the grammar refuses blames the tag whose
    rule it breaks: the later one when it may not follow (IOB2 ``O I-x``), the earlier one when it
    may not be followed (BIOES ``B-x O``), both when both rules break.
    """
    check_scheme(scheme)
    problems: list[tuple[int, str]] = []
    parsed: list[Parsed | None] = []
    for i, tag in enumerate(tags):
        reason = tag_problem(tag, scheme)
        if reason is not None:
            problems.append((i, reason))
            parsed.append(None)
        else:
            parsed.append(parse_tag(tag))
    sequence: list[Parsed | None] = [START, *parsed, END]
    for k in range(1, len(sequence)):
        prev, cur = sequence[k - 1], sequence[k]
        if prev is None or cur is None:
            continue
        if not _after_ok(scheme, prev, cur):
            after = "the end" if cur == END else repr(tags[k - 1])
            problems.append((k - 2, f"{tags[k - 2]!r} is followed by {after}; expected I-{prev[1]} or E-{prev[1]}"))
        if not _before_ok(scheme, prev, cur):
            before = "the start" if prev == START else repr(tags[k - 2])
            problems.append((k - 1, f"{tags[k - 1]!r} follows {before}; {_requirement(scheme, cur)}"))
    problems.sort(key=lambda p: p[0])
    return problems


def _requirement(scheme: str, cur: Parsed) -> str:
    label = cur[1]
    if scheme == "IOB2":
        return f"IOB2 spans start with B-{label}"
    if scheme == "IOB1":
        return f"IOB1 uses B- only right after a {label} span"
    return f"expected B-{label} or I-{label} before it"


# ------------------------------------------------------------------------------- the span reader
def _read(parsed: Sequence[Parsed], scheme: str) -> list[Span]:
    """The lenient (conlleval) reading of well-formed ``(prefix, type)`` pairs.

    A tag whose type differs from the open span always starts a new span, so does an opener
    (``B-``, and ``S-`` in BIOES), and ``I-x`` after ``O`` starts one; in BIOES ``E-`` and ``S-``
    close the span they end. For valid sequences this is exactly their spans; for invalid ones it
    is seqeval's default mode (a test checks both on random sequences).
    """
    openers, closers = _OPENERS[scheme], _CLOSERS[scheme]
    out: list[Span] = []
    label: str | None = None  # type of the open span
    start = 0
    for i, (prefix, typ) in enumerate(parsed):
        if prefix == "O":
            if label is not None:
                out.append((label, start, i))
                label = None
            continue
        if label != typ or prefix in openers:
            if label is not None:
                out.append((label, start, i))
            label, start = typ, i
        if prefix in closers:
            out.append((label, start, i + 1))
            label = None
    if label is not None:
        out.append((label, start, len(parsed)))
    return out


def _parse_all(tags: Sequence[str], scheme: str) -> list[Parsed]:
    parsed = []
    for i, tag in enumerate(tags):
        problem = tag_problem(tag, scheme)
        if problem is not None:
            raise DataError(f"token {i}: {problem}")
        parsed.append(parse_tag(tag))
    return parsed


def read_spans(tags: Sequence[str], scheme: str = DEFAULT_SCHEME) -> list[Span]:
    """Spans of any sequence of well-formed tags, valid or not, read the conlleval way (seqeval's
    default mode; a test checks every sequence of up to five tags in each scheme against it).
    For a valid sequence these are its spans."""
    check_scheme(scheme)
    return _read(_parse_all(tags, scheme), scheme)


def _raise_invalid(tags: Sequence[str], scheme: str) -> None:
    problems = validate(tags, scheme)
    if problems:
        index, reason = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"invalid {scheme} sequence at token {index}: {reason}{more}")


def spans(tags: Sequence[str], scheme: str = DEFAULT_SCHEME) -> list[Span]:
    """Spans ``(label, start, end)`` (end exclusive) of a VALID sequence.

    Raises :class:`DataError` (without a path; readers add it) if ``tags`` is invalid in ``scheme``.
    """
    check_scheme(scheme)
    _raise_invalid(tags, scheme)
    return _read([parse_tag(tag) for tag in tags], scheme)


class SpanReader:
    """:func:`read_spans` (lenient) over label ids of a fixed label set, for decoded sequences.

    ``read(ids)`` gives the sequence's labels and spans. A sequence the grammar accepts (every CRF
    path) keeps its labels; any other (softmax decoding can emit ``O I-x``) is repaired the
    conlleval way, so the labels a client sees always spell the spans it gets.
    """

    def __init__(self, scheme: str, labels: Sequence[str]):
        check_scheme(scheme)
        self.scheme = scheme
        self.labels = list(labels)
        parsed = []
        for label in self.labels:
            problem = tag_problem(label, scheme)
            if problem is not None:
                raise ConfigError(f"label {label!r} does not fit the {scheme} scheme: {problem}")
            parsed.append(parse_tag(label))
        self._parsed = parsed
        k = len(parsed)
        allowed = set(allowed_transitions(scheme, self.labels))
        # Row i: which labels may follow label i; row K is START; column K the END.
        self._follows = [[(i, j) in allowed for j in range(k)] + [(i, k + 1) in allowed] for i in range(k + 1)]

    def valid(self, ids: Sequence[int]) -> bool:
        follows, previous = self._follows, len(self._parsed)  # START
        for label_id in ids:
            if not follows[previous][label_id]:
                return False
            previous = label_id
        return follows[previous][-1]

    def read(self, ids: Sequence[int]) -> tuple[list[str], list[Span]]:
        found = _read([self._parsed[i] for i in ids], self.scheme)
        if self.valid(ids):
            return [self.labels[i] for i in ids], found
        return tags_from_spans(len(ids), found, self.scheme), found


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
    """Re-encode a valid ``source`` sequence in ``target`` (any pair of schemes); lossless."""
    check_scheme(target)
    return tags_from_spans(len(tags), spans(tags, source), target)


def repair(tags: Sequence[str], scheme: str = DEFAULT_SCHEME) -> list[str]:
    """Fix structural errors the conlleval way and return a valid sequence.

    A span that starts without its opening tag (IOB2 ``O I-x``) becomes a span starting there
    (``O B-x``); in BIOES an unterminated span is closed; in IOB1 a needless ``B-x`` becomes
    ``I-x``. Malformed tags (unknown prefix, no type) cannot be repaired and raise
    :class:`DataError`.
    """
    check_scheme(scheme)
    for i, tag in enumerate(tags):
        reason = tag_problem(tag, scheme)
        if reason is not None:
            raise DataError(f"cannot repair token {i}: {reason}")
    return tags_from_spans(len(tags), _read([parse_tag(t) for t in tags], scheme), scheme)
