"""The worker pool of one machine: one process per GPU, or a CPU pool sized to the cores.

Each slot is one Celery worker process with its own device, node name (``gpu1@host``, ``cpu0@host``),
queues (the models placed on its device) and environment. A GPU slot's environment names its GPU in
``CUDA_VISIBLE_DEVICES`` before the process starts, so nothing in it can touch another GPU; its models run
on ``cuda:0``, the only GPU it sees. `batchery worker` and `batchery up` both start their workers from here.
A CPU pool is planned for its maximum size and started at its minimum when it scales (:mod:`batchery.cli.scaler`);
each process's share of the cores is taken at the maximum, so a full pool never runs more threads than cores.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
from dataclasses import dataclass
from typing import Callable, Sequence

import redis

from batchery import keys
from batchery.cli.processes import worker_argv
from batchery.cli.scaler import PoolScaler
from batchery.cli.supervisor import Child, Supervisor
from batchery.errors import ConfigError
from batchery.models.registry import ModelSpec, Registry, load_registry
from batchery.redis_urls import redis_client
from batchery.scaling import ScalePolicy
from batchery.settings import Settings
from batchery.store.heartbeats import read_workers
from batchery.tiers import TIERS
from batchery.workers.devices import Gpu, cpu_cores, discover_gpus

log = logging.getLogger(__name__)
#: What a pool's process names may start with (``--prefix``): characters a Celery node name takes.
PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The scaler reads Redis on the supervisor's loop: a Redis that hangs delays restarts by at most this, per read.
SCALER_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Slot:
    """One worker process of the pool; ``number`` is its place in the pool (its metrics port offset)."""

    number: int
    name: str
    device: str
    models: tuple[str, ...]
    queues: tuple[str, ...]

    @property
    def gpu_index(self) -> int | None:
        return int(self.device.partition(":")[2]) if self.device.startswith("cuda:") else None

    def settings(self, base: Settings, threads: int) -> Settings:
        """The settings this slot's process runs with: its device as it sees it, its cores, its port."""
        return dataclasses.replace(
            base,
            worker_device="cpu" if self.gpu_index is None else "cuda:0",
            worker_threads=base.worker_threads or threads,
            worker_metrics_port=base.worker_metrics_port + self.number if base.worker_metrics_port else 0,
        )

    def env(self, base: Settings, threads: int) -> dict[str, str]:
        """Environment for the process: its settings, and the one GPU it may see (none for a CPU slot)."""
        visible = "" if self.gpu_index is None else str(self.gpu_index)
        cuda = {"CUDA_VISIBLE_DEVICES": visible, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        return {**self.settings(base, threads).as_env(), **cuda}


def pool_devices(devices: str, gpus: Sequence[Gpu], cpu_processes: int, prefix: str = "") -> list[tuple[str, str]]:
    """``(name, device)`` per process for ``--devices``: ``auto``, ``cpu``, or GPU indices, comma-separated.

    ``auto`` is every GPU NVML reports, or a CPU pool when there is none; ``cpu`` is ``cpu_processes``
    processes on the CPU. ``0,1`` names GPUs as nvidia-smi numbers them, and ``0,cpu`` mixes the two.
    Names are ``cpu0``, ``gpu1``...; with a ``prefix``, ``<prefix>-cpu0``: a second pool on the same host needs one.
    """
    if prefix and PREFIX.fullmatch(prefix) is None:
        raise ConfigError(f"a worker prefix is letters, digits, '-' and '_' (at most 64), not {prefix!r}")
    return [(f"{prefix}-{name}" if prefix else name, device) for name, device in _pool_devices(devices, gpus, cpu_processes)]


def _pool_devices(devices: str, gpus: Sequence[Gpu], cpu_processes: int) -> list[tuple[str, str]]:
    tokens = [t.strip() for t in devices.split(",") if t.strip()] or ["auto"]
    if tokens == ["auto"]:
        tokens = [str(gpu.index) for gpu in gpus] or ["cpu"]
    known = {gpu.index for gpu in gpus}
    chosen: list[tuple[str, str]] = []
    for token in dict.fromkeys(tokens):
        index = token.removeprefix("cuda:")
        if token == "cpu":
            chosen += [(f"cpu{k}", "cpu") for k in range(cpu_processes)]
        elif index.isdigit() and int(index) in known:
            chosen.append((f"gpu{int(index)}", f"cuda:{int(index)}"))
        elif index.isdigit():
            raise ConfigError(f"--devices names GPU {index}, but NVML reports {len(gpus)} GPU(s): {sorted(known)}")
        else:
            raise ConfigError(f"--devices takes auto, cpu or GPU indices such as 0,1; not {token!r}")
    return chosen


def names_in_use(client: redis.Redis, names: Sequence[str]) -> dict[str, int]:
    """Which of ``names`` worker processes of this host already have, ready or still loading: name -> pid, for
    a heartbeat whose process still runs (a heartbeat left by a process that died is not a use)."""
    wanted = {f"{name}@{socket.gethostname()}": name for name in names}
    found = {}
    for beat in read_workers(client):
        name, pid = wanted.get(beat.get("hostname", "")), beat.get("pid")
        if name is not None and isinstance(pid, int) and _running(pid):
            found[name] = pid
    return found


def refuse_names_in_use(client: redis.Redis, names: Sequence[str]) -> None:
    """Two pools on one host with the same process names would share heartbeats, and each would take the
    other's processes for dead and requeue their chunks: the second pool is refused before it starts."""
    taken = names_in_use(client, names)
    if taken:
        listed = ", ".join(f"{name} (pid {pid})" for name, pid in sorted(taken.items()))
        raise ConfigError(
            f"worker processes of another pool run on this host under the same names: {listed}; stop that pool, "
            "or name this one apart with --prefix (BATCHERY_WORKER_PREFIX), and give it its own "
            "BATCHERY_WORKER_METRICS_PORT"
        )


def check_names_free(redis_url: str, names: Sequence[str]) -> None:
    """:func:`refuse_names_in_use`, when Redis answers: a pool started before its Redis is up (compose, systemd)
    starts as it always did, its processes waiting for Redis, with a warning that the names went unchecked."""
    try:
        with redis_client(redis_url, socket_timeout=SCALER_TIMEOUT_S, socket_connect_timeout=SCALER_TIMEOUT_S) as client:
            refuse_names_in_use(client, names)
    except redis.RedisError as exc:
        log.warning("could not check that no other pool of this host runs as %s (%s): starting anyway", names, exc)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True


def plan_pool(registry: Registry, devices: Sequence[tuple[str, str]], models: Sequence[str] = ()) -> list[Slot]:
    """One slot per device that has models placed on it (of ``models`` when given, else of all)."""
    wanted = {s.key for s in registry.select(models)}
    slots: list[Slot] = []
    served: set[str] = set()
    for name, device in devices:
        specs = [s for s in registry.placed_on(device) if not wanted or s.key in wanted]
        if not specs:
            log.warning("none of the models to serve is placed on %s: no worker process for it", device)
            continue
        slots.append(Slot(len(slots), name, device, tuple(s.key for s in specs), tier_queues(specs)))
        served.update(s.key for s in specs)
    unplaced = sorted((wanted or {s.key for s in registry}) - served)
    if wanted and unplaced:
        raise ConfigError(f"no device of this pool runs {unplaced}: see their devices in the models file")
    if unplaced:
        log.warning("models placed on none of this pool's devices, not served here: %s", unplaced)
    if not slots:
        raise ConfigError("no model is placed on any device of this pool: nothing to run")
    return slots


def single_slot(registry: Registry, name: str, device: str, models: Sequence[str] = ()) -> Slot:
    """One process under a name of the caller's choosing, on the device the settings give it."""
    specs = registry.select(models) if models else registry.placed_on(device)
    elsewhere = [s.key for s in specs if not s.placed_on(device)]
    if elsewhere:
        raise ConfigError(f"models {elsewhere} are not placed on {device}: see their devices in the models file")
    if not specs:
        raise ConfigError(f"no model is placed on {device}: nothing to run")
    return Slot(0, name, device, tuple(s.key for s in specs), tier_queues(specs))


def tier_queues(specs: Sequence[ModelSpec]) -> tuple[str, ...]:
    """The queues of ``specs``, every model's highest tier first: the order a worker asks the broker in."""
    return tuple(spec.queue_for(tier) for tier in TIERS for spec in specs)


def threads_per_process(cores: int, processes: int) -> int:
    """Each process's share of the cores, so K processes on C cores run C/K threads each, not C each."""
    return max(1, cores // max(1, processes))


def missing_model_files(settings: Settings, models: Sequence[str] = ()) -> list[str]:
    """What this machine's pool would fail to load for want of a file, per model and device kind."""
    registry = load_registry(settings.models_file)
    slots = plan_pool(registry, pool_devices(settings.worker_devices, discover_gpus(), 1), models)
    kinds = {"cuda" if slot.gpu_index is not None else "cpu" for slot in slots}
    served = {name for slot in slots for name in slot.models}
    return [problem for spec in registry if spec.key in served for kind in sorted(kinds) for problem in spec.missing_files(kind)]


def start_pool(supervisor: Supervisor, settings: Settings, models: Sequence[str] = ()) -> PoolScaler:
    """Plan the pool for ``settings.worker_devices`` and start one supervised worker process per slot, a scaling
    CPU pool's at its start size; the scaler returned watches on the supervisor's loop (``.started``: the slots)."""
    registry = load_registry(settings.models_file)
    cores = cpu_cores()
    gpus = discover_gpus()
    for gpu in gpus:
        log.info("GPU %d: %s, %.1f GiB, %s", gpu.index, gpu.name, gpu.memory_bytes / 2**30, gpu.uuid)
    policy = ScalePolicy.from_settings(settings, cores)
    slots = plan_pool(registry, pool_devices(settings.worker_devices, gpus, policy.max_processes, settings.worker_prefix), models)
    check_names_free(settings.effective_redis_url, [slot.name for slot in slots])
    threads = threads_per_process(cores, len(slots))
    recover = dead_worker_recovery(settings)

    def launch(slot: Slot) -> None:
        log.info("%s on %s serves %s", slot.name, slot.device, ", ".join(slot.models))
        argv = worker_argv(slot.settings(settings, threads), slot.queues, slot.name)
        supervisor.spawn(slot.name, argv, slot.env(settings, threads), restart=True, on_death=recover)

    cpu = [slot for slot in slots if slot.gpu_index is None]
    scaler = PoolScaler(
        supervisor, policy, cpu, launch, redis_client(
            settings.effective_redis_url, socket_timeout=SCALER_TIMEOUT_S, socket_connect_timeout=SCALER_TIMEOUT_S
        ),
        sorted({m for slot in cpu for m in slot.models}), settings.worker_drain_timeout_s,
        fixed=[slot for slot in slots if slot.gpu_index is not None],
    )
    if not cpu and not policy.fixed and (settings.worker_min_processes or settings.worker_max_processes):
        log.warning("this pool has no CPU process: its GPU processes do not scale, the scaling settings are ignored")
    scaler.start(policy.start_size(settings.worker_processes))
    supervisor.watchers.append(scaler)
    return scaler


def dead_worker_recovery(settings: Settings) -> Callable[[Child], None]:
    """What the supervisor does the moment a worker process dies: its chunks go back to their queues now,
    not after the broker's visibility timeout, and its heartbeat goes, so readiness reflects the death."""
    janitors: list = []

    def recover(child: Child) -> None:
        from batchery.recovery import Janitor
        from batchery.tasks.celery_app import create_celery
        from batchery.tasks.enqueue import Enqueuer

        if not janitors:
            enqueuer = Enqueuer(create_celery(settings), settings.job_store(), settings, load_registry(settings.models_file))
            janitors.append(Janitor(enqueuer, settings, f"supervisor@{socket.gethostname()}"))
        hostname = worker_hostname(child.name)
        janitors[0].redis.delete(keys.worker(hostname))
        recovered = janitors[0].recover_host(hostname)
        log.info("%s: %d chunks it held are back in their queues", child.name, recovered)

    return recover


def worker_hostname(name: str) -> str:
    """The Celery hostname of a pool process named ``name`` (``--hostname=NAME@%h``)."""
    return f"{name}@{socket.gethostname()}"
