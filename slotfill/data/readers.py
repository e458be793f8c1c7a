"""Readers and writers for the three data formats; every problem is a DataError with file and line.

Formats:

- **folder**: a split directory with aligned ``seq.in`` (space-separated tokens),
  ``seq.out`` (one tag per token) and optionally ``label`` (intent), one
  utterance per line, as in the ATIS/SNIPS releases.
- **CoNLL**: one ``token ... tag`` line per token (first column is the token,
  last the tag), a blank line between sentences, ``-DOCSTART-`` lines skipped,
  and an optional ``# intent = X`` comment line before a sentence.
- **JSONL**: one object per line, ``{"text": ..., "spans": [{"start", "end",
  "label"}], "intent": ...}``; offsets are Python string indices (code points)
  into ``text``, end exclusive. The text is tokenised with
  :func:`slotfill.text.tokenizer.tokenize`.

``scheme`` names the scheme the tags in a file are written in (folder, CoNLL)
or the scheme to produce (JSONL); tags are returned in that scheme (use
:func:`slotfill.schemes.convert` to change it). An invalid tag sequence is an
error unless ``repair=True`` (``--set repair=true`` on the command line), which applies
:func:`slotfill.schemes.repair`.
Files are read as bytes and decoded line by line, so an encoding error names
its line.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slotfill import schemes
from slotfill.artifact.files import atomic_write_text
from slotfill.data.example import Example
from slotfill.errors import DataError
from slotfill.text.tokenizer import Token, TokenizerConfig, tokenize

SPLITS = ("train", "valid", "test")
# Names a split may have on disk, in the order they are looked for.
SPLIT_ALIASES = {"train": ("train",), "valid": ("valid", "dev"), "test": ("test",)}
CONLL_SUFFIXES = (".conll", ".txt", ".bio", ".iob")
FOLDER_FILES = ("seq.in", "seq.out", "label")
DATA_LAYOUT = ("expected a data folder holding train, and optionally valid (or dev) and test, each a folder of "
               "seq.in/seq.out[/label], a .jsonl file or a CoNLL file (.conll, .txt, .bio, .iob), "
               "or one such file or folder alone, read as the training data")

# "# key = value" comment before a sentence (CoNLL-U style); only "intent" is used.
_COMMENT = re.compile(r"#\s*([A-Za-z_][\w.-]*)\s*=\s*(.*?)\s*")


@dataclass
class Corpus:
    """The splits of one data set; ``valid`` and ``test`` may be empty."""

    train: list[Example]
    valid: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)


# --------------------------------------------------------------------------- reading


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 file without their ending (``\\n`` or ``\\r\\n``).

    Only ``\\n`` ends a line (not the other characters ``str.splitlines`` breaks
    on), so line numbers match what editors show. A leading BOM is ignored.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except OSError as error:
        raise DataError(f"cannot read file: {error.strerror or error}", path) from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    raw_lines = data.split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()  # the final newline does not start another line
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            bad = raw[error.start : error.end]
            raise DataError(
                f"not valid UTF-8: byte {bad!r} at column {error.start + 1} ({error.reason})", path, number
            ) from None
    return lines


def _checked_tags(
    tokens: Sequence[str],
    tags: Sequence[str],
    scheme: str,
    repair: bool,
    path: Path,
    lines: Sequence[int],
) -> list[str]:
    """Validate (or repair) ``tags``; ``lines[i]`` is the line to blame for token i."""
    problems = schemes.validate(tags, scheme)
    if not problems:
        return list(tags)
    malformed = [p for p in problems if schemes.tag_problem(tags[p[0]], scheme) is not None]
    if repair and not malformed:
        return schemes.repair(tags, scheme)
    index, reason = (malformed or problems)[0]
    more = f" ({len(problems) - 1} more problem(s) in this utterance)" if len(problems) > 1 else ""
    hint = ("" if malformed or repair else
            "; to read it as conlleval does, train with --set repair=true (repair=True in Python)")
    raise DataError(f"token {index + 1} {tokens[index]!r}: {reason}{more}{hint}", path, lines[index])


def read_folder_split(split_dir: str | Path, scheme: str = "IOB2", repair: bool = False) -> list[Example]:
    """Read ``seq.in``/``seq.out``/``label`` (label optional) from ``split_dir``."""
    schemes.check_scheme(scheme)
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError("split folder not found (expected seq.in, seq.out and optionally label)", split_dir)
    seq_in, seq_out, label_path = (split_dir / name for name in FOLDER_FILES)
    in_lines = read_lines(seq_in)
    out_lines = read_lines(seq_out)
    label_lines = read_lines(label_path) if label_path.exists() else None

    for other, other_lines in ((seq_out, out_lines), (label_path, label_lines)):
        if other_lines is not None and len(other_lines) != len(in_lines):
            raise DataError(
                f"has {len(other_lines)} lines but {seq_in.name} has {len(in_lines)}; the files must be aligned",
                other,
                min(len(other_lines), len(in_lines)) + 1,
            )

    examples = []
    for i, (in_line, out_line) in enumerate(zip(in_lines, out_lines)):
        number = i + 1
        # str.split() without arguments: SNIPS lines end with spaces and
        # sometimes hold double spaces; neither makes empty tokens.
        tokens = in_line.split()
        tags = out_line.split()
        if not tokens:
            raise DataError("empty utterance", seq_in, number)
        if len(tags) != len(tokens):
            raise DataError(f"{len(tags)} tags for {len(tokens)} tokens in {seq_in.name}", seq_out, number)
        tags = _checked_tags(tokens, tags, scheme, repair, seq_out, [number] * len(tokens))
        intent = None
        if label_lines is not None:
            intent = label_lines[i].strip()  # verbatim otherwise: ATIS keeps "a#b" multi-intents
            if not intent:
                raise DataError("empty intent", label_path, number)
        examples.append(Example(tuple(tokens), tuple(tags), intent, f"{seq_in}:{number}"))
    return examples


def read_conll(path: str | Path, scheme: str = "IOB2", repair: bool = False) -> list[Example]:
    """Read a CoNLL-style file (see the module docstring)."""
    schemes.check_scheme(scheme)
    path = Path(path)
    examples: list[Example] = []
    tokens: list[str] = []
    tags: list[str] = []
    numbers: list[int] = []
    intent: str | None = None
    intent_line: int | None = None

    def flush() -> None:
        nonlocal tokens, tags, numbers, intent, intent_line
        if tokens:
            checked = _checked_tags(tokens, tags, scheme, repair, path, numbers)
            examples.append(Example(tuple(tokens), tuple(checked), intent, f"{path}:{numbers[0]}"))
        elif intent_line is not None:
            raise DataError("empty utterance: comment is not followed by any token line", path, intent_line)
        tokens, tags, numbers, intent, intent_line = [], [], [], None, None

    for number, line in enumerate(read_lines(path), start=1):
        stripped = line.strip()
        if not stripped:
            flush()
            continue
        if not tokens:
            comment = _COMMENT.fullmatch(stripped)
            if comment is not None:
                if comment.group(1) == "intent":
                    if not comment.group(2):
                        raise DataError("empty intent in '# intent =' comment", path, number)
                    intent, intent_line = comment.group(2), number
                continue
        columns = stripped.split()
        if columns[0] == "-DOCSTART-":
            continue
        if len(columns) < 2:
            raise DataError(f"expected a token and a tag separated by whitespace, got {stripped!r}", path, number)
        tokens.append(columns[0])
        tags.append(columns[-1])
        numbers.append(number)
    flush()
    return examples


def _json_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_jsonl(
    path: str | Path,
    tokenizer_config: TokenizerConfig | None = None,
    scheme: str = "IOB2",
) -> list[Example]:
    """Read JSONL with character spans; tokens are the tokeniser's ``norm`` strings."""
    schemes.check_scheme(scheme)
    path = Path(path)
    config = tokenizer_config if tokenizer_config is not None else TokenizerConfig()
    examples = []
    for number, record in read_json_lines(path):
        try:
            tokens, tags, intent = _parse_jsonl_record(record, config, scheme)
        except DataError as error:
            raise DataError(error.message, path, number) from None
        examples.append(Example(tokens, tags, intent, f"{path}:{number}"))
    return examples


