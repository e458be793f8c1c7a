"""Importers: data from Rasa, snips-nlu, doccano and Hugging Face token classification as Examples.

One reader per source, each returning a list of :class:`~slotfill.data.Example` (tags in IOB2), and
:func:`write_examples`, which writes them in a slotfill format (JSONL, CoNLL or a split folder) with the
writers of :mod:`slotfill.data.readers`, atomically. Every problem is a :class:`DataError` naming the
file and line (or, in a single JSON document, the record) and what is wrong; all records are read and
checked before anything is written.

Sources with raw text are tokenised with :func:`slotfill.text.tokenizer.tokenize` (the tokenizer training
and serving use); a character span becomes the tokens it covers, and a span edge inside a token is an
error (never silently widened), as are overlapping spans and spans that cover no token.

- ``rasa``: Rasa NLU YAML (``nlu:`` items ``- intent: NAME`` with ``examples: |`` lines ``- text``);
  ``[value](entity)``, ``[value](entity:synonym)`` and ``[value]{"entity": "e", "role": "r"}``
  (``group`` and ``value`` keys are accepted and not used). ``keep_roles`` makes a role a suffix of the
  label (``entity.role``); otherwise roles are dropped. ``lookup``, ``regex`` and ``synonym`` items and
  other top-level sections (``responses``, ``stories``...) are skipped, with a note.
- ``snips``: a snips-nlu JSON dataset; an entity chunk's ``slot_name`` is the label.
- ``doccano``: doccano JSONL, spans as ``"label": [[start, end, "LABEL"], ...]`` or
  ``"entities": [{"start_offset", "end_offset", "label"}]``; the intent is ``"intent"`` or ``"cats"`` (a
  list holding one name, or a dict of scores: the highest).
- ``tokens``: Hugging Face token-classification records ``{"tokens": [...], "ner_tags": [ints]}`` (JSONL, or
  a JSON list); tag names from a labels file (one per line, in index order) or ``dataset_info.json`` beside
  the input (``features.ner_tags.feature.names``). Tags must be valid IOB2; ``intent`` is read if present.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from slotfill import schemes
from slotfill.data.example import Example
from slotfill.data.readers import (CONLL_SUFFIXES, FOLDER_FILES, read_json_lines, read_lines, tags_from_char_spans, write_conll,
                                   write_folder_split, write_jsonl)
from slotfill.errors import DataError, SlotfillError
from slotfill.text.tokenizer import TokenizerConfig, normalize_token, tokenize

SOURCES = ("rasa", "snips", "doccano", "tokens")
FORMATS = ("jsonl", "conll", "folder")
Note = Callable[[str], None]

# A character span: (start, end, label), end exclusive.
CharSpan = tuple[int, int, str]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- text + character spans


def example_from_spans(
    text: object,
    spans: Sequence[CharSpan],
    intent: object,
    path: Path,
    line: int | None,
    where: str = "",
    config: TokenizerConfig | None = None,
) -> Example:
    """Tokenise ``text`` and turn character spans into IOB2 tags; DataError at ``path:line`` on any problem.

    ``where`` prefixes the message (e.g. ``"record 3: "`` in a single JSON document).
    """

    def fail(message: str) -> DataError:
        return DataError(f"{where}{message}", path, line)

    if not isinstance(text, str):
        raise fail("record has no text (expected a string)")
    if intent is not None and (not isinstance(intent, str) or not intent.strip() or "\n" in intent):
        raise fail(f"intent {intent!r} must be a non-empty one-line string")
    tokens = tokenize(text, config)
    if not tokens:
        raise fail(f"empty utterance: the text {text!r} has no tokens")
    for start, end, label in spans:
        if not isinstance(label, str) or not label or label == "O" or any(ch.isspace() for ch in label):
            raise fail(f"entity label {label!r} must be a non-empty name without spaces (not 'O')")
        if not (_is_int(start) and _is_int(end)):
            raise fail(f"entity {label!r}: start and end must be integers, got {start!r} and {end!r}")
        if not 0 <= start < end <= len(text):
            raise fail(f"entity {label!r} [{start}, {end}) is empty or outside the text (length {len(text)})")
    try:
        tags = tags_from_char_spans(text, tokens, spans)
    except DataError as error:
        raise fail(error.message) from None
    return Example(tuple(t.norm for t in tokens), tuple(tags), intent, f"{path}:{line}" if line else str(path))


def _load_json_document(path: Path) -> object:
    text = "\n".join(read_lines(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"invalid JSON: {error.msg} at column {error.colno}", path, error.lineno) from None
    except RecursionError:
        raise DataError("JSON nested too deeply", path) from None


# --------------------------------------------------------------------------- Rasa


# [value](entity) or [value](entity:synonym), and [value]{"entity": ...}; as Rasa's own ENTITY_REGEX.
_RASA_ENTITY = re.compile(
    r"\[(?P<text>[^\]]+?)\](?:\((?P<entity>[^:)]+?)(?::(?P<synonym>[^)]+))?\)|(?P<json>\{[^}]+?\}))"
)
_RASA_SKIPPED_ITEMS = ("lookup", "regex", "synonym")


def parse_rasa_example(line: str, keep_roles: bool = False) -> tuple[str, list[CharSpan]]:
    """Plain text and character spans of one Rasa example (annotations removed); DataError without a location."""
    pieces: list[str] = []
    spans: list[CharSpan] = []
    position = 0  # in the plain text
    last = 0  # in the annotated line
    for match in _RASA_ENTITY.finditer(line):
        pieces.append(line[last : match.start()])
        position += match.start() - last
        value = match.group("text")
        if match.group("json") is not None:
            try:
                attributes = json.loads(match.group("json"))
            except json.JSONDecodeError as error:
                raise DataError(f"invalid entity annotation {match.group('json')!r}: {error.msg}") from None
            if not isinstance(attributes, dict) or not isinstance(attributes.get("entity"), str):
                raise DataError(f"entity annotation {match.group('json')!r} needs an \"entity\" name")
            label = attributes["entity"].strip()
            role = attributes.get("role")
            if keep_roles and role is not None:
                if not isinstance(role, str) or not role.strip():
                    raise DataError(f"entity {label!r}: role {role!r} must be a non-empty string")
                label = f"{label}.{role.strip()}"
        else:
            label = match.group("entity").strip()
        spans.append((position, position + len(value), label))
        pieces.append(value)
        position += len(value)
        last = match.end()
    pieces.append(line[last:])
    return "".join(pieces), spans


def read_rasa(path: str | Path, keep_roles: bool = False, note: Note | None = None) -> list[Example]:
    """Examples of a Rasa NLU YAML file (see the module docstring)."""
    try:
        import yaml
    except ImportError:
        raise SlotfillError("reading Rasa YAML needs PyYAML: pip install 'slotfill[train]' (or pyyaml)") from None

    path = Path(path)
    source = "\n".join(read_lines(path))
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise DataError(f"invalid YAML: {problem}", path, mark.line + 1 if mark else None) from None
    if not isinstance(root, yaml.MappingNode):
        raise DataError("expected a mapping with an 'nlu' list (Rasa NLU YAML)", path, root.start_mark.line + 1
                        if root is not None else None)
    skipped: Counter[str] = Counter()
    sections = []
    nlu = None
    for key, value in root.value:
        if key.value == "nlu":
            nlu = value
        elif key.value != "version":
            sections.append(key.value)
    if nlu is None:
        raise DataError("no 'nlu' section", path)
    if not isinstance(nlu, yaml.SequenceNode):
        raise DataError("'nlu' must be a list", path, nlu.start_mark.line + 1)
    examples = []
    for item in nlu.value:
        line = item.start_mark.line + 1
        if not isinstance(item, yaml.MappingNode):
            raise DataError("an 'nlu' item must be a mapping (intent, synonym, regex or lookup)", path, line)
        fields = {key.value: value for key, value in item.value}
        kinds = [kind for kind in ("intent", *_RASA_SKIPPED_ITEMS) if kind in fields]
        if len(kinds) != 1:
            raise DataError("an 'nlu' item needs exactly one of intent, synonym, regex, lookup", path, line)
        if kinds[0] != "intent":
            skipped[kinds[0]] += 1
            continue
        intent_node = fields["intent"]
        intent = intent_node.value if isinstance(intent_node, yaml.ScalarNode) else None
        if not isinstance(intent, str) or not intent.strip():
            raise DataError("'intent' must be a non-empty name", path, intent_node.start_mark.line + 1)
        node = fields.get("examples")
        if node is None:
            raise DataError(f"intent {intent!r} has no 'examples'", path, line)
        for text, number in _rasa_example_lines(node, path):
            try:
                plain, spans = parse_rasa_example(text, keep_roles)
            except DataError as error:
                raise DataError(error.message, path, number) from None
            examples.append(example_from_spans(plain, spans, intent.strip(), path, number))
    if skipped or sections:
        parts = [f"{count} {kind} item(s)" for kind, count in sorted(skipped.items())]
        parts += [f"{len(sections)} other section(s) ({', '.join(sections)})"] if sections else []
        if note is not None:
            note(f"{path}: skipped {', '.join(parts)}: not training examples")
    return examples


def _rasa_example_lines(node, path: Path):
    """``(text, line)`` of each example of an ``examples`` value: a ``|`` block of ``- text`` lines, or a list
    of strings or of ``text:`` mappings."""
    import yaml

    if isinstance(node, yaml.ScalarNode):
        # A block scalar's content starts on the line after its "|" indicator.
        first = node.start_mark.line + (2 if node.style in ("|", ">") else 1)
        for offset, raw in enumerate(node.value.split("\n")):
            stripped = raw.strip()
            if not stripped:
                continue
            number = first + offset if node.style == "|" else first
            if not stripped.startswith("- "):
                raise DataError(f"expected an example line '- text', got {stripped!r}", path, number)
            yield stripped[2:].strip(), number
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            number = child.start_mark.line + 1
            if isinstance(child, yaml.MappingNode):
                child = next((value for key, value in child.value if key.value == "text"), None)
            if not isinstance(child, yaml.ScalarNode):
                raise DataError("an example must be a string or have a 'text'", path, number)
            yield child.value.strip(), child.start_mark.line + 1
    else:
        raise DataError("'examples' must be a '|' block of '- text' lines or a list", path, node.start_mark.line + 1)


# --------------------------------------------------------------------------- snips-nlu


def read_snips(path: str | Path) -> list[Example]:
    """Examples of a snips-nlu JSON dataset; errors name the intent and the utterance's index."""
    path = Path(path)
    dataset = _load_json_document(path)
    if not isinstance(dataset, dict) or not isinstance(dataset.get("intents"), dict):
        raise DataError("expected a snips-nlu dataset: an object with an 'intents' object", path)
    examples = []
    for intent, body in dataset["intents"].items():
        utterances = body.get("utterances") if isinstance(body, dict) else None
        if not isinstance(utterances, list):
            raise DataError(f"intent {intent!r}: expected an object with an 'utterances' list", path)
        for index, utterance in enumerate(utterances):
            where = f"intent {intent!r}, utterance {index}: "
            chunks = utterance.get("data") if isinstance(utterance, dict) else None
            if not isinstance(chunks, list):
                raise DataError(f"{where}expected an object with a 'data' list of chunks", path)
            pieces: list[str] = []
            spans: list[CharSpan] = []
            position = 0
            for k, chunk in enumerate(chunks):
                text = chunk.get("text") if isinstance(chunk, dict) else None
                if not isinstance(text, str):
                    raise DataError(f"{where}chunk {k} has no text", path)
                if "entity" in chunk or "slot_name" in chunk:
                    label = chunk.get("slot_name")
                    if not isinstance(label, str):
                        raise DataError(f"{where}chunk {k} ({text!r}) has an entity but no 'slot_name'", path)
                    spans.append((position, position + len(text), label))
                pieces.append(text)
                position += len(text)
            examples.append(example_from_spans("".join(pieces), spans, intent, path, None, where))
    return examples


