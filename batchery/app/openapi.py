"""The OpenAPI 3.1 description of the HTTP API, as data.

It is built from the settings and the registry so that it describes the running instance: the models it
serves, its size limits, and, only when keys are configured, its API key schemes, 401 answers and what keys
do besides (403 for a tier above a key's ceiling, 429 for its quotas, a job seen by its own key alone).
``tests/app/test_openapi.py`` checks it against the Flask routes and the specification; ``tests/app/test_fuzz.py``
checks every answer against it.
"""

from __future__ import annotations

import re

from typing import Any

from batchery import __version__, keys
from batchery.app.auth import OPEN_RULES
from batchery.app import job_list
from batchery.app.errors import OPENAI_PATHS
from batchery.app.jobs import JOB_ID, MAX_OFFSET
from batchery.models.registry import INPUT_KINDS, TASKS, Registry
from batchery.results import FORMATS
from batchery.settings import Settings
from batchery.tiers import TIERS

JSON = "application/json"
NDJSON = "application/x-ndjson"
Schema = dict[str, Any]

STATUSES = ["queued", "running", "completed", "failed", "cancelled"]
ERROR_CODES = {
    400: "`bad_request`: malformed JSON or NDJSON, a body that cannot be read, a missing or empty `inputs`, a bad query "
         "parameter or header.",
    401: "`unauthorized`: no valid API key (only when API keys are configured).",
    403: "`tier_not_allowed`: the request asks for a tier above the highest its API key may use (the message "
         "names it); nothing was queued. `admin_required`: only an admin key may change a model's weights.",
    404: "`job_not_found`, `model_not_found` or `not_found`.",
    408: "`request_timeout`: the body did not arrive within `BATCHERY_REQUEST_READ_TIMEOUT_S` (plus a second per "
         "`BATCHERY_REQUEST_MIN_BYTES_PER_S` received); the connection is closed.",
    413: "`payload_too_large` (items, characters or metadata bytes over the limits, a chunked body over the byte limit, "
         "or more items than one of the API key's quotas) or `request_entity_too_large` (a `Content-Length` over the "
         "byte limit).",
    410: "`results_in_files`: the job's results were written to its result files and have left Redis; the message "
         "links the files.",
    415: "`unsupported_media_type`: the body is neither JSON nor (for jobs) NDJSON.",
    422: "`invalid_input`: an input does not fit the model, nests too deeply or holds an integer beyond 64 bits; "
         "the message names its index.",
    429: "`backlog_full`: the model's backlog of queued items is full; or `quota_exceeded`: the API key's items per "
         "minute or items in flight would pass its quota (the message names the quota and the key's name). Nothing "
         "was queued. Retry after `Retry-After` seconds.",
    503: "`no_live_worker` (no worker serves the model; nothing was queued) or `unavailable` (Redis or the broker).",
    504: "`timeout`: predict did not finish within `BATCHERY_PREDICT_TIMEOUT_S`; the request was cancelled.",
}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True, "description": "`Bearer realm=\"batchery\"`"}},
    429: {"Retry-After": {"schema": {"type": "integer", "minimum": 0}, "required": True, "description": "Seconds to wait."}},
}


#: Live workers per device, keyed ``cuda:1@host``: the device as its machine numbers it, on that machine.
COUNTS_BY_DEVICE: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: list[str], properties: dict[str, Schema], **extra: Any) -> Schema:
    return {"type": "object", "required": required, "properties": properties, **extra}