def tags_from_char_spans(text: str, tokens: Sequence[Token], spans: Iterable[tuple[int, int, str]],
                         scheme: str = "IOB2") -> list[str]:
    """Tags in ``scheme`` for character spans ``(start, end, label)`` (end exclusive) over ``text``'s ``tokens``:
    the one mapping from character offsets to tokens (the JSONL reader, ``slotfill data convert``). Spans must
    not overlap and must cover whole tokens; a span whose edge falls inside a token is refused naming both, as
    is one that covers no token. Raises :class:`DataError` without a location (callers add file and line)."""
    ordered = sorted(spans)
    for (s1, e1, l1), (s2, e2, l2) in zip(ordered, ordered[1:]):
        if s2 < e1:
            raise DataError(f"entities {l1!r} [{s1}, {e1}) and {l2!r} [{s2}, {e2}) overlap")
    token_spans = []
    for start, end, label in ordered:
        covered = []
        for i, token in enumerate(tokens):
            if token.start < start < token.end or token.start < end < token.end:
                raise DataError(f"entity {label!r} [{start}, {end}) cuts the token {token.text!r} "
                                f"[{token.start}, {token.end})")
            if start <= token.start and token.end <= end:
                covered.append(i)
        if not covered:
            raise DataError(f"entity {label!r} [{start}, {end}) {text[start:end]!r} covers no token")
        token_spans.append((label, covered[0], covered[-1] + 1))
    return schemes.tags_from_spans(len(tokens), token_spans, scheme)


