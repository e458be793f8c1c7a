"""``POST /v1/tag`` and ``POST /v1/tag/batch``.

With batching on (the default) validated items go to the app's micro-batcher (``service/batching.py``)
and share padded forward passes with concurrent requests; with ``SLOTFILL_BATCHING=false`` each
request runs the model on its own items in one call (in a worker thread unless ``model_thread`` is
false). Both routes are behind the admission limit (``service/admission.py``): past ``max_pending``
requests in flight, 503 ``overloaded``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic_core import to_json

from slotfill.inference.predictions import Prediction

from ..batching import model_runner, run_detached
from ..dependencies import tag_context
from ..errors import APIError
from ..json_route import AdmittedRoute
from ..schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    TagRequest,
    TagResponse,
)
from ..settings import Settings
from ..state import ModelState, PredictorLike

router = APIRouter(prefix="/v1", tags=["tag"], route_class=AdmittedRoute)

ERROR_RESPONSES: dict[int | str, dict] = {
    400: {"model": ErrorResponse, "description": "Body is not UTF-8 JSON (invalid_utf8, invalid_json)."},
    413: {"model": ErrorResponse, "description": "Body over max_body_bytes (body_too_large)."},
    415: {"model": ErrorResponse, "description": "Body is not application/json (unsupported_media_type)."},
    422: {"model": ErrorResponse, "description": "Body breaks the schema or a limit, or repeats a key "
                                                 "(duplicate_field); `field` names the place."},
    503: {"model": ErrorResponse, "description": "The model is not loaded yet (not_ready), or max_pending requests "
                                                 "are in flight (overloaded); retry after Retry-After seconds."},
}


def check_limits(item: TagRequest, predictor: PredictorLike, settings: Settings, prefix: str = "") -> None:
    """The limits that depend on the model, once the item is valid (the size limits on characters, tokens and
    items were checked on the parsed body before validation: ``service/limits.py``).

    Each is a 422 naming the field: the body was fine, one value in it does not suit the model. A text is
    tokenised with the model's own tokeniser and has at most ``max_tokens`` tokens (422 ``too_many_tokens``).
    ``intent_ranking`` (at least 1 by the schema) is at most the model's number of intents (any k for a model
    without intents: its ``intent`` is null).
    """
    if item.intent_ranking is not None:
        count = len(predictor.intents or ())
        if count and item.intent_ranking > count:
            raise APIError(422, "invalid_intent_ranking", f"intent_ranking is {item.intent_ranking}; the model has "
                                                          f"{count} intents", f"{prefix}intent_ranking")
    text = item.text
    if text is not None and len(text) > settings.max_tokens:  # every token has a character: shorter is fine
        count = len(predictor.tokenize(text))
        if count > settings.max_tokens:
            raise APIError(422, "too_many_tokens", f"text has {count} tokens; the limit is {settings.max_tokens}",
                           f"{prefix}text")


def to_response(prediction: Prediction, model: dict[str, str], intent_ranking: int | None = None,
                alternatives: int | None = None, floored: bool = False) -> dict[str, Any]:
    """One ``TagResponse`` as plain dicts (built in the worker thread; serialised by :func:`json_response`).
    ``intent_ranking`` (the request's): the intent gets ``ranking``, the first k of the prediction's (which may
    rank more: a batch is predicted with its items' largest k); ``alternatives`` likewise keeps the first k of
    the prediction's ``alternatives`` (a CRF model) or of each token's ``top_labels`` (a softmax model).
    ``floored``: the item had a confidence floor, so tokens may carry a ``dropped_label``. ``text`` is the
    prediction's own string (the request's, for a text item), not a copy.

    Pydantic models for every nested token and slot cost more CPU than the rest of a request;
    the OpenAPI schema still comes from ``response_model=TagResponse`` on the route."""
    tokens = prediction.tokens
    intent = prediction.intent
    intent_out = None
    if intent is not None:
        intent_out = {"name": intent.name, "confidence": float(intent.confidence)}
        if intent_ranking is not None and intent.ranking is not None:
            intent_out["ranking"] = [{"name": name, "confidence": float(confidence)}
                                     for name, confidence in intent.ranking[:intent_ranking]]
    out = {
        "text": prediction.text,
        "tokens": [{"text": t.text, "start": int(t.start), "end": int(t.end), "label": t.label,
                    "confidence": float(t.confidence)} for t in tokens],
        "labels": [t.label for t in tokens],
        "slots": _slots(prediction.slots),
        "intent": intent_out,
        "model": model,
    }
    if floored or alternatives is not None:
        _token_extras(out["tokens"], tokens, alternatives)
    if alternatives is not None and prediction.alternatives is not None:
        out["alternatives"] = [{"labels": list(a.labels), "slots": _slots(a.slots), "probability": float(a.probability)}
                               for a in prediction.alternatives[:alternatives]]
    return out


def _token_extras(tokens_out: list[dict[str, Any]], tokens: Sequence[Any], alternatives: int | None) -> None:
    """Add, in place, each token's ``dropped_label`` and (the first ``alternatives`` of) its ``top_labels``
    where the prediction has them."""
    for token_out, token in zip(tokens_out, tokens):
        if token.dropped_label is not None:
            token_out["dropped_label"] = token.dropped_label
        if alternatives is not None and token.top_labels is not None:
            token_out["top_labels"] = [{"label": label, "confidence": float(confidence)}
                                       for label, confidence in token.top_labels[:alternatives]]


def _slots(slots: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"slot": s.slot, "value": s.value, "start": int(s.start), "end": int(s.end),
             "confidence": float(s.confidence)} for s in slots]


def json_response(content: Any) -> Response:
    """A pre-serialised JSON 200 (pydantic-core's serialiser: the same output as the response
    models, NaN/infinity as null); FastAPI skips its response-model serialisation for a ``Response``."""
    return Response(to_json(content, inf_nan_mode="null"), media_type="application/json")


def predict_items(predictor: PredictorLike, items: Sequence[TagRequest]) -> list[Prediction]:
    """One forward pass for any mix of text and token items (``predict_mixed`` when the predictor
    has it, else one call per kind), answers in order. Blocking: run it in a worker thread.

    When an item asks for ``intent_ranking``, every call ranks the items' largest k (``intent_top_k``, checked
    against the model by :func:`check_limits` already); :func:`to_response` keeps each item's own k. Without
    one, the calls are made as before (no ``intent_top_k``). When an item gives ``min_confidence``, the calls
    pass each item's own floor (``min_span_confidence``, a list: None for an item without one); without one,
    no ``min_span_confidence`` is passed (a floor of 0, which drops nothing, counts as none). ``alternatives``
    as ``intent_ranking``: the items' largest k, passed only when one asks."""
    top_k = max((item.intent_ranking or 0 for item in items), default=0)
    options: dict[str, Any] = {"intent_top_k": top_k} if top_k and predictor.intents else {}
    alternatives = max((item.alternatives or 0 for item in items), default=0)
    if alternatives:
        options["alternatives"] = alternatives
    floors: list[float | None] | None = [item.min_confidence or None for item in items]
    if all(floor is None for floor in floors):
        floors = None

    def with_floors(rows: Sequence[int]) -> dict[str, Any]:
        return options if floors is None else {**options, "min_span_confidence": [floors[i] for i in rows]}

    texts = [item.text for item in items if item.text is not None]
    everything = range(len(items))
    if len(texts) == len(items):
        return predictor.predict_texts(texts, **with_floors(everything))  # type: ignore[arg-type]
    if not texts:
        return predictor.predict_tokens([item.tokens or [] for item in items], **with_floors(everything))
    mixed = getattr(predictor, "predict_mixed", None)
    if mixed is not None:
        return mixed([item.text if item.text is not None else item.tokens for item in items],
                     **with_floors(everything))
    text_rows = [i for i, item in enumerate(items) if item.text is not None]
    token_rows = [i for i, item in enumerate(items) if item.text is None]
    predictions: list[Prediction | None] = [None] * len(items)
    for row, prediction in zip(text_rows, predictor.predict_texts(texts,  # type: ignore[arg-type]
                                                                  **with_floors(text_rows))):
        predictions[row] = prediction
    for row, prediction in zip(token_rows, predictor.predict_tokens([items[i].tokens or [] for i in token_rows],
                                                                    **with_floors(token_rows))):
        predictions[row] = prediction
    return predictions  # type: ignore[return-value]


