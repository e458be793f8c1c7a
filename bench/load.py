"""HTTP load benchmark: slotfill's ``POST /v1/tag`` against a no-op FastAPI endpoint, with wrk.

One command, from the repository root, on an otherwise idle machine:

    .venv/bin/python bench/load.py --model artifacts/sample --out bench/results/load.json

What it does:

1. makes sure ``wrk`` is installed (``apt-get update && apt-get install -y wrk`` when it is missing,
   printing each command; it stops with a clear message when that is impossible);
2. writes the request bodies: ``{"text": line}`` for the first 100 lines of ATIS ``test/seq.in``
   (``<repo>/../shared/datasets/atis/test/seq.in``; ``--utterances FILE`` for another file);
3. for each target in turn -- the no-op app (``bench/noop_app.py``: parses the same
   ``service.schemas.TagRequest``, answers a fixed JSON), then the slotfill service
   (``python -m service --model DIR``; batching on, off, or both) -- starts the server on a free
   127.0.0.1 port, waits until it is ready, runs a short warm-up, then
   ``wrk -t2 -c16 -d{duration}s --latency -s bench/load_post.lua`` and stops the server (SIGTERM, wait);
4. parses wrk's report (requests/s, p50 and p99 from the latency distribution, non-2xx responses,
   socket errors), prints a Markdown table with each slotfill row's throughput as a fraction of
   the no-op's, and writes everything (plus machine, date, command, git revision) as JSON.

Exit status: 0 when every run finished without a non-2xx response or socket error, 1 otherwise,
2 for a set-up problem (no wrk, no model, a server that does not start).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LUA = BENCH / "load_post.lua"
NOOP_APP = BENCH / "noop_app.py"
ATIS_TEST = REPO.parent / "shared" / "datasets" / "atis" / "test" / "seq.in"
TARGET_RATIO = 0.5  # the issue: slotfill throughput at least half the no-op's


class SetupError(RuntimeError):
    pass


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- wrk
def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is not installed; installing it with apt-get")
    apt = shutil.which("apt-get")
    if apt is None:
        raise SetupError("wrk is not installed and apt-get is not available: install wrk "
                         "(https://github.com/wg/wrk) and run again")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise SetupError("wrk is not installed, and installing it needs root: run "
                             "`sudo apt-get update && sudo apt-get install -y wrk`, then run again")
        prefix = [sudo, "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (prefix + [apt, "update"], prefix + [apt, "install", "-y", "wrk"]):
        log(f"$ {shlex.join(command)}")
        result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in result.stdout.splitlines()[-5:]:
            log(f"  {line}")
        if result.returncode != 0:
            raise SetupError(f"`{shlex.join(command)}` failed with exit status {result.returncode}; "
                             "install wrk by hand and run again")
    found = shutil.which("wrk")
    if found is None:
        raise SetupError("apt-get reported success but wrk is still not on PATH")
    log(f"installed {found}")
    return found


def wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else "unknown"


_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_S[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """requests/s, latency percentiles (ms), request count, non-2xx and socket errors from wrk's report
    (``--latency``), plus the exact numbers that ``load_post.lua``'s ``done()`` prints."""
    result: dict[str, Any] = {}
    match = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if not match:
        raise ValueError("no 'Requests/sec' in wrk's output")
    result["requests_per_s"] = float(match.group(1))
    match = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", output, re.M)
    if match:
        result["requests"] = int(match.group(1))
        result["duration_s"] = _seconds(match.group(2))
    distribution = {}
    # wrk pads some values with a trailing space ("1.15s "), so allow blanks before each newline.
    block = re.search(r"Latency Distribution[ \t]*\n((?:[ \t]+[\d.]+%[ \t]+\S+[ \t]*\n)+)", output)
    if not block:
        raise ValueError("no latency distribution in wrk's output (was --latency given?)")
    for percent, value in re.findall(r"([\d.]+)%\s+(\S+)", block.group(1)):
        distribution[percent] = _seconds(value) * 1000.0
    result["latency_ms"] = {f"p{float(p):g}": value for p, value in distribution.items()}
    result["p50_ms"] = distribution.get("50.000", distribution.get("50"))
    result["p99_ms"] = distribution.get("99.000", distribution.get("99"))
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx"] = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                       (int(g) for g in match.groups()))) if match else \
        {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    result["errors"] = result["non_2xx"] + sum(result["socket_errors"].values())
    match = re.search(r"^WRK_JSON (\{.*\})$", output, re.M)
    if match:
        result["wrk_summary"] = json.loads(match.group(1))
    return result