def read_json_lines(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of each non-blank line of a JSON-lines file (read by :func:`read_lines`); a
    line that is not JSON, or not an object, is a DataError naming the file and the line."""
    path = Path(path)
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue  # blank lines (often a trailing one) carry nothing
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"invalid JSON: {error.msg} at column {error.colno}", path, number) from None
        except RecursionError:
            raise DataError("JSON nested too deeply", path, number) from None
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object, got {type(record).__name__}", path, number)
        yield number, record


def _parse_jsonl_record(
    record: dict, config: TokenizerConfig, scheme: str
) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """Tokens, tags and intent of one JSONL object; DataError without a location on problems."""
    text = record.get("text")
    if not isinstance(text, str):
        raise DataError("missing or non-string 'text'")
    intent = record.get("intent")
    if intent is not None and (not isinstance(intent, str) or not intent.strip()):
        raise DataError("'intent' must be a non-empty string")
    raw_spans = record.get("spans", [])
    if not isinstance(raw_spans, list):
        raise DataError("'spans' must be a list")
    tokens = tokenize(text, config)
    if not tokens:
        raise DataError("empty utterance: 'text' has no tokens")

    checked: list[tuple[int, int, str]] = []
    for k, span in enumerate(raw_spans):
        if not isinstance(span, dict):
            raise DataError(f"span {k} is not an object")
        start, end, label = span.get("start"), span.get("end"), span.get("label")
        if not (_json_int(start) and _json_int(end)):
            raise DataError(f"span {k}: 'start' and 'end' must be integers")
        if not isinstance(label, str) or not label or label == "O" or any(c.isspace() for c in label):
            raise DataError(f"span {k}: 'label' must be a non-empty name without spaces (not 'O')")
        if start >= end:
            raise DataError(f"span {k} ({label}) is empty: start {start} >= end {end}")
        if start < 0 or end > len(text):
            raise DataError(f"span {k} ({label}) [{start}:{end}] is outside the text (length {len(text)})")
        checked.append((start, end, label))
    tags = tags_from_char_spans(text, tokens, checked, scheme)
    return tuple(t.norm for t in tokens), tuple(tags), intent


def load_split(
    path: str | Path,
    scheme: str = "IOB2",
    repair: bool = False,
    tokenizer_config: TokenizerConfig | None = None,
) -> list[Example]:
    """Read one split in whatever format ``path`` is: folder, ``.jsonl`` or CoNLL."""
    path = Path(path)
    if path.is_dir():
        return read_folder_split(path, scheme, repair)
    if not path.exists():
        raise DataError("not found", path)
    if path.suffix == ".jsonl":
        # Spans carry no scheme, so there is nothing to repair.
        return read_jsonl(path, tokenizer_config, scheme)
    if path.suffix in CONLL_SUFFIXES:
        return read_conll(path, scheme, repair)
    raise DataError(
        f"unknown data format {path.suffix or '(no suffix)'!r}; expected a folder with seq.in/seq.out, "
        f".jsonl or one of {', '.join(CONLL_SUFFIXES)}",
        path,
    )


def _split_candidates(data_dir: Path, split: str) -> list[Path]:
    names = SPLIT_ALIASES[split]
    return [data_dir / name for name in names] + [
        data_dir / f"{name}{suffix}" for name in names for suffix in (".jsonl", *CONLL_SUFFIXES)
    ]


def find_split(data_dir: str | Path, split: str) -> Path | None:
    """The file or folder holding ``split`` in ``data_dir``, or None; two candidates are an error."""
    data_dir = Path(data_dir)
    found = [
        p for p in _split_candidates(data_dir, split) if (p / "seq.in").is_file() or (p.is_file() and p.suffix)
    ]
    if len(found) > 1:
        raise DataError(f"ambiguous {split} data: {', '.join(p.name for p in found)}; keep only one", data_dir)
    return found[0] if found else None


def load_corpus(
    data_dir: str | Path,
    scheme: str = "IOB2",
    repair: bool = False,
    tokenizer_config: TokenizerConfig | None = None,
) -> Corpus:
    """Load ``train`` (required), ``valid``/``dev`` and ``test`` from ``data_dir``.

    ``data_dir`` may also be one split alone, read as the training data: a ``.jsonl`` or CoNLL file, or a
    folder holding ``seq.in``/``seq.out`` (such a corpus has no valid or test split).
    """
    data_dir = Path(data_dir)
    if data_dir.is_file() or (data_dir / "seq.in").is_file():
        train = load_split(data_dir, scheme, repair, tokenizer_config)
        if not train:
            raise DataError("training data holds no examples", data_dir)
        return Corpus(train=train)
    if not data_dir.is_dir():
        raise DataError(f"no such data folder or file; {DATA_LAYOUT}", data_dir)
    splits: dict[str, list[Example]] = {}
    for split in SPLITS:
        location = find_split(data_dir, split)
        if location is None:
            if split == "train":
                looked_for = ", ".join(
                    p.name + ("/seq.in" if not p.suffix else "") for p in _split_candidates(data_dir, split)
                )
                raise DataError(f"no training data: looked for {looked_for}; {DATA_LAYOUT}", data_dir)
            splits[split] = []
        else:
            splits[split] = load_split(location, scheme, repair, tokenizer_config)
            if split == "train" and not splits[split]:
                raise DataError("training data holds no examples", location)
    return Corpus(**splits)


# --------------------------------------------------------------------------- writing


def _check_writable(examples: Sequence[Example]) -> None:
    for example in examples:
        if not example.tokens:
            raise ValueError(f"cannot write an empty utterance ({example.source or 'no source'})")
        for item in (*example.tokens, *example.tags):
            if not item or any(ch.isspace() for ch in item):
                raise ValueError(f"token or tag {item!r} is empty or contains whitespace ({example.source})")
        if example.intent is not None and "\n" in example.intent:
            raise ValueError(f"intent {example.intent!r} contains a newline ({example.source})")


def write_folder_split(examples: Iterable[Example], split_dir: str | Path) -> None:
    """Write ``seq.in``, ``seq.out`` and, when every example has an intent, ``label``."""
    examples = list(examples)
    _check_writable(examples)
    split_dir = Path(split_dir)
    with_intent = sum(example.intent is not None for example in examples)
    if 0 < with_intent < len(examples):
        raise ValueError("either all examples or none must have an intent (label is one line per example)")
    atomic_write_text(split_dir / "seq.in", "".join(" ".join(e.tokens) + "\n" for e in examples))
    atomic_write_text(split_dir / "seq.out", "".join(" ".join(e.tags) + "\n" for e in examples))
    label = split_dir / "label"
    if with_intent:
        atomic_write_text(label, "".join(f"{e.intent}\n" for e in examples))
    elif label.exists():
        label.unlink()  # a stale label file would misalign with the new split


def write_jsonl(examples: Iterable[Example], path: str | Path, scheme: str = "IOB2") -> None:
    """Write JSONL; ``text`` is the tokens joined by single spaces, spans are character offsets into it."""
    examples = list(examples)
    _check_writable(examples)
    lines = []
    for example in examples:
        offsets = []
        position = 0
        for token in example.tokens:
            offsets.append((position, position + len(token)))
            position += len(token) + 1
        record: dict = {
            "text": example.text,
            "spans": [
                {"start": offsets[s][0], "end": offsets[e - 1][1], "label": label}
                for label, s, e in schemes.spans(example.tags, scheme)
            ],
        }
        if example.intent is not None:
            record["intent"] = example.intent
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    atomic_write_text(Path(path), "".join(lines))


def write_conll(examples: Iterable[Example], path: str | Path) -> None:
    """Write ``token<TAB>tag`` lines, ``# intent = X`` before a sentence, blank lines between."""
    examples = list(examples)
    _check_writable(examples)
    blocks = []
    for example in examples:
        lines = [f"# intent = {example.intent}\n"] if example.intent is not None else []
        lines.extend(f"{token}\t{tag}\n" for token, tag in zip(example.tokens, example.tags))
        blocks.append("".join(lines))
    atomic_write_text(Path(path), "\n".join(blocks))
