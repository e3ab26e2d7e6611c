"""Every error leaves the API as ``{"error": {"code", "message"}}`` with the status its class carries."""

from __future__ import annotations

import logging

import kombu.exceptions
import redis
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from batchery.errors import BatcheryError, Unavailable
from batchery.store.codec import dumps

log = logging.getLogger(__name__)


#: The message of every 500 the API did not mean to give: the details are in its log, not the answer.
INTERNAL = "internal error; see the API's log"


def error_body(code: str, message: str, **extra: object) -> bytes:
    return dumps({"error": {"code": code, "message": message}, **extra})


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: object
) -> Response:
    return Response(error_body(code, message, **extra), status=status, mimetype="application/json", headers=headers)


def code_of(reason: str) -> str:
    """The code of an error werkzeug or gunicorn raises, from its reason phrase: ``URI Too Long`` -> ``uri_too_long``."""
    return reason.lower().replace(" ", "_")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(BatcheryError)
    def batchery_error(exc: BatcheryError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """Keeps werkzeug's own headers (a 405's ``Allow``), since RFC 9110 requires them."""
        code = code_of(exc.name or "error")
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error_response(exc.code or 500, code, exc.description or exc.name, headers)

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(kombu.exceptions.OperationalError)
    def dependency_error(exc: Exception) -> Response:
        log.warning("dependency unavailable: %s", exc)
        unavailable = Unavailable(f"Redis or the broker is unavailable: {exc}")
        return error_response(unavailable.status, unavailable.code, unavailable.message)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal", INTERNAL)
