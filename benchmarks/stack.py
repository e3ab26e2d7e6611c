"""Starting and stopping what a benchmark measures: a private Redis, the API, batchery and Celery workers.

Every child gets its own session (so a Ctrl-C in the terminal reaches only this process, which then stops
the children in order) and a log file; :class:`Stack` is a context manager that stops every child it
started, whatever way the block is left. SIGTERM is turned into an exception for the same reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Callable, TypeVar

import redis
import requests

from batchery.cli.processes import api_argv
from batchery.cli.redis_server import RedisServer, free_port
from batchery.models.registry import QUEUE_PREFIX
from batchery.settings import Settings
from batchery.store.heartbeats import live_workers
from batchery.tiers import STANDARD
from benchmarks.plain_celery import REDIS_URL_ENV

log = logging.getLogger(__name__)
T = TypeVar("T")


class Terminated(Exception):
    """SIGTERM arrived: raised in the main thread so that every ``finally`` runs and the children stop."""


def raise_on_signals() -> None:
    """SIGTERM raises :class:`Terminated`; SIGINT raises KeyboardInterrupt even where a parent ignored it
    (as shells do for background jobs), so ``kill -INT`` stops the benchmark like Ctrl-C does."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_interruptibly(run: Callable[[T], dict], args: T) -> dict | None:
    """``run(args)`` with logging on and signals turned into exceptions; None when it was interrupted.

    Every benchmark's ``main`` starts this way, so that Ctrl-C or SIGTERM leaves no child process behind.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise_on_signals()
    try:
        return run(args)
    except (KeyboardInterrupt, Terminated):
        print("interrupted: every process this benchmark started has been stopped", file=sys.stderr)
        return None


@dataclasses.dataclass
class Child:
    """One child process and the log its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (Celery and gunicorn shut down warm on it), then SIGKILL the whole group after ``timeout_s``."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", self.name, timeout_s)
        _kill_group(self.process.pid)
        if self.alive():
            self.process.wait()


def _kill_group(pid: int) -> None:
    """Kill what is left of a child's process group: prefork pool children, gunicorn workers."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Stack:
    """A private redis-server and the processes started against it, all stopped on exit."""

    def __init__(self, log_dir: Path, data_dir: Path) -> None:
        self.log_dir = log_dir
        self.data_dir = data_dir
        self.children: dict[str, Child] = {}
        self.redis: RedisServer | None = None
        self.scratch = Path(tempfile.mkdtemp(prefix="batchery-bench-"))
        self.settings = Settings()

    def __enter__(self) -> "Stack":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.redis = RedisServer(self.scratch / "redis", persist=False).start()
        except BaseException:
            self.close()
            raise
        # Built from the defaults, not from the shell's BATCHERY_* variables, and handed to every child whole:
        # the figures must not depend on the caller's environment, and no child may reach another Redis.
        self.settings = Settings(redis_url=self.redis.url, data_dir=str(self.data_dir), port=free_port())
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def redis_pid(self) -> int:
        if self.redis is None or self.redis.process is None:
            raise RuntimeError("the stack's redis-server is not running")
        return self.redis.process.pid

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def env(self, settings: Settings | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **(settings or self.settings).as_env(), **(extra or {})}

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        if name in self.children and self.children[name].alive():
            raise RuntimeError(f"{name} is already running")
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.children[name] = child = Child(name, process, log_path)
        log.info("started %s (pid %d, log %s)", name, process.pid, log_path)
        return child

    def stop(self, name: str) -> None:
        child = self.children.pop(name, None)
        if child is not None:
            child.stop()
            log.info("stopped %s", name)

    def close(self) -> None:
        """Stop every child (newest first), then Redis, then remove the scratch folder; never raises."""
        for name in reversed(list(self.children)):
            try:
                self.stop(name)
            except BaseException as exc:  # keep going: the others must stop too
                log.error("could not stop %s: %s", name, exc)
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        shutil.rmtree(self.scratch, ignore_errors=True)

    # --- the processes a benchmark needs ------------------------------------------------------------------

    def start_api(self, timeout_s: float = 60.0, extra_env: dict[str, str] | None = None) -> Child:
        """gunicorn serving the Flask app, as ``batchery api`` runs it, with its metrics folder in scratch."""
        metrics = self.scratch / "metrics"
        metrics.mkdir(exist_ok=True)
        env = self.env(extra={"PROMETHEUS_MULTIPROC_DIR": str(metrics), **(extra_env or {})})
        child = self.spawn("api", api_argv(self.settings), env)
        self._wait(child, timeout_s, lambda: _http_ok(f"{self.api_url}/healthz"))
        return child

    def start_worker(
        self,
        name: str,
        models: list[str],
        settings: Settings | None = None,
        timeout_s: float = 600.0,
        extra_env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> Child:
        """``batchery worker``; ready once its heartbeat is in Redis (models loaded, warmed, consuming)."""
        argv = [sys.executable, "-m", "batchery", "worker", "--models", ",".join(models), "--name", name]
        child = self.spawn(name, [*argv, *(extra_args or [])], self.env(settings, extra_env))
        with redis.Redis.from_url(self.settings.effective_redis_url) as client:
            self._wait(
                child, timeout_s, lambda: any(w["hostname"].startswith(f"{name}@") for w in live_workers(client))
            )
        return child

    def start_pool(
        self, name: str, models: list[str], processes: int, settings: Settings | None = None, timeout_s: float = 600.0
    ) -> Child:
        """``batchery worker --devices cpu --processes N``, as an operator runs a CPU pool (the supervisor and its
        N worker processes, one process group); ready once N heartbeats serve every one of ``models``."""
        argv = [sys.executable, "-m", "batchery", "worker", "--devices", "cpu", "--processes", str(processes)]
        child = self.spawn(name, [*argv, "--models", ",".join(models)], self.env(settings))
        wanted = {f"{QUEUE_PREFIX}{model}.{STANDARD}" for model in models}

        def ready(client: redis.Redis) -> bool:
            return sum(wanted <= set(w.get("queues", [])) for w in live_workers(client)) >= processes

        with redis.Redis.from_url(self.settings.effective_redis_url) as client:
            self._wait(child, timeout_s, lambda: ready(client))
        return child

    def start_plain_worker(
        self,
        pool: str,
        concurrency: int,
        timeout_s: float = 60.0,
        app: str = "benchmarks.plain_celery",
        settings: Settings | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Child:
        """``celery -A <app> worker`` (the plain echo app unless told); ready once it answers a ping.

        ``settings`` and ``extra_env`` reach the worker's environment, for an app that loads a model the way
        batchery's settings describe it.
        """
        from benchmarks.plain_celery import create_app

        name = f"plain-{pool}"
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--hostname={name}@%h",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
        ]
        env = self.env(settings, {REDIS_URL_ENV: self.settings.effective_redis_url, **(extra_env or {})})
        child = self.spawn(name, argv, env)
        app = create_app(self.settings.effective_redis_url)
        try:
            self._wait(child, timeout_s, lambda: bool(app.control.ping(destination=[_node(name)], timeout=0.5)))
        finally:
            app.close()
        return child

    def _wait(self, child: Child, timeout_s: float, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode}:\n{child.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} was not ready in {timeout_s:.0f}s:\n{child.log_tail()}")
            time.sleep(0.1)


def _node(name: str) -> str:
    return f"{name}@{socket.gethostname()}"


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False
