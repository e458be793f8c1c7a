from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path

import pytest

from slotfill.errors import DataError, SlotfillError
from slotfill.scoring.metrics import evaluate, reliability_bins
from slotfill.scoring.reporting import (
    format_report,
    markdown_table,
    mean_std,
    plot_reliability,
    plot_training_curves,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _report() -> dict:
    gold = [
        ["B-fromloc.city_name", "O", "B-toloc.city_name", "O", "B-depart_date.day_name"],
        ["B-fromloc.city_name", "O", "B-toloc.city_name", "O", "O"],
        ["B-fromloc.city_name", "O", "O", "O", "O"],
    ]
    pred = [
        ["B-fromloc.city_name", "O", "B-toloc.city_name", "O", "O"],
        ["B-fromloc.city_name", "O", "B-fromloc.city_name", "O", "O"],
        ["B-fromloc.city_name", "O", "O", "O", "O"],
    ]
    return evaluate(gold, pred, ["atis_flight", "atis_flight", "atis_airfare"], ["atis_flight", "atis_airfare", "atis_airfare"])


# --------------------------------------------------------------------------- text report


def test_format_report_headline_in_percent():
    report = _report()
    text = format_report(report, title="ATIS test")
    assert text.startswith("ATIS test\n=========\n")
    # 6 gold spans, 5 predicted, 4 right: P = 80%, R = 66.67%, F1 = 72.73%
    assert report["slot_precision"] == pytest.approx(0.8)
    assert report["slot_recall"] == pytest.approx(4 / 6)
    assert report["slot_f1"] == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
    headline = dict(line.rsplit(None, 1) for line in text.splitlines()[3:10])
    headline = {label.strip(): value for label, value in headline.items()}
    assert headline["Slot precision"] == "80.00"
    assert headline["Slot recall"] == "66.67"
    assert headline["Slot F1"] == "72.73"
    assert f"{100 * report['intent_accuracy']:.2f}" in text  # 66.67
    assert "66.67" in text
    assert "Sentence accuracy" in text and "33.33" in text
    assert "3 sentences, 15 tokens" in text


def test_format_report_slot_rows_sorted_by_support_then_macro_row():
    report = _report()
    text = format_report(report)
    lines = text.splitlines()
    row_names = [line.split()[0] for line in lines if line.split() and line.split()[0] in report["per_slot"]]
    assert row_names == ["fromloc.city_name", "toloc.city_name", "depart_date.day_name"]
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.split() and line.split()[0] in report["per_slot"]}
    # fromloc: 3 gold, 4 predicted, 3 right
    assert rows["fromloc.city_name"] == ["75.00", "100.00", "85.71", "3"]
    assert rows["toloc.city_name"] == ["100.00", "50.00", "66.67", "2"]
    assert rows["depart_date.day_name"] == ["0.00", "0.00", "0.00", "1"]
    macro = next(line for line in lines if line.startswith("macro avg"))
    f1s = [row["f1"] for row in report["per_slot"].values()]
    assert macro.split()[-2:] == [f"{100 * sum(f1s) / len(f1s):.2f}", "6"]
    assert f"{100 * report['slot_f1_macro']:.2f}" == macro.split()[-2]
    assert lines.index(macro) > max(i for i, line in enumerate(lines) if line.startswith("depart_date"))
    # fixed width: all table rows have the same length
    start = next(i for i, line in enumerate(lines) if line.startswith("slot "))
    table = [line for line in lines[start:] if line]
    assert len({len(line) for line in table}) == 1


def test_format_report_without_intents_and_spans():
    report = evaluate([["O", "O"]], [["O", "O"]])
    text = format_report(report)
    assert "Intent accuracy" in text and "n/a" in text
    assert "no slot spans" in text
    assert "macro avg" not in text


# --------------------------------------------------------------------------- files


def test_write_report_round_trip_and_no_temp_files(tmp_path):
    report = _report()
    out = tmp_path / "nested" / "eval"
    json_path, txt_path = write_report(report, out)
    assert (json_path, txt_path) == (out / "report.json", out / "report.txt")
    assert sorted(os.listdir(out)) == ["report.json", "report.txt"]
    text = json_path.read_text(encoding="utf-8")
    assert json.loads(text) == report
    assert text == json.dumps(report, indent=2, sort_keys=True) + "\n"
    assert txt_path.read_text(encoding="utf-8") == format_report(report)


def test_write_report_custom_name_overwrites(tmp_path):
    write_report({"slot_f1": 0.1}, tmp_path, name="dev")
    write_report({"slot_f1": 0.2}, tmp_path, name="dev")
    assert json.loads((tmp_path / "dev.json").read_text())["slot_f1"] == 0.2
    assert sorted(os.listdir(tmp_path)) == ["dev.json", "dev.txt"]


