"""The Celery application: JSON only, late acknowledgement, one queue per model.

Delivery choices (see the README's operations section):
- ``task_acks_late`` with ``task_reject_on_worker_lost``: a chunk is acknowledged only after its outputs are
  stored, so a worker that dies mid-chunk gets it redelivered; chunks are idempotent, so that is safe.
- The Redis transport's ``visibility_timeout`` is set from the settings (default 10 minutes): longer than the
  slowest chunk, short enough that a chunk held by a killed worker comes back soon.
- kombu sweeps for such chunks every ``unacked_restore_interval * unacked_restore_throttle`` seconds (100 by
  default, which would add up to 100 s to the timeout); batchery sweeps every tenth of the timeout (1-10 s).
- ``worker_prefetch_multiplier = 1``: reserved-but-unstarted chunks are invisible to other workers.
- Each model has a direct exchange of its own, ``batchery.<model>``, to which its tier queues are bound by their
  names; left to Celery, every queue was bound to one exchange named after the first model's standard queue.
- A ``rediss://`` broker or result backend gets its TLS options from its URL (:mod:`batchery.redis_urls`).
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from batchery import defaults
from batchery.models.registry import Registry, load_registry
from batchery.monitoring.logs import connect_celery_signals
from batchery.redis_urls import ssl_options
from batchery.settings import Settings
from batchery.tasks import transport
from batchery.tiers import STANDARD


#: How long one BRPOP of a worker's consumer blocks on Redis (see ``polling_interval`` below).
BRPOP_TIMEOUT_S = 0.25

#: Where a message that names no queue of a model would go (batchery sends none such).
EXCHANGE = "batchery"


def model_queues(registry: Registry) -> list[Queue]:
    """Every model's tier queues, each bound by its own name to the model's exchange: ``batchery.<model>``
    (the queue prefix and the model's name), which Flower and RabbitMQ's management pages show by model."""
    queues = []
    for spec in registry:
        exchange = Exchange(f"{EXCHANGE}.{spec.name}", type="direct")
        queues += [Queue(queue, exchange, routing_key=queue) for queue in spec.queues]
    return queues


def create_celery(settings: Settings) -> Celery:
    app = Celery("batchery")
    registry = load_registry(settings.models_file)
    transport_options = {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 10)),
        "unacked_restore_throttle": 1,
        # BRPOP asks a worker's queues in the order it consumes them, highest tier first: a waiting interactive
        # chunk is always taken before a standard or bulk one (RabbitMQ has no order across queues; there the
        # lanes' small budgets and the batcher's tiers keep interactive work first).
        "queue_order_strategy": "priority",
        # BRPOP's own timeout, in seconds (kombu's default is 1): closing a channel waits for the BRPOP in flight,
        # so this bounds how long a worker takes to begin a warm shutdown; an idle worker asks 4 times a second.
        "polling_interval": BRPOP_TIMEOUT_S,
    }
    if settings.effective_broker_url.split("://", 1)[0] in ("redis", "rediss"):
        app.conf.broker_transport = transport.PATH
    broker_ssl = ssl_options(settings.effective_broker_url)
    if broker_ssl is not None:
        app.conf.broker_use_ssl = broker_ssl
    backend_ssl = ssl_options(settings.effective_redis_url)
    if backend_ssl is not None:
        app.conf.redis_backend_use_ssl = backend_ssl
    app.conf.update(
        broker_url=settings.effective_broker_url,
        result_backend=settings.effective_redis_url,
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        result_expires=defaults.CELERY_RESULT_EXPIRES_S,
        broker_transport_options=transport_options,
        result_backend_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        # Task events cost a few broker publishes per chunk; Flower turns them on in the workers it watches
        # (its enable_events broadcast), and BATCHERY_TASK_EVENTS turns them on for good.
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        worker_hijack_root_logger=False,
        task_queues=model_queues(registry),
        task_default_queue=next(iter(registry)).queue_for(STANDARD),
        task_default_exchange=EXCHANGE,
        task_default_exchange_type="direct",
    )
    connect_celery_signals()
    return app