# --------------------------------------------------------------------------- doccano


def _doccano_intent(record: dict) -> object:
    if "intent" in record:
        return record["intent"]
    cats = record.get("cats")
    if cats is None or cats == [] or cats == {}:
        return None
    if isinstance(cats, list):
        if len(cats) != 1:
            raise DataError(f"'cats' must hold one intent, got {len(cats)}: {cats!r}")
        return cats[0]
    if isinstance(cats, dict):
        if not all(isinstance(score, (int, float)) and not isinstance(score, bool) for score in cats.values()):
            raise DataError("'cats' scores must be numbers")
        return max(cats, key=cats.__getitem__)
    raise DataError("'cats' must be a list or an object of scores")


def _doccano_spans(record: dict) -> list[CharSpan]:
    spans: list[CharSpan] = []
    if "entities" in record:
        entities = record["entities"]
        if not isinstance(entities, list):
            raise DataError("'entities' must be a list")
        for k, entity in enumerate(entities):
            if not isinstance(entity, dict) or not {"start_offset", "end_offset", "label"} <= entity.keys():
                raise DataError(f"entity {k} must be an object with start_offset, end_offset and label")
            spans.append((entity["start_offset"], entity["end_offset"], entity["label"]))
    labels = record.get("label", [])
    if not isinstance(labels, list):
        raise DataError("'label' must be a list of [start, end, LABEL]")
    for k, label in enumerate(labels):
        if not isinstance(label, list) or len(label) != 3:
            raise DataError(f"label {k} must be [start, end, LABEL], got {label!r}")
        spans.append(tuple(label))
    return spans


