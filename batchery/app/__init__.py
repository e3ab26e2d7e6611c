"""The HTTP API: a Flask app factory, served by gunicorn (`batchery api`, `batchery up`)."""

from __future__ import annotations

from flask import Flask

from batchery.app import dead_letters, health, jobs, models, workers
from batchery.app.errors import register_error_handlers
from batchery.app.services import Services
from batchery.models.registry import load_registry
from batchery.settings import Settings, get_settings
from batchery.tasks.celery_app import create_celery
from batchery.tasks.enqueue import Enqueuer


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    app = Flask("batchery")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    registry = load_registry(settings.models_file)
    store = settings.job_store()
    celery = create_celery(settings)
    enqueuer = Enqueuer(celery, store, settings, registry)
    store.on_release = enqueuer.release
    app.extensions["batchery"] = Services(settings=settings, registry=registry, store=store, celery=celery, enqueuer=enqueuer)
    for blueprint in (jobs.bp, models.bp, workers.bp, dead_letters.bp, health.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    return app
