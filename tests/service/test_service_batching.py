"""Dynamic micro-batching: concurrent requests share forward passes, answers do not change.

Against a server process (``python -m service``) with a generous ``max_wait`` so that grouping
does not depend on how busy the machine is, against the app in-process on a real socket (for a
counting predictor, a failing one, or two model versions), and the batcher on its own.
No test here measures speed: timing bounds are loose sanity checks (10x and more).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_testlib import LIMITS, SERVER_ENV, Server, ThreadServer, assert_error, start_server, stop_server
from test_service_api import check_prediction, metric_value, without_confidences

from service.app import create_app
from service.batching import MicroBatcher, MicroBatchError
from service.settings import Settings
from service.state import load_predictor

BATCH_WAIT_MS = 25  # the batching server's max wait: long enough to group threads started together
BATCH_MAX = 16

UTTERANCES = [
    "book a table for 4 at chez pierre tomorrow at 7pm",
    "find a cheap italian restaurant near midtown",
    "change my booking at little tokyo to friday at seven",
    "can you book bella napoli for two guests on may 12th",
    "hi",
    "cancel it",
    "  book\ta table\nfor two,   at 7pm!\r\n",
    "book a table at café müller for 4 tomorrow at 7pm",
    "is there a sushi place open late tonight near the harbour for a party of twelve people at 10pm",
    "?!",
    "book a table at 東京 sushi for two tonight",
    "table for one",
]


def tag_bodies() -> list[dict[str, Any]]:
    """Texts of very different lengths (padding), tokens, and text + tokens mixed in one batch."""
    bodies: list[dict[str, Any]] = [{"text": text} for text in UTTERANCES]
    bodies += [{"tokens": text.split()} for text in UTTERANCES[:6]]
    return bodies


def expected_text(body: dict[str, Any]) -> str:
    return body["text"] if "text" in body else " ".join(body["tokens"])


def assert_same_answer(batched: dict[str, Any], single: dict[str, Any]) -> None:
    """Labels, tokens, spans and intent exact; confidences within 1e-4."""
    assert without_confidences(batched) == without_confidences(single)
    for a, b in zip(batched["tokens"] + batched["slots"], single["tokens"] + single["slots"]):
        assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-4)
    if single["intent"] is not None:
        assert batched["intent"]["confidence"] == pytest.approx(single["intent"]["confidence"], abs=1e-4)


def post_together(base_url: str, requests: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    """Send every request from its own connection, released at the same moment (a barrier)."""
    barrier = threading.Barrier(len(requests))

    def send(path_and_body: tuple[str, dict[str, Any]]) -> httpx.Response:
        path, body = path_and_body
        with httpx.Client(base_url=base_url, timeout=60) as http:
            assert http.get("/health").status_code == 200  # connect before the barrier
            barrier.wait(timeout=60)
            return http.post(path, json=body)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def micro_batches(metrics_text: str) -> tuple[float, float]:
    """(forward passes formed by the batcher, items in them) from /metrics."""
    return (metric_value(metrics_text, "slotfill_batch_size_count", kind="micro"),
            metric_value(metrics_text, "slotfill_batch_size_sum", kind="micro"))


class Counting:
    """A predictor wrapper that counts forward calls and the items in each (and can be told to fail)."""

    def __init__(self, inner: Any, fail_on: str | None = None, version: str | None = None):
        self._inner = inner
        self._fail_on = fail_on
        self.version = version if version is not None else inner.version
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _count(self, items: list[Any]) -> None:
        with self._lock:
            self.calls.append(len(items))
        if self._fail_on is not None and any(self._fail_on in str(item) for item in items):
            raise RuntimeError(f"{self._fail_on} in the batch")

    def predict_texts(self, texts):
        self._count(list(texts))
        return self._inner.predict_texts(texts)

    def predict_tokens(self, tokens):
        self._count(list(tokens))
        return self._inner.predict_tokens(tokens)

    def predict_mixed(self, items):
        self._count(list(items))
        return self._inner.predict_mixed(items)


@pytest.fixture(scope="module")
def batching_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {**SERVER_ENV, "SLOTFILL_BATCH_MAX_WAIT_MS": str(BATCH_WAIT_MS), "SLOTFILL_BATCH_MAX_SIZE": str(BATCH_MAX)}
    running = start_server(model_dir, tmp_path_factory.mktemp("batching") / "server.log", env)
    try:
        yield running
    finally:
        # uvicorn re-raises SIGTERM after a graceful shutdown; the lifespan (closing the batcher) must complete.
        assert stop_server(running) in (0, -signal.SIGTERM)
        assert any(record.get("message") == "Application shutdown complete." for record in running.log_records())


@pytest.fixture(scope="module")
def unbatched_url(predictor: Any) -> Iterator[str]:
    """The same model with batching off, in-process on a real socket: the reference answers."""
    app = create_app(Settings(batching=False, **LIMITS), predictor=predictor)
    with ThreadServer(app) as base_url:
        yield base_url


# ----------------------------------------------------------------------------- against a server process
def test_batched_answers_equal_unbatched(batching_server: Server, unbatched_url: str) -> None:
    bodies = tag_bodies()
    with httpx.Client(base_url=unbatched_url, timeout=30) as http:
        singles = [http.post("/v1/tag", json=body) for body in bodies]
    assert all(response.status_code == 200 for response in singles), [r.text for r in singles]

    with batching_server.client() as http:
        before = http.get("/metrics").text
        batched = post_together(batching_server.base_url, [("/v1/tag", body) for body in bodies])
        # Items of /v1/tag/batch requests are queued one by one, next to the single requests.
        in_batch = post_together(batching_server.base_url, [("/v1/tag/batch", {"items": bodies[:9]}),
                                                            ("/v1/tag/batch", {"items": bodies[9:]})]
                                 + [("/v1/tag", body) for body in bodies[::3]])
        after = http.get("/metrics").text

    assert all(response.status_code == 200 for response in batched + in_batch), [r.text for r in batched + in_batch]
    for body, response, single in zip(bodies, batched, singles):
        check_prediction(response.json(), expected_text(body))
        assert_same_answer(response.json(), single.json())
    batch_answers = in_batch[0].json()["items"] + in_batch[1].json()["items"]
    for body, answer, single in zip(bodies, batch_answers, singles):
        assert_same_answer(answer, single.json())
    for body, response in zip(bodies[::3], in_batch[2:]):
        assert_same_answer(response.json(), singles[bodies.index(body)].json())

    passes = micro_batches(after)[0] - micro_batches(before)[0]
    items = micro_batches(after)[1] - micro_batches(before)[1]
    requests = len(bodies) + 2 + len(bodies[::3])
    assert items == 2 * len(bodies) + len(bodies[::3])
    assert passes < requests, f"{passes} forward passes for {requests} concurrent requests: nothing was batched"


def test_32_concurrent_requests_share_forward_passes(batching_server: Server) -> None:
    with batching_server.client() as http:
        before = http.get("/metrics").text
        responses = post_together(batching_server.base_url,
                                  [("/v1/tag", {"text": UTTERANCES[i % len(UTTERANCES)]}) for i in range(32)])
        after = http.get("/metrics").text
    assert [response.status_code for response in responses] == [200] * 32
    passes = micro_batches(after)[0] - micro_batches(before)[0]
    assert micro_batches(after)[1] - micro_batches(before)[1] == 32
    assert 2 <= passes < 32  # at most BATCH_MAX (16) items per forward pass
    # No micro-batch was over the configured size: every observation is in the le=16 bucket.
    assert metric_value(after, "slotfill_batch_size_bucket", kind="micro", le=f"{float(BATCH_MAX)}") == \
        metric_value(after, "slotfill_batch_size_count", kind="micro")


def test_a_bad_item_fails_only_its_own_request(batching_server: Server) -> None:
    too_long = "x " * (LIMITS["max_tokens"] + 1)
    requests = [("/v1/tag", {"text": text}) for text in UTTERANCES[:6]]
    requests += [("/v1/tag", {"text": too_long}), ("/v1/tag/batch", {"items": [{"text": "ok"}, {"text": too_long}]})]
    responses = post_together(batching_server.base_url, requests)
    assert [response.status_code for response in responses[:6]] == [200] * 6
    assert_error(responses[6], 422, "too_many_tokens", "text")
    assert_error(responses[7], 422, "too_many_tokens", "items.1.text")


def test_reload_during_batched_load_drops_nothing(batching_server: Server, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(batching_server.model_dir, copy)
    auth = {"Authorization": f"Bearer {batching_server.admin_token}"}
    done = threading.Event()
    sent: list[int] = []
    failures: list[str] = []

    def hammer(worker: int) -> None:
        with batching_server.client() as http:
            n = 0
            while not done.is_set():
                if n % 5 == 4:
                    body = {"items": [{"text": UTTERANCES[(worker + k) % len(UTTERANCES)]} for k in range(3)]}
                    response = http.post("/v1/tag/batch", json=body)
                    ok = response.status_code == 200 and len(response.json()["items"]) == 3
                    items = 3
                else:
                    response = http.post("/v1/tag", json={"text": UTTERANCES[(worker + n) % len(UTTERANCES)]})
                    ok = response.status_code == 200 and "labels" in response.json()
                    items = 1
                sent.append(items)
                if not ok:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                n += 1

    with batching_server.client() as http:
        before = http.get("/metrics").text
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(hammer, worker) for worker in range(8)]
            try:
                time.sleep(0.3)
                for target in (copy, batching_server.model_dir, copy, batching_server.model_dir):
                    response = http.post("/v1/admin/reload", headers=auth, json={"model_dir": str(target)})
                    assert response.status_code == 200, response.text
                    time.sleep(0.1)
            finally:
                done.set()
                for future in futures:
                    future.result()
        after = http.get("/metrics").text
    assert not failures, failures[:5]
    assert len(sent) > 20, "the load was too light to overlap the reloads"
    tagged = "slotfill_utterances_tagged_total"
    assert metric_value(after, tagged) - metric_value(before, tagged) == sum(sent)
    assert micro_batches(after)[1] - micro_batches(before)[1] == sum(sent)
    assert metric_value(after, "slotfill_model_reloads_total", outcome="ok") - \
        metric_value(before, "slotfill_model_reloads_total", outcome="ok") == 4


# ----------------------------------------------------------------------------- in-process, real socket
def app_with(predictor: Any, **settings: Any) -> Any:
    """Most tests here check how the max_wait timer groups requests, so the idle start is off
    unless a test turns it on."""
    return create_app(Settings(**{**LIMITS, "batch_idle_start": False, **settings}), predictor=predictor)


def test_fewer_forward_calls_than_requests(predictor: Any) -> None:
    counting = Counting(predictor)
    with ThreadServer(app_with(counting, batch_max_wait_ms=50)) as base_url:
        counting.calls.clear()  # the lifespan does not warm up an injected predictor, but be sure
        responses = post_together(base_url, [("/v1/tag", {"text": UTTERANCES[i % 4]}) for i in range(32)])
    assert [response.status_code for response in responses] == [200] * 32
    assert sum(counting.calls) == 32
    assert len(counting.calls) < 32, counting.calls
    assert max(counting.calls) > 1


class ThreadRecording(Counting):
    """Counting, and the name of the thread each forward call ran on."""

    def __init__(self, inner: Any):
        super().__init__(inner)
        self.threads: list[str] = []

    def _count(self, items: list[Any]) -> None:
        self.threads.append(threading.current_thread().name)
        super()._count(items)


@pytest.mark.parametrize("batching", [True, False])
def test_model_thread_setting_says_where_the_model_runs(predictor: Any, unbatched_url: str, batching: bool) -> None:
    """model_thread=false runs the forward passes on the event loop's own thread, with the same answers."""
    bodies = tag_bodies()
    with httpx.Client(base_url=unbatched_url, timeout=30) as http:
        reference = [http.post("/v1/tag", json=body).json() for body in bodies]
    assert Settings().model_thread is True
    for in_thread in (True, False):
        recording = ThreadRecording(predictor)
        app = app_with(recording, batching=batching, model_thread=in_thread, batch_max_wait_ms=20)
        server = ThreadServer(app)
        with server as base_url:
            answers = post_together(base_url, [("/v1/tag", body) for body in bodies])
        assert [a.status_code for a in answers] == [200] * len(bodies), [a.text for a in answers]
        for answer, single in zip(answers, reference):
            assert_same_answer(answer.json(), single)
        assert sum(recording.calls) == len(bodies)
        assert not batching or len(recording.calls) < len(bodies)
        loop_thread = server.thread.name  # uvicorn's event loop runs on the ThreadServer's thread
        if in_thread:
            assert loop_thread not in recording.threads
            assert all(name.startswith("AnyIO worker thread") for name in recording.threads), recording.threads
        else:
            assert set(recording.threads) == {loop_thread}, recording.threads


