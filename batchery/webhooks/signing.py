"""The signature on a webhook call: HMAC-SHA256 of the raw body with the shared secret.

The call carries ``X-Batchery-Signature: sha256=<hex digest>``. A receiver computes the same over the bytes
it received (before parsing them) with its copy of ``BATCHERY_WEBHOOK_SECRET`` and compares in constant time:
a body that anyone else made or changed does not match. The body names the job and when it was sent, and a
job's calls all carry ``X-Batchery-Delivery: <job id>``, so a receiver can drop the repeats that at-least-once
delivery allows.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Batchery-Signature"
PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The header's value for ``body``."""
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` (the received ``X-Batchery-Signature``) signs ``body`` with ``secret``."""
    return bool(header) and hmac.compare_digest(sign(secret, body), header.strip())
