"""Files: bytes that count only once whole, records in Redis, pages after a cursor, expiry."""

from __future__ import annotations

import uuid

import pytest

from batchery import keys
from batchery.errors import NotFound
from batchery.store.files import Blobs, FileStore, new_file_id


@pytest.fixture
def files(redis_client, tmp_path) -> FileStore:
    return FileStore(redis_client, Blobs(str(tmp_path / "blobs")), ttl_s=3600)


def test_a_blob_takes_its_name_only_once_written_whole(files, tmp_path):
    with files.blobs.writing("a/one") as out:
        out.write(b"half")
        assert not (tmp_path / "blobs" / "a" / "one").exists(), "no name until the block ends"
    assert b"".join(files.blobs.chunks("a/one")) == b"half"
    with pytest.raises(RuntimeError), files.blobs.writing("a/two") as out:
        out.write(b"cut short")
        raise RuntimeError("the writer died")
    assert sorted(p.name for p in (tmp_path / "blobs" / "a").iterdir()) == ["one"], "nothing left of the cut one"


def test_records_list_newest_first_after_a_cursor_and_per_owner(files):
    owner = f"tenant-{uuid.uuid4().hex[:8]}"
    made = []
    for n in range(5):
        file_id = new_file_id()
        with files.blobs.writing(f"uploads/{file_id}") as out:
            out.write(b"x" * n)
        made.append(files.create(file_id, f"uploads/{file_id}", n, f"f{n}.jsonl", "batch", owner)["id"])
    page, more = files.list(owner, None, 2)
    assert [f["id"] for f in page] == made[::-1][:2] and more
    page, more = files.list(owner, page[-1]["id"], 10)
    assert [f["id"] for f in page] == made[::-1][2:] and not more
    assert [f["id"] for f in files.list(owner, None, 10, newest_first=False)[0]] == made
    with pytest.raises(NotFound):
        files.list(owner, new_file_id(), 10)
    files.delete(files.get(made[0]))
    assert files.get(made[0]) is None and made[0] not in [f["id"] for f in files.list(owner, None, 10)[0]]


def test_expired_files_are_swept_record_and_bytes(files, redis_client, tmp_path):
    file_id = new_file_id()
    with files.blobs.writing(f"uploads/{file_id}") as out:
        out.write(b"old")
    files.create(file_id, f"uploads/{file_id}", 3, "old.jsonl", "batch", None)
    redis_client.delete(keys.files_sweep())
    assert files.sweep(now=files.get(file_id)["expires_at"] + 1) >= 1
    assert files.get(file_id) is None and not (tmp_path / "blobs" / "uploads" / file_id).exists()
    assert files.sweep() == 0, "one sweep per interval"
