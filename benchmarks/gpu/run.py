"""The phases of ``python -m benchmarks.gpu``, one after another on one private stack.

The batchery worker and the plain Celery worker never run at the same time, so neither takes the device
from the other; a check that fails is recorded as failed and the run goes on, so that one bad check does
not cost the figures of the others (GPU time is short).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

import yaml
from tokenizers import Tokenizer

from batchery.cli.redis_server import free_port
from batchery.models.registry import load_registry
from benchmarks import corpus, gpu_weights
from benchmarks.cpu import CpuMeter, python_thread_names, thread_breakdown, thread_cpu_s
from benchmarks.gpu import checks, device, plain, pool, synthetic
from benchmarks.gpu.load import LoadClient
from benchmarks.gpu.profile import Recording
from benchmarks.stack import Stack

log = logging.getLogger("benchmarks.gpu")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MODELS_FILE = HERE / "models.toml"
WORKER = "gpu"
COSINE_FLOOR = 0.999
#: Not the load's seed: the texts of the latency check are new to every cache.
PREDICT_SEED = 11


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where the run goes: the device kind, ``--devices`` for batchery's worker pool, how the plain Celery
    worker is pinned (by hand, as such a service is), the models table."""

    device: str
    devices: str
    plain_device: str
    plain_env: dict[str, str]
    models: dict[str, Any]
    weights: Path


def plan(device_kind: str, weights: Path) -> Plan:
    """The models file with its paths made absolute, and the device the workers are pinned to."""
    models = tomllib.loads(MODELS_FILE.read_text())["models"]
    options = models["minilm"].setdefault("options", {})
    options["weights"] = str(weights)
    options["tokenizer"] = str(weights / "tokenizer.json")
    if device_kind == "cuda":
        return Plan("cuda", "auto", "cuda:0", {"CUDA_VISIBLE_DEVICES": "0"}, models, weights)
    return Plan("cpu", "cpu", "cpu", {}, models, weights)


def write_models(path: Path, models: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    return path


def guarded(results: dict[str, Any], name: str, body: Callable[[], Any]) -> Any:
    """Run one phase; on failure record the error under ``name`` and go on."""
    try:
        results[name] = body()
    except Exception as exc:
        log.exception("phase %s failed", name)
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "passed": False}
    return results[name]


def run(args: Any, save: Callable[[dict[str, Any]], None] = lambda results: None) -> dict[str, Any]:
    """Every phase, the most wanted first; ``save`` gets the results after each, so a run cut short keeps them."""
    started = time.perf_counter()
    run_plan = plan(device.resolve(args.device), args.weights)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"device_kind": run_plan.device}
    texts = corpus.texts(args.items)
    # The stack closes first on the way out: a client still waiting on a job then fails at once.
    with LoadClient(args.clients) as client, Stack(args.out / "logs", args.data_dir) as stack:
        spec = configure(stack, run_plan, args)
        results["settings"] = {k: v for k, v in dataclasses.asdict(stack.settings).items() if k != "redis_url"}
        results["model"] = spec.describe() | {"options": dict(spec.options)}
        stack.start_api()
        if "minilm" not in args.skip:
            gpu_phases(stack, client, spec, run_plan, args, texts, results, save)
        if "plain" not in args.skip:
            guarded(results, "plain", lambda: plain_phase(stack, run_plan, args))
            save(results)
        if "oom" in args.skip:
            results["oom"] = {"skipped": "--skip oom"}
        elif run_plan.device != "cuda":
            results["oom"] = {"skipped": "no CUDA device: a real CUDA out-of-memory error needs one"}
        else:
            guarded(results, "oom", lambda: oom_phase(stack, spec, run_plan, args))
            save(results)
        if "host" not in args.skip:
            guarded(results, "host", lambda: host_phase(stack, client, run_plan, args, texts))
    results["total_s"] = round(time.perf_counter() - started, 1)
    return results


def configure(stack: Stack, run_plan: Plan, args: Any) -> Any:
    """The stack's settings and models file (minilm, and the synthetic model unless skipped); minilm's spec."""
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    models = dict(run_plan.models)
    if "host" not in args.skip:
        vocab = Tokenizer.from_file(models["minilm"]["options"]["tokenizer"]).get_vocab_size()
        model_path = synthetic.build(stack.scratch / "synthetic-embed.pt", vocab)
        models[synthetic.NAME] = synthetic.models_entry(model_path, models["minilm"])
    stack.settings = dataclasses.replace(
        stack.settings,
        models_file=str(write_models(stack.log_dir / "models.yaml", models)),
        worker_device=run_plan.plain_device,  # the plain Celery worker's; the pool pins its own
        worker_drain_timeout_s=10.0,
        chunk_size=args.chunk_size,
        worker_concurrency=args.concurrency,
        api_workers=args.api_workers,
        api_threads=args.api_threads,
        max_items_per_job=max(args.job_size, args.oom_items, args.check_items, 1000),
        cache_enabled=False,  # every item computed: the warm-up's texts come round again in the load
        worker_metrics_port=free_port(),
    )
    return load_registry(stack.settings.models_file).get("minilm")


