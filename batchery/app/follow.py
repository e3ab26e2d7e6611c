"""Results that follow a running job: ``GET /v1/jobs/<id>/results?wait=S``.

Without ``wait`` a results read answers at once with the items finished so far. With it, a stream (NDJSON or
frames) sends the items from ``offset`` on in index order as they finish, and a JSON page is answered once all
of its items have finished; either way for at most ``wait`` seconds (``BATCHERY_RESULTS_WAIT_MAX_S`` at most),
and at once when the job has ended. A client reads a job's results while it runs, with no status polls and no
second pass over the outputs after the end, and resumes a stream cut short with ``offset`` set to the next
index it lacks.

The wait reads Redis, never blocks on it: a pause that doubles from :data:`FIRST_PAUSE_S` to
:data:`MAX_PAUSE_S` while nothing new has finished, and one short read of the items after the last one sent,
so a follower costs little whatever the job's size. Each follower holds one API thread while it waits, so
at most half of a process's threads wait at once (:class:`Waiters`): a reader past that is answered at once,
as without ``wait``, and the rest stay free for submissions, polls and health probes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

from batchery.store import FINAL_STATUSES, JobStore

FIRST_PAUSE_S = 0.005
MAX_PAUSE_S = 0.1
#: Items read (and sent) at a time, at most: one round trip each.
PAGE = 1000
#: The shortest span a follower reads once the item it waited on has finished.
MIN_SPAN = 64

Render = Callable[[int, bytes], bytes]


class Waiters:
    """How many readers of one API process may wait at once; the rest are answered at once."""

    def __init__(self, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(max(limit, 1))

    @contextlib.contextmanager
    def slot(self, wait_s: float) -> Iterator[float]:
        """``wait_s`` while a slot is held for the block, else 0."""
        held = wait_s > 0 and self._slots.acquire(blocking=False)
        try:
            yield wait_s if held else 0.0
        finally:
            if held:
                self._slots.release()


def stream(
    store: JobStore, job_id: str, total: int, start: int, wait_s: float, render: Render, waiters: Waiters
) -> Iterator[bytes]:
    """:func:`follow_stream` with one of ``waiters``' slots held for as long as it waits (the whole response)."""
    with waiters.slot(wait_s) as granted:
        yield from follow_stream(store, job_id, total, start, granted, render)


def follow_stream(store: JobStore, job_id: str, total: int, start: int, wait_s: float, render: Render) -> Iterator[bytes]:
    """Every finished item from ``start`` on, a page per write: at once (``wait_s`` 0, gaps skipped) or, in
    index order, as the job finishes them, until all are sent, the job ends or ``wait_s`` passes.

    While it waits on an item, a follower reads that item alone; once it has finished, a span from it twice as
    long as the last run of finished items, up to a page, growing while whole spans come back. Every index
    asked for costs the API and Redis about as much whether its item has finished or not, so a page read while
    the item is missing, or a page read where one batch has just finished, would mostly fetch nothing, or
    fetch and throw away later items (the job's other chunks) once per pause.
    """
    if wait_s <= 0:
        for first in range(start, total, PAGE):
            found = store.outputs(job_id, first, min(first + PAGE, total))
            if found:
                yield b"".join(render(index, raw) for index, raw in found)
        return
    deadline = time.monotonic() + wait_s
    cursor, pause, span, last_run = start, FIRST_PAUSE_S, PAGE, PAGE
    while cursor < total:
        stop = min(cursor + span, total)
        run = _leading_run(store.outputs(job_id, cursor, stop), cursor)
        if run and span == 1:  # the item waited on has finished: read on from it
            span = min(PAGE, max(MIN_SPAN, 2 * last_run))
            continue
        if run:
            yield b"".join(render(index, raw) for index, raw in run)
            cursor, pause, last_run = cursor + len(run), FIRST_PAUSE_S, len(run)
            # a whole span came: read a longer one; else it stopped at an item not finished yet: wait on that one
            span = min(PAGE, 2 * span) if cursor == stop else 1
            continue
        if _ended(store, job_id):  # what a job that has ended lacks will not come: send the rest as it is
            yield from follow_stream(store, job_id, total, cursor, 0.0, render)
            return
        if time.monotonic() + pause > deadline:
            return
        time.sleep(pause)
        pause, span = min(pause * 2, MAX_PAUSE_S), 1


def page(store: JobStore, job_id: str, start: int, stop: int, wait_s: float, waiters: Waiters) -> list[tuple[int, bytes]]:
    """The finished items of ``[start, stop)``: once all have finished, the job has ended or ``wait_s`` passed."""
    with waiters.slot(wait_s) as granted:
        return _page(store, job_id, start, stop, granted)


def _page(store: JobStore, job_id: str, start: int, stop: int, wait_s: float) -> list[tuple[int, bytes]]:
    deadline = time.monotonic() + wait_s
    pause = FIRST_PAUSE_S
    while True:
        found = store.outputs(job_id, start, stop)
        if len(found) >= stop - start or wait_s <= 0:
            return found
        if _ended(store, job_id):  # read again: items stored between that read and the end are in this one
            return store.outputs(job_id, start, stop)
        if time.monotonic() + pause > deadline:
            return found
        time.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE_S)


def _leading_run(found: list[tuple[int, bytes]], cursor: int) -> list[tuple[int, bytes]]:
    """The items of ``found`` (in index order) that follow ``cursor`` without a gap."""
    for k, (index, _) in enumerate(found):
        if index != cursor + k:
            return found[:k]
    return found


def _ended(store: JobStore, job_id: str) -> bool:
    job = store.get(job_id)
    return job is None or job["status"] in FINAL_STATUSES