def json_content(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {"description": ERROR_CODES[status], "content": json_content(ref("Error"))}
    if status in ERROR_HEADERS:
        response["headers"] = ERROR_HEADERS[status]
    return response


def query_int(name: str, description: str, minimum: int, maximum: int) -> Schema:
    return {"name": name, "in": "query", "description": description,
            "schema": {"type": "integer", "minimum": minimum, "maximum": maximum}}


def path_param(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema or {"type": "string"}}


def input_kinds(registry: Registry) -> list[str]:
    return sorted({spec.input for spec in registry})


def model_refs(registry: Registry, kind: str | None = None) -> Schema:
    """Every name the API resolves (``name`` and ``name@version``), of the models taking ``kind`` inputs."""
    specs = [spec for spec in registry if kind in (None, spec.input)]
    return {"enum": sorted(ref for spec in specs for ref in (spec.name, spec.ref))}


def text_item(settings: Settings) -> Schema:
    return {"type": "string", "maxLength": settings.max_input_chars}


def json_item(settings: Settings) -> Schema:
    """Any JSON value; a string at its top level is held to the same length limit as text.

    Its nesting and its integers' width are checked (422), not described: a schema cannot bound the depth of
    any JSON value, nor tell the integer ``100000000000000000000`` from the float ``1e20``, which is fine.
    """
    return {"anyOf": [text_item(settings), {"type": ["number", "boolean", "null", "array", "object"]}],
            "description": f"{json_limits(settings)}."}


def json_limits(settings: Settings) -> str:
    return (f"Lists and objects nest at most {settings.max_input_depth} levels deep, "
            "and integers fit in 64 bits (-2^63 to 2^64-1)")


def tensor_item(settings: Settings) -> Schema:
    """A nested list of finite numbers; that it is rectangular and of the model's ``shape`` is checked (422), not described."""
    return {"anyOf": [{"type": "number"}, {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Tensor"}}]}


def pair_item(settings: Settings) -> Schema:
    """Two texts, ``[query, passage]``, as a cross-encoder takes them."""
    return {"type": "array", "items": text_item(settings), "minItems": 2, "maxItems": 2,
            "description": "Two texts: [query, passage]."}


ITEMS = {"text": text_item, "pair": pair_item, "json": json_item, "tensor": tensor_item}


def inputs_of(settings: Settings, item: Schema, description: str) -> Schema:
    return {"type": "array", "minItems": 1, "maxItems": settings.max_items_per_job, "items": item,
            "description": description}


def job_request(settings: Settings, registry: Registry, kind: str) -> Schema:
    """A job for the models taking ``kind`` inputs."""
    schema = obj(["model", "inputs"], {
        "model": {**model_refs(registry, kind), "description": f"A model taking {kind} inputs: `name` or `name@version`."},
        "inputs": inputs_of(settings, ITEMS[kind](settings), f"One {kind} item per element."),
        "metadata": nullable({"type": "object", "description": f"Kept with the job and returned as is: at most "
                              f"{settings.max_metadata_bytes} bytes as JSON (413). {json_limits(settings)}."}),
        "timeout_s": nullable({"type": "number", "exclusiveMinimum": 0, "maximum": settings.job_ttl_s,
                               "description": "Items still pending this long after submission end with `deadline_exceeded`."}),
        "cache": {"type": "boolean", "description": "`false` bypasses the result cache (default `true`)."},
        "tier": nullable(TIER_PARAM),
        "routing_key": nullable(ROUTING_KEY),
        **webhook_field(settings),
        "results": results_field(list(FORMATS)),
    }, title=f"{kind} job")
    return {**schema, **results_by_model(registry, kind)}


def results_by_model(registry: Registry, kind: str) -> Schema:
    """``npy`` only for the models that declare their vectors' width: a condition on the model named."""
    plain = sorted(r for spec in registry if spec.input == kind and not spec.dimensions for r in (spec.name, spec.ref))
    if not plain:
        return {}
    return {
        "if": {"required": ["model"], "properties": {"model": {"enum": plain}}},
        "then": {"properties": {"results": results_field(["jsonl"])}},
    }


def results_field(formats: list[str]) -> Schema:
    return {
        "type": "object", "required": ["format"], "additionalProperties": False,
        "properties": {"format": {"anyOf": [{"enum": formats}, {
            "type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": formats},
        }]}},
        "description": "Write the job's results to files when it ends (`jsonl`: one line per item; `npy`: a float32 "
                       "array of the vectors and a JSONL of the items without one, for a model that declares its "
                       "dimensions), linked from the job's `result_files`; the outputs then leave Redis "
                       "(`BATCHERY_RESULT_FILES_KEEP_S`). See docs/results.md.",
    }


ROUTING_KEY: Schema = {
    "type": "string", "minLength": 1, "maxLength": 255,
    "description": "For a model named without a version: picks its version in place of the job's id, so that "
                   "requests with one key run on one version while the model's versions share its traffic.",
}
WEIGHTS: Schema = {"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
                   "description": "Version -> weight; only the ratios count."}


WEBHOOK_URL: Schema = {"type": "string", "maxLength": 2048, "pattern": r"^https?://[^\s/?#@]+(?:[/?#]\S*)?$"}


def webhook_field(settings: Settings) -> dict[str, Schema]:
    """``webhook``, for a service that has a secret to sign its calls with (else a job naming one is a 400)."""
    if not settings.webhook_secret:
        return {}
    return {"webhook": {
        "type": "object", "required": ["url"], "additionalProperties": False,
        "properties": {"url": {**WEBHOOK_URL, "description": "Called (POST, signed) when the job ends."}},
        "description": "A URL to call when the job ends: a POST of `{\"event\": \"job.ended\", \"sent_at\", \"job\"}` "
                       "signed with `X-Batchery-Signature: sha256=<HMAC-SHA256 of the body>`, retried with backoff.",
    }}


TIER_PARAM: Schema = {
    "anyOf": [{"enum": list(TIERS)}, {"type": "integer", "minimum": 0, "maximum": len(TIERS) - 1}],
    "description": "The priority tier, by name or rank: `interactive` (0), `standard` (1, jobs' default) or "
                   "`bulk` (2). Higher tiers run first; an unknown tier is a 400.",
}


def schemas(settings: Settings, registry: Registry) -> dict[str, Schema]:
    timestamp = nullable({"type": "string", "format": "date-time"})
    links = obj(["self", "results"], {"self": {"type": "string"}, "results": {"type": "string"}})
    error_body = obj(["code", "message"], {"code": {"type": "string"}, "message": {"type": "string"}})
    return {
        "Error": obj(["error"], {"error": error_body}, description="Every 4xx/5xx answer."),
        "Tensor": tensor_item(settings),
        "ItemError": error_body,
        "JobRequest": {"oneOf": [job_request(settings, registry, kind) for kind in input_kinds(registry)]},
        "JobAccepted": obj(["id", "status", "model", "total", "links"], {
            "id": {"type": "string"}, "status": {"enum": STATUSES}, "model": {"type": "string"},
            "total": {"type": "integer", "minimum": 1}, "tier": {"enum": list(TIERS)}, "links": links,
        }),
        "Job": obj(
            ["id", "model", "version", "status", "total", "counts", "created_at", "started_at", "finished_at", "deadline", "links"],
            {
                "id": {"type": "string"}, "model": {"type": "string"}, "version": {"type": "string"},
                "status": {"enum": STATUSES}, "total": {"type": "integer", "minimum": 0},
                "tier": {"enum": list(TIERS)},
                "counts": obj(["succeeded", "failed", "pending", "cached"], {
                    k: {"type": "integer", "minimum": 0} for k in ("succeeded", "failed", "pending", "cached")
                }),
                "created_at": {"type": "string", "format": "date-time"},
                "started_at": timestamp, "finished_at": timestamp, "deadline": timestamp,
                "links": links, "metadata": {"type": "object"},
                "owner": {"type": "string", "description": "The name of the API key that submitted it (with keys on)."},
                "quantize": {"enum": ["int8"], "description": "Present when its model serves an int8 copy: outputs "
                             "close to full precision's, not equal, and cached apart from them."},
                "error": error_body,
                "webhook": obj(["url", "state", "attempts", "last_status", "last_attempt_at"], {
                    "url": {"type": "string"}, "state": {"enum": ["pending", "delivered", "failed"]},
                    "attempts": {"type": "integer", "minimum": 0}, "last_status": nullable({"type": "string"}),
                    "last_attempt_at": timestamp,
                }, description="How the job's webhook went: the last call's HTTP status, or why it got none."),
                "result_files": obj(["state", "formats", "files", "outputs_released_at"], {
                    "state": {"enum": ["pending", "written"]},
                    "formats": {"type": "array", "items": {"enum": list(FORMATS)}},
                    "files": {"type": "array", "items": obj(["kind", "format", "id", "bytes", "url"], {
                        "kind": {"enum": ["results", "outputs", "errors"]}, "format": {"enum": list(FORMATS)},
                        "id": {"type": "string"}, "bytes": {"type": "integer", "minimum": 0},
                        "url": {"type": "string", "description": "GET streams the file."},
                    })},
                    "outputs_released_at": timestamp,
                }, description="The job's result files, when it asked for them: written once it ended."),
            },
        ),
        "Result": {
            "oneOf": [
                obj(["index", "output"], {"index": {"type": "integer", "minimum": 0}, "output": {}}),
                obj(["index", "error"], {"index": {"type": "integer", "minimum": 0}, "error": ref("ItemError")}),
            ]
        },
        "JobList": obj(["jobs", "next"], {
            "jobs": {"type": "array", "items": ref("Job")},
            "next": nullable({"type": "string", "description": "The next page's URL; null once the index has no more."}),
        }),
        "ResultsPage": obj(["results", "next"], {
            "results": {"type": "array", "items": ref("Result")},
            "next": nullable({"type": "string"}),
        }),
        "PredictRequest": obj(["inputs"], {
            "inputs": inputs_of(
                settings, {"anyOf": [ITEMS[kind](settings) for kind in input_kinds(registry)]},
                "Each input must fit the model in the path (a 422 names the first that does not).",
            ),
            "tier": nullable({**TIER_PARAM, "description": "The priority tier (predict's default: `interactive`)."}),
            "routing_key": nullable(ROUTING_KEY),
        }),
        "Prediction": obj(["model", "outputs"], {
            "model": {"type": "string"},
            "outputs": {"type": "array", "description": "One per input, in order; null where the item failed."},
            "errors": {"type": "array", "items": obj(["index", "code", "message"], {
                "index": {"type": "integer", "minimum": 0}, "code": {"type": "string"}, "message": {"type": "string"},
            })},
        }),
        "Model": obj(
            ["name", "version", "runtime", "runtimes", "input", "max_batch_size", "max_wait_ms", "devices", "synthetic",
             "description", "queues", "device", "live_workers", "live_workers_by_device", "serving"],
            {
                "name": {"type": "string"}, "version": {"type": "string"}, "runtime": {"type": "string"},
                "input": {"enum": list(INPUT_KINDS)},
                "task": {"enum": [*TASKS, None], "description": "What a text model answers: a vector, label scores "
                         "(`{label, scores}`) or a score per pair; null for other models."},
                "max_batch_size": {"type": "integer", "minimum": 1}, "max_wait_ms": {"type": "number", "minimum": 0},
                "chunk_size": nullable({"type": "integer", "minimum": 1, "description": "Items per chunk (one Celery "
                               "task) of this model's jobs; null: the deployment's `BATCHERY_CHUNK_SIZE`."}),
                "devices": {"type": "array", "items": {"type": "string"}}, "synthetic": {"type": "boolean"},
                "description": {"type": "string"},
                "queues": {"type": "array", "items": {"type": "string"},
                           "description": "Its Celery queues, one per tier, highest first: `batchery.<name>.<tier>` "
                                          "(`batchery.<name>@<version>.<tier>` for a version besides the primary)."},
                "runtimes": {"type": "object", "additionalProperties": {"type": "string"},
                             "description": "The runtime per device kind (`cpu`, `cuda`)."},
                "quantize": {"type": "object", "additionalProperties": nullable({"enum": ["int8"]}),
                             "description": "Per device kind, `int8` where it serves an int8 copy, else null."},
                "device": {"type": "array", "items": {"type": "string"}, "description": "Devices of the live workers."},
                "live_workers": {"type": "integer", "minimum": 0}, "serving": {"type": "boolean"},
                "live_workers_by_device": COUNTS_BY_DEVICE,
                "unavailable": {"type": "object", "additionalProperties": {"type": "string"},
                                "description": "Live workers that failed to load the model, with why."},
                "primary": {"type": "boolean", "description": "Whether this is the model's primary version."},
                "weight": {"type": "number", "minimum": 0,
                           "description": "Its share of the jobs that name the model without a version, now."},
            },
        ),
        "Weights": obj(["model", "primary", "weights", "source", "file_weights", "rollbacks"], {
            "model": {"type": "string"}, "primary": {"type": "string", "description": "The primary's version."},
            "weights": WEIGHTS, "file_weights": WEIGHTS,
            "source": {"enum": ["file", "override"], "description": "`override`: set by an admin or a rollback."},
            "rollbacks": {"type": "object", "description": "Per version, its last automatic rollback.",
                          "additionalProperties": obj(["at", "why"], {"at": {"type": "number"},
                                                                      "why": {"type": "string"}})},
        }),
        "Worker": obj(["hostname", "pid", "host", "device", "models", "queues"], {
            "hostname": {"type": "string", "description": "`gpu1@host`, `cpu0@host`."},
            "pid": {"type": "integer"}, "host": {"type": "string"},
            "device": {"type": "string", "description": "As the machine numbers it (`cuda:1`)."},
            "runtime_device": {"type": "string", "description": "As the process sees it (`cuda:0` when pinned)."},
            "cuda_visible_devices": nullable({"type": "string"}),
            "threads": nullable({"type": "integer"}), "metrics_port": nullable({"type": "integer"}),
            "models": {"type": "array", "items": {"type": "string"}},
            "runtimes": {"type": "object", "additionalProperties": {"type": "string"}},
            "warm_batch_sizes": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}}},
            "queues": {"type": "array", "items": {"type": "string"}},
            "unavailable": {"type": "object", "additionalProperties": {"type": "string"},
                            "description": "Models this worker failed to load, with why; it serves the others."},
            "ready": {"type": "boolean", "description": "False while it drains for shutdown, or once its batcher died."},
            "started_at": {"type": "number"},
        }),
        "DeadLetter": obj(["id", "job_id", "index", "model", "input", "error", "attempts", "at"], {
            "id": {"type": "string"}, "job_id": {"type": "string"}, "index": {"type": "integer", "minimum": 0},
            "model": {"type": "string"}, "input": {}, "error": ref("ItemError"),
            "attempts": {"type": "integer", "minimum": 0}, "at": {"type": "number"},
        }),
        "Readiness": obj(["status", "checks"], {"status": {"const": "ready"}, "checks": ref("Checks")}),
        "Checks": obj(["redis"], {
            "redis": {"type": "boolean"},
            "models": {"type": "object", "additionalProperties": {"type": "boolean"}},
            "live_workers": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
            "live_workers_by_device": {"type": "object", "additionalProperties": COUNTS_BY_DEVICE},
            "devices": COUNTS_BY_DEVICE,
            "unavailable": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}},
                            "description": "Per model, the live workers that failed to load it, with why."},
        }),
        "NotReady": obj(["error", "checks"], {"error": error_body, "checks": ref("Checks")}),
    }


