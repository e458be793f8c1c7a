"""The Open Inference Protocol (KServe V2) routes, end to end against ``python -m service`` on a real socket:
Triton's own HTTP client (``tritonclient[http]``), JSON and binary tensor data, raw requests as the
protocol's documentation writes them, and its error shape. Answers must be those of ``/v1/tag/batch``."""

from __future__ import annotations

import http.client
import json
import struct
import urllib.error
import urllib.request
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_testlib import LIMITS, Server, ThreadServer
from test_service_api import metric_value

from service.admission import Admission
from service.app import create_app
from service.settings import Settings

tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

SENTENCES = [
    "book a table for 4 at chez pierre tomorrow at 7pm",
    "find a cheap italian restaurant near midtown",
    "change my booking at little tokyo to friday at seven",
    "can you book bella napoli for two guests on may 12th",
    "?!",  # characters but no tokens: no labels, no slots, no intent
]
OUTPUT_NAMES = ["labels", "slots", "intent", "intent_confidence"]


@pytest.fixture(scope="module")
def model(server: Server) -> dict[str, Any]:
    with server.client() as http:
        return http.get("/v1/model").json()


@pytest.fixture
def triton(server: Server) -> Any:
    client = tritonclient_http.InferenceServerClient(url=server.base_url.removeprefix("http://"))
    yield client
    client.close()


def v1_answers(client: httpx.Client, texts: list[str]) -> list[dict[str, Any]]:
    response = client.post("/v1/tag/batch", json={"items": [{"text": text} for text in texts]})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def text_input(texts: list[str], binary: bool) -> Any:
    tensor = tritonclient_http.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=binary)
    return tensor


def assert_same_as_v1(outputs: dict[str, list[Any]], expected: list[dict[str, Any]]) -> None:
    """Labels, spans and intents exactly as /v1 answers them; confidences to float rounding (micro-batches)."""
    assert len(outputs["labels"]) == len(expected)
    for index, answer in enumerate(expected):
        assert json.loads(outputs["labels"][index]) == answer["labels"]
        slots = json.loads(outputs["slots"][index])
        assert [{k: v for k, v in slot.items() if k != "confidence"} for slot in slots] == \
            [{k: v for k, v in slot.items() if k != "confidence"} for slot in answer["slots"]]
        assert [slot["confidence"] for slot in slots] == pytest.approx(
            [slot["confidence"] for slot in answer["slots"]], abs=1e-4)
        intent = json.loads(outputs["intent"][index])
        assert intent == (answer["intent"]["name"] if answer["intent"] else None)
        confidence = outputs["intent_confidence"][index]
        if answer["intent"] is None:
            assert confidence is None or np.isnan(confidence)
        else:
            assert confidence == pytest.approx(answer["intent"]["confidence"], abs=1e-4)


def result_outputs(result: Any) -> dict[str, list[Any]]:
    """Each output of a tritonclient result as a list (BYTES elements decoded to text)."""
    outputs = {}
    for name in OUTPUT_NAMES:
        array = result.as_numpy(name)
        assert array is not None, name
        outputs[name] = [value.decode("utf-8") if isinstance(value, bytes) else value for value in array.tolist()]
    return outputs


