"""Traces of a job's way through batchery: the API request, its chunks' sends, each chunk in the broker and in
a worker, each batch that served them, and the batch's write to the store.

Off unless OpenTelemetry's own environment asks for it (:mod:`batchery.tracing.setup`). While off, every helper
here returns at once and the OpenTelemetry SDK's tracing is never imported. The batch hook lives in
:mod:`batchery.tracing.batches`, which only workers load.
"""

from batchery.tracing.http import instrument_app
from batchery.tracing.messages import carrier, chunk_span, sending
from batchery.tracing.setup import active, configure, flush, install, span, tracer, uninstall

__all__ = [
    "active",
    "carrier",
    "chunk_span",
    "configure",
    "flush",
    "install",
    "instrument_app",
    "sending",
    "span",
    "tracer",
    "uninstall",
]
