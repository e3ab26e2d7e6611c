"""Slow clients against `batchery api`'s own gunicorn: connections that trickle their headers or their body
must not hold the threads that everyone else needs, and one that takes too long is answered 408 and let go."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
import requests

from batchery.cli.processes import api_argv
from batchery.cli.redis_server import free_port
from batchery.settings import Settings
from tests.conftest import GunicornApi
from tests.helpers import in_pieces, wait_for_job

pytestmark = [pytest.mark.usefixtures("echo_worker"), pytest.mark.slow]
SLOW_CLIENTS = 20
WITHIN_S = 1.0
SHORT_READ_TIMEOUT_S = 2.0

#: What each kind of slow client sends at once; then it sends one more byte a second, and never finishes.
OPENINGS = {
    "headers": b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trickle: ",
    "body": b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
}


def start_api(settings: Settings, log_path: Path) -> GunicornApi:
    return GunicornApi(dataclasses.replace(settings, port=free_port()), log_path).start()


@pytest.fixture(scope="module")
def default_api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornApi]:
    """gunicorn as `batchery api` starts it, with the default processes, threads and read timeout."""
    defaults = Settings()
    assert (settings.api_workers, settings.api_threads) == (defaults.api_workers, defaults.api_threads)
    api = start_api(settings, tmp_path_factory.mktemp("slow-default") / "api.log")
    yield api
    api.stop()


@pytest.fixture(scope="module")
def short_api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornApi]:
    """The same, with a read timeout short enough to watch it cut slow clients off."""
    short = dataclasses.replace(settings, request_read_timeout_s=SHORT_READ_TIMEOUT_S)
    api = start_api(short, tmp_path_factory.mktemp("slow-short") / "api.log")
    yield api
    api.stop()


class Tricklers:
    """``count`` connections that send a request's opening, then one byte a second from a background thread."""

    def __init__(self, port: int, kind: str, count: int) -> None:
        self.sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
        self.stopped = threading.Event()
        self.dropped = 0
        for sock in self.sockets:
            sock.sendall(OPENINGS[kind])
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        alive = list(self.sockets)
        while not self.stopped.wait(1.0):
            for sock in list(alive):
                try:
                    sock.send(b"a")
                except OSError:
                    alive.remove(sock)
                    self.dropped += 1

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


@contextmanager
def trickling(port: int, kind: str, count: int = SLOW_CLIENTS) -> Iterator[Tricklers]:
    tricklers = Tricklers(port, kind, count)
    try:
        yield tricklers
    finally:
        tricklers.close()


def timed(call: Callable[[], requests.Response]) -> tuple[float, requests.Response | None]:
    """Seconds a request took, and its answer; None when it did not come within five seconds."""
    start = time.monotonic()
    try:
        response = call()
    except requests.RequestException:
        response = None
    return time.monotonic() - start, response


def healthz_and_submit(api: GunicornApi) -> tuple[float, float]:
    """Latencies of ``GET /healthz`` and of a normal submit, each checked to have answered as it should."""
    health_s, health = timed(lambda: requests.get(f"{api.url}/healthz", timeout=5))
    submit_s, submitted = timed(
        lambda: requests.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": ["a", "b"]}, timeout=5)
    )
    assert health is not None and health.status_code == 200, f"/healthz did not answer ({health_s:.1f} s)"
    assert submitted is not None and submitted.status_code == 202, f"the submit did not answer ({submit_s:.1f} s)"
    return health_s, submit_s


def test_the_api_is_started_as_batchery_api_starts_it(default_api):
    argv = api_argv(default_api.settings)
    assert "--worker-class=batchery.app.gunicorn_worker.ThreadWorker" in argv


