"""A real job over a Redis that wants a password, and over one that speaks only TLS (rediss://).

Each test starts its own redis-server, a worker subprocess and the API against it: the worker's Celery broker,
its result backend and batchery's job store all go through the one URL. Neither the worker's log (its banner
included) nor the API's answers may show the password.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

import pytest
import redis
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from batchery.cli.redis_server import RedisServer, Tls, find_redis_server
from batchery.redis_urls import redis_client
from batchery.settings import Settings
from tests.conftest import ApiServer, WorkerProcess
from tests.helpers import wait_for_job

PASSWORD = "pw-Q8s/x@y:z"


def write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def certificate(subject: str, key, issuer: x509.Name | None, issuer_key, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A throwaway CA and a server certificate it signed, for 127.0.0.1 and localhost."""
    folder = tmp_path_factory.mktemp("tls")
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("batchery test CA", ca_key, None, ca_key, ca=True)
    server = certificate("127.0.0.1", server_key, ca.subject, ca_key, ca=False)
    pem_key = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    return Tls(
        cert_file=write_pem(folder / "server.pem", server.public_bytes(serialization.Encoding.PEM)),
        key_file=write_pem(folder / "server.key", server_key.private_bytes(*pem_key)),
        ca_file=write_pem(folder / "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
    )


def tls_binary_or_skip() -> None:
    try:
        find_redis_server(tls=True)
    except FileNotFoundError as exc:
        pytest.skip(f"no redis-server built with TLS here: {exc}")


def run_a_job_through(server: RedisServer, settings: Settings, log_dir: Path) -> str:
    secured = dataclasses.replace(settings, redis_url=server.url)
    worker = WorkerProcess(secured, ["echo"], "secure", log_dir / "worker.log").start()
    try:
        with ApiServer(secured) as api:
            http = requests.Session()
            job = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": ["a", {"b": 2}]}).json()
            assert wait_for_job(http, job["links"]["self"], timeout_s=60)["status"] == "completed"
            assert http.get(job["links"]["results"]).json()["results"] == [{"index": 0, "output": "a"}, {"index": 1, "output": {"b": 2}}]
    finally:
        worker.stop()
    return (log_dir / "worker.log").read_text()


@pytest.mark.slow
def test_a_job_runs_over_a_redis_with_a_password(settings, tmp_path):
    server = RedisServer(tmp_path / "redis", persist=False, password=PASSWORD).start()
    try:
        assert server.url.startswith("redis://:")
        with pytest.raises(Exception, match="(?i)auth"):
            redis_client(f"redis://127.0.0.1:{server.port}/0").ping()
        log = run_a_job_through(server, settings, tmp_path)
    finally:
        server.stop()
    assert "transport:" in log, "the worker's banner is in its log"
    assert PASSWORD not in log and "pw-Q8s" not in log


@pytest.mark.slow
def test_a_job_runs_over_tls_with_the_ca_from_the_url(settings, tmp_path, tls_files):
    tls_binary_or_skip()
    server = RedisServer(tmp_path / "redis", persist=False, password=PASSWORD, tls=tls_files).start()
    try:
        assert server.url.startswith("rediss://") and "ssl_ca_certs=" in server.url
        with pytest.raises(Exception):
            redis_client(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", socket_timeout=2).ping()
        without_our_ca = server.url.split("?")[0]
        with pytest.raises(redis.ConnectionError, match="(?i)certificate verify failed"):
            redis_client(without_our_ca).ping()
        log = run_a_job_through(server, settings, tmp_path)
    finally:
        server.stop()
    assert "rediss://" in log and "Secure redis scheme specified" not in log, "kombu got its TLS options"
    assert "pw-Q8s" not in log
