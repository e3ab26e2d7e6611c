"""The OpenAPI description of OpenAI's routes (:mod:`batchery.app.openapi` merges it into the whole)."""

from __future__ import annotations

from typing import Any

from batchery.app.openai.batches import BATCH_ID, LIST_LIMIT as BATCH_LIST_LIMIT, METADATA_KEY_CHARS, METADATA_KEYS
from batchery.app.openai.batches import METADATA_VALUE_CHARS, TIMES as BATCH_TIMES, WINDOWS
from batchery.app.openai.files import FILE_ID, LIST_LIMIT as FILE_LIST_LIMIT, PURPOSES
from batchery.app.openapi import ERROR_HEADERS, JSON, Schema, json_content, nullable, obj, path_param, query_int, ref
from batchery.models.registry import Registry
from batchery.models.tokens import tokens_of
from batchery.openai_compat.embeddings import ENCODINGS, embedding_models
from batchery.openai_compat.plan import ENDPOINTS
from batchery.results.finalize import PURPOSE as RESULTS_PURPOSE
from batchery.settings import Settings

OPENAI_ERRORS = {
    400: "`bad_request` (`param` names the field), `invalid_input`; an `after` cursor it cannot place is 404.",
    401: "`unauthorized`: no valid API key (only when API keys are configured).",
    404: "`model_not_found`, `file_not_found`, `batch_not_found` or `not_found`.",
    408: "`request_timeout`: the body did not arrive in time.",
    413: "`payload_too_large` or `request_entity_too_large`: more inputs, characters or bytes than the limits "
    "(uploads: `BATCHERY_MAX_FILE_BYTES`), or than one of the API key's quotas.",
    415: "`unsupported_media_type`: the body is not JSON.",
    422: "`invalid_input`: an input the model could not take.",
    429: "`backlog_full` or `quota_exceeded`; retry after `Retry-After` seconds. Nothing was queued.",
    500: "`model_error` or another item error that ended the request.",
    503: "`no_live_worker` (nothing was queued) or `unavailable` (Redis or the broker).",
    504: "`timeout`: the embeddings did not come back within `BATCHERY_PREDICT_TIMEOUT_S`.",
}
BATCH_STATUSES = [
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "cancelling",
    "cancelled",
    "expired",
]


