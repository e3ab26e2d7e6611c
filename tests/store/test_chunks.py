"""Chunk records and lanes against a real Redis: a lane releases chunks round-robin across its jobs, within
its budget, and a finished chunk hands its place to the next."""

from __future__ import annotations

import time
import uuid

from batchery import keys
from batchery.store.chunks import ChunkStore, pack_indices, unpack_indices


def lane_with(store, chunks: ChunkStore, queue: str, sizes: dict[str, int]) -> None:
    """Jobs with ``sizes[job]`` chunks each, all held back in ``queue``'s lane, in that order."""
    for job_id, count in sizes.items():
        store.create(job_id, {"model": "m", "version": "1", "total": count})
        pipe = store.redis.pipeline()
        for n in range(count):
            chunks.add(pipe, job_id, n, "m", queue, "bulk", [n], b"[0]", f"{job_id}.{n}", time.time(), int(time.time()) + 60, held=True)
        chunks.enter_lane(pipe, job_id, queue)
        pipe.execute()


def test_indices_pack_as_a_run_or_a_list():
    assert pack_indices([4, 5, 6]) == b"r:4:3" and unpack_indices(b"r:4:3") == [4, 5, 6]
    assert unpack_indices(pack_indices([1, 5, 6])) == [1, 5, 6]


def test_a_lane_releases_within_its_budget_and_round_robin_across_jobs(store):
    chunks = ChunkStore(store.redis)
    queue = f"batchery.lane-{uuid.uuid4().hex[:6]}.bulk"
    big, small = uuid.uuid4().hex, uuid.uuid4().hex
    lane_with(store, chunks, queue, {big: 100})
    first = chunks.release(queue, 2, time.time())
    assert [(c.job_id, c.number) for c in first] == [(big, 0), (big, 1)], "two in flight, the rest held"
    assert chunks.release(queue, 2, time.time()) == [], "the budget is spent"
    lane_with(store, chunks, queue, {small: 2})
    in_flight, order = list(first), []
    for _ in range(6):  # a worker finishes the oldest chunk in flight; its place goes to the lane's next
        done = in_flight.pop(0)
        assert chunks.take(done.job_id, done.number, queue, "w@h") is not None
        _, released = chunks.finish(done.job_id, done.number, queue, "w@h", 2, time.time())
        assert len(released) == 1
        in_flight += released
        order.append(released[0].job_id)
    assert order[:4].count(small) == 2, f"the small job's two chunks go within its first turns: {order}"
    assert store.redis.llen(keys.lane(queue)) == 1, "the small job left the lane with its last chunk"


def test_a_requeued_chunk_counts_as_in_flight_once_and_its_next_take_is_not_its_first(store):
    chunks = ChunkStore(store.redis)
    queue = f"batchery.lane-{uuid.uuid4().hex[:6]}.bulk"
    job = uuid.uuid4().hex
    lane_with(store, chunks, queue, {job: 3})
    [chunk] = chunks.release(queue, 1, time.time())
    taken = chunks.take(job, chunk.number, queue, "dead@h")
    assert taken is not None and taken.first and taken.inputs == [0]
    chunks.requeue(job, chunk.number, "", time.time(), "dead@h")
    assert chunks.open_count(queue) == 2, "one chunk queued again, and the job still in the lane"
    assert chunks.release(queue, 1, time.time()) == []
    again = chunks.take(job, chunk.number, queue, "alive@h")
    assert again is not None and not again.first, "taken before: its items may have results"
    assert chunks.finish(job, chunk.number, queue, "alive@h", 1, time.time())[0] is True


def test_a_chunk_keeps_its_trace_context_for_whoever_releases_or_resends_it(store):
    chunks = ChunkStore(store.redis)
    queue = f"batchery.lane-{uuid.uuid4().hex[:6]}.bulk"
    traced, plain = uuid.uuid4().hex, uuid.uuid4().hex
    trace = '{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
    for job_id, kept in ((traced, trace), (plain, "")):
        store.create(job_id, {"model": "m", "version": "1", "total": 1})
        pipe = store.redis.pipeline()
        chunks.add(pipe, job_id, 0, "m", queue, "bulk", [0], b"[0]", f"{job_id}.0", time.time(), int(time.time()) + 60, True, kept)
        chunks.enter_lane(pipe, job_id, queue)
        pipe.execute()
    released = {c.job_id: c.trace for c in chunks.release(queue, 2, time.time())}
    assert released == {traced: trace, plain: ""}
    assert chunks.get(traced, 0).trace == trace and chunks.get(plain, 0).trace == ""

