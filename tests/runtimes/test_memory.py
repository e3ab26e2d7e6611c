"""Out-of-memory errors as each framework raises them, on real allocations that fail, become DeviceOutOfMemory."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from batchery.batching import Batcher
from batchery.errors import DeviceOutOfMemory
from batchery.models.registry import ModelSpec
from batchery.runtimes.base import Runtime, load_runtime
from batchery.runtimes.echo import EchoRuntime
from batchery.runtimes.memory import out_of_memory_message
from batchery.settings import Settings
from batchery.store.codec import decode

pytestmark = [pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")]

class Hungry(torch.nn.Module):
    """Needs an impossible buffer for any batch of more than one row: 2**46 floats, more than any machine's
    address space holds, so the allocation fails however big the box."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = 1 if x.shape[0] == 1 else 70368744177664  # 2**46
        scratch = torch.zeros([size])
        return x + scratch[:1]


def hungry_torch(folder: Path, settings: Settings) -> Runtime:
    path = folder / "hungry.pt"
    torch.jit.save(torch.jit.script(Hungry()), str(path))
    return load_runtime(ModelSpec(name="hungry", runtime="torch", path=str(path), input="tensor"), "cpu", settings)


def hungry_onnx(folder: Path, settings: Settings) -> Runtime:
    """A graph whose output is (batch, 2**22, 2**22) floats: ONNX Runtime's arena cannot allocate it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    big = helper.make_tensor("big", TensorProto.INT64, [2], [2**22, 2**22])
    nodes = [
        helper.make_node("Shape", ["x"], ["rows"], start=0, end=1),
        helper.make_node("Concat", ["rows", "big"], ["shape"], axis=0),
        helper.make_node("ConstantOfShape", ["shape"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "hungry", [x], [y], initializer=[big])
    path = folder / "hungry.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    spec = ModelSpec(name="hungry", runtime="onnx", path=str(path), input="tensor", options={"threads": 1})
    return load_runtime(spec, "cpu", settings)


def test_a_failed_torch_allocation_is_device_out_of_memory(tmp_path: Path, data_settings: Settings) -> None:
    runtime = hungry_torch(tmp_path, data_settings)
    assert len(runtime.infer(runtime.prepare([[1.0, 2.0]]))) == 1
    with pytest.raises(DeviceOutOfMemory, match="can't allocate memory"):
        runtime.infer(runtime.prepare([[1.0, 2.0], [3.0, 4.0]]))


def test_a_failed_onnx_runtime_allocation_is_device_out_of_memory(tmp_path: Path, data_settings: Settings) -> None:
    runtime = hungry_onnx(tmp_path, data_settings)
    with pytest.raises(DeviceOutOfMemory, match="(?i)failed to allocate memory"):
        runtime.infer(runtime.prepare([np.zeros(4, dtype=np.float32)] * 2))


def test_torch_out_of_memory_error_is_recognised_by_its_class() -> None:
    runtime = EchoRuntime(ModelSpec("echo-oom", "echo", input="json", options={"oom_above": 2}), "cpu")
    assert runtime.infer(["a", "b"]) == ["a", "b"]
    with pytest.raises(torch.OutOfMemoryError):
        runtime.run(["a", "b", "c"])
    with pytest.raises(DeviceOutOfMemory, match="OutOfMemoryError: synthetic"):
        runtime.infer(["a", "b", "c"])


class Broken(Runtime):
    def run(self, prepared):
        raise ValueError("a bug, not memory")


def test_other_errors_pass_through_as_they_were() -> None:
    with pytest.raises(ValueError, match="a bug"):
        Broken(ModelSpec("b", "broken"), "cpu").infer([1])


@pytest.mark.parametrize(
    "message",
    [
        "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity)",
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDA failure 2: out of memory ; GPU=0",
        "CUDA error cudaErrorMemoryAllocation:out of memory",
        "CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "std::bad_alloc",
    ],
)
def test_the_messages_of_gpu_allocation_failures_are_recognised(message: str) -> None:
    assert out_of_memory_message(RuntimeError(message)) is not None


def test_a_message_without_an_allocation_failure_is_not_out_of_memory() -> None:
    assert out_of_memory_message(RuntimeError("shape mismatch: [2, 3] vs [3, 2]")) is None


def test_through_the_batcher_a_real_allocation_failure_is_split_down_to_what_fits(
    tmp_path: Path, data_settings: Settings, store
) -> None:
    runtime = hungry_torch(tmp_path, data_settings)
    batcher = Batcher(runtime, store, oom_cooldown_s=60).start()
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "hungry", "version": "1", "total": 6})
    ticket = batcher.submit(job_id, [(i, [float(i), 0.5]) for i in range(6)])
    assert ticket.wait(30) and (ticket.succeeded, ticket.failed) == (6, 0)
    batcher.stop()
    outputs = [decode(raw)[1].tolist() for _, raw in store.outputs(job_id, 0, 6)]
    assert outputs == [[float(i), 0.5] for i in range(6)]
    assert batcher.batch_size.current == 1
