"""API keys: off by default; when configured, every route but the probes and the description needs one."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

from batchery.app import create_app
from batchery.app.keys_file import default_name, parse_line
from batchery.app.tenancy import Tenant
from batchery.cli.redis_server import free_port
from batchery.errors import ConfigError
from tests.conftest import ApiServer

pytestmark = pytest.mark.usefixtures("echo_worker")
KEY = "k-7Fq2-secret-never-logged"
OTHER = "second-key-Zx9"


@pytest.fixture(scope="module")
def keyed_api(settings):
    with ApiServer(dataclasses.replace(settings, api_keys=f"{KEY}, {OTHER}")) as server:
        yield server


def assert_401(response: requests.Response) -> dict:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    return error


def test_keys_are_off_by_default(http, api):
    assert http.get(f"{api.url}/v1/models").status_code == 200


def test_no_key_or_a_wrong_key_is_401(keyed_api):
    url = f"{keyed_api.url}/v1/models"
    assert "Bearer" in assert_401(requests.get(url))["message"]
    assert_401(requests.get(url, headers={"Authorization": "Bearer not-a-key"}))
    assert_401(requests.get(url, headers={"Authorization": f"Basic {KEY}"}))
    assert_401(requests.get(url, headers={"X-API-Key": KEY[:-1]}))
    assert_401(requests.post(f"{keyed_api.url}/v1/jobs", json={"model": "echo", "inputs": [1]}))


def test_either_header_with_any_configured_key_passes(keyed_api):
    assert requests.get(f"{keyed_api.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert requests.get(f"{keyed_api.url}/v1/models", headers={"authorization": f"bearer {OTHER}"}).status_code == 200
    response = requests.post(f"{keyed_api.url}/v1/jobs", json={"model": "echo", "inputs": [1]}, headers={"X-API-Key": OTHER})
    assert response.status_code == 202, response.text


def test_probes_index_and_description_stay_open_metrics_and_unknown_paths_do_not(keyed_api):
    for path in ("/healthz", "/readyz/api", "/openapi.json", "/", "/v1", "/static/jobs.js"):
        assert requests.get(keyed_api.url + path).status_code == 200, path
    readiness = requests.get(f"{keyed_api.url}/readyz")
    assert readiness.status_code == 503 and readiness.json()["error"]["code"] == "no_live_worker", "echo-orphan has no worker"
    assert_401(requests.get(f"{keyed_api.url}/metrics"))
    assert_401(requests.get(f"{keyed_api.url}/v2/nothing-here"))
    assert requests.get(f"{keyed_api.url}/v2/nothing-here", headers={"X-API-Key": KEY}).status_code == 404


def test_a_keys_file_is_reread_when_it_changes(settings_with, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# rotated monthly\nold-key\n\n")
    with ApiServer(settings_with(api_keys_file=str(keys_file))) as server:
        url = f"{server.url}/v1/models"
        assert requests.get(url, headers={"X-API-Key": "old-key"}).status_code == 200
        keys_file.write_text("old-key\nnew-key-2\n")
        assert requests.get(url, headers={"X-API-Key": "new-key-2"}).status_code == 200
        keys_file.write_text("new-key-2\n")
        assert_401(requests.get(url, headers={"X-API-Key": "old-key"}))
        assert_401(requests.get(url, headers={"X-API-Key": "# rotated monthly"}))


def test_a_missing_keys_file_fails_at_start(settings_with, tmp_path):
    with pytest.raises(ConfigError, match="API_KEYS_FILE"):
        create_app(settings_with(api_keys_file=str(tmp_path / "absent")))


def test_keys_are_never_logged_nor_echoed(keyed_api, caplog):
    caplog.set_level(logging.DEBUG)
    bodies = [
        requests.get(f"{keyed_api.url}/v1/models", headers={"Authorization": f"Bearer {KEY}x"}).text,
        requests.get(f"{keyed_api.url}/v1/jobs/nope", headers={"X-API-Key": KEY}).text,
        requests.get(f"{keyed_api.url}/v1/models", headers={"X-API-Key": KEY + "x"}).text,
    ]
    assert "unknown API key" in caplog.text
    assert KEY not in caplog.text and not any(KEY in body for body in bodies)


@pytest.mark.slow
def test_gunicorn_access_log_never_holds_the_key(settings, tmp_path):
    port = free_port()
    env = {**os.environ, **settings.as_env(), "BATCHERY_API_KEYS": KEY, "BATCHERY_PORT": str(port), "BATCHERY_API_WORKERS": "1"}
    log = tmp_path / "api.log"
    process = subprocess.Popen([sys.executable, "-m", "batchery", "api"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, process)
        assert requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert requests.get(f"{url}/v1/models", headers={"X-API-Key": KEY}).status_code == 200
        assert requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}-wrong"}).status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    text = log.read_text()
    assert text.count('"message": "GET /v1/models 200') == 2 and '"message": "GET /v1/models 401' in text, text
    assert KEY not in text


def wait_up(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the API exited"
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError("the API did not come up")


def test_a_keys_file_line_carries_the_keys_settings():
    assert parse_line("  # a comment") is None and parse_line("") is None
    key, tenant = parse_line("k-plain-1")
    assert key == "k-plain-1" and tenant == Tenant(name=default_name("k-plain-1"))
    assert tenant.tier == "interactive" and not tenant.limits and not tenant.admin
    assert tenant.name.startswith("key-") and "plain" not in tenant.name
    line = "k-a\tname=team-a  tier=standard items_per_minute=100000 items_in_flight=500000 admin=false  # ok"
    assert parse_line(line) == ("k-a", Tenant("team-a", "standard", 100_000, 500_000, False))
    assert parse_line("k-b tier=2 admin=true") == ("k-b", Tenant(default_name("k-b"), "bulk", admin=True))


@pytest.mark.parametrize("line, problem", [
    ("k-c name=a/b", "name="),
    ("k-c tier=urgent", "unknown tier"),
    ("k-c items_per_minute=0", "items_per_minute="),
    ("k-c items_in_flight=lots", "items_in_flight="),
    ("k-c admin=maybe", "admin="),
    ("k-c name=a name=b", "twice"),
    ("k-c items_per_second=5", "word 2 is not setting=value"),
    ("k-c secret-second-half", "word 2 is not setting=value"),
])
def test_a_line_that_cannot_be_read_is_named_without_its_key(line, problem):
    with pytest.raises(ValueError, match=re.escape(problem)) as raised:
        parse_line(line)
    assert "k-c" not in str(raised.value) and "secret-second-half" not in str(raised.value)


def test_a_keys_file_with_a_bad_line_fails_at_start_naming_the_line(settings_with, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("good-key name=good\nbad-key-Qx7 tier=urgent\n")
    with pytest.raises(ConfigError, match="line 2: tier=") as raised:
        create_app(settings_with(api_keys_file=str(keys_file)))
    assert "bad-key-Qx7" not in str(raised.value)


def test_a_bad_line_written_later_refuses_its_key_only_and_is_logged_by_number(settings_with, tmp_path, caplog):
    keys_file = tmp_path / "keys"
    keys_file.write_text("first-key-1 name=first\nsecond-key-2 name=second\n")
    with ApiServer(settings_with(api_keys_file=str(keys_file))) as server:
        url = f"{server.url}/v1/models"
        assert requests.get(url, headers={"X-API-Key": "second-key-2"}).status_code == 200
        keys_file.write_text("first-key-1 name=first\nsecond-key-2 name=second items_per_minute=lots\n")
        assert_401(requests.get(url, headers={"X-API-Key": "second-key-2"}))
        assert requests.get(url, headers={"X-API-Key": "first-key-1"}).status_code == 200
    assert "line 2: items_per_minute='lots'" in caplog.text and "second-key-2" not in caplog.text


def test_a_keys_settings_are_reread_with_the_file(settings_with, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("moving-key name=mover\n")
    job = {"model": "echo", "inputs": [1], "tier": "standard"}
    with ApiServer(settings_with(api_keys_file=str(keys_file))) as server:
        headers = {"X-API-Key": "moving-key"}
        assert requests.post(f"{server.url}/v1/jobs", json=job, headers=headers).status_code == 202
        keys_file.write_text("moving-key name=mover tier=bulk\n")
        refused = requests.post(f"{server.url}/v1/jobs", json=job, headers=headers)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "tier_not_allowed"


def test_the_access_log_names_the_key_never_holding_it(settings_with, tmp_path, caplog):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{KEY} name=team-log\n")
    caplog.set_level(logging.INFO, logger="batchery.api")
    with ApiServer(settings_with(api_keys_file=str(keys_file))) as server:
        assert requests.get(f"{server.url}/v1/models", headers={"X-API-Key": KEY}).status_code == 200
    lines = [r for r in caplog.records if r.name == "batchery.api" and r.getMessage().startswith("GET /v1/models 200")]
    assert lines and lines[-1].key_name == "team-log" and lines[-1].getMessage().endswith("key team-log")
    assert KEY not in caplog.text
