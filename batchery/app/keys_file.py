"""The API keys file (``BATCHERY_API_KEYS_FILE``): one key a line, with that key's settings after it.

    # blank lines and lines starting with # are skipped
    3f9a0c...                                     any tier, no quotas, its own jobs only
    77c1d2...  name=team-a  tier=standard  items_per_minute=100000  items_in_flight=500000
    0b2e4f...  name=ops  admin=true               sees and cancels every job

A key is the line's first word. Each setting after it is ``setting=value``, words apart by spaces or tabs; a
word starting with ``#`` begins a comment. A plain key on its line, the older format, is a key with defaults.

    name              what logs and job documents call the key, and what its jobs and quotas are kept under:
                      keys with the same name are one tenant (rotate a key by giving the new one the old
                      one's name). Letters, digits, ``.``, ``_`` and ``-``; by default ``key-`` and the first
                      12 hex digits of the key's SHA-256, which the key cannot be read back from.
    tier              the highest tier the key may use (default ``interactive``: any); a name or a rank
    items_per_minute  items it may submit in any 60 seconds (default: no limit)
    items_in_flight   items of its jobs that may be submitted and not yet ended (default: no limit)
    admin             ``true``: it sees and cancels every job, and every dead letter (default ``false``)

A line that cannot be read is named by its number, never by its content, which holds a key.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable

from batchery import tiers
from batchery.app.tenancy import Tenant
from batchery.errors import BadRequest

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
DIGITS = re.compile(r"[0-9]{1,18}")
BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def default_name(key: str) -> str:
    """A stable name for a key that has none: a digest prefix, from which the key cannot be read back."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _name(value: str) -> str:
    if NAME.fullmatch(value) is None:
        raise ValueError("a name is 1 to 64 letters, digits, '.', '_' or '-'")
    return value


def _tier(value: str) -> str:
    try:
        return tiers.parse(value, tiers.INTERACTIVE)
    except BadRequest as exc:
        raise ValueError(exc.message) from exc


def _count(value: str) -> int:
    if DIGITS.fullmatch(value) is None or int(value) < 1:
        raise ValueError("a limit is a whole number of items, 1 or more (leave it out for none)")
    return int(value)


def _boolean(value: str) -> bool:
    if value.lower() not in BOOLEANS:
        raise ValueError("true or false")
    return BOOLEANS[value.lower()]


SETTINGS: dict[str, Callable[[str], object]] = {
    "name": _name, "tier": _tier, "items_per_minute": _count, "items_in_flight": _count, "admin": _boolean,
}


def parse_line(line: str) -> tuple[str, Tenant] | None:
    """A line's key and what it may do; None for a blank line or a comment. A ValueError names the problem
    without the key."""
    words = line.split()
    if not words or words[0].startswith("#"):
        return None
    key, values = words[0], {}
    for position, word in enumerate(words[1:], start=2):
        if word.startswith("#"):
            break
        setting, equals, value = word.partition("=")
        if not equals or setting not in SETTINGS:  # not echoed: a key with a space in it would be
            raise ValueError(f"word {position} is not setting=value with a setting of {', '.join(SETTINGS)}")
        if setting in values:
            raise ValueError(f"{setting!r} is given twice")
        try:
            values[setting] = SETTINGS[setting](value)
        except ValueError as exc:
            raise ValueError(f"{setting}={value!r}: {exc}") from None
    values.setdefault("name", default_name(key))
    return key, Tenant(**values)  # type: ignore[arg-type]


def read_keys_file(path: Path) -> tuple[list[tuple[str, Tenant]], list[str]]:
    """Every key the file gives, with its tenant; and a problem for each line that could not be read."""
    entries, problems = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            entry = parse_line(line)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if entry is not None:
            entries.append(entry)
    return entries, problems
