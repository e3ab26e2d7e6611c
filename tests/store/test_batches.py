"""Batch records: an ended batch stays ended, and only the finalizing lease's holder commits."""

from __future__ import annotations

import time
from typing import Iterator

import pytest

from batchery import keys
from batchery.store.batches import BatchStore, new_batch_id


@pytest.fixture
def store(redis_client) -> Iterator[BatchStore]:
    """A batch store whose records, partial as only these tests make them, leave no trace in the shared
    listing that the API's tests read."""
    store = BatchStore(redis_client, ttl_s=60)
    before = set(redis_client.zrange(keys.batches(), 0, -1))
    yield store
    for batch_id in set(redis_client.zrange(keys.batches(), 0, -1)) - before:
        redis_client.zrem(keys.batches(), batch_id)
        redis_client.delete(keys.batch(batch_id.decode()), keys.batch_finalizing(batch_id.decode()))


def make(store: BatchStore) -> str:
    batch_id = new_batch_id()
    store.create(batch_id, {"status": "in_progress", "created_at": int(time.time()), "job_id": "j", "errors": []})
    return batch_id


def test_only_the_lease_holder_commits_and_an_ended_batch_is_not_reopened(store, redis_client):
    batch_id = make(store)
    assert store.take_lease(batch_id, "mine") and not store.take_lease(batch_id, "theirs")
    assert not store.commit(batch_id, "theirs", {"status": "completed"}), "a writer without the lease commits nothing"
    assert store.get(batch_id)["status"] == "in_progress"
    assert store.commit(batch_id, "mine", {"status": "completed", "completed": 3, "failed": 0})
    assert not redis_client.exists(keys.batch_finalizing(batch_id)), "the lease is let go with the commit"
    assert not store.update(batch_id, {"status": "cancelling"}), "a look that read it before it ended undoes nothing"
    assert store.get(batch_id)["status"] == "completed" and store.get(batch_id)["completed"] == 3


def test_a_lapsed_lease_cannot_be_renewed_or_committed(store, redis_client):
    batch_id = make(store)
    assert store.take_lease(batch_id, "slow")
    redis_client.delete(keys.batch_finalizing(batch_id))  # it lapsed
    assert store.take_lease(batch_id, "next")
    assert not store.renew_lease(batch_id, "slow") and not store.commit(batch_id, "slow", {"status": "completed"})
    assert (
        store.update(batch_id, {"finalizing_at": 1}, ("finalizing_at",)) and store.get(batch_id)["finalizing_at"] == 1
    )
    assert (
        store.update(batch_id, {"finalizing_at": 2}, ("finalizing_at",)) and store.get(batch_id)["finalizing_at"] == 1
    )
