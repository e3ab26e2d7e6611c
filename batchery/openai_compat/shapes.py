"""The JSON that OpenAI's clients read: an embeddings list, an error, a batch output line.

Vectors go out as OpenAI sends them: JSON floats (``float``), or the float32 values' little-endian bytes in
base64 (``base64``), which is what the ``openai`` Python SDK asks for when the caller names no format.
"""

from __future__ import annotations

import base64
from typing import Any, Sequence

import numpy as np

from batchery.errors import BatcheryError, status_of

#: What ``error.type`` says, by status: OpenAI's clients read the status; people read the type.
TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


def error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return TYPES.get(status, "invalid_request_error")


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``, as OpenAI answers an error."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def vector(kind: str, value: Any) -> np.ndarray | None:
    """An item's output as a float32 vector, or None when it is not one (an error, a model that gives JSON)."""
    if kind != "output":
        return None
    found = np.asarray(value)
    if found.ndim != 1 or found.dtype.kind not in "fiu":
        return None
    return found.astype(np.float32, copy=False)


def encode(vec: np.ndarray, encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(vec.astype("<f4", copy=False).tobytes()).decode("ascii")
    return vec


def embedding_list(vectors: Sequence[np.ndarray], encoding_format: str, model: str, tokens: int) -> dict[str, Any]:
    """The body of a ``/v1/embeddings`` answer (and of each successful batch line)."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(vec, encoding_format)}
            for i, vec in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def item_failure(index: int, kind: str, value: Any) -> BatcheryError:
    """Why an item has no vector, as the error its request answers with."""
    if kind == "error":
        failure = BatcheryError(f"input[{index}]: {value.get('message', '')}", code=value.get("code", "internal"))
        failure.status = status_of(failure.code)
        failure.param = "input"
        return failure
    failure = BatcheryError(f"input[{index}]: the model's output is not a vector of numbers", code="model_error")
    failure.status = 500
    return failure