JOB_LINKS = {
    name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}}
    for name, operation in (("GetJob", "getJob"), ("CancelJob", "cancelJob"), ("GetResults", "getResults"))
}


def job_operations(settings: Settings, registry: Registry) -> dict[str, Any]:
    job_id = path_param("job_id", "The id `POST /v1/jobs` answered with; any other string is 404 `job_not_found`.",
                        {"type": "string", "pattern": f"^{JOB_ID.pattern}$"})
    return {
        "/v1/jobs": {"get": list_operation(), "post": {
            "operationId": "createJob",
            "summary": "Submit a job: a JSON object, or NDJSON lines (one input each) with ?model=",
            "parameters": [
                {"name": "model", "in": "query", "schema": model_refs(registry),
                 "description": "The model, for an NDJSON body. Beside a JSON body it must name the body's model."},
                {"name": "tier", "in": "query", "schema": TIER_PARAM,
                 "description": "The priority tier (`standard` by default): for an NDJSON body, or a JSON body that "
                                "names none. Beside a JSON body's own `tier` it must agree with it."},
                {"name": "cache", "in": "query", "schema": {"type": "boolean"},
                 "description": "`false` bypasses the result cache, for an NDJSON body (`1`/`0` also do). "
                                "Beside a JSON body it must agree with the body's `cache`."},
                *webhook_query(settings),
                {"name": "results", "in": "query", "schema": {"type": "string"},
                 "description": "For an NDJSON body: result files to write when the job ends, `jsonl`, `npy` or "
                                "`jsonl,npy` (as the JSON body's `results.format`)."},
                {"name": "Idempotency-Key", "in": "header",
                 "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                 "description": "A repeat within the job TTL answers with the first job and queues nothing."},
            ],
            "requestBody": {"required": True, "content": {
                JSON: {"schema": ref("JobRequest")},
                NDJSON: {"schema": {"type": "string", "description": "One JSON input per line; no empty lines."}},
            }},
            "responses": {
                "202": {
                    "description": "Queued (or, for a repeated Idempotency-Key, the first job).",
                    "headers": {
                        "Location": {"schema": {"type": "string"}, "required": True, "description": "The job's URL."},
                        "Idempotent-Replayed": {"schema": {"const": "true"}, "description": "Present on a replay."},
                    },
                    "content": json_content(ref("JobAccepted")),
                    "links": JOB_LINKS,
                },
                **errors(400, 404, 408, 413, 415, 422, 429, 503),
            },
        }},
        "/v1/jobs/{job_id}": {
            "parameters": [job_id],
            "get": {
                "operationId": "getJob", "summary": "The job's status and counts",
                "responses": {"200": {"description": "The job.", "content": json_content(ref("Job"))}, **errors(404, 503)},
            },
            "delete": {
                "operationId": "cancelJob", "summary": "Cancel the job: items not yet run end with `cancelled`",
                "responses": {"200": {"description": "The job, after cancelling.", "content": json_content(ref("Job"))},
                              **errors(404, 503)},
            },
        },
        "/v1/jobs/{job_id}/results": {"get": {
            "operationId": "getResults",
            "summary": "Finished items in index order: a page of JSON, or every one as NDJSON (Accept: application/x-ndjson)",
            "parameters": [
                job_id,
                query_int("offset", "The first index (default 0); past the last item the page is empty. A stream "
                                    "starts there too.", 0, MAX_OFFSET),
                query_int("limit", f"Items per page (default {settings.results_page_limit}).", 1, settings.results_page_max),
                {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0,
                                                           "maximum": settings.results_wait_max_s},
                 "description": "Seconds to follow a running job (default 0: answer at once). A stream sends the items "
                                "from `offset` in index order as they finish; a page answers once all its items have "
                                "finished; both end at once when the job ends. Resume a stream cut short with `offset` "
                                f"(at most {settings.results_wait_max_s:g} s, BATCHERY_RESULTS_WAIT_MAX_S)."},
            ],
            "responses": {
                "200": {"description": "A page, with the next page's URL (or null).", "content": {
                    JSON: {"schema": ref("ResultsPage")},
                    NDJSON: {"schema": {"type": "string", "description": "One Result object per line."}},
                }},
                **errors(400, 404, 410, 503),
            },
        }},
    }


