"""A batch's input file read into the inputs of one job, and a plan of its lines.

Each line is ``{"custom_id", "method": "POST", "url": "/v1/embeddings", "body": {...}}``, whose ``body.input`` may
hold many texts. The texts of all valid lines, in line order, are the job's inputs; the plan says, per line,
which items are its own (``start``, ``count``), how to encode them and how many tokens they are. A line that
cannot be read is in the plan with its error and no items, and never stops the other lines. The plan is what
turns the finished job into the output and error files (:mod:`batchery.openai_compat.finalize`), so it is
written beside the batch and read back line by line, never held whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import IO, Any, Iterable, Iterator

import orjson

from batchery.errors import BatcheryError
from batchery.models.registry import ModelSpec, Registry
from batchery.openai_compat.embeddings import count_tokens, read_request
from batchery.settings import Settings

ENDPOINTS = ("/v1/embeddings",)
#: Line errors shown in the batch object; all of them are in its error file.
MAX_SHOWN_ERRORS = 1000
#: Texts counted in one call of the tokenizer.
COUNT_EVERY = 4096


@dataclass
class Line:
    """One line of the input file, as the plan keeps it."""

    line: int
    custom_id: str | None
    start: int = 0
    count: int = 0
    encoding_format: str = "float"
    tokens: int = 0
    error: dict[str, Any] | None = None


@dataclass
class Plan:
    """What reading the file found: the job's model and inputs, and the lines that could not be read."""

    spec: ModelSpec | None = None
    inputs: list[str] = field(default_factory=list)
    requests: int = 0
    error_lines: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


def plan_batch(source: Iterable[bytes], out: IO[bytes], endpoint: str, registry: Registry, settings: Settings) -> Plan:
    """Read the input file's lines from ``source``, write the plan (JSON lines) to ``out``, return what it found."""
    reader = _Reader(endpoint, registry, settings)
    pending: list[tuple[Line, list[str]]] = []
    waiting = 0
    for number, raw in enumerate(source, start=1):
        if not raw.strip():
            continue
        line, texts = reader.read(number, raw)
        pending.append((line, texts))
        waiting += len(texts)
        if waiting >= COUNT_EVERY:
            _flush(pending, reader.plan.spec, out)
            waiting = 0
    _flush(pending, reader.plan.spec, out)
    return reader.plan


def read_plan(source: Iterable[bytes]) -> Iterator[Line]:
    for raw in source:
        yield Line(**orjson.loads(raw))


def _flush(pending: list[tuple[Line, list[str]]], spec: ModelSpec | None, out: IO[bytes]) -> None:
    """Count the waiting lines' tokens in one call of the tokenizer, and write them to the plan."""
    texts = [text for _, line_texts in pending for text in line_texts]
    counts = iter(count_tokens(spec, texts) if spec is not None and texts else [])
    for line, line_texts in pending:
        line.tokens = sum(next(counts) for _ in line_texts)
        out.write(orjson.dumps(asdict(line)) + b"\n")
    pending.clear()


class _Reader:
    def __init__(self, endpoint: str, registry: Registry, settings: Settings) -> None:
        self.endpoint = endpoint
        self.registry = registry
        self.settings = settings
        self.plan = Plan()
        self.custom_ids: set[str] = set()

    def read(self, number: int, raw: bytes) -> tuple[Line, list[str]]:
        """One line and its texts; a line that cannot be read is kept with its error and no texts."""
        custom_id = None
        try:
            request = _json_line(raw)
            custom_id = _custom_id(request, self.custom_ids)
            line, texts = self._request(number, custom_id, request)
        except BatcheryError as exc:
            return self._fail(Line(number, custom_id), exc), []
        self.custom_ids.add(custom_id)
        self.plan.requests += 1
        self.plan.inputs.extend(texts)
        return line, texts

    def _request(self, number: int, custom_id: str, request: dict[str, Any]) -> tuple[Line, list[str]]:
        if request.get("method") != "POST":
            raise BatcheryError(
                f"'method' must be \"POST\", not {request.get('method')!r}", code="invalid_method", param="method"
            )
        if request.get("url") != self.endpoint:
            raise BatcheryError(
                f"'url' must be the batch's endpoint {self.endpoint!r}, not {request.get('url')!r}",
                code="invalid_url",
                param="url",
            )
        try:
            embedding = read_request(request.get("body"), self.registry, self.settings)
        except BatcheryError as exc:
            exc.param = f"body.{exc.param}" if exc.param else "body"
            raise
        if self.plan.spec is None:
            self.plan.spec = embedding.spec
        elif embedding.spec != self.plan.spec:
            raise BatcheryError(
                f"every line of a batch must use one model: this one names {embedding.spec.name!r}, earlier lines "
                f"{self.plan.spec.name!r}",
                code="mismatched_model",
                param="body.model",
            )
        if len(self.plan.inputs) + len(embedding.texts) > self.settings.max_items_per_job:
            raise BatcheryError(
                f"the batch would pass {self.settings.max_items_per_job} inputs, the most one job takes",
                code="too_many_inputs",
                param="body.input",
            )
        start = len(self.plan.inputs)
        return Line(number, custom_id, start, len(embedding.texts), embedding.encoding_format), embedding.texts

    def _fail(self, line: Line, exc: BatcheryError) -> Line:
        line.error = {"code": exc.code, "message": exc.message, "param": exc.param}
        self.plan.error_lines += 1
        if len(self.plan.errors) < MAX_SHOWN_ERRORS:
            self.plan.errors.append({"code": exc.code, "line": line.line, "message": exc.message, "param": exc.param})
        return line


def _json_line(raw: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BatcheryError(f"the line is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(request, dict):
        raise BatcheryError("the line must be a JSON object", code="invalid_request")
    return request


def _custom_id(request: dict[str, Any], seen: set[str]) -> str:
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise BatcheryError("'custom_id' must be a non-empty string", code="invalid_custom_id", param="custom_id")
    if custom_id in seen:
        raise BatcheryError(
            f"'custom_id' {custom_id!r} is on an earlier line too", code="duplicate_custom_id", param="custom_id"
        )
    return custom_id
