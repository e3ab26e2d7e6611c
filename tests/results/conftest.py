"""A Redis database of the result-file tests' own, so that no other module's worker writes their jobs' files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from batchery.redis_urls import redis_client
from batchery.settings import Settings
from batchery.store import JobStore
from batchery.store.files import Blobs, FileStore


@pytest.fixture(scope="module")
def own_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    folder = tmp_path_factory.mktemp("results")
    found = dataclasses.replace(
        settings,
        redis_url=settings.redis_url.rsplit("/", 1)[0] + "/3",
        files_url=str(folder / "files"),
        result_files_keep_s=0,
        max_items_per_job=200_000,
    )
    redis_client(found.effective_redis_url).flushdb()  # before anything of the module's starts on it
    return found


@pytest.fixture(scope="module")
def own_store(own_settings: Settings) -> JobStore:
    return own_settings.job_store()


@pytest.fixture(scope="module")
def files(own_settings: Settings, own_store: JobStore) -> FileStore:
    return FileStore(own_store.redis, Blobs(own_settings.effective_files_url), own_settings.file_ttl_s)


def blob_path(settings: Settings, blob: str) -> Path:
    return Path(settings.effective_files_url) / blob
