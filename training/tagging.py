"""``slotfill tag``: text lines or JSONL requests in, JSONL predictions out.

Empty input means what it means to the HTTP API: a text that is empty or only whitespace is not an
utterance, and asking to tag one is refused (the API answers 422 ``empty_text``; here the input is
refused, naming its line, before anything is written, as a batch with such an item is refused whole).
In text input every line is an utterance, so a blank line is refused too; with ``--format jsonl`` a
blank line is no record at all and is skipped, as the data readers skip it. A text with characters
but no tokens (only punctuation) is tagged: no tokens, no slots, intent null, as over HTTP.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from slotfill.artifact.files import atomic_write_text
from slotfill.errors import ConfigError, DataError
from slotfill.inference.predictor import Predictor


EMPTY_TEXT = "empty_text: the text is empty or only whitespace, so there is nothing to tag"


def _requests(source: BinaryIO, input_format: str, name: str) -> Iterator[tuple[int, str, object]]:
    """Yield (line number, kind, payload) with kind 'text' or 'tokens'. A blank line is refused as an empty
    text, except in JSONL input (``input_format='jsonl'``), where it holds no record and is skipped."""
    for line_no, raw in enumerate(source, 1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise DataError(f"not valid UTF-8 (byte {exc.start})", name, line_no) from None
        if not line.strip():
            if input_format == "jsonl":
                continue
            raise DataError(f"{EMPTY_TEXT} (every line of text input is an utterance; remove blank lines)",
                            name, line_no)
        as_json = input_format == "jsonl" or (input_format == "auto" and line.lstrip().startswith("{"))
        if not as_json:
            yield line_no, "text", line
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise DataError(f"invalid JSON ({exc.msg})", name, line_no) from None
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object with 'text' or 'tokens'", name, line_no)
        if ("text" in obj) == ("tokens" in obj):
            raise DataError("give exactly one of 'text' or 'tokens'", name, line_no)
        if "text" in obj:
            if not isinstance(obj["text"], str):
                raise DataError("'text' must be a string", name, line_no)
            if not obj["text"].strip():
                raise DataError(EMPTY_TEXT, name, line_no)
            yield line_no, "text", obj["text"]
        else:
            tokens = obj["tokens"]
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t and not any(
                    c.isspace() for c in t) for t in tokens):
                raise DataError("'tokens' must be a non-empty list of non-empty strings without spaces", name, line_no)
            yield line_no, "tokens", tokens


def _open_input(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:  # missing, a directory, unreadable: one line naming the file
        raise DataError(f"cannot read: {exc.strerror}", path) from None


def _check_output(path: Path) -> None:
    """Refuse an output path that cannot be written as a file, before any tagging is done."""
    if path.is_dir():
        raise DataError("cannot write: is a directory, not a file", path)
    parent = path.parent
    if not parent.is_dir():
        problem = "is not a directory" if parent.exists() else "does not exist"
        raise DataError(f"cannot write: the directory {parent} {problem}", path)


def tag_stream(model_dir: str | Path, source: Path | None, output: Path | None, *, input_format: str = "auto",
               batch_size: int = 64, intent_ranking: int = 0, min_confidence: float | None = None,
               alternatives: int = 0) -> int:
    """Tag every request in the file ``source`` (or standard input); write JSONL to ``output`` (atomically)
    or standard output. Returns the count. ``intent_ranking`` k > 0 adds ``ranking`` (the k most confident
    intents, as ``{"name", "confidence"}``) to each line's intent; a k above the model's number of intents is
    a :class:`ConfigError`, raised before anything is tagged. ``min_confidence`` (from 0 to 1) drops the slots
    whose confidence is below it, labels their tokens ``O`` and marks them with ``dropped_label`` (the predictor's
    ``min_span_confidence``). ``alternatives`` k > 0 adds the predictor's ``alternatives`` (a model with a CRF)
    or each token's ``top_labels`` (a model without one).

    A file that cannot be read or written is a :class:`DataError` naming it, raised before the model is loaded.
    """
    if output is not None:
        _check_output(output)
    if source is None:
        return _tag(model_dir, sys.stdin.buffer, "<stdin>", output, input_format, batch_size, intent_ranking,
                    min_confidence, alternatives)
    with _open_input(source) as handle:
        return _tag(model_dir, handle, str(source), output, input_format, batch_size, intent_ranking,
                    min_confidence, alternatives)


def _tag(model_dir: str | Path, source: BinaryIO, source_name: str, output: Path | None, input_format: str,
         batch_size: int, intent_ranking: int = 0, min_confidence: float | None = None,
         alternatives: int = 0) -> int:
    predictor = Predictor.load(model_dir)
    try:
        predictor.check_intent_top_k(intent_ranking)
    except ValueError:
        count = len(predictor.intents or ())
        raise ConfigError(f"--intent-ranking {intent_ranking}: the model has {count} intents; give 1 to "
                          f"{count}") from None
    try:
        predictor.check_alternatives(alternatives)
    except ValueError as exc:
        raise ConfigError(f"--alternatives {alternatives}: {exc}") from None
    lines: list[tuple[int, str]] = []
    pending: list[tuple[int, str, object]] = []

    def flush() -> None:
        for kind in ("text", "tokens"):
            group = [(n, p) for n, k, p in pending if k == kind]
            if not group:
                continue
            fn = predictor.predict_texts if kind == "text" else predictor.predict_tokens
            predictions = fn([p for _, p in group], intent_top_k=intent_ranking, min_span_confidence=min_confidence,
                             alternatives=alternatives)
            for (line_no, _), prediction in zip(group, predictions):
                record = {"line": line_no, **prediction.to_dict()}
                lines.append((line_no, json.dumps(record, ensure_ascii=False)))
        pending.clear()

    for request in _requests(source, input_format, source_name):
        pending.append(request)
        if len(pending) >= batch_size:
            flush()
    flush()
    lines.sort(key=lambda item: item[0])
    text = "".join(f"{line}\n" for _, line in lines)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            atomic_write_text(output, text)
        except OSError as exc:
            raise DataError(f"cannot write: {exc.strerror}", output) from None
    return len(lines)