def assert_v2_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> str:
    """The protocol's error shape, ``{"error": "<field>: <message> [<code>]"}``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    message = body["error"]
    assert message.endswith(f"[{code}]"), message
    if field is not None:
        assert message.startswith(f"{field}: "), message
    return message


def infer_body(texts: list[Any], **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}], **extra}


# ----------------------------------------------------------------------------- with Triton's client
def test_health_and_metadata_through_the_client(triton: Any, model: dict[str, Any]) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(model["name"])
    assert triton.is_model_ready(model["name"], model["version"])
    assert not triton.is_model_ready("no-such-model")
    assert not triton.is_model_ready(model["name"], "no-such-version")
    server = triton.get_server_metadata()
    assert server["name"] == "slotfill" and "binary_tensor_data" in server["extensions"] and server["version"]
    metadata = triton.get_model_metadata(model["name"])
    assert metadata == triton.get_model_metadata(model["name"], model["version"])
    assert metadata["name"] == model["name"] and metadata["versions"] == [model["version"]]
    assert metadata["platform"] == f"slotfill_{model['backend']}"
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "labels", "datatype": "BYTES", "shape": [-1]},
                                   {"name": "slots", "datatype": "BYTES", "shape": [-1]},
                                   {"name": "intent", "datatype": "BYTES", "shape": [-1]},
                                   {"name": "intent_confidence", "datatype": "FP32", "shape": [-1]}]
    with pytest.raises(InferenceServerException) as caught:
        triton.get_model_metadata("no-such-model")
    assert caught.value.status() == "404" and "no-such-model" in caught.value.message()


def test_one_text_as_json(triton: Any, client: httpx.Client, model: dict[str, Any]) -> None:
    text = SENTENCES[0]
    outputs = [tritonclient_http.InferRequestedOutput(name, binary_data=False) for name in OUTPUT_NAMES]
    result = triton.infer(model["name"], [text_input([text], binary=False)], outputs=outputs, request_id="one")
    response = result.get_response()
    assert response["id"] == "one" and response["model_name"] == model["name"]
    assert response["model_version"] == model["version"]
    assert all("data" in output and output["shape"] == [1] for output in response["outputs"])
    assert_same_as_v1(result_outputs(result), v1_answers(client, [text]))
    assert json.loads(result_outputs(result)["slots"][0]), "the sentence has slots to compare"


def test_many_texts_as_json(triton: Any, client: httpx.Client, model: dict[str, Any]) -> None:
    outputs = [tritonclient_http.InferRequestedOutput(name, binary_data=False) for name in OUTPUT_NAMES]
    result = triton.infer(model["name"], [text_input(SENTENCES, binary=False)], outputs=outputs,
                          model_version=model["version"])
    assert [output["shape"] for output in result.get_response()["outputs"]] == [[len(SENTENCES)]] * 4
    assert "id" not in result.get_response(), "no id asked, none echoed"
    assert_same_as_v1(result_outputs(result), v1_answers(client, SENTENCES))


def test_many_texts_as_binary_data_the_clients_default(triton: Any, client: httpx.Client,
                                                       model: dict[str, Any]) -> None:
    """By default tritonclient sends BYTES inputs as binary data and, asking for no outputs, gets every output
    back as binary data (``binary_data_output``)."""
    texts = [*SENTENCES, "réserve une table à midi ☕"]  # UTF-8 beyond ASCII in the binary tensors
    result = triton.infer(model["name"], [text_input(texts, binary=True)])
    response = result.get_response()
    assert all("data" not in output and output["parameters"]["binary_data_size"] > 0
               for output in response["outputs"])
    assert_same_as_v1(result_outputs(result), v1_answers(client, texts))
    # Mixed: one output as binary data, one as JSON.
    mixed = triton.infer(model["name"], [text_input(texts, binary=True)],
                         outputs=[tritonclient_http.InferRequestedOutput("intent", binary_data=True),
                                  tritonclient_http.InferRequestedOutput("labels", binary_data=False)])
    assert [output["name"] for output in mixed.get_response()["outputs"]] == ["intent", "labels"]
    assert [json.loads(value) for value in mixed.as_numpy("labels").tolist()] == \
        [answer["labels"] for answer in v1_answers(client, texts)]
    assert mixed.as_numpy("slots") is None


def test_only_the_outputs_asked_for(triton: Any, model: dict[str, Any]) -> None:
    outputs = [tritonclient_http.InferRequestedOutput("intent_confidence", binary_data=False),
               tritonclient_http.InferRequestedOutput("slots", binary_data=False)]
    result = triton.infer(model["name"], [text_input(SENTENCES[:2], binary=False)], outputs=outputs)
    assert [output["name"] for output in result.get_response()["outputs"]] == ["intent_confidence", "slots"]
    assert result.as_numpy("labels") is None
    assert result.as_numpy("intent_confidence").dtype == np.float32


def test_client_errors_come_back_as_exceptions(triton: Any, model: dict[str, Any]) -> None:
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(model["name"], [text_input(["book a table", "   "], binary=True)])
    assert caught.value.status() == "400"
    assert caught.value.message() == "inputs.0.data.1: text is empty or only whitespace [empty_text]"
    with pytest.raises(InferenceServerException) as caught:
        triton.infer("no-such-model", [text_input(["book a table"], binary=False)])
    assert caught.value.status() == "404"


# ----------------------------------------------------------------------------- raw requests, as the protocol has them
def test_documented_request_and_response(client: httpx.Client, model: dict[str, Any]) -> None:
    """The protocol document's inference example (id "42", one input, one output asked for), with our input."""
    body = {"id": "42",
            "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": SENTENCES[:2]}],
            "outputs": [{"name": "labels"}]}
    response = client.post(f"/v2/models/{model['name']}/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer == {"model_name": model["name"], "model_version": model["version"], "id": "42",
                      "outputs": [{"name": "labels", "shape": [2], "datatype": "BYTES",
                                   "data": [json.dumps(item["labels"], separators=(",", ":"))
                                            for item in v1_answers(client, SENTENCES[:2])]}]}


