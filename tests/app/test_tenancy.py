"""One service, many keys: a job is its submitter's, tiers have a ceiling per key. Real HTTP, Redis and worker."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import requests

from batchery import keys
from batchery.store.dead_letters import DeadLetter, DeadLetters
from batchery.store.codec import FRAMES
from tests.conftest import ApiServer
from tests.helpers import error_of, wait_for_job

pytestmark = pytest.mark.usefixtures("echo_worker")
KEYS_FILE = """\
# tenants
alice-key-1a2b name=alice
bob-key-3c4d   name=bob
ops-key-5e6f   name=ops admin=true
std-key-7a8b   name=std tier=standard
bulk-key-9c0d  name=bulky tier=2
"""
ENV_KEY = "env-key-operator-0f1e"
ALICE, BOB, OPS, STD, BULKY = (
    {"X-API-Key": key} for key in ("alice-key-1a2b", "bob-key-3c4d", "ops-key-5e6f", "std-key-7a8b", "bulk-key-9c0d")
)


@pytest.fixture(scope="module")
def keyed(settings, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("tenancy") / "keys"
    keys_file.write_text(KEYS_FILE)
    with ApiServer(dataclasses.replace(settings, api_keys_file=str(keys_file), api_keys=ENV_KEY)) as server:
        yield server


def submit(api, headers: dict, items: int = 3, model: str = "echo", **extra) -> dict:
    inputs = [f"{uuid.uuid4().hex}-{i}" for i in range(items)]  # no other job's: the cache stays out of it
    response = requests.post(f"{api.url}/v1/jobs", json={"model": model, "inputs": inputs, **extra}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def test_a_job_is_its_submitters_and_any_other_key_is_told_it_does_not_exist(keyed):
    job = submit(keyed, ALICE, items=64, model="echo-slow")
    never = f"{keyed.url}/v1/jobs/{uuid.uuid4().hex}"
    for url, accept in ((job["links"]["self"], None), (job["links"]["results"], None),
                        (job["links"]["results"], "application/x-ndjson"), (job["links"]["results"], FRAMES)):
        headers = {**BOB, **({"Accept": accept} if accept else {})}
        hidden = error_of(requests.get(url, headers=headers), 404, "job_not_found")
        absent = error_of(requests.get(url.replace(job["links"]["self"], never), headers=headers), 404, "job_not_found")
        assert hidden.replace(job["id"], "ID") == absent.replace(never.rsplit("/", 1)[1], "ID")
    error_of(requests.delete(job["links"]["self"], headers=BOB), 404, "job_not_found")
    mine = requests.get(job["links"]["self"], headers=ALICE).json()
    assert mine["owner"] == "alice" and mine["status"] != "cancelled"
    session = requests.Session()
    session.headers.update(ALICE)
    assert wait_for_job(session, job["links"]["self"])["status"] == "completed"
    assert len(session.get(job["links"]["results"]).json()["results"]) == 64


def test_an_admin_and_the_operators_keys_see_and_cancel_every_job(keyed):
    job = submit(keyed, ALICE, items=2000, model="echo-slow")
    for admin in (OPS, {"Authorization": f"Bearer {ENV_KEY}"}):
        seen = requests.get(job["links"]["self"], headers=admin)
        assert seen.status_code == 200 and seen.json()["owner"] == "alice"
    cancelled = requests.delete(job["links"]["self"], headers=OPS)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert requests.get(job["links"]["self"], headers=ALICE).json()["status"] == "cancelled"
    env_job = submit(keyed, {"X-API-Key": ENV_KEY})
    assert requests.get(env_job["links"]["self"], headers=OPS).json()["owner"].startswith("key-")
    error_of(requests.get(env_job["links"]["self"], headers=ALICE), 404, "job_not_found")


def test_idempotency_keys_are_per_api_key(keyed):
    shared = f"shared-{uuid.uuid4().hex}"
    first = {h["X-API-Key"]: requests.post(f"{keyed.url}/v1/jobs", json={"model": "echo", "inputs": [1]},
                                           headers={**h, "Idempotency-Key": shared}) for h in (ALICE, BOB)}
    assert all(r.status_code == 202 and "Idempotent-Replayed" not in r.headers for r in first.values())
    alice_id, bob_id = (first[h["X-API-Key"]].json()["id"] for h in (ALICE, BOB))
    assert alice_id != bob_id
    again = requests.post(f"{keyed.url}/v1/jobs", json={"model": "echo", "inputs": [1]}, headers={**BOB, "Idempotency-Key": shared})
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json()["id"] == bob_id


def test_the_overview_lists_a_keys_own_jobs_and_an_admin_everyones(keyed):
    alices, bobs = submit(keyed, ALICE)["id"], submit(keyed, BOB)["id"]

    def listed(headers: dict) -> dict[str, str]:
        doc = requests.get(f"{keyed.url}/v1/overview?jobs=200", headers=headers).json()
        return {job["id"]: job.get("owner") for job in doc["jobs"]}

    alice_sees, ops_sees = listed(ALICE), listed(OPS)
    assert alices in alice_sees and bobs not in alice_sees and set(alice_sees.values()) == {"alice"}
    assert ops_sees[alices] == "alice" and ops_sees[bobs] == "bob"


def test_dead_letters_are_shown_to_their_jobs_key(keyed, store):
    alices, bobs = submit(keyed, ALICE)["id"], submit(keyed, BOB)["id"]
    letters = [DeadLetter(job_id, 0, "echo", "x", {"code": "transient_error", "message": "m"}, 3, id=uuid.uuid4().hex)
               for job_id in (alices, bobs)]
    pipe = store.redis.pipeline()
    DeadLetters(store.redis).add(pipe, letters)
    pipe.execute()
    try:
        def listed(headers: dict) -> tuple[set[str], int]:
            body = requests.get(f"{keyed.url}/v1/dead-letters?limit=1000", headers=headers).json()
            return {entry["job_id"] for entry in body["dead_letters"]}, body["total"]

        alice_sees, alice_total = listed(ALICE)
        assert alices in alice_sees and bobs not in alice_sees and alice_total == len(alice_sees) == 1
        assert bobs in listed(BOB)[0] and alices not in listed(BOB)[0]
        assert {alices, bobs} <= listed(OPS)[0]
        assert listed(OPS)[1] == DeadLetters(store.redis).count()
    finally:
        for letter in letters:
            store.redis.lrem(keys.dead_letters(), 1, letter.encode())


def test_with_keys_off_jobs_belong_to_nobody_and_idempotency_keys_are_global(http, api, store):
    client_key = f"unscoped-{uuid.uuid4().hex}"
    response = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": [1]}, headers={"Idempotency-Key": client_key})
    assert response.status_code == 202
    assert "owner" not in http.get(response.json()["links"]["self"]).json()
    assert store.redis.get(keys.idempotency(client_key)).decode() == response.json()["id"]


def recent_of(store, name: str) -> list[dict]:
    return store.get_many(store.recent(5, owner=name))


def test_a_tier_above_the_keys_ceiling_is_403_naming_it_and_queues_nothing(keyed, store):
    before = recent_of(store, "std")
    refusals = [
        requests.post(f"{keyed.url}/v1/jobs", json={"model": "echo", "inputs": [1], "tier": "interactive"}, headers=STD),
        requests.post(f"{keyed.url}/v1/jobs?model=echo&tier=0", data=b"1\n",
                      headers={**STD, "content-type": "application/x-ndjson"}),
        requests.post(f"{keyed.url}/v1/models/echo/predict", json={"inputs": [1], "tier": 0}, headers=STD),
        requests.post(f"{keyed.url}/v1/models/echo/predict", json={"inputs": [1], "tier": "standard"}, headers=BULKY),
    ]
    for response in refusals:
        message = error_of(response, 403, "tier_not_allowed")
        assert "ceiling" in message and ("'standard'" in message or "'bulk'" in message)
    assert "'std'" in refusals[0].json()["error"]["message"]
    assert recent_of(store, "std") == before


def test_a_request_naming_no_tier_gets_its_keys_ceiling_when_that_is_lower(keyed, store):
    predicted = requests.post(f"{keyed.url}/v1/models/echo/predict", json={"inputs": ["p"]}, headers=STD)
    assert predicted.status_code == 200 and predicted.json()["outputs"] == ["p"]
    assert recent_of(store, "std")[0]["tier"] == "standard"
    assert submit(keyed, STD)["tier"] == "standard" and submit(keyed, STD, tier="bulk")["tier"] == "bulk"
    assert submit(keyed, BULKY)["tier"] == "bulk"
    assert requests.post(f"{keyed.url}/v1/models/echo/predict", json={"inputs": [1]}, headers=BULKY).status_code == 200
    assert recent_of(store, "bulky")[0]["tier"] == "bulk"
    assert requests.post(f"{keyed.url}/v1/models/echo/predict", json={"inputs": [1]}, headers=ALICE).status_code == 200
    assert recent_of(store, "alice")[0]["tier"] == "interactive"
    assert submit(keyed, ALICE, tier="interactive")["tier"] == "interactive"
