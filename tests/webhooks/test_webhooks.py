"""Completion webhooks against a real HTTP server, a real API and a real worker: signed, retried, recorded."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
import requests

from batchery import keys
from batchery.store.codec import encode_output
from batchery.store.jobs import ItemResult
from batchery.store.webhooks import Attempt, Webhooks
from batchery.webhooks.sender import WebhookSender, retry_delay
from batchery.webhooks.signing import HEADER, verify
from tests.conftest import ApiServer, WorkerProcess
from tests.helpers import error_of, wait_for_job

SECRET = "whsec-test-7f3a"


class Receiver:
    """A local HTTP server that answers ``statuses`` in turn (then 200) and keeps every call it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.calls: list[tuple[float, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((time.monotonic(), dict(self.headers), body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/batchery?team=a"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_calls(self, count: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"{len(self.calls)} of {count} calls came"
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver([500])
    yield server
    server.close()


@pytest.fixture(scope="module")
def hook_settings(settings):
    return dataclasses.replace(settings, webhook_secret=SECRET, webhook_retry_base_s=0.3, webhook_timeout_s=5.0)


@pytest.fixture(scope="module")
def hook_worker(hook_settings, tmp_path_factory) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(hook_settings, ["echo"], "hooks", tmp_path_factory.mktemp("hooks") / "worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def hook_api(hook_settings) -> Iterator[ApiServer]:
    with ApiServer(hook_settings) as server:
        yield server


@pytest.mark.usefixtures("hook_worker")
def test_a_job_calls_its_webhook_when_it_ends_signed_and_retried_until_it_lands(hook_api, receiver):
    inputs = [f"{uuid.uuid4().hex}-{i}" for i in range(3)]
    answer = requests.post(f"{hook_api.url}/v1/jobs", json={"model": "echo", "inputs": inputs, "webhook": {"url": receiver.url}})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    receiver.wait_calls(2)
    (first_at, first, first_body), (second_at, second, second_body) = receiver.calls[:2]
    for headers, body in ((first, first_body), (second, second_body)):
        assert verify(SECRET, body, headers[HEADER]), "signed with the shared secret, over the body"
        assert not verify("another-secret", body, headers[HEADER])
        assert headers["X-Batchery-Delivery"] == job["id"] and headers["X-Batchery-Event"] == "job.ended"
        sent = json.loads(body)
        assert sent["event"] == "job.ended" and sent["job"]["id"] == job["id"]
        assert sent["job"]["status"] == "completed" and sent["job"]["counts"]["succeeded"] == 3
    assert (first["X-Batchery-Attempt"], second["X-Batchery-Attempt"]) == ("1", "2")
    assert second_at - first_at >= 0.25, "the retry waits its backoff"
    document = wait_for_job(requests.Session(), job["links"]["self"])
    deadline = time.monotonic() + 10
    while document["webhook"]["state"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
        document = requests.get(job["links"]["self"]).json()
    assert document["webhook"]["url"] == receiver.url
    assert {k: document["webhook"][k] for k in ("state", "attempts", "last_status")} == {
        "state": "delivered", "attempts": 2, "last_status": "200"
    }
    time.sleep(1.5)
    assert len(receiver.calls) == 2, "a delivered webhook is called no more"


def test_a_job_whose_end_no_write_reported_is_found_and_called(hook_settings, store, receiver):
    """As if the process that stored the last item died before it said so: the sender's look finds the job."""
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "echo", "version": "1", "total": 1, "webhook": {"url": receiver.url}})
    store.redis.hset(keys.job(job_id), mapping={"status": "completed", "succeeded": 1, "finished_at": time.time()})
    store.redis.zadd(keys.webhooks_watch(), {job_id: time.time() - 1})  # its look is due (10 s after creation)
    sender = WebhookSender(store, hook_settings)
    sender.round()  # the first call: the receiver answers 500
    assert len(receiver.calls) == 1 and store.get(job_id)["webhook_status"] == "500"
    assert store.redis.zscore(keys.webhooks_due(), job_id) > time.time(), "to be tried again later"
    store.redis.zadd(keys.webhooks_due(), {job_id: time.time()})
    sender.round()
    job = store.get(job_id)
    assert (job["webhook_state"], job["webhook_attempts"], len(receiver.calls)) == ("delivered", 2, 2)
    assert store.redis.zscore(keys.webhooks_due(), job_id) is None


def test_the_write_that_stores_a_jobs_last_item_makes_its_webhook_due(store):
    """In the same script call: no round trip more per finished job, and no window in which a dying worker
    leaves the call to the sender's slower look through the watch set."""
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "echo", "version": "1", "total": 2, "webhook": {"url": "http://127.0.0.1:9/"}})
    assert store.redis.zscore(keys.webhooks_watch(), job_id) is not None
    store.record([ItemResult(job_id, 0, encode_output("a"), True)])
    assert store.redis.zscore(keys.webhooks_due(), job_id) is None, "not due before the job ends"
    before = time.time()
    store.record([ItemResult(job_id, 1, encode_output("b"), True)])
    assert store.redis.zscore(keys.webhooks_watch(), job_id) is None
    assert before - 1 <= store.redis.zscore(keys.webhooks_due(), job_id) <= time.time()


def test_a_call_taken_by_a_sender_that_died_is_made_by_another_after_the_lease(store):
    hooks = Webhooks(store.redis)
    job_id = uuid.uuid4().hex
    store.redis.zadd(keys.webhooks_due(), {job_id: 100.0})
    assert job_id in hooks.claim(now=200.0, lease_s=30, count=1000)
    assert job_id not in hooks.claim(now=210.0, lease_s=30, count=1000), "leased to the first sender"
    assert job_id in hooks.claim(now=231.0, lease_s=30, count=1000), "its lease ran out"
    hooks.record(job_id, Attempt(1, "200", 231.0, True), None, "delivered")
    assert store.redis.zscore(keys.webhooks_due(), job_id) is None
    assert not store.redis.exists(keys.job(job_id)), "a gone job's record is not brought back by its webhook"


def test_the_webhook_is_given_up_after_its_attempts(hook_settings, store):
    dead = Receiver([503] * 10)
    try:
        job_id = uuid.uuid4().hex
        store.create(job_id, {"model": "echo", "version": "1", "total": 1, "webhook": {"url": dead.url}})
        store.fail(job_id, "could not queue the job: test")  # a failed job ends too, and its webhook is due
        sender = WebhookSender(store, dataclasses.replace(hook_settings, webhook_attempts=2))
        sender.round()
        store.redis.zadd(keys.webhooks_due(), {job_id: time.time()})
        sender.round()
        job = store.get(job_id)
        assert (job["webhook_state"], job["webhook_attempts"], job["webhook_status"]) == ("failed", 2, "503")
        assert store.redis.zscore(keys.webhooks_due(), job_id) is None and len(dead.calls) == 2
    finally:
        dead.close()


def test_backoff_doubles_up_to_its_cap():
    assert [retry_delay(n, 1.0, 5.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize("webhook", [{"url": "ftp://example.com/x"}, {"url": "http://"}, {"url": "x", "extra": 1},
                                     "http://example.com", {"url": "https://u:p@example.com/"}])
def test_a_bad_webhook_is_400(hook_api, webhook):
    answer = requests.post(f"{hook_api.url}/v1/jobs", json={"model": "echo", "inputs": ["a"], "webhook": webhook})
    error_of(answer, 400, "bad_request")


def test_without_a_secret_a_webhook_is_refused_rather_than_never_called(api):
    answer = requests.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": ["a"], "webhook": {"url": "http://127.0.0.1:9/"}})
    assert "BATCHERY_WEBHOOK_SECRET" in error_of(answer, 400, "bad_request")
