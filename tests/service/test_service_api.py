"""End to end against ``python -m service`` on a real socket: every endpoint's success path."""

from __future__ import annotations

import re
import socket
import time
import uuid

import httpx
import pytest
from service_testlib import LIMITS, Server, assert_answers_correctly

SENTENCES = [
    "book a table for 4 at chez pierre tomorrow at 7pm",
    "find a cheap italian restaurant near midtown",
    "change my booking at little tokyo to friday at seven",
    "can you book bella napoli for two guests on may 12th",
]


def check_prediction(body: dict, text: str) -> None:
    """The answer echoes ``text``, and its offsets index into it; labels line up with tokens; slots are exact
    substrings."""
    assert set(body) == {"text", "tokens", "labels", "slots", "intent", "model"}
    assert body["text"] == text
    assert body["labels"] == [token["label"] for token in body["tokens"]]
    previous_end = 0
    for token in body["tokens"]:
        assert set(token) == {"text", "start", "end", "label", "confidence"}
        assert 0 <= previous_end <= token["start"] < token["end"] <= len(text)
        assert text[token["start"]:token["end"]] == token["text"]
        assert 0.0 <= token["confidence"] <= 1.0 + 1e-6
        previous_end = token["end"]
    for slot in body["slots"]:
        assert set(slot) == {"slot", "value", "start", "end", "confidence"}
        assert text[slot["start"]:slot["end"]] == slot["value"]
        assert 0.0 <= slot["confidence"] <= 1.0 + 1e-6
    if body["intent"] is not None:
        assert set(body["intent"]) == {"name", "confidence"}


def test_health_and_ready(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.head("/health").status_code == 200 and client.head("/ready").status_code == 200
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert set(ready.json()["model"]) == {"name", "version"}


def test_model_info(client: httpx.Client) -> None:
    info = client.get("/v1/model").json()
    assert {"name", "version", "created", "labels", "intents", "config", "metrics", "digest", "backend",
            "decoder", "quantization", "limits", "defaults"} == set(info)
    assert info["backend"] == "onnx", "training exports the graph, and auto prefers it"
    from slotfill.decoding import kernels

    assert info["decoder"] == ("c" if kernels._kernels is not None else "numpy"), "the compiled decoder when built"
    assert info["quantization"] is None, "only the onnx-int8 backend reports one"
    assert "O" in info["labels"] and any(label.startswith("B-") for label in info["labels"])
    assert info["intents"] and all(isinstance(name, str) for name in info["intents"])
    assert re.fullmatch(r"[0-9a-f]{64}", info["digest"])
    assert isinstance(info["config"], dict) and info["config"]
    assert isinstance(info["metrics"], dict)
    assert info["limits"] == LIMITS
    assert info["defaults"] == {"min_confidence": None}, "no default floor unless configured"


def test_tag_text(client: httpx.Client) -> None:
    info = client.get("/v1/model").json()
    found_slots = 0
    for text in SENTENCES:
        response = client.post("/v1/tag", json={"text": text})
        assert response.status_code == 200, response.text
        body = response.json()
        check_prediction(body, text)
        assert [token["text"] for token in body["tokens"]] == text.split()
        assert set(body["labels"]) <= set(info["labels"])
        assert body["intent"]["name"] in info["intents"]
        assert body["model"] == {"name": info["name"], "version": info["version"]}
        found_slots += len(body["slots"])
    assert found_slots > 0, "the test model should find some slots in sample-like sentences"


def test_tag_text_with_whitespace_and_punctuation(client: httpx.Client) -> None:
    text = "  book\ta table\nfor two,   at 7pm!\r\n"
    response = client.post("/v1/tag", json={"text": text})
    assert response.status_code == 200, response.text
    check_prediction(response.json(), text)


def test_tag_tokens(client: httpx.Client) -> None:
    tokens = ["book", "a", "table", "at", "chez", "pierre", "tomorrow"]
    response = client.post("/v1/tag", json={"tokens": tokens})
    assert response.status_code == 200, response.text
    body = response.json()
    joined = " ".join(tokens)
    check_prediction(body, joined)
    assert [token["text"] for token in body["tokens"]] == tokens


def test_text_and_tokens_agree(client: httpx.Client) -> None:
    text = SENTENCES[0]
    by_text = client.post("/v1/tag", json={"text": text}).json()
    by_tokens = client.post("/v1/tag", json={"tokens": text.split()}).json()
    assert by_text["labels"] == by_tokens["labels"]
    assert by_text["slots"] == by_tokens["slots"]  # single spaces: same offsets too


def test_batch_answers_in_order(client: httpx.Client) -> None:
    items = [{"text": text} for text in SENTENCES] + [{"tokens": SENTENCES[1].split()}, {"text": "hi"}]
    response = client.post("/v1/tag/batch", json={"items": items})
    assert response.status_code == 200, response.text
    answers = response.json()["items"]
    assert len(answers) == len(items)
    for item, answer in zip(items, answers):
        text = item.get("text") or " ".join(item["tokens"])
        check_prediction(answer, text)
        assert "".join(token["text"] for token in answer["tokens"]) == text.replace(" ", "")
    # Batching changes nothing but float rounding in the padded batch: each answer equals the
    # single-request answer, confidences to within 1e-4.
    for item, answer in zip(items, answers):
        single = client.post("/v1/tag", json=item).json()
        assert without_confidences(single) == without_confidences(answer)
        for a, b in zip(single["tokens"] + single["slots"], answer["tokens"] + answer["slots"]):
            assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-4)
        if single["intent"] is not None:
            assert single["intent"]["confidence"] == pytest.approx(answer["intent"]["confidence"], abs=1e-4)


