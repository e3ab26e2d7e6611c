"""Log lines: JSON with the job and task they are about, and never a secret."""

from __future__ import annotations

import io
import json
import logging

import pytest

from batchery.errors import ConfigError
from batchery.monitoring.logs import bind, handler_for, make_formatter, redact
from batchery.settings import Settings


@pytest.fixture
def emit():
    """Log through a real handler built from settings onto a private logger; returns the parsed lines."""

    def log(settings: Settings, *records: tuple) -> list:
        stream = io.StringIO()
        logger = logging.getLogger(f"batchery.test.{id(stream)}")
        logger.propagate = False
        logger.addHandler(handler_for(settings, stream))
        logger.setLevel(logging.DEBUG)
        for name, level, message, args in records:
            logger.name = name
            logger.log(level, message, args)
        return stream.getvalue().splitlines()

    yield log
    bind(None, None)


def test_a_line_carries_the_bound_job_and_task(emit):
    bind("job1", "job1.256")
    (line,) = emit(Settings(), ("batchery.workers.host", logging.INFO, "stored %s", "a batch"))
    entry = json.loads(line)
    assert (
        entry["message"] == "stored a batch" and entry["level"] == "INFO" and entry["logger"] == "batchery.workers.host"
    )
    assert (entry["job_id"], entry["task_id"]) == ("job1", "job1.256")
    assert entry["time"].endswith("+00:00") and isinstance(entry["pid"], int)


def test_celerys_consumer_lines_name_their_task_and_so_their_job(emit):
    received = {"id": "abc123.512", "name": "batchery.run_chunk", "args": "()", "kwargs": "{}", "eta": None}
    (line,) = emit(Settings(), ("celery.worker.strategy", logging.INFO, "Task %(name)s[%(id)s] received", received))
    entry = json.loads(line)
    assert entry["message"] == "Task batchery.run_chunk[abc123.512] received"
    assert (entry["job_id"], entry["task_id"]) == ("abc123", "abc123.512")


def test_a_line_about_no_job_has_no_ids(emit):
    (line,) = emit(Settings(), ("batchery.workers.host", logging.INFO, "model %s loaded", "echo"))
    assert "job_id" not in json.loads(line) and "task_id" not in json.loads(line)


def test_secrets_are_masked_in_messages_and_tracebacks():
    settings = Settings(
        redis_url="redis://:r3dis-pw@cache:6379/0",
        broker_url="amqp://app:rabbit-pw@mq//",
        flower_basic_auth="admin:flower-pw",
    )
    stream = io.StringIO()
    logger = logging.getLogger("batchery.test.secrets")
    logger.propagate = False
    logger.addHandler(handler_for(settings, stream))
    logger.warning("connecting to %s", settings.redis_url)
    logger.warning("flower auth is %s", settings.flower_basic_auth)
    logger.warning("headers: %s", "Authorization: Bearer tok-123 api_key=k-456")
    try:
        raise RuntimeError("cannot reach amqp://app:rabbit-pw@mq//")
    except RuntimeError:
        logger.exception("failed")
    text = stream.getvalue()
    assert len(text.splitlines()) == 4 and "Traceback" in json.loads(text.splitlines()[-1])["exception"]
    for secret in ("r3dis-pw", "rabbit-pw", "flower-pw", "tok-123", "k-456"):
        assert secret not in text
    assert "redis://:***@cache:6379/0" in text and "amqp://app:***@mq//" in text


def test_text_format_keeps_the_ids_and_masks_alike(emit):
    bind("job9", "job9.0")
    (line,) = emit(Settings(log_format="text"), ("batchery", logging.WARNING, "via %s", "redis://u:pw@h/0"))
    assert "[job=job9 task=job9.0]" in line and "WARNING" in line and "redis://u:***@h/0" in line
    bind(None, None)
    (plain,) = emit(Settings(log_format="text"), ("batchery", logging.INFO, "started %s", "api"))
    assert plain.endswith("INFO batchery: started api"), "a line about no job carries no empty ids"


def test_an_unknown_format_is_a_config_error():
    with pytest.raises(ConfigError, match="BATCHERY_LOG_FORMAT"):
        make_formatter("xml")


@pytest.mark.parametrize(
    "raw, masked",
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("https://user:p%40ss@host/x", "https://user:***@host/x"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("password=hunter2&x=1", "password=***&x=1"),
        ('{"api_key": "abc"}', '{"api_key": "***"}'),
        ("12 tokens in the batch", "12 tokens in the batch"),
    ],
)
def test_redact(raw, masked):
    assert redact(raw) == masked
