"""The collection step as a function of queue, limits and clock (no worker, no Redis)."""

from __future__ import annotations

import threading
import time

import pytest

from batchery.batching import Item, ItemQueue, QueueClosed, Ticket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def items(n: int, job: str = "j") -> list[Item]:
    ticket = Ticket(n)
    return [Item(job, i, i, ticket) for i in range(n)]


@pytest.mark.parametrize("queued, max_size, expected", [(10, 4, [4, 4, 2]), (4, 4, [4]), (1, 64, [1]), (65, 64, [64, 1])])
def test_batches_are_at_most_max_size_and_keep_order(queued, max_size, expected):
    clock = Clock()
    queue = ItemQueue(clock)
    queue.put_many(items(queued))
    clock.now = 1.0
    sizes, order = [], []
    while len(queue):
        batch = queue.take(max_size, max_wait_s=0.5)
        sizes.append(len(batch))
        order.extend(item.index for item in batch)
    assert sizes == expected and order == list(range(queued))


def test_a_full_batch_leaves_at_once_however_long_the_window():
    queue = ItemQueue()
    queue.put_many(items(8))
    started = time.perf_counter()
    assert len(queue.take(8, max_wait_s=10.0)) == 8
    assert time.perf_counter() - started < 0.05


@pytest.mark.parametrize("max_wait_s", [0.02, 0.08])
def test_a_lone_item_waits_max_wait_and_no_longer(max_wait_s):
    queue = ItemQueue()
    queue.put_many(items(1))
    started = time.perf_counter()
    batch = queue.take(64, max_wait_s)
    waited = time.perf_counter() - started
    assert len(batch) == 1
    assert max_wait_s * 0.9 <= waited < max_wait_s + 0.05


def test_the_deadline_counts_from_the_oldest_items_arrival():
    clock = Clock()
    queue = ItemQueue(clock)
    queue.put_many(items(2))
    clock.now = 0.5
    assert len(queue.take(64, max_wait_s=0.5)) == 2


def test_items_arriving_within_the_window_join_the_batch():
    queue = ItemQueue()
    queue.put_many(items(1, "a"))
    timer = threading.Timer(0.02, lambda: queue.put_many(items(3, "b")))
    timer.start()
    batch = queue.take(4, max_wait_s=1.0)
    assert [item.job_id for item in batch] == ["a", "b", "b", "b"]


def test_close_drains_then_ends_and_refuses_new_items():
    queue = ItemQueue()
    queue.put_many(items(3))
    queue.close()
    assert len(queue.take(2, 1.0)) == 2
    assert len(queue.take(2, 1.0)) == 1
    assert queue.take(2, 1.0) is None
    with pytest.raises(QueueClosed):
        queue.put_many(items(1))
