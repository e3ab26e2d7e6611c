"""Every error code the API promises, each from a real malformed request over HTTP."""

from __future__ import annotations

import pytest

from batchery.cli.redis_server import free_port
from tests.conftest import ApiServer
from tests.helpers import error_of

pytestmark = pytest.mark.usefixtures("echo_worker")


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"inputs": ["a"]}', "'model'"),
        (b'{"model": "echo"}', "'inputs'"),
        (b'{"model": "echo", "inputs": []}', "'inputs'"),
        (b'{"model": "echo", "inputs": "abc"}', "'inputs'"),
        (b'{"model": "echo", "inputs": ["a"], "metadata": 3}', "'metadata'"),
    ],
)
def test_malformed_json_is_400(http, api, body, fragment):
    message = error_of(http.post(f"{api.url}/v1/jobs", data=body, headers={"content-type": "application/json"}), 400, "bad_request")
    assert fragment in message


def test_malformed_ndjson_names_the_line(http, api):
    response = http.post(f"{api.url}/v1/jobs?model=echo", data=b'"a"\n{oops\n', headers={"content-type": "application/x-ndjson"})
    assert "line 2" in error_of(response, 400, "bad_request")
    response = http.post(f"{api.url}/v1/jobs?model=echo", data=b'"a"\n\n"b"', headers={"content-type": "application/x-ndjson"})
    assert "line 2 is empty" in error_of(response, 400, "bad_request")


def test_ndjson_without_model_is_400(http, api):
    response = http.post(f"{api.url}/v1/jobs", data=b'"a"\n', headers={"content-type": "application/x-ndjson"})
    assert "?model=" in error_of(response, 400, "bad_request")


def test_bad_paging_arguments_are_400(http, api):
    job = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": [1]}).json()
    error_of(http.get(job["links"]["results"], params={"limit": "x"}), 400, "bad_request")
    error_of(http.get(job["links"]["results"], params={"limit": 0}), 400, "bad_request")
    error_of(http.get(job["links"]["results"], params={"offset": -1}), 400, "bad_request")


def test_other_content_types_are_415(http, api):
    error_of(http.post(f"{api.url}/v1/jobs", data="model=echo", headers={"content-type": "text/plain"}), 415, "unsupported_media_type")


def test_unknown_job_model_version_and_route_are_404(http, api):
    error_of(http.get(f"{api.url}/v1/jobs/0123456789abcdef"), 404, "job_not_found")
    error_of(http.get(f"{api.url}/v1/jobs/0123456789abcdef/results"), 404, "job_not_found")
    assert "known models" in error_of(http.post(f"{api.url}/v1/jobs", json={"model": "nope", "inputs": ["a"]}), 404, "model_not_found")
    assert "version" in error_of(http.post(f"{api.url}/v1/jobs", json={"model": "echo@9", "inputs": ["a"]}), 404, "model_not_found")
    error_of(http.post(f"{api.url}/v1/models/nope/predict", json={"inputs": ["a"]}), 404, "model_not_found")
    error_of(http.get(f"{api.url}/v2/whatever"), 404, "not_found")


def test_size_limits_are_413(http, api, settings):
    too_many = [0] * (settings.max_items_per_job + 1)
    assert "limit" in error_of(http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": too_many}), 413, "payload_too_large")
    too_long = "x" * (settings.max_input_chars + 1)
    assert "inputs[1]" in error_of(http.post(f"{api.url}/v1/jobs", json={"model": "minilm", "inputs": ["ok", too_long]}), 413, "payload_too_large")
    too_big = b'{"model": "echo", "inputs": ["' + b"y" * settings.max_request_bytes + b'"]}'
    error_of(http.post(f"{api.url}/v1/jobs", data=too_big, headers={"content-type": "application/json"}), 413, "request_entity_too_large")


@pytest.mark.parametrize("bad", [3, None, ["a"], {"text": "a"}])
def test_inputs_that_do_not_fit_the_model_are_422(http, api, bad):
    message = error_of(http.post(f"{api.url}/v1/jobs", json={"model": "minilm", "inputs": ["fine", bad]}), 422, "invalid_input")
    assert "inputs[1]" in message and "text" in message


def test_no_live_worker_is_503_and_queues_nothing(http, api, store):
    before = store.recent(1)
    error_of(http.post(f"{api.url}/v1/jobs", json={"model": "echo-orphan", "inputs": [1]}), 503, "no_live_worker")
    error_of(http.post(f"{api.url}/v1/models/echo-orphan/predict", json={"inputs": [1]}), 503, "no_live_worker")
    assert store.recent(1) == before


def test_redis_down_is_503(http, settings_with):
    dead = settings_with(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with ApiServer(dead) as down:
        error_of(http.post(f"{down.url}/v1/jobs", json={"model": "echo", "inputs": [1]}), 503, "unavailable")
        error_of(http.get(f"{down.url}/v1/jobs/{'ab' * 16}"), 503, "unavailable")
        error_of(http.get(f"{down.url}/readyz"), 503, "redis_unavailable")
        assert http.get(f"{down.url}/healthz").status_code == 200


def test_a_wrong_method_is_405_with_the_allowed_methods(http, api):
    response = http.put(f"{api.url}/v1/jobs")
    error_of(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
    assert set(http.patch(f"{api.url}/v1/jobs/abc").headers["Allow"].split(", ")) >= {"GET", "DELETE"}


def test_a_query_model_that_contradicts_the_json_body_is_400(http, api):
    body = {"model": "echo", "inputs": [1]}
    assert "different models" in error_of(http.post(f"{api.url}/v1/jobs?model=echo-slow", json=body), 400, "bad_request")
    error_of(http.post(f"{api.url}/v1/jobs?model=null", json=body), 404, "model_not_found")
    assert http.post(f"{api.url}/v1/jobs?model=echo@1", json=body).status_code == 202


def test_a_query_cache_that_contradicts_the_json_body_is_400(http, api):
    body = {"model": "echo", "inputs": [1], "cache": False}
    assert "contradicts" in error_of(http.post(f"{api.url}/v1/jobs?cache=true", json=body), 400, "bad_request")
    error_of(http.post(f"{api.url}/v1/jobs?cache=maybe", json=body), 400, "bad_request")
    assert http.post(f"{api.url}/v1/jobs?cache=0", json=body).status_code == 202


def test_a_job_the_broker_refuses_is_503_and_leaves_no_claim_for_others_to_wait_on(http, settings_with, redis_client, echo_worker):
    from batchery.cache import cache_key
    from batchery.models.registry import load_registry

    no_broker = settings_with(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    value = f"refused-{free_port()}"
    with ApiServer(no_broker) as api:
        error_of(http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": [value]}), 503, "unavailable")
    spec = load_registry(no_broker.models_file).get("echo")
    assert not redis_client.exists(f"batchery:cache:{cache_key(spec, value)}:inflight")
