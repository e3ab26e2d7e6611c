"""Results that follow a running job (``?wait=``), through real HTTP, Redis and a worker process.

``echo-slow`` runs 8 items a batch at 20 ms a batch, so a job of a few hundred items runs for a second or
more: long enough to see items arrive while it runs.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import orjson
import pytest
import requests

from batchery.app import follow
from batchery.store import ItemResult
from batchery.store.codec import FRAMES, decode, encode_output, read_frames
from tests.conftest import ApiServer
from tests.helpers import error_of, wait_for_job

pytestmark = pytest.mark.usefixtures("echo_worker")
NDJSON = {"Accept": "application/x-ndjson"}


def submit(http: requests.Session, api, total: int, model: str = "echo-slow") -> dict:
    inputs = [f"item {i}" for i in range(total)]
    response = http.post(f"{api.url}/v1/jobs", json={"model": model, "inputs": inputs, "cache": False})
    assert response.status_code == 202, response.text
    return response.json()


def read_lines(response: requests.Response) -> list[tuple[float, dict]]:
    """Each NDJSON line as it arrives, with the time it arrived."""
    return [(time.monotonic(), orjson.loads(line)) for line in response.iter_lines() if line]


def test_a_stream_with_wait_sends_every_item_in_index_order_while_the_job_runs(http, api):
    job = submit(http, api, 240)
    with http.get(job["links"]["results"], params={"wait": 30}, headers=NDJSON, stream=True) as response:
        assert response.status_code == 200
        lines = read_lines(response)
    assert [record for _, record in lines] == [{"index": i, "output": f"item {i}"} for i in range(240)]
    first, last = lines[0][0], lines[-1][0]
    assert last - first > 0.2, "the first items came while the job still ran (30 batches of 20 ms)"
    assert http.get(job["links"]["self"]).json()["status"] == "completed"


def test_a_stream_cut_short_by_its_wait_resumes_at_its_offset(http, api):
    """A wait of 1 s on a job of at least 2 s (100 batches of 20 ms): long enough for its first items even when
    the worker is slow to start (0.3 s was not, once, in a slow spell of a shared machine), short of the end."""
    job = submit(http, api, 800)
    started = time.monotonic()
    with http.get(job["links"]["results"], params={"wait": 1.0}, headers=NDJSON, stream=True) as response:
        first = [record for _, record in read_lines(response)]
    assert time.monotonic() - started < 4
    assert 0 < len(first) < 800, "some items in 1 s, not all of 100 batches of 20 ms"
    assert [r["index"] for r in first] == list(range(len(first)))
    params = {"wait": 30, "offset": len(first)}
    with http.get(job["links"]["results"], params=params, headers={"Accept": FRAMES}, stream=True) as response:
        rest = list(read_frames(response.content))
    assert [index for index, _ in rest] == list(range(len(first), 800))
    assert all(decode(raw) == ("output", f"item {index}") for index, raw in rest)


def test_a_json_page_with_wait_answers_once_all_its_items_finished(http, api):
    job = submit(http, api, 200)
    page = http.get(job["links"]["results"], params={"wait": 30, "offset": 100, "limit": 50}).json()
    assert [r["index"] for r in page["results"]] == list(range(100, 150))
    assert page["next"].endswith("offset=150&limit=50")


def test_a_follower_of_an_ended_job_is_answered_at_once(http, api):
    job = submit(http, api, 800)
    assert http.delete(job["links"]["self"]).status_code == 200
    started = time.monotonic()
    with http.get(job["links"]["results"], params={"wait": 30}, headers=NDJSON, stream=True) as response:
        lines = [record for _, record in read_lines(response)]
    page = http.get(job["links"]["results"], params={"wait": 30, "limit": 800}).json()
    assert time.monotonic() - started < 5, "a cancelled job's missing items will not come: no waiting for them"
    assert len(lines) <= 800 and len(page["results"]) <= 800


def test_a_finished_job_streams_at_once_with_or_without_wait(http, api):
    job = submit(http, api, 30, model="echo")
    wait_for_job(http, job["links"]["self"])
    for params in ({}, {"wait": 10}, {"offset": 0}):
        with http.get(job["links"]["results"], params=params, headers=NDJSON, stream=True) as response:
            assert [r["index"] for _, r in read_lines(response)] == list(range(30))
    with http.get(job["links"]["results"], params={"offset": 25}, headers=NDJSON, stream=True) as response:
        assert [r["index"] for _, r in read_lines(response)] == list(range(25, 30)), "a stream starts at its offset"


@pytest.mark.parametrize("wait", ["-1", "abc", "nan", "inf", "61", ""])
def test_a_wait_that_is_not_seconds_within_the_limit_is_400(http, api, wait):
    job = submit(http, api, 1, model="echo")
    message = error_of(http.get(job["links"]["results"], params={"wait": wait}), 400, "bad_request")
    assert "'wait'" in message


def test_a_slot_to_wait_is_granted_up_to_the_limit_and_released_after():
    waiters = follow.Waiters(1)
    with waiters.slot(5.0) as first:
        with waiters.slot(5.0) as second:
            assert (first, second) == (5.0, 0.0), "the second reader is answered at once"
    with waiters.slot(5.0) as again:
        assert again == 5.0
    with waiters.slot(0.0) as none:
        assert none == 0.0


def test_readers_past_half_the_api_threads_are_answered_at_once(settings):
    """With 2 threads, one reader may wait: a second is answered at once with what has finished, and the
    probes still answer; the first still gets every item."""
    with ApiServer(dataclasses.replace(settings, api_workers=1, api_threads=2)) as api:
        http = requests.Session()
        job = submit(http, api, 400)
        got: list[dict] = []

        def first_reader() -> None:
            with requests.get(job["links"]["results"], params={"wait": 30}, headers=NDJSON, stream=True) as response:
                got.extend(record for _, record in read_lines(response))

        reader = threading.Thread(target=first_reader)
        reader.start()
        time.sleep(0.3)
        started = time.monotonic()
        with http.get(job["links"]["results"], params={"wait": 30}, headers=NDJSON, stream=True) as response:
            second = [record for _, record in read_lines(response)]
        assert time.monotonic() - started < 1.0 and len(second) < 400
        assert http.get(f"{api.url}/healthz", timeout=2).status_code == 200
        reader.join(30)
        assert [r["index"] for r in got] == list(range(400))


class CountingStore:
    """The real job store, with the item spans each read of outputs asked for."""

    def __init__(self, store) -> None:
        self.store = store
        self.spans: list[int] = []

    def outputs(self, job_id: str, start: int, stop: int):
        self.spans.append(stop - start)
        return self.store.outputs(job_id, start, stop)

    def get(self, job_id: str):
        return self.store.get(job_id)


def test_a_follower_waiting_on_an_item_reads_that_item_alone(store):
    """Items 0-99 and 200-2999 have finished, 100-199 not yet: while the follower waits on item 100 it reads
    that item alone, not a page of 1,000 whose later items it already has no use for; once 100-199 finish, it
    reads on in spans that grow, and sends every item in order."""
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "echo", "version": "1", "total": 3000, "status": "running"})
    store.record(ItemResult(job_id, i, encode_output(i), True) for i in [*range(100), *range(200, 3000)])
    counting = CountingStore(store)
    render = lambda index, raw: b"%d " % index  # noqa: E731
    sent: list[bytes] = []
    follower = threading.Thread(target=lambda: sent.extend(follow.follow_stream(counting, job_id, 3000, 0, 10.0, render)))
    follower.start()
    time.sleep(0.3)
    waiting = list(counting.spans)
    store.record(ItemResult(job_id, i, encode_output(i), True) for i in range(100, 200))
    follower.join(10)
    assert not follower.is_alive()
    assert [int(i) for i in b"".join(sent).split()] == list(range(3000))
    assert waiting[0] == 1000 and len(waiting) > 5, "a page first, then a read per pause while item 100 is missing"
    assert set(waiting[1:]) == {1}, "while it waits, it reads item 100 alone"
    after = counting.spans[len(waiting):]
    hit = after.index(200)
    assert set(after[:hit]) == {1} and after[hit:hit + 4] == [200, 400, 800, 1000], (
        "once item 100 has come: twice the last run (100), growing while whole spans come, up to a page"
    )
