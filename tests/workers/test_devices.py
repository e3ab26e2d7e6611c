"""GPU discovery through NVML, with NVML replaced at its boundary by tests/workers/fake_nvml."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from batchery.workers.devices import discover_gpus, physical_device

FAKE_NVML = Path(__file__).parent / "fake_nvml"


@pytest.fixture
def fake_nvml(monkeypatch):
    """``import pynvml`` finds the fake, as it does in a process with the fake first on PYTHONPATH."""
    monkeypatch.syspath_prepend(str(FAKE_NVML))
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    yield importlib.import_module("pynvml")
    sys.modules.pop("pynvml", None)


def test_every_gpu_nvml_reports_with_its_index_name_and_memory(fake_nvml, monkeypatch):
    monkeypatch.setenv("FAKE_NVML_GPUS", "2")
    gpus = discover_gpus()
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[1].uuid.startswith("GPU-") and gpus[0].uuid != gpus[1].uuid
    assert gpus[0].memory_bytes == 80 * 2**30 and "Fake GPU" in gpus[0].name
    assert fake_nvml._initialised == 0, "NVML is shut down again after discovery"


def test_no_driver_means_no_gpu(fake_nvml, monkeypatch):
    monkeypatch.delenv("FAKE_NVML_GPUS", raising=False)
    assert discover_gpus() == []


def test_no_pynvml_means_no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert discover_gpus() == []


@pytest.mark.skipif(Path("/proc/driver/nvidia").exists(), reason="this machine has an NVIDIA driver")
def test_the_real_nvml_on_a_machine_without_a_driver_finds_no_gpu():
    assert discover_gpus() == []


@pytest.mark.parametrize(
    ("device", "visible", "expected"),
    [("cuda:0", "3", "cuda:3"), ("cuda:1", "2,5", "cuda:5"), ("cuda:0", None, "cuda:0"), ("cpu", "", "cpu"),
     ("cpu", "1", "cpu"), ("cuda", "4", "cuda:4")],
)
def test_a_pinned_worker_names_its_gpu_as_the_machine_numbers_it(device, visible, expected):
    assert physical_device(device, visible) == expected