def test_write_report_failure_leaves_no_partial_files(tmp_path, monkeypatch):
    with pytest.raises(ValueError):
        write_report({"slot_f1": float("nan")}, tmp_path)
    assert os.listdir(tmp_path) == []

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write_report(_report(), tmp_path)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- training curves


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_plot_training_curves_writes_png(tmp_path):
    metrics = _write_lines(
        tmp_path / "metrics.jsonl",
        [
            json.dumps({"event": "start", "config": {"lr": 0.001}}),
            json.dumps({"epoch": 1, "train_loss": 2.1, "dev_slot_f1": 0.71, "dev_intent_accuracy": 0.88, "lr": 1e-3}),
            "",
            json.dumps({"epoch": 2, "train_loss": 1.2, "dev_slot_f1": 0.85, "lr": 5e-4}),  # no intent acc
            json.dumps({"epoch": 3, "train_loss": 0.8, "dev_slot_f1": None, "dev_intent_accuracy": 0.93}),
            json.dumps({"event": "early_stop", "epoch": 3}),
        ],
    )
    png = tmp_path / "plots" / "curves.png"
    plot_training_curves(metrics, png)
    assert png.stat().st_size > 1000
    assert _png_size(png) == (800, 700)
    assert os.listdir(png.parent) == ["curves.png"]


def test_plot_training_curves_without_dev_metrics_or_lr(tmp_path):
    metrics = _write_lines(tmp_path / "m.jsonl", [json.dumps({"epoch": e, "train_loss": 1 / e}) for e in (1, 2)])
    png = tmp_path / "c.png"
    plot_training_curves(metrics, png)
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_plot_training_curves_malformed_line_names_file_and_line(tmp_path):
    metrics = _write_lines(
        tmp_path / "metrics.jsonl",
        [json.dumps({"epoch": 1, "train_loss": 1.0}), "", '{"epoch": 2, "train_loss": '],
    )
    png = tmp_path / "c.png"
    with pytest.raises(DataError) as info:
        plot_training_curves(metrics, png)
    assert isinstance(info.value, SlotfillError)
    assert str(info.value).startswith(f"{metrics}:3: ")
    assert info.value.line == 3
    assert not png.exists()
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]


@pytest.mark.parametrize(
    ("line", "message"),
    [("[1, 2]", "expected a JSON object"), ('{"epoch": "one"}', "epoch must be a number")],
)
def test_plot_training_curves_rejects_bad_records(tmp_path, line, message):
    metrics = _write_lines(tmp_path / "m.jsonl", [line])
    with pytest.raises(DataError, match=message) as info:
        plot_training_curves(metrics, tmp_path / "c.png")
    assert ":1: " in str(info.value)


def test_plot_training_curves_needs_epoch_records(tmp_path):
    metrics = _write_lines(tmp_path / "m.jsonl", [json.dumps({"event": "start"})])
    with pytest.raises(DataError, match="no per-epoch records") as info:
        plot_training_curves(metrics, tmp_path / "c.png")
    assert str(metrics) in str(info.value)
    with pytest.raises(DataError, match="file not found"):
        plot_training_curves(tmp_path / "missing.jsonl", tmp_path / "c.png")


def test_plots_from_threads(tmp_path):
    metrics = _write_lines(tmp_path / "m.jsonl", [json.dumps({"epoch": e, "train_loss": 1 / e, "dev_slot_f1": e / 10}) for e in range(1, 6)])
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            plot_training_curves(metrics, tmp_path / f"c{index}.png")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (tmp_path / "c0.png").read_bytes() == (tmp_path / "c1.png").read_bytes()


# --------------------------------------------------------------------------- reliability diagram


def test_plot_reliability_before_and_after(tmp_path):
    conf = [0.95, 0.9, 0.85, 0.6, 0.55, 0.3]
    before = reliability_bins(conf, [True, False, False, True, False, False], n_bins=10)
    after = reliability_bins([0.7, 0.6, 0.6, 0.5, 0.4, 0.2], [True, False, False, True, False, False], n_bins=10)
    png = tmp_path / "rel.png"
    plot_reliability(before, after, png, "Slot span calibration")
    assert _png_size(png) == (1100, 500)
    assert os.listdir(tmp_path) == ["rel.png"]

    single = tmp_path / "single.png"
    plot_reliability(before, None, single, "before only")
    assert _png_size(single) == (550, 500)
    empty = tmp_path / "empty.png"
    plot_reliability(reliability_bins([], [], n_bins=5), None, empty, "nothing")
    assert empty.read_bytes()[:8] == PNG_MAGIC


# --------------------------------------------------------------------------- tables


def test_markdown_table_aligned():
    table = markdown_table(["model", "slot F1", "intent"], [["bilstm", "95.61 ± 0.12", "97.1"], ["bilstm-crf-char", "96.02 ± 0.08", "97.5"]])
    lines = table.splitlines()
    assert lines[0] == "| model           | slot F1      | intent |"
    assert lines[1] == "| --------------- | ------------ | ------ |"
    assert lines[3] == "| bilstm-crf-char | 96.02 ± 0.08 | 97.5   |"
    assert len({len(line) for line in lines}) == 1
    pipes = {tuple(i for i, ch in enumerate(line) if ch == "|") for line in lines}
    assert len(pipes) == 1


