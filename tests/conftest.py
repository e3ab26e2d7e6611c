"""Fixtures that start real services: a private redis-server, worker processes, the API over HTTP.

Nothing here touches a Redis it did not start; every fixture stops what it started.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import socket
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis
import requests
from werkzeug.serving import make_server

from batchery.app import create_app
from batchery.batching import hooks
from batchery.cli.redis_server import RedisServer, free_port
from batchery.models.registry import BUILTINS, ModelSpec, load_registry
from batchery.settings import Settings
from batchery.store import JobStore
from batchery.store.heartbeats import live_workers

MODELS_TOML = textwrap.dedent(
    """
    # echo as it was built in before it had a chunk size of its own: the tests' jobs of a few hundred items
    # then run as several chunks of the settings' 128, which the recovery and fairness tests need
    [models.echo]
    max_batch_size = 64
    chunk_size = 0

    [models.echo-slow]
    runtime = "echo"
    input = "json"
    max_batch_size = 8
    max_wait_ms = 1
    description = "synthetic: echo at 20 ms a batch"
    [models.echo-slow.options]
    batch_latency_ms = 20

    [models.echo-tiers]
    runtime = "echo"
    input = "json"
    max_batch_size = 8
    max_wait_ms = 1
    description = "synthetic: echo at 20 ms a batch, served only by the tier tests' own workers"
    [models.echo-tiers.options]
    batch_latency_ms = 20

    [models.echo-chaos]
    runtime = "echo"
    input = "json"
    max_batch_size = 16
    max_wait_ms = 1
    description = "synthetic: served only by the chaos tests' own workers"
    [models.echo-chaos.options]
    batch_latency_ms = 10

    [models.echo-flaky]
    runtime = "echo"
    input = "json"
    max_batch_size = 8
    max_wait_ms = 1
    description = "synthetic: served only by the dead-letter tests' workers, with faults injected by setting"

    [models.echo-store]
    runtime = "echo"
    input = "json"
    max_batch_size = 16
    max_wait_ms = 1
    description = "synthetic: served only by the chunk-retry tests' workers, whose writes fail on purpose"

    [models.echo-orphan]
    runtime = "echo"
    input = "json"
    description = "synthetic: no worker serves it, on purpose"

    [models.echo-oom]
    runtime = "echo"
    input = "json"
    max_batch_size = 32
    max_wait_ms = 1
    description = "synthetic: a device too small for batches of more than 8, served only by the out-of-memory test"
    [models.echo-oom.options]
    oom_above = 8
    batch_latency_ms = 2
    """
)


@pytest.fixture(autouse=True)
def hooks_left_as_found():
    """Batch hooks are process-wide: a test that adds one must remove it, or later tests see its effects."""
    before = list(hooks._HOOKS)
    yield
    assert hooks._HOOKS == before, "a test left a batch hook behind"


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batchery")


@pytest.fixture(scope="session")
def data_settings(session_dir: Path) -> Settings:
    """Settings with only the data dir set (shared with ``settings``): MiniLM is exported once a session."""
    return Settings(data_dir=str(session_dir / "data"))


@pytest.fixture(scope="session")
def minilm_spec() -> ModelSpec:
    return BUILTINS["minilm"]


@pytest.fixture(scope="session")
def tiny_folders(session_dir: Path) -> dict[str, Path]:
    """Tiny BERT folders made here, one per task (``embedding``, ``classification``, ``cross-encoder``)."""
    from tests import tiny_models

    return tiny_models.build_all(session_dir / "tiny")


@pytest.fixture(scope="session")
def redis_server(session_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(session_dir / "redis", persist=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(redis_server: RedisServer, session_dir: Path, data_settings: Settings) -> Settings:
    models_file = session_dir / "models.toml"
    models_file.write_text(MODELS_TOML)
    return Settings(
        redis_url=redis_server.url,
        data_dir=data_settings.data_dir,
        models_file=str(models_file),
        chunk_size=128,
        max_items_per_job=20_000,
        max_request_bytes=2_000_000,
        max_input_chars=2_000,
        predict_timeout_s=10.0,
        worker_heartbeat_s=0.5,
        worker_heartbeat_ttl_s=2.0,
        worker_metrics_port=0,
    )


@pytest.fixture(scope="session")
def store(settings: Settings) -> JobStore:
    return settings.job_store()


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.effective_redis_url)


class WorkerProcess:
    """`batchery worker` as a child process, ready once its heartbeat is in Redis."""

    def __init__(self, settings: Settings, models: list[str], name: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.models = models
        self.name = name
        self.log_path = log_path
        self.env = {**os.environ, **settings.as_env(), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def queues(self) -> list[str]:
        registry = load_registry(self.settings.models_file)
        return [queue for m in self.models for queue in registry.get(m).queues]

    def start(self, timeout_s: float = 180.0) -> "WorkerProcess":
        argv = [sys.executable, "-m", "batchery", "worker", "--models", ",".join(self.models), "--name", self.name]
        self.process = subprocess.Popen(argv, env=self.env, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT)
        self.wait_live(timeout_s)
        return self

    def hostname_live(self, client: redis.Redis) -> bool:
        return any(w["hostname"].startswith(self.name + "@") for w in live_workers(client))

    def wait_live(self, timeout_s: float) -> None:
        client = redis.Redis.from_url(self.settings.effective_redis_url)
        deadline = time.monotonic() + timeout_s
        while not self.hostname_live(client):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not come up:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="session")
def echo_worker(settings: Settings, session_dir: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(settings, ["echo", "echo-slow"], "echo", session_dir / "echo-worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def minilm_worker(settings: Settings, session_dir: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(settings, ["minilm"], "minilm", session_dir / "minilm-worker.log").start()
    yield worker
    worker.stop()


class ApiServer:
    """The Flask app on a real socket in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, create_app(settings), threaded=True)
        # a short poll: shutdown() waits for the serving loop's next look at its flag (werkzeug's is 0.5 s)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ApiServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


class GunicornApi:
    """`batchery api` as a child process: gunicorn, two worker processes, multiprocess metrics."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{settings.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> "GunicornApi":
        env = {**os.environ, **self.settings.as_env()}
        argv = [sys.executable, "-m", "batchery", "api"]
        self.process = subprocess.Popen(
            argv, env=env, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.poll() is None and time.monotonic() < deadline, self.log_path.read_text()[-3000:]
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def api(settings: Settings) -> Iterator[ApiServer]:
    with ApiServer(settings) as server:
        yield server


@pytest.fixture(scope="session")
def http() -> requests.Session:
    return requests.Session()


@pytest.fixture
def settings_with(settings: Settings):
    """Settings with some fields changed, for an API that needs other limits."""

    def make(**changes: object) -> Settings:
        return dataclasses.replace(settings, **changes)

    return make


NODE = f"batchery-test-{os.getpid()}@localhost"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
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
