"""The `batchery` command: up, api, worker, worker-check, submit, dlq, models."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path

import click

from batchery import __version__, defaults, stack
from batchery.cli.console import Commands, banner, check_port, client_host, for_a_person
from batchery.cli.pool import Slot, missing_model_files, single_slot, start_pool
from batchery.cli.processes import api_argv, api_env, flower_argv, flower_env, worker_argv
from batchery.cli.redis_server import RedisServer, answers
from batchery.cli.scaler import PoolScaler
from batchery.cli.supervisor import Supervisor
from batchery.cli.warmup import WarmWatch
from batchery.cli.worker_check import check as check_worker
from batchery.errors import ConfigError
from batchery.models.registry import load_registry
from batchery.monitoring.logs import configure as configure_logging
from batchery.redis_urls import redis_client
from batchery.settings import Settings

log = logging.getLogger("batchery")


def _settings(**overrides: object) -> Settings:
    """The settings from the environment and a running `batchery up`, with the command line's on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(Settings.load(), **given)


@click.group(cls=Commands)
@click.version_option(__version__, prog_name="batchery")
def main() -> None:
    """batchery: asynchronous batch inference over Celery."""
    configure_logging(Settings.from_env())


def ensure_redis(settings: Settings, probe_url: str = defaults.LOCAL_REDIS_URL) -> tuple[Settings, RedisServer | None]:
    """Use the configured Redis; else one answering on localhost:6379; else start a private one."""
    if settings.redis_url:
        return settings, None
    if answers(probe_url):
        return dataclasses.replace(settings, redis_url=probe_url), None
    server = RedisServer(settings.data_path / "redis").start()
    log.info("started an embedded redis-server at %s (data in %s)", server.url, server.data_dir)
    return dataclasses.replace(settings, redis_url=server.url), server


DEVICES_HELP = "auto (every GPU, else a CPU pool), cpu, or GPU indices such as 0,1 [BATCHERY_WORKER_DEVICES]"
MIN_HELP = "a CPU pool scales on its backlog down to this many processes [BATCHERY_WORKER_MIN_PROCESSES]"
MAX_HELP = "... and up to this many (neither: a fixed pool) [BATCHERY_WORKER_MAX_PROCESSES]"


@main.command()
@click.option("--host", help="address the API and Flower listen on")
@click.option("--port", type=int, help="API port (8000)")
@click.option("--flower-port", type=int, help="Flower port (5555)")
@click.option("--redis-url", help="Redis for jobs (and the broker unless BATCHERY_BROKER_URL is set)")
@click.option("--models-file", help="TOML or YAML models file")
@click.option("--devices", help=DEVICES_HELP)
@click.option("--min-processes", type=int, help=MIN_HELP)
@click.option("--max-processes", type=int, help=MAX_HELP)
@click.option("--no-flower", is_flag=True, help="do not start Flower")
def up(
    host: str | None, port: int | None, flower_port: int | None, redis_url: str | None, models_file: str | None,
    devices: str | None, min_processes: int | None, max_processes: int | None, no_flower: bool,
) -> None:
    """Run everything on this machine: Redis (if none), the worker pool, the API and Flower. Ctrl-C stops all.

    While it runs, <data dir>/up.json tells commands in other shells where its Redis and API are.
    """
    given = {k: v for k, v in dict(
        host=host, port=port, flower_port=flower_port, redis_url=redis_url, models_file=models_file, worker_devices=devices,
        worker_min_processes=min_processes, worker_max_processes=max_processes,
    ).items() if v is not None}
    settings = for_a_person(dataclasses.replace(Settings.from_env(), **given))
    configure_logging(settings)
    _check_before_starting(settings, flower=not no_flower)
    settings, redis_server = ensure_redis(settings)
    supervisor = Supervisor({**os.environ, **settings.as_env()})
    supervisor.handle_signals()
    code, watch, pool = 1, None, None
    try:
        api_url = f"http://{client_host(settings.host)}:{settings.port}"
        stack.write(settings.data_path, stack.Stack(os.getpid(), settings.effective_redis_url, api_url, settings.broker_url))
        pool = _start_pool(supervisor, settings)
        slots = pool.started
        supervisor.spawn("api", api_argv(settings), api_env())
        if not no_flower:
            supervisor.spawn("flower", flower_argv(settings), flower_env(settings))
        click.echo(f"warming up {len(slots)} worker process{'es' if len(slots) != 1 else ''}; the banner follows once they serve")
        announce = _announcer(settings, slots, flower=not no_flower, embedded=redis_server is not None)
        watch = WarmWatch(redis_client(settings.effective_redis_url), supervisor, [s.name for s in slots],
                          (client_host(settings.host), settings.port), announce).start()
        code = supervisor.run()
    finally:
        cold = watch.cold() if watch is not None else []
        if watch is not None:
            watch.stop()
        click.echo("stopping..." if not cold else f"stopping ({', '.join(cold)} still warming up: not waited for)...")
        supervisor.stop(settings.worker_drain_timeout_s, quick=cold)
        if pool is not None:
            pool.close()
        stack.remove(settings.data_path, os.getpid())
        if redis_server is not None:
            redis_server.stop()
        click.echo("stopped.")
    sys.exit(code)


