"""A batch serves many jobs: its span has no parent, only links to the chunks it served. The SDK's samplers
decide a root span by its own new trace id, which would keep or drop a batch at random whatever became of
its jobs. :class:`BatchSampler` keeps a batch whenever one of the chunks it served was kept, and leaves
every other span to the sampler the environment chose (``OTEL_TRACES_SAMPLER``)."""

from __future__ import annotations

from typing import Any, Sequence

from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, get_current_span


class BatchSampler(Sampler):
    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        if not parent.is_valid and links and any(link.context.trace_flags.sampled for link in links):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"BatchSampler{{{self.inner.get_description()}}}"
