"""Files: what clients upload (``POST /v1/files``) and what batches write, as bytes in a blob store with a record
in Redis.

The bytes live wherever ``BATCHERY_FILES_URL`` says, through fsspec (a folder under the data dir by default; an
``s3://`` or other URL for API processes on several hosts). A file exists for clients only through its record,
and its record is written only once its bytes are whole in their place: they are written under a temporary name
and moved there (a rename on a local disk; an object that appears whole on an object store). A process that dies
while writing leaves at most a temporary blob, which no record names, so a half-written file never counts.

Files live ``BATCHERY_FILE_TTL_S``; an API process sweeps the expired ones (record first, then bytes) at most
once every :data:`batchery.keys.FILE_SWEEP_EVERY_S`.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import IO, Any, Iterator

import fsspec
import redis

from batchery import keys
from batchery.store.listing import page

log = logging.getLogger(__name__)
#: Files swept per sweep at most: the rest wait for the next one.
SWEEP_BATCH = 100
READ_BLOCK = 1 << 20


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


class Blobs:
    """Bytes by name under one root of an fsspec filesystem."""

    def __init__(self, url: str) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.root = self.root.rstrip("/")
        self.fs.makedirs(self.root, exist_ok=True)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[IO[bytes]]:
        """A file to write ``name`` into: it takes the name only when the block ends without an error."""
        final = self.path(name)
        partial = f"{final}.partial-{uuid.uuid4().hex[:12]}"
        self.fs.makedirs(final.rpartition("/")[0], exist_ok=True)
        try:
            with self.fs.open(partial, "wb") as out:
                yield out
            self.fs.mv(partial, final)
        finally:
            if self.fs.exists(partial):
                self.fs.rm(partial)

    def open(self, name: str) -> IO[bytes]:
        return self.fs.open(self.path(name), "rb", block_size=READ_BLOCK)

    def chunks(self, name: str, size: int = READ_BLOCK) -> Iterator[bytes]:
        with self.open(name) as source:
            while block := source.read(size):
                yield block

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(name))


class FileStore:
    """File records in Redis, and their bytes in :class:`Blobs`."""

    def __init__(self, client: redis.Redis, blobs: Blobs, ttl_s: int) -> None:
        self.redis = client
        self.blobs = blobs
        self.ttl_s = ttl_s

    def record(
        self,
        pipe: redis.client.Pipeline,
        file_id: str,
        blob: str,
        size: int,
        filename: str,
        purpose: str,
        owner: str | None,
        now: float | None = None,
    ) -> dict[str, Any]:
        """Queue the commands that make a file whose bytes are whole at ``blob`` exist; returns its record."""
        now = now or time.time()
        fields: dict[str, Any] = {
            "id": file_id,
            "blob": blob,
            "bytes": size,
            "filename": filename,
            "purpose": purpose,
            "created_at": int(now),
            "expires_at": int(now + self.ttl_s),
            "owner": owner or "",
        }
        pipe.hset(keys.file(file_id), mapping=fields)
        pipe.zadd(keys.files(), {file_id: now})
        pipe.zadd(keys.files_expiry(), {file_id: now + self.ttl_s})
        if owner:
            pipe.zadd(keys.tenant_files(owner), {file_id: now})
        return _parse(fields)

    def create(
        self, file_id: str, blob: str, size: int, filename: str, purpose: str, owner: str | None
    ) -> dict[str, Any]:
        pipe = self.redis.pipeline()
        found = self.record(pipe, file_id, blob, size, filename, purpose, owner)
        pipe.execute()
        return found

    def get(self, file_id: str) -> dict[str, Any] | None:
        return _parse({k.decode(): v.decode() for k, v in self.redis.hgetall(keys.file(file_id)).items()})

    def list(
        self, owner: str | None, after: str | None, limit: int, newest_first: bool = True, purpose: str | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of the files of ``owner`` (of everyone with None), and whether more follow. With a
        ``purpose``, the page holds only such files, and may hold fewer than ``limit`` though more follow."""
        key = keys.files() if owner is None else keys.tenant_files(owner)
        ids, more = page(self.redis, key, after, limit, newest_first)
        pipe = self.redis.pipeline(transaction=False)
        for file_id in ids:
            pipe.hgetall(keys.file(file_id))
        found = [_parse({k.decode(): v.decode() for k, v in raw.items()}) for raw in pipe.execute()]
        return [f for f in found if f is not None and purpose in (None, f["purpose"])], more

    def delete(self, file: dict[str, Any]) -> None:
        """The record first, so that no client is shown a file whose bytes are going."""
        pipe = self.redis.pipeline()
        pipe.delete(keys.file(file["id"]))
        pipe.zrem(keys.files(), file["id"])
        pipe.zrem(keys.files_expiry(), file["id"])
        if file.get("owner"):
            pipe.zrem(keys.tenant_files(file["owner"]), file["id"])
        pipe.execute()
        if file.get("blob"):
            self.blobs.delete(file["blob"])

    def sweep(self, now: float | None = None) -> int:
        """Delete files past their ``expires_at``, at most once per sweep interval across API processes."""
        now = now or time.time()
        if not self.redis.set(keys.files_sweep(), 1, nx=True, ex=keys.FILE_SWEEP_EVERY_S):
            return 0
        expired = [m.decode() for m in self.redis.zrangebyscore(keys.files_expiry(), "-inf", now, 0, SWEEP_BATCH)]
        for file_id in expired:
            found = self.get(file_id) or {"id": file_id, "blob": "", "owner": ""}
            self.delete(found)
        return len(expired)


def _parse(raw: dict[str, Any]) -> dict[str, Any] | None:
    if not raw:
        return None
    found = dict(raw)
    for name in ("bytes", "created_at", "expires_at"):
        found[name] = int(found[name])
    found["owner"] = found.get("owner") or None
    return found
