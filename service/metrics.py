"""Prometheus metrics, one registry per app (several apps in one process never clash).

With ``workers > 1`` each worker process keeps its own counters; scrape through a
per-process target or run one worker per container (the Docker image's default).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("slotfill_http_requests", "HTTP requests by route, method and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("slotfill_http_request_duration_seconds", "Request latency in seconds.",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_progress = Gauge("slotfill_http_requests_in_progress", "Requests being handled.",
                                 registry=self.registry)
        self.errors = Counter("slotfill_errors", "Error responses by error code.", ["code"], registry=self.registry)
        # kind="request": items per /v1/tag/batch request; kind="micro": items per forward pass formed by
        # the micro-batcher (its _count is the number of batched forward passes).
        self.batch_size = Histogram("slotfill_batch_size", "Items per /v1/tag/batch request (kind=request) and per "
                                    "micro-batch forward pass (kind=micro).", ["kind"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_wait = Histogram("slotfill_batch_wait_seconds", "How long the first item of each micro-batch "
                                    "waited before the batch started.", buckets=WAIT_BUCKETS, registry=self.registry)
        for kind in ("request", "micro"):
            self.batch_size.labels(kind=kind)  # both series exist (at zero) from the start
        self.tagged = Counter("slotfill_utterances_tagged", "Utterances tagged (single and batch).",
                              registry=self.registry)
        self.model_info = Gauge("slotfill_model_info", "The model being served (value 1).",
                                ["name", "version", "digest"], registry=self.registry)
        self.reloads = Counter("slotfill_model_reloads", "Model reloads by outcome.", ["outcome"],
                               registry=self.registry)
        # Read from service/admission.py when scraped (set_function): no update on the hot path.
        self.admitted = Gauge("slotfill_tag_requests_admitted", "Tag requests admitted and not yet answered; past "
                              "max_pending the next one is refused (503 overloaded).", registry=self.registry)

    def set_model(self, name: str, version: str, digest: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name=name, version=version, digest=digest).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
