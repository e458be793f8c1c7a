"""The slotfill command line, run as a user runs it: clear errors, JSONL in and out."""

from __future__ import annotations

import argparse
import json
import pkgutil
import re
import subprocess
import sys

import pytest

import training.cli
from training.cli import COMMANDS, build_parser

from .conftest import REPO


def slotfill(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], cwd=REPO, capture_output=True, text=True,
                          input=stdin, timeout=300)


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    subparsers = next(action for action in build_parser()._actions
                      if isinstance(action, argparse._SubParsersAction))
    return dict(subparsers.choices)


def test_every_command_module_is_a_command():
    """Each module in training/cli/ (but _options and __main__) is in COMMANDS, as the command of its name."""
    modules = {info.name for info in pkgutil.iter_modules(training.cli.__path__) if not info.name.startswith("_")}
    names = [module.__name__.rpartition(".")[2] for module in COMMANDS]
    assert set(names) == modules and len(names) == len(modules)
    parsers = command_parsers()
    assert list(parsers) == names
    for name, module in zip(names, COMMANDS):
        assert parsers[name].get_default("run") is module.run, name


@pytest.mark.parametrize("name", [module.__name__.rpartition(".")[2] for module in COMMANDS])
def test_every_command_has_help(name):
    parser = command_parsers()[name]
    options = [option for action in parser._actions for option in action.option_strings if option.startswith("--")]
    actions = [choice for action in parser._actions if isinstance(action, argparse._SubParsersAction)
               for choice in action.choices]
    assert options or actions
    result = slotfill(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: slotfill {name} ")
    for word in options + actions:
        assert word in result.stdout, (name, word)


def test_bad_data_gives_file_and_line_without_traceback(tmp_path):
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    (data / "seq.in").write_text("book a table\nfor two people\n")
    (data / "seq.out").write_text("O O O\nO B-party_size\n")
    result = slotfill("train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 2
    assert "seq.out:2" in result.stderr or "seq.in:2" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_setting_is_named(tmp_path):
    result = slotfill("train", "--out", str(tmp_path / "out"), "--set", "hiden_size=3")
    assert result.returncode == 2
    assert "hiden_size" in result.stderr and "Traceback" not in result.stderr


def test_tag_text_and_jsonl(sample_model_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("book a table for four at an italian place tomorrow at 7pm\n"
                      '{"tokens": ["find", "a", "cheap", "thai", "restaurant"]}\n')
    out = tmp_path / "out.jsonl"
    result = slotfill("tag", "--model", str(sample_model_dir), "--input", str(source), "--output", str(out))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2]
    first = records[0]
    assert len(first["labels"]) == 12
    for slot in first["slots"]:
        assert first["text"][slot["start"]:slot["end"]] == slot["value"]
    assert records[1]["text"] == "find a cheap thai restaurant"


def test_tag_reports_bad_json_line(sample_model_dir, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a table for two"}\n{"text": 3}\n')
    result = slotfill("tag", "--model", str(sample_model_dir), "--input", str(source))
    assert result.returncode == 2
    assert "in.jsonl:2" in result.stderr and "'text' must be a string" in result.stderr


def test_tag_refuses_tampered_model(sample_model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(sample_model_dir, model)
    (model / "vocab.json").write_text("[]")
    result = slotfill("tag", "--model", str(model), stdin="a table for two\n")
    assert result.returncode == 2
    assert "vocab.json" in result.stderr and "Traceback" not in result.stderr


def slot_f1_shown(text: str) -> str:
    """The value on a format_report's "Slot F1" line."""
    match = re.search(r"^Slot F1 +(\S+)$", text, re.MULTILINE)
    assert match, text
    return match.group(1)


def test_evaluate_writes_report(sample_model_dir, sample_dir, tmp_path):
    from slotfill.data import load_corpus
    from slotfill.inference.predictor import Predictor
    from slotfill.scoring.metrics import evaluate

    out = tmp_path / "report"
    result = slotfill("evaluate", "--model", str(sample_model_dir), "--data", str(sample_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    # What the tagger itself answers for the test split, scored here.
    predictor = Predictor.load(sample_model_dir)
    test = load_corpus(sample_dir).test
    predictions = predictor.predict_tokens([example.tokens for example in test])
    expected = evaluate([list(example.tags) for example in test], [p.labels for p in predictions],
                        [example.intent for example in test], [p.intent and p.intent.name for p in predictions])
    report = json.loads((out / "report.json").read_text())
    assert report["n_sentences"] == len(test) == 300
    assert report["slot_f1"] == pytest.approx(expected["slot_f1"])
    assert report["intent_accuracy"] == pytest.approx(expected["intent_accuracy"])
    # Scores far from 0, so that the equalities above mean something.
    assert report["slot_f1"] > 0.5 and report["intent_accuracy"] > 0.5
    shown = f"{100 * expected['slot_f1']:.2f}"
    assert slot_f1_shown(result.stdout) == shown
    assert slot_f1_shown((out / "report.txt").read_text()) == shown
    # no temporary files left (tests/test_error_analysis.py checks errors.jsonl and report.html)
    assert sorted(path.name for path in out.iterdir()) == ["errors.jsonl", "report.html", "report.json", "report.txt"]


def test_evaluate_out_that_is_a_file(sample_model_dir, sample_dir, tmp_path):
    (tmp_path / "taken").write_text("")
    result = slotfill("evaluate", "--model", str(sample_model_dir), "--data", str(sample_dir), "--out",
                      str(tmp_path / "taken"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"slotfill evaluate: error: --out {tmp_path / 'taken'}: cannot write the report")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(("source", "output", "problem"), [
    ("nosuch.txt", None, "nosuch.txt: cannot read: No such file or directory"),
    ("somedir", None, "somedir: cannot read: Is a directory"),
    ("in.txt", "nodir/out.jsonl", "nodir/out.jsonl: cannot write: the directory {tmp}/nodir does not exist"),
    ("in.txt", "in.txt/out.jsonl", "in.txt/out.jsonl: cannot write: the directory {tmp}/in.txt is not a directory"),
    ("in.txt", "somedir", "somedir: cannot write: is a directory, not a file"),
], ids=["input missing", "input a directory", "output in a missing directory", "output in a file",
        "output a directory"])
def test_tag_file_problems_are_one_line(tmp_path, source, output, problem):
    (tmp_path / "in.txt").write_text("book a table\n")
    (tmp_path / "somedir").mkdir()
    # No model is needed to find these: they are refused before it is loaded.
    args = ["tag", "--model", str(tmp_path / "no-model"), "--input", str(tmp_path / source)]
    if output:
        args += ["--output", str(tmp_path / output)]
    result = slotfill(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"slotfill tag: error: {tmp_path}/{problem.format(tmp=tmp_path)}\n"
    assert not (tmp_path / "nodir").exists()


def test_the_command_line_imports_no_torch_until_a_command_needs_it():
    """`slotfill serve` runs in the torch-free API image: building the parser (every command's options)
    must not import torch or transformers."""
    script = ("import sys; from training.cli import build_parser; build_parser().parse_args(['serve', '--help'])")
    result = subprocess.run([sys.executable, "-c", f"{script}"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "--model" in result.stdout
    probe = ("import sys; from training.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_train_on_one_jsonl_file_when_piped_says_what_comes_before_the_first_epoch(sample_dir, tmp_path):
    """--data may name one JSONL file (the training data; a tenth is held out for early stopping). With its
    output piped, train still logs, line by line: first what it is about to do, then each epoch with the time
    left."""
    from slotfill.data import load_corpus, write_jsonl

    write_jsonl(load_corpus(sample_dir).train[:400], tmp_path / "train.jsonl")
    result = slotfill("train", "--data", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "out"), "--set",
                      "epochs=2", "hidden_size=16", "word_dim=16", "char_dim=8", "char_channels=8", "threads=1",
                      "export_onnx=false")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"no validation split in {tmp_path / 'train.jsonl'}; holding out 40 training sentences"
    plan = next(i for i, line in enumerate(lines) if line.startswith("starting at most 2 epochs, 12 batches"))
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    assert len(epochs) == 2 and plan < epochs[0]
    assert lines[epochs[0]].endswith("left (1 epoch)]") and lines[epochs[1]].endswith("[that was the last epoch]")
    assert result.stdout.startswith("valid slot F1 ")


def test_a_missing_data_folder_says_what_data_is_expected(tmp_path, capsys):
    from training.cli import main

    assert main(["train", "--data", str(tmp_path / "nosuch"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"slotfill train: error: {tmp_path / 'nosuch'}: no such data folder or file; expected a "
                          "data folder holding train, and optionally valid (or dev) and test")
    assert len(err.splitlines()) == 1


def test_split_dev_is_the_valid_split_for_evaluate_and_export(sample_model_dir, sample_dir, tmp_path, capsys):
    """A data folder may name its valid split dev/ (the readers find it so); --split dev means that split."""
    import shutil

    from training.cli import main

    data = tmp_path / "data"
    shutil.copytree(sample_dir / "train", data / "train")
    shutil.copytree(sample_dir / "valid", data / "dev")
    assert main(["evaluate", "--model", str(sample_model_dir), "--data", str(data), "--split", "dev"]) == 0
    dev = capsys.readouterr().out
    assert main(["evaluate", "--model", str(sample_model_dir), "--data", str(data), "--split", "valid"]) == 0
    valid = capsys.readouterr().out
    assert "Evaluated on" in dev and "300 sentences" in dev
    assert dev.splitlines()[3:] == valid.splitlines()[3:]  # the same scores; only the title names the split
    assert main(["evaluate", "--model", str(sample_model_dir), "--data", str(data), "--split", "test"]) == 2
    assert "no 'test' split found" in capsys.readouterr().err
    model = tmp_path / "model"
    shutil.copytree(sample_model_dir, model)
    assert main(["export", "--model", str(model), "--format", "onnx", "--data", str(data), "--split", "dev"]) == 0
    assert f"checked on {300 + 256} sentences" in capsys.readouterr().out  # dev, and the synthetic ones


BLANKS = ["", " ", "\t ", "\u00a0\u2003\u3000"]  # empty, spaces, a tab, Unicode spaces


@pytest.mark.parametrize("blank", BLANKS, ids=["empty", "space", "tab", "unicode spaces"])
def test_an_empty_text_is_refused_by_tag_as_by_the_api(sample_model_dir, tmp_path, capsys, blank):
    """One meaning of empty input: a text that is empty or only whitespace is not an utterance. The API
    answers 422 empty_text (for a batch item too, refusing the batch); tag refuses the input, naming the line,
    and writes nothing."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from service.state import load_predictor
    from training.cli import main

    good = '{"text": "a table for two"}'
    out = tmp_path / "out.jsonl"
    for kind, lines in (("jsonl", [good, json.dumps({"text": blank})]), ("text", ["a table for two", blank])):
        source = tmp_path / f"in.{kind}"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        assert main(["tag", "--model", str(sample_model_dir), "--input", str(source), "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"slotfill tag: error: {source}:2: empty_text: the text is empty or only "
                              "whitespace"), (kind, err)
        assert len(err.splitlines()) == 1 and not out.exists()
    with TestClient(create_app(Settings(), predictor=load_predictor(sample_model_dir))) as http:
        answer = http.post("/v1/tag/batch", json={"items": [{"text": "a table for two"}, {"text": blank}]})
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "empty_text" and answer.json()["error"]["field"] == "items.1.text"
        assert http.post("/v1/tag", json={"text": blank}).json()["error"]["code"] == "empty_text"


def test_jsonl_input_skips_blank_lines_and_punctuation_only_text_has_no_tokens(sample_model_dir, tmp_path):
    """A blank line of JSONL holds no record (skipped, as the data readers skip it); a text of punctuation
    alone is not empty: it is tagged, with no tokens and no intent, as the API answers it."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from service.state import load_predictor

    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a table for two"}\n\n   \n{"text": "?!"}\n')
    result = slotfill("tag", "--model", str(sample_model_dir), "--input", str(source), "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 4]
    assert records[1]["tokens"] == [] and records[1]["slots"] == [] and records[1]["intent"] is None
    with TestClient(create_app(Settings(), predictor=load_predictor(sample_model_dir))) as http:
        answer = http.post("/v1/tag", json={"text": "?!"})
        assert answer.status_code == 200
        assert answer.json()["tokens"] == [] and answer.json()["intent"] is None
