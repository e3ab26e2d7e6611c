"""Redis URLs: masked wherever printed, and a rediss:// URL's TLS settings handed to Celery."""

from __future__ import annotations

import ssl

import pytest

from batchery.cli import banner
from batchery.redis_urls import masked, ssl_options
from batchery.settings import Settings
from batchery.tasks.celery_app import create_celery


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:s3cr%40t@r:6379/0", "redis://:***@r:6379/0"),
        ("rediss://user:pw@r:6380/1?ssl_cert_reqs=required", "rediss://user:***@r:6380/1?ssl_cert_reqs=required"),
        ("amqp://guest:guest@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user@h:1/0", "redis://user@h:1/0"),
    ],
)
def test_masked_hides_only_the_password(url, shown):
    assert masked(url) == shown


def test_tls_options_come_from_the_query_and_default_to_required():
    assert ssl_options("redis://:pw@h:6379/0") is None
    assert ssl_options("rediss://h:6380/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert ssl_options("rediss://h/0?ssl_cert_reqs=none") == {"ssl_cert_reqs": ssl.CERT_NONE}
    options = ssl_options("rediss://h/0?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem")
    assert options == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"}
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        ssl_options("rediss://h/0?ssl_cert_reqs=sometimes")


def test_celery_gets_tls_options_for_a_rediss_broker_and_backend_only():
    plain = create_celery(Settings(redis_url="redis://:pw@h:6379/0"))
    assert not plain.conf.broker_use_ssl and not plain.conf.redis_backend_use_ssl
    tls = create_celery(Settings(redis_url="rediss://:pw@h:6380/0?ssl_ca_certs=/ca.pem", broker_url="amqp://guest@h//"))
    assert not tls.conf.broker_use_ssl
    assert tls.conf.redis_backend_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/ca.pem"}


def test_the_up_banner_masks_passwords():
    settings = Settings(redis_url="redis://:hunter2@h:6379/0", broker_url="amqp://u:hunter2@h//", api_keys="api-key-77",
                        flower_basic_auth="ops:hunter2")
    text = banner(settings)
    assert "Flower  http://127.0.0.1:5555/ (basic auth)" in text
    assert "hunter2" not in text and "redis://:***@h:6379/0" in text and "amqp://u:***@h//" in text
    assert "Bearer" in text and "api-key-77" not in text
