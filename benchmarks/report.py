"""The printed table and the JSON report, with enough about the machine to compare runs across machines."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PACKAGES = ("batchery", "celery", "kombu", "redis", "gunicorn", "flask", "onnxruntime", "tokenizers", "numpy", "orjson")


@dataclass
class Row:
    """One line of the table; ``ratio`` and ``target`` only on the rows that are compared with a baseline."""

    name: str
    items: int
    seconds: float
    ratio: float | None = None
    target: str = ""

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "items": self.items,
            "seconds": round(self.seconds, 4),
            "items_per_s": round(self.items_per_s, 1),
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "target": self.target,
        }


def table(rows: list[Row], ratio_header: str = "ratio") -> str:
    """The rows as text; ``ratio_header`` says what the ratio column divides by what, where "ratio" is vague."""
    header = ("name", "items", "seconds", "items/s", ratio_header, "target")
    lines = [
        (
            r.name,
            f"{r.items:,}",
            f"{r.seconds:.2f}",
            f"{r.items_per_s:,.0f}",
            "" if r.ratio is None else f"{r.ratio:.2f}×",
            r.target,
        )
        for r in rows
    ]
    return grid(header, lines, right={1, 2, 3, 4})


def grid(header: tuple[str, ...], lines: list[tuple[str, ...]], right: set[int]) -> str:
    """Columns padded to their widest cell; the columns in ``right`` (numbers) aligned right."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])


def noise_line(others: dict[str, float]) -> str:
    """Say how busy the rest of the machine was: on a shared box that, not the code, may explain a figure."""
    if not others:
        return ""
    worst = max(others, key=lambda name: others[name])
    return (
        f"other programs on this machine kept {others[worst]:.2f} cores busy at most (during {worst}; 0 is a quiet box)"
    )


def machine() -> dict[str, Any]:
    """Cores (all, and those this process may use), CPU model, Python, package versions, commit and date."""
    cores_usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_usable": cores_usable,
        "cpu_model": _cpu_model(),
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in PACKAGES},
        "git": _git(),
    }


def publish(path: Path, document: dict[str, Any]) -> None:
    """Write the JSON, then print the table that the run left under ``_table_text`` (it is not in the JSON)."""
    text = document.pop("_table_text")
    write_json(path, document)
    print()
    print(text)
    print(f"\n{document['total_s']:.0f}s in all; JSON in {path}")


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return None


def _git() -> dict[str, Any] | None:
    """The commit measured, and whether the tree had changes on top of it (a benchmark of a dirty tree says so)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": bool(dirty.strip())}