def webhook_query(settings: Settings) -> list[Schema]:
    if not settings.webhook_secret:
        return []
    return [{"name": "webhook", "in": "query", "schema": WEBHOOK_URL,
             "description": "For an NDJSON body: the URL to call when the job ends (as the JSON body's `webhook.url`)."}]


STATUS_LIST = "(?:" + "|".join(STATUSES) + ")"


def list_operation() -> dict[str, Any]:
    return {
        "operationId": "listJobs",
        "summary": "The jobs this key may see, newest first: of the newest "
                   f"{keys.RECENT_JOBS} (its own, with API keys on; an admin's: all), filtered and paged",
        "parameters": [
            {"name": "status", "in": "query", "description": "Only jobs in one of these statuses, comma-separated.",
             "schema": {"type": "string", "pattern": f"^{STATUS_LIST}(?:,{STATUS_LIST})*$"}},
            {"name": "model", "in": "query", "description": "Only this model's jobs: `name` or `name@version`.",
             "schema": {"type": "string", "pattern": "^[^@]+(?:@.+)?$"}},
            query_int("limit", f"Jobs per page (default {job_list.LIMIT_DEFAULT}); a page whose filter matched few "
                               f"of the {job_list.SCAN_MAX} jobs it looked at is shorter, and `next` goes on.",
                      1, job_list.LIMIT_MAX),
            {"name": "cursor", "in": "query", "description": "Where a page starts: as the `next` link carries it.",
             "schema": {"type": "string", "pattern": f"^{job_list.CURSOR.pattern}$"}},
        ],
        "responses": {"200": {"description": "A page of jobs.", "content": json_content(ref("JobList"))},
                      **errors(400, 503)},
    }


