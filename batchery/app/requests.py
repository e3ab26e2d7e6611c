"""Reading request bodies: JSON or NDJSON, checked for size and shape before anything is queued."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from flask import Request

from batchery import tiers
from batchery.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from batchery.models.inputs import check_inputs
from batchery.models.registry import ModelSpec, Registry
from batchery.settings import Settings

NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class JobRequest:
    spec: ModelSpec
    inputs: list[Any]
    metadata: dict[str, Any] | None = None
    timeout_s: float | None = None
    cache: bool = True
    tier: str = tiers.STANDARD


def read_job_request(request: Request, registry: Registry, settings: Settings) -> JobRequest:
    """``POST /v1/jobs``: a JSON object, or NDJSON lines (one input each) with ``?model=``."""
    if request.mimetype == NDJSON:
        model = request.args.get("model")
        if not model:
            raise BadRequest("an NDJSON body needs the model as a query parameter: ?model=NAME")
        body: dict[str, Any] = {"model": model, "inputs": _ndjson_lines(request.get_data())}
        if "cache" in request.args:
            body["cache"] = _query_bool("cache", request.args["cache"])
        if "tier" in request.args:
            body["tier"] = request.args["tier"]
    else:
        body = _json_object(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' must be a model name, e.g. \"minilm\" or \"minilm@l6-v2\"")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRequest("'metadata' must be an object")
    cache = body.get("cache", True)
    if not isinstance(cache, bool):
        raise BadRequest("'cache' must be true or false")
    tier = tiers.parse(body.get("tier"), tiers.STANDARD)
    spec = registry.get(model)
    _check_query_agrees(request, registry, spec, cache)
    timeout_s = _timeout(body.get("timeout_s"), settings)
    return JobRequest(spec, read_inputs(body, spec, settings), metadata, timeout_s, cache, tier)


def _query_bool(name: str, raw: str) -> bool:
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise BadRequest(f"'{name}' must be true or false, not {raw!r}")


def _check_query_agrees(request: Request, registry: Registry, spec: ModelSpec, cache: bool) -> None:
    """A ``?model=`` or ``?cache=`` beside a JSON body must say what the body says: which was meant is otherwise a guess."""
    named = request.args.get("model")
    if named is not None and registry.get(named) != spec:
        raise BadRequest(f"?model={named!r} and the body's 'model' name different models; send one")
    if "cache" in request.args and _query_bool("cache", request.args["cache"]) != cache:
        raise BadRequest(f"?cache={request.args['cache']!r} contradicts the body's 'cache'; send one")


def _timeout(value: Any, settings: Settings) -> float | None:
    """A job's own deadline, in seconds from submission: at most the job TTL, after which it is gone anyway."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= settings.job_ttl_s:
        raise BadRequest(f"'timeout_s' must be a number of seconds above 0 and at most {settings.job_ttl_s}")
    return float(value)


def read_predict_request(request: Request, spec: ModelSpec, settings: Settings) -> tuple[list[Any], str]:
    """``POST /v1/models/<name>/predict``: ``{"inputs": [...], "tier": "interactive"?}``; the inputs and tier."""
    body = _json_object(request)
    return read_inputs(body, spec, settings), tiers.parse(body.get("tier"), tiers.INTERACTIVE)


def read_inputs(body: dict[str, Any], spec: ModelSpec, settings: Settings) -> list[Any]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    if len(inputs) > settings.max_items_per_job:
        raise PayloadTooLarge(f"{len(inputs)} inputs, over the limit of {settings.max_items_per_job} per job")
    check_inputs(spec, inputs, settings.max_input_chars)
    return inputs


def _json_object(request: Request) -> dict[str, Any]:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(f"send 'content-type: application/json' (or {NDJSON} for jobs), not {request.mimetype!r}")
    try:
        body = orjson.loads(request.get_data())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _ndjson_lines(data: bytes) -> list[Any]:
    """One input per line; an empty line would shift every later line's index, so it is an error."""
    inputs = []
    for number, line in enumerate(data.rstrip().splitlines(), start=1):
        if not line.strip():
            raise BadRequest(f"line {number} is empty: every line must hold one JSON input")
        try:
            inputs.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"line {number} is not valid JSON: {exc}") from exc
    return inputs