@pytest.mark.parametrize("kind", ["body", "headers"])
def test_twenty_slow_clients_leave_healthz_and_a_submit_answering_within_a_second(default_api, kind):
    with trickling(default_api.settings.port, kind) as slow:
        time.sleep(2.0)  # every slow client has been taken up by a thread, and is some bytes in
        latencies = [healthz_and_submit(default_api) for _ in range(3)]
        assert slow.dropped == 0, "the default read timeout is far longer than this test"
    print(f"{kind}: healthz, submit latencies (s): {[(round(h, 3), round(s, 3)) for h, s in latencies]}")
    assert max(max(pair) for pair in latencies) < WITHIN_S, latencies


def read_answer(sock: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """The answer on a slow client's socket (it keeps trickling meanwhile), read until the server closes."""
    sock.settimeout(timeout_s)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head, "no answer before the server closed the connection"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("kind", ["body", "headers"])
def test_a_request_that_takes_longer_than_the_read_timeout_to_arrive_is_408_and_let_go(short_api, kind):
    with trickling(short_api.settings.port, kind, count=4) as slow:
        start = time.monotonic()
        status, headers, body = read_answer(slow.sockets[0], timeout_s=SHORT_READ_TIMEOUT_S + 10)
        took_s = time.monotonic() - start
        assert status == 408, body
        assert headers["content-type"].startswith("application/json") and headers["connection"] == "close"
        assert int(headers["content-length"]) == len(body)
        assert orjson.loads(body)["error"]["code"] == "request_timeout"
        assert SHORT_READ_TIMEOUT_S - 0.5 < took_s < SHORT_READ_TIMEOUT_S + 3, took_s


def test_slow_clients_that_keep_trickling_after_they_are_cut_off_stall_nothing(short_api):
    """Being cut off, a slow client is still sending: closing its connection must not wait on it where the
    process accepts new connections."""
    with trickling(short_api.settings.port, "headers"), trickling(short_api.settings.port, "body"):
        deadline = time.monotonic() + SHORT_READ_TIMEOUT_S + 4
        worst = 0.0
        while time.monotonic() < deadline:
            worst = max(worst, *healthz_and_submit(short_api))
            time.sleep(0.2)
    assert worst < WITHIN_S, worst


def test_a_process_whose_threads_are_all_held_leaves_new_connections_to_another(settings, tmp_path):
    """Two processes of one thread each, one of them held by a slow client: every probe must reach the other,
    at once, rather than wait in the held process's queue until the read timeout frees its thread."""
    narrow = dataclasses.replace(settings, api_workers=2, api_threads=1, request_read_timeout_s=3.0)
    api = start_api(narrow, tmp_path / "api.log")
    try:
        with trickling(api.settings.port, "body", count=1):
            time.sleep(0.5)  # the slow client holds one process's only thread
            latencies = [timed(lambda: requests.get(f"{api.url}/healthz", timeout=5))[0] for _ in range(12)]
    finally:
        api.stop()
    assert max(latencies) < WITHIN_S, [round(s, 3) for s in latencies]


def test_a_large_chunked_body_from_a_fast_client_is_taken_whole(http, short_api):
    settings = short_api.settings
    inputs = ["x" * (settings.max_input_chars - 10)] * (settings.max_request_bytes // settings.max_input_chars)
    body = orjson.dumps({"model": "echo", "inputs": inputs})
    assert 0.99 * settings.max_request_bytes < len(body) <= settings.max_request_bytes
    response = requests.post(f"{short_api.url}/v1/jobs", data=in_pieces(body, 64 * 1024), headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text
    assert wait_for_job(http, response.json()["links"]["self"])["total"] == len(inputs)


def test_a_large_body_sent_at_a_steady_pace_has_time_to_arrive(short_api):
    """The read timeout grows with what has arrived, so a large body sent at a steady pace has time to come."""
    fast_enough = short_api.settings.request_min_bytes_per_s * 2
    pieces = (b" " * (fast_enough // 10) for _ in range(40))  # four seconds at twice the minimum rate

    def paced() -> Iterator[bytes]:
        yield b'{"model": "echo", "inputs": [1]}'
        for piece in pieces:
            time.sleep(0.1)
            yield piece

    response = requests.post(f"{short_api.url}/v1/jobs", data=paced(), headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text
