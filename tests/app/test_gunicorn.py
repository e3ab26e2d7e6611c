"""Bad input under gunicorn (`batchery api`): a chunked body over the byte limit is refused whole, as under
werkzeug, and what gunicorn answers itself is the same JSON error document as the app's."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path
from typing import Iterator

import orjson
import pytest
import requests

from batchery.cli.redis_server import free_port
from batchery.settings import Settings
from tests.conftest import GunicornApi
from tests.helpers import error_of, in_pieces, ndjson_numbers, wait_for_job

pytestmark = [pytest.mark.usefixtures("echo_worker"), pytest.mark.slow]
NDJSON = {"content-type": "application/x-ndjson"}
JSON = {"content-type": "application/json"}
SMALL_LIMIT = 4096


@pytest.fixture(scope="module")
def gunicorn_api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornApi]:
    mine = dataclasses.replace(settings, port=free_port(), api_workers=1, api_threads=2, max_request_bytes=SMALL_LIMIT)
    api = GunicornApi(mine, tmp_path_factory.mktemp("gunicorn") / "api.log").start()
    yield api
    api.stop()


def raw_exchange(api: GunicornApi, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP client would, and read the answer to the end (gunicorn closes after its own errors)."""
    with socket.create_connection(("127.0.0.1", api.settings.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def error_document(headers: dict[str, str], body: bytes) -> dict[str, str]:
    """The error of a raw answer, checked to be the whole body and the error document."""
    assert headers["content-type"].startswith("application/json"), (headers, body)
    assert int(headers["content-length"]) == len(body), "one answer, and nothing after it"
    error = orjson.loads(body)["error"]
    assert set(error) == {"code", "message"} and error["message"], error
    return error


# 1. A chunked body over the byte limit


@pytest.mark.parametrize("kind", ["ndjson", "json"])
def test_a_chunked_body_over_the_byte_limit_is_413_and_queues_nothing(gunicorn_api, store, kind):
    before = store.recent(1)
    if kind == "ndjson":
        url, headers, body = f"{gunicorn_api.url}/v1/jobs?model=echo", NDJSON, ndjson_numbers(SMALL_LIMIT * 2)
    else:
        url, headers = f"{gunicorn_api.url}/v1/jobs", JSON
        body = orjson.dumps({"model": "echo", "inputs": list(range(SMALL_LIMIT))})
    response = requests.post(url, data=in_pieces(body), headers=headers)
    assert str(SMALL_LIMIT) in error_of(response, 413, "payload_too_large")
    assert store.recent(1) == before, "nothing may be queued"


def test_a_chunked_body_of_exactly_the_byte_limit_is_taken_whole(http, gunicorn_api):
    body = ndjson_numbers(SMALL_LIMIT)
    response = requests.post(f"{gunicorn_api.url}/v1/jobs?model=echo", data=in_pieces(body), headers=NDJSON)
    assert response.status_code == 202, response.text
    wait_for_job(http, response.json()["links"]["self"])
    results = http.get(response.json()["links"]["results"]).json()["results"]
    assert [r["output"] for r in results] == [int(line) for line in body.split()]


def test_a_malformed_chunk_is_400_and_queues_nothing(gunicorn_api, store):
    before = store.recent(1)
    request = b"POST /v1/jobs HTTP/1.1\r\nHost: a.example\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    status, headers, body = raw_exchange(gunicorn_api, request)
    assert status == 400 and "chunk" in error_document(headers, body)["message"]
    assert store.recent(1) == before


# 5. What gunicorn answers itself, and hosts


def test_a_request_line_over_gunicorns_limit_is_414_as_json(gunicorn_api):
    response = requests.get(f"{gunicorn_api.url}/v1/jobs/{'x' * 8000}")
    assert "Request Line" in error_of(response, 414, "uri_too_long")


@pytest.mark.parametrize(
    "request_bytes, status, code",
    [
        (b"GET /healthz HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", 400, "bad_request"),
        (b"NOT A REQUEST\r\n\r\n", 400, "bad_request"),
        (b"GET /healthz HTTP/1.1\r\nHost: a.example\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n", 431, "request_header_fields_too_large"),
    ],
    ids=["duplicate-host", "request-line", "header-too-large"],
)
def test_what_gunicorn_refuses_itself_is_the_error_document(gunicorn_api, request_bytes, status, code):
    answer_status, headers, body = raw_exchange(gunicorn_api, request_bytes)
    assert answer_status == status, body
    assert error_document(headers, body)["code"] == code
    assert logged(gunicorn_api, "Invalid request from ip="), "gunicorn still logs why it refused"


def logged(api: GunicornApi, text: str, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while text not in Path(api.log_path).read_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_malformed_host_is_400_and_queues_nothing(gunicorn_api, store):
    before = store.recent(1)
    response = requests.post(f"{gunicorn_api.url}/v1/jobs", json={"model": "echo", "inputs": [1]}, headers={"Host": "evil.example/x?"})
    assert "Host" in error_of(response, 400, "bad_request")
    assert store.recent(1) == before
