"""Bad input gets a clear error, and nothing is changed or lost on the way in (the app under werkzeug)."""

from __future__ import annotations

import http.client
import socket
import uuid
from typing import Iterator

import orjson
import pytest
import requests

from batchery.app.requests import has_long_digits
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


# 2. Depth


def nested(depth: int) -> bytes:
    """A number inside ``depth`` lists, as JSON text: orjson itself cannot write one deeper than 254."""
    return b"[" * depth + b"1" + b"]" * depth


@pytest.mark.parametrize("depth", [33, 300, 1000])
def test_inputs_nested_deeper_than_the_limit_are_422_naming_the_index_and_queue_nothing(http, api, store, settings, depth):
    assert settings.max_input_depth == 32
    before = store.recent(1)
    body = b'{"model": "echo", "inputs": [%s, %s]}' % (nested(32), nested(depth))
    message = error_of(http.post(f"{api.url}/v1/jobs", data=body, headers=JSON), 422, "invalid_input")
    assert "inputs[1]" in message and "32" in message
    message = error_of(http.post(f"{api.url}/v1/jobs?model=echo", data=b"1\n" + nested(depth), headers=NDJSON), 422, "invalid_input")
    assert "inputs[1]" in message
    body = b'{"inputs": [%s]}' % nested(depth)
    error_of(http.post(f"{api.url}/v1/models/echo/predict", data=body, headers=JSON), 422, "invalid_input")
    assert store.recent(1) == before, "nothing may be queued"


def test_inputs_as_deep_as_the_limit_are_taken(http, api):
    deep = {"a": orjson.loads(nested(31))}
    response = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": [deep]})
    assert response.status_code == 202, response.text
    wait_for_job(http, response.json()["links"]["self"])
    assert http.get(response.json()["links"]["results"]).json()["results"] == [{"index": 0, "output": deep}]


@pytest.mark.parametrize("depth", [33, 300])
def test_metadata_nested_deeper_than_the_limit_is_400_and_queues_nothing(http, api, store, depth):
    before = store.recent(1)
    body = b'{"model": "echo", "inputs": [1], "metadata": {"deep": %s}}' % nested(depth)
    assert "'metadata'" in error_of(http.post(f"{api.url}/v1/jobs", data=body, headers=JSON), 400, "bad_request")
    assert store.recent(1) == before


# 3. Integers beyond 64 bits


@pytest.mark.parametrize("wide", [2**64, -(2**63) - 1, 10**30, -(10**300)])
def test_integers_beyond_64_bits_are_422_naming_the_index(http, api, store, wide):
    before = store.recent(1)
    body = b'{"model": "echo", "inputs": [1, {"n": [%d]}]}' % wide
    message = error_of(http.post(f"{api.url}/v1/jobs", data=body, headers=JSON), 422, "invalid_input")
    assert "inputs[1]" in message and "64 bits" in message
    message = error_of(http.post(f"{api.url}/v1/jobs?model=echo", data=b"1\n2\n%d\n" % wide, headers=NDJSON), 422, "invalid_input")
    assert "inputs[2]" in message
    body = b'{"inputs": [%d]}' % wide
    assert "inputs[0]" in error_of(http.post(f"{api.url}/v1/models/echo/predict", data=body, headers=JSON), 422, "invalid_input")
    body = b'{"model": "echo", "inputs": [1], "metadata": {"n": %d}}' % wide
    assert "'metadata'" in error_of(http.post(f"{api.url}/v1/jobs", data=body, headers=JSON), 400, "bad_request")
    assert store.recent(1) == before


@pytest.mark.parametrize(
    "data, long",
    [
        (b"[" + b"9" * 18 + b"]", False),
        (b"[" + b"9" * 19 + b"]", True),
        (b"[-" + b"1" * 25 + b".5]", True),
        (b'["' + b"1234567890" * 3 + b'"]', True),
        (b"[123456789, 1234567890]" * 1000, False),
        (b"[12345678901234567.89e3]", False),
        ("[\"\u0661\u0662\u0663\"]".encode() * 20, False),
        (b"", False),
    ],
)
def test_a_run_of_19_digits_is_found_wherever_it_is(data, long):
    assert has_long_digits(data) is long


def test_integers_within_64_bits_and_long_digit_strings_come_back_exactly(http, api):
    inputs = [2**64 - 1, -(2**63), "123456789012345678901234567890", {"id": 1234567890123456789}, 1.5e300]
    body = orjson.dumps({"model": "echo", "inputs": inputs, "cache": False})
    response = http.post(f"{api.url}/v1/jobs", data=body, headers=JSON)
    assert response.status_code == 202, response.text
    wait_for_job(http, response.json()["links"]["self"])
    results = http.get(response.json()["links"]["results"]).json()["results"]
    assert [r["output"] for r in results] == inputs


