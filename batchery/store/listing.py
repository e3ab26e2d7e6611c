"""Pages of a sorted set of ids, after a cursor: how OpenAI-style lists (``after``, ``limit``) are read."""

from __future__ import annotations

import redis

from batchery.errors import NotFound


def page(
    client: redis.Redis, key: str, after: str | None, limit: int, newest_first: bool = True
) -> tuple[list[str], bool]:
    """Up to ``limit`` ids of ``key`` that come after the id ``after`` (from the start without one), and whether
    more follow. A cursor that is not in the set (deleted, expired, never was) is a 404: a page after it is
    unknowable."""
    start = 0
    if after is not None:
        rank = client.zrevrank(key, after) if newest_first else client.zrank(key, after)
        if rank is None:
            raise NotFound(f"'after' names {after!r}, which is not in this list (any more)", param="after")
        start = rank + 1
    read = client.zrevrange if newest_first else client.zrange
    found = [m.decode() for m in read(key, start, start + limit)]
    return found[:limit], len(found) > limit
