"""The Open Inference Protocol (KServe V2) beside the ``/v1`` API, for serving platforms that speak it
(KServe, Seldon, Triton's clients).

=====  =============================================  ==================================================
GET    ``/v2``                                        server metadata: name, version, extensions
GET    ``/v2/health/live``, ``/v2/health/ready``      200 ``{"live": true}`` / ``{"ready": true}``; 503
GET    ``/v2/models/{name}[/versions/{v}]``           model metadata: inputs and outputs
GET    ``/v2/models/{name}[/versions/{v}]/ready``     200 once the model is loaded and warm
POST   ``/v2/models/{name}[/versions/{v}]/infer``     tag the texts of the input ``text``
=====  =============================================  ==================================================

The model's name and version are the ones ``/v1/model`` reports (the artifact's); another name, or another
version, is a 404. Input ``text`` (BYTES, shape ``[n]``) holds n texts; the outputs ``labels``, ``slots``
and ``intent`` (BYTES) hold one JSON text per item -- the item's labels, its slots as ``/v1/tag`` returns
them, its intent's name (or ``null``) -- and ``intent_confidence`` (FP32) the intent's confidence (null in
JSON, NaN as binary data, where there is no intent).

Inference takes the same path as ``POST /v1/tag/batch`` (``routers/tag.py``'s ``run_items``: admission
limit, micro-batcher, size limits), so it answers exactly what ``/v1`` answers. Errors use the protocol's
shape, ``{"error": "<field>: <message> [<code>]"}``: 400 for anything wrong with the request (where ``/v1``
says 422), 404 for an unknown model, 503 when not ready or over capacity. Errors answered before
routing (413 body too large, 404 unknown route, 405) keep the ``/v1`` shape.

The binary tensor data extension (``binary_tensor_data``, which Triton's clients use by default) is
supported both ways: a body of ``Inference-Header-Content-Length`` bytes of JSON followed by the tensors'
bytes (a BYTES element is a 4-byte little-endian length, then the bytes), inputs naming their size in the
``binary_data_size`` parameter; outputs come back that way when asked for with ``binary_data`` (per
output) or ``binary_data_output`` (the request's default).
"""

from __future__ import annotations

import email.message
import functools
import json
import math
import struct
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from pydantic_core import to_json

from slotfill import __version__

from ..admission import admission_for
from ..dependencies import MetricsDep, ModelStateDep, PredictorDep, SettingsDep
from ..errors import APIError, count_error, describe_validation_error, error_payload
from ..json_route import decode_json
from ..limits import check_inference_request, check_text_size
from ..schemas import (
    ErrorResponse,
    TagRequest,
    V2ErrorResponse,
    V2InferenceRequest,
    V2InferenceResponse,
    V2ModelMetadata,
    V2ModelReady,
    V2RequestInput,
    V2ServerLive,
    V2ServerMetadata,
    V2ServerReady,
    V2TensorMetadata,
)
from ..state import PredictorLike
from .health import check_model_health
from .tag import run_items

INPUT_NAME = "text"
BYTES, FP32 = "BYTES", "FP32"
OUTPUTS = {"labels": BYTES, "slots": BYTES, "intent": BYTES, "intent_confidence": FP32}
EXTENSIONS = ["binary_tensor_data"]  # Triton's name for the extension, which its clients expect
HEADER_LENGTH = "inference-header-content-length"
_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix in binary tensor data


# ----------------------------------------------------------------------------- errors in the protocol's shape
def v2_error(request: Request, status_code: int, code: str, message: str, field: str | None = None,
             headers: dict[str, str] | None = None) -> Response:
    """``{"error": "<field>: <message> [<code>]"}``: the protocol has one string where ``/v1`` has three
    fields; the code goes in brackets so clients can still tell errors apart (and is counted in the
    errors metric as ``/v1``'s are)."""
    count_error(request.app, code)
    cleaned = error_payload(code, message, field)["error"]  # bounded, UTF-8-safe: field comes from the client
    text = f"{cleaned['field']}: {cleaned['message']}" if cleaned["field"] else cleaned["message"]
    body = json.dumps({"error": f"{text} [{code}]"}, ensure_ascii=False).encode("utf-8")
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def _status(status_code: int) -> int:
    # The protocol: "a failed inference request must be indicated by an HTTP error status (typically 400)".
    # /v1's 422 (the body parsed but breaks the schema or a limit) is that 400 here.
    return 400 if status_code == 422 else status_code


