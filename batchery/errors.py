"""One error hierarchy: each error knows its HTTP status and a stable machine-readable code.

The API turns any :class:`BatcheryError` into ``{"error": {"code", "message"}}`` with its status; workers
store the same ``code``/``message`` pair as an item's error, so a client sees one vocabulary everywhere.
"""

from __future__ import annotations


class BatcheryError(Exception):
    """Root of every error batchery raises on purpose."""

    status = 500
    code = "internal"

    #: The request field at fault, where one is (OpenAI-shaped answers carry it as ``param``).
    param: str | None = None

    def __init__(self, message: str = "", *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message or self.__doc__ or self.code)
        if code is not None:
            self.code = code
        if param is not None:
            self.param = param

    @property
    def message(self) -> str:
        return str(self.args[0])

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the JSON error (``Retry-After``, say)."""
        return {}


class BadRequest(BatcheryError):
    """The request body is malformed."""

    status = 400
    code = "bad_request"


class Unauthorized(BatcheryError):
    """The request carries no valid API key (only when API keys are configured)."""

    status = 401
    code = "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="batchery"'}


class Forbidden(BatcheryError):
    """The API key is valid but may not do this."""

    status = 403
    code = "forbidden"


class AdminRequired(Forbidden):
    """The route changes what every client gets (a model's weights, say): only an admin API key may."""

    code = "admin_required"


class TierNotAllowed(Forbidden):
    """The request asks for a tier above the highest its API key may use."""

    code = "tier_not_allowed"


class RequestTimeout(BatcheryError):
    """The request's headers or body did not arrive in time (``BATCHERY_REQUEST_READ_TIMEOUT_S``)."""

    status = 408
    code = "request_timeout"


class UnsupportedMediaType(BatcheryError):
    """The request body's content type is not one the endpoint reads."""

    status = 415
    code = "unsupported_media_type"


class NotFound(BatcheryError):
    """No such resource."""

    status = 404
    code = "not_found"


class JobNotFound(NotFound):
    """No job with this id (it never existed, or it expired)."""

    code = "job_not_found"


class ModelNotFound(NotFound):
    """No model with this name or version is registered."""

    code = "model_not_found"


class FileNotFound(NotFound):
    """No file with this id (it never existed, was deleted, or expired)."""

    code = "file_not_found"


class BatchNotFound(NotFound):
    """No batch with this id (it never existed, or it expired)."""

    code = "batch_not_found"


class PayloadTooLarge(BatcheryError):
    """The request exceeds a size limit (bytes, items or characters)."""

    status = 413
    code = "payload_too_large"


class InvalidInput(BatcheryError):
    """An input does not fit the model (wrong type or shape)."""

    status = 422
    code = "invalid_input"


class TooManyRequests(BatcheryError):
    """The model's backlog of queued items is full; come back after ``Retry-After`` seconds."""

    status = 429
    code = "backlog_full"

    def __init__(self, message: str = "", *, retry_after_s: int = 1, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class QuotaExceeded(TooManyRequests):
    """The API key's quota (items per minute, or items in flight) would be exceeded; nothing was queued."""

    code = "quota_exceeded"


class Unavailable(BatcheryError):
    """A dependency (Redis, the broker, a worker) cannot serve the request now."""

    status = 503
    code = "unavailable"


class NoLiveWorker(Unavailable):
    """No live worker consumes this model's queue."""

    code = "no_live_worker"


class Timeout(BatcheryError):
    """The request did not finish within its time limit."""

    status = 504
    code = "timeout"


class ModelError(BatcheryError):
    """The model raised while running a batch."""

    status = 500
    code = "model_error"


class TransientError(ModelError):
    """A failure that may pass on its own (a flaky device call, a lost connection): worth retrying."""

    status = 503
    code = "transient_error"


class DeviceOutOfMemory(TransientError):
    """The device ran out of memory for this batch; a smaller batch may fit."""

    code = "out_of_memory"


class StoreUnavailable(TransientError):
    """Redis would not take this item's output, on every retry of its chunk."""

    code = "store_unavailable"


class DeadlineExceeded(BatcheryError):
    """The job's deadline (its ``timeout_s``) passed before this item ran."""

    status = 504
    code = "deadline_exceeded"


class Cancelled(BatcheryError):
    """The job was cancelled before this item ran."""

    status = 409
    code = "cancelled"


class JobFailed(BatcheryError):
    """The job failed whole (it could not be queued) before this item ran."""

    status = 500
    code = "job_failed"


class ResultMissing(BatcheryError):
    """No result was stored for this item (its job's outputs expired, or were dropped, before it was written)."""

    status = 500
    code = "result_missing"


class ResultsInFiles(BatcheryError):
    """The job's results were written to its result files and have left Redis: read them from the files."""

    status = 410
    code = "results_in_files"


class ConfigError(BatcheryError):
    """The models file or a setting is wrong."""

    status = 500
    code = "config_error"


def status_of(code: str) -> int:
    """The HTTP status of an error known only by its code (an item's stored error, say); 500 for a code no
    class here carries."""
    found = [BatcheryError]
    for cls in found:
        if cls.code == code:
            return cls.status
        found.extend(cls.__subclasses__())
    return 500
