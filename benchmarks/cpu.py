"""CPU seconds per process group, read from ``/proc``: where a measurement's cores went.

On a 2-core machine the API, the worker, Redis and the client all compete for the same cores, so a
throughput figure alone cannot say why the pipeline is slower than a bare loop; CPU seconds per process
group over the same interval can. Every child of the stack leads its own process group (its own session),
so a group's total includes gunicorn's workers and a prefork pool's children; and the descendants that
lead groups of their own, such as a ``batchery worker`` supervisor's worker processes.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()  # the command name may hold spaces; it ends at the last ")"


def group_cpu_s(pgid: int) -> float:
    """User + system seconds of every live process in group ``pgid`` and of their descendants in groups of
    their own (a supervisor's worker processes start their own sessions), with the children each has reaped."""
    table: dict[int, tuple[int, int, int]] = {}  # pid -> (parent, group, clock ticks)
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is not None:  # utime, stime, cutime, cstime
            table[int(entry)] = (int(fields[1]), int(fields[2]), sum(int(f) for f in fields[11:15]))
    members = {pid for pid, (_, group, _) in table.items() if group == pgid}
    while True:
        children = {pid for pid, (parent, _, _) in table.items() if parent in members} - members
        if not children:
            break
        members |= children
    return sum(table[pid][2] for pid in members) / _TICK


def machine_cpu_s() -> float:
    """Busy seconds of the whole machine, all cores (``/proc/stat``): with it, CPU that other programs took
    during a measurement shows up as ``others`` instead of silently slowing the figures down. ``others``
    also holds interrupt time that the kernel charges to no process (a little loopback networking)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(f) for f in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK  # user nice system idle iowait irq softirq steal; guest is in user


def self_cpu_s() -> float:
    """This process's user + system seconds, all threads (the client, or the raw ONNX Runtime loop)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds used by named process groups (and by this process) between :meth:`start` and :meth:`stop`."""

    def __init__(self, groups: dict[str, int]) -> None:
        self.groups = groups
        self._before: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        groups = {name: group_cpu_s(pgid) for name, pgid in self.groups.items()}
        return {"machine": machine_cpu_s(), "client": self_cpu_s(), **groups}

    def start(self) -> "CpuMeter":
        self._before = self._read()
        return self

    def stop(self) -> dict[str, float]:
        """CPU seconds per group, ``client`` (this process), and ``others``: the rest of the machine."""
        after = self._read()
        used = {name: round(after[name] - self._before.get(name, 0.0), 3) for name in after}
        machine = used.pop("machine")
        used["others"] = round(max(machine - sum(used.values()), 0.0), 3)
        return used


def thread_cpu_s(pid: int) -> dict[int, float]:
    """User + system seconds of each thread of process ``pid``, by native thread id."""
    seconds = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        fields = _stat_fields(f"{pid}/task/{tid}")
        if fields is not None:
            seconds[int(tid)] = (int(fields[11]) + int(fields[12])) / _TICK
    return seconds


def python_thread_names(pid: int) -> dict[int, str]:
    """Native thread id -> Python thread name, from ``py-spy dump`` when py-spy is installed (else empty).

    Threads that Python did not start (ONNX Runtime's intra-op pool, the tokenizers' pool) have no name.
    """
    if shutil.which("py-spy") is None:
        return {}
    try:
        dump = subprocess.run(
            ["py-spy", "dump", "--json", "--pid", str(pid)], capture_output=True, text=True, timeout=30
        )
        threads = json.loads(dump.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    return {t["os_thread_id"]: t.get("thread_name") or "?" for t in threads if t.get("os_thread_id")}


def thread_breakdown(
    before: dict[int, float], after: dict[int, float], names: dict[int, str], top: int = 8
) -> dict[str, float]:
    """CPU seconds per thread between two :func:`thread_cpu_s` readings, busiest first, the rest summed.

    Unnamed threads are native: in a minilm worker the busiest one is ONNX Runtime's intra-op pool thread.
    """
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    ordered = sorted(used.items(), key=lambda kv: -kv[1])
    labelled: dict[str, float] = {}
    for rank, (tid, seconds) in enumerate(ordered):
        label = f"{names.get(tid, 'native')} ({tid})" if rank < top else "other threads"
        labelled[label] = round(labelled.get(label, 0.0) + seconds, 3)
    return labelled