def test_nested_data_in_the_shapes_own_form(client: httpx.Client, model: dict[str, Any]) -> None:
    """Tensor data may come "in its natural multi-dimensional representation": [[a], [b]] for shape [2, 1]."""
    texts = SENTENCES[:2]
    flat = client.post(f"/v2/models/{model['name']}/infer", json=infer_body(texts)).json()
    for shape, data in (([2, 1], [[texts[0]], [texts[1]]]), ([1, 2], [texts]), ([2, 1], texts)):
        body = {"inputs": [{"name": "text", "shape": shape, "datatype": "BYTES", "data": data}]}
        response = client.post(f"/v2/models/{model['name']}/versions/{model['version']}/infer", json=body)
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        assert all(output["shape"] == shape for output in outputs), "outputs take the input's shape"
        assert [output["data"][:1] for output in outputs if output["name"] != "intent_confidence"] == \
            [output["data"][:1] for output in flat["outputs"] if output["name"] != "intent_confidence"]


def test_raw_binary_request(server: Server, client: httpx.Client, model: dict[str, Any]) -> None:
    """The binary tensor data extension by hand: JSON header, then each BYTES element length-prefixed."""
    texts = SENTENCES[:3]
    raw = b"".join(struct.pack("<I", len(text.encode())) + text.encode() for text in texts)
    header = json.dumps({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "intent", "parameters": {"binary_data": True}}]}).encode()
    response = client.post(f"/v2/models/{model['name']}/infer", content=header + raw,
                           headers={"Content-Type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:length])
    [output] = answer["outputs"]
    tail = response.content[length:]
    assert output["parameters"]["binary_data_size"] == len(tail)
    intents, position = [], 0
    while position < len(tail):
        (size,) = struct.unpack_from("<I", tail, position)
        intents.append(json.loads(tail[position + 4:position + 4 + size]))
        position += 4 + size
    assert intents == [item["intent"]["name"] for item in v1_answers(client, texts)]


def test_urllib_and_no_content_type(server: Server, model: dict[str, Any]) -> None:
    """urllib as the protocol's examples write the request; and, as Triton's client sends it, a body with no
    Content-Type at all is taken as JSON (urllib would add a form content type: http.client does not)."""
    body = json.dumps(infer_body([SENTENCES[1]])).encode()
    request = urllib.request.Request(f"{server.base_url}/v2/models/{model['name']}/infer", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - a local test server
        assert response.status == 200
        assert [output["name"] for output in json.load(response)["outputs"]] == OUTPUT_NAMES
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{server.base_url}/v2/models/nope", timeout=30)  # noqa: S310
    assert caught.value.code == 404 and set(json.load(caught.value)) == {"error"}
    host, port = server.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", f"/v2/models/{model['name']}/infer", body=body)  # no Content-Type header
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert [output["name"] for output in json.loads(response.read())["outputs"]] == OUTPUT_NAMES
    finally:
        connection.close()


def test_health_metadata_and_ready_routes(client: httpx.Client, model: dict[str, Any]) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.head("/v2/health/live").status_code == 200 and client.head("/v2/health/ready").status_code == 200
    assert client.get(f"/v2/models/{model['name']}/ready").json() == {"name": model["name"], "ready": True}
    assert client.get(f"/v2/models/{model['name']}/versions/{model['version']}/ready").status_code == 200
    assert client.get("/v2").json()["name"] == "slotfill"


# ----------------------------------------------------------------------------- errors, in the protocol's shape
def test_unknown_model_or_version(client: httpx.Client, model: dict[str, Any]) -> None:
    for path, named in (("/v2/models/nope", "'nope'"), ("/v2/models/nope/ready", "'nope'"),
                        (f"/v2/models/{model['name']}/versions/0", "version '0'"),
                        (f"/v2/models/{model['name']}/versions/0/ready", "version '0'")):
        assert named in assert_v2_error(client.get(path), 404, "model_not_found")
    for path in ("/v2/models/nope/infer", f"/v2/models/{model['name']}/versions/0/infer"):
        assert_v2_error(client.post(path, json=infer_body(["book a table"])), 404, "model_not_found")


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"inputs": []}, "missing_input", "inputs"),
    ({}, "missing_field", "inputs"),
    ({"inputs": [{"name": "words", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}, "unknown_input",
     "inputs.0.name"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, "wrong_datatype",
     "inputs.0.datatype"),
    ({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a b", "c"]}]}, "shape_mismatch",
     "inputs.0.data"),
    ({"inputs": [{"name": "text", "shape": [2, 2], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]},
     "wrong_shape", "inputs.0.shape"),
    ({"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b", "c"]]}]},
     "shape_mismatch", "inputs.0.data"),
    ({"inputs": [{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}]}, "empty_batch",
     "inputs.0.shape"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES"}]}, "missing_field", "inputs.0.data"),
    ({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["book", 7]}]}, "wrong_type",
     "inputs.0.data.1"),
    ({"inputs": [{"name": "text", "shape": [-1], "datatype": "BYTES", "data": ["a"]}]}, "invalid_value",
     "inputs.0.shape.0"),
    (infer_body(["book a table", " \u3000 "]), "empty_text", "inputs.0.data.1"),
    (infer_body(["book\x00a table"]), "invalid_characters", "inputs.0.data.0"),
    (infer_body(["x " * LIMITS["max_chars"]]), "too_long", "inputs.0.data.0"),
    (infer_body(["a b"] + ["x " * (LIMITS["max_tokens"] + 1)]), "too_many_tokens", "inputs.0.data.1"),
    (infer_body(["a"] * (LIMITS["max_batch_items"] + 1)), "too_many_items", "inputs.0.shape"),
    (infer_body(["a"], outputs=[{"name": "tokens"}]), "unknown_output", "outputs.0.name"),
    (infer_body(["a"], outputs=[{"name": "slots"}, {"name": "slots"}]), "duplicate_output", "outputs.1.name"),
    (infer_body(["a"], ouputs=[{"name": "slots"}]), "unknown_field", "ouputs"),
    (infer_body(["a"], id=42), "wrong_type", "id"),
    (infer_body(["a"], parameters={"binary_data_output": "yes"}), "wrong_type", "parameters.binary_data_output"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 4}}]},
     "invalid_header", "inputs.0.parameters.binary_data_size"),
    ([1, 2], "wrong_type", None),
])
def test_bad_requests_are_400_naming_the_field(client: httpx.Client, model: dict[str, Any], body: Any, code: str,
                                               field: str | None) -> None:
    assert_v2_error(client.post(f"/v2/models/{model['name']}/infer", json=body), 400, code, field)


