"""The HTTP API: a Flask app factory, served by gunicorn (`batchery api`, `batchery up`)."""

from __future__ import annotations

from flask import Flask

from batchery import tracing
from batchery.app import auth, dead_letters, discovery, health, jobs, models, overview, page, weights, workers
from batchery.app.openai import batches, embeddings, files
from batchery.app.access import register_request_log
from batchery.app.follow import Waiters
from batchery.app.errors import register_error_handlers
from batchery.app.services import Services
from batchery.app.views import check_host
from batchery.models.registry import load_registry
from batchery.monitoring.metrics import record_job_finished
from batchery.rollouts import Router, WeightStore
from batchery.settings import Settings, get_settings
from batchery.store.batches import BatchStore
from batchery.store.files import Blobs, FileStore
from batchery.store.idempotency import IdempotencyKeys
from batchery.store.quotas import Quotas
from batchery.tasks.celery_app import create_celery
from batchery.tasks.enqueue import Enqueuer


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    app = Flask("batchery", static_folder=None)  # the jobs page blueprint owns /static
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    tracing.configure(settings, "batchery-api")
    tracing.instrument_app(app)
    registry = load_registry(settings.models_file)
    store = settings.job_store()
    celery = create_celery(settings)
    enqueuer = Enqueuer(celery, store, settings, registry)
    store.on_finish = record_job_finished
    weight_store = WeightStore(store.redis, registry, settings.models_file)
    app.extensions["batchery"] = Services(
        settings=settings, registry=registry, store=store, celery=celery, enqueuer=enqueuer,
        idempotency=IdempotencyKeys(store.redis, settings.job_ttl_s), quotas=Quotas(store.redis, settings.job_ttl_s),
        files=FileStore(store.redis, Blobs(settings.effective_files_url), settings.file_ttl_s),
        batches=BatchStore(store.redis, settings.job_ttl_s), weights=weight_store,
        router=Router(registry, weight_store), waiters=Waiters(settings.api_threads // 2),
    )
    blueprints = (
        jobs.bp, models.bp, weights.bp, workers.bp, dead_letters.bp, overview.bp, health.bp, discovery.bp, page.bp
    )
    for blueprint in (*blueprints, embeddings.bp, files.bp, batches.bp):
        app.register_blueprint(blueprint)
    register_request_log(app)
    if not settings.public_url:
        app.before_request(check_host)
    auth.install(app, settings)
    register_error_handlers(app)
    return app
