"""Batches shaped for the device, through the real batcher and job store: waiting, token budgets, length
buckets, and out-of-memory splits with the adaptive batch size."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import torch

from batchery.batching import Batcher, BatchHook, add_hook, remove_hook
from batchery.models.registry import ModelSpec
from batchery.runtimes.base import Runtime, load_runtime
from batchery.runtimes.echo import EchoRuntime
from batchery.store.codec import decode
from benchmarks import corpus
from tests.helpers import new_job

#: The tests build a TorchScript model, which torch calls deprecated; the runtime under test is not.
pytestmark = [pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")]


class Seen(BatchHook):
    """When each batch was formed, its size, and each prepared batch's shape."""

    def __init__(self) -> None:
        self.formed: list[tuple[float, int]] = []
        self.shapes = []

    def before_batch(self, spec, items):
        self.formed.append((time.perf_counter(), len(items)))

    def after_prepare(self, spec, items, shape):
        self.shapes.append(shape)

    @property
    def sizes(self) -> list[int]:
        return [size for _, size in self.formed]


@pytest.fixture
def seen():
    hook = add_hook(Seen())
    yield hook
    remove_hook(hook)



class TokenCounter(torch.nn.Module):
    """A text model whose output names its input: its token count and the sum of its token ids."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.stack([attention_mask.sum(1), (input_ids * attention_mask).sum(1)], dim=1).float()


@pytest.fixture(scope="module")
def counter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("counter") / "counter.pt"
    torch.jit.save(torch.jit.script(TokenCounter()), str(path))
    return path


@pytest.fixture(scope="module")
def text_spec(counter_path: Path) -> ModelSpec:
    """A real text runtime (MiniLM's tokenizer, TorchScript) around a model that costs nothing to run."""
    return ModelSpec(
        name="counter", runtime="torch", path=str(counter_path), input="text", max_batch_size=64, max_wait_ms=5,
        max_batch_tokens=4096, options={"source": "minilm", "max_length": 256},
    )


def text_runtime(spec: ModelSpec, data_settings, **changes: Any) -> Runtime:
    return load_runtime(dataclasses.replace(spec, **changes), "cpu", data_settings)


def feed(batcher: Batcher, job_id: str, texts: Sequence[str], chunk: int = 256, threads: int = 4) -> None:
    """As a worker's chunk tasks do: chunks from several threads, each waiting for its own to be stored."""
    chunks = [[(i, texts[i]) for i in range(s, min(s + chunk, len(texts)))] for s in range(0, len(texts), chunk)]
    with ThreadPoolExecutor(threads) as pool:
        tickets = list(pool.map(lambda pairs: batcher.submit(job_id, pairs), chunks))
    assert all(t.wait(60) for t in tickets)
    assert sum(t.succeeded for t in tickets) == len(texts)


def check_counted(store, runtime: Runtime, job_id: str, texts: Sequence[str]) -> None:
    """Every item's output is its own text's token count and id sum: no output went to another item."""
    prepared = runtime.prepare(texts)
    mask = prepared["attention_mask"].numpy()
    expected = np.stack([mask.sum(1), (prepared["input_ids"].numpy() * mask).sum(1)], axis=1)
    got = np.stack([decode(raw)[1] for _, raw in store.outputs(job_id, 0, len(texts))])
    assert np.array_equal(got, expected)


def padded_fraction(shapes) -> float:
    return 1 - sum(s.tokens for s in shapes) / sum(s.padded_tokens for s in shapes)


@pytest.mark.parametrize("kind", ["echo", "text"])
def test_a_full_batch_leaves_at_once_however_long_max_wait_is(kind, store, seen, text_spec, data_settings):
    if kind == "echo":
        runtime = EchoRuntime(ModelSpec("t", "echo", input="json", max_batch_size=8, max_wait_ms=2000), "cpu")
    else:
        runtime = text_runtime(text_spec, data_settings, max_batch_size=8, max_wait_ms=2000)
    batcher = Batcher(runtime, store).start()
    submitted = time.perf_counter()
    ticket = batcher.submit(new_job(store, 8), [(i, f"text number {i}") for i in range(8)])
    assert ticket.wait(10)
    batcher.stop()
    (formed, size), = seen.formed
    assert size == 8 and formed - submitted < 0.2, "a full batch must not wait for max_wait_ms (2 s)"


def test_a_lone_text_leaves_once_it_has_waited_max_wait(store, seen, text_spec, data_settings):
    batcher = Batcher(text_runtime(text_spec, data_settings, max_wait_ms=150), store).start()
    submitted = time.perf_counter()
    assert batcher.submit(new_job(store, 1), [(0, "a lone text")]).wait(10)
    batcher.stop()
    (formed, size), = seen.formed
    assert size == 1 and 0.14 <= formed - submitted < 0.4


def test_no_batch_holds_more_padded_tokens_than_the_budget(store, seen, text_spec, data_settings):
    runtime = text_runtime(text_spec, data_settings, max_batch_tokens=1024)
    texts = corpus.mixed(400, seed=3)
    batcher = Batcher(runtime, store).start()
    job_id = new_job(store, len(texts))
    feed(batcher, job_id, texts)
    batcher.stop()
    assert sum(s.items for s in seen.shapes) == 400
    assert all(s.padded_tokens <= 1024 for s in seen.shapes)
    assert max(s.padded_tokens for s in seen.shapes) > 1024 * 0.75, "the budget is used, not just respected"
    check_counted(store, runtime, job_id, texts)


def test_length_buckets_at_least_halve_the_padding_of_a_mixed_corpus(store, seen, text_spec, data_settings):
    texts = corpus.mixed(1024)
    fractions = {}
    for bucketed in (False, True):
        changes = {} if bucketed else {"bucket_by_length": False, "max_batch_tokens": 0}
        runtime = text_runtime(text_spec, data_settings, **changes)
        seen.shapes.clear()
        batcher = Batcher(runtime, store).start()
        job_id = new_job(store, len(texts))
        feed(batcher, job_id, texts)
        batcher.stop()
        fractions[bucketed] = padded_fraction(seen.shapes)
        check_counted(store, runtime, job_id, texts)
    assert fractions[False] > 0.6
    assert fractions[True] <= fractions[False] / 2, fractions


class SmallDevice(Runtime):
    """Echoes, but raises torch's own out-of-memory error for a batch of more than ``limit`` items."""

    def __init__(self, spec: ModelSpec, limit: int) -> None:
        super().__init__(spec, "cpu")
        self.limit = limit
        self.attempts: list[int] = []

    def run(self, prepared: Sequence[Any]) -> Sequence[Any]:
        self.attempts.append(len(prepared))
        if len(prepared) > self.limit:
            raise torch.OutOfMemoryError(f"test: {len(prepared)} items do not fit")
        return list(prepared)


def test_a_batch_too_big_for_the_device_is_split_and_the_batch_size_drops(store, seen):
    """The rest of the job is sent once the first batch has run: sent at once, its next batches would be
    formed while the first one was still being split, at whatever size the cap had dropped to by then."""
    spec = ModelSpec("t", "echo", input="json", max_batch_size=32, max_wait_ms=1, options={"oom_above": 8})
    batcher = Batcher(EchoRuntime(spec, "cpu"), store, oom_cooldown_s=60).start()
    job_id = new_job(store, 100)
    first = batcher.submit(job_id, [(i, {"i": i}) for i in range(32)])
    assert first.wait(10) and (first.succeeded, first.failed) == (32, 0)
    assert seen.sizes == [32] and batcher.batch_size.current == 8, "split until it fit, and the cap came down"
    rest = batcher.submit(job_id, [(i, {"i": i}) for i in range(32, 100)])
    assert rest.wait(10) and (rest.succeeded, rest.failed) == (68, 0)
    batcher.stop()
    assert [decode(raw)[1] for _, raw in store.outputs(job_id, 0, 100)] == [{"i": i} for i in range(100)]
    assert seen.sizes[1:] == [8] * 8 + [4], "once the cap drops, batches are formed at the size that fits"


def test_out_of_memory_is_split_at_once_not_retried_at_the_size_that_failed(store):
    device = SmallDevice(ModelSpec("t", "small", input="json", max_batch_size=16, max_wait_ms=1), limit=4)
    batcher = Batcher(device, store, oom_cooldown_s=60).start()
    ticket = batcher.submit(new_job(store, 16), [(i, i) for i in range(16)])
    assert ticket.wait(10) and ticket.succeeded == 16
    batcher.stop()
    assert device.attempts == [16, 8, 4, 4, 8, 4, 4], "each half that fails is halved again, none is retried"


def test_the_batch_size_climbs_back_once_the_device_has_room_again(store, seen):
    device = SmallDevice(ModelSpec("t", "small", input="json", max_batch_size=16, max_wait_ms=1), limit=4)
    batcher = Batcher(device, store, oom_cooldown_s=1.0).start()

    def job_of_16() -> list[int]:
        start = len(seen.sizes)
        assert batcher.submit(new_job(store, 16), [(i, i) for i in range(16)]).wait(10)
        return seen.sizes[start:]

    assert job_of_16() == [16] and batcher.batch_size.current == 4
    assert job_of_16() == [4, 4, 4, 4]
    device.limit = 16  # another process let go of the memory
    time.sleep(1.1)
    assert job_of_16() == [8, 8]
    time.sleep(1.1)
    assert job_of_16() == [16]
    batcher.stop()
    assert 0 < device.attempts.count(16) and device.attempts[-1] == 16