def without_confidences(answer: dict) -> dict:
    stripped = {**answer, "tokens": [{k: v for k, v in t.items() if k != "confidence"} for t in answer["tokens"]],
                "slots": [{k: v for k, v in s.items() if k != "confidence"} for s in answer["slots"]]}
    if answer["intent"] is not None:
        stripped["intent"] = answer["intent"]["name"]
    return stripped


def test_batch_at_the_limit(client: httpx.Client) -> None:
    items = [{"text": f"book a table for {n} people"} for n in range(LIMITS["max_batch_items"])]
    response = client.post("/v1/tag/batch", json={"items": items})
    assert response.status_code == 200
    assert [answer["tokens"][4]["text"] for answer in response.json()["items"]] == [
        str(n) for n in range(LIMITS["max_batch_items"])]


def test_limits_are_inclusive(client: httpx.Client) -> None:
    at_limit = ("a " * LIMITS["max_tokens"]).strip()
    assert client.post("/v1/tag", json={"text": at_limit}).status_code == 200
    assert client.post("/v1/tag", json={"tokens": at_limit.split()}).status_code == 200
    long_token = "x" * LIMITS["max_chars"]
    assert client.post("/v1/tag", json={"text": long_token}).status_code == 200


def test_request_id_echoed(client: httpx.Client) -> None:
    given = "req-" + uuid.uuid4().hex
    response = client.post("/v1/tag", json={"text": "hello"}, headers={"X-Request-ID": given})
    assert response.headers["x-request-id"] == given
    generated = client.get("/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    for unsafe in ("x" * 200, "bad id", "a\tb", "ünïcode", "<script>"):
        replaced = client.get("/health", headers={"X-Request-ID": unsafe.encode("utf-8")}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", replaced), (unsafe, replaced)
    # Error responses carry it too.
    assert client.get("/nope", headers={"X-Request-ID": given}).headers["x-request-id"] == given


def test_one_structured_log_line_per_request(server: Server, client: httpx.Client) -> None:
    request_id = "log-" + uuid.uuid4().hex
    client.post("/v1/tag", json={"text": "book a table"}, headers={"X-Request-ID": request_id})
    client.post("/v1/tag", json={"text": ""}, headers={"X-Request-ID": request_id + "-bad"})
    deadline = time.monotonic() + 5
    while True:
        records = server.log_records()
        mine = [r for r in records if r.get("request_id") in (request_id, request_id + "-bad")]
        if len(mine) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    ok = [r for r in mine if r["request_id"] == request_id]
    bad = [r for r in mine if r["request_id"] == request_id + "-bad"]
    assert len(ok) == 1 and len(bad) == 1, mine
    assert ok[0]["method"] == "POST" and ok[0]["path"] == "/v1/tag" and ok[0]["status"] == 200
    assert bad[0]["status"] == 422
    assert isinstance(ok[0]["latency_ms"], (int, float)) and ok[0]["latency_ms"] >= 0
    assert {"ts", "level", "logger", "message"} <= set(ok[0])
    # Every line the server wrote is JSON (uvicorn's own lines included).
    for line in server.log_lines():
        if line.strip():
            assert line.startswith("{"), line


def metric_value(text: str, wanted_metric: str, /, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(wanted_metric):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != wanted_metric:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            total += float(value)
    return total


def test_metrics_count_requests(client: httpx.Client) -> None:
    before = client.get("/metrics").text
    for _ in range(3):
        assert client.post("/v1/tag", json={"text": "book a table"}).status_code == 200
    assert client.post("/v1/tag", json={"text": " "}).status_code == 422
    assert client.post("/v1/tag/batch", json={"items": [{"text": "a"}] * 5}).status_code == 200
    assert client.get("/no/such/route").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    def delta(metric: str, /, **labels: str) -> float:
        return metric_value(after, metric, **labels) - metric_value(before, metric, **labels)

    assert delta("slotfill_http_requests_total", method="POST", route="/v1/tag", status="200") == 3
    assert delta("slotfill_http_requests_total", method="POST", route="/v1/tag", status="422") == 1
    assert delta("slotfill_http_requests_total", route="/v1/tag/batch", status="200") == 1
    assert delta("slotfill_http_requests_total", route="<unmatched>", status="404") == 1
    assert delta("slotfill_errors_total", code="empty_text") == 1
    assert delta("slotfill_errors_total", code="not_found") == 1
    assert delta("slotfill_batch_size_count", kind="request") == 1
    assert delta("slotfill_batch_size_sum", kind="request") == 5
    # The server batches (the default): every item went through a micro-batch, 3 singles + the 5 items
    # (in one or more forward passes; sequential requests never share one).
    assert delta("slotfill_batch_size_sum", kind="micro") == 8
    assert 4 <= delta("slotfill_batch_size_count", kind="micro") <= 8
    assert delta("slotfill_batch_wait_seconds_count") == delta("slotfill_batch_size_count", kind="micro")
    assert delta("slotfill_http_request_duration_seconds_count", route="/v1/tag") == 4
    assert delta("slotfill_utterances_tagged_total") == 8
    info = client.get("/v1/model").json()
    assert metric_value(after, "slotfill_model_info", name=info["name"], version=info["version"],
                        digest=info["digest"]) == 1


def test_client_that_disconnects_mid_body(server: Server, client: httpx.Client, predictor: object) -> None:
    """Logged and counted as 499; nothing breaks."""
    host, port = server.base_url.removeprefix("http://").split(":")
    before = metric_value(client.get("/metrics").text, "slotfill_http_requests_total", status="499")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/tag HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"text\": ")
    deadline = time.monotonic() + 5
    while metric_value(client.get("/metrics").text, "slotfill_http_requests_total", status="499") == before:
        assert time.monotonic() < deadline, "the disconnect was not counted"
        time.sleep(0.05)
    assert_answers_correctly(client, predictor)


def test_odd_methods_do_not_grow_label_sets(client: httpx.Client) -> None:
    # (A method the HTTP parser does not know at all never reaches the app: uvicorn answers 400.)
    response = client.request("PROPFIND", "/v1/tag")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    metrics = client.get("/metrics").text
    assert 'method="PROPFIND"' not in metrics and 'method="OTHER"' in metrics


def test_openapi_documents_every_route(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/v1/tag", "/v1/tag/batch", "/v1/model", "/health", "/ready", "/metrics", "/v1/admin/reload"} <= set(
        schema["paths"])
    # Error responses are documented with the error schema, not FastAPI's default 422 body.
    tag_422 = schema["paths"]["/v1/tag"]["post"]["responses"]["422"]
    assert tag_422["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "HTTPValidationError" not in schema.get("components", {}).get("schemas", {})


def test_openapi_says_text_and_tokens_exclude_each_other(client: httpx.Client) -> None:
    """TagRequest's schema holds exactly the bodies the service takes as far as text and tokens go: one of
    them, the other absent or null; the schema is valid JSON Schema (2020-12, as OpenAPI 3.1 uses)."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    components = schema["components"]
    for name, part in components["schemas"].items():
        assert jsonschema_rs.meta.is_valid(part), name
    request = jsonschema_rs.Draft202012Validator({"$ref": "#/components/schemas/TagRequest",
                                                  "components": components})
    for body in ({"text": "cancel my booking"}, {"tokens": ["cancel", "my", "booking"]},
                 {"text": "cancel my booking", "tokens": None}, {"text": None, "tokens": ["cancel"]}):
        assert request.is_valid(body), body
        assert client.post("/v1/tag", json=body).status_code == 200, body
    for body, code in (({"text": "cancel my booking", "tokens": ["cancel"]}, "text_and_tokens"),
                       ({}, "missing_input"), ({"text": None, "tokens": None}, "missing_input")):
        assert not request.is_valid(body), body
        assert client.post("/v1/tag", json=body).json()["error"]["code"] == code
    batch = jsonschema_rs.Draft202012Validator({"$ref": "#/components/schemas/BatchRequest",
                                                "components": components})
    assert batch.is_valid({"items": [{"text": "hi"}, {"tokens": ["hi"]}]})
    assert not batch.is_valid({"items": [{"text": "hi"}, {"text": "hi", "tokens": ["hi"]}]})
    for field in ("text", "tokens"):
        assert "not both" in components["schemas"]["TagRequest"]["properties"][field]["description"]
    described = components["schemas"]["TagResponse"]["properties"]["text"]
    assert described["type"] == "string" and "joined by single spaces" in described["description"]


def test_the_text_echo_is_the_request_s_own_string(predictor) -> None:
    """The answer's ``text`` refers to the request's string (no copy is made for it), and a tokens request's
    is the one joined string its offsets were computed on."""
    from service.routers.tag import respond
    from service.schemas import TagRequest

    by_text, by_tokens = TagRequest(text=SENTENCES[0]), TagRequest(tokens=SENTENCES[1].split())
    first, second = respond(predictor, [by_text, by_tokens])
    assert first["text"] is by_text.text
    assert second["text"] == SENTENCES[1] and all(
        second["text"][t["start"]:t["end"]] == t["text"] for t in second["tokens"])