def test_bad_bodies_are_400(client: httpx.Client, model: dict[str, Any]) -> None:
    path = f"/v2/models/{model['name']}/infer"
    assert_v2_error(client.post(path, content=b'{"inputs": [', headers={"Content-Type": "application/json"}), 400,
                    "invalid_json")
    assert_v2_error(client.post(path, content=b""), 400, "missing_body")
    assert_v2_error(client.post(path, content=b'\xff{}', headers={"Content-Type": "application/json"}), 400,
                    "invalid_utf8")
    assert_v2_error(client.post(path, content=b'{"id": "a", "id": "b", "inputs": []}'), 400, "duplicate_field", "id")
    assert_v2_error(client.post(path, content=b"text=hi", headers={"Content-Type": "text/plain"}), 415,
                    "unsupported_media_type")
    assert_v2_error(client.post(path, content=b"{}", headers={"Content-Encoding": "gzip"}), 415,
                    "unsupported_media_type")
    # Binary tensor data that does not add up.
    header = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    for tail, code in ((struct.pack("<I", 10) + b"abcd", "invalid_binary_data"),  # announces more than it has
                       (struct.pack("<I", 4) + b"\xff\xfe\xfd\xfc", "invalid_utf8"),
                       (struct.pack("<I", 4) + b"abcdEXTRA", "invalid_binary_data")):  # bytes past the inputs
        response = client.post(path, content=header + tail,
                               headers={"Inference-Header-Content-Length": str(len(header))})
        assert_v2_error(response, 400, code)
    response = client.post(path, content=header, headers={"Inference-Header-Content-Length": "99999"})
    assert_v2_error(response, 400, "invalid_header")


