"""Load shedding: a bound on the tag requests admitted and not yet answered.

Past ``max_pending`` requests in flight on ``/v1/tag`` and ``/v1/tag/batch`` (per worker process),
the next one is answered at once with 503 ``overloaded`` and ``Retry-After: retry_after_s``
instead of joining the micro-batcher's queue. Beyond capacity a queue only grows: every request
in it waits longer, until all of them time out at the client and the work done for them is
wasted. Refusing the excess keeps the latency of the admitted requests bounded and tells the
others when to come back (a load balancer can retry them on another replica).

The check runs in the route handler before the body's JSON is parsed (``json_route.AdmittedRoute``),
so a refusal costs little more than routing. One HTTP/1.1 connection has at most one request in
flight, so the default limit (256) is never reached by a client pool of a few dozen connections;
it bounds what many more clients can pile up. A ``/v1/tag/batch`` request counts as one, whatever
its size (``max_batch_items`` bounds that).

All counting happens on the event loop (no lock); ``slotfill_tag_requests_admitted`` reads the
count when ``/metrics`` is scraped, so the hot path pays no metric update for it. Refusals are
counted in ``slotfill_errors_total{code="overloaded"}`` (and as 503s in the request counter).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .errors import error_response


class Admission:
    """Counts requests admitted and not yet answered; refuses past ``limit`` (``None``: no limit)."""

    __slots__ = ("limit", "pending", "retry_after", "message")

    def __init__(self, limit: int | None, retry_after_s: int = 1) -> None:
        self.limit = limit
        self.pending = 0
        self.retry_after = str(retry_after_s)
        self.message = f"the service is over capacity ({limit} requests in flight); retry after {retry_after_s} s"

    def try_enter(self) -> bool:
        if self.limit is not None and self.pending >= self.limit:
            return False
        self.pending += 1
        return True

    def leave(self) -> None:
        self.pending -= 1

    def refuse(self, request: Request) -> Response:
        """The 503 for a request over the limit (counted in the errors metric by ``error_response``)."""
        return error_response(request, 503, "overloaded", self.message, None, {"Retry-After": self.retry_after})


def admission_for(app: Any) -> Admission:
    """The app's :class:`Admission`, made on first use from its settings (``max_pending``,
    ``retry_after_s``) and kept in ``app.state.admission``."""
    state = app.state
    try:
        return state.admission
    except AttributeError:
        pass
    settings = getattr(state, "settings", None)
    limit = getattr(settings, "max_pending", 0) or None
    gate = Admission(limit, getattr(settings, "retry_after_s", 1))
    state.admission = gate
    metrics = getattr(state, "metrics", None)
    if metrics is not None:
        metrics.admitted.set_function(lambda: gate.pending)
    return gate