def respond(predictor: PredictorLike, items: list[TagRequest]) -> list[dict[str, Any]]:
    """Run the model on validated items and build the responses as plain dicts (the micro-batcher's
    ``run_batch``)."""
    model = {"name": predictor.name, "version": predictor.version}
    return [to_response(prediction, model, item.intent_ranking, item.alternatives, bool(item.min_confidence))
            for item, prediction in zip(items, predict_items(predictor, items))]


def tag_items(items: Sequence[TagRequest], predictor: PredictorLike, settings: Settings,
              batch: bool) -> list[dict[str, Any]]:
    """Unbatched path: check limits, run the model once on these items, keep order."""
    for index, item in enumerate(items):
        check_limits(item, predictor, settings, f"items.{index}." if batch else "")
    return respond(predictor, list(items))


def with_default_floor(items: list[TagRequest], floor: float | None) -> list[TagRequest]:
    """The items, each without a ``min_confidence`` of its own given the server's default ``floor``
    (``Settings.min_confidence``; None: the items as they are). A request's own value wins, 0 included."""
    if floor is None:
        return items
    return [item if item.min_confidence is not None else item.model_copy(update={"min_confidence": floor})
            for item in items]


async def run_items(items: list[TagRequest], predictor: PredictorLike, settings: Settings, state: ModelState,
                    batch: bool) -> list[dict[str, Any]]:
    """Micro-batched when a batcher runs (limits checked here first, so a bad item is its own
    request's 422 and never reaches a shared batch); otherwise the direct path, in one call of the model
    runner (a worker thread unless ``model_thread`` is false). Either way ``state.watch`` hears how the
    model call ended (a batch's through the batcher's ``on_done``). The server's default floor is applied first."""
    items = with_default_floor(items, settings.min_confidence)
    batcher = state.batcher
    if batcher is None:
        watch = state.watch
        token = watch.started()
        try:
            answers = await run_detached(tag_items, items, predictor, settings, batch,
                                         run_in_thread=model_runner(settings.model_thread))
        except APIError:  # the items broke a limit (check_limits): the model was not called
            watch.forget(token)
            raise
        except Exception as exc:
            watch.finished(token, exc)
            raise
        except BaseException:  # cancelled: says nothing about the model
            watch.forget(token)
            raise
        watch.finished(token, None)
        return answers
    for index, item in enumerate(items):
        check_limits(item, predictor, settings, f"items.{index}." if batch else "")
    return await batcher.submit(predictor, items)


@router.post("/tag", response_model=TagResponse, responses=ERROR_RESPONSES,
             summary="Tag one utterance (text or tokens)")
async def tag(body: TagRequest, request: Request) -> Response:
    predictor, settings, metrics, state = tag_context(request)
    [response] = await run_items([body], predictor, settings, state, False)
    metrics.tagged.inc()
    return json_response(response)


@router.post("/tag/batch", response_model=BatchResponse, responses=ERROR_RESPONSES,
             summary="Tag several utterances; answers in request order")
async def tag_batch(body: BatchRequest, request: Request) -> Response:
    predictor, settings, metrics, state = tag_context(request)  # max_batch_items: checked before validation
    metrics.batch_size.labels(kind="request").observe(len(body.items))
    responses = await run_items(body.items, predictor, settings, state, True)
    metrics.tagged.inc(len(responses))
    return json_response({"items": responses})