def _check_before_starting(settings: Settings, flower: bool) -> None:
    """Everything that would make the stack fail, checked before anything is started."""
    running = stack.read(settings.data_path)
    if running is not None:
        raise click.ClickException(
            f"a batchery up (pid {running.pid}) already serves at {running.api_url} from data dir {settings.data_path}: "
            "stop it, or give this one another BATCHERY_DATA_DIR"
        )
    check_port(settings.host, settings.port, "API", "pass --port or set BATCHERY_PORT")
    if flower:
        _check_flower(settings)
        check_port(settings.host, settings.flower_port, "Flower", "pass --flower-port, set BATCHERY_FLOWER_PORT or pass --no-flower")
    _check_models(settings)


def _announcer(settings: Settings, slots: list[Slot], flower: bool, embedded: bool):  # noqa: ANN202
    """What is said once every worker is warm: the banner, and any model a worker could not load."""

    def announce(beats: dict[str, dict]) -> None:
        click.echo(banner(settings, flower=flower, workers=[s.name for s in slots], embedded=embedded))
        for name, beat in beats.items():
            for model, why in (beat.get("unavailable") or {}).items():
                click.echo(f"  {name} could not load model {model}: {why}")

    return announce


def _check_flower(settings: Settings) -> None:
    """Refuse to start Flower without credentials when the API asks for keys: Flower's pages show every chunk
    task, job ids included, to anyone, and it can revoke tasks and shut workers down."""
    if settings.api_keys_configured and not settings.flower_basic_auth:
        raise click.ClickException(
            "API keys are on (BATCHERY_API_KEYS or BATCHERY_API_KEYS_FILE) but Flower has no credentials: "
            "set BATCHERY_FLOWER_BASIC_AUTH=user:password, or pass --no-flower to run without Flower"
        )


def _check_models(settings: Settings) -> None:
    """Refuse to start at all when a model the pool would serve cannot load here: a wrong path is no reason
    to start Redis, the API and workers first and find out from a worker's log."""
    try:
        problems = missing_model_files(settings)
    except ConfigError as exc:
        raise click.ClickException(exc.message)
    if problems:
        raise click.ClickException("the models file names files that are not here: " + "; ".join(problems))


def _start_pool(supervisor: Supervisor, settings: Settings, models: list[str] | None = None) -> PoolScaler:
    try:
        return start_pool(supervisor, settings, models or ())
    except ConfigError as exc:
        raise click.ClickException(exc.message)


@main.command()
@click.option("--host")
@click.option("--port", type=int)
def api(host: str | None, port: int | None) -> None:
    """Serve the HTTP API with gunicorn."""
    settings = _settings(host=host, port=port)
    check_port(settings.host, settings.port, "API", "pass --port or set BATCHERY_PORT")
    os.environ.update({**settings.as_env(), **api_env()})
    argv = api_argv(settings)
    os.execv(argv[0], argv)


PROCESSES_HELP = "processes of a CPU pool (0: one per core; scaling: where it starts) [BATCHERY_WORKER_PROCESSES]"


@main.command()
@click.option("--devices", help=DEVICES_HELP)
@click.option("--processes", type=int, help=PROCESSES_HELP)
@click.option("--min-processes", type=int, help=MIN_HELP)
@click.option("--max-processes", type=int, help=MAX_HELP)
@click.option("--models", default="", help="comma-separated models to serve (default: all placed on each device)")
@click.option("--concurrency", type=int, help="chunk tasks in flight in each worker process")
@click.option("--name", help="run one unsupervised process named NAME@host on BATCHERY_WORKER_DEVICE instead of a pool")
@click.option("--prefix", help="name the pool's processes PREFIX-cpu0@host...: a second pool on one host needs its own [BATCHERY_WORKER_PREFIX]")
def worker(
    devices: str | None, processes: int | None, min_processes: int | None, max_processes: int | None, models: str,
    concurrency: int | None, name: str | None, prefix: str | None,
) -> None:
    """Run the worker pool: one process per GPU, each pinned to it, or a CPU pool; restarted if they die.

    With --min-processes/--max-processes a CPU pool grows and shrinks on its models' backlog (docs/scaling.md).
    SIGTERM or Ctrl-C drains: each process finishes the batches it holds, hands back the chunks it had not
    started, and exits; a process the pool scales away drains the same way.
    """
    settings = _settings(
        worker_concurrency=concurrency, worker_devices=devices, worker_processes=processes,
        worker_min_processes=min_processes, worker_max_processes=max_processes, worker_prefix=prefix,
    )
    wanted = [m for m in models.split(",") if m]
    if name:
        if devices:
            raise click.UsageError("--name runs one process on BATCHERY_WORKER_DEVICE; leave out --devices")
        _exec_single_worker(settings, name, wanted)
    supervisor = Supervisor({**os.environ, **settings.as_env()})
    supervisor.handle_signals()
    code, watch, pool = 1, None, None
    try:
        pool = _start_pool(supervisor, settings, wanted)
        names = [s.name for s in pool.started]
        watch = WarmWatch(redis_client(settings.effective_redis_url), supervisor, names, ("", 0), lambda beats: None)
        code = supervisor.run()
    finally:
        supervisor.stop(settings.worker_drain_timeout_s, quick=watch.cold() if watch is not None else [])
        if pool is not None:
            pool.close()
    sys.exit(code)


