"""``batchery.Client`` against the API on a real socket and a real echo worker."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest

import batchery
from batchery.client import ApiError, Job, frames
from batchery.store.codec import frame
from tests.conftest import ApiServer

pytestmark = pytest.mark.usefixtures("echo_worker")


def test_submit_wait_and_read_results_as_frames(api):
    client = batchery.Client(api.url, api_key="")
    run = uuid.uuid4().hex  # inputs no other test has: the result cache stays out of every test's counts
    inputs = [{"i": i, "run": run} for i in range(1_500)] + [f"text {run}", None]
    job = client.submit("echo", inputs, metadata={"run": "client"}, tier="bulk")
    assert isinstance(job, Job) and job.total == len(inputs) and job.model == "echo@1"
    document = client.wait(job, timeout_s=60, poll_s=0.05)
    assert document["status"] == "completed" and document["metadata"] == {"run": "client"} and document["tier"] == "bulk"
    results = list(client.results(job))
    assert [r.index for r in results] == list(range(len(inputs)))
    assert [r.output for r in results] == inputs and all(r.ok for r in results)
    assert job.id in [listed["id"] for listed in client.jobs(model="echo", status="completed", limit=5)]


def test_follow_reads_a_running_job_item_by_item_resuming_each_short_stream(api):
    client = batchery.Client(api.url, api_key="")
    inputs = [f"follow {i}" for i in range(300)]  # echo-slow: 38 batches of 20 ms
    job = client.submit("echo-slow", inputs, cache=False)
    results = list(client.follow(job, timeout_s=60, wait_s=0.25))  # a fresh stream every quarter second
    assert [(r.index, r.output) for r in results] == list(enumerate(inputs))
    assert client.get(job)["status"] == "completed"
    with pytest.raises(TimeoutError):
        list(client.follow(client.submit("echo-slow", inputs, cache=False).id, timeout_s=0.2, wait_s=0.1))


def test_follow_ends_with_a_cancelled_job(api):
    client = batchery.Client(api.url, api_key="")
    job = client.submit("echo-slow", [f"cancel {i}" for i in range(800)], cache=False)
    client.cancel(job)
    results = list(client.follow(job, timeout_s=20))
    assert [r.index for r in results] == sorted(r.index for r in results)
    assert all(not r.ok and r.error["code"] == "cancelled" for r in results if r.output is None)


def test_lines_go_as_ndjson_and_errors_raise_with_the_apis_code(api):
    client = batchery.Client(api.url, api_key="")
    job = client.submit_lines("echo", [b'"a"', b"[1, 2]"], cache=False)
    client.wait(job.id, timeout_s=60, poll_s=0.05)
    assert [r.as_dict() for r in client.results(job.id)] == [{"index": 0, "output": "a"}, {"index": 1, "output": [1, 2]}]
    with pytest.raises(ApiError) as refused:
        client.submit_lines("echo", [b'"fine"', b"{broken"])
    assert refused.value.status == 400 and refused.value.code == "bad_request" and "line 2" in refused.value.message
    with pytest.raises(ApiError) as unknown:
        client.get("0" * 32)
    assert (unknown.value.status, unknown.value.code) == (404, "job_not_found")


def test_predict_returns_the_outputs_in_order(api):
    client = batchery.Client(api.url, api_key="")
    inputs = [f"x {uuid.uuid4().hex}", {"y": uuid.uuid4().hex}, 3.25]
    assert client.predict("echo", inputs) == inputs


def test_the_api_key_is_sent(settings):
    with ApiServer(dataclasses.replace(settings, api_keys="client-key-1")) as keyed:
        with pytest.raises(ApiError) as refused:
            batchery.Client(keyed.url, api_key="").predict("echo", ["x"])
        assert refused.value.status == 401
        text = f"keyed {uuid.uuid4().hex}"
        assert batchery.Client(keyed.url, api_key="client-key-1").predict("echo", [text]) == [text]


def test_frames_are_read_as_they_arrive_whatever_the_pieces():
    stored = [b"f" + np.arange(4, dtype="<f4").tobytes(), b'j{"a":1}', b'e{"code":"x","message":"y"}']
    body = b"".join(frame(i, raw) for i, raw in enumerate(stored))
    for size in (1, 3, 7, len(body)):
        pieces = [body[k:k + size] for k in range(0, len(body), size)]
        assert list(frames(pieces)) == list(enumerate(stored))
    with pytest.raises(ValueError, match="ended inside a frame"):
        list(frames([body[:-1]]))
