"""The result cache against a real Redis, and through the API with a real worker process."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

import orjson
import redis

from batchery import keys
from batchery.cache import ResultCache, cache_key
from batchery.models.registry import load_registry
from batchery.store import ItemResult, JobStore
from batchery.store.codec import encode_output
from batchery.store.handoff import Handoffs
from batchery.tasks import create_celery
from batchery.tasks.enqueue import Enqueuer
from tests.helpers import new_job, wait_for_job


class OneRoundTrip(redis.Redis):
    """A client that serves one pipeline and then behaves as if the connection died."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(connection_pool=client.connection_pool)
        self.trips = 0

    def pipeline(self, *args, **kwargs):
        pipe = super().pipeline(*args, **kwargs)
        execute = pipe.execute

        def once(*a, **k):
            self.trips += 1
            if self.trips > 1:
                raise redis.ConnectionError("connection lost after the first round trip")
            return execute(*a, **k)

        pipe.execute = once
        return pipe

    def execute_command(self, *args, **kwargs):
        self.trips += 1
        if self.trips > 1:
            raise redis.ConnectionError("connection lost after the first round trip")
        return super().execute_command(*args, **kwargs)


def unique(n: int, tag: str = "") -> list[str]:
    """Inputs no other test submits, so that each test starts with a cold cache."""
    run = uuid.uuid4().hex[:8]
    return [f"{tag}{run}-{i}" for i in range(n)]


def submit(http, api, inputs: list, model: str = "echo-slow", **extra) -> dict:
    response = http.post(f"{api.url}/v1/jobs", json={"model": model, "inputs": inputs, **extra})
    assert response.status_code == 202, response.text
    return response.json()


def results(http, job: dict) -> list:
    body = http.get(job["links"]["results"], params={"limit": 10_000}).json()
    return [r.get("output", r.get("error")) for r in body["results"]]


def chunks_run(worker, job_id: str) -> int:
    return worker.log_path.read_text().count(f"Task batchery.run_chunk[{job_id}.") // 2


@pytest.fixture(scope="module")
def spec(settings):
    return load_registry(settings.models_file).get("echo")



def test_the_key_names_model_and_version_and_ignores_key_order(spec):
    assert cache_key(spec, {"a": 1, "b": [2]}) == cache_key(spec, {"b": [2], "a": 1})
    assert cache_key(spec, "x") != cache_key(dataclasses.replace(spec, version="2"), "x")
    assert cache_key(spec, "x").startswith("echo@1:")


def test_a_computed_item_is_a_hit_for_its_version_and_a_miss_for_another(store, spec):
    cache = ResultCache(store)
    inputs = unique(3)
    first = new_job(store, 3, "echo")
    assert cache.claim(first, spec, inputs).owned == [0, 1, 2]
    store.record(ItemResult(first, i, encode_output(f"out-{i}"), True) for i in range(3))
    second = new_job(store, 3, "echo")
    again = cache.claim(second, spec, inputs)
    assert again.owned == [] and again.hits == 3
    assert store.outputs(second, 0, 3) == [(i, encode_output(f"out-{i}")) for i in range(3)]
    assert store.get(second)["status"] == "completed" and store.get(second)["cached"] == 3, "hits complete the job in Redis"
    assert cache.claim(new_job(store, 3, "echo"), dataclasses.replace(spec, version="2"), inputs).owned == [0, 1, 2]


def test_errors_are_shared_with_waiters_but_never_cached(store, spec):
    cache = ResultCache(store)
    owner, waiter = new_job(store, 1, "echo"), new_job(store, 1, "echo")
    value = unique(1)
    assert cache.claim(owner, spec, value).owned == [0]
    assert cache.claim(waiter, spec, value).waiting == 1
    error = b'e{"code":"invalid_input","message":"no"}'
    store.record([ItemResult(owner, 0, error, False)])
    assert store.outputs(waiter, 0, 1) == [(0, error)]
    assert store.get(waiter)["cached"] == 1 and store.get(waiter)["status"] == "completed"
    assert cache.claim(new_job(store, 1, "echo"), spec, value).owned == [0]