def _exec_single_worker(settings: Settings, name: str, models: list[str]) -> None:
    """Become the one Celery worker process, for a supervisor of the operator's own (systemd, a container)."""
    try:
        slot = single_slot(load_registry(settings.models_file), name, settings.worker_device, models)
    except ConfigError as exc:
        raise click.ClickException(exc.message)
    os.environ.update(settings.as_env())
    argv = worker_argv(settings, slot.queues, slot.name)
    os.execv(argv[0], argv)


@main.command("worker-check")
@click.option("--name", help="the worker's --name (default: any worker on this machine)")
def worker_check(name: str | None) -> None:
    """Exit 0 while a worker on this machine has a live heartbeat in Redis, 1 when none has: a liveness probe.

    A Redis that does not answer passes (said on stderr): restarting the worker would not bring it back.
    """
    passed, seen, message = check_worker(_settings().effective_redis_url, name)
    click.echo(message, err=not (passed and seen))
    sys.exit(0 if passed else 1)


@main.command()
@click.argument("input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="output JSONL (default: stdout)")
@click.option("--text", is_flag=True, help="each line is one plain text, not a JSON value")
@click.option("--url", help="API base URL (default: the running `batchery up`'s, or http://BATCHERY_HOST:BATCHERY_PORT)")
@click.option("--lines-per-job", type=int, default=100_000, show_default=True)
@click.option("--quiet", is_flag=True, help="no progress bar")
def submit(
    input_file: Path, model: str, output: Path | None, text: bool, url: str | None, lines_per_job: int, quiet: bool
) -> None:
    """Submit a file of one input per line; write one result line per input line, in order."""
    from batchery.cli.submit import submit_file
    from batchery.client import Client

    settings = _settings()
    client = Client(url or settings.client_url, settings.client_api_key)
    out = output.open("wb") if output else sys.stdout.buffer
    try:
        counts = submit_file(client, input_file, model, out, lines_per_job=lines_per_job, progress=not quiet, text=text)
    finally:
        if output:
            out.close()
    click.echo(f"{counts['succeeded']} succeeded, {counts['failed']} failed of {counts['total']}", err=True)


@main.group()
def dlq() -> None:
    """The dead-letter store: items that exhausted their retries."""


def _dead_letters(settings: Settings):  # noqa: ANN202
    from batchery.store.dead_letters import DeadLetters

    return DeadLetters(redis_client(settings.effective_redis_url))


@dlq.command("list")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--model", help="only this model's")
def dlq_list(limit: int, model: str | None) -> None:
    """Print dead letters as JSON lines, newest first."""
    import orjson

    letters = _dead_letters(_settings())
    for entry in letters.list(0, limit, model):
        click.echo(orjson.dumps(entry).decode())
    click.echo(f"{letters.count()} dead letters in all", err=True)


@dlq.command("retry")
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--model", help="only this model's")
def dlq_retry(limit: int, model: str | None) -> None:
    """Put dead items back into their jobs and queue them again."""
    from batchery.tasks import create_celery
    from batchery.tasks.enqueue import Enqueuer, retry_dead_letters

    settings = _settings()
    enqueuer = Enqueuer(create_celery(settings), settings.job_store(), settings, load_registry(settings.models_file))
    retried = retry_dead_letters(enqueuer, _dead_letters(settings), limit, model)
    click.echo(f"{retried} dead letters queued again")


@dlq.command("purge")
@click.confirmation_option(prompt="Delete every dead letter?")
def dlq_purge() -> None:
    """Delete every dead letter."""
    click.echo(f"{_dead_letters(_settings()).purge()} dead letters purged")


@main.group("models")
def models_group() -> None:
    """The models this deployment serves: the built-ins and those of the models file."""


@models_group.command("check")
@click.option("--models-file", help="TOML or YAML models file [BATCHERY_MODELS_FILE]")
@click.option("--device", help="load them as a worker on this device does: cpu or cuda:N [BATCHERY_WORKER_DEVICE]")
@click.option("--models", default="", help="comma-separated models to check (default: every model)")
def models_check(models_file: str | None, device: str | None, models: str) -> None:
    """Load every model and run one batch through it; print per model OK or what is wrong, and exit 1 if any
    failed. Needs no Redis: run it before deploying a models file."""
    from batchery.cli.check import check_models

    settings = _settings(models_file=models_file, worker_device=device)
    registry = load_registry(settings.models_file)
    verdicts = check_models(registry, settings, settings.worker_device, [m for m in models.split(",") if m])
    for verdict in verdicts:
        click.echo(verdict.line())
    failed = [v.spec.name for v in verdicts if not v.ok]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(verdicts)} models failed the check: {', '.join(failed)}")
