"""``GET /v1/jobs``: newest first, filtered by status and model, paged, and a key's own jobs only."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import requests

from batchery.app import job_list
from tests.conftest import ApiServer
from tests.helpers import error_of, wait_for_job

pytestmark = pytest.mark.usefixtures("echo_worker")


@pytest.fixture(scope="module")
def tenants(settings, tmp_path_factory):
    """Two keys whose names no other test uses, so their indexes hold this module's jobs alone, and an admin."""
    suffix = uuid.uuid4().hex[:8]
    names = {"mine": f"lister-{suffix}", "theirs": f"other-{suffix}", "ops": f"ops-{suffix}"}
    keys_file = tmp_path_factory.mktemp("job-list") / "keys"
    keys_file.write_text(
        f"key-mine-{suffix} name={names['mine']}\nkey-theirs-{suffix} name={names['theirs']}\n"
        f"key-ops-{suffix} name={names['ops']} admin=true\n"
    )
    headers = {who: {"X-API-Key": f"key-{who}-{suffix}"} for who in names}
    with ApiServer(dataclasses.replace(settings, api_keys_file=str(keys_file))) as server:
        yield server, headers, names


def submit(api, headers: dict, model: str = "echo", items: int = 2) -> dict:
    inputs = [f"{uuid.uuid4().hex}-{i}" for i in range(items)]
    answer = requests.post(f"{api.url}/v1/jobs", json={"model": model, "inputs": inputs}, headers=headers)
    assert answer.status_code == 202, answer.text
    return answer.json()


def listed(api, headers: dict, **query) -> dict:
    answer = requests.get(f"{api.url}/v1/jobs", params=query, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_key_lists_its_own_jobs_newest_first_filtered_and_paged(tenants):
    api, headers, names = tenants
    session = requests.Session()
    session.headers.update(headers["mine"])
    done = [submit(api, headers["mine"]) for _ in range(5)]
    for job in done:
        wait_for_job(session, job["links"]["self"])
    slow = submit(api, headers["mine"], model="echo-slow", items=2_000)
    session.delete(slow["links"]["self"])
    theirs = submit(api, headers["theirs"])

    everything = listed(api, headers["mine"])
    ids = [job["id"] for job in everything["jobs"]]
    assert ids == [slow["id"], *reversed([job["id"] for job in done])] and everything["next"] is None
    assert all(job["owner"] == names["mine"] for job in everything["jobs"]) and "links" in everything["jobs"][0]
    assert [j["id"] for j in listed(api, headers["mine"], status="cancelled")["jobs"]] == [slow["id"]]
    assert [j["id"] for j in listed(api, headers["mine"], model="echo-slow")["jobs"]] == [slow["id"]]
    assert [j["id"] for j in listed(api, headers["mine"], model="echo@1", status="completed,running")["jobs"]] == ids[1:]
    assert listed(api, headers["mine"], model="echo@2")["jobs"] == []

    paged, url = [], f"{api.url}/v1/jobs?limit=2&model=echo"
    while url:
        page = session.get(url).json()
        assert len(page["jobs"]) <= 2
        paged += [job["id"] for job in page["jobs"]]
        url = page["next"]
    assert paged == ids[1:], "pages in order, nothing twice, nothing left out"

    admin = [job["id"] for job in listed(api, headers["ops"], limit=200)["jobs"]]
    assert theirs["id"] in admin and slow["id"] in admin, "an admin sees every key's jobs"
    assert theirs["id"] not in ids


@pytest.mark.parametrize("query", ["status=done", "status=", "status=completed,,failed", "cursor=12_zz", "model=", "limit=0"])
def test_bad_queries_are_400(tenants, query):
    api, headers, _ = tenants
    error_of(requests.get(f"{api.url}/v1/jobs?{query}", headers=headers["mine"]), 400, "bad_request")


def test_a_filter_that_matches_little_reads_a_bounded_part_of_the_index_per_page(tenants, store, monkeypatch):
    """A page stops after SCAN_MAX index entries, matches or not, and its ``next`` goes on from there."""
    api, headers, names = tenants
    name = names["theirs"]
    for _ in range(120):
        store.create(uuid.uuid4().hex, {"model": "echo", "version": "1", "total": 1, "owner": name})
    monkeypatch.setattr(job_list, "SCAN_MAX", 50)
    monkeypatch.setattr(job_list, "SCAN_PAGE", 20)
    pages, url = 0, f"{api.url}/v1/jobs?status=failed"
    while url:
        page = requests.get(url, headers=headers["theirs"]).json()
        assert page["jobs"] == []
        url, pages = page["next"], pages + 1
    assert pages == 3, "121 jobs in pages of at most 50 looked at"
