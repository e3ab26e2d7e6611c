"""Fixtures for the model tests: the runtime tests' data directory, so MiniLM is exported once a session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from batchery.models.registry import BUILTINS, ModelSpec
from batchery.settings import Settings


@pytest.fixture(scope="session")
def data_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=str(tmp_path_factory.getbasetemp() / "batchery-data"))


@pytest.fixture(scope="session")
def minilm_spec() -> ModelSpec:
    return BUILTINS["minilm"]
