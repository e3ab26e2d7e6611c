"""Batch records: an ended batch stays ended, and only the finalizing lease's holder commits."""

from __future__ import annotations

import time

from batchery import keys
from batchery.store.batches import BatchStore, new_batch_id


def make(store: BatchStore) -> str:
    batch_id = new_batch_id()
    store.create(batch_id, {"status": "in_progress", "created_at": int(time.time()), "job_id": "j", "errors": []})
    return batch_id


def test_only_the_lease_holder_commits_and_an_ended_batch_is_not_reopened(redis_client):
    store = BatchStore(redis_client, ttl_s=60)
    batch_id = make(store)
    assert store.take_lease(batch_id, "mine") and not store.take_lease(batch_id, "theirs")
    assert not store.commit(batch_id, "theirs", {"status": "completed"}), "a writer without the lease commits nothing"
    assert store.get(batch_id)["status"] == "in_progress"
    assert store.commit(batch_id, "mine", {"status": "completed", "completed": 3, "failed": 0})
    assert not redis_client.exists(keys.batch_finalizing(batch_id)), "the lease is let go with the commit"
    assert not store.update(batch_id, {"status": "cancelling"}), "a look that read it before it ended undoes nothing"
    assert store.get(batch_id)["status"] == "completed" and store.get(batch_id)["completed"] == 3


def test_a_lapsed_lease_cannot_be_renewed_or_committed(redis_client):
    store = BatchStore(redis_client, ttl_s=60)
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