def metrics_urls(stack: Stack, worker: pool.PoolWorker) -> list[str]:
    """The API's ``/metrics`` and the worker's own exporter, at the port its heartbeat gives."""
    return [f"{stack.api_url}/metrics", *([worker.metrics_url] if worker.metrics_url else [])]


def timed_load(
    stack: Stack, client: LoadClient, model: str, texts: list[str], args: Any, worker: pool.PoolWorker, gpu: bool
) -> dict[str, Any]:
    """The load, with NVML and the metrics sampled and, with ``--profile``, py-spy on the worker and the API."""
    api_pid = stack.children["api"].process.pid
    spied = {f"{worker.name}-worker": worker.pid, f"{worker.name}-api": api_pid}
    sampler = device.Sampler(metrics_urls(stack, worker), 0 if gpu else None)
    meter = CpuMeter({"worker": worker.pid, "api": api_pid, "redis": stack.redis_pid})
    names = python_thread_names(worker.pid)
    with sampler, Recording(spied if args.profile else {}, args.out, stack.log_dir) as spy:
        threads_before = thread_cpu_s(worker.pid)
        meter.start()
        load = client.run(stack.api_url, model, texts, args.job_size)
        cpu = meter.stop()
        threads = thread_breakdown(threads_before, thread_cpu_s(worker.pid), names, top=12)
    return {
        **load,
        "cpu_us_per_item": cpu_per_item(cpu, load),
        "worker_threads_cpu_s": threads,
        "during": sampler.summary(),
        "profiles": spy.files,
    }


def cpu_per_item(cpu: dict[str, float], load: dict[str, Any]) -> dict[str, float]:
    """CPU microseconds per item of each process group: where the host's cores went, on a busy machine too.

    ``client`` is the client processes; ``bench`` this process (the samplers); ``others`` the rest of the
    machine, py-spy included when profiling.
    """
    clients = load["client_processes_cpu_s"]
    used = {**cpu, "bench": cpu.pop("client"), "client": clients}
    used["others"] = max(cpu["others"] - clients, 0.0)
    return {name: round(seconds / load["items"] * 1e6, 1) for name, seconds in used.items()}


def host_phase(stack: Stack, client: LoadClient, run_plan: Plan, args: Any, texts: list[str]) -> dict[str, Any]:
    """The same load through the synthetic model: the host path's ceiling on this machine."""
    worker = pool.start(stack, "host", [synthetic.NAME], run_plan.devices)
    try:
        checks.embed_through_api(stack.api_url, texts[: args.warmup_items], synthetic.NAME)
        result = timed_load(stack, client, synthetic.NAME, texts, args, worker, run_plan.device == "cuda")
    finally:
        pool.stop(stack, worker)
    result.pop("samples")
    return result


def gpu_phases(
    stack: Stack,
    client: LoadClient,
    spec: Any,
    run_plan: Plan,
    args: Any,
    texts: list[str],
    results: dict[str, Any],
    save: Callable[[dict[str, Any]], None],
) -> None:
    """minilm on the device: the worker's report, warm-up, the timed load, agreement and latency."""
    gpu = run_plan.device == "cuda"
    worker_started = time.perf_counter()
    worker = pool.start(stack, WORKER, ["minilm"], run_plan.devices)
    try:
        results["worker"] = {
            "start_s": round(time.perf_counter() - worker_started, 2),
            "command": f"batchery worker --devices {run_plan.devices} --models minilm",
            "pinned_to": "0" if gpu else None,
            "reports": [worker.report],
            "workers_endpoint": device.workers_document(stack.api_url),
            "model_document": device.model_document(stack.api_url, "minilm"),
        }
        checks.embed_through_api(stack.api_url, texts[: args.warmup_items])
        results["after_warmup"] = {
            "nvml": device.nvml_reading(0) if gpu else None,
            "metrics_gauges": device.summarize_gauges(device.scrape(metrics_urls(stack, worker))),
        }
        load = timed_load(stack, client, "minilm", texts, args, worker, gpu)
        samples = load.pop("samples")
        results["during_load"] = load.pop("during")
        results["load"] = load
        save(results)
        if "agreement" not in args.skip:
            guarded(results, "agreement", lambda: agreement_phase(stack.api_url, spec, run_plan, args, texts, samples))
        if "predict" not in args.skip:
            time.sleep(1.0)  # idle: whatever the load left behind has drained
            predict_texts = corpus.texts(args.predict_requests, seed=PREDICT_SEED)
            guarded(results, "predict", lambda: checks.predict_latency(stack.api_url, predict_texts))
        results["after_load"] = {"nvml": device.nvml_reading(0) if gpu else None}
        save(results)
    finally:
        pool.stop(stack, worker)