def test_the_cache_keeps_about_its_bound_dropping_the_oldest_of_each_index_shard(settings, spec):
    store = dataclasses.replace(settings, cache_max_entries=32).job_store()
    cache = ResultCache(store)
    inputs = unique(200)
    for value in inputs:
        job_id = new_job(store, 1, "echo")
        assert cache.claim(job_id, spec, [value]).owned == [0]
        store.record([ItemResult(job_id, 0, encode_output(value), True)])
    mine = {cache_key(spec, value): value for value in inputs}
    for digit in "0123456789abcdef":
        kept = [k.decode() for k in store.redis.zrange(keys.cache_index(digit), 0, -1)]
        assert len(kept) <= 2, "32 entries over 16 index shards: 2 each"
        written = [k for k in mine if k.endswith(digit)]
        assert [k for k in written if store.redis.exists(keys.cache_entry(k))] == written[-len(kept):] if kept else True
        assert all(not store.redis.exists(keys.cache_entry(k)) for k in written[: len(written) - len(kept)])


def test_a_shared_result_reaches_every_waiter_in_the_write_that_stores_it(store, spec):
    """No second round trip: a connection that dies right after the owner's write strands nobody."""
    cache = ResultCache(store)
    value = unique(1)
    owner = new_job(store, 1, "echo")
    waiters = [new_job(store, 1, "echo") for _ in range(3)]
    assert cache.claim(owner, spec, value).owned == [0]
    for waiter in waiters:
        assert cache.claim(waiter, spec, value).waiting == 1
    warm = new_job(store, 1, "echo")  # a worker that has stored a batch before: Redis holds the script
    store.record([ItemResult(warm, 0, encode_output("warm"), True)])
    one_trip = OneRoundTrip(store.redis)
    JobStore(one_trip, store.job_ttl_s, store.cache_ttl_s).record([ItemResult(owner, 0, encode_output("x"), True)])
    assert one_trip.trips == 1
    assert [store.get(w)["status"] for w in waiters] == ["completed"] * 3
    assert not store.redis.exists(keys.cache_inflight(cache_key(spec, value[0])))


def test_more_waiters_than_a_page_are_served_through_a_handoff(settings, spec):
    store = settings.job_store()
    store.bounds = dataclasses.replace(store.bounds, share_page=10)
    cache, handoffs = ResultCache(store), Handoffs(store)
    value = unique(1)
    owner = new_job(store, 1, "echo")
    waiter = new_job(store, 25, "echo")
    assert cache.claim(owner, spec, value).owned == [0]
    assert cache.claim(waiter, spec, value * 25).waiting == 25
    store.record([ItemResult(owner, 0, encode_output("x"), True)])
    [handoff] = [h for h in handoffs.pending(1000) if h.key == cache_key(spec, value[0])]
    assert handoff.kind == "share" and store.get(waiter)["succeeded"] == 0
    assert handoffs.share(handoff, 10) == 15
    assert store.get(waiter)["succeeded"] == 10
    assert handoffs.share(handoff, 10) == 5 and handoffs.share(handoff, 10) == 0
    assert store.get(waiter)["status"] == "completed"
    assert store.outputs(waiter, 0, 25) == [(i, encode_output("x")) for i in range(25)]
    assert handoff.number not in [h.number for h in handoffs.pending(1000)]


def test_a_claim_that_fails_part_way_is_abandoned_with_its_job(settings, store, spec):
    """A later page's failure must not leave the earlier pages' claims in flight for the job TTL."""
    registry = load_registry(settings.models_file)
    enqueuer = Enqueuer(create_celery(settings), store, settings, registry)
    inputs = unique(1500)
    store.redis.rpush(keys.cache_entry(cache_key(spec, inputs[1200])), "not a string")  # GET on it fails
    with pytest.raises(redis.ResponseError):
        enqueuer.submit(spec, inputs)
    claimed = [k for k in (keys.cache_inflight(cache_key(spec, v)) for v in inputs[:1000]) if store.redis.exists(k)]
    assert claimed == []
    [job] = [j for j in store.get_many(store.recent(5)) if j["total"] == 1500]
    assert job["status"] == "failed"
    store.redis.delete(keys.cache_entry(cache_key(spec, inputs[1200])))


