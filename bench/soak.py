"""Soak test: the slotfill service at a fixed ~80% of its capacity for a long while, watching memory.

One command, from the repository root, on an otherwise idle machine:

    .venv/bin/python bench/soak.py --model artifacts/sample --out bench/results/soak.json   # --duration 300

What it does (reusing ``bench/load.py``'s helpers: wrk installation, bodies, server process, wrk parsing):

1. starts ``python -m service --model DIR`` (one worker) on a free 127.0.0.1 port and waits for ``/ready``;
2. warm-up: ``wrk`` at ``--capacity-connections`` for ``--warmup`` seconds (unmeasured);
3. capacity: ``wrk -c16`` (closed loop: each connection sends as soon as it has its answer) for
   ``--capacity-duration`` seconds; its requests/s is the capacity;
4. settle: the soak's rate for ``--settle`` seconds (60), so the micro-batches and buffers of the soak's
   own load are in place before the memory baseline (errors here count as soak errors);
5. soak: ``--load-fraction`` (0.8) of that rate, held for ``--duration`` seconds by an open-loop
   generator -- requests are scheduled at fixed intervals whether or not earlier ones were answered,
   so a slow server sees its queue grow instead of its clients slowing down. With ``wrk2`` on PATH
   (``wrk -R``; not in Debian) that is ``wrk2 -R RATE``; otherwise (``--generator python``, what
   happens on Debian) a small asyncio client in this file: ``--connections`` keep-alive connections,
   raw HTTP/1.1, latency counted from each request's scheduled time (so time spent waiting for a free
   connection counts, as wrk2 does);
6. meanwhile samples the server's resident memory (``VmRSS`` in ``/proc/PID/status``) every
   ``--sample-interval`` seconds;
7. prints a summary and writes JSON (``--out``): capacity, target and achieved rate, requests, errors by
   status (non-2xx) and socket errors, latency p50/p90/p99/max, RSS after settling (start of the soak),
   maximum and at the end, and growth in percent.

Exit status: 0 when the soak had no non-2xx response and no socket error and memory grew by at most
``--max-growth-percent``; 1 otherwise; 2 for a set-up problem (no wrk, no model, a server that does not start).
Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load import (
    ATIS_TEST,
    LUA,
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

SAMPLE_TEST = REPO / "slotfill" / "resources" / "sample" / "test" / "seq.in"


# ----------------------------------------------------------------------------- memory
def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (``VmRSS``), or ``None`` once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Samples ``rss_kib(pid)`` every ``interval`` seconds on a thread: ``(seconds since start, KiB)``."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._started = 0.0

    def _run(self) -> None:
        while True:
            value = rss_kib(self.pid)
            if value is not None:
                self.samples.append((round(time.monotonic() - self._started, 2), value))
            if self._stop.wait(self.interval):
                break

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        value = rss_kib(self.pid)  # one last sample: "at the end" is the end
        if value is not None:
            self.samples.append((round(time.monotonic() - self._started, 2), value))


# ----------------------------------------------------------------------------- open-loop client
@dataclass
class OpenLoopResult:
    scheduled: int = 0
    completed: int = 0
    send_window_s: float = 0.0
    elapsed_s: float = 0.0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    socket_errors: collections.Counter = field(default_factory=collections.Counter)
    latencies_s: list[float] = field(default_factory=list)  # from the scheduled time
    queued: int = 0  # requests that found every connection busy and waited for one
    service_latencies_s: list[float] = field(default_factory=list)  # from the moment it was written


def build_requests(bodies: list[bytes], host: str, port: int, path: str = "/v1/tag") -> list[bytes]:
    """Every request formatted once (as ``load_post.lua`` does for wrk)."""
    return [(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(body)}\r\n\r\n").encode("ascii") + body for body in bodies]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """One HTTP/1.1 response off ``reader``: (status, the server will close the connection)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("connection closed before a response")
    status = int(status_line.split(None, 2)[1])
    length: int | None = None
    chunked = close = False
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionResetError("connection closed in the headers")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
        elif name == b"connection" and value == b"close":
            close = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            await reader.readexactly(size + 2)
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()
        close = True
    return status, close


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