def test_markdown_table_escapes_and_validates():
    table = markdown_table(["a"], [["x|y"]])
    assert "x\\|y" in table
    assert markdown_table(["a", "b"], []).count("\n") == 2
    with pytest.raises(ValueError, match="row 1 has 1 cells, expected 2"):
        markdown_table(["a", "b"], [["1", "2"], ["3"]])


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00"  # sample std, n - 1
    assert mean_std([95.5, 95.7]) == f"95.60 ± {((0.1**2 * 2) / 1) ** 0.5:.2f}"
    assert mean_std([95.61]) == "95.61 ± 0.00"
    assert mean_std(iter([90.0, 90.0, 90.0])) == "90.00 ± 0.00"
    assert mean_std([1.0, 2.0], digits=1) == "1.5 ± 0.7"
    with pytest.raises(ValueError):
        mean_std([])
    with pytest.raises(ValueError):
        mean_std([1.0, float("nan")])


# --------------------------------------------------------------------------- what the plots show


def test_kept_epoch_is_the_last_one_marked_best():
    from slotfill.scoring.reporting import kept_epoch

    records = [{"epoch": 1, "best": True, "selection_score": 0.5}, {"epoch": 2, "best": True, "selection_score": 0.7},
               {"epoch": 3, "selection_score": 0.6}, {"epoch": 4, "selection_score": 0.7}]
    assert kept_epoch(records) == 2
    # Without marks: the first epoch of the best score (a later tie does not replace it, as in training).
    assert kept_epoch([{k: v for k, v in r.items() if k != "best"} for r in records]) == 2
    assert kept_epoch([{"epoch": 1, "train_loss": 1.0}]) is None


def test_training_curves_mark_the_epoch_kept():
    from matplotlib.lines import Line2D

    from slotfill.scoring.reporting import training_curves_figure

    records = [{"epoch": e, "train_loss": 1 / e, "dev_slot_f1": f, "selection_score": f, **({"best": True} if b else {})}
               for e, f, b in ((1, 0.5, True), (2, 0.8, True), (3, 0.7, False), (4, 0.75, False))]
    for given, shown in ((None, 2), (3, 3)):  # from the records' marks, or as the caller says
        loss_ax, dev_ax = training_curves_figure(records, given).axes[:2]
        for ax in (loss_ax, dev_ax):
            verticals = [line for line in ax.get_lines() if list(line.get_xdata()) == [shown, shown]]
            assert len(verticals) == 1, ax.get_title()
        assert [text.get_text() for text in dev_ax.get_legend().get_texts()][0] == f"epoch kept ({shown})"
        f1 = next(line for line in dev_ax.get_lines() if line.get_label() == "dev_slot_f1")
        ring = [line for line in dev_ax.get_lines() if isinstance(line, Line2D) and line.get_marker() == "o"
                and list(line.get_xdata()) == [shown]]
        assert len(ring) == 1 and list(ring[0].get_ydata()) == [records[shown - 1]["dev_slot_f1"]]
        assert ring[0].get_color() == f1.get_color()


def test_reliability_gap_looks_the_same_in_the_legend_as_over_the_bars():
    """The gap's hatching is drawn in one opaque colour: the legend's key and the gap over an accuracy bar
    (an under-confident bin) show that red, and no translucent blend of red over the bar's blue."""
    import numpy as np
    from matplotlib.colors import to_rgb

    from slotfill.scoring.reporting import GAP_COLOR, _draw_reliability, _new_figure

    # One under-confident bin (confidence 0.35, accuracy 0.9) and one over-confident bin.
    bins = reliability_bins([0.35] * 10 + [0.95] * 10, [True] * 9 + [False] + [True] * 5 + [False] * 5, n_bins=10)
    fig = _new_figure((5.5, 5.0))
    ax = fig.subplots()
    _draw_reliability(ax, bins, "check")
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].astype(int)
    height = pixels.shape[0]

    def region(artist) -> np.ndarray:
        box = artist.get_window_extent()
        rows = slice(int(height - box.y1) + 2, int(height - box.y0) - 2)
        return pixels[rows, int(box.x0) + 2:int(box.x1) - 2].reshape(-1, 3)

    red = np.array([round(255 * c) for c in to_rgb(GAP_COLOR)])
    blend = 0.7 * np.array([round(255 * c) for c in to_rgb("tab:blue")]) + 0.3 * red
    key = ax.get_legend().legend_handles[2]
    assert ax.get_legend().get_texts()[2].get_text() == "gap to confidence"
    under = next(patch for patch in ax.patches if patch.get_height() < 0)  # the gap drawn down into the bar
    for name, area in (("legend key", region(key)), ("gap over the bar", region(under))):
        near_red = np.abs(area - red).max(axis=1) < 40
        assert near_red.mean() > 0.05, f"{name}: too little of the gap colour"
        # (a translucent fill would colour most of it; anti-aliased edges of the hatch lines are a few pixels)
        assert (np.abs(area - blend).max(axis=1) < 25).mean() < 0.1, f"{name}: a blend of the gap over the bar"