def openai_error(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {"description": OPENAI_ERRORS[status], "content": json_content(ref("OpenAIError"))}
    if status in ERROR_HEADERS:
        response["headers"] = ERROR_HEADERS[status]
    return response


def openai_errors(*statuses: int) -> dict[str, Any]:
    return {str(status): openai_error(status) for status in statuses}


def embedding_input(settings: Settings, registry: Registry) -> Schema:
    """A string, strings, token ids or arrays of them; token ids only within every embedding model's vocabulary."""
    text = {"type": "string", "maxLength": settings.max_input_chars}
    forms = [text, {"type": "array", "minItems": 1, "maxItems": settings.max_items_per_job, "items": text}]
    tokenizers = [tokens_of(spec) for spec in embedding_models(registry)]
    if tokenizers and all(tokenizers):
        token = {"type": "integer", "minimum": 0, "maximum": min(t.vocab_size for t in tokenizers) - 1}
        ids = {"type": "array", "minItems": 1, "maxItems": settings.max_input_chars, "items": token}
        forms += [ids, {"type": "array", "minItems": 1, "maxItems": settings.max_items_per_job, "items": ids}]
    return {"anyOf": forms, "description": "Token ids are decoded with the model's tokenizer, then embedded as text."}


def schemas(settings: Settings, registry: Registry) -> dict[str, Schema]:
    specs = embedding_models(registry)
    names = sorted({name for spec in specs for name in (spec.name, spec.ref, *spec.aliases)})
    unix = {"type": "integer"}
    vector = {
        "anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}],
        "description": "Floats, or (`base64`) the float32 values' little-endian bytes in base64.",
    }
    return {
        "OpenAIError": obj(
            ["error"],
            {
                "error": obj(
                    ["message", "type", "param", "code"],
                    {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": nullable({"type": "string"}),
                        "code": nullable({"type": "string"}),
                    },
                )
            },
            description="Every 4xx/5xx answer on OpenAI's routes, in OpenAI's shape.",
        ),
        "EmbeddingRequest": obj(
            ["model", "input"],
            {
                "model": {"enum": names, "description": "An embedding model: name, `name@version` or alias."},
                "input": embedding_input(settings, registry),
                "encoding_format": nullable({"enum": list(ENCODINGS)}),
                "dimensions": nullable(
                    {
                        "enum": sorted({spec.dimensions for spec in specs}),
                        "description": "The model's own; vectors are never truncated.",
                    }
                ),
                "user": {"type": "string", "description": "The end user: keeps their requests on one version of a "
                                                    "model named without one, while its versions share its traffic."},
            },
        ),
        "Embeddings": obj(
            ["object", "data", "model", "usage"],
            {
                "object": {"const": "list"},
                "model": {"type": "string"},
                "data": {
                    "type": "array",
                    "items": obj(
                        ["object", "index", "embedding"],
                        {
                            "object": {"const": "embedding"},
                            "index": {"type": "integer", "minimum": 0},
                            "embedding": vector,
                        },
                    ),
                },
                "usage": obj(
                    ["prompt_tokens", "total_tokens"],
                    {
                        "prompt_tokens": {"type": "integer", "minimum": 0},
                        "total_tokens": {"type": "integer", "minimum": 0},
                    },
                ),
            },
        ),
        "FileObject": obj(
            ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
            {
                "id": {"type": "string"},
                "object": {"const": "file"},
                "bytes": {"type": "integer", "minimum": 0},
                "created_at": unix,
                "expires_at": nullable(unix),
                "filename": {"type": "string"},
                "purpose": {"enum": [*PURPOSES, "batch_output", RESULTS_PURPOSE], "description": "`batch_output`: "
                            "a batch's output or error file; `job_results`: a job's result files (docs/results.md)."},
                "status": {"type": "string"},
                "status_details": nullable({"type": "string"}),
            },
        ),
        "FileList": cursor_list("FileObject"),
        "FileDeleted": obj(
            ["id", "object", "deleted"],
            {
                "id": {"type": "string"},
                "object": {"const": "file"},
                "deleted": {"type": "boolean"},
            },
        ),
        "BatchRequest": obj(
            ["input_file_id", "endpoint", "completion_window"],
            {
                "input_file_id": {"type": "string"},
                "endpoint": {"enum": list(ENDPOINTS)},
                "completion_window": {"enum": list(WINDOWS)},
                "metadata": nullable(
                    {
                        "type": "object",
                        "maxProperties": METADATA_KEYS,
                        "propertyNames": {"maxLength": METADATA_KEY_CHARS},
                        "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_CHARS},
                    }
                ),
            },
        ),
        "Batch": obj(
            [
                "id",
                "object",
                "endpoint",
                "input_file_id",
                "completion_window",
                "status",
                "created_at",
                "request_counts",
                "job_id",
            ],
            {
                "id": {"type": "string"},
                "object": {"const": "batch"},
                "endpoint": {"type": "string"},
                "model": nullable({"type": "string"}),
                "input_file_id": {"type": "string"},
                "completion_window": {"type": "string"},
                "status": {"enum": BATCH_STATUSES},
                "errors": nullable(
                    obj(
                        ["object", "data"],
                        {
                            "object": {"const": "list"},
                            "data": {
                                "type": "array",
                                "items": obj(
                                    ["code", "line", "message"],
                                    {
                                        "code": {"type": "string"},
                                        "line": nullable({"type": "integer"}),
                                        "message": {"type": "string"},
                                        "param": nullable({"type": "string"}),
                                    },
                                ),
                            },
                        },
                    )
                ),
                "output_file_id": nullable({"type": "string"}),
                "error_file_id": nullable({"type": "string"}),
                **{name: nullable(unix) for name in BATCH_TIMES},
                "request_counts": obj(
                    ["total", "completed", "failed"],
                    {k: {"type": "integer", "minimum": 0} for k in ("total", "completed", "failed")},
                ),
                "metadata": nullable({"type": "object"}),
                "job_id": {"type": "string", "description": "The batchery job that runs it (`/v1/jobs/<job_id>`)."},
            },
        ),
        "BatchList": cursor_list("Batch"),
    }


def cursor_list(item: str) -> Schema:
    return obj(
        ["object", "data", "has_more"],
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": ref(item)},
            "has_more": {"type": "boolean"},
            "first_id": nullable({"type": "string"}),
            "last_id": nullable({"type": "string"}),
        },
    )