async def open_loop(host: str, port: int, requests: list[bytes], *, rate: float, duration: float,
                    connections: int, timeout: float) -> OpenLoopResult:
    """Send ``requests`` (in a circle) at ``rate`` per second for ``duration`` seconds, on at most
    ``connections`` keep-alive connections; a request that finds them all busy waits for one.

    Times come from ``time.perf_counter`` (uvloop's ``loop.time()`` ticks in whole milliseconds)."""
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    result = OpenLoopResult()
    idle: asyncio.Queue[_Connection | None] = asyncio.Queue()

    async def connect() -> _Connection | None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, asyncio.TimeoutError):
            result.socket_errors["connect"] += 1
            return None
        return _Connection(reader, writer)

    for _ in range(connections):
        idle.put_nowait(await connect())

    async def one(request: bytes, scheduled: float) -> None:
        if idle.empty():
            result.queued += 1
        connection = await idle.get()
        if connection is None:  # a connection that failed earlier: try again now
            connection = await connect()
            if connection is None:
                idle.put_nowait(None)
                return
        written = clock()
        phase = "write"
        try:
            connection.writer.write(request)
            await connection.writer.drain()
            phase = "read"
            status, close = await asyncio.wait_for(read_response(connection.reader), timeout)
        except asyncio.TimeoutError:
            result.socket_errors["timeout"] += 1
            connection.close()
            idle.put_nowait(None)
            return
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            result.socket_errors[phase] += 1
            connection.close()
            idle.put_nowait(None)
            return
        done = clock()
        result.completed += 1
        result.statuses[status] += 1
        result.latencies_s.append(done - scheduled)
        result.service_latencies_s.append(done - written)
        if close:
            connection.close()
            connection = None
        idle.put_nowait(connection)

    total = max(1, int(rate * duration))
    tasks: set[asyncio.Task[None]] = set()
    start = clock()
    sent = 0
    while sent < total:
        # Everything due by now goes out at once: a late wake-up never lowers the rate.
        due = min(total, int((clock() - start) * rate) + 1)
        while sent < due:
            task = loop.create_task(one(requests[sent % len(requests)], start + sent / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - clock()))
    result.scheduled = sent
    result.send_window_s = clock() - start
    if tasks:
        _, late = await asyncio.wait(set(tasks), timeout=timeout + 5)
        for task in late:
            task.cancel()
            result.socket_errors["timeout"] += 1
    result.elapsed_s = clock() - start
    while not idle.empty():
        connection = idle.get_nowait()
        if connection is not None:
            connection.close()
    return result


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` in [0, 1]) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def latency_summary(values_s: list[float]) -> dict[str, float | None]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {"p50_ms": ms(percentile(values_s, 0.50)), "p90_ms": ms(percentile(values_s, 0.90)),
            "p99_ms": ms(percentile(values_s, 0.99)), "p99.9_ms": ms(percentile(values_s, 0.999)),
            "max_ms": ms(max(values_s) if values_s else None)}


def run_python_generator(host: str, port: int, bodies: list[bytes], args: argparse.Namespace,
                         rate: float) -> dict[str, Any]:
    try:
        import uvloop  # the service's own event loop: the generator needs as little CPU as it can get

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        runner = asyncio.run
    requests = build_requests(bodies, host, port)
    cpu_started = time.process_time()
    result = runner(open_loop(host, port, requests, rate=rate, duration=args.duration,
                              connections=args.connections, timeout=args.timeout))
    client_cpu_s = time.process_time() - cpu_started  # it shares the machine's cores with the server
    non_2xx = {str(status): count for status, count in sorted(result.statuses.items()) if not 200 <= status < 300}
    return {
        "generator": f"python open loop ({args.connections} keep-alive connections)",
        "requests": result.completed, "scheduled": result.scheduled,
        # Many of these with "latency" far above "service_latency": the generator, not the server, queued
        # them (raise --connections).
        "queued_for_a_connection": result.queued,
        "send_window_s": round(result.send_window_s, 3), "elapsed_s": round(result.elapsed_s, 3),
        "achieved_rate": round(result.completed / result.elapsed_s, 2) if result.elapsed_s else 0.0,
        "sent_rate": round(result.scheduled / result.send_window_s, 2) if result.send_window_s else 0.0,
        "statuses": {str(status): count for status, count in sorted(result.statuses.items())},
        "non_2xx_by_status": non_2xx, "non_2xx": sum(non_2xx.values()),
        "socket_errors": {key: result.socket_errors.get(key, 0) for key in ("connect", "write", "read", "timeout")},
        "latency": latency_summary(result.latencies_s),
        "service_latency": latency_summary(result.service_latencies_s),
        "client_cpu_s": round(client_cpu_s, 2),
    }


# ----------------------------------------------------------------------------- wrk2 (when installed)
def find_wrk2() -> str | None:
    """A rate-limited wrk: ``wrk2`` on PATH, or a ``wrk`` whose usage lists ``--rate`` (a wrk2 build)."""
    for name in ("wrk2", "wrk"):
        found = shutil.which(name)
        if found is None:
            continue
        usage = subprocess.run([found, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if "--rate" in usage.stdout:
            return found
    return None


def run_wrk2(wrk2: str, url: str, bodies_file: Path, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    """Not exercised where this was written (Debian has no wrk2): same report shape as the python generator."""
    command = [wrk2, "-t2", f"-c{args.connections}", f"-d{args.duration:g}s", f"-R{rate:.0f}", "--latency",
               f"--timeout={args.timeout:g}s", "-s", str(LUA), url, "--", str(bodies_file)]
    completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=args.duration + args.timeout + 120)
    if completed.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({completed.returncode}):\n{completed.stdout}")
    # wrk2 titles its distribution "Latency Distribution (HdrHistogram - Recorded Latency)".
    parsed = parse_wrk(re.sub(r"Latency Distribution \([^)]*\)", "Latency Distribution", completed.stdout))
    percentiles = parsed["latency_ms"]
    return {
        "generator": f"wrk2 -R{rate:.0f} ({args.connections} connections)", "command": shlex.join(command),
        "requests": parsed.get("requests"), "scheduled": None, "elapsed_s": parsed.get("duration_s"),
        "achieved_rate": parsed["requests_per_s"], "sent_rate": None,
        "statuses": None, "non_2xx_by_status": {"non-2xx": parsed["non_2xx"]} if parsed["non_2xx"] else {},
        "non_2xx": parsed["non_2xx"], "socket_errors": parsed["socket_errors"],
        "latency": {"p50_ms": parsed["p50_ms"], "p90_ms": percentiles.get("p90"), "p99_ms": parsed["p99_ms"],
                    "p99.9_ms": percentiles.get("p99.9"), "max_ms": percentiles.get("p100")},
        "wrk_output": completed.stdout,
    }


# ----------------------------------------------------------------------------- soak
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Soak test: the service at a fixed fraction of its measured "
                                                 "capacity for --duration seconds, sampling its memory.")
    parser.add_argument("--model", required=True, help="artifact directory to serve (nothing is trained here)")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of soak (default 300)")
    parser.add_argument("--load-fraction", type=float, default=0.8, help="target rate as a fraction of the "
                                                                         "measured capacity (default 0.8)")
    parser.add_argument("--rate", type=float, help="target requests/s; skips the capacity measurement")
    parser.add_argument("--capacity-duration", type=float, default=10.0, help="seconds of wrk for the capacity "
                                                                              "(default 10)")
    parser.add_argument("--capacity-connections", type=int, default=16, help="wrk connections for the warm-up and "
                                                                             "the capacity (default 16)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured wrk load first (default 3)")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds at the soak's rate before the RSS baseline is taken (default 60; its "
                             "errors count too)")
    parser.add_argument("--connections", type=int, default=64, help="connections of the rate-limited generator "
                                                                    "(default 64)")
    parser.add_argument("--generator", choices=["auto", "wrk2", "python"], default="auto",
                        help="rate-limited load: wrk2 when installed (auto), else the built-in asyncio client")
    parser.add_argument("--sample-interval", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    parser.add_argument("--max-growth-percent", type=float, default=20.0,
                        help="RSS growth (end vs start of the soak) above which the run fails (default 20)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds (default 10)")
    parser.add_argument("--utterances", type=Path, help="one utterance per line (default: ATIS test seq.in in "
                                                        "../shared/datasets, else the bundled sample's test split)")
    parser.add_argument("--count", type=int, default=100, help="utterances used, from the top (default 100)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="SLOTFILL_KEY=VALUE",
                        help="extra service setting (repeatable), e.g. SLOTFILL_BATCH_MAX_WAIT_MS=5")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--log-dir", type=Path, help="keep the server's log here (default: a temporary folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = check_artifact(args.model)
        extra_settings = parse_settings(args.settings)
    except SetupError as exc:
        log(f"error: {exc}")
        return 2
    if args.utterances is None:
        args.utterances = ATIS_TEST if ATIS_TEST.is_file() else SAMPLE_TEST
    wrk2 = None
    if args.generator != "python":
        wrk2 = find_wrk2()
        if wrk2 is None and args.generator == "wrk2":
            log("error: --generator wrk2, but no wrk2 on PATH (Debian does not package it)")
            return 2
    try:
        wrk = ensure_wrk() if args.rate is None or args.warmup > 0 else None
    except SetupError as exc:
        log(f"error: {exc}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="slotfill-soak-"))
    try:
        return run_soak(args, argv, wrk, wrk2, model, extra_settings, work)
    except SetupError as exc:
        log(f"error: {exc}")
        return 2
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_soak(args: argparse.Namespace, argv: list[str] | None, wrk: str | None, wrk2: str | None, model: Path,
             extra_settings: dict[str, str], work: Path) -> int:
    command_line = shlex.join([sys.executable, *sys.argv]) if argv is None else \
        shlex.join([sys.executable, "bench/soak.py", *argv])
    log_dir = args.log_dir or work
    log_dir.mkdir(parents=True, exist_ok=True)
    bodies_file = work / "bodies.jsonl"
    used = write_bodies(args.utterances, args.count, bodies_file)
    bodies = [line.encode("utf-8") for line in bodies_file.read_text(encoding="utf-8").splitlines() if line]

    port = free_port()
    host = "127.0.0.1"
    url = f"http://{host}:{port}"
    env = clean_env(extra_settings)
    server_command = [sys.executable, "-m", "service", "--model", str(model), "--host", host, "--port", str(port),
                      "--workers", "1"]
    log(f"== starting {shlex.join(server_command[1:])}")
    server = ServerProcess("slotfill", server_command, env, ("GET", f"{url}/ready", None), log_dir / "soak-server.log")
    pid = server.process.pid
    report: dict[str, Any] = {
        "benchmark": "slotfill soak",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line,
        "git": git_revision(),
        "machine": machine(),
        "versions": {**versions(), "wrk": wrk_version(wrk) if wrk else None},
        "load_average_start": load_average(),
        "config": {"duration_s": args.duration, "load_fraction": args.load_fraction, "rate": args.rate,
                   "capacity_duration_s": args.capacity_duration, "capacity_connections": args.capacity_connections,
                   "warmup_s": args.warmup, "settle_s": args.settle, "connections": args.connections, "sample_interval_s": args.sample_interval,
                   "timeout_s": args.timeout, "model": str(model), "utterances": str(args.utterances),
                   "utterances_used": used, "request": 'POST /v1/tag {"text": <utterance>}',
                   "slotfill_settings": extra_settings, "workers": 1},
    }
    rss_ready = rss_kib(pid)
    status = 0
    try:
        if args.warmup > 0 and wrk is not None:
            log(f"   warm-up {args.warmup:g}s (wrk, {args.capacity_connections} connections)")
            run_wrk(wrk, url, bodies_file, threads=2, connections=args.capacity_connections, duration=args.warmup,
                    timeout=args.timeout)
        if args.rate is None:
            assert wrk is not None
            log(f"   capacity: wrk -c{args.capacity_connections} for {args.capacity_duration:g}s")
            wrk_command, output = run_wrk(wrk, url, bodies_file, threads=2, connections=args.capacity_connections,
                                          duration=args.capacity_duration, timeout=args.timeout)
            capacity_run = parse_wrk(output)
            capacity = capacity_run["requests_per_s"]
            report["capacity"] = {"requests_per_s": capacity, "p50_ms": capacity_run["p50_ms"],
                                  "p99_ms": capacity_run["p99_ms"], "requests": capacity_run.get("requests"),
                                  "non_2xx": capacity_run["non_2xx"], "socket_errors": capacity_run["socket_errors"],
                                  "wrk_command": shlex.join(wrk_command)}
            target = capacity * args.load_fraction
        else:
            capacity = None
            report["capacity"] = None
            target = args.rate
        if target <= 0:
            raise SetupError(f"no load to apply (capacity {capacity}, target {target})")
        log(f"   capacity {capacity if capacity is None else round(capacity, 1)} requests/s; soaking at "
            f"{target:.1f} requests/s for {args.duration:g}s")
        def generate(duration: float) -> dict[str, Any]:
            run_args = argparse.Namespace(**{**vars(args), "duration": duration})
            if wrk2 is not None:
                return run_wrk2(wrk2, url, bodies_file, run_args, target)
            return run_python_generator(host, port, bodies, run_args, target)

        if args.settle > 0:
            # The soak's own rate and connection count reach bigger micro-batches (and buffers) than the
            # capacity run did; memory growth is measured from the working set they settle at.
            log(f"   settling {args.settle:g}s at {target:.1f} requests/s before the baseline")
            report["settle"] = generate(args.settle)
            report["settle"]["rss_kib_after"] = rss_kib(pid)
        rss_start = rss_kib(pid)
        with RssSampler(pid, args.sample_interval) as sampler:
            soak = generate(args.duration)
        rss_end = rss_kib(pid)
    finally:
        returncode = server.stop()
    samples = sampler.samples
    values = [value for _, value in samples]
    rss_start = rss_start or (values[0] if values else None)
    rss_end = rss_end or (values[-1] if values else None)
    growth = round((rss_end - rss_start) / rss_start * 100, 2) if rss_start and rss_end else None
    errors = soak["non_2xx"] + sum(soak["socket_errors"].values())
    if report.get("settle"):
        errors += report["settle"]["non_2xx"] + sum(report["settle"]["socket_errors"].values())
    report.update({
        "target_rate": round(target, 2),
        "soak": soak,
        "memory": {"rss_ready_kib": rss_ready, "rss_start_kib": rss_start, "rss_max_kib": max(values, default=None),
                   "rss_end_kib": rss_end, "growth_percent": growth, "samples": samples},
        "server_exit": returncode,
        "server_log": str(log_dir / "soak-server.log") if args.log_dir else None,
        "load_average_end": load_average(),
    })
    report["verdict"] = {"errors": errors, "max_growth_percent": args.max_growth_percent,
                         "ok": errors == 0 and growth is not None and growth <= args.max_growth_percent}
    if not report["verdict"]["ok"]:
        status = 1

    latency = soak["latency"]
    print()
    print(f"Soak, {report['date']}, {report['machine']['cpus']} CPUs ({report['machine']['cpu']}), "
          f"git {str(report['git']['commit'])[:12]}{' (dirty)' if report['git']['dirty'] else ''}")
    print(f"capacity (wrk -c{args.capacity_connections}, {args.capacity_duration:g}s): "
          f"{'n/a (--rate)' if capacity is None else f'{capacity:.1f} requests/s'}")
    print(f"target {target:.1f} requests/s for {args.duration:g}s with {soak['generator']}: achieved "
          f"{soak['achieved_rate']:.1f} requests/s, {soak['requests']} requests")
    print(f"errors: non-2xx {soak['non_2xx_by_status'] or 0}, socket {soak['socket_errors']}")
    print(f"latency p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms, max {latency['max_ms']} ms"
          + (f" (from the scheduled time; from the write: p50 {soak['service_latency']['p50_ms']} ms, p99 "
             f"{soak['service_latency']['p99_ms']} ms; {soak['queued_for_a_connection']} requests waited for a "
             "free connection)" if "service_latency" in soak else ""))
    print(f"RSS: ready {rss_ready} KiB, soak start {rss_start} KiB, max {max(values, default=None)} KiB, "
          f"end {rss_end} KiB, growth {growth}% (limit {args.max_growth_percent:g}%)")
    print(f"verdict: {'ok' if status == 0 else 'NOT ok'}; server exit status {returncode}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
