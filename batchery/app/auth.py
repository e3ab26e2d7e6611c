"""API keys at the door: a ``before_request`` hook that answers 401 unless the request carries a known key.

Off unless keys are configured (``BATCHERY_API_KEYS``, ``BATCHERY_API_KEYS_FILE``). Clients send
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The probes, the index and the OpenAPI description stay
open (``OPEN_RULES``) so that load balancers and clients can reach them without a secret; ``/metrics`` is not
open, since Prometheus can send a bearer token.

Keys are compared as SHA-256 digests with :func:`hmac.compare_digest` against every configured key, so the
time taken does not depend on which key matched, nor on how much of a guess was right. The keys file is
re-read when it changes, so keys rotate without a restart: add the new key, move the clients, drop the old.
A key is never logged, and a 401 never echoes what was sent.

Each key is a tenant (:mod:`batchery.app.tenancy`), put on ``flask.g`` for the handlers. Keys of the keys file
carry their own settings (:mod:`batchery.app.keys_file`); keys of ``BATCHERY_API_KEYS`` are the operator's:
any tier, no quotas, and every job in sight.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Iterable

from flask import Flask, Request, g, request

from batchery.app.keys_file import default_name, read_keys_file
from batchery.app.tenancy import Tenant
from batchery.errors import ConfigError, Unauthorized
from batchery.settings import Settings

log = logging.getLogger(__name__)

OPEN_RULES = frozenset({"/", "/static/<path:filename>", "/v1", "/healthz", "/readyz", "/readyz/api", "/openapi.json"})


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def operator(key: str) -> Tenant:
    """A key of ``BATCHERY_API_KEYS``: no limits, and an admin, as every key was before keys had settings."""
    return Tenant(name=default_name(key), admin=True)


class KeyRing:
    """The accepted keys and their tenants: fixed ones from the settings, plus those of a keys file, re-read
    when it changes."""

    def __init__(self, keys: Iterable[str], path: str = "") -> None:
        self.fixed = [(digest(k), operator(k)) for k in keys]
        self.path = Path(path) if path else None
        self._stamp: tuple[int, int] | None = None
        self._from_file: list[tuple[bytes, Tenant]] = []
        if self.path is not None:
            if not self.path.is_file():
                raise ConfigError(f"BATCHERY_API_KEYS_FILE={path!r} is not a file")
            problems = self._reload()
            if problems:
                raise ConfigError(f"BATCHERY_API_KEYS_FILE={path!r}: " + "; ".join(problems))

    def _reload(self) -> list[str]:
        """Keeps the last keys read when the file cannot be read, so a botched edit locks nobody out. A line
        that cannot be read leaves its key out (refused, rather than let in with no limits) and is logged by
        its number; the other lines take effect. Returns those lines' problems."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return []
            entries, problems = read_keys_file(self.path)
            self._from_file = [(digest(k), tenant) for k, tenant in entries]
            self._stamp = stamp
        except OSError as exc:
            log.warning("could not read the API keys file %s (%s); keeping the keys read before", self.path, exc.strerror)
            return []
        for problem in problems:
            log.warning("the API keys file %s, %s; that line's key is refused until it is fixed", self.path, problem)
        return problems

    def find(self, key: str) -> Tenant | None:
        """The tenant of ``key``, or None. Every configured key is compared, whichever matches."""
        if self.path is not None:
            self._reload()
        presented = digest(key)
        found = None
        for known, tenant in (*self.fixed, *self._from_file):
            if hmac.compare_digest(known, presented) and found is None:
                found = tenant
        return found

    def accepts(self, key: str) -> bool:
        return self.find(key) is not None


def presented_key(req: Request) -> str | None:
    scheme, _, credentials = req.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return req.headers.get("X-API-Key") or None


def install(app: Flask, settings: Settings) -> None:
    """Guard every route outside ``OPEN_RULES`` when keys are configured; do nothing otherwise."""
    if not settings.api_keys_configured:
        return
    ring = KeyRing(settings.api_key_list, settings.api_keys_file)

    @app.before_request
    def require_api_key() -> None:
        if request.url_rule is not None and request.url_rule.rule in OPEN_RULES:
            return
        key = presented_key(request)
        if key is None:
            log.info("401 %s %s from %s: no API key", request.method, request.path, request.remote_addr)
            raise Unauthorized("send an API key: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        tenant = ring.find(key)
        if tenant is None:
            log.info("401 %s %s from %s: unknown API key", request.method, request.path, request.remote_addr)
            raise Unauthorized("the API key is not valid")
        g.tenant = tenant