def test_a_body_too_deep_to_read_exactly_is_400_and_queues_nothing(http, api, store):
    before = store.recent(1)
    body = b'{"model": "echo", "inputs": [12345678901234567890], "deep": %s}' % nested(1000)
    assert "nested too deeply" in error_of(http.post(f"{api.url}/v1/jobs", data=body, headers=JSON), 400, "bad_request")
    assert store.recent(1) == before


# 4. Job ids


def test_job_ids_not_of_the_issued_form_are_404_and_reach_no_other_key(http, api, store, redis_client):
    job = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": [1, 2]}).json()
    wait_for_job(http, job["links"]["self"])
    job_id = job["id"]
    keys_before = sorted(redis_client.keys(f"batchery:job:{job_id}*"))
    for other in (f"{job_id}:out:0", f"{job_id}:done", f"{job_id}:owns:0", job_id.upper(), job_id[:-1], job_id + "0",
                  "nope", "x" * 8000, uuid.uuid4().hex + "%0A"):
        for method, path in (("GET", ""), ("GET", "/results"), ("DELETE", "")):
            response = http.request(method, f"{api.url}/v1/jobs/{other}{path}")
            error_of(response, 404, "job_not_found")
    assert sorted(redis_client.keys(f"batchery:job:{job_id}*")) == keys_before
    assert http.get(job["links"]["self"]).json()["status"] == "completed"
    assert [r["output"] for r in http.get(job["links"]["results"]).json()["results"]] == [1, 2]


# 5. Models, metadata, hosts


def test_a_model_with_an_empty_version_is_404(http, api):
    assert "version" in error_of(http.post(f"{api.url}/v1/jobs", json={"model": "minilm@", "inputs": ["a"]}), 404, "model_not_found")
    error_of(http.post(f"{api.url}/v1/jobs?model=echo@", data=b"1\n", headers=NDJSON), 404, "model_not_found")
    error_of(http.get(f"{api.url}/v1/models/minilm@"), 404, "model_not_found")
    error_of(http.post(f"{api.url}/v1/models/echo@/predict", json={"inputs": [1]}), 404, "model_not_found")


def test_metadata_over_its_byte_limit_is_413_and_queues_nothing(http, api, store, settings):
    assert settings.max_metadata_bytes == 16 * 1024
    before = store.recent(1)
    metadata = {"note": "m" * settings.max_metadata_bytes}
    message = error_of(http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": [1], "metadata": metadata}), 413, "payload_too_large")
    assert "'metadata'" in message and str(settings.max_metadata_bytes) in message
    assert store.recent(1) == before
    metadata = {"note": "m" * (settings.max_metadata_bytes - 20)}
    assert len(orjson.dumps(metadata)) <= settings.max_metadata_bytes
    assert http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": [1], "metadata": metadata}).status_code == 202


def test_links_use_the_public_url_when_it_is_set(http, settings_with):
    with ApiServer(settings_with(public_url="https://batch.example.com/inference/")) as api:
        response = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": [f"public-{i}" for i in range(5)]}, headers={"Host": "evil.example"})
        assert response.status_code == 202, response.text
        job = response.json()
        base = f"https://batch.example.com/inference/v1/jobs/{job['id']}"
        assert response.headers["Location"] == job["links"]["self"] == base
        assert job["links"]["results"] == base + "/results"
        local = f"{api.url}/v1/jobs/{job['id']}"
        assert http.get(local).json()["links"]["self"] == base
        wait_for_job(http, local)
        assert http.get(local + "/results", params={"limit": 2}).json()["next"] == base + "/results?offset=2&limit=2"
        assert http.get(f"{api.url}/v1").json()["links"]["models"] == "https://batch.example.com/inference/v1/models"


@pytest.mark.parametrize("host", ["evil.example/phish?x=", "a b", "example.com:port", "exa\\mple.com", "@evil.example", "[::1"])
def test_a_malformed_host_is_400_and_queues_nothing(http, api, store, host):
    before = store.recent(1)
    response = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": [1]}, headers={"Host": host})
    assert "Host" in error_of(response, 400, "bad_request")
    assert store.recent(1) == before


@pytest.mark.parametrize("host", ["batch.example.com", "batch.example.com:8443", "10.0.0.7:8080", "[::1]:8000", "localhost"])
def test_a_well_formed_host_still_makes_the_links(http, api, host):
    response = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": [1]}, headers={"Host": host})
    assert response.status_code == 202, response.text
    assert response.headers["Location"].startswith(f"http://{host}/v1/jobs/")
