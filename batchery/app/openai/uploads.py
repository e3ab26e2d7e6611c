"""A multipart upload read as it arrives: its ``file`` part goes straight into the blob store, a block at a time.

Werkzeug's own form parsing would first spool the file to a temporary file and then hand it over whole; here
the parts are decoded from the request stream (:class:`werkzeug.sansio.multipart.MultipartDecoder`) and the
file's bytes are written to the store as they come, so no upload is ever held whole, in memory or twice on disk.
The small fields (``purpose``) are kept in memory, up to :data:`MAX_FIELD_BYTES` each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO

from flask import Request
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from batchery.errors import BadRequest, PayloadTooLarge

BLOCK = 1 << 16
MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 16


@dataclass
class Upload:
    """What an upload held besides the file's bytes."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0


def read_upload(request: Request, out: IO[bytes], max_bytes: int, file_field: str = "file") -> Upload:
    """Decode a ``multipart/form-data`` body, writing the ``file_field`` part's bytes to ``out``.

    400 for a body that is not multipart or has no such part; 413 once the file passes ``max_bytes``.
    """
    boundary = request.mimetype_params.get("boundary")
    if request.mimetype != "multipart/form-data" or not boundary:
        raise BadRequest("send the file as multipart/form-data, with fields 'file' and 'purpose'")
    decoder = MultipartDecoder(boundary.encode(), max_parts=MAX_PARTS)  # drained every block; fields bounded below
    upload = Upload()
    state = _Parts(upload, out, max_bytes, file_field)
    try:
        while True:
            block = request.stream.read(BLOCK)
            decoder.receive_data(block or None)
            if not state.take(decoder) or not block:
                break
    except ValueError as exc:  # werkzeug's word for a malformed multipart body
        raise BadRequest(f"the multipart body could not be read: {exc}") from exc
    if upload.filename is None:
        raise BadRequest(f"the upload has no '{file_field}' part", param=file_field)
    return upload


@dataclass
class _Parts:
    upload: Upload
    out: IO[bytes]
    max_bytes: int
    file_field: str
    current: Field | File | None = None
    buffer: bytearray = field(default_factory=bytearray)

    def take(self, decoder: MultipartDecoder) -> bool:
        """Handle every event ready; False once the body's end is reached."""
        event = decoder.next_event()
        while not isinstance(event, (NeedData, Epilogue)):
            if isinstance(event, (Field, File)):
                self.current = event
                self.buffer.clear()
                if event.name == self.file_field:  # a file part, or a plain field some clients send instead
                    if self.upload.filename is not None:
                        raise BadRequest(
                            f"the upload has more than one '{self.file_field}' part", param=self.file_field
                        )
                    self.upload.filename = getattr(event, "filename", None) or "upload"
            elif isinstance(event, Data):
                self._data(event)
            event = decoder.next_event()
        return not isinstance(event, Epilogue)

    def _data(self, event: Data) -> None:
        part = self.current
        if part is not None and part.name == self.file_field:
            self.upload.size += len(event.data)
            if self.upload.size > self.max_bytes:
                raise PayloadTooLarge(f"the file is over the limit of {self.max_bytes} bytes", param=self.file_field)
            self.out.write(event.data)
            return
        self.buffer += event.data
        if len(self.buffer) > MAX_FIELD_BYTES:
            raise PayloadTooLarge(f"the field {part.name!r} is over {MAX_FIELD_BYTES} bytes")
        if not event.more_data and isinstance(part, Field):
            self.upload.fields[part.name] = self.buffer.decode("utf-8", "replace")
