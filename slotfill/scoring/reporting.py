"""Human-readable reports, atomic report files, training curves and reliability diagrams.

Plots are drawn with ``matplotlib.figure.Figure`` and an explicitly attached
``FigureCanvasAgg``: no pyplot, no global figure registry and no global backend switch
(``matplotlib.use`` is never called), so plotting is safe from worker threads and does not
disturb an application's own matplotlib set-up. matplotlib is imported lazily, only when a
plot is drawn.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from slotfill.artifact.files import atomic_write_bytes
from slotfill.data.readers import read_json_lines
from slotfill.errors import DataError

if TYPE_CHECKING:
    from slotfill.scoring.errors import ErrorAnalysis

__all__ = [
    "format_report",
    "add_to_report",
    "write_report",
    "plot_training_curves",
    "plot_reliability",
    "markdown_table",
    "mean_std",
]

# The report's headline scores, in the order report.txt and report.html show them.
HEADLINE = (
    ("slot_precision", "Slot precision"),
    ("slot_recall", "Slot recall"),
    ("slot_f1", "Slot F1"),
    ("slot_f1_strict", "Slot F1 (strict)"),
    ("slot_f1_macro", "Slot F1 (macro)"),
    ("intent_accuracy", "Intent accuracy"),
    ("exact_match", "Sentence accuracy"),
)


# --------------------------------------------------------------------------- atomic files


def _json_default(value):
    # numpy scalars/arrays, should a caller hand them in
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------- text report


def pct(value) -> str:
    if value is None:
        return "n/a"
    return f"{100.0 * float(value):.2f}"


def sorted_slots(per_slot: Mapping[str, Mapping]) -> list[tuple[str, Mapping]]:
    return sorted(per_slot.items(), key=lambda item: (-int(item[1].get("support", 0)), item[0]))


def headline_labels(report: Mapping) -> list[tuple[str, str]]:
    """:data:`HEADLINE` with the strict F1 naming the report's scheme (``Slot F1 (strict IOB2)``)."""
    return [(key, f"{label[:-1]} {report['scheme']})" if key == "slot_f1_strict" and "scheme" in report else label)
            for key, label in HEADLINE]


def format_report(report: Mapping, title: str | None = None) -> str:
    """Render an :func:`slotfill.scoring.metrics.evaluate` report as a fixed-width text table.

    Headline metrics come first, in percent with two decimals (``n/a`` for a missing or
    ``None`` value such as ``intent_accuracy`` on a slot-only corpus), then one row per slot
    type sorted by support (descending, ties by name), then a macro row holding the
    unweighted means of the per-slot precision, recall and F1 and the total support.
    """
    lines: list[str] = []
    if title:
        lines += [title, "=" * len(title), ""]

    headline = headline_labels(report)
    label_width = max(len(label) for _, label in headline)
    for key, label in headline:
        lines.append(f"{label:<{label_width}}  {pct(report.get(key)):>7}")
    counts = []
    if "n_sentences" in report:
        counts.append(f"{report['n_sentences']} sentences")
    if "n_tokens" in report:
        counts.append(f"{report['n_tokens']} tokens")
    if counts:
        lines.append(f"{'Evaluated on':<{label_width}}  {', '.join(counts)}")
    lines.append("")

    per_slot = report.get("per_slot") or {}
    rows = sorted_slots(per_slot)
    name_width = max([len("slot"), len("macro avg")] + [len(name) for name, _ in rows])
    header = f"{'slot':<{name_width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>7}"
    lines += [header, "-" * len(header)]
    if not rows:
        lines.append("(no slot spans in gold or predictions)")
    for name, row in rows:
        lines.append(
            f"{name:<{name_width}}  {pct(row.get('precision')):>9}  {pct(row.get('recall')):>9}"
            f"  {pct(row.get('f1')):>9}  {int(row.get('support', 0)):>7}"
        )
    lines.append("-" * len(header))
    if rows:
        means = [
            statistics.fmean(float(row.get(key, 0.0)) for _, row in rows)
            for key in ("precision", "recall", "f1")
        ]
        support = sum(int(row.get("support", 0)) for _, row in rows)
        lines.append(
            f"{'macro avg':<{name_width}}  {pct(means[0]):>9}  {pct(means[1]):>9}"
            f"  {pct(means[2]):>9}  {support:>7}"
        )
    return "\n".join(lines) + "\n"


ERRORS_FILE = "errors.jsonl"


