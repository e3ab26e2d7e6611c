"""Closed-loop load: a fixed number of clients, each sending its next predict request when the last answers.

Each request's items are answered together, so an item's end-to-end latency (HTTP in, queue, batcher, model,
Redis, HTTP out) is its request's. Every input is unique, so the result cache never answers one. Only
requests that end inside the measured window count, for throughput and latency alike. The window opens
once every client has had an answer (and ``warmup_s`` has passed): all clients start at once, so the first
answers come from an empty queue and are faster than the steady state.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import requests


@dataclass
class LoadRun:
    """What ``clients`` closed-loop clients got in ``seconds``: items answered and each request's latency."""

    clients: int
    items_per_request: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)

    @property
    def items(self) -> int:
        return len(self.latencies_s) * self.items_per_request

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds

    def latency_ms(self, percentile: float) -> float:
        return float(np.percentile(self.latencies_s, percentile)) * 1000 if self.latencies_s else float("nan")


def closed_loop(
    predict_url: str, clients: int, items_per_request: int, warmup_s: float, measure_s: float
) -> LoadRun:
    """Run the clients through the warm-up and ``measure_s``; every answer is checked (echo returns its inputs)."""
    window = _Window(clients, time.perf_counter() + warmup_s, measure_s)
    run = LoadRun(clients, items_per_request, measure_s)
    failures: list[BaseException] = []

    def client(number: int) -> None:
        session = requests.Session()
        sent = 0
        try:
            while time.perf_counter() < window.end:
                inputs = [[number, sent, i] for i in range(items_per_request)]
                began = time.perf_counter()
                response = session.post(predict_url, json={"inputs": inputs}, timeout=120)
                ended = time.perf_counter()
                if response.status_code != 200 or response.json().get("outputs") != inputs:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
                if sent == 0:
                    window.answered(ended)
                elif window.start <= ended <= window.end:
                    with window.lock:
                        run.latencies_s.append(ended - began)
                sent += 1
        except BaseException as exc:
            failures.append(exc)
            window.answered(time.perf_counter())

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} of {clients} clients failed; the first: {failures[0]}") from failures[0]
    return run


class _Window:
    """The measured window: it opens when the last client gets its first answer, or at ``earliest``."""

    def __init__(self, clients: int, earliest: float, measure_s: float) -> None:
        self.lock = threading.Lock()
        self.waiting = clients
        self.earliest = earliest
        self.measure_s = measure_s
        self.start = self.end = math.inf

    def answered(self, at: float) -> None:
        with self.lock:
            self.waiting -= 1
            if self.waiting == 0:
                self.start = max(at, self.earliest)
                self.end = self.start + self.measure_s
