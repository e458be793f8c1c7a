"""Audit the API image's pinned dependencies (``requirements/serve.lock``) for known vulnerabilities.

    .venv/bin/python scripts/audit.py [--lock requirements/serve.lock] [--service osv|pypi] [--out FILE]

Runs ``pip-audit`` on the hashed lock file (no resolution: every package is pinned) and reads its
JSON report. The outcome is never ambiguous:

* exit 0 -- the advisory source answered and lists no known vulnerability for any pinned package;
* exit 1 -- findings: each package, version, advisory id and fixed versions is printed;
* exit 3 -- the advisory source could not be reached (offline, proxy, DNS), or some package could not
  be looked up there: NOT a pass; what was not checked is named;
* exit 2 -- the audit could not run (pip-audit missing, unreadable lock, unexpected failure).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NETWORK_ERRORS = re.compile(
    r"ConnectionError|ConnectTimeout|ReadTimeout|Max retries exceeded|Name or service not known|"
    r"Temporary failure in name resolution|NewConnectionError|ProxyError|Network is unreachable|"
    r"Connection refused|SSLError|getaddrinfo failed|timed out", re.IGNORECASE)


def pip_audit_command() -> list[str]:
    if os.environ.get("SLOTFILL_PIP_AUDIT"):  # another pip-audit executable (tests use a stand-in)
        return [os.environ["SLOTFILL_PIP_AUDIT"]]
    beside = Path(sys.executable).with_name("pip-audit")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("pip-audit")
    if found:
        return [found]
    raise FileNotFoundError("pip-audit is not installed: .venv/bin/python -m pip install pip-audit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=REPO / "requirements" / "serve.lock")
    parser.add_argument("--service", choices=("osv", "pypi"), default="osv", help="advisory source (default osv)")
    parser.add_argument("--timeout", type=int, default=15, help="socket timeout in seconds")
    parser.add_argument("--out", type=Path, help="also write the pip-audit JSON report here")
    args = parser.parse_args(argv)
    if not args.lock.is_file():
        print(f"audit: error: no lock file at {args.lock}", file=sys.stderr)
        return 2
    try:
        command = pip_audit_command()
    except FileNotFoundError as exc:
        print(f"audit: error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        command += ["--requirement", str(args.lock), "--require-hashes", "--disable-pip", "--no-deps",
                    "--vulnerability-service", args.service, "--timeout", str(args.timeout),
                    "--progress-spinner", "off", "--format", "json", "--output", str(report_path)]
        result = subprocess.run(command, capture_output=True, text=True)
        report = json.loads(report_path.read_text()) if report_path.is_file() and report_path.stat().st_size else None
    if report is None:
        output = (result.stderr + result.stdout).strip()
        if NETWORK_ERRORS.search(output):
            reason = NETWORK_ERRORS.search(output).group(0)
            print(f"audit: UNCHECKED: the {args.service} advisory source could not be reached ({reason}); no "
                  f"package in {args.lock.name} was checked. This is not a pass: run again with network access.",
                  file=sys.stderr)
            return 3
        print(f"audit: error: pip-audit failed (exit {result.returncode}):\n{output[-2000:]}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    dependencies = report.get("dependencies", [])
    findings = [(d["name"], d["version"], v) for d in dependencies for v in d.get("vulns", [])]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    for dep in skipped:
        print(f"audit: skipped {dep['name']}: {dep['skip_reason']}", file=sys.stderr)
    if findings:
        print(f"audit: {len(findings)} known vulnerabilit{'y' if len(findings) == 1 else 'ies'} in {args.lock.name} "
              f"({args.service}):")
        for name, version, vuln in findings:
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed version"
            print(f"  {name} {version}: {vuln.get('id')} (fixed in: {fixed})")
        if skipped:
            print(f"audit: and {len(skipped)} package(s) could not be checked (see above)")
        return 1
    if skipped:
        # pip-audit "skips" a package it could not look up -- for the pypi service that is also what an
        # unreachable pypi.org looks like. A package nobody checked is not a clean package.
        print(f"audit: UNCHECKED: {len(skipped)} of {len(dependencies)} pinned packages could not be checked against "
              f"{args.service} (see above)" + ("; the others have no known vulnerabilities"
                                                 if len(skipped) < len(dependencies) else "") + ". This is not a pass.",
              file=sys.stderr)
        return 3
    print(f"audit: {len(dependencies)} pinned packages checked against {args.service}: no known vulnerabilities")
    return 0


if __name__ == "__main__":
    sys.exit(main())