def agreement_phase(
    api_url: str, spec: Any, run_plan: Plan, args: Any, texts: list[str], samples: list[Any]
) -> dict[str, Any]:
    """The served embeddings of the reference test set against the float32 references, item by item."""
    import numpy as np

    check_texts, original = gpu_weights.load_reference(run_plan.weights)
    check_texts, original = check_texts[: args.check_items], original[: args.check_items]
    served, errors = checks.embed_through_api(api_url, check_texts)
    same_weights = checks.cpu_reference(spec, run_plan.weights, check_texts)
    sampled_texts = [texts[index] for index, _ in samples]
    sampled = np.array([vector for _, vector in samples], dtype=np.float32)
    vs_original = checks.agreement(served, original, COSINE_FLOOR)
    vs_same = checks.agreement(served, same_weights, COSINE_FLOOR)
    vs_load = checks.agreement(sampled, checks.cpu_reference(spec, run_plan.weights, sampled_texts), COSINE_FLOOR)
    return {
        "floor": COSINE_FLOOR,
        "errors": errors[:5],
        "vs_fp32_original_weights": vs_original,
        "vs_fp32_same_weights_cpu": vs_same,
        "load_samples_vs_fp32_same_weights_cpu": vs_load,
        "passed": vs_original["passed"] and vs_same["passed"] and vs_load["passed"] and not errors,
    }


def oom_phase(stack: Stack, spec: Any, run_plan: Plan, args: Any) -> dict[str, Any]:
    """A worker whose share of the GPU is capped low: a full batch of long texts raises a real CUDA OOM."""
    reading = device.nvml_reading(0)
    fraction = args.oom_fraction or args.oom_limit_mb / reading["memory_total_mb"]
    minilm = run_plan.models["minilm"]
    # No token budget here: a full batch of 512 long texts is what must not fit.
    on_cuda = {**minilm["on"]["cuda"], "max_batch_tokens": 0}
    options = {**minilm["options"], "cuda_memory_fraction": fraction}
    models = {**run_plan.models, "minilm": {**minilm, "options": options, "on": {**minilm["on"], "cuda": on_cuda}}}
    settings = dataclasses.replace(stack.settings, models_file=str(write_models(stack.log_dir / "models-oom.yaml", models)))
    worker = pool.start(stack, "oom", ["minilm"], run_plan.devices, settings)
    texts = checks.long_texts(args.oom_items)
    try:
        started = time.perf_counter()
        served, errors = checks.embed_through_api(stack.api_url, texts)
        seconds = time.perf_counter() - started
    finally:
        pool.stop(stack, worker)
    splits = checks.splits_in_log(worker.log_path)
    agree = checks.agreement(served, checks.cpu_reference(spec, run_plan.weights, texts), COSINE_FLOOR)
    return {
        "memory_fraction": round(fraction, 6),
        "limit_mb": round(fraction * reading["memory_total_mb"], 1),
        "items": len(texts),
        "seconds": round(seconds, 2),
        "errors": len(errors),
        "first_errors": errors[:5],
        "oom_splits": len(splits),
        "oom_batch_sizes": sorted(set(splits), reverse=True),
        "agreement": agree,
        "passed": bool(splits) and not errors and agree["passed"],
    }


def plain_phase(stack: Stack, run_plan: Plan, args: Any) -> dict[str, Any]:
    """Plain Celery, one task per text, the same model on the same device, for ``--plain-seconds``."""
    started = time.perf_counter()
    worker = stack.start_plain_worker(
        args.plain_pool, args.plain_concurrency, timeout_s=600.0, app="benchmarks.gpu.plain",
        extra_env=run_plan.plain_env,
    )
    app = plain.create_app(stack.settings.effective_redis_url)
    texts = corpus.texts(10_000, seed=PREDICT_SEED + 1)
    try:
        plain.warm(app, texts, args.plain_concurrency * 4)
        ready_s = time.perf_counter() - started
        figures = plain.run_for(app, texts, args.plain_seconds, args.plain_window)
    finally:
        app.close()
        stack.stop(worker.name)
    return {"pool": args.plain_pool, "concurrency": args.plain_concurrency, "ready_s": round(ready_s, 1), **figures}
