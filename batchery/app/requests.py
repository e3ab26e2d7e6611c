"""Reading request bodies: JSON or NDJSON, checked for size and shape before anything is queued."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from flask import Request
from werkzeug.exceptions import HTTPException

from batchery import tiers
from batchery.errors import BadRequest, BatcheryError, PayloadTooLarge, UnsupportedMediaType
from batchery.models.inputs import check_inputs, json_problem
from batchery.models.registry import ModelSpec, Registry
from batchery.results import FORMATS, ResultsRequest
from batchery.settings import Settings

NDJSON = "application/x-ndjson"
MAX_WEBHOOK_URL = 2048
MAX_ROUTING_KEY_CHARS = 255
#: An absolute http(s) URL with a host, no spaces or control characters, at most MAX_WEBHOOK_URL characters.
WEBHOOK_URL = re.compile(r"https?://[^\s/?#@]+(?:[/?#][^\s]*)?", re.ASCII)
#: Every integer orjson would not read exactly has at least 19 digits in a row (2**63 has 19). Looked for by
#: mapping every digit to 0 and every other byte to a space, then searching for 19 zeros: both steps run in C
#: at memory speed, 14 times faster than the regular expression ``[0-9]{19}``, which cost five times orjson's
#: own parse of a large body.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_RUN = b"0" * 19


def has_long_digits(data: bytes) -> bool:
    """Whether ``data`` has 19 or more ASCII digits in a row: an integer orjson may not read exactly."""
    return _LONG_RUN in data.translate(_DIGITS_AS_ZEROS)


@dataclass(frozen=True)
class JobRequest:
    #: The model as named (``name`` or ``name@version``): which version runs the job is the router's choice.
    model: str
    #: The model's primary version, or the version named: what the inputs were checked against.
    spec: ModelSpec
    inputs: list[Any]
    metadata: dict[str, Any] | None = None
    timeout_s: float | None = None
    cache: bool = True
    tier: str = tiers.STANDARD
    webhook: str | None = None
    routing_key: str | None = None
    results: ResultsRequest | None = None


def read_job_request(
    request: Request, registry: Registry, settings: Settings, default_tier: str = tiers.STANDARD
) -> JobRequest:
    """``POST /v1/jobs``: a JSON object, or NDJSON lines (one input each) with ``?model=``; a job that names no
    tier gets ``default_tier``."""
    if request.mimetype == NDJSON:
        model = request.args.get("model")
        if not model:
            raise BadRequest("an NDJSON body needs the model as a query parameter: ?model=NAME")
        body: dict[str, Any] = {"model": model, "inputs": _ndjson_lines(read_body(request))}
        if "cache" in request.args:
            body["cache"] = _query_bool("cache", request.args["cache"])
        if "tier" in request.args:
            body["tier"] = request.args["tier"]
        if "webhook" in request.args:
            body["webhook"] = {"url": request.args["webhook"]}
        if "routing_key" in request.args:
            body["routing_key"] = request.args["routing_key"]
        if "results" in request.args:
            body["results"] = {"format": request.args["results"].split(",")}
    else:
        body = json_object(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' must be a model name, e.g. \"minilm\" or \"minilm@l6-v2\"")
    metadata = _metadata(body.get("metadata"), settings)
    cache = body.get("cache", True)
    if not isinstance(cache, bool):
        raise BadRequest("'cache' must be true or false")
    named = body.get("tier")
    tier = tiers.parse(request.args.get("tier") if named is None else named, default_tier)
    spec = registry.get(model)
    _check_query_agrees(request, registry, spec, cache, tier)
    timeout_s = _timeout(body.get("timeout_s"), settings)
    webhook = read_webhook(body.get("webhook"), settings)
    inputs = read_inputs(body, spec, settings)
    results = read_results(body.get("results"), spec)
    return JobRequest(model, spec, inputs, metadata, timeout_s, cache, tier, webhook, read_routing_key(body), results)


def read_routing_key(body: dict[str, Any]) -> str | None:
    """``routing_key``: what picks the version of a model named without one, in place of the job's id, so that
    a client's jobs with one key all run on one version (:mod:`batchery.rollouts.routing`)."""
    key = body.get("routing_key")
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_ROUTING_KEY_CHARS:
        raise BadRequest(f"'routing_key' must be a string of 1 to {MAX_ROUTING_KEY_CHARS} characters")
    return key