def test_abandoning_a_claim_hands_its_waiters_off_to_be_computed_anew(store, spec):
    cache, handoffs = ResultCache(store), Handoffs(store)
    value = unique(1)
    owner, waiter = new_job(store, 1, "echo"), new_job(store, 1, "echo")
    assert cache.claim(owner, spec, value).owned == [0]
    assert cache.claim(waiter, spec, value).waiting == 1
    assert cache.abandon(owner, 1) == 1
    key = cache_key(spec, value[0])
    assert not store.redis.exists(keys.cache_inflight(key)) and not store.redis.exists(keys.cache_waiters(key))
    [handoff] = [h for h in handoffs.pending(1000) if h.key == key]
    assert handoff.kind == "release" and orjson.loads(handoff.input) == value[0]
    assert handoffs.waiters([handoff], 10) == [[(waiter, 0)]]
    assert handoffs.advance([(handoff, 1)]) == [0]
    assert cache.claim(new_job(store, 1, "echo"), spec, value).owned == [0], "the next identical item computes it"


def test_an_item_that_holds_its_claim_already_owns_it_again_and_never_waits_on_itself(store, spec):
    cache = ResultCache(store)
    value = unique(1)
    job, other = new_job(store, 1, "echo"), new_job(store, 1, "echo")
    assert cache.claim(job, spec, value).owned == [0]
    again = cache.claim(job, spec, value)
    assert (again.owned, again.again, again.waiting) == ([], [0], 0), "a resubmission redone: it is sent again"
    assert cache.claim(other, spec, value).waiting == 1, "another item still waits"
    waiters = store.redis.lrange(keys.cache_waiters(cache_key(spec, value[0])), 0, -1)
    assert waiters == [f"{other}|0".encode()]


def test_a_resubmission_whose_first_run_died_after_claiming_sends_its_items(settings, store, spec, echo_worker):
    """A janitor that claimed waiters' items anew and died before sending them (a SIGKILL between the two)
    leaves their claims held by the items themselves; the handoff is redone, and the items must be sent,
    not left waiting on claims nobody computes."""
    enqueuer = Enqueuer(create_celery(settings), store, settings, load_registry(settings.models_file))
    inputs = unique(300)
    job_id = new_job(store, 300, "echo")
    assert len(enqueuer.cache.claim(job_id, spec, inputs).owned) == 300  # the first run, dead before its send
    assert enqueuer.resubmit(job_id, list(enumerate(inputs))) == 300
    deadline = time.monotonic() + 30
    while (job := store.get(job_id))["status"] != "completed":
        assert time.monotonic() < deadline, f"the job is wedged: {job}"
        time.sleep(0.05)
    assert job["succeeded"] == 300 and [v for _, v in store.outputs(job_id, 0, 300)] == [encode_output(v) for v in inputs]


def test_a_resubmission_redone_after_it_sent_sends_again_and_counts_the_backlog_in_once(settings, store):
    """A janitor's fault after its send redoes the handoff: the items, sent already, are sent again (stored
    once), and the model's backlog counts them in once, since their computation counts them out once. On a
    model no worker serves, so that nothing is computed between the two runs."""
    registry = load_registry(settings.models_file)
    enqueuer = Enqueuer(create_celery(settings), store, settings, registry)
    spec = registry.get("echo-orphan")
    items = list(enumerate(unique(300)))
    job_id = new_job(store, 300, spec.name)
    before = enqueuer.backlog.queued(spec.key)
    try:
        assert enqueuer.resubmit(job_id, items) == 300
        assert enqueuer.resubmit(job_id, items) == 300, "its claims are its own: sent again, not left waiting"
        assert enqueuer.backlog.queued(spec.key) == before + 300
    finally:
        enqueuer.cancel(job_id)
        enqueuer.backlog.release(spec.key, 300)
        enqueuer.dispatcher.chunks.delete(job_id, range(store.get(job_id)["chunks"]), spec.queue_for("standard"))


