"""Schemathesis fuzzing of the running server from its own OpenAPI schema: no 5xx, and every
response matches the documented status codes, content types and schemas.

About 2,800 requests (positive and negative cases for every operation, /v2 included); ~2 min on 2 busy cores.
The same run as a script: ``python -m tests.service.fuzzing --model DIR`` (``fuzzing.py``).
"""

from __future__ import annotations

import pytest

pytest.importorskip("schemathesis")

from fuzzing import fuzz  # noqa: E402


def test_fuzz_thousand_requests(server) -> None:
    report = fuzz(server.base_url, examples=200, admin_token=server.admin_token, seed=1)
    print(report.summary())
    assert report.requests >= 1000, report.summary()
    assert report.server_errors == 0 and not report.failures, report.summary()
    assert {status for status in report.by_status if status < 300} == {200}
    # Both kinds of answers were exercised, not just one.
    assert report.by_status.get(200, 0) > 50 and report.by_status.get(422, 0) > 50, report.summary()
