"""``/v1/files``: upload a batch's input file (streamed to the file store), read, list and delete files.

A file is its uploader's, as a job is (:mod:`batchery.app.tenancy`): every other key but an admin is told 404
about it. Batches' output and error files belong to the batch's owner.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, request, stream_with_context

from batchery.app import tenancy
from batchery.app.jobs import int_arg, json_response
from batchery.app.openai.uploads import read_upload
from batchery.app.services import services
from batchery.errors import BadRequest, FileNotFound
from batchery.store.files import new_file_id

bp = Blueprint("files", __name__, url_prefix="/v1/files")
#: The ids this service issues (``batchery.store.files.new_file_id``); any other is no file, and never reaches Redis.
FILE_ID = re.compile(r"file-[0-9a-f]{32}")
PURPOSES = ("batch",)
#: What multipart framing may add around a file at its size limit.
MULTIPART_SLACK = 64 * 1024
LIST_LIMIT = 10_000


def file_object(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "object": "file",
        "bytes": record["bytes"],
        "created_at": record["created_at"],
        "filename": record["filename"],
        "purpose": record["purpose"],
        "status": "processed",
        "expires_at": record["expires_at"],
        "status_details": None,
    }


@bp.post("")
def upload_file() -> Response:
    """The file part is written to the store as it arrives, and becomes a file only once it is whole."""
    svc = services()
    request.max_content_length = svc.settings.max_file_bytes + MULTIPART_SLACK
    file_id = new_file_id()
    blob = f"uploads/{file_id}"
    with svc.files.blobs.writing(blob) as out:
        upload = read_upload(request, out, svc.settings.max_file_bytes)
        purpose = upload.fields.get("purpose")
        if purpose not in PURPOSES:
            raise BadRequest(f"'purpose' must be one of {', '.join(PURPOSES)}, not {purpose!r}", param="purpose")
    record = svc.files.create(file_id, blob, upload.size, upload.filename or "upload", purpose, tenancy.owner())
    svc.files.sweep()
    return json_response(file_object(record))


@bp.get("")
def list_files() -> Response:
    svc = services()
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest(f"'order' must be 'asc' or 'desc', not {order!r}", param="order")
    limit = int_arg("limit", LIST_LIMIT, 1, LIST_LIMIT)
    owner = None if tenancy.sees_everything() else tenancy.owner()
    found, more = svc.files.list(owner, request.args.get("after"), limit, order == "desc", request.args.get("purpose"))
    return json_response(listing([file_object(f) for f in found], more))


def listing(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    """A page as OpenAI's cursor lists carry it: the SDK asks for the next one ``after`` the last id."""
    return {
        "object": "list",
        "data": data,
        "has_more": more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@bp.get("/<file_id>")
def get_file(file_id: str) -> Response:
    return json_response(file_object(visible_file(file_id)))


@bp.get("/<file_id>/content")
def file_content(file_id: str) -> Response:
    """The bytes as stored, streamed a block at a time."""
    record = visible_file(file_id)
    blocks = services().files.blobs.chunks(record["blob"])
    try:
        first = next(blocks, b"")
    except FileNotFoundError as exc:
        raise FileNotFound(f"the bytes of file {file_id!r} are gone") from exc

    def body():
        yield first
        yield from blocks

    return Response(
        stream_with_context(body()),
        mimetype="application/octet-stream",
        headers={"Content-Length": str(record["bytes"])},
    )


@bp.delete("/<file_id>")
def delete_file(file_id: str) -> Response:
    record = visible_file(file_id)
    services().files.delete(record)
    return json_response({"id": file_id, "object": "file", "deleted": True})


def visible_file(file_id: str, param: str = "file_id") -> dict[str, Any]:
    """The file, if this request may see it; 404 ``file_not_found`` otherwise, as for one that never was."""
    record = services().files.get(file_id) if FILE_ID.fullmatch(file_id) else None
    if record is None or not tenancy.sees(record):
        raise FileNotFound(f"no file {file_id!r} (it never existed, was deleted, or expired)", param=param)
    return record
