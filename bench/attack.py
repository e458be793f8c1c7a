"""Request-level attacks against a live slotfill server, each bounded in time and connections, on 127.0.0.1.

One command, from the repository root, on an otherwise idle machine:

    .venv/bin/python bench/attack.py --model artifacts/sample --out bench/results/attack.json

Without ``--model`` a model is trained first with the sample recipe (``slotfill train --data sample --config
sample``) into a temporary folder. The server is ``python -m service --model DIR`` (what ``slotfill serve``
runs), one worker, default settings except the read timeouts (``SLOTFILL_HEADER_TIMEOUT_S``,
``SLOTFILL_BODY_TIMEOUT_S`` and ``SLOTFILL_KEEP_ALIVE_S`` 2 s, so that the slow-client attacks end soon) and
``SLOTFILL_MAX_CONNECTIONS`` 256 (so that flooding past it takes few sockets); ``--set SLOTFILL_KEY=VALUE``
changes any setting.

1. Warm-up: each request attack once (the allocator's first growth for megabyte bodies happens then,
   once per process, not per attack); then the baseline: ``GET /health`` probed for ``--baseline``
   seconds (3) with the server idle.
2. Each attack in turn -- the hardening issue's reproductions -- for ``--seconds`` (3) or, for slow
   clients, until the server has dropped them all (at most their timeout plus 5 s). Meanwhile a separate
   process probes ``/health`` every 10 ms (a new connection per probe, as a load balancer's health check
   does: a probe never waits behind another connection, and the connection cap sees it as a new client),
   and a thread samples the server's resident memory (``VmRSS``) every 20 ms. The attacking process runs
   at the lowest CPU priority (``nice 19``; the server and the prober at the usual one), since on a small
   machine its own bursts -- 200 connections waking at once -- would otherwise be measured as the
   server's. After each attack, 1 s of quiet, then the memory "after".
3. A table: attack, answers (status x count; ``closed``: the server closed the connection without an
   answer), answer time (p50 / max; for a slow client, the time until the server dropped it), ``/health``
   latency during the attack (p50 / max) against the baseline's, and RSS before, at peak and after; then
   the verdict of each goal:

   * ``/health`` answers every probe during every attack within 2x the baseline's p50 plus 20 ms;
   * RSS grows by less than 50 MB during each attack (peak - before) and comes back: 1 s after it, less than
     :data:`RSS_KEPT_MB` above where it was. Not to the byte: the allocators keep some freed pages for
     reuse (Python's object arenas, where other objects landed meanwhile, stay), up to a parsed body's
     worth, the same after 30 requests as after 130; a leak grows with every request, and each attack
     sends tens to thousands;
   * every slow client is dropped within its timeout (plus 0.5 s for scheduling on a busy machine);
   * no 5xx answer, to an attack or to a probe.

Exit status: 0 when every goal is met, 1 when one is not, 2 for a set-up problem. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load import REPO, ServerProcess, SetupError, check_artifact, clean_env, free_port, git_revision, log, machine, \
    parse_settings, versions

BODY_LIMIT = 1024 * 1024  # the default max_body_bytes: the big bodies fill it
TIMEOUT_S = 2.0
MAX_CONNECTIONS = 256
SLOW_CLIENTS = 200  # connections per slow-client attack
FLOOD = MAX_CONNECTIONS + 64
DROP_SLACK_S = 0.5
HEALTH_FACTOR, HEALTH_SLACK_MS = 2.0, 20.0
RSS_LIMIT_MB = 50.0
RSS_KEPT_MB = 20.0
PROBE_INTERVAL_S = 0.01
RSS_INTERVAL_S = 0.02


# ----------------------------------------------------------------------------- measuring
def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """``(time.time(), KiB)`` of the server's resident memory every :data:`RSS_INTERVAL_S`."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            kib = rss_kib(self.pid)
            if kib is not None:
                self.samples.append((time.time(), kib))
            time.sleep(RSS_INTERVAL_S)

    def mb_at(self, when: float) -> float:
        before = [kib for at, kib in self.samples if at <= when]
        return (before[-1] if before else self.samples[0][1]) / 1024

    def peak_mb(self, start: float, end: float) -> float:
        return max((kib for at, kib in self.samples if start <= at <= end), default=0) / 1024


