"""`BATCHERY_BROKER_URL=amqp://...` works: a job through a private RabbitMQ node, job state still in Redis."""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from batchery.cli.redis_server import free_port
from batchery.models.registry import load_registry
from batchery.monitoring.collectors import QueueDepth
from batchery.tasks.celery_app import create_celery
from batchery.tasks.enqueue import send_job
from tests.conftest import ApiServer, WorkerProcess
from tests.helpers import wait_for_job

NODE = f"batchery-test-{os.getpid()}@localhost"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ node of our own on free ports, never the machine's shared one."""
    server = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
    assert os.path.exists(server), "rabbitmq-server is needed for the amqp:// test (Debian package rabbitmq-server)"
    base = Path(tempfile.mkdtemp(prefix="batchery-rabbit-"))
    try:
        user = pwd.getpwnam("rabbitmq")
        os.chown(base, user.pw_uid, user.pw_gid)
    except KeyError:
        pass
    port, dist_port = free_port(), free_port()
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": NODE, "RABBITMQ_NODE_PORT": str(port), "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": f"{base}/mnesia", "RABBITMQ_LOG_BASE": f"{base}/log",
        "RABBITMQ_FEATURE_FLAGS_FILE": f"{base}/feature_flags", "RABBITMQ_PLUGINS_EXPAND_DIR": f"{base}/plugins",
        "RABBITMQ_ENABLED_PLUGINS_FILE": f"{base}/enabled_plugins", "RABBITMQ_CONFIG_FILE": f"{base}/rabbitmq",
        "RABBITMQ_PID_FILE": f"{base}/pid",
    }
    process = subprocess.Popen([server], env=env, stdout=(base.parent / f"{base.name}.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while not _listening(port):
        assert process.poll() is None and time.monotonic() < deadline, "the private RabbitMQ node did not start"
        time.sleep(0.5)
    yield f"amqp://guest:guest@127.0.0.1:{port}//"
    subprocess.run(["rabbitmqctl", "-n", NODE, "stop"], env=env, capture_output=True, timeout=60)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_a_job_runs_over_an_amqp_broker(amqp_url, settings, session_dir):
    amqp = dataclasses.replace(settings, broker_url=amqp_url)
    worker = WorkerProcess(amqp, ["echo"], "amqp", session_dir / "amqp-worker.log").start()
    try:
        with ApiServer(amqp) as api:
            http = requests.Session()
            job = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": list(range(500)), "cache": False}).json()
            status = wait_for_job(http, job["links"]["self"], timeout_s=60)
            assert status["counts"] == {"succeeded": 500, "failed": 0, "pending": 0, "cached": 0}
            results = http.get(job["links"]["results"], params={"limit": 500}).json()["results"]
            assert [r["output"] for r in results] == list(range(500))
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_queue_depth_is_read_from_an_amqp_broker_and_an_undeclared_queue_is_empty(amqp_url, settings, tmp_path):
    models = tmp_path / "models.toml"
    models.write_text('[models.echo-amqp-idle]\nruntime = "echo"\ninput = "json"\n\n[models.echo-amqp-never]\nruntime = "echo"\ninput = "json"\n')
    amqp = dataclasses.replace(settings, broker_url=amqp_url, models_file=str(models))
    celery, registry = create_celery(amqp), load_registry(amqp.models_file)
    idle = registry.get("echo-amqp-idle")
    send_job(celery, idle, "never-run", list(range(300)), 128)
    try:
        deadline = time.monotonic() + 10
        while True:
            depth = {s.labels["model"]: s.value for f in QueueDepth(celery, registry).collect() for s in f.samples}
            if depth.get("echo-amqp-idle") == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert depth["echo-amqp-idle"] == 3, "three chunks of 128, 128 and 44 items"
        assert depth["echo-amqp-never"] == 0 and depth["echo"] == depth["minilm"] == 0
    finally:
        with celery.connection_for_write() as conn:
            conn.default_channel.queue_delete(idle.queue)
