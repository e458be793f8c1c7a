"""Labelled utterances and the readers/writers for folder, CoNLL and JSONL data."""

from slotfill.data.example import Example
from slotfill.data.readers import (
    SPLITS,
    Corpus,
    find_split,
    load_corpus,
    load_split,
    read_conll,
    read_folder_split,
    read_jsonl,
    read_lines,
    write_conll,
    write_folder_split,
    write_jsonl,
)

__all__ = [
    "SPLITS",
    "Corpus",
    "Example",
    "find_split",
    "load_corpus",
    "load_split",
    "read_conll",
    "read_folder_split",
    "read_jsonl",
    "read_lines",
    "sample_data_dir",
    "write_conll",
    "write_folder_split",
    "write_jsonl",
]


def __getattr__(name: str):
    # Imported lazily: an eager import of .sample here makes
    # ``python -m slotfill.data.sample`` warn that the module ran twice.
    if name == "sample_data_dir":
        from slotfill.data.sample import sample_data_dir

        return sample_data_dir
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
