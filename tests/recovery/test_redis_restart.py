"""Redis SIGKILLed mid-job and started again: every job completes, every item exactly once, and nothing is
left behind (no claim, no chunk, no handoff, no backlog), with Redis as the broker and with RabbitMQ."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

import batchery


def through_a_redis_restart(stack, down_s: float = 3.0) -> None:
    stack.worker("left")
    stack.worker("right")
    stack.serve()
    run = uuid.uuid4().hex[:6]
    a_inputs = [f"{run}-a{i}" for i in range(3000)]
    b_inputs = a_inputs[1500:] + [f"{run}-b{i}" for i in range(1000)] + [f"{run}-dup"] * 500  # shares and waits
    a = stack.submit(a_inputs)
    b = stack.submit(b_inputs)
    stack.wait_progress(a, 300)
    stack.kill_redis()
    time.sleep(down_s)
    stack.start_redis()
    for job, inputs in ((a, a_inputs), (b, b_inputs)):
        doc = stack.wait(job, timeout_s=180)
        assert doc["status"] == "completed"
        assert doc["counts"]["succeeded"] == len(inputs) and doc["counts"]["failed"] == 0, doc
        assert stack.outputs(job, len(inputs)) == inputs
    stack.settle()
    logs = "".join(w.log_path.read_text() for w in stack.workers)
    assert "Error" in logs or "refused" in logs or "failed" in logs, "the workers never noticed Redis was gone"


@pytest.mark.slow
def test_redis_killed_and_restarted_mid_job_loses_nothing(stack_factory):
    through_a_redis_restart(stack_factory())


@pytest.mark.slow
def test_redis_killed_and_restarted_mid_job_loses_nothing_with_rabbitmq_as_the_broker(stack_factory, amqp_url):
    through_a_redis_restart(stack_factory(broker_url=amqp_url))


@pytest.mark.slow
def test_a_client_following_a_job_reads_every_item_once_across_a_redis_restart(stack_factory):
    """The results stream breaks when Redis goes (the API answers 503 meanwhile); Client.follow resumes it at
    the next index once Redis is back, and every item comes exactly once, in order."""
    stack = stack_factory()
    stack.worker("follower")
    stack.serve()
    client = batchery.Client(stack.api.url, api_key="")
    inputs = [f"{uuid.uuid4().hex[:6]}-{i}" for i in range(2000)]
    job = client.submit("echo-recovery", inputs, cache=False)
    read: list = []

    def follow() -> None:
        read.extend(client.follow(job, timeout_s=120, wait_s=5))

    reader = threading.Thread(target=follow)
    reader.start()
    stack.wait_progress({"links": {"self": job.url}}, 300)
    deadline = time.monotonic() + 10
    while not read:
        assert time.monotonic() < deadline, "the follower read nothing while the job ran"
        time.sleep(0.01)
    stack.kill_redis()
    time.sleep(2.0)
    stack.start_redis()
    reader.join(150)
    assert not reader.is_alive()
    assert [r.index for r in read] == list(range(2000)), "every item once, in index order"
    assert [r.output for r in read] == inputs