def read_doccano(path: str | Path) -> list[Example]:
    """Examples of a doccano sequence-labelling JSONL export."""
    path = Path(path)
    examples = []
    for number, record in read_json_lines(path):
        try:
            intent = _doccano_intent(record)
            spans = _doccano_spans(record)
        except DataError as error:
            raise DataError(error.message, path, number) from None
        examples.append(example_from_spans(record.get("text"), spans, intent, path, number))
    return examples


# --------------------------------------------------------------------------- Hugging Face token classification


def read_label_names(path: str | Path) -> list[str]:
    """Tag names, one a line, in index order; blank lines only at the end."""
    path = Path(path)
    lines = read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    names = []
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise DataError("blank line: label names are one a line, in index order", path, number)
        problem = schemes.tag_problem(name, "IOB2")
        if problem is not None:
            raise DataError(f"label {name!r} is not an IOB2 tag: {problem}", path, number)
        names.append(name)
    if not names:
        raise DataError("no label names", path)
    return names


def _sidecar_label_names(path: Path) -> list[str]:
    try:
        info = json.loads("\n".join(read_lines(path)))
        names = info["features"]["ner_tags"]["feature"]["names"]
    except json.JSONDecodeError as error:
        raise DataError(f"invalid JSON: {error.msg} at column {error.colno}", path, error.lineno) from None
    except (KeyError, TypeError):
        raise DataError("no features.ner_tags.feature.names (the tag names)", path) from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError("features.ner_tags.feature.names must be a non-empty list of tag names", path)
    for name in names:
        problem = schemes.tag_problem(name, "IOB2")
        if problem is not None:
            raise DataError(f"label {name!r} is not an IOB2 tag: {problem}", path)
    return names