def _report_json(report: Mapping) -> str:
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False,
                      default=_json_default) + "\n"


def add_to_report(out_dir: str | Path, entries: Mapping, name: str = "report") -> Path:
    """Add ``entries`` to the ``<name>.json`` that :func:`write_report` wrote into ``out_dir`` (an entry the
    text report does not show, such as ``slotfill calibrate``'s ``calibration``), atomically, in the same
    format; ``<name>.txt`` and the page stay as they are. Returns the path."""
    path = Path(out_dir) / f"{name}.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    atomic_write_bytes(path, _report_json({**report, **entries}).encode("utf-8"))
    return path


def write_report(report: Mapping, out_dir: str | Path, name: str = "report", title: str | None = None, *,
                 errors: ErrorAnalysis | None = None, figures_from: Sequence[str | Path] = ()) -> tuple[Path, ...]:
    """Write ``<name>.json`` (indent 2, sorted keys) and ``<name>.txt`` (:func:`format_report`, headed by
    ``title``) into ``out_dir``; the one way a report is written (evaluation, training, the artifact;
    :func:`add_to_report` adds an entry to one written here).

    With ``errors`` (the :class:`slotfill.scoring.errors.ErrorAnalysis` of the same predictions) it also
    writes ``errors.jsonl`` (one line per sentence that is not an exact match) and ``<name>.html``
    (:func:`slotfill.scoring.html_report.report_html`: the same scores, read from ``report``, with the
    confusion table, the error counts, the worst sentences and the figures found in ``figures_from``).

    Every file is written atomically (temporary file in ``out_dir`` + ``os.replace``), so
    a reader never sees a half-written report. ``out_dir`` is created if needed. NaN or
    infinite values are rejected (``ValueError``) rather than written as invalid JSON.
    Returns the paths written: ``(json_path, txt_path)``, then errors.jsonl and the page when written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = _report_json(report)
    if errors is not None and len(errors.sentences) != round((1.0 - report["exact_match"]) * errors.n_sentences):
        # The page and errors.jsonl claim to list exactly the sentences exact_match did not count.
        raise ValueError(f"the error analysis lists {len(errors.sentences)} sentences, but exact_match "
                         f"{report['exact_match']} of {errors.n_sentences} leaves a different number")
    paths = [out / f"{name}.json", out / f"{name}.txt"]
    atomic_write_bytes(paths[0], text.encode("utf-8"))
    atomic_write_bytes(paths[1], format_report(report, title=title).encode("utf-8"))
    if errors is not None:
        from slotfill.scoring.html_report import find_figures, report_html

        paths += [out / ERRORS_FILE, out / f"{name}.html"]
        atomic_write_bytes(paths[2], errors.jsonl().encode("utf-8"))
        page = report_html(report, errors, title=title, figures=find_figures(figures_from))
        atomic_write_bytes(paths[3], page.encode("utf-8"))
    return tuple(paths)


# --------------------------------------------------------------------------- plotting


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to ``fig``
    return fig


def _save_png(fig, png_path: str | Path) -> None:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(Path(png_path), buffer.getvalue())


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_epochs(metrics_jsonl: Path) -> list[dict]:
    """Per-epoch records from a metrics JSON-lines file, last record per epoch wins."""
    path = Path(metrics_jsonl)
    by_epoch: dict[float, dict] = {}
    for number, record in read_json_lines(path):
        if "event" in record or "epoch" not in record:
            continue  # {"event": ...} markers and other non-epoch lines
        epoch = record["epoch"]
        if not _is_number(epoch):
            raise DataError(f"malformed metrics line: epoch must be a number, got {epoch!r}", path, number)
        by_epoch[epoch] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def _is_loss(key: str) -> bool:
    return key.endswith("loss")


def _is_dev_metric(key: str) -> bool:
    return key.startswith("dev_") and not _is_loss(key)


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    # NaN where an epoch lacks the value, so the line shows a gap instead of bridging it
    xs = [float(record["epoch"]) for record in records]
    ys = [float(record[key]) if _is_number(record.get(key)) else math.nan for record in records]
    return xs, ys


def _keys(records: list[dict], predicate) -> list[str]:
    seen: list[str] = []
    for record in records:
        for key, value in record.items():
            if key not in seen and predicate(key) and _is_number(value):
                seen.append(key)
    return seen


def kept_epoch(records: list[dict]) -> float | None:
    """The epoch whose weights a run kept: the last record marked ``"best": true`` (each one beat every
    epoch before it); without such marks, the first epoch of the highest ``selection_score``; else None."""
    marked = [record["epoch"] for record in records if record.get("best") is True]
    if marked:
        return marked[-1]
    scored = [record for record in records if _is_number(record.get("selection_score"))]
    if not scored:
        return None
    return max(scored, key=lambda record: (record["selection_score"], -record["epoch"]))["epoch"]


def plot_training_curves(metrics_jsonl: Path, png_path: Path, best_epoch: float | None = None) -> None:
    """Plot losses (top) and dev metrics (bottom) against epoch, saving a PNG atomically.

    The epoch whose weights were kept (``best_epoch``, or else :func:`kept_epoch` of the records) is
    marked on both panels by a vertical line, named in the legend, with its dev scores ringed.

    ``metrics_jsonl`` holds one JSON object per line. Lines with an ``epoch`` number and no
    ``event`` key are epoch records; others (``{"event": ...}``) and blank lines are skipped;
    if an epoch appears twice (a resumed run) the later line wins. Keys ending in ``loss``
    go in the top panel, with ``lr`` (if present) on a secondary log axis; keys starting
    with ``dev_`` go in the bottom panel. Only numeric values are plotted: missing keys,
    ``null`` and non-numeric values simply leave gaps. Raises
    :class:`slotfill.errors.DataError` (a ``SlotfillError``) naming the file and line for a
    line that is not a JSON object or whose ``epoch`` is not a number, and naming the file
    when it cannot be read or contains no epoch records at all.
    """
    path = Path(metrics_jsonl)
    records = _read_epochs(path)
    if not records:
        raise DataError("no per-epoch records to plot", path)
    _save_png(training_curves_figure(records, best_epoch), png_path)


def training_curves_figure(records: list[dict], best_epoch: float | None = None):
    """The figure :func:`plot_training_curves` saves, from epoch records (as ``_read_epochs`` gives them)."""
    fig = _new_figure((8.0, 7.0))
    loss_ax, dev_ax = fig.subplots(2, 1, sharex=True)
    kept = best_epoch if best_epoch is not None else kept_epoch(records)
    kept_label = None if kept is None else f"epoch kept ({kept:g})"
    for ax in (loss_ax, dev_ax) if kept is not None else ():
        ax.axvline(kept, color="black", linestyle=":", linewidth=1.5, zorder=0,
                   label=kept_label if ax is dev_ax else None)

    loss_keys = _keys(records, _is_loss)
    for key in loss_keys:
        xs, ys = _series(records, key)
        loss_ax.plot(xs, ys, marker="o", markersize=3, label=key)
    handles, labels = loss_ax.get_legend_handles_labels()
    lr_x, lr_y = _series(records, "lr")
    if any(math.isfinite(v) for v in lr_y):
        lr_ax = loss_ax.twinx()
        (line,) = lr_ax.plot(lr_x, lr_y, color="0.5", linestyle="--", label="lr")
        if all(v > 0 for v in lr_y if math.isfinite(v)):
            lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate")
        handles.append(line)
        labels.append("lr")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Training loss")
    if handles:
        loss_ax.legend(handles, labels, loc="upper right")
    else:
        loss_ax.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=loss_ax.transAxes)

    dev_keys = _keys(records, _is_dev_metric)
    for key in dev_keys:
        xs, ys = _series(records, key)
        (line,) = dev_ax.plot(xs, ys, marker="o", markersize=3, label=key)
        if kept in xs and math.isfinite(ys[xs.index(kept)]):
            dev_ax.plot([kept], [ys[xs.index(kept)]], marker="o", markersize=9, markerfacecolor="none",
                        color=line.get_color(), linestyle="none")  # its own colour: the cycle moves on
    dev_ax.set_xlabel("epoch")
    dev_ax.set_ylabel("score")
    dev_ax.set_title("Dev metrics")
    if dev_keys or kept is not None:
        dev_ax.legend(loc="lower right")
    else:
        dev_ax.text(0.5, 0.5, "no dev metrics recorded", ha="center", va="center", transform=dev_ax.transAxes)
    for ax in (loss_ax, dev_ax):
        ax.grid(True, alpha=0.3)
    return fig


def _bins_ece(bins: Sequence[Mapping]) -> float | None:
    total = sum(int(b["count"]) for b in bins)
    if not total:
        return None
    return sum(
        int(b["count"]) / total * abs(float(b["accuracy"]) - float(b["mean_confidence"]))
        for b in bins
        if b["count"]
    )


ACCURACY_COLOR = "tab:blue"
GAP_COLOR = "tab:red"


def _gap_style() -> dict:
    """The gap to confidence: red hatching and outline, no fill. A translucent fill would blend with the
    accuracy bar under it where a bin is under-confident (a colour the legend never shows); hatching
    drawn in one opaque colour looks the same over white, over a bar and in the legend."""
    from matplotlib.patches import Patch

    style = {"facecolor": "none", "edgecolor": GAP_COLOR, "hatch": "///", "linewidth": 1.0}
    if hasattr(Patch, "set_hatchcolor"):  # matplotlib >= 3.10; before it the hatch takes the edge colour
        style["hatchcolor"] = GAP_COLOR
    return style


def _draw_reliability(ax, bins: Sequence[Mapping], subtitle: str) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    filled = [b for b in bins if b["count"]]
    widths = [float(b["hi"]) - float(b["lo"]) for b in filled]
    lefts = [float(b["lo"]) for b in filled]
    accs = [float(b["accuracy"]) for b in filled]
    confs = [float(b["mean_confidence"]) for b in filled]
    ax.bar(lefts, accs, width=widths, align="edge", color=ACCURACY_COLOR, edgecolor="black")
    # Drawn over the accuracy bars: an under-confident bin's gap lies inside its bar.
    ax.bar(lefts, [c - a for c, a in zip(confs, accs)], bottom=accs, width=widths, align="edge", zorder=3,
           **_gap_style())
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ece = _bins_ece(bins)
    n = sum(int(b["count"]) for b in bins)
    ece_text = "n/a" if ece is None else f"{100 * ece:.2f}%"
    ax.set_title(f"{subtitle} (ECE {ece_text}, n={n})")
    # The legend's keys are patches of exactly the bars' styles (not copies the legend makes of the bars).
    ax.legend(handles=[Line2D([], [], linestyle="--", color="gray", label="perfect calibration"),
                       Patch(facecolor=ACCURACY_COLOR, edgecolor="black", label="accuracy"),
                       Patch(label="gap to confidence", **_gap_style())], loc="upper left")


def plot_reliability(
    bins_before: Sequence[Mapping],
    bins_after: Sequence[Mapping] | None,
    png_path: str | Path,
    title: str,
) -> None:
    """Reliability diagram(s) from :func:`slotfill.scoring.metrics.reliability_bins` output.

    Draws "before" and "after" (calibration) side by side, each with per-bin accuracy bars,
    the gap to the bin's mean confidence, the diagonal, and the ECE implied by the bins.
    ``bins_after=None`` draws the "before" panel alone. Saves a PNG atomically.
    """
    panels = [(bins_before, "before")]
    if bins_after is not None:
        panels.append((bins_after, "after"))
    fig = _new_figure((5.5 * len(panels), 5.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (bins, subtitle) in zip(axes, panels):
        _draw_reliability(ax, bins, subtitle)
    fig.suptitle(title)
    _save_png(fig, png_path)


# --------------------------------------------------------------------------- tables


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table with columns padded to a common width.

    Cells are converted with ``str``; a ``|`` inside a cell is escaped. Every row must have
    as many cells as there are headers (``ValueError`` otherwise).
    """
    if not headers:
        raise ValueError("markdown_table needs at least one column")

    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    head = [cell(h) for h in headers]
    body = []
    for index, row in enumerate(rows):
        if len(row) != len(headers):
            raise ValueError(f"row {index} has {len(row)} cells, expected {len(headers)}")
        body.append([cell(v) for v in row])
    widths = [max([3, len(head[c])] + [len(r[c]) for r in body]) for c in range(len(head))]

    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(cells, widths)) + " |"

    out = [line(head), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in body]
    return "\n".join(out) + "\n"


def mean_std(values: Iterable[float], digits: int = 2) -> str:
    """``"mean ± std"`` with the sample standard deviation (n - 1), e.g. ``95.61 ± 0.12``.

    Values are formatted as given (scale to percent before calling). A single value gives
    ``± 0.00``; no values, or a NaN/infinite one, is a ``ValueError``.
    """
    data = [float(v) for v in values]
    if not data:
        raise ValueError("mean_std needs at least one value")
    if not all(math.isfinite(v) for v in data):
        raise ValueError("mean_std got a NaN or infinite value")
    mean = statistics.fmean(data)
    std = statistics.stdev(data) if len(data) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