def test_a_resubmission_passes_over_an_item_stored_between_its_look_and_its_claim(settings, store, monkeypatch):
    """The janitor's resubmission reads which items still lack a result, then claims those. An item stored in
    between (by its own run, sent by an earlier try of the same handoff) must be neither claimed nor sent: a
    record resolves only the claims of the items it stores, so that claim would hold its cache key, and the
    model's backlog, with nothing left to release them. On a model no worker serves."""
    registry = load_registry(settings.models_file)
    enqueuer = Enqueuer(create_celery(settings), store, settings, registry)
    spec = registry.get("echo-orphan")
    inputs = unique(4)
    job_id = new_job(store, 4, spec.name)
    before = enqueuer.backlog.queued(spec.key)
    look = store.missing

    def item_0_lands_after_the_look(job: str, indices: list[int]) -> list[int]:
        missing = look(job, indices)
        store.record([ItemResult(job_id, 0, encode_output(inputs[0]), True)])
        return missing

    monkeypatch.setattr(store, "missing", item_0_lands_after_the_look)
    try:
        assert enqueuer.resubmit(job_id, list(enumerate(inputs))) == 3
        assert store.redis.get(keys.cache_inflight(cache_key(spec, inputs[0]))) is None
        assert store.redis.hkeys(f"{keys.job_prefix()}{job_id}:owns:0") == [b"1", b"2", b"3"]
        assert enqueuer.backlog.queued(spec.key) == before + 3
    finally:
        enqueuer.cancel(job_id)
        enqueuer.backlog.release(spec.key, 3)
        enqueuer.dispatcher.chunks.delete(job_id, range(store.get(job_id)["chunks"]), spec.queue_for("standard"))


def test_abandon_leaves_a_claim_taken_afresh_since_alone(store, spec):
    cache = ResultCache(store)
    value = unique(1)
    first, second = new_job(store, 1, "echo"), new_job(store, 1, "echo")
    assert cache.claim(first, spec, value).owned == [0]
    assert cache.abandon(first, 1) == 1
    assert cache.claim(second, spec, value).owned == [0]
    assert cache.abandon(first, 1) == 0
    assert store.redis.get(keys.cache_inflight(cache_key(spec, value[0]))).startswith(f"{second}|0\n".encode())


def test_a_resubmitted_job_is_served_wholly_from_the_cache_and_faster(http, api, echo_worker):
    inputs = unique(400)
    started = time.perf_counter()
    first = wait_for_job(http, submit(http, api, inputs)["links"]["self"])
    computed_s = time.perf_counter() - started
    started = time.perf_counter()
    job = submit(http, api, inputs)
    second = wait_for_job(http, job["links"]["self"])
    cached_s = time.perf_counter() - started
    assert first["counts"]["cached"] == 0
    assert second["counts"] == {"succeeded": 400, "failed": 0, "pending": 0, "cached": 400}
    assert results(http, job) == inputs
    assert chunks_run(echo_worker, job["id"]) == 0, "a fully cached job reaches no worker"
    assert cached_s < computed_s / 3, (computed_s, cached_s)


def test_cache_false_bypasses_the_cache(http, api, echo_worker):
    inputs = unique(20)
    wait_for_job(http, submit(http, api, inputs)["links"]["self"])
    job = submit(http, api, inputs, cache=False)
    assert wait_for_job(http, job["links"]["self"])["counts"]["cached"] == 0
    assert chunks_run(echo_worker, job["id"]) == 1


def test_duplicates_in_one_job_are_computed_once(http, api, echo_worker):
    x, y = unique(2)
    inputs = [x, y] * 50
    job = submit(http, api, inputs)
    status = wait_for_job(http, job["links"]["self"])
    assert status["counts"] == {"succeeded": 100, "failed": 0, "pending": 0, "cached": 98}
    assert results(http, job) == inputs
    assert chunks_run(echo_worker, job["id"]) == 1


def test_identical_inputs_in_flight_across_jobs_are_computed_once(http, api, echo_worker):
    inputs = unique(200)
    first = submit(http, api, inputs)
    second = submit(http, api, list(reversed(inputs)))
    done = wait_for_job(http, second["links"]["self"])
    assert wait_for_job(http, first["links"]["self"])["counts"]["cached"] == 0
    assert done["counts"] == {"succeeded": 200, "failed": 0, "pending": 0, "cached": 200}
    assert results(http, second) == list(reversed(inputs))
    assert chunks_run(echo_worker, second["id"]) == 0


def test_items_waiting_on_a_cancelled_job_are_computed_for_their_own(http, api, echo_worker):
    inputs = unique(400)
    owner = submit(http, api, inputs)
    waiter = submit(http, api, inputs)
    http.delete(owner["links"]["self"])
    cancelled = wait_for_job(http, owner["links"]["self"])
    done = wait_for_job(http, waiter["links"]["self"])
    assert cancelled["counts"]["failed"] > 0, "the cancel came too late to test anything"
    assert done["counts"]["succeeded"] == 400 and done["counts"]["failed"] == 0
    assert results(http, waiter) == inputs
    assert chunks_run(echo_worker, waiter["id"]) <= 8, "the released items go back in chunks, never one task each"