def _latency(http: httpx.Client, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = http.post("/v1/tag", json=body)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return elapsed


def test_a_lone_request_waits_at_most_max_wait(predictor: Any, unbatched_url: str) -> None:
    """Without the idle start, nobody else comes: the timer, not a full batch, releases the request,
    about max_wait later."""
    body = {"text": UTTERANCES[0]}
    with httpx.Client(base_url=unbatched_url, timeout=30) as http:
        direct = statistics.median(_latency(http, body) for _ in range(5))  # HTTP + model time, no batching
    wait = 0.1
    with ThreadServer(app_with(predictor, batch_max_wait_ms=wait * 1000, batch_idle_start=False)) as base_url, \
            httpx.Client(base_url=base_url, timeout=30) as http:
        latencies = [_latency(http, body) for _ in range(3)]
    assert min(latencies) >= wait * 0.9, latencies  # it did wait for company...
    assert max(latencies) < 10 * (wait + direct), (latencies, direct)  # ...but not much longer than max_wait


def test_an_idle_model_starts_a_lone_request_at_once(predictor: Any) -> None:
    """With the idle start (the default), a request that finds the model idle does not wait for company."""
    body = {"text": UTTERANCES[0]}
    wait = 1.0
    with ThreadServer(app_with(predictor, batch_max_wait_ms=wait * 1000, batch_idle_start=True)) as base_url, \
            httpx.Client(base_url=base_url, timeout=30) as http:
        latencies = [_latency(http, body) for _ in range(3)]
    assert max(latencies) < wait / 2, latencies


def test_idle_start_batches_what_arrives_while_the_model_runs() -> None:
    """The first item starts at once; items that arrive in the same step join it, and the ones that
    arrive while it runs form the next batch."""
    calls: list[tuple[Any, list[str]]] = []

    async def scenario() -> list[list[str]]:
        gate = asyncio.Event()

        async def gated(func: Callable[..., Any], *args: Any) -> Any:
            await gate.wait()
            return func(*args)

        batcher = recording_batcher(calls, max_size=8, max_wait_s=60.0, idle_start=True)
        batcher._run_in_thread = gated
        first = [asyncio.ensure_future(batcher.submit("m", [name])) for name in ("a", "b")]  # same step
        await asyncio.sleep(0.01)  # the first batch is running (held by the gate), not waiting 60 s
        assert batcher.running == 1 and batcher.pending == 0
        later = [asyncio.ensure_future(batcher.submit("m", [name])) for name in ("c", "d", "e")]
        await asyncio.sleep(0.01)
        assert batcher.pending == 3  # collecting behind the running batch
        gate.set()
        await asyncio.gather(*first)
        batcher.flush()
        return [await task for task in later]

    asyncio.run(scenario())
    assert [items for _, items in calls] == [["a", "b"], ["c", "d", "e"]]


def test_a_full_batch_does_not_wait_for_the_timer(predictor: Any) -> None:
    # max_wait 10 s: only the size limit can release these promptly.
    with ThreadServer(app_with(predictor, batch_max_size=1, batch_max_wait_ms=10_000)) as base_url, \
            httpx.Client(base_url=base_url, timeout=30) as http:
        assert _latency(http, {"text": UTTERANCES[0]}) < 5.0
        started = time.perf_counter()
        response = http.post("/v1/tag/batch", json={"items": [{"text": text} for text in UTTERANCES[:3]]})
        assert response.status_code == 200 and time.perf_counter() - started < 5.0


def test_batching_off_is_the_direct_path(predictor: Any) -> None:
    counting = Counting(predictor)
    app = app_with(counting, batching=False)
    with ThreadServer(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as http:
        assert app.state.model.batcher is None
        responses = post_together(base_url, [("/v1/tag", {"text": text}) for text in UTTERANCES[:8]])
        assert [response.status_code for response in responses] == [200] * 8
        mixed = http.post("/v1/tag/batch", json={"items": [{"text": "hi"}, {"tokens": ["a", "b"]}, {"text": "x y"}]})
        assert mixed.status_code == 200 and len(mixed.json()["items"]) == 3
        metrics = http.get("/metrics").text
    assert counting.calls[:8] == [1] * 8 and counting.calls[8:] == [3]  # one call per request, mixed in one pass
    assert micro_batches(metrics) == (0, 0)
    assert metric_value(metrics, "slotfill_batch_size_count", kind="request") == 1


def test_a_failing_batch_fails_only_its_requests(predictor: Any) -> None:
    failing = Counting(predictor, fail_on="boom")
    with ThreadServer(app_with(failing, batch_max_size=2, batch_max_wait_ms=2000)) as base_url:
        first = post_together(base_url, [("/v1/tag", {"text": "boom"}), ("/v1/tag", {"text": "book a table"})])
        second = post_together(base_url, [("/v1/tag", {"text": "book a table"}), ("/v1/tag", {"text": "hi"})])
    assert failing.calls == [2, 2]
    for response in first:  # both were in the batch that failed
        assert_error(response, 500, "internal_error")
        assert "boom" not in response.text
    assert [response.status_code for response in second] == [200, 200]


def test_reload_switches_models_between_batches(predictor: Any, model_dir: Path) -> None:
    """Under load, every answer comes from one whole model; once the reload returns, only the new one answers."""
    versions = iter(["v-2", "v-3", "v-4"])

    def loader(path: Path) -> Any:
        return Counting(load_predictor(path), version=next(versions))

    app = create_app(Settings(model_dir=model_dir, admin_token="t0k", batch_max_wait_ms=5, **LIMITS),
                     predictor=Counting(predictor, version="v-1"), loader=loader)
    done = threading.Event()
    seen: list[str] = []
    failures: list[str] = []
    with ThreadServer(app) as base_url:
        def hammer() -> None:
            with httpx.Client(base_url=base_url, timeout=30) as http:
                while not done.is_set():
                    response = http.post("/v1/tag", json={"text": "book a table for two"})
                    if response.status_code != 200:
                        failures.append(response.text)
                    else:
                        seen.append(response.json()["model"]["version"])

        with httpx.Client(base_url=base_url, timeout=30) as http, ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(hammer) for _ in range(6)]
            try:
                for expected in ("v-2", "v-3", "v-4"):
                    time.sleep(0.15)
                    response = http.post("/v1/admin/reload", headers={"Authorization": "Bearer t0k"})
                    assert response.status_code == 200 and response.json()["current"]["version"] == expected
                    assert http.post("/v1/tag", json={"text": "hi"}).json()["model"]["version"] == expected
            finally:
                done.set()
                for future in futures:
                    future.result()
    assert not failures, failures[:3]
    assert set(seen) <= {"v-1", "v-2", "v-3", "v-4"} and "v-4" in seen


# ----------------------------------------------------------------------------- the batcher on its own
def run_async(make: Callable[[], Any]) -> Any:
    return asyncio.run(make())


def recording_batcher(calls: list[tuple[Any, list[str]]], **kwargs: Any) -> MicroBatcher:
    def run_batch(predictor: Any, items: list[str]) -> list[str]:
        calls.append((predictor, list(items)))
        if "boom" in items:
            raise RuntimeError("boom")
        return [f"{predictor}:{item}" for item in items]

    async def inline(func: Callable[..., Any], *args: Any) -> Any:
        await asyncio.sleep(0)
        return func(*args)

    kwargs.setdefault("idle_start", False)  # these tests check the timer's grouping
    return MicroBatcher(run_batch, run_in_thread=inline, **kwargs)


def test_batcher_never_mixes_models_and_respects_max_size() -> None:
    calls: list[tuple[Any, list[str]]] = []

    async def scenario() -> list[Any]:
        batcher = recording_batcher(calls, max_size=3, max_wait_s=0.05)
        jobs = [batcher.submit("A", ["a1"]), batcher.submit("A", ["a2", "a3", "a4", "a5"]), batcher.submit("B", ["b1"]),
                batcher.submit("A", ["a6"])]
        results = await asyncio.gather(*jobs)
        await batcher.aclose()
        return results

    results = run_async(scenario)
    assert results == [["A:a1"], ["A:a2", "A:a3", "A:a4", "A:a5"], ["B:b1"], ["A:a6"]]
    assert calls == [("A", ["a1", "a2", "a3"]), ("A", ["a4", "a5"]), ("B", ["b1"]), ("A", ["a6"])]


def test_batcher_failure_is_confined_to_its_batch() -> None:
    calls: list[tuple[Any, list[str]]] = []

    async def scenario() -> list[Any]:
        batcher = recording_batcher(calls, max_size=2, max_wait_s=0.05)
        jobs = [batcher.submit("M", ["x"]), batcher.submit("M", ["boom"]), batcher.submit("M", ["y"]),
                batcher.submit("M", ["z"])]
        return await asyncio.gather(*jobs, return_exceptions=True)

    first, second, third, fourth = run_async(scenario)
    assert isinstance(first, MicroBatchError) and isinstance(second, MicroBatchError)
    assert isinstance(first.__cause__, RuntimeError)
    assert (third, fourth) == (["M:y"], ["M:z"])


def test_batcher_model_change_and_close_dispatch_at_once() -> None:
    calls: list[tuple[Any, list[str]]] = []

    async def scenario() -> tuple[float, list[str], list[str]]:
        batcher = recording_batcher(calls, max_size=100, max_wait_s=30.0)  # only a dispatch can release them
        started = time.perf_counter()
        pending = asyncio.ensure_future(batcher.submit("old", ["p"]))
        await asyncio.sleep(0.01)
        assert batcher.pending == 1
        batcher.model_changed()
        first = await asyncio.wait_for(pending, 5)
        elapsed = time.perf_counter() - started
        queued = asyncio.ensure_future(batcher.submit("new", ["q"]))
        await asyncio.sleep(0.01)
        await batcher.aclose()  # runs what is queued and waits for it
        await asyncio.wait_for(queued, 5)
        after_close = await asyncio.wait_for(batcher.submit("new", ["r"]), 5)  # closed: runs at once
        return elapsed, first + queued.result(), after_close

    elapsed, results, after_close = run_async(scenario)
    assert elapsed < 5 and results == ["old:p", "new:q"] and after_close == ["new:r"]


def test_batcher_skips_cancelled_requests() -> None:
    calls: list[tuple[Any, list[str]]] = []

    async def scenario() -> list[str]:
        batcher = recording_batcher(calls, max_size=10, max_wait_s=0.05)
        gone = asyncio.ensure_future(batcher.submit("M", ["gone"]))
        kept = asyncio.ensure_future(batcher.submit("M", ["kept"]))
        await asyncio.sleep(0)
        gone.cancel()
        result = await kept
        await batcher.aclose()
        return result

    assert run_async(scenario) == ["M:kept"]
    assert calls == [("M", ["kept"])]


def test_batching_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("SLOTFILL_"):
            monkeypatch.delenv(key)
    defaults = Settings()
    assert (defaults.batching, defaults.batch_max_size, defaults.batch_max_wait_ms) == (True, 32, 2.0)
    monkeypatch.setenv("SLOTFILL_BATCHING", "false")
    monkeypatch.setenv("SLOTFILL_BATCH_MAX_SIZE", "8")
    monkeypatch.setenv("SLOTFILL_BATCH_MAX_WAIT_MS", "0.5")
    settings = Settings()
    assert (settings.batching, settings.batch_max_size, settings.batch_max_wait_ms) == (False, 8, 0.5)
    with pytest.raises(ValueError):
        Settings(batch_max_size=0)


def test_batcher_concurrency_limit_keeps_collecting_while_busy() -> None:
    calls: list[tuple[Any, list[str]]] = []
    release = None

    async def scenario() -> list[Any]:
        nonlocal release
        release = asyncio.Event()

        async def gated(func: Callable[..., Any], *args: Any) -> Any:
            if not calls:  # the first batch blocks until released
                calls.append(("gate", []))
                await release.wait()
            return func(*args)

        def run_batch(predictor: Any, items: list[str]) -> list[str]:
            calls.append((predictor, list(items)))
            return list(items)

        batcher = MicroBatcher(run_batch, max_size=10, max_wait_s=0.005, max_concurrency=1, run_in_thread=gated,
                               idle_start=False)
        first = asyncio.ensure_future(batcher.submit("M", ["a"]))
        await asyncio.sleep(0.05)  # "a" started and blocks the only slot
        assert batcher.running == 1
        later = [asyncio.ensure_future(batcher.submit("M", [name])) for name in ("b", "c")]
        await asyncio.sleep(0.05)  # their timer fired long ago, but no slot is free: still collecting
        assert batcher.pending == 2 and batcher.running == 1
        late = asyncio.ensure_future(batcher.submit("M", ["d"]))
        await asyncio.sleep(0)
        release.set()
        results = [await first] + [await job for job in later] + [await late]
        await batcher.aclose()
        return results

    assert run_async(scenario) == [["a"], ["b"], ["c"], ["d"]]
    assert calls == [("gate", []), ("M", ["a"]), ("M", ["b", "c", "d"])]


def test_refreeze_waits_for_the_previous_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a reload the collector gets the old model (it has reference cycles) before the refreeze."""
    import gc
    import weakref

    from service import gc_tuning

    class Model:
        def __init__(self) -> None:
            self.me = self  # a reference cycle: only the collector frees it

    frozen: list[bool] = []
    model = Model()
    ref = weakref.ref(model)
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(ref() is None))
    del model
    asyncio.run(gc_tuning.refreeze_after_reload(ref, delay_s=0.001, attempts=3))
    assert frozen == [True]

    still_held = Model()
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append("held"))
    asyncio.run(gc_tuning.refreeze_after_reload(weakref.ref(still_held), delay_s=0.001, attempts=2))
    assert frozen == [True, "held"]  # gave up waiting, froze anyway


def test_serving_process_freezes_the_collector(batching_server: Server) -> None:
    """service/gc_tuning.py: frozen after start-up, and again after a reload once the old model is collected."""
    def reasons() -> list[str]:
        return [record.get("reason") for record in batching_server.log_records() if record.get("message") == "gc frozen"]

    with batching_server.client() as http:
        before = reasons().count("reload")
        response = http.post("/v1/admin/reload", headers={"Authorization": f"Bearer {batching_server.admin_token}"})
        assert response.status_code == 200, response.text
        assert http.post("/v1/tag", json={"text": "book a table"}).status_code == 200
    deadline = time.monotonic() + 20
    while reasons().count("reload") == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert reasons()[0] == "startup" and reasons().count("reload") > before, reasons()


def test_predict_mixed_equals_the_separate_calls(predictor: Any) -> None:
    """Predictor.predict_mixed (one padded pass for texts and token lists) answers as predict_texts /
    predict_tokens do, item by item; the service uses it when a micro-batch holds both kinds."""
    texts = [text for text in UTTERANCES if text.strip()]
    token_lists = [text.split() for text in UTTERANCES[:5]]
    mixed = predictor.predict_mixed([item for pair in zip(texts, token_lists) for item in pair] + texts[5:])
    expected = [item for pair in zip(predictor.predict_texts(texts[:5]), predictor.predict_tokens(token_lists))
                for item in pair] + predictor.predict_texts(texts[5:])
    assert len(mixed) == len(expected)
    for got, want in zip(mixed, expected):
        assert got.text == want.text
        assert [(t.text, t.start, t.end, t.label) for t in got.tokens] == \
            [(t.text, t.start, t.end, t.label) for t in want.tokens]
        assert [(s.slot, s.value, s.start, s.end) for s in got.slots] == \
            [(s.slot, s.value, s.start, s.end) for s in want.slots]
        for a, b in zip(got.tokens + got.slots, want.tokens + want.slots):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
        assert (got.intent is None) == (want.intent is None)
        if got.intent is not None:
            assert got.intent.name == want.intent.name
