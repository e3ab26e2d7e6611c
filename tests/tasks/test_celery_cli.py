"""The stock `celery -A batchery.workers` commands work against batchery's workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from batchery import defaults
from batchery.tiers import TIERS
from batchery.models.registry import load_registry
from batchery.tasks import create_celery


def celery_cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "batchery.workers", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **settings.as_env()},
    )


def test_inspect_active_queues_shows_the_model_queues(settings, echo_worker):
    done = celery_cli(settings, "inspect", "active_queues", "--json", "--timeout", "5")
    assert done.returncode == 0, done.stderr
    replies = json.loads(done.stdout.strip().splitlines()[-1])
    queues = {q["name"] for node, qs in replies.items() if node.startswith("echo@") for q in qs}
    assert queues == {f"batchery.{model}.{tier}" for model in ("echo", "echo-slow") for tier in TIERS}


def test_inspect_stats_and_ping(settings, echo_worker):
    assert "pong" in celery_cli(settings, "inspect", "ping", "--timeout", "5").stdout
    stats = celery_cli(settings, "inspect", "stats", "--json", "--timeout", "5")
    assert stats.returncode == 0
    node = next(v for k, v in json.loads(stats.stdout.strip().splitlines()[-1]).items() if k.startswith("echo@"))
    assert node["pool"]["implementation"].endswith("ThreadPool") or "thread" in node["pool"]["implementation"].lower()


def test_the_app_speaks_json_only_and_acks_late(settings):
    conf = create_celery(settings).conf
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.broker_transport_options["visibility_timeout"] == settings.visibility_timeout_s
    assert conf.result_expires == defaults.CELERY_RESULT_EXPIRES_S
    assert conf.worker_prefetch_multiplier == 1


def test_each_model_queue_is_bound_to_its_models_own_exchange(settings):
    """Left to Celery, every queue was bound to one exchange named after the first model's standard queue."""
    app = create_celery(settings)
    queues = app.amqp.queues
    registry = load_registry(settings.models_file)
    for spec in registry:
        for name in spec.queues:
            queue = queues[name]
            assert (queue.exchange.name, queue.exchange.type, queue.routing_key) == (f"batchery.{spec.name}", "direct", name)
    assert app.conf.task_default_exchange == "batchery"