def model_operations(registry: Registry) -> dict[str, Any]:
    name = path_param("name", "A model: `name` or `name@version`.", model_refs(registry))
    return {
        "/v1/models": {"get": {
            "operationId": "listModels", "summary": "Every model, its settings and the live workers serving it",
            "responses": {"200": {"description": "The models.", "content": json_content(
                obj(["models"], {"models": {"type": "array", "items": ref("Model")}}))}, **errors(503)},
        }},
        "/v1/models/{name}": {"get": {
            "operationId": "getModel", "summary": "One model",
            "parameters": [name],
            "responses": {"200": {"description": "The model.", "content": json_content(ref("Model"))}, **errors(404, 503)},
        }},
        "/v1/models/{name}/weights": {
            "get": {
                "operationId": "getWeights", "summary": "How the model's jobs are split across its versions",
                "parameters": [name],
                "responses": {"200": {"description": "The weights.", "content": json_content(ref("Weights"))},
                              **errors(404, 503)},
            },
            "put": {
                "operationId": "setWeights", "summary": "Set the split (an admin's): every API process uses it at once",
                "parameters": [name],
                "requestBody": {"required": True,
                                "content": {JSON: {"schema": obj(["weights"], {"weights": {**WEIGHTS, "minProperties": 1}})}}},
                "responses": {"200": {"description": "The weights now.", "content": json_content(ref("Weights"))},
                              **errors(400, 404, 415, 503)},
            },
            "delete": {
                "operationId": "deleteWeights", "summary": "Back to the models file's split (an admin's)",
                "parameters": [name],
                "responses": {"200": {"description": "The weights now.", "content": json_content(ref("Weights"))},
                              **errors(404, 503)},
            },
        },
        "/v1/models/{name}/predict": {"post": {
            "operationId": "predict", "summary": "Run inputs through the queue and batcher and wait for the outputs",
            "parameters": [name],
            "requestBody": {"required": True, "content": {JSON: {"schema": ref("PredictRequest")}}},
            "responses": {
                "200": {"description": "Outputs in input order.", "content": json_content(ref("Prediction"))},
                **errors(400, 404, 408, 413, 415, 422, 429, 503, 504),
            },
        }},
    }