class V2Route(APIRoute):
    """A route that answers every error in the protocol's shape (``APIError`` and FastAPI's validation
    errors alike). For a route with a body (infer) it also reads the body itself first -- JSON, or JSON
    followed by binary tensor data -- and puts the request behind the admission limit as ``/v1/tag``'s
    routes are (``service/admission.py``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def v2_handler(request: Request) -> Response:
            try:
                if not takes_body:
                    return await handler(request)
                gate = admission_for(request.app)
                if not gate.try_enter():
                    return v2_error(request, 503, "overloaded", gate.message, headers={"Retry-After": gate.retry_after})
                try:
                    return await handler(await json_request(request))
                finally:
                    gate.leave()
            except APIError as exc:
                return v2_error(request, _status(exc.status_code), exc.code, exc.message, exc.field, exc.headers)
            except RequestValidationError as exc:
                errors = list(exc.errors())
                if not errors:
                    return v2_error(request, 400, "invalid_request", "invalid request")
                code, message, field = describe_validation_error(errors[0])
                return v2_error(request, 400, code, message, field)

        return v2_handler


# ----------------------------------------------------------------------------- the request body
@functools.lru_cache(maxsize=64)
def _media_type(content_type: str) -> tuple[str, str | None]:
    message = email.message.Message()
    message["content-type"] = content_type
    charset = message.get_param("charset")
    return message.get_content_type(), (str(charset) if charset else None)


async def json_request(request: Request) -> Request:
    """The request as FastAPI's JSON path wants it: content type ``application/json`` and the parsed body
    (binary tensors decoded into ``data``) cached on it.

    Triton's HTTP client sends no content type at all (FastAPI would not parse such a body), or
    ``application/octet-stream`` with binary tensors; both are accepted here, as is JSON."""
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        # A compressed body would get past max_body_bytes and expand after it: not accepted.
        raise APIError(415, "unsupported_media_type", f"content encoding {encoding!r} is not supported; "
                                                      "send the body uncompressed")
    content_type = request.headers.get("content-type")
    if content_type:
        media_type, charset = _media_type(content_type)
        if not (media_type in ("application/json", "application/octet-stream") or
                (media_type.startswith("application/") and media_type.endswith("+json"))):
            raise APIError(415, "unsupported_media_type", "content type must be application/json or "
                                                          f"application/octet-stream, not {content_type!r}")
        if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
            raise APIError(415, "unsupported_media_type", f"charset must be utf-8, not {charset!r}")
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is None:
        json_bytes, binary = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 <= length <= len(body):
            raise APIError(400, "invalid_header", f"Inference-Header-Content-Length is {header_length!r}: it must "
                                                  f"be a number of bytes from 0 to the body's {len(body)}")
        json_bytes, binary = body[:length], body[length:]
    if not json_bytes.strip():
        raise APIError(400, "missing_body", "a JSON inference request is required")
    settings = request.app.state.settings

    def finish(value: Any) -> Any:  # the binary tensors in, then the limits (service/limits.py)
        attach_binary_inputs(value, binary, header_length is not None, settings.max_batch_items)
        return check_inference_request(value, settings)

    parsed = await decode_json(json_bytes, request.app, finish)  # /v1's parser: duplicate keys, NaN, nesting
    scope = dict(request.scope)
    scope["headers"] = [(name, value) for name, value in request.scope.get("headers", ())
                        if name not in (b"content-type", b"content-length")] + [(b"content-type", b"application/json")]
    rewritten = Request(scope, request.receive)
    rewritten._body = json_bytes  # noqa: SLF001 - Starlette's caches: FastAPI reads them instead of the socket
    rewritten._json = parsed  # noqa: SLF001
    return rewritten


def attach_binary_inputs(parsed: Any, binary: bytes, has_header: bool, max_texts: int) -> None:
    """Move each binary input's bytes (``parameters.binary_data_size``, in input order) into its ``data``.

    BYTES tensors become lists of strings (400 ``too_many_items`` past ``max_texts`` elements, found
    before the rest is read); other datatypes are left without data (the datatype check refuses them).
    A body that is not shaped like a request is left to the schema to report."""
    inputs = parsed.get("inputs") if isinstance(parsed, dict) else None
    offset = 0
    for index, tensor in enumerate(inputs if isinstance(inputs, list) else ()):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        field = f"inputs.{index}.parameters.binary_data_size"
        size = parameters["binary_data_size"]
        if not has_header:
            raise APIError(400, "invalid_header", "binary_data_size needs the binary tensor data extension's "
                                                  "Inference-Header-Content-Length header", field)
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary) - offset:
            raise APIError(400, "invalid_binary_data", f"binary_data_size {size!r} is not a number of bytes within "
                                                       f"the {len(binary) - offset} left after the JSON", field)
        if "data" in tensor:
            raise APIError(400, "invalid_binary_data", "give data or binary_data_size, not both", f"inputs.{index}")
        chunk = binary[offset:offset + size]
        offset += size
        if tensor.get("datatype") == BYTES:
            tensor["data"] = decode_bytes_tensor(chunk, f"inputs.{index}", max_texts)
    if offset != len(binary):
        raise APIError(400, "invalid_binary_data", f"{len(binary) - offset} bytes after the JSON belong to no input's "
                                                   "binary_data_size")


def decode_bytes_tensor(chunk: bytes, field: str, max_texts: int) -> list[str]:
    """A BYTES tensor's binary form (each element: 4-byte little-endian length, then the bytes) as texts,
    at most ``max_texts`` of them (a 1 MiB tensor holds 262,144 empty ones)."""
    texts: list[str] = []
    position = 0
    while position < len(chunk):
        if len(texts) == max_texts:
            raise APIError(400, "too_many_items", f"more than {max_texts} texts; the limit is {max_texts}",
                           f"{field}.shape")
        if position + 4 > len(chunk):
            raise APIError(400, "invalid_binary_data", f"element {len(texts)} is cut short in its length", field)
        (length,) = _LENGTH.unpack_from(chunk, position)
        position += 4
        if position + length > len(chunk):
            raise APIError(400, "invalid_binary_data", f"element {len(texts)} is cut short: {length} bytes "
                                                       f"announced, {len(chunk) - position} left", field)
        try:
            texts.append(chunk[position:position + length].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise APIError(400, "invalid_utf8", f"element {len(texts)} is not valid UTF-8 (byte {exc.start})",
                           f"{field}.data.{len(texts)}") from None
        position += length
    return texts


def encode_bytes_tensor(elements: Sequence[str]) -> bytes:
    parts: list[bytes] = []
    for element in elements:
        raw = element.encode("utf-8")
        parts += (_LENGTH.pack(len(raw)), raw)
    return b"".join(parts)


# ----------------------------------------------------------------------------- the model named in the path
def check_model(predictor: PredictorLike, model_name: str, model_version: str | None = None) -> PredictorLike:
    if model_name != predictor.name:
        raise APIError(404, "model_not_found", f"model {model_name!r} is not served here; this server serves "
                                               f"{predictor.name!r}")
    if model_version is not None and model_version != predictor.version:
        raise APIError(404, "model_not_found", f"model {model_name!r} has no version {model_version!r}; this "
                                               f"server serves version {predictor.version!r}")
    return predictor


async def get_served_model(model_name: str, predictor: PredictorDep) -> PredictorLike:
    """The model being served when the path names it (404 otherwise; 503 before it is loaded)."""
    return check_model(predictor, model_name)


async def get_served_model_version(model_name: str, model_version: str, predictor: PredictorDep) -> PredictorLike:
    """As :func:`get_served_model`, and the version in the path must be the served one."""
    return check_model(predictor, model_name, model_version)


ServedModelDep = Annotated[PredictorLike, Depends(get_served_model)]
ServedModelVersionDep = Annotated[PredictorLike, Depends(get_served_model_version)]


# ----------------------------------------------------------------------------- routes
router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=V2Route)

NOT_READY = {503: {"model": V2ErrorResponse, "description": "The model is not loaded yet."}}
# Declared so that FastAPI does not document its 422 body for routes with parameters: these routes answer
# client errors in the protocol's shape, and a request that breaks the schema with 400.
CLIENT_ERRORS = {"4XX": {"model": V2ErrorResponse, "description": "Client errors, in the protocol's shape."}}
MODEL_RESPONSES: dict[int | str, dict] = {
    404: {"model": V2ErrorResponse, "description": "No model of that name (or version) is served here."},
    **NOT_READY, **CLIENT_ERRORS,
}
INFER_RESPONSES: dict[int | str, dict] = {
    200: {"content": {"application/octet-stream": {}},
          "description": "JSON; with outputs asked for as binary data, `Inference-Header-Content-Length` bytes of "
                         "JSON followed by the outputs' bytes (application/octet-stream)."},
    400: {"model": V2ErrorResponse, "description": "The request is not a valid inference request for this model, "
                                                   "or breaks a limit; the message names the field."},
    404: MODEL_RESPONSES[404],
    413: {"model": ErrorResponse, "description": "Body over max_body_bytes (answered before routing, in /v1's "
                                                 "error shape)."},
    415: {"model": V2ErrorResponse, "description": "Content type other than JSON or application/octet-stream, "
                                                   "or a compressed body."},
    503: {"model": V2ErrorResponse, "description": "Not ready, or over capacity (Retry-After)."},
    **CLIENT_ERRORS,
}


def not_ready() -> APIError:
    return APIError(503, "not_ready", "the model is not loaded yet", headers={"Retry-After": "1"})


@router.get("", response_model=V2ServerMetadata, summary="Server metadata")
async def server_metadata() -> V2ServerMetadata:
    return V2ServerMetadata(name="slotfill", version=__version__, extensions=EXTENSIONS)


@router.get("/health/live", response_model=V2ServerLive, summary="Liveness: the process answers and its model works",
            responses={503: {"model": V2ErrorResponse, "description": "The model needs a restart (model_failing, "
                                                                     "model_stalled)."}})
@router.head("/health/live", include_in_schema=False)  # as /health: some probes use HEAD
async def server_live(state: ModelStateDep) -> V2ServerLive:
    check_model_health(state)  # as /health: 503 when the model needs a restart
    return V2ServerLive(live=True)


@router.get("/health/ready", response_model=V2ServerReady, responses=NOT_READY,
            summary="Readiness: 200 once the model is loaded and warm")
@router.head("/health/ready", include_in_schema=False)
async def server_ready(state: ModelStateDep) -> V2ServerReady:
    if state.predictor is None or not state.ready:
        raise not_ready()  # the protocol's clients read readiness from the status alone
    check_model_health(state)
    return V2ServerReady(ready=True)


def model_metadata(predictor: PredictorLike) -> V2ModelMetadata:
    # -1: any number of texts; every output has the input's shape.
    return V2ModelMetadata(
        name=predictor.name, versions=[predictor.version],
        platform=f"slotfill_{getattr(predictor, 'backend', None) or 'python'}",
        inputs=[V2TensorMetadata(name=INPUT_NAME, datatype=BYTES, shape=[-1])],
        outputs=[V2TensorMetadata(name=name, datatype=datatype, shape=[-1]) for name, datatype in OUTPUTS.items()])


@router.get("/models/{model_name}", response_model=V2ModelMetadata, responses=MODEL_RESPONSES,
            summary="Model metadata: its input and outputs")
async def get_model_metadata(predictor: ServedModelDep) -> V2ModelMetadata:
    return model_metadata(predictor)


@router.get("/models/{model_name}/versions/{model_version}", response_model=V2ModelMetadata,
            responses=MODEL_RESPONSES, summary="Model metadata of one version")
async def get_model_version_metadata(predictor: ServedModelVersionDep) -> V2ModelMetadata:
    return model_metadata(predictor)


@router.get("/models/{model_name}/ready", response_model=V2ModelReady, responses=MODEL_RESPONSES,
            summary="Model readiness")
async def model_ready(predictor: ServedModelDep) -> V2ModelReady:
    return V2ModelReady(name=predictor.name, ready=True)  # ServedModelDep answered 503 if it were not


@router.get("/models/{model_name}/versions/{model_version}/ready", response_model=V2ModelReady,
            responses=MODEL_RESPONSES, summary="Model readiness of one version")
async def model_version_ready(predictor: ServedModelVersionDep) -> V2ModelReady:
    return V2ModelReady(name=predictor.name, ready=True)


@router.post("/models/{model_name}/infer", response_model=V2InferenceResponse, responses=INFER_RESPONSES,
             summary="Tag texts (the input `text`); outputs labels, slots, intent, intent_confidence")
async def infer(body: V2InferenceRequest, predictor: ServedModelDep, state: ModelStateDep, settings: SettingsDep,
                metrics: MetricsDep) -> Response:
    return await run_inference(body, predictor, state, settings, metrics)


@router.post("/models/{model_name}/versions/{model_version}/infer", response_model=V2InferenceResponse,
             responses=INFER_RESPONSES, summary="Tag texts with one version of the model")
async def infer_version(body: V2InferenceRequest, predictor: ServedModelVersionDep, state: ModelStateDep,
                        settings: SettingsDep, metrics: MetricsDep) -> Response:
    return await run_inference(body, predictor, state, settings, metrics)


# ----------------------------------------------------------------------------- inference
def requested_outputs(body: V2InferenceRequest) -> list[tuple[str, bool]]:
    """``(name, as binary data)`` of each output to return, in the order asked for (default: all)."""
    default_binary = (body.parameters or {}).get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise APIError(400, "wrong_type", "binary_data_output must be a boolean", "parameters.binary_data_output")
    if body.outputs is None:
        return [(name, default_binary) for name in OUTPUTS]
    chosen: list[tuple[str, bool]] = []
    for index, output in enumerate(body.outputs):
        if output.name not in OUTPUTS:
            raise APIError(400, "unknown_output", f"unknown output {output.name!r}; this model has "
                                                  f"{', '.join(OUTPUTS)}", f"outputs.{index}.name")
        if any(name == output.name for name, _ in chosen):
            raise APIError(400, "duplicate_output", f"output {output.name!r} is asked for twice",
                           f"outputs.{index}.name")
        parameters = output.parameters or {}
        if parameters.get("classification"):
            raise APIError(400, "unsupported_parameter", "the classification extension is not supported",
                           f"outputs.{index}.parameters.classification")
        binary = parameters.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise APIError(400, "wrong_type", "binary_data must be a boolean",
                           f"outputs.{index}.parameters.binary_data")
        chosen.append((output.name, binary))
    return chosen


def text_input(body: V2InferenceRequest) -> tuple[int, V2RequestInput]:
    """The one input, ``text`` (its index in ``inputs`` names fields in errors)."""
    found: tuple[int, V2RequestInput] | None = None
    for index, tensor in enumerate(body.inputs):
        if tensor.name != INPUT_NAME:
            raise APIError(400, "unknown_input", f"unknown input {tensor.name!r}; this model takes one input, "
                                                 f"{INPUT_NAME!r}", f"inputs.{index}.name")
        if found is not None:
            raise APIError(400, "duplicate_input", f"input {INPUT_NAME!r} is given twice", f"inputs.{index}.name")
        found = (index, tensor)
    if found is None:
        raise APIError(400, "missing_input", f"input {INPUT_NAME!r} is required", "inputs")
    return found


def flatten_texts(tensor: V2RequestInput, prefix: str, max_texts: int) -> tuple[list[str], list[str]]:
    """The input's texts in row-major order and each one's field path, checked against the shape, and their
    number against ``max_texts`` before any is read (400 ``too_many_items``).

    The protocol lets tensor data come flat or in the shape's own nesting; for text that means
    ``[n]``, ``[n, 1]`` or ``[1, n]`` with flat data, or nested as the 2-D shape says."""
    if tensor.datatype != BYTES:
        raise APIError(400, "wrong_datatype", f"input {INPUT_NAME!r} has datatype BYTES, not {tensor.datatype!r}",
                       f"{prefix}.datatype")
    shape = tensor.shape
    if len(shape) not in (1, 2) or (len(shape) == 2 and 1 not in shape):
        raise APIError(400, "wrong_shape", f"shape {shape} is not [n], [n, 1] or [1, n]", f"{prefix}.shape")
    if tensor.data is None:
        raise APIError(400, "missing_field", "data is required (or the binary_data_size parameter with binary "
                                             "tensor data)", f"{prefix}.data")
    count = math.prod(shape)
    if count > max_texts:
        raise APIError(400, "too_many_items", f"{count} texts; the limit is {max_texts}", f"{prefix}.shape")
    nested = len(shape) == 2 and bool(tensor.data) and all(isinstance(row, list) for row in tensor.data)
    if nested:
        if len(tensor.data) != shape[0] or any(len(row) != shape[1] for row in tensor.data):
            raise APIError(400, "shape_mismatch", f"data is not nested as shape {shape}", f"{prefix}.data")
        cells = [(value, f"{prefix}.data.{i}.{j}") for i, row in enumerate(tensor.data) for j, value in enumerate(row)]
    else:
        if len(tensor.data) != count:
            raise APIError(400, "shape_mismatch", f"shape {shape} holds {count} elements; data has "
                                                  f"{len(tensor.data)}", f"{prefix}.data")
        cells = [(value, f"{prefix}.data.{i}") for i, value in enumerate(tensor.data)]
    for value, path in cells:
        if not isinstance(value, str):
            raise APIError(400, "wrong_type", f"a BYTES element in JSON is a string, not {type(value).__name__}", path)
    return [value for value, _ in cells], [path for _, path in cells]


def tag_requests(texts: Sequence[str], paths: Sequence[str], settings: Any) -> list[TagRequest]:
    """Each text as ``/v1/tag`` would take it (at most ``max_chars``, not empty, no control characters), errors
    naming its element."""
    items: list[TagRequest] = []
    for text, path in zip(texts, paths):
        check_text_size(text, settings, path)
        try:
            items.append(TagRequest(text=text))
        except ValidationError as exc:
            code, message, _ = describe_validation_error(exc.errors()[0])
            raise APIError(400, code, message, path) from None
    return items


async def run_inference(body: V2InferenceRequest, predictor: PredictorLike, state: Any, settings: Any,
                        metrics: Any) -> Response:
    outputs = requested_outputs(body)
    index, tensor = text_input(body)
    prefix = f"inputs.{index}"
    texts, paths = flatten_texts(tensor, prefix, settings.max_batch_items)
    if not texts:
        raise APIError(400, "empty_batch", "no texts: the shape has no elements", f"{prefix}.shape")
    items = tag_requests(texts, paths, settings)
    try:
        # The same path as POST /v1/tag/batch: limits, then the micro-batcher (or one direct call).
        results = await run_items(items, predictor, settings, state, True)
    except APIError as exc:
        # run_items names fields as /v1/tag/batch's body has them ("items.3.text"): point at the element.
        parts = (exc.field or "").split(".")
        if len(parts) >= 2 and parts[0] == "items" and parts[1].isdigit() and int(parts[1]) < len(paths):
            exc.field = paths[int(parts[1])]
        raise
    metrics.tagged.inc(len(results))
    return inference_response(body, predictor, results, outputs, list(tensor.shape))


def output_values(name: str, results: Sequence[dict[str, Any]]) -> list[Any]:
    """One output's elements, from the answers ``/v1/tag`` gives (``routers/tag.py``'s ``to_response``)."""
    if name == "labels":
        return [to_json(result["labels"]).decode("utf-8") for result in results]
    if name == "slots":
        return [to_json(result["slots"], inf_nan_mode="null").decode("utf-8") for result in results]
    if name == "intent":
        return [to_json(result["intent"]["name"] if result["intent"] else None).decode("utf-8") for result in results]
    return [result["intent"]["confidence"] if result["intent"] else None for result in results]


def inference_response(body: V2InferenceRequest, predictor: PredictorLike, results: Sequence[dict[str, Any]],
                       outputs: Sequence[tuple[str, bool]], shape: list[int]) -> Response:
    tensors: list[dict[str, Any]] = []
    binary_parts: list[bytes] = []
    for name, binary in outputs:
        values = output_values(name, results)
        tensor: dict[str, Any] = {"name": name, "datatype": OUTPUTS[name], "shape": shape}
        if binary:
            if OUTPUTS[name] == BYTES:
                raw = encode_bytes_tensor(values)
            else:
                raw = struct.pack(f"<{len(values)}f", *(math.nan if v is None else v for v in values))
            tensor["parameters"] = {"binary_data_size": len(raw)}
            binary_parts.append(raw)
        else:
            tensor["data"] = values
        tensors.append(tensor)
    answer: dict[str, Any] = {"model_name": predictor.name, "model_version": predictor.version}
    if body.id is not None:
        answer["id"] = body.id
    answer["outputs"] = tensors
    header = to_json(answer, inf_nan_mode="null")
    if not binary_parts:
        return Response(header, media_type="application/json")
    return Response(header + b"".join(binary_parts), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})
