"""``batchery.Client``: the HTTP API from Python, for programs that submit jobs and read their results.

    import batchery

    client = batchery.Client()                      # the running `batchery up`, or BATCHERY_API_URL
    job = client.submit("minilm", ["a cat sat", "stocks fell"], metadata={"run": "demo"})
    client.wait(job)                                # the job's document once it has ended
    for result in client.results(job):              # binary frames: vectors arrive as numpy arrays
        print(result.index, result.output)
    for result in client.follow(other_job):         # or each item as it finishes, while the job runs
        print(result.index, result.output)
    vectors = client.predict("minilm", ["hello"])   # through the same queues, waiting for the answer
    big = client.submit("minilm", texts, results="npy")             # results written to files when it ends
    files = {f["kind"]: f for f in client.result_files(big)}        # waits for them
    client.download(files["outputs"], "vectors.npy")                # streamed to disk

Results are read as :data:`batchery.store.codec.FRAMES` (the stored bytes, framed, with no JSON on either
side): a 384-float vector is 1.5 KB that way and some 4.5 KB of JSON text to write and parse. Every error
answer raises :class:`ApiError` with the API's status, code and message. It needs only requests, orjson
and numpy, and loads none of the service.
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import orjson
import requests

from batchery.store.codec import FRAME_HEADER, FRAMES, decode

NDJSON = "application/x-ndjson"
STREAM_READ = 1 << 16
#: ``follow``'s pause before it asks again after a stream that brought nothing new, doubling to the most.
FOLLOW_PAUSE_S = 0.05
FOLLOW_PAUSE_MAX_S = 1.0
#: Streams ``follow`` resumes in a row, after a failure, before it gives up and raises the failure.
FOLLOW_RETRIES = 12


class ApiError(RuntimeError):
    """An error answer: ``status`` (HTTP), ``code`` and ``message`` as the API gave them."""

    def __init__(self, status: int, code: str, message: str, url: str = "") -> None:
        super().__init__(f"HTTP {status} from {url}: {code}: {message}")
        self.status, self.code, self.message, self.url = status, code, message, url


class JobFailed(RuntimeError):
    """:meth:`Client.wait` found the job ``failed`` or ``cancelled``; ``job`` is its document."""

    def __init__(self, job: dict[str, Any]) -> None:
        why = (job.get("error") or {}).get("message", "")
        super().__init__(f"job {job['id']} ended {job['status']}" + (f": {why}" if why else ""))
        self.job = job


@dataclass(frozen=True)
class Job:
    """A submitted job, as the 202 answer gave it."""

    id: str
    model: str
    total: int
    url: str
    results_url: str

    @classmethod
    def from_answer(cls, body: Mapping[str, Any]) -> "Job":
        links = body["links"]
        return cls(body["id"], body["model"], int(body["total"]), links["self"], links["results"])


@dataclass(frozen=True)
class Result:
    """One finished item: its ``output``, or its ``error`` (``{"code", "message"}``) and ``output`` None."""

    index: int
    output: Any = None
    error: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """As the API's JSON results write it."""
        return {"index": self.index, "error": self.error} if self.error is not None else {"index": self.index, "output": self.output}