def read_token_classification(path: str | Path, labels: str | Path | None = None) -> list[Example]:
    """Examples of Hugging Face token-classification records (JSONL, or a JSON list of records)."""
    path = Path(path)
    if labels is not None:
        names = read_label_names(labels)
    else:
        sidecar = path.parent / "dataset_info.json"
        if not sidecar.is_file():
            raise DataError(f"no tag names: pass --labels FILE (one per line) or put dataset_info.json "
                            f"beside the input ({sidecar} not found)", path)
        names = _sidecar_label_names(sidecar)
    lines = read_lines(path)
    first = next((line.lstrip() for line in lines if line.strip()), "")
    if first.startswith("["):
        document = _load_json_document(path)
        if not isinstance(document, list):
            raise DataError("expected a JSON list of records", path)
        records = [(None, f"record {i}: ", record) for i, record in enumerate(document)]
    else:
        records = [(number, "", record) for number, record in read_json_lines(path)]
    examples = []
    for number, where, record in records:
        try:
            examples.append(_token_record(record, names, path, number))
        except DataError as error:
            raise DataError(where + error.message, path, number) from None
    return examples


def _token_record(record: object, names: Sequence[str], path: Path, number: int | None) -> Example:
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}")
    tokens, ids = record.get("tokens"), record.get("ner_tags")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise DataError("record has no 'tokens' (a list of strings)")
    if not tokens:
        raise DataError("empty utterance: 'tokens' is empty")
    if not isinstance(ids, list) or len(ids) != len(tokens):
        raise DataError(f"'ner_tags' must be a list with one tag per token ({len(tokens)})")
    for i, token in enumerate(tokens):
        if not token or any(ch.isspace() for ch in token):
            raise DataError(f"token {i} {token!r} is empty or contains whitespace")
    tags = []
    for i, value in enumerate(ids):
        if _is_int(value):
            if not 0 <= value < len(names):
                raise DataError(f"ner_tags[{i}] = {value} is not a label index (0..{len(names) - 1})")
            tags.append(names[value])
        elif isinstance(value, str) and value in names:
            tags.append(value)
        else:
            raise DataError(f"ner_tags[{i}] = {value!r} is not a label index (0..{len(names) - 1})")
    problems = schemes.validate(tags, "IOB2")
    if problems:
        index, reason = problems[0]
        raise DataError(f"token {index} {tokens[index]!r}: {reason}")
    intent = record.get("intent")
    if intent is not None and (not isinstance(intent, str) or not intent.strip() or "\n" in intent):
        raise DataError(f"intent {intent!r} must be a non-empty one-line string")
    return Example(tuple(tokens), tuple(tags), intent, f"{path}:{number}" if number else str(path))


