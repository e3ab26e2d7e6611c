"""Every error leaves the API as ``{"error": {"code", "message"}}`` with the status its class carries.

On OpenAI's paths (``/v1/embeddings``, ``/v1/files``, ``/v1/batches``) it leaves in OpenAI's shape instead,
``{"error": {"message", "type", "param", "code"}}``, which OpenAI's clients read: same status, same code.
"""

from __future__ import annotations

import logging

import kombu.exceptions
import redis
from flask import Flask, Response, has_request_context, request
from werkzeug.exceptions import HTTPException

from batchery.errors import BatcheryError, Unavailable
from batchery.openai_compat.shapes import error_body as openai_error_body
from batchery.store.codec import dumps

log = logging.getLogger(__name__)
#: Paths whose errors are in OpenAI's shape.
OPENAI_PATHS = ("/v1/embeddings", "/v1/files", "/v1/batches")


#: The message of every 500 the API did not mean to give: the details are in its log, not the answer.
INTERNAL = "internal error; see the API's log"


def error_body(code: str, message: str, **extra: object) -> bytes:
    return dumps({"error": {"code": code, "message": message}, **extra})


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: object
) -> Response:
    return Response(error_body(code, message, **extra), status=status, mimetype="application/json", headers=headers)


def openai_path() -> bool:
    return has_request_context() and request.path.startswith(OPENAI_PATHS)


def answer(status: int, code: str, message: str, headers: dict[str, str] | None = None, param: str | None = None) -> Response:
    """The error in the shape its path speaks."""
    if openai_path():
        body = dumps(openai_error_body(status, code, message, param))
        return Response(body, status=status, mimetype="application/json", headers=headers)
    return error_response(status, code, message, headers)


def code_of(reason: str) -> str:
    """The code of an error werkzeug or gunicorn raises, from its reason phrase: ``URI Too Long`` -> ``uri_too_long``."""
    return reason.lower().replace(" ", "_")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(BatcheryError)
    def batchery_error(exc: BatcheryError) -> Response:
        return answer(exc.status, exc.code, exc.message, exc.headers, exc.param)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """Keeps werkzeug's own headers (a 405's ``Allow``), since RFC 9110 requires them."""
        code = code_of(exc.name or "error")
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return answer(exc.code or 500, code, exc.description or exc.name, headers)

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(kombu.exceptions.OperationalError)
    def dependency_error(exc: Exception) -> Response:
        log.warning("dependency unavailable: %s", exc)
        unavailable = Unavailable(f"Redis or the broker is unavailable: {exc}")
        return answer(unavailable.status, unavailable.code, unavailable.message)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return answer(500, "internal", INTERNAL)
