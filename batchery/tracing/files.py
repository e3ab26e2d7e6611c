"""Finished spans as JSON lines in a file (``BATCHERY_TRACE_FILE``): a trace read without a collector, and the
way the tests read the spans of worker processes.

Each line is the SDK's own JSON of one span (``ReadableSpan.to_json``). Every export is one ``write`` to a
file opened for appending, so the processes of a stack may share one file without mixing their lines.
"""

from __future__ import annotations

import os
from typing import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class JsonLinesExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._fd is None:
            return SpanExportResult.FAILURE
        data = b"".join(span.to_json(indent=None).encode() + b"\n" for span in spans)
        while data:
            data = data[os.write(self._fd, data) :]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