def probe(host: str, port: int, results: Any, stop: Any) -> None:
    """The prober process: ``GET /health`` on a new connection every :data:`PROBE_INTERVAL_S`; sends back
    ``(time.time(), seconds, status)`` triples (status 0: no answer)."""
    samples: list[tuple[float, float, int]] = []
    request = b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
    while not stop.is_set():
        started, at = time.perf_counter(), time.time()
        status = 0
        try:
            with socket.create_connection((host, port), timeout=30) as sock:
                sock.sendall(request)
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
                status = int(answer.split(b" ", 2)[1])
        except (OSError, IndexError, ValueError):
            pass
        seconds = time.perf_counter() - started
        samples.append((at, seconds, status))
        time.sleep(max(0.0, PROBE_INTERVAL_S - seconds))
    results.send(samples)


# ----------------------------------------------------------------------------- HTTP on raw connections
@dataclass
class Outcome:
    status: int | str  # an HTTP status, or "closed" (no answer), "reset"
    seconds: float  # until the answer, or until the server dropped the connection


async def read_answer(reader: asyncio.StreamReader) -> int | str:
    """One response's status (its body read too), or how the connection ended without one."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        return "closed" if not exc.partial else "cut"
    except (ConnectionError, OSError):
        return "reset"
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    try:
        await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        return "cut"
    return int(head.split(b" ", 2)[1])


async def until_closed(reader: asyncio.StreamReader) -> None:
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass


class Target:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def exchange(self, data: bytes) -> Outcome:
        """Send ``data`` on a new connection, read one answer."""
        started = time.perf_counter()
        reader, writer = await self.open()
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        status = await read_answer(reader)
        writer.close()
        return Outcome(status, time.perf_counter() - started)

    async def stream_header(self, total: int) -> Outcome:
        """A header of ``total`` bytes sent 64 KiB at a time, stopping when the server answers."""
        started = time.perf_counter()
        reader, writer = await self.open()
        writer.write(b"GET /health HTTP/1.1\r\nHost: attack\r\nX-Big: ")
        answer = asyncio.ensure_future(read_answer(reader))
        chunk, sent = b"a" * 65536, 0
        try:
            while sent < total and not answer.done():
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0)  # drain() need not yield: let the answer be read as soon as it comes
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass
        status = await answer
        writer.close()
        return Outcome(status, time.perf_counter() - started)

    async def trickle(self, first: bytes, drip: bytes, every_s: float = 0.5) -> Outcome:
        """A slow client: ``first``, then ``drip`` every ``every_s`` until the server answers or drops it."""
        started = time.perf_counter()
        reader, writer = await self.open()
        answer = asyncio.ensure_future(read_answer(reader))
        try:
            writer.write(first)
            while not answer.done():
                await asyncio.wait([answer], timeout=every_s)
                if not answer.done():
                    writer.write(drip)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        status = await answer
        await until_closed(reader)
        writer.close()
        return Outcome(status, time.perf_counter() - started)

    async def idle_after_one(self) -> Outcome:
        """A keep-alive client that asks once, then idles: the time from its answer until the server closes."""
        reader, writer = await self.open()
        writer.write(b"GET /health HTTP/1.1\r\nHost: attack\r\n\r\n")
        status = await read_answer(reader)
        answered = time.perf_counter()
        await until_closed(reader)
        writer.close()
        return Outcome(status if status != 200 else "closed", time.perf_counter() - answered)

    async def silent(self) -> Outcome:
        """A connection that sends nothing: the time until the server closes it."""
        started = time.perf_counter()
        reader, writer = await self.open()
        status = await read_answer(reader)
        await until_closed(reader)
        writer.close()
        return Outcome(status, time.perf_counter() - started)


def fill(prefix: bytes, unit: bytes, suffix: bytes) -> bytes:
    count = (BODY_LIMIT - len(prefix) - len(suffix)) // len(unit)
    return prefix + (unit * count)[:-1] + suffix


def post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: attack\r\nContent-Type: application/json\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


# ----------------------------------------------------------------------------- the attacks
@dataclass
class Attack:
    name: str
    run: Callable[[Target, float], Awaitable[list[Outcome]]]
    expected: set[int | str]  # every answer is one of these
    drop_within_s: float | None = None  # a slow-client attack: every connection dropped by then


async def repeat(seconds: float, make: Callable[[], Awaitable[Outcome]], parallel: int = 1) -> list[Outcome]:
    """``make()`` again and again for ``seconds``, in ``parallel`` sequences at once."""
    end = time.perf_counter() + seconds

    async def sequence() -> list[Outcome]:
        outcomes = [await make()]
        while time.perf_counter() < end:
            outcomes.append(await make())
        return outcomes

    return [outcome for outcomes in await asyncio.gather(*(sequence() for _ in range(parallel)))
            for outcome in outcomes]


def attacks(timeout_s: float) -> list[Attack]:
    items = post("/v1/tag/batch", fill(b'{"items":[', b"1,", b"]}"))
    empty_tokens = post("/v1/tag", fill(b'{"tokens":[', b'"",', b"]}"))
    nul_tokens = post("/v1/tag", fill(b'{"tokens":[', b'"\\u0000",', b"]}"))
    unknown = post("/v1/tag", ("{" + ",".join(f'"k{i}":1' for i in range(80_000)) + ',"text":"a"}').encode())
    # The worst shapes found for the C JSON parser, which holds the interpreter lock while it reads them: no
    # number or object in them calls back into Python.
    lists = post("/v1/tag/batch", fill(b'{"items":[', b"[],", b"]}"))
    literals = post("/v1/tag", ("{" + ",".join(f'"k{i}":true' for i in range(75_000)) + ',"text":"a"}').encode())
    headers = b"GET /health HTTP/1.1\r\nHost: attack\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(20_000)) \
        + b"\r\n"
    head = b"GET /health HTTP/1.1\r\nHost: attack\r\n"
    body_head = (b"POST /v1/tag HTTP/1.1\r\nHost: attack\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"text\": \"")
    drop = timeout_s + DROP_SLACK_S

    def many(count: int, make: Callable[[Target], Awaitable[Outcome]],
             stagger_s: float = 0.0) -> Callable[[Target, float], Awaitable[Any]]:
        """``count`` clients at once (or one every ``stagger_s``)."""
        async def one(target: Target, index: int) -> Outcome:
            await asyncio.sleep(index * stagger_s)
            return await make(target)

        async def run(target: Target, seconds: float) -> list[Outcome]:
            return list(await asyncio.gather(*(one(target, index) for index in range(count))))
        return run

    return [
        Attack("1 MiB batch of 524,282 invalid items", lambda t, s: repeat(s, lambda: t.exchange(items)), {422}),
        Attack('1 MiB of "" tokens', lambda t, s: repeat(s, lambda: t.exchange(empty_tokens)), {422}),
        Attack('1 MiB of "\\u0000" tokens', lambda t, s: repeat(s, lambda: t.exchange(nul_tokens)), {422}),
        Attack("3 big invalid batches at once", lambda t, s: repeat(s, lambda: t.exchange(items), parallel=3), {422}),
        Attack("80,000 unknown fields", lambda t, s: repeat(s, lambda: t.exchange(unknown)), {422}),
        Attack("1 MiB batch of 349,521 empty lists", lambda t, s: repeat(s, lambda: t.exchange(lists)), {422}),
        Attack("75,000 unknown fields of true", lambda t, s: repeat(s, lambda: t.exchange(literals)), {422}),
        Attack("50 MB header", lambda t, s: repeat(s, lambda: t.stream_header(50 * 1024 * 1024)), {431}),
        Attack("20,000 headers", lambda t, s: repeat(s, lambda: t.exchange(headers)), {431}),
        Attack("parser garbage", lambda t, s: repeat(s, lambda: t.exchange(b"GARBAGE / HTTP/1.1\r\n\r\n")), {400}),
        Attack(f"{SLOW_CLIENTS} slow headers (a line every 0.5 s)",
               many(SLOW_CLIENTS, lambda t: t.trickle(head, b"X-Slow: 1\r\n")), {408}, drop),
        Attack(f"{SLOW_CLIENTS} slow bodies (a byte every 0.5 s)",
               many(SLOW_CLIENTS, lambda t: t.trickle(body_head, b"a")), {408}, drop),
        # Their requests spread over a second: 200 requests at once would be a load test, not this attack.
        Attack(f"{SLOW_CLIENTS} idle keep-alive connections", many(SLOW_CLIENTS, lambda t: t.idle_after_one(), 0.005),
               {"closed"}, drop),
        Attack(f"{FLOOD} silent connections ({MAX_CONNECTIONS} allowed)", many(FLOOD, lambda t: t.silent()),
               {"closed"}, drop),
    ]


# ----------------------------------------------------------------------------- reporting
def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "max_ms": None}
    return {"p50_ms": ms(statistics.median(values)), "max_ms": ms(max(values))}


def answers_text(outcomes: list[Outcome]) -> str:
    counts = collections.Counter(str(outcome.status) for outcome in outcomes)
    return ", ".join(f"{status} x{count}" for status, count in sorted(counts.items()))


def markdown(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> str:
    lines = [f"/health baseline (server idle): p50 {baseline['p50_ms']} ms, max {baseline['max_ms']} ms, "
             f"{baseline['probes']} probes; goal during an attack: every probe within "
             f"{baseline['bound_ms']} ms",
             "",
             "| attack | answers | answer time p50 / max | /health p50 / max (probes) | RSS before → peak → after "
             "| goals |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        goals = ", ".join(name for name, ok in row["goals"].items() if not ok)
        lines.append(
            f"| {row['attack']} | {row['answers']} | {row['answer']['p50_ms']} / {row['answer']['max_ms']} ms "
            f"| {row['health']['p50_ms']} / {row['health']['max_ms']} ms ({row['health']['probes']}) "
            f"| {row['rss_mb']['before']} → {row['rss_mb']['peak']} → {row['rss_mb']['after']} MB "
            f"| {'met' if not goals else 'FAILED: ' + goals} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="artifact directory (default: train one with the sample recipe)")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each request attack repeats (3)")
    parser.add_argument("--baseline", type=float, default=3.0, help="seconds of /health probing before (3)")
    parser.add_argument("--set", action="append", default=[], metavar="SLOTFILL_KEY=VALUE",
                        help="a server setting (repeatable); the timeouts default to 2 s and max_connections to 256")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--only", action="append", default=[], metavar="WORDS",
                        help="run only the attacks whose name contains WORDS (repeatable)")
    return parser


def train_sample(work: Path) -> Path:
    out = work / "sample-model"
    log(f"training a model with the sample recipe into {out} ...")
    result = subprocess.run([sys.executable, "-m", "training.cli", "train", "--data", "sample", "--config",
                             "sample", "--out", str(out)], cwd=REPO, env=clean_env({}), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise SetupError(f"training the sample model failed:\n{result.stdout[-3000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="slotfill-attack-") as tmp:
            work = Path(tmp)
            model = check_artifact(args.model) if args.model else train_sample(work)
            return run(args, model, work)
    except SetupError as exc:
        log(f"error: {exc}")
        return 2


def run(args: argparse.Namespace, model: Path, work: Path) -> int:
    settings = {"SLOTFILL_HEADER_TIMEOUT_S": str(TIMEOUT_S), "SLOTFILL_BODY_TIMEOUT_S": str(TIMEOUT_S),
                "SLOTFILL_KEEP_ALIVE_S": str(TIMEOUT_S), "SLOTFILL_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
                **parse_settings(args.set)}
    timeout_s = max(float(settings[key]) for key in ("SLOTFILL_HEADER_TIMEOUT_S", "SLOTFILL_BODY_TIMEOUT_S",
                                                     "SLOTFILL_KEEP_ALIVE_S"))
    host, port = "127.0.0.1", free_port()
    command = [sys.executable, "-m", "service", "--model", str(model), "--host", host, "--port", str(port)]
    log(f"starting {' '.join(command)} with {settings}")
    server = ServerProcess("slotfill", command, clean_env(settings), ("GET", f"http://{host}:{port}/ready", None),
                           work / "server.log")
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    stop = context.Event()
    prober = context.Process(target=probe, args=(host, port, send, stop), daemon=True)
    sampler = RssSampler(server.pid)
    chosen = [attack for attack in attacks(timeout_s)
              if not args.only or any(words in attack.name for words in args.only)]
    windows: list[tuple[Attack, float, float, float, list[Outcome]]] = []
    try:
        sampler.start()
        prober.start()
        # The attacks run at the lowest CPU priority: an attacker elsewhere would not take the server's cores,
        # and here it shares two of them with the server and the prober.
        os.nice(19)
        target = Target(host, port)
        for attack in chosen:  # warm-up: the allocator's first growth for big bodies is not an attack's cost
            if attack.drop_within_s is None:
                asyncio.run(attack.run(target, 0.0))
        time.sleep(1.0)  # and the prober's interpreter has started
        baseline_window = (time.time(), time.time() + args.baseline)
        time.sleep(args.baseline)
        for attack in chosen:
            log(f"attack: {attack.name}")
            started = time.time()
            outcomes = asyncio.run(attack.run(target, args.seconds))
            ended = time.time()
            time.sleep(1.0)
            windows.append((attack, started, ended, time.time(), outcomes))
        stop.set()
        probes: list[tuple[float, float, int]] = receive.recv()
    finally:
        stop.set()
        sampler.stop.set()
        prober.join(timeout=10)
        status = server.stop()
        log(f"server exited with {status}; its log: {work / 'server.log'} (removed with the work folder)")

    base = [seconds for at, seconds, code in probes if baseline_window[0] <= at <= baseline_window[1]]
    baseline = {**summary(base), "probes": len(base)}
    bound_ms = round(HEALTH_FACTOR * baseline["p50_ms"] + HEALTH_SLACK_MS, 1)
    baseline["bound_ms"] = bound_ms
    rows = []
    for attack, started, ended, after_at, outcomes in windows:
        during = [(seconds, code) for at, seconds, code in probes if started <= at <= ended]
        health = {**summary([seconds for seconds, _ in during]), "probes": len(during),
                  "failed": sum(1 for _, code in during if code != 200)}
        before, peak, after = sampler.mb_at(started), sampler.peak_mb(started, ended), sampler.mb_at(after_at)
        grown, kept = peak - before, after - before
        statuses = {outcome.status for outcome in outcomes}
        goals = {
            "health": health["failed"] == 0 and health["max_ms"] is not None and health["max_ms"] <= bound_ms,
            "rss": grown < RSS_LIMIT_MB and kept < RSS_KEPT_MB,
            "answers": statuses <= attack.expected,
            "no_5xx": not any(isinstance(s, int) and s >= 500 for s in statuses)
            and not any(code >= 500 for _, code in during),
        }
        if attack.drop_within_s is not None:
            goals["dropped"] = max(outcome.seconds for outcome in outcomes) <= attack.drop_within_s
        rows.append({"attack": attack.name, "answers": answers_text(outcomes),
                     "answer": summary([outcome.seconds for outcome in outcomes]), "requests": len(outcomes),
                     "duration_s": round(ended - started, 2), "health": health,
                     "rss_mb": {"before": round(before, 1), "peak": round(peak, 1), "after": round(after, 1)},
                     "goals": goals})
    table = markdown(rows, baseline)
    print(table)
    failed = [f"{row['attack']}: {name}" for row in rows for name, ok in row["goals"].items() if not ok]
    print("\nall goals met" if not failed else "\ngoals not met:\n  " + "\n  ".join(failed))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                  "versions": versions(), "git": git_revision(), "settings": settings, "model": str(model),
                  "baseline": baseline, "attacks": rows, "table": table, "failed": failed}
        temporary = args.out.with_name(args.out.name + ".tmp")
        temporary.write_text(json.dumps(report, indent=2) + "\n")
        temporary.replace(args.out)  # written whole or not at all
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
