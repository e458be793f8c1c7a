"""Training and tagging speed of slotfill against flair's BiLSTM-CRF, on the same data and thread count.

Runs in the slotfill virtual environment. In one invocation, one after the other:

1. slotfill: ``Trainer`` with the default ``TrainConfig`` (``--set key=value`` overrides it) for ``--epochs``
   epochs; train sentences/s is ``TrainResult.sentences_per_second`` (only the training steps are timed: no data
   loading, no per-epoch dev evaluation, no export). Tagging: the exported artifact is loaded with
   ``Predictor.load`` and timed with ``training.compare.tagging_speed`` over the whole test split (both modes
   warmed up, then the best of 3 interleaved passes of one sentence per call and of batches of 64), starting
   from token lists.
2. flair: ``bench/flair_runner.py`` in flair's own virtual environment (``--flair-python``), with the same data,
   epochs, limit, seed and threads, and the slotfill settings that have a flair counterpart (hidden size, layers,
   cell, direction, CRF, word embedding size, vocabulary min frequency, batch size).

Both sides run with ``--threads`` torch threads (torch.set_num_threads and OMP_NUM_THREADS/MKL_NUM_THREADS).
Prints a Markdown table and the slotfill/flair ratios; writes everything to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"
SPLITS = ("train", "valid", "test")
FILES = ("seq.in", "seq.out", "label")
BUSY_LOAD = 0.5  # 1-minute load average above which the run is flagged as taken on a busy machine


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="atis",
                        help=f"data folder (train/valid/test with seq.in, seq.out, label), or a dataset name under "
                             f"{DATASETS} (default: atis)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs for both systems (default 2)")
    parser.add_argument("--limit", type=int, default=0,
                        help="keep the first K sentences of each split, for smoke tests (default 0: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both systems (default 2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", nargs="+",
                        help="override a slotfill TrainConfig setting, e.g. --set cell=gru (repeatable)")
    parser.add_argument("--flair-python", default=str(REPO / ".bench" / "flair-venv" / "bin" / "python"),
                        help="python of the flair virtual environment (default: .bench/flair-venv/bin/python, "
                             "made by bench/setup.sh)")
    parser.add_argument("--no-flair", action="store_true", help="measure slotfill only")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "training_speed.json",
                        help="JSON results file (default: bench/results/training_speed.json)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where slotfill's model and the --limit data are written (default: a temporary "
                             "folder, removed afterwards)")
    return parser.parse_args(argv)


ARGS = parse_args()
# Thread counts must be fixed before torch is imported.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = str(ARGS.threads)

import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import torch  # noqa: E402

import slotfill  # noqa: E402
from slotfill.inference.predictor import Predictor  # noqa: E402
from training.compare import tagging_speed  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.pipeline import Trainer  # noqa: E402


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def resolve_data(value: str) -> Path:
    path = Path(value)
    if not path.is_dir() and "/" not in value and (DATASETS / value).is_dir():
        path = DATASETS / value
    if not (path / "train" / "seq.in").is_file():
        raise SystemExit(f"{path}: expected train/seq.in (folder format: train/valid/test with seq.in, seq.out, label)")
    return path.resolve()


def limited_copy(data_dir: Path, limit: int, target: Path) -> Path:
    """The first ``limit`` lines of every split file: the same sentences flair_runner.py reads with --limit."""
    for split in SPLITS:
        for name in FILES:
            source = data_dir / split / name
            if source.is_file():
                (target / split).mkdir(parents=True, exist_ok=True)
                lines = source.read_text(encoding="utf-8").splitlines()[:limit]
                (target / split / name).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return target


def read_tokens(data_dir: Path, limit: int) -> tuple[str, list[list[str]]]:
    """Token lists of the test split (valid if none), exactly as flair_runner.py reads them."""
    for split in ("test", "valid"):
        path = data_dir / split / "seq.in"
        if path.is_file():
            lists = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
            lists = [tokens for tokens in lists if tokens]
            if lists:
                return split, lists[:limit] if limit else lists
    raise SystemExit(f"{data_dir}: no test or valid split to time tagging on")


def machine() -> dict:
    info = {"nproc": None, "nproc_all": None, "cpu_count": os.cpu_count(), "cpu_model": None,
            "platform": platform.platform(), "python": platform.python_version()}
    # nproc honours OMP_NUM_THREADS (set above for torch), so run it without.
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT")}
    for key, command in (("nproc", ["nproc"]), ("nproc_all", ["nproc", "--all"])):
        try:
            info[key] = int(subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout)
        except (OSError, subprocess.CalledProcessError, ValueError):
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def git_revision() -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def run_slotfill(data_dir: Path, config: TrainConfig, work: Path, limit: int) -> dict:
    out_dir = work / "slotfill-model"
    trainer = Trainer(data_dir, out_dir, config, overwrite=True, progress=False, log=lambda m: log(f"slotfill: {m}"))
    result = trainer.run()
    split, token_lists = read_tokens(data_dir, limit)
    predictor = Predictor.load(out_dir)
    single, batched = tagging_speed(predictor, token_lists, limit=len(token_lists))
    log(f"slotfill: tagging {len(token_lists)} {split} sentences: {single:.0f}/s one at a time, {batched:.0f}/s in "
        f"batches of 64")
    return {
        "train_sentences_per_second": result.sentences_per_second,
        "epoch_seconds": [record["epoch_seconds"] for record in result.history],
        "train_seconds": result.train_seconds,
        "epochs": result.epochs,
        "tag_single_per_second": single,
        "tag_batch64_per_second": batched,
        "parameters": result.parameters,
        "slotfill_version": slotfill.__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_sentences": len(trainer.data.train_examples),
        "tag_sentences": len(token_lists),
        "tag_split": split,
        "labels": len(trainer.data.labels),
        "test_slot_f1": result.report.get("slot_f1"),
        "config": config.to_dict(),
    }


def flair_command(args: argparse.Namespace, data_dir: Path, config: TrainConfig) -> list[str]:
    """flair_runner.py with the slotfill settings that have a flair counterpart."""
    command = [args.flair_python, str(REPO / "bench" / "flair_runner.py"), "--data", str(data_dir),
               "--split", "train", "--epochs", str(args.epochs), "--limit", str(args.limit),
               "--threads", str(args.threads), "--seed", str(config.seed), "--batch-size", str(config.batch_size),
               "--hidden-size", str(config.model.hidden_size), "--rnn-layers", str(config.model.num_layers),
               "--rnn-type", {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[config.model.cell],
               "--word-dim", str(config.model.word_dim), "--min-freq", str(config.min_freq)]
    if not config.model.bidirectional:
        command.append("--unidirectional")
    if config.model.decoder != "crf":
        command.append("--no-crf")
    return command


def run_flair(command: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log(f"flair: {shlex.join(command)}")
    # stderr (flair's progress) goes straight through; the result is the last stdout line.
    process = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    lines = [line for line in process.stdout.splitlines() if line.strip()]
    if process.returncode != 0 or not lines:
        sys.stderr.write(process.stdout)
        raise SystemExit(f"flair_runner.py failed (exit {process.returncode})")
    try:
        return json.loads(lines[-1])
    except ValueError:
        sys.stderr.write(process.stdout)
        raise SystemExit("flair_runner.py: the last stdout line is not JSON") from None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def table(results: dict[str, dict]) -> str:
    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f}"

    rows = ["| system | train sentences/s | tag/s (single) | tag/s (batch 64) | parameters |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        rows.append(f"| {name} | {num(r['train_sentences_per_second'])} | {num(r['tag_single_per_second'])} | "
                    f"{num(r['tag_batch64_per_second'])} | {r['parameters']:,} |")
    return "\n".join(rows)


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    data_dir = resolve_data(args.data)
    config = TrainConfig()
    config.epochs = args.epochs
    config.apply_overrides([pair for group in args.overrides for pair in group])
    if config.threads not in (0, args.threads):
        raise SystemExit("use --threads (it applies to both systems), not --set threads=...")
    config.threads = args.threads
    if config.epochs != args.epochs:
        raise SystemExit("use --epochs (it applies to both systems), not --set epochs=...")
    config.validate()

    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    if load_before[0] > BUSY_LOAD:
        log(f"WARNING: the machine is busy (1-minute load average {load_before[0]:.2f}); timings taken now are not "
            f"comparable: with {args.threads} thread(s) on a shared CPU they can be off by orders of magnitude")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="slotfill-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        train_dir = limited_copy(data_dir, args.limit, work / "data") if args.limit else data_dir
        log(f"slotfill: {args.epochs} epoch(s) on {train_dir}, {args.threads} thread(s)")
        results = {"slotfill": run_slotfill(train_dir, config, work, args.limit)}
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    flair_cmd = None
    if not args.no_flair:
        flair_cmd = flair_command(args, data_dir, config)
        results["flair"] = run_flair(flair_cmd, args.threads)
    load_after = os.getloadavg()

    ratios = {}
    if "flair" in results:
        s, f = results["slotfill"], results["flair"]
        ratios = {key: ratio(s[key], f[key]) for key in
                  ("train_sentences_per_second", "tag_single_per_second", "tag_batch64_per_second", "parameters")}
    text = table(results)
    print(f"Data: `{data_dir}`{f' (first {args.limit} sentences of each split)' if args.limit else ''}, "
          f"{args.epochs} epoch(s), {args.threads} torch thread(s), tagging on the "
          f"{results['slotfill']['tag_split']} split ({results['slotfill']['tag_sentences']} sentences).\n")
    print(text)
    if ratios:
        print("\nslotfill / flair: " + ", ".join(
            f"{name} {ratios[key]:.2f}x" if ratios[key] else f"{name} n/a" for name, key in
            (("train", "train_sentences_per_second"), ("tag single", "tag_single_per_second"),
             ("tag batch 64", "tag_batch64_per_second"), ("parameters", "parameters"))))

    report = {
        "date": started_at,
        "command": command,
        "cwd": str(Path.cwd()),
        "flair_command": shlex.join(flair_cmd) if flair_cmd else None,
        "data": str(data_dir),
        "limit": args.limit,
        "epochs": args.epochs,
        "threads": args.threads,
        "overrides": [pair for group in args.overrides for pair in group],
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "busy_machine": load_before[0] > BUSY_LOAD or load_after[0] > BUSY_LOAD + args.threads,
        "git": git_revision(),
        "torch_version": {"slotfill": torch.__version__, "flair": results.get("flair", {}).get("torch_version")},
        "results": results,
        "ratios_slotfill_over_flair": ratios,
        "table": text,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
