"""Which waiting items make a batch, as a pure function of their lengths, the limits and whether it is due."""

from __future__ import annotations

import random

import pytest

from batchery.batching.selection import LOOKAHEAD_BATCHES, Limits, partition, select
from batchery.models import hf
from batchery.models.registry import BUILTINS
from batchery.runtimes.text import TextEncoder, token_lengths
from benchmarks import corpus


def padded(lengths, indices) -> int:
    return len(indices) * max(lengths[i] for i in indices)


def drain(lengths: list[int], limits: Limits) -> list[list[int]]:
    """Every batch a backlog of ``lengths`` gives, as the queue takes them (all due), as lists of lengths."""
    waiting, batches = list(lengths), []
    while waiting:
        window = waiting[: limits.window()]
        chosen = select(window, limits, due=True)
        batches.append([window[i] for i in chosen])
        waiting = [x for i, x in enumerate(window) if i not in set(chosen)] + waiting[len(window):]
    return batches


def padded_fraction(batches: list[list[int]]) -> float:
    return 1 - sum(map(sum, batches)) / sum(len(b) * max(b) for b in batches)


def test_without_lengths_batches_are_cut_by_count_in_arrival_order():
    assert select([None] * 10, Limits(4), due=False) == [0, 1, 2, 3]
    assert select([None] * 3, Limits(4), due=False) is None
    assert select([None] * 3, Limits(4), due=True) == [0, 1, 2]


def test_by_length_a_due_batch_holds_the_oldest_item_and_its_like():
    lengths = [5, 100, 6, 101, 7, 102]
    assert select(lengths, Limits(3, by_length=True), due=True) == [0, 2, 4]
    assert select(lengths[1:], Limits(3, by_length=True), due=True) == [0, 2, 4]


def test_a_full_group_leaves_before_it_is_due_even_without_the_oldest_item():
    lengths = [5, 100, 101, 102, 103]
    assert select(lengths, Limits(4, by_length=True), due=False) == [1, 2, 3, 4]
    assert select(lengths[:3], Limits(4, by_length=True), due=False) is None


@pytest.mark.parametrize("by_length", [False, True])
def test_no_batch_exceeds_the_token_budget_unless_it_is_one_item(by_length):
    rng = random.Random(7)
    lengths = [rng.choice([3, 8, 20, 60, 200, 600]) for _ in range(500)]
    limits = Limits(32, max_tokens=1000, by_length=by_length)
    batches = drain(lengths, limits)
    assert sum(map(len, batches)) == 500
    for batch in batches:
        assert len(batch) <= 32
        assert len(batch) * max(batch) <= 1000 or len(batch) == 1
    assert [600] in batches, "an item longer than the budget still runs, alone"


def test_in_arrival_order_a_batch_cut_by_the_budget_is_full_and_leaves_at_once():
    assert select([10, 10, 50, 10], Limits(8, max_tokens=100), due=False) == [0, 1]
    assert select([10, 10, 10], Limits(8, max_tokens=100), due=False) is None


def test_a_group_no_item_of_its_length_could_join_is_full():
    groups = partition([30, 30, 30], Limits(8, max_tokens=100, by_length=True))
    assert [(g.indices, g.full) for g in groups] == [([0, 1, 2], True)]
    assert select([30, 30, 30], Limits(8, max_tokens=100, by_length=True), due=False) == [0, 1, 2]


def test_bucketing_at_least_halves_padding_on_a_mixed_corpus():
    encoder = TextEncoder(hf.weights_dir(BUILTINS["minilm"]) / "tokenizer.json", 256)
    lengths = token_lengths(encoder.tokenize(corpus.mixed(2048)))
    arrival = padded_fraction(drain(lengths, Limits(64)))
    bucketed = padded_fraction(drain(lengths, Limits(64, max_tokens=4096, by_length=True)))
    assert arrival > 0.6, "the corpus mixes sentences and passages, so arrival-order batches are mostly padding"
    assert bucketed <= arrival / 2


def test_bucketing_reorders_only_within_its_lookahead():
    lengths = list(range(1000, 0, -1))
    limits = Limits(4, by_length=True)
    chosen = select(lengths, limits, due=True)
    assert max(chosen) < 4 * LOOKAHEAD_BATCHES