# --------------------------------------------------------------------------- the whole conversion


def read_source(source: str, path: str | Path, *, labels: str | Path | None = None, keep_roles: bool = False,
                note: Note | None = None) -> list[Example]:
    """Examples of ``path`` read as ``source`` (one of :data:`SOURCES`)."""
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if labels is not None and source != "tokens":
        raise DataError("--labels applies to --from tokens only")
    if keep_roles and source != "rasa":
        raise DataError("--keep-roles applies to --from rasa only")
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    if source == "rasa":
        examples = read_rasa(path, keep_roles, note)
    elif source == "snips":
        examples = read_snips(path)
    elif source == "doccano":
        examples = read_doccano(path)
    else:
        examples = read_token_classification(path, labels)
    if not examples:
        raise DataError("no examples", path)
    return examples


def output_format(out: str | Path, fmt: str | None = None) -> str:
    """``fmt``, or the format ``out``'s name suggests: ``.jsonl``, a CoNLL suffix, else a split folder."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(out).suffix
    return "jsonl" if suffix == ".jsonl" else "conll" if suffix in CONLL_SUFFIXES else "folder"


def _check_for_jsonl(examples: Sequence[Example], config: TokenizerConfig | None = None) -> None:
    """JSONL stores text, which the reader tokenises again: every token must come back as itself (its norm, as
    the reader lower-cases and normalises)."""
    for example in examples:
        again = [token.norm for token in tokenize(example.text, config)]
        expected = [normalize_token(token, config) for token in example.tokens]
        if again != expected:
            index = next((i for i, (a, b) in enumerate(zip(again, expected)) if a != b), min(len(again),
                                                                                             len(expected)))
            token = example.tokens[index] if index < len(example.tokens) else example.tokens[-1]
            raise DataError(f"token {index} {token!r} would not survive JSONL's re-tokenisation of the text; "
                            f"write --format conll or folder instead", example.source)


def write_examples(examples: Sequence[Example], out: str | Path, fmt: str) -> None:
    """Write ``examples`` to ``out`` in ``fmt``, atomically: on error nothing at ``out`` changes."""
    out = Path(out)
    examples = list(examples)
    try:
        if fmt == "jsonl":
            _check_for_jsonl(examples)
            write_jsonl(examples, out)
        elif fmt == "conll":
            write_conll(examples, out)
        elif fmt == "folder":
            _write_folder(examples, out)
        else:
            raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    except ValueError as error:  # the writers' checks (all or no intents, whitespace)
        raise DataError(f"cannot write {fmt}: {error}", out) from None


def _write_folder(examples: list[Example], out: Path) -> None:
    if out.exists() and not (out.is_dir() and all(p.name in FOLDER_FILES for p in out.iterdir())):
        raise DataError("exists and is not a split folder (only seq.in, seq.out, label); choose another --out",
                        out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = None
    try:
        write_folder_split(examples, staging)
        os.chmod(staging, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and (old / out.name).exists() and not out.exists():
            os.replace(old / out.name, out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def convert(source: str, path: str | Path, out: str | Path, fmt: str | None = None, *,
            labels: str | Path | None = None, keep_roles: bool = False, note: Note | None = None
            ) -> tuple[list[Example], str]:
    """Read ``path`` as ``source``, check every record, then write ``out``; the examples and the format."""
    fmt = output_format(out, fmt)
    examples = read_source(source, path, labels=labels, keep_roles=keep_roles, note=note)
    write_examples(examples, out, fmt)
    return examples, fmt