def read_results(value: Any, spec: ModelSpec) -> ResultsRequest | None:
    """``{"format": "jsonl" | "npy" | [both]}``: the job's results are written to files when it ends
    (:mod:`batchery.results`). ``npy`` needs a model whose outputs are vectors of a declared width."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"format"}:
        raise BadRequest("'results' must be an object with one field, 'format'", param="results")
    named = value["format"]
    formats = [named] if isinstance(named, str) else named
    if not isinstance(formats, list) or not formats or len(set(map(str, formats))) != len(formats):
        raise BadRequest(f"'results.format' must be one of {', '.join(FORMATS)}, or a list of them", param="results")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise BadRequest(
            f"'results.format': unknown format {unknown[0]!r}; formats: {', '.join(FORMATS)}", param="results"
        )
    if "npy" in formats and not spec.dimensions:
        raise BadRequest(
            f"'results.format' npy needs vector outputs of a known width, and model {spec.name!r} declares none "
            "(options.dimensions); ask for jsonl",
            param="results",
        )
    return ResultsRequest(tuple(f for f in FORMATS if f in formats), spec.dimensions)


def read_webhook(value: Any, settings: Settings) -> str | None:
    """``{"url": "https://..."}``: the URL called when the job ends, signed with ``BATCHERY_WEBHOOK_SECRET``.

    Without a secret there is nothing to sign with, and an unsigned call could be forged by anyone who can
    reach the receiver: the job is refused rather than accepted with a webhook that would never be called.
    """
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"url"}:
        raise BadRequest("'webhook' must be an object with one field, 'url'")
    url = value["url"]
    if not isinstance(url, str) or len(url) > MAX_WEBHOOK_URL or WEBHOOK_URL.fullmatch(url) is None:
        raise BadRequest(f"'webhook.url' must be an http:// or https:// URL of at most {MAX_WEBHOOK_URL} characters")
    if not settings.webhook_secret:
        raise BadRequest("webhooks are off on this service: it has no BATCHERY_WEBHOOK_SECRET to sign them with")
    return url


def _metadata(metadata: Any, settings: Settings) -> dict[str, Any] | None:
    """Kept with the job as sent, so held to what can be stored as sent; and to a size, since every status
    poll reads it back."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise BadRequest("'metadata' must be an object")
    problem = json_problem(metadata, settings.max_input_depth)
    if problem:
        raise BadRequest(f"'metadata': {problem}")
    size = len(orjson.dumps(metadata))
    if size > settings.max_metadata_bytes:
        raise PayloadTooLarge(f"'metadata' is {size} bytes as JSON, over the limit of {settings.max_metadata_bytes}")
    return metadata


def _query_bool(name: str, raw: str) -> bool:
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise BadRequest(f"'{name}' must be true or false, not {raw!r}")


def _check_query_agrees(request: Request, registry: Registry, spec: ModelSpec, cache: bool, tier: str) -> None:
    """A ``?model=``, ``?cache=`` or ``?tier=`` beside a JSON body must say what the body says: which was meant
    is otherwise a guess."""
    named = request.args.get("model")
    if named is not None and registry.get(named) != spec:
        raise BadRequest(f"?model={named!r} and the body's 'model' name different models; send one")
    if "cache" in request.args and _query_bool("cache", request.args["cache"]) != cache:
        raise BadRequest(f"?cache={request.args['cache']!r} contradicts the body's 'cache'; send one")
    if "tier" in request.args and tiers.parse(request.args["tier"], tier) != tier:
        raise BadRequest(f"?tier={request.args['tier']!r} contradicts the body's 'tier'; send one, or the same")