def operations(settings: Settings) -> dict[str, Any]:
    file_id = path_param(
        "file_id", "A file's id (`file-` and 32 hex digits).", {"type": "string", "pattern": f"^{FILE_ID.pattern}$"}
    )
    batch_id = path_param(
        "batch_id", "A batch's id (`batch_` and 32 hex digits).", {"type": "string", "pattern": f"^{BATCH_ID.pattern}$"}
    )
    after = {
        "name": "after",
        "in": "query",
        "schema": {"type": "string"},
        "description": "The id after which the page starts (the last id of the page before); 404 if not listed.",
    }
    return {
        "/v1/embeddings": {
            "post": {
                "operationId": "createEmbeddings",
                "summary": "OpenAI's embeddings: the same vectors as predict",
                "requestBody": {"required": True, "content": {JSON: {"schema": ref("EmbeddingRequest")}}},
                "responses": {
                    "200": {
                        "description": "One vector per input, in order.",
                        "content": json_content(ref("Embeddings")),
                    },
                    **openai_errors(400, 404, 408, 413, 415, 422, 429, 500, 503, 504),
                },
            }
        },
        "/v1/files": {
            "post": {
                "operationId": "uploadFile",
                "summary": "Upload a batch input file (JSONL), streamed to the file store",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": obj(
                                ["file", "purpose"],
                                {"file": {"type": "string", "format": "binary"}, "purpose": {"enum": list(PURPOSES)}},
                            )
                        }
                    },
                },
                "responses": {
                    "200": {"description": "The file.", "content": json_content(ref("FileObject"))},
                    **openai_errors(400, 408, 413, 503),
                },
            },
            "get": {
                "operationId": "listFiles",
                "summary": "The files this API key may see",
                "parameters": [
                    after,
                    query_int("limit", f"Files per page (default {FILE_LIST_LIMIT}).", 1, FILE_LIST_LIMIT),
                    {
                        "name": "order",
                        "in": "query",
                        "schema": {"enum": ["asc", "desc"]},
                        "description": "By creation time (default `desc`).",
                    },
                    {"name": "purpose", "in": "query", "schema": {"type": "string"}, "description": "Only these."},
                ],
                "responses": {
                    "200": {"description": "A page.", "content": json_content(ref("FileList"))},
                    **openai_errors(400, 404, 503),
                },
            },
        },
        "/v1/files/{file_id}": {
            "parameters": [file_id],
            "get": {
                "operationId": "getFile",
                "summary": "A file's record",
                "responses": {
                    "200": {"description": "The file.", "content": json_content(ref("FileObject"))},
                    **openai_errors(404, 503),
                },
            },
            "delete": {
                "operationId": "deleteFile",
                "summary": "Delete a file: its record, then its bytes",
                "responses": {
                    "200": {"description": "Deleted.", "content": json_content(ref("FileDeleted"))},
                    **openai_errors(404, 503),
                },
            },
        },
        "/v1/files/{file_id}/content": {
            "get": {
                "operationId": "getFileContent",
                "summary": "A file's bytes, streamed",
                "parameters": [file_id],
                "responses": {
                    "200": {
                        "description": "The bytes.",
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    **openai_errors(404, 503),
                },
            }
        },
        "/v1/batches": {
            "post": {
                "operationId": "createBatch",
                "summary": "Run a file of embeddings requests as one bulk job",
                "requestBody": {"required": True, "content": {JSON: {"schema": ref("BatchRequest")}}},
                "responses": {
                    "200": {
                        "description": "The batch (`in_progress`, or `failed` with its errors).",
                        "content": json_content(ref("Batch")),
                    },
                    **openai_errors(400, 404, 408, 413, 415, 429, 503),
                },
            },
            "get": {
                "operationId": "listBatches",
                "summary": "The batches this API key may see, newest first",
                "parameters": [after, query_int("limit", "Batches per page (default 20).", 1, BATCH_LIST_LIMIT)],
                "responses": {
                    "200": {"description": "A page.", "content": json_content(ref("BatchList"))},
                    **openai_errors(400, 404, 503),
                },
            },
        },
        "/v1/batches/{batch_id}": {
            "get": {
                "operationId": "getBatch",
                "summary": "A batch, brought up to date with its job",
                "parameters": [batch_id],
                "responses": {
                    "200": {"description": "The batch.", "content": json_content(ref("Batch"))},
                    **openai_errors(404, 503),
                },
            }
        },
        "/v1/batches/{batch_id}/cancel": {
            "post": {
                "operationId": "cancelBatch",
                "summary": "Cancel a batch; what finished stays, in its output file",
                "parameters": [batch_id],
                "responses": {
                    "200": {
                        "description": "The batch, `cancelling` (or as it was, if it had ended).",
                        "content": json_content(ref("Batch")),
                    },
                    **openai_errors(404, 503),
                },
            }
        },
    }
