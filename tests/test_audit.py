"""scripts/audit.py: findings fail, an unreachable advisory source is reported as unchecked, never as a pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
AUDIT = REPO / "scripts" / "audit.py"


def run_audit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(AUDIT), *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})}, cwd=REPO)


def fake_pip_audit(tmp_path: Path, report: dict | None, stderr: str = "", code: int = 0) -> Path:
    """A stand-in pip-audit that writes ``report`` where --output says, or fails with ``stderr``."""
    script = tmp_path / "pip-audit"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        args = sys.argv[1:]
        report = {json.dumps(report)!r}
        if report != "null":
            open(args[args.index("--output") + 1], "w").write(report)
        sys.stderr.write({stderr!r})
        sys.exit({code})
    """))
    script.chmod(0o755)
    return script


def test_findings_are_listed_and_fail(tmp_path):
    report = {"dependencies": [
        {"name": "fastapi", "version": "0.1.0", "vulns": []},
        {"name": "starlette", "version": "0.2.0",
         "vulns": [{"id": "GHSA-xxxx-yyyy", "fix_versions": ["0.3.0"], "description": "..."}]},
    ]}
    result = run_audit(env={"SLOTFILL_PIP_AUDIT": str(fake_pip_audit(tmp_path, report, code=1))})
    assert result.returncode == 1, result.stderr
    assert "1 known vulnerability" in result.stdout
    assert "starlette 0.2.0: GHSA-xxxx-yyyy (fixed in: 0.3.0)" in result.stdout


def test_a_clean_report_passes(tmp_path):
    report = {"dependencies": [{"name": "fastapi", "version": "0.1.0", "vulns": []}]}
    result = run_audit(env={"SLOTFILL_PIP_AUDIT": str(fake_pip_audit(tmp_path, report))})
    assert result.returncode == 0, result.stderr
    assert "1 pinned packages checked against osv: no known vulnerabilities" in result.stdout


def test_packages_that_could_not_be_looked_up_are_unchecked_not_clean(tmp_path):
    report = {"dependencies": [
        {"name": "fastapi", "version": "0.1.0", "vulns": []},
        {"name": "uvicorn", "version": "0.2.0", "skip_reason": "Dependency not found on PyPI and could not be audited"},
    ]}
    result = run_audit(env={"SLOTFILL_PIP_AUDIT": str(fake_pip_audit(tmp_path, report))})
    assert result.returncode == 3
    assert "UNCHECKED: 1 of 2 pinned packages could not be checked" in result.stderr
    assert "skipped uvicorn" in result.stderr
    assert "no known vulnerabilities" not in result.stdout


def test_unexpected_failure_is_an_error_not_a_pass(tmp_path):
    result = run_audit(env={"SLOTFILL_PIP_AUDIT": str(fake_pip_audit(tmp_path, None, "something broke", 1))})
    assert result.returncode == 2
    assert "pip-audit failed" in result.stderr and "something broke" in result.stderr


def test_unreachable_advisory_source_is_unchecked_not_a_pass():
    """The real pip-audit, with every connection sent to a closed local port."""
    pytest.importorskip("pip_audit")
    closed = "http://127.0.0.1:9"
    result = run_audit("--timeout", "5", env={"HTTPS_PROXY": closed, "HTTP_PROXY": closed, "https_proxy": closed,
                                              "http_proxy": closed, "NO_PROXY": "", "no_proxy": ""})
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "UNCHECKED" in result.stderr and "not a pass" in result.stderr
    assert "no known vulnerabilities" not in result.stdout
