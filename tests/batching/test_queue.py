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


def measured(lengths: list[int], job: str = "j") -> list[Item]:
    ticket = Ticket(len(lengths))
    return [Item(job, i, i, ticket, length=n) for i, n in enumerate(lengths)]


def test_by_length_a_full_batch_still_leaves_at_once():
    queue = ItemQueue()
    queue.put_many(measured([5, 200, 7, 180, 6, 190, 8, 170, 9]))
    started = time.perf_counter()
    batch = queue.take(4, max_wait_s=10.0, by_length=True)
    assert time.perf_counter() - started < 0.05
    assert sorted(item.length for item in batch) == [170, 180, 190, 200], "the long texts together"


def test_by_length_the_first_item_waits_max_wait_however_many_others_arrive():
    queue = ItemQueue()
    queue.put_many(measured([50]))
    timers = [threading.Timer(delay, lambda: queue.put_many(measured([5]))) for delay in (0.01, 0.02, 0.03)]
    for timer in timers:
        timer.start()
    started = time.perf_counter()
    batch = queue.take(8, max_wait_s=0.2, by_length=True)
    waited = time.perf_counter() - started
    assert 0.19 <= waited < 0.3
    assert sorted(item.length for item in batch) == [5, 5, 5, 50]


def test_the_token_budget_cuts_a_batch_that_then_leaves_at_once():
    clock = Clock()
    queue = ItemQueue(clock)
    queue.put_many(measured([40, 40, 40]))
    assert [item.index for item in queue.take(8, 1.0, max_tokens=100)] == [0, 1], "a third would make 120 tokens"
    clock.now = 1.0
    assert [item.index for item in queue.take(8, 1.0, max_tokens=100)] == [2]


def test_max_size_is_read_when_the_batch_is_chosen_not_when_the_wait_began():
    queue = ItemQueue()
    size = [8]
    threading.Timer(0.05, lambda: (size.__setitem__(0, 2), queue.put_many(items(4)))).start()
    started = time.perf_counter()
    assert len(queue.take(lambda: size[0], max_wait_s=10.0)) == 2
    assert time.perf_counter() - started < 0.5


def tiered(n: int, job: str, tier: int) -> list[Item]:
    ticket = Ticket(n)
    return [Item(job, i, i, ticket, tier=tier) for i in range(n)]


def test_a_higher_tier_goes_first_and_lower_tiers_fill_the_batch():
    clock = Clock()
    queue = ItemQueue(clock)
    queue.put_many(tiered(10, "backfill", 2))
    queue.put_many(tiered(3, "online", 0))
    batch = queue.take(8, max_wait_s=1.0)
    assert [item.job_id for item in batch] == ["online"] * 3 + ["backfill"] * 5


def test_an_interactive_item_never_waits_for_company():
    queue = ItemQueue()
    queue.put_many(tiered(1, "online", 0))
    started = time.perf_counter()
    assert len(queue.take(64, max_wait_s=10.0)) == 1
    assert time.perf_counter() - started < 0.05


def test_jobs_of_one_tier_share_each_batch_in_turn():
    clock = Clock()
    queue = ItemQueue(clock)
    queue.put_many(tiered(1000, "huge", 1))
    queue.put_many(tiered(6, "small", 1))
    clock.now = 1.0
    first, second = queue.take(4, 0.5), queue.take(4, 0.5)
    assert [item.job_id for item in first] == ["huge", "small", "huge", "small"]
    assert [item.job_id for item in second] == ["huge", "small", "huge", "small"]
    third = queue.take(4, 0.5)
    assert [item.job_id for item in third].count("small") == 2, "the small job is done in three batches, not 250"


def test_a_lower_tier_is_never_starved():
    from batchery.tiers import STARVATION_BATCHES

    clock = Clock()
    queue = ItemQueue(clock)
    queue.put_many(tiered(400, "standard", 1))
    queue.put_many(tiered(10, "backfill", 2))
    clock.now = 1.0
    tiers_served = [{item.tier for item in queue.take(4, 0.5)} for _ in range(2 * (STARVATION_BATCHES + 1))]
    assert tiers_served.count({2}) == 2, tiers_served
    assert tiers_served[STARVATION_BATCHES] == {2}, "after that many batches without it, the bulk tier goes first"


def test_a_batch_put_back_keeps_its_place_at_the_head():
    clock = Clock()
    queue = ItemQueue(clock)
    queue.put_many(tiered(6, "backfill", 2))
    batch = queue.take(4, 0.0)
    queue.put_many(tiered(1, "online", 0))
    queue.put_back(batch)
    assert queue.highest_waiting() == 0
    first = queue.take(8, 0.0)
    assert [(i.job_id, i.index) for i in first] == [("online", 0)] + [("backfill", n) for n in range(6)]


def test_one_jobs_batches_and_a_by_length_pick_leave_the_rest_in_place():
    """One job waiting: a batch from the head of its queue leaves in one step; a by-length batch picks items
    from the middle of it, and either way what is left waits in order, counted right."""
    queue = ItemQueue(Clock())
    ticket = Ticket(12)
    lengths = [1, 1, 9, 1, 9, 9, 9, 1, 1, 1, 1, 1]
    queue.put_many(Item("j", i, i, ticket, length=n) for i, n in enumerate(lengths))
    head = queue.take(2, max_wait_s=0.0)
    assert [item.index for item in head] == [0, 1] and len(queue) == 10
    long_ones = queue.take(4, max_wait_s=10.0, by_length=True)  # not due: the full group of long ones leaves
    assert sorted(item.index for item in long_ones) == [2, 4, 5, 6] and len(queue) == 6, "from the head, then past item 3"
    queue.put_many(items(2, job="k"))
    rest = []
    while len(queue):
        rest += [(item.job_id, item.index) for item in queue.take(3, max_wait_s=0.0)]
    assert sorted(rest) == [("j", i) for i in (3, *range(7, 12))] + [("k", 0), ("k", 1)]
    assert [index for job, index in rest if job == "j"] == [3, *range(7, 12)], "the job's items in order"


def test_a_by_length_pick_is_taken_out_without_comparing_items(monkeypatch):
    """Items picked from further back in their jobs' queues are taken out by identity, in one pass: removing
    them one by one scanned the queue for each, comparing every item field by field (the items' features
    included), which made the by-length path quadratic in the queue's length."""
    def refuse(self, other):
        raise AssertionError("items were compared field by field")

    monkeypatch.setattr(Item, "__eq__", refuse)
    queue = ItemQueue(Clock())
    for job in ("a", "b", "c"):
        ticket = Ticket(300)
        queue.put_many(Item(job, i, i, ticket, length=1 + (i * 7) % 40) for i in range(300))
    taken = []
    while len(queue):
        taken += [(item.job_id, item.index) for item in queue.take(64, max_wait_s=0.0, max_tokens=2048, by_length=True)]
    assert sorted(taken) == sorted((job, i) for job in ("a", "b", "c") for i in range(300))