def _timeout(value: Any, settings: Settings) -> float | None:
    """A job's own deadline, in seconds from submission: at most the job TTL, after which it is gone anyway."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= settings.job_ttl_s:
        raise BadRequest(f"'timeout_s' must be a number of seconds above 0 and at most {settings.job_ttl_s}")
    return float(value)


def read_predict_request(
    request: Request, spec: ModelSpec, settings: Settings, default_tier: str = tiers.INTERACTIVE
) -> tuple[list[Any], str, str | None]:
    """``POST /v1/models/<name>/predict``: ``{"inputs": [...], "tier": "interactive"?, "routing_key": "..."?}``;
    the inputs, tier and routing key."""
    body = json_object(request)
    return read_inputs(body, spec, settings), tiers.parse(body.get("tier"), default_tier), read_routing_key(body)


def read_inputs(body: dict[str, Any], spec: ModelSpec, settings: Settings) -> list[Any]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    if len(inputs) > settings.max_items_per_job:
        raise PayloadTooLarge(f"{len(inputs)} inputs, over the limit of {settings.max_items_per_job} per job")
    check_inputs(spec, inputs, settings.max_input_chars, settings.max_input_depth)
    return inputs


def json_object(request: Request) -> dict[str, Any]:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(f"send 'content-type: application/json' (or {NDJSON} for jobs), not {request.mimetype!r}")
    try:
        body = exact_loads(read_body(request))
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def read_body(request: Request) -> bytes:
    """The whole body, or 413 when it is over the byte limit.

    A body with a ``Content-Length`` over the limit is refused before it is read (werkzeug's 413). A body sent
    without one (``Transfer-Encoding: chunked``) is cut at the limit by werkzeug without a word, so that a job
    would silently lose its last lines and alter its last item: a byte past the limit means it was too long.
    A body the server cannot decode (a malformed chunk) is the client's error, as any malformed body is; one that
    does not arrive in time is a 408 (:mod:`batchery.app.gunicorn_worker` bounds the reads under gunicorn).
    """
    limit = request.max_content_length
    try:
        data = request.get_data()
        cut = request.content_length is None and limit is not None and len(data) >= limit
        if cut and request.environ["wsgi.input"].read(1):
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
    except (HTTPException, BatcheryError):  # a body over the limit, or one that did not arrive in time (408)
        raise
    except Exception as exc:  # gunicorn and werkzeug raise their own kinds for a malformed chunked body
        raise BadRequest(f"the body could not be read: {exc}") from exc
    return data


def exact_loads(data: bytes) -> Any:
    """orjson's reading, with every integer exact.

    orjson reads an integer beyond 64 bits as a float, without a word: echo would not echo it, and distinct
    values would share a cache entry. A body that may hold one is read again by the standard library, which
    keeps integers whole, so that the input checks can refuse it by its index. Bodies without 19 digits in a
    row, nearly all, are read once.
    """
    value = orjson.loads(data)
    if not has_long_digits(data):
        return value
    try:
        return json.loads(data)
    except RecursionError as exc:  # the standard library reads fewer levels than orjson
        raise BadRequest("the body is nested too deeply to be read") from exc


def _ndjson_lines(data: bytes) -> list[Any]:
    """One input per line; an empty line would shift every later line's index, so it is an error."""
    inputs = []
    loads: Callable[[bytes], Any] = exact_loads if has_long_digits(data) else orjson.loads
    for number, line in enumerate(data.rstrip().splitlines(), start=1):
        if not line.strip():
            raise BadRequest(f"line {number} is empty: every line must hold one JSON input")
        try:
            inputs.append(loads(line))
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"line {number} is not valid JSON: {exc}") from exc
    return inputs
