"""`batchery submit`: a file in, one output line per input line out, in order, through :class:`batchery.Client`.

Each line is one JSON input (or, with ``--text``, one plain text). Lines go in jobs of ``lines_per_job`` as
NDJSON; results come back as binary frames and are written as the API's own JSON lines, with indices
counted over the whole file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO, Callable, Iterator

import orjson
from tqdm import tqdm

from batchery.client import Client
from batchery.store.codec import dumps


def read_lines(path: Path, lines_per_job: int, text: bool = False) -> Iterator[list[bytes]]:
    """The file's lines in job-sized lists; with ``text``, each line becomes a JSON string."""
    with path.open("rb") as f:
        lines: list[bytes] = []
        for line in f:
            line = line.rstrip(b"\r\n")
            lines.append(orjson.dumps(line.decode("utf-8")) if text else line)
            if len(lines) == lines_per_job:
                yield lines
                lines = []
        if lines:
            yield lines


def submit_file(
    client: Client, path: Path, model: str, out: IO[bytes], *, lines_per_job: int = 100_000, poll_s: float = 0.5,
    progress: bool = True, text: bool = False, stderr: IO[str] | None = None,
) -> dict[str, int]:
    """Submit every job, wait for all, then write their results in input order; returns the counts."""
    jobs = [client.submit_lines(model, lines) for lines in read_lines(path, lines_per_job, text)]
    total = sum(job.total for job in jobs)
    with Progress(total, progress, stderr or sys.stderr) as bar:
        client.wait_all(jobs, poll_s=poll_s, progress=bar.update)
    counts = {"total": total, "succeeded": 0, "failed": 0, "jobs": len(jobs)}
    offset = 0
    for job in jobs:
        for result in client.results(job):
            record = result.as_dict()
            record["index"] += offset
            counts["succeeded" if result.ok else "failed"] += 1
            out.write(dumps(record) + b"\n")
        offset += job.total
    return counts


class Progress:
    """A progress bar on a terminal; elsewhere (a log file, CI) one line at the end instead of a bar redrawn
    with carriage returns a hundred times."""

    def __init__(self, total: int, enabled: bool, stream: IO[str]) -> None:
        self.total, self.enabled, self.stream = total, enabled, stream
        self.done = 0
        self.started = time.monotonic()
        self.bar = tqdm(total=total, unit="item", file=stream) if enabled and stream.isatty() else None

    def update(self, done: int) -> None:
        self.done = done
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and exc[0] is None:
            seconds = time.monotonic() - self.started
            rate = self.done / seconds if seconds > 0 else 0.0
            self.stream.write(f"{self.done}/{self.total} items done in {seconds:.1f}s ({rate:,.0f} items/s)\n")