class Client:
    """One API, one session. ``url`` defaults to the settings' (:attr:`Settings.client_url`: BATCHERY_API_URL,
    the running `batchery up`'s, or BATCHERY_HOST:BATCHERY_PORT) and ``api_key`` to BATCHERY_API_KEY."""

    def __init__(
        self, url: str | None = None, api_key: str | None = None, *, timeout_s: float = 60.0,
        session: requests.Session | None = None,
    ) -> None:
        if url is None or api_key is None:
            from batchery.settings import Settings

            settings = Settings.load()
            url = settings.client_url if url is None else url
            api_key = settings.client_api_key if api_key is None else api_key
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    # -- jobs -------------------------------------------------------------------------------------------

    def submit(
        self, model: str, inputs: Sequence[Any], *, metadata: Mapping[str, Any] | None = None, tier: str | None = None,
        cache: bool | None = None, timeout_s: float | None = None, webhook: str | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None, results: str | Sequence[str] | None = None,
    ) -> Job:
        """Submit a job of ``inputs`` (JSON values); ``webhook`` is a URL, or ``{"url": ...}``, called when it ends;
        ``results`` the formats of the result files to write then (``"jsonl"``, ``"npy"`` or both)."""
        body: dict[str, Any] = {"model": model, "inputs": list(inputs)}
        optional = {"metadata": metadata, "tier": tier, "cache": cache, "timeout_s": timeout_s}
        body.update({k: v for k, v in optional.items() if v is not None})
        if results is not None:
            body["results"] = {"format": results if isinstance(results, str) else list(results)}
        if webhook is not None:
            body["webhook"] = {"url": webhook} if isinstance(webhook, str) else dict(webhook)
        headers = {"content-type": "application/json", **({"Idempotency-Key": idempotency_key} if idempotency_key else {})}
        return Job.from_answer(self._call("POST", "/v1/jobs", data=orjson.dumps(body), headers=headers))

    def submit_lines(self, model: str, lines: bytes | Iterable[bytes], **query: Any) -> Job:
        """Submit NDJSON: one JSON input per line, sent as is (``query``: ``tier``, ``cache``, ``webhook``)."""
        body = lines if isinstance(lines, bytes) else b"\n".join(lines)
        params = {"model": model, **{k: _query_value(v) for k, v in query.items() if v is not None}}
        return Job.from_answer(self._call("POST", "/v1/jobs", params=params, data=body, headers={"content-type": NDJSON}))

    def get(self, job: Job | str) -> dict[str, Any]:
        """The job's document (status, counts, timestamps, ``webhook`` delivery...)."""
        return self._call("GET", self._job_url(job))

    def cancel(self, job: Job | str) -> dict[str, Any]:
        return self._call("DELETE", self._job_url(job))

    def wait(self, job: Job | str, timeout_s: float | None = None, poll_s: float = 0.5) -> dict[str, Any]:
        """Poll until the job has ended; its document. :class:`JobFailed` if it failed or was cancelled,
        :class:`TimeoutError` past ``timeout_s``."""
        return self.wait_all([job], timeout_s, poll_s)[0]

    def wait_all(
        self, jobs: Sequence[Job | str], timeout_s: float | None = None, poll_s: float = 0.5,
        progress: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Poll every job until all have ended; ``progress`` is told the items done so far after each round."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        found: dict[int, dict[str, Any]] = {}
        done: dict[int, int] = {}
        while True:
            for k, job in enumerate(jobs):
                if k in found:
                    continue
                document = self.get(job)
                counts = document["counts"]
                done[k] = counts["succeeded"] + counts["failed"]
                if document["status"] in ("failed", "cancelled"):
                    raise JobFailed(document)
                if document["status"] == "completed":
                    found[k] = document
            if progress is not None:
                progress(sum(done.values()))
            if len(found) == len(jobs):
                return [found[k] for k in range(len(jobs))]
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{len(jobs) - len(found)} of {len(jobs)} jobs still running after {timeout_s}s")
            time.sleep(poll_s)

    def results(self, job: Job | str) -> Iterator[Result]:
        """Every finished item of the job, in index order, streamed as binary frames."""
        return self._stream(self._results_url(job), 0, 0.0)

    def follow(self, job: Job | str, timeout_s: float | None = None, wait_s: float = 30.0) -> Iterator[Result]:
        """Every item of a running job as it finishes, in index order, with no status polls: streams of up to
        ``wait_s`` each (``GET .../results?wait=``), each resumed where the last stopped. Ends once every item
        has come, or the job has ended (then an item it never finished, of a cancelled job say, is missing);
        :class:`TimeoutError` past ``timeout_s``.

        A stream cut short (the connection lost, the API or Redis restarting: a 503) is resumed at the next
        index after a pause, up to :data:`FOLLOW_RETRIES` times in a row without an item coming."""
        total = job.total if isinstance(job, Job) else int(self.get(job)["total"])
        url = self._results_url(job)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        offset, pause, failures = 0, FOLLOW_PAUSE_S, 0
        while offset < total:
            before = offset
            wait = wait_s if deadline is None else min(wait_s, max(deadline - time.monotonic(), 0.0))
            try:
                for result in self._stream(url, offset, wait):
                    yield result
                    offset = result.index + 1
                ended = self.get(job)["status"] in ("completed", "failed", "cancelled")
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, ValueError, ApiError) as exc:
                failures = 0 if offset > before else failures + 1
                if failures > FOLLOW_RETRIES or (isinstance(exc, ApiError) and exc.status != 503):
                    raise
                ended = False
            if offset < total and ended:
                return  # the stream had every item of the ended job there was
            if offset < total and deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{total - offset} of {total} items still to come after {timeout_s}s")
            if offset == before:  # nothing new: the API's waiting readers are all taken, or it failed
                time.sleep(pause)
                pause = min(pause * 2, FOLLOW_PAUSE_MAX_S)
            else:
                pause, failures = FOLLOW_PAUSE_S, 0

    def _stream(self, url: str, offset: int, wait_s: float) -> Iterator[Result]:
        """One results stream from ``offset``, following the job for up to ``wait_s``."""
        params = {"wait": wait_s, "offset": offset}
        timeout = (self.timeout_s, wait_s + self.timeout_s)  # no byte may come for the whole wait
        with self.session.get(url, params=params, headers={"Accept": FRAMES}, stream=True, timeout=timeout) as response:
            _raise_for_error(response)
            for index, raw in frames(response.iter_content(STREAM_READ)):
                kind, value = decode(raw)
                yield Result(index, value) if kind == "output" else Result(index, None, value)

    def result_files(self, job: Job | str, timeout_s: float | None = None, poll_s: float = 0.5) -> list[dict[str, Any]]:
        """The job's result files once written, waiting for them: each with its ``kind``, ``format``, ``bytes`` and
        ``url``; :class:`TimeoutError` past ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (found := self.get(job).get("result_files", {})).get("state") != "written":
            if not found:
                raise ApiError(400, "no_result_files", "the job asked for no result files", self._job_url(job))
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the job's result files were not written within {timeout_s}s")
            time.sleep(poll_s)
        return found["files"]

    def download(self, file: Mapping[str, Any], path: str | Path) -> Path:
        """Stream a result file (one of :meth:`result_files`) to ``path``, never holding it whole."""
        path = Path(path)
        with self.session.get(file["url"], stream=True, timeout=self.timeout_s) as response:
            _raise_for_error(response)
            with path.open("wb") as out:
                for block in response.iter_content(STREAM_READ):
                    out.write(block)
        return path

    def jobs(self, status: str | None = None, model: str | None = None, limit: int = 100) -> Iterator[dict[str, Any]]:
        """The jobs this key may see, newest first, page after page (``GET /v1/jobs``)."""
        params: dict[str, Any] | None = {"limit": limit, "status": status, "model": model}
        url = f"{self.url}/v1/jobs"
        while url:
            page = self._call("GET", url, params={k: v for k, v in (params or {}).items() if v is not None})
            yield from page["jobs"]
            url, params = page["next"], None

    # -- predict ----------------------------------------------------------------------------------------

    def predict(self, model: str, inputs: Sequence[Any], tier: str | None = None) -> list[Any]:
        """The outputs, in input order; :class:`ApiError` (code ``item_failed``) if any item failed."""
        body: dict[str, Any] = {"inputs": list(inputs), **({"tier": tier} if tier is not None else {})}
        answer = self._call("POST", f"/v1/models/{model}/predict", data=orjson.dumps(body),
                            headers={"content-type": "application/json"})
        if answer.get("errors"):
            first = answer["errors"][0]
            raise ApiError(200, "item_failed", f"{len(answer['errors'])} items failed, first #{first['index']}: "
                                               f"{first['code']}: {first['message']}", self.url)
        return answer["outputs"]

    # -- plumbing ---------------------------------------------------------------------------------------

    def _job_url(self, job: Job | str) -> str:
        return job.url if isinstance(job, Job) else f"{self.url}/v1/jobs/{job}"

    def _results_url(self, job: Job | str) -> str:
        return job.results_url if isinstance(job, Job) else f"{self._job_url(job)}/results"

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = path if path.startswith(("http://", "https://")) else f"{self.url}{path}"
        response = self.session.request(method, url, timeout=self.timeout_s, **kwargs)
        _raise_for_error(response)
        return response.json()


def frames(pieces: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """``(index, stored value)`` per frame of a body that arrives in pieces, as it arrives."""
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
        end = 0
        while len(buffer) - end >= FRAME_HEADER.size:
            index, length = FRAME_HEADER.unpack_from(buffer, end)
            if len(buffer) - end - FRAME_HEADER.size < length:
                break
            start = end + FRAME_HEADER.size
            yield index, bytes(buffer[start : start + length])
            end = start + length
        del buffer[:end]
    if buffer:
        raise ValueError(f"the results stream ended inside a frame ({len(buffer)} bytes left over)")


def _query_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _raise_for_error(response: requests.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:200]
    raise ApiError(response.status_code, code, message, response.url)
