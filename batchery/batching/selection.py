"""Which waiting items make the next batch: a pure function of their lengths, the limits and whether it is due.

A text batch is padded to its longest item, so a batch of one long and many short texts spends most of its
device time on padding. With ``by_length``, the waiting items (the oldest ``LOOKAHEAD_BATCHES`` batches' worth)
are ordered from the longest and cut into consecutive groups, so each group holds texts of like length;
without it, groups are cut in arrival order. A group ends at ``max_items`` or where the next item would take
its padded size (items × longest) past ``max_tokens``; one item alone always makes a group, however long.

A group is *full* when it ended because the next item did not fit, or when no item of its longest length
could join it. A full group leaves at once; otherwise the batch waits until it is *due* (its oldest item has
waited ``max_wait_ms``), and then the group holding the oldest item leaves, so no item waits longer than that
for company. Order within a job does not matter: outputs are stored by index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

#: How far past the oldest item bucketing looks, in batches: wider groups texts better, narrower keeps
#: items closer to arrival order.
LOOKAHEAD_BATCHES = 8


@dataclass(frozen=True)
class Limits:
    """``max_tokens`` 0: no token budget. Items of unknown length (None) are taken in order, by count only."""

    max_items: int
    max_tokens: int = 0
    by_length: bool = False

    def window(self) -> int:
        """How many of the oldest waiting items a selection considers."""
        return self.max_items * LOOKAHEAD_BATCHES if self.by_length else self.max_items + 1


@dataclass
class Group:
    """A batch in the making: indices of waiting items, its longest length, whether it can grow."""

    indices: list[int]
    longest: int = 0
    full: bool = False


def select(lengths: Sequence[int | None], limits: Limits, due: bool) -> list[int] | None:
    """Indices into ``lengths`` (the waiting items, oldest first) of the next batch; None to keep waiting."""
    if not lengths:
        return None
    groups = partition(lengths, limits)
    if due:
        return sorted(next(group.indices for group in groups if 0 in group.indices))
    full = [group for group in groups if group.full]
    return sorted(min(full, key=lambda group: min(group.indices)).indices) if full else None


def partition(lengths: Sequence[int | None], limits: Limits) -> list[Group]:
    """The waiting items cut into batches, in length order with ``by_length``, else in arrival order."""
    measured = lengths[0] is not None
    if not measured:
        return _by_count(len(lengths), limits.max_items)
    order = range(len(lengths))
    if limits.by_length:  # longest first: what is left over at the end is the short texts, where padding is cheap
        order = sorted(order, key=lengths.__getitem__, reverse=True)
    groups = [Group([])]
    for index in order:
        length = int(lengths[index] or 0)
        group = groups[-1]
        if group.indices and not _fits(group, length, limits):
            group.full = True
            groups.append(group := Group([]))
        group.indices.append(index)
        group.longest = max(group.longest, length)
    last = groups[-1]
    last.full = not _fits(last, last.longest, limits)
    return groups


def _fits(group: Group, length: int, limits: Limits) -> bool:
    if len(group.indices) >= limits.max_items:
        return False
    return not limits.max_tokens or (len(group.indices) + 1) * max(group.longest, length) <= limits.max_tokens


def _by_count(count: int, max_items: int) -> list[Group]:
    return [
        Group(list(range(start, min(start + max_items, count))), full=count - start >= max_items)
        for start in range(0, count, max_items)
    ]