# ----------------------------------------------------------------------------- documentation and metrics
def test_routes_in_openapi_and_metrics_by_template(client: httpx.Client, model: dict[str, Any]) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}", "/v2/models/{model_name}/ready",
            "/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}",
            "/v2/models/{model_name}/versions/{model_version}/ready",
            "/v2/models/{model_name}/versions/{model_version}/infer"} <= set(schema["paths"])
    infer = schema["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/V2InferenceRequest")
    assert infer["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/V2ErrorResponse")
    assert "422" not in infer["responses"]
    before = client.get("/metrics").text
    assert client.post(f"/v2/models/{model['name']}/infer", json=infer_body(["book a table"])).status_code == 200
    assert client.post("/v2/models/nope/infer", json=infer_body(["book a table"])).status_code == 404
    after = client.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    route = "/v2/models/{model_name}/infer"
    assert delta("slotfill_http_requests_total", method="POST", route=route, status="200") == 1
    assert delta("slotfill_http_requests_total", method="POST", route=route, status="404") == 1
    assert delta("slotfill_errors_total", code="model_not_found") == 1
    assert delta("slotfill_utterances_tagged_total") == 1
    assert 'route="/v2/models/nope/infer"' not in after


# ----------------------------------------------------------------------------- not ready, over capacity
def test_not_ready_without_a_lifespan(predictor: Any) -> None:
    client = TestClient(create_app(Settings(), predictor=predictor))  # lifespan not run: nothing loaded
    assert client.get("/v2/health/live").status_code == 200
    for response in (client.get("/v2/health/ready"), client.get(f"/v2/models/{predictor.name}/ready"),
                     client.get(f"/v2/models/{predictor.name}"),
                     client.post(f"/v2/models/{predictor.name}/infer", json=infer_body(["book a table"]))):
        assert_v2_error(response, 503, "not_ready")
        assert response.headers["retry-after"] == "1"


def test_over_capacity_is_503_in_the_protocols_shape(predictor: Any) -> None:
    """Infer shares /v1/tag's admission limit (service/admission.py): at the limit, 503 with Retry-After."""
    app = create_app(Settings(), predictor=predictor)
    gate = app.state.admission = Admission(2, retry_after_s=7)
    with ThreadServer(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as http:
        path = f"/v2/models/{predictor.name}/infer"
        assert http.post(path, json=infer_body(["book a table"])).status_code == 200
        gate.pending = 2  # two requests in flight
        response = http.post(path, json=infer_body(["book a table"]))
        assert_v2_error(response, 503, "overloaded")
        assert response.headers["retry-after"] == "7"
        gate.pending = 0
        assert http.post(path, json=infer_body(["book a table"])).status_code == 200
        assert gate.pending == 0, "every answer leaves the count"
