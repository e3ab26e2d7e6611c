"""gunicorn settings only code can give (``--config=python:batchery.app.gunicorn_conf``, set by `batchery api`).

Logging: batchery's JSON (or text) lines for gunicorn's own log and the app's. Metrics: a gunicorn process
that exits must be marked dead, so that prometheus-client's multiprocess mode stops counting its live gauges.
"""

from __future__ import annotations

import os
from typing import Any

from batchery.monitoring.logs import dict_config
from batchery.settings import get_settings

logconfig_dict = dict_config(get_settings())


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
