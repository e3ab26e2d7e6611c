"""Higher tiers reach the workers first, on Redis and on RabbitMQ: an interactive job sent after a bulk job,
before any worker is up, finishes while the bulk job has barely started.

The jobs run on ``echo-tiers``, which only these tests' workers serve: on a model that the session's echo
worker also serves, that worker would run the bulk job while this test's worker starts, and the count read
once it is up would measure the start, not the order."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from batchery.models.registry import load_registry
from batchery.tasks.celery_app import create_celery
from batchery.tasks.enqueue import Enqueuer
from tests.conftest import WorkerProcess


def interactive_overtakes_bulk(settings, log_path) -> tuple[int, int]:
    """The bulk job's items done when the interactive job completed, and the bulk job's total."""
    registry = load_registry(settings.models_file)
    spec = registry.get("echo-tiers")
    store = settings.job_store()
    enqueuer = Enqueuer(create_celery(settings), store, settings, registry)
    run = uuid.uuid4().hex[:6]
    bulk = enqueuer.submit(spec, [f"{run}-b{i}" for i in range(2000)], cache=False, tier="bulk")
    online = enqueuer.submit(spec, [f"{run}-i{i}" for i in range(4)], cache=False, tier="interactive")
    worker = WorkerProcess(settings, ["echo-tiers"], f"tiers-{run}", log_path).start()
    try:
        assert store.wait_done(online, 30), store.get(online)
        done_then = store.get(bulk)["succeeded"]
        assert store.wait_done(bulk, 120)
    finally:
        worker.stop()
    assert store.get(bulk)["succeeded"] == 2000 and store.get(online)["succeeded"] == 4
    return done_then, 2000


@pytest.mark.slow
def test_an_interactive_job_overtakes_a_bulk_one_on_redis(settings, tmp_path):
    done, total = interactive_overtakes_bulk(settings, tmp_path / "worker.log")
    assert done <= total // 2, f"{done} bulk items ran before the interactive job's 4 (FIFO: all of them)"


@pytest.mark.slow
def test_an_interactive_job_overtakes_a_bulk_one_on_rabbitmq(settings, amqp_url, tmp_path):
    done, total = interactive_overtakes_bulk(dataclasses.replace(settings, broker_url=amqp_url), tmp_path / "worker.log")
    assert done <= total // 2, f"{done} bulk items ran before the interactive job's 4 (FIFO: all of them)"