def operations_around(settings: Settings) -> dict[str, Any]:
    return {
        "/v1/workers": {"get": {
            "operationId": "listWorkers", "summary": "The live, warm worker processes, and how many per device",
            "responses": {"200": {"description": "Workers from their heartbeats.", "content": json_content(
                obj(["workers", "devices"], {"workers": {"type": "array", "items": ref("Worker")},
                                             "devices": COUNTS_BY_DEVICE}))}, **errors(503)},
        }},
        "/v1/dead-letters": {"get": {
            "operationId": "listDeadLetters", "summary": "Items that exhausted their transient retries, newest first",
            "parameters": [
                {"name": "model", "in": "query", "schema": {"type": "string"}, "description": "Only this model's."},
                query_int("offset", "Entries to skip (default 0).", 0, MAX_OFFSET),
                query_int("limit", "Entries per page (default 100).", 1, 1000),
            ],
            "responses": {"200": {"description": "A page of dead letters and the total.", "content": json_content(
                obj(["dead_letters", "total"], {"dead_letters": {"type": "array", "items": ref("DeadLetter")},
                                                "total": {"type": "integer", "minimum": 0}}))},
                **errors(400, 503)},
        }},
        "/metrics": {"get": {
            "operationId": "metrics", "summary": "Prometheus exposition",
            "responses": {"200": {"description": "Counters of this API.", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
        "/healthz": {"get": {
            "operationId": "healthz", "summary": "Liveness: 200 while the process is up",
            "responses": {"200": {"description": "Up.", "content": json_content(obj(["status"], {"status": {"const": "ok"}}))}},
        }},
        "/readyz": {"get": {
            "operationId": "readyz", "summary": "Readiness: Redis answers and a live worker serves every model",
            "responses": {
                "200": {"description": "Ready.", "content": json_content(ref("Readiness"))},
                "503": {"description": "`redis_unavailable` or `no_live_worker`, with the checks.",
                        "content": json_content(ref("NotReady"))},
            },
        }},
        "/readyz/api": {"get": {
            "operationId": "readyzApi", "summary": "This API process's readiness: Redis answers (no worker asked)",
            "responses": {
                "200": {"description": "Ready.", "content": json_content(
                    obj(["status", "checks"], {"status": {"const": "ready"}, "checks": {"type": "object"}}))},
                **errors(503),
            },
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This description",
            "responses": {"200": {"description": "OpenAPI 3.1.", "content": json_content({"type": "object"})}},
        }},
        "/": {"get": {
            "operationId": "jobsPage", "summary": "The jobs page: recent jobs, throughput, batch fill, workers",
            "responses": {"200": {"description": "An HTML page whose script polls `/v1/overview`.",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}},
        }},
        "/static/{filename}": {"get": {
            "operationId": "pageAsset", "summary": "The jobs page's script and style sheet",
            "parameters": [path_param("filename", "An asset of the page.")],
            "responses": {"200": {"description": "The asset.", "content": {"*/*": {"schema": {"type": "string"}}}},
                          **errors(404)},
        }},
        "/v1/overview": {"get": {
            "operationId": "overview", "summary": "What the jobs page shows: recent jobs, per-model activity, workers",
            "parameters": [
                query_int("jobs", "Recent jobs to include (default 20).", 1, 200),
                query_int("window_s", "Seconds of activity to average over (default 10).", 1, 60),
            ],
            "responses": {"200": {"description": "The overview.", "content": json_content(
                obj(["jobs", "models", "tiers", "devices", "links"], {
                    "jobs": {"type": "array"}, "models": {"type": "array"}, "devices": {"type": "array"},
                    "links": {"type": "object"},
                    "tiers": {"type": "array", "description": "Per model and tier: chunks queued, running and "
                              "held back (and their jobs), and the p95 latency of recently completed jobs.",
                              "items": obj(["model", "tier", "queued_chunks", "running_chunks", "held_chunks",
                                            "held_jobs", "recent_jobs", "p95_s"], {})},
                }))},
                **errors(400, 503)},
        }},
        "/v1": {"get": {
            "operationId": "index", "summary": "Where to start: links to the description, the models and the probes",
            "responses": {"200": {"description": "Links.", "content": json_content(
                obj(["name", "version", "links"], {"name": {"const": "batchery"}, "version": {"type": "string"},
                                                   "links": {"type": "object", "additionalProperties": {"type": "string"}}}))}},
        }},
    }


def errors(*statuses: int) -> dict[str, Any]:
    return {str(status): error_response(status) for status in statuses}


#: The operations a key's tier ceiling holds to (403).
TIERED = (("/v1/jobs", "post"), ("/v1/models/{name}/predict", "post"))
#: The operations only an admin key may use (403).
ADMIN_ONLY = (("/v1/models/{name}/weights", "put"), ("/v1/models/{name}/weights", "delete"))


def secure(paths: dict[str, Any], openai_401: dict[str, Any]) -> None:
    """Every operation but the open ones needs a key (and may answer 401, in OpenAI's shape on OpenAI's routes);
    submissions may answer 403."""
    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            if re.sub(r"\{(\w+)\}", r"<path:\1>", path) in OPEN_RULES or path in OPEN_RULES:
                operation["security"] = []
            else:
                operation["responses"]["401"] = openai_401 if path.startswith(OPENAI_PATHS) else error_response(401)
    for path, method in TIERED + ADMIN_ONLY:
        paths[path][method]["responses"]["403"] = error_response(403)


KEYS_DESCRIPTION = (
    " API keys are on. Each key may carry settings (the keys file): a tier ceiling (a higher `tier` is 403 "
    "`tier_not_allowed`; a request naming no tier gets the endpoint's default, or the ceiling if lower), quotas of "
    "items per minute and items in flight (429 `quota_exceeded` with `Retry-After`; more items than a quota at once "
    "is 413), and a name, which a job's `owner` shows. A job is its key's: another key gets 404 `job_not_found` for "
    "it, sees only its own jobs in `/v1/overview` and its own jobs' dead letters, and an `Idempotency-Key` is "
    "scoped to the key's name. An admin key (and any key of `BATCHERY_API_KEYS`) sees and cancels every job."
)


def description(settings: Settings) -> str:
    """What holds for every operation, and so is said once."""
    text = ("Asynchronous batch inference over Celery. Every error is `{\"error\": {\"code\", \"message\"}}`, "
            "gunicorn's own included: 414 `uri_too_long` (a request line over 4094 bytes), 431 "
            "`request_header_fields_too_large`, 400 `bad_request` (a duplicate `Host`, a malformed request).")
    if not settings.public_url:
        text += " Links are made on the request's `Host`: one that is not `host[:port]` is 400 `bad_request` on any path."
    if settings.api_keys_configured:
        text += KEYS_DESCRIPTION
    return text


def describe(settings: Settings, registry: Registry) -> dict[str, Any]:
    """The description of an API running with ``settings`` and serving the models of ``registry``."""
    from batchery.app.openai import openapi as openai_spec  # built on this module's helpers, so imported here

    paths = {**job_operations(settings, registry), **model_operations(registry), **operations_around(settings),
             **openai_spec.operations(settings)}
    components: dict[str, Any] = {"schemas": {**schemas(settings, registry), **openai_spec.schemas(settings, registry)}}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "batchery", "version": __version__,
                 "description": description(settings)},
        "paths": paths,
        "components": components,
    }
    if settings.api_keys_configured:
        secure(paths, openai_spec.openai_error(401))
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        doc["security"] = [{"bearer": []}, {"apiKey": []}]
    return doc