def run_wrk(wrk: str, url: str, bodies: Path, *, threads: int, connections: int, duration: float,
            timeout: float) -> tuple[list[str], str]:
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", f"--timeout={timeout:g}s",
               "-s", str(LUA), url, "--", str(bodies)]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=duration + timeout + 60)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({result.returncode}):\n{result.stdout}")
    return command, result.stdout


# ----------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLOTFILL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def http_ok(method: str, url: str, body: bytes | None = None) -> bool:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


class ServerProcess:
    """Starts ``command`` and returns once ``ready`` (method, URL, body) answers 2xx; ``ready_s`` is the time from
    just before the spawn to that first 2xx answer (readiness is polled every ``poll_interval`` seconds)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], ready: tuple[str, str, bytes | None],
                 log_path: Path, start_timeout: float = 120.0, poll_interval: float = 0.2):
        self.name, self.command, self.log_path = name, command, log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.spawned = time.monotonic()
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        self.pid = self.process.pid
        method, url, body = ready
        deadline = self.spawned + start_timeout
        while not http_ok(method, url, body):
            if self.process.poll() is not None:
                self.stop()
                raise SetupError(f"{name} exited with {self.process.returncode} before it was ready:\n"
                                 f"{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise SetupError(f"{name} not ready after {start_timeout:g}s:\n{self.log_tail()}")
            time.sleep(poll_interval)
        self.ready_s = time.monotonic() - self.spawned

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop within 40 s of SIGTERM; killing it")
                self.process.kill()
                self.process.wait(timeout=20)
        self._log.close()
        return self.process.returncode


# ----------------------------------------------------------------------------- environment facts
def git_revision() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    status = git("status", "--porcelain")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def machine() -> dict[str, Any]:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        memory_gib = round(int(match.group(1)) / 1024 / 1024, 1) if match else None
    except OSError:
        pass
    return {"hostname": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "memory_gib": memory_gib, "python": platform.python_version()}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    from importlib import metadata

    for package in ("fastapi", "starlette", "uvicorn", "pydantic", "uvloop", "httptools", "torch"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


# ----------------------------------------------------------------------------- benchmark
def write_bodies(source: Path, count: int, destination: Path) -> int:
    if not source.is_file():
        raise SetupError(f"no utterances file at {source} (the ATIS test split lives in ../shared/datasets; "
                         "pass --utterances FILE with one utterance per line)")
    lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()][:count]
    if not lines:
        raise SetupError(f"{source} has no utterances")
    destination.write_text("".join(json.dumps({"text": line}, ensure_ascii=False) + "\n" for line in lines),
                           encoding="utf-8")
    return len(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    out = ["| target | requests/s | p50 ms | p99 ms | requests | non-2xx | socket errors | vs no-op |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        ratio = row.get("ratio_vs_noop")
        out.append(f"| {row['target']} | {row['requests_per_s']:.1f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                   f"{row.get('requests', '')} | {row['non_2xx']} | {sum(row['socket_errors'].values())} | "
                   f"{'' if ratio is None else f'{ratio:.2f}x'} |")
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="wrk load benchmark: slotfill POST /v1/tag vs a no-op FastAPI "
                                                 "endpoint parsing the same request model.")
    parser.add_argument("--model", required=True, help="artifact directory to serve (nothing is trained here)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of wrk per target (default 20)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes for both servers (default 1)")
    parser.add_argument("--batching", choices=["on", "off", "both"], default="both",
                        help="slotfill rows: micro-batching on, off, or one row each (default both)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured wrk load before each run "
                                                                  "(default 3; 0 disables)")
    parser.add_argument("--utterances", type=Path, default=ATIS_TEST,
                        help="one utterance per line (default: ATIS test seq.in in ../shared/datasets)")
    parser.add_argument("--count", type=int, default=100, help="utterances used, from the top (default 100)")
    parser.add_argument("--timeout", type=float, default=10.0, help="wrk per-request timeout in seconds (default 10)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="SLOTFILL_KEY=VALUE",
                        help="extra service setting for the slotfill runs (repeatable), e.g. "
                             "SLOTFILL_BATCH_MAX_WAIT_MS=5; the service's defaults otherwise")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here (default: a temporary folder)")
    return parser


def check_artifact(model: str | Path) -> Path:
    """The artifact directory, resolved; a SetupError unless it holds a manifest."""
    model = Path(model).resolve()
    if not (model / "manifest.json").is_file():
        raise SetupError(f"{model} is not a slotfill artifact (no manifest.json); train one first, e.g. "
                         "`.venv/bin/slotfill train --data sample --out /tmp/sample-model`")
    return model


def parse_settings(items: list[str]) -> dict[str, str]:
    """``--set SLOTFILL_KEY=VALUE`` pairs as a dict; a SetupError naming the first bad one."""
    settings: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("SLOTFILL_"):
            raise SetupError(f"--set wants SLOTFILL_KEY=VALUE, not {item!r}")
        settings[key] = value
    return settings


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        model = check_artifact(args.model)
        extra_settings = parse_settings(args.settings)
        wrk = ensure_wrk()
    except SetupError as exc:
        log(f"error: {exc}")
        return 2

    work = Path(tempfile.mkdtemp(prefix="slotfill-load-"))
    try:
        return run_benchmark(args, wrk, model, extra_settings, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_benchmark(args: argparse.Namespace, wrk: str, model: Path, extra_settings: dict[str, str], work: Path) -> int:
    command_line = shlex.join([sys.executable, *sys.argv]) if args.argv is None else \
        shlex.join([sys.executable, "bench/load.py", *args.argv])
    log_dir = args.log_dir or work
    log_dir.mkdir(parents=True, exist_ok=True)
    bodies = work / "bodies.jsonl"
    try:
        used = write_bodies(args.utterances, args.count, bodies)
    except SetupError as exc:
        log(f"error: {exc}")
        return 2
    first_body = bodies.read_text(encoding="utf-8").splitlines()[0].encode("utf-8")

    def noop_target(port: int) -> dict[str, Any]:
        return {"env": clean_env({}), "ready": ("POST", f"http://127.0.0.1:{port}/v1/tag", first_body),
                "command": [sys.executable, str(NOOP_APP), "--port", str(port), "--workers", str(args.workers)]}

    def slotfill_target(mode: str) -> Callable[[int], dict[str, Any]]:
        def make(port: int) -> dict[str, Any]:
            return {"env": clean_env({"SLOTFILL_BATCHING": "true" if mode == "on" else "false", **extra_settings}),
                    "ready": ("GET", f"http://127.0.0.1:{port}/ready", None),
                    "command": [sys.executable, "-m", "service", "--model", str(model), "--host", "127.0.0.1",
                                "--port", str(port), "--workers", str(args.workers)]}
        return make

    # Each server gets its port just before it starts (one at a time: they never compete for the CPU).
    targets: list[tuple[str, Callable[[int], dict[str, Any]]]] = [("no-op FastAPI", noop_target)]
    targets += [(f"slotfill (batching {mode})", slotfill_target(mode))
                for mode in (["on", "off"] if args.batching == "both" else [args.batching])]

    started_at = dt.datetime.now(dt.timezone.utc)
    report: dict[str, Any] = {
        "benchmark": "slotfill load (wrk)",
        "date": started_at.isoformat(timespec="seconds"),
        "command": command_line,
        "git": git_revision(),
        "machine": machine(),
        "versions": {**versions(), "wrk": wrk_version(wrk)},
        "load_average_start": load_average(),
        "config": {"duration_s": args.duration, "connections": args.connections, "threads": args.threads,
                   "workers": args.workers, "batching": args.batching, "warmup_s": args.warmup,
                   "timeout_s": args.timeout, "model": str(model), "utterances": str(args.utterances),
                   "utterances_used": used, "request": 'POST /v1/tag {"text": <utterance>}',
                   "slotfill_settings": extra_settings, "uvicorn": "loop=auto, http=auto (as service/main.py)"},
        "runs": [],
    }
    rows: list[dict[str, Any]] = []
    status = 0
    for name, make_target in targets:
        port = free_port()
        target = make_target(port)
        command, url = target["command"], f"http://127.0.0.1:{port}"
        log(f"== {name}: starting {shlex.join(command[1:])}")
        log_path = log_dir / (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".log")
        try:
            server = ServerProcess(name, command, target["env"], target["ready"], log_path)
        except SetupError as exc:
            log(f"error: {exc}")
            return 2
        try:
            if args.warmup > 0:
                log(f"   warm-up {args.warmup:g}s")
                run_wrk(wrk, url, bodies, threads=args.threads, connections=args.connections, duration=args.warmup,
                        timeout=args.timeout)
            log(f"   measuring {args.duration:g}s at {args.connections} connections")
            wrk_command, output = run_wrk(wrk, url, bodies, threads=args.threads, connections=args.connections,
                                          duration=args.duration, timeout=args.timeout)
        finally:
            returncode = server.stop()
        parsed = parse_wrk(output)
        row = {"target": name, **parsed, "wrk_command": shlex.join(wrk_command), "server_command": shlex.join(command),
               "server_env": {key: value for key, value in target["env"].items() if key.startswith("SLOTFILL_")},
               # uvicorn re-raises SIGTERM after a graceful shutdown: -15 is a clean stop
               "server_exit": "SIGTERM (clean)" if returncode == -signal.SIGTERM else returncode,
               "server_log": str(log_path) if args.log_dir else None, "wrk_output": output}
        rows.append(row)
        log(output.rstrip())
        if parsed["errors"]:
            status = 1

    noop = rows[0]["requests_per_s"]
    for row in rows[1:]:
        row["ratio_vs_noop"] = row["requests_per_s"] / noop if noop else None
    report["runs"] = rows
    report["load_average_end"] = load_average()
    met = all((row["ratio_vs_noop"] or 0) >= TARGET_RATIO for row in rows[1:]) and all(not r["errors"] for r in rows)
    report["target"] = {"ratio_at_least": TARGET_RATIO, "zero_errors": True, "met": met}

    print()
    print(f"Load benchmark, {report['date']}, {report['machine']['cpus']} CPUs ({report['machine']['cpu']}), "
          f"git {str(report['git']['commit'])[:12]}{' (dirty)' if report['git']['dirty'] else ''}")
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency, POST /v1/tag with {used} "
          f"utterances from {args.utterances.name}; {args.workers} uvicorn worker(s); model {model}")
    print(f"load average before/after: {report['load_average_start']} / {report['load_average_end']}")
    print()
    print(markdown_table(rows))
    print()
    for row in rows[1:]:
        print(f"{row['target']} / no-op throughput: {row['ratio_vs_noop']:.2f} (target >= {TARGET_RATIO})")
    print(f"target (every slotfill row >= {TARGET_RATIO}x the no-op, zero errors): {'met' if met else 'NOT met'}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    if args.log_dir is None:
        print("(server logs were in a temporary folder; --log-dir DIR keeps them)")
    return status


if __name__ == "__main__":
    sys.exit(main())
