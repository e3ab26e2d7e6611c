"""Redis URLs in one place: the clients made from them, the TLS options Celery needs, and a form safe to print.

A password travels in the URL (``redis://:PASSWORD@host:6379/0``) and TLS is the ``rediss://`` scheme, with its
settings in the query: ``rediss://:PASSWORD@host:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem``
(``ssl_certfile`` and ``ssl_keyfile`` add a client certificate). redis-py and kombu read those from the query, but
kombu, given a ``rediss://`` URL without them, warns and turns certificate checks off, and Celery's result backend
refuses such a URL. :func:`ssl_options` turns the query into the one ``broker_use_ssl`` / ``redis_backend_use_ssl``
dict for both, and without ``ssl_cert_reqs`` it requires a valid certificate, as redis-py does.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis

SSL_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
MASK = "***"


def redis_client(url: str, **kwargs: Any) -> redis.Redis:
    """A client for ``url``; every Redis client batchery makes comes from here."""
    return redis.Redis.from_url(url, **kwargs)


def is_tls(url: str) -> bool:
    return urlsplit(url).scheme == "rediss"


def ssl_options(url: str) -> dict[str, Any] | None:
    """The TLS settings of a ``rediss://`` URL as Celery takes them; None for any other URL."""
    if not is_tls(url):
        return None
    query = parse_qs(urlsplit(url).query)
    options: dict[str, Any] = {key: query[key][-1] for key in SSL_KEYS if key in query}
    reqs = str(options.get("ssl_cert_reqs", "required")).lower().removeprefix("cert_")
    if reqs not in CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}, not {reqs!r}")
    options["ssl_cert_reqs"] = CERT_REQS[reqs]
    return options


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``: the only form of a URL that batchery prints or logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
