"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis) and print what happened.

    python -m tests.service.fuzzing --model DIR            # starts `python -m service` on a free port
    python -m tests.service.fuzzing --url http://HOST:PORT [--admin-token TOKEN]

Every operation in ``/openapi.json`` gets schema-valid (positive) and schema-breaking
(negative) requests. Each response must not be a 5xx, must use a documented status code and
content type, and must match the documented response schema. Exit status 0 when nothing
failed, 1 otherwise. Needs the ``schemathesis`` package (a dev dependency). Run it from the
repository root; ``tests/service/test_service_fuzz.py`` runs the same fuzzing in the test suite.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_EXAMPLES = 200


@dataclass
class FuzzReport:
    base_url: str
    requests: int = 0
    seconds: float = 0.0
    by_operation: dict[str, int] = field(default_factory=lambda: collections.Counter())
    by_status: dict[int, int] = field(default_factory=lambda: collections.Counter())
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.by_status.items() if status >= 500)

    def summary(self) -> str:
        statuses = ", ".join(f"{status}: {count}" for status, count in sorted(self.by_status.items()))
        lines = [f"fuzzed {self.base_url}: {self.requests} requests in {self.seconds:.1f} s; "
                 f"{self.server_errors} server errors; {len(self.failures)} failed checks",
                 f"  statuses: {statuses}"]
        for operation, count in sorted(self.by_operation.items()):
            lines.append(f"  {operation}: {count} requests")
        for failure in self.failures[:20]:
            lines.append(f"  FAILED {failure['operation']} [{failure['mode']}] {failure['status']}: "
                         f"{failure['error'][:300]}\n    {failure['curl'][:500]}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "requests": self.requests, "seconds": round(self.seconds, 2),
                "server_errors": self.server_errors, "failed_checks": len(self.failures),
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_operation": dict(sorted(self.by_operation.items())), "failures": self.failures[:50]}


def fuzz(base_url: str, examples: int = DEFAULT_EXAMPLES, *, admin_token: str | None = None, seed: int = 0,
         modes: Sequence[str] = ("positive", "negative")) -> FuzzReport:
    """Run ``examples`` generated cases per operation and mode against ``base_url``."""
    import requests
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    report = FuzzReport(base_url)
    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
    started = time.perf_counter()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            for mode in modes:
                _fuzz_operation(operation, label, mode, examples, seed, base_url, session, headers, checks, report)
    report.seconds = time.perf_counter() - started
    return report


def _fuzz_operation(operation: Any, label: str, mode: str, examples: int, seed: int, base_url: str, session: Any,
                    headers: dict[str, str], checks: list[Any], report: FuzzReport) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable

    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        report.requests += 1
        report.by_operation[label] += 1
        report.by_status[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except Exception as exc:  # noqa: BLE001 - every failed check is recorded, none stops the run
            report.failures.append({"operation": label, "mode": mode, "status": response.status_code,
                                    "error": str(exc), "curl": case.as_curl_command(headers)})

    try:
        run()
    except Unsatisfiable:
        pass  # nothing to break: an operation without parameters or body has no negative cases


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(model_dir: Path, admin_token: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLOTFILL_")}
    env.update(SLOTFILL_ADMIN_TOKEN=admin_token, SLOTFILL_LOG_LEVEL="ERROR")  # its errors still show
    root = Path(__file__).resolve().parents[2]  # the repository
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    process = subprocess.Popen([sys.executable, "-m", "service", "--model", str(model_dir), "--port", str(port)],
                               env=env, cwd=root, stdin=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not become ready")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.service.fuzzing", description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", type=Path, help="artifact to serve for the run")
    target.add_argument("--url", help="fuzz an already running server")
    parser.add_argument("--admin-token", help="token for /v1/admin/* (with --model a random one is used)")
    parser.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES, help="cases per operation and mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    process = None
    token = args.admin_token
    if args.model is not None:
        token = token or os.urandom(16).hex()
        process, base_url = _start_server(args.model, token)
    else:
        base_url = args.url.rstrip("/")
    try:
        report = fuzz(base_url, args.examples, admin_token=token, seed=args.seed)
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if not report.failures and report.server_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
