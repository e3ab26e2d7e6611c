"""Bad input gets a clear error, and nothing is changed or lost on the way in (the app under werkzeug)."""

from __future__ import annotations

import http.client
import socket
from typing import Iterator

import orjson
import pytest
import requests

from tests.conftest import ApiServer
from tests.helpers import error_of, in_pieces, ndjson_numbers, wait_for_job

pytestmark = pytest.mark.usefixtures("echo_worker")
NDJSON = {"content-type": "application/x-ndjson"}
JSON = {"content-type": "application/json"}
SMALL_LIMIT = 4096


@pytest.fixture
def small_api(settings_with) -> Iterator[ApiServer]:
    with ApiServer(settings_with(max_request_bytes=SMALL_LIMIT)) as server:
        yield server


# 1. A chunked body over the byte limit


@pytest.mark.parametrize("kind", ["ndjson", "json"])
def test_a_chunked_body_over_the_byte_limit_is_413_and_queues_nothing(small_api, store, kind):
    before = store.recent(1)
    if kind == "ndjson":
        url, headers, body = f"{small_api.url}/v1/jobs?model=echo", NDJSON, ndjson_numbers(SMALL_LIMIT * 2)
    else:
        url, headers = f"{small_api.url}/v1/jobs", JSON
        body = orjson.dumps({"model": "echo", "inputs": list(range(SMALL_LIMIT))})
    response = requests.post(url, data=in_pieces(body), headers=headers)
    assert str(SMALL_LIMIT) in error_of(response, 413, "payload_too_large")
    assert store.recent(1) == before, "nothing may be queued"


def test_a_chunked_body_of_exactly_the_byte_limit_is_taken_whole(http, small_api):
    body = ndjson_numbers(SMALL_LIMIT)
    response = requests.post(f"{small_api.url}/v1/jobs?model=echo", data=in_pieces(body), headers=NDJSON)
    assert response.status_code == 202, response.text
    wait_for_job(http, response.json()["links"]["self"])
    results = http.get(response.json()["links"]["results"]).json()["results"]
    assert [r["output"] for r in results] == [int(line) for line in body.split()]


def test_a_malformed_chunk_is_400_and_queues_nothing(api, store):
    before = store.recent(1)
    request = b"POST /v1/jobs HTTP/1.1\r\nHost: a.example\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = orjson.loads(response.read())
    assert response.status == 400 and body["error"]["code"] == "bad_request"
    assert store.recent(1) == before
