"""``python -m benchmarks.million [--items N] [--out PATH]``: one job of a million items, twice.

The first run computes every item (synthetic echo, so what is measured is batchery's own handling); the
second sends the very same NDJSON body again and is answered wholly from the result cache. Each run streams
every result back (NDJSON) and checks it. Reported: seconds and items/s for each phase, Redis's peak memory
per item, the API's peak resident memory, the largest Redis key (no key may pass 64 MB), and the most
arguments any Redis call carried (from Redis's slow log, which takes every call slower than 1 ms: a call of
100,000 arguments takes far longer than that).
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import redis
import requests

from benchmarks import report
from benchmarks.pipeline import DEFAULT_DATA_DIR
from benchmarks.stack import Stack, run_interruptibly

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "million.json"
KEY_LIMIT_BYTES = 64 * 2**20
ARGS_LIMIT = 100_000
SLOW_CALL_US = 1000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.million", description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2, help="echo worker processes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report, or a folder (default: {DEFAULT_OUT})")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="BATCHERY_DATA_DIR")
    args = parser.parse_args(argv)
    if args.out.suffix != ".json":
        args.out = args.out / DEFAULT_OUT.name
    return args


def ndjson(items: int, tag: str) -> bytes:
    return b"".join(b'"%s-%d"\n' % (tag.encode(), i) for i in range(items))


def expected(i: int, tag: str) -> bytes:
    return b'{"index":%d,"output":"%s-%d"}' % (i, tag.encode(), i)


def one_run(http: requests.Session, url: str, body: bytes, items: int, tag: str) -> dict[str, Any]:
    """Submit, wait, stream every result back and check it; seconds per phase."""
    started = time.perf_counter()
    answer = http.post(f"{url}/v1/jobs", params={"model": "echo"}, data=body, headers={"content-type": "application/x-ndjson"}, timeout=600)
    answer.raise_for_status()
    job = answer.json()
    submitted = time.perf_counter()
    while (doc := http.get(job["links"]["self"], timeout=60).json())["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.2)
    done = time.perf_counter()
    streamed = 0
    with http.get(job["links"]["results"], headers={"Accept": "application/x-ndjson"}, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line != expected(streamed, tag):
                raise AssertionError(f"result {streamed} is {line[:200]!r}")
            streamed += 1
    finished = time.perf_counter()
    if streamed != items or doc["counts"]["succeeded"] != items:
        raise AssertionError(f"{streamed} results streamed of {items}: {doc}")
    return {
        "job_id": job["id"], "counts": doc["counts"],
        "submit_s": submitted - started, "complete_s": done - started, "stream_s": finished - done, "total_s": finished - started,
    }


def largest_key(client: redis.Redis) -> tuple[str, int]:
    """The largest key that can grow (hashes, lists, sets, sorted sets) and its bytes."""
    biggest = ("", 0)
    for kind in ("hash", "list", "set", "zset", "string"):
        for key in client.scan_iter(count=10_000, _type=kind):
            if kind == "string" and not key.startswith(b"batchery:job"):
                continue  # a million cache entries, each one small output
            size = client.memory_usage(key, samples=0) or 0
            if size > biggest[1]:
                biggest = (key.decode(), size)
    return biggest


def most_arguments(client: redis.Redis) -> tuple[int, str]:
    """The most arguments one call carried, among calls slower than SLOW_CALL_US, and which call."""
    most = (0, "")
    for entry in client.slowlog_get(100_000):
        command = entry["command"]
        words = command.split(b" ")
        more = 0
        if command.endswith(b"more arguments)"):
            more = int(command.rsplit(b"(", 1)[1].split(b" ")[0])
            words = words[:-4]
        count = len(words) + more
        if count > most[0]:
            most = (count, command[:60].decode(errors="replace"))
    return most


def peak_rss_bytes(pid: int) -> int:
    """The peak resident memory of a process and its children (gunicorn's workers), the largest of them."""
    peaks = []
    for candidate in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{candidate}/status").read_text()
        except OSError:
            continue
        peaks += [int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")]
    return max(peaks, default=0)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    with Stack(args.out.parent / "million-logs", args.data_dir) as stack:
        client = redis.Redis.from_url(stack.settings.effective_redis_url)
        client.config_set("slowlog-log-slower-than", SLOW_CALL_US)
        client.config_set("slowlog-max-len", 100_000)
        api = stack.start_api()
        for n in range(args.workers):
            stack.start_worker(f"echo{n}", ["echo"])
        tag = uuid.uuid4().hex[:8]
        body = ndjson(args.items, tag)
        http = requests.Session()
        client.slowlog_reset()
        baseline_bytes = int(client.info("memory")["used_memory"])
        computed = one_run(http, stack.api_url, body, args.items, tag)
        after_computed = client.info("memory")
        cached = one_run(http, stack.api_url, body, args.items, tag)
        key, key_bytes = largest_key(client)
        arguments, call = most_arguments(client)
        memory = client.info("memory")
        api_rss = peak_rss_bytes(api.process.pid)
    figures = {
        "items": args.items,
        "computed": computed,
        "cached": cached,
        "cached_over_computed_time": cached["complete_s"] / computed["complete_s"],
        "redis_peak_bytes": int(memory["used_memory_peak"]),
        "redis_peak_bytes_per_item": (int(memory["used_memory_peak"]) - baseline_bytes) / args.items,
        "redis_bytes_per_item_after_first_run": (int(after_computed["used_memory"]) - baseline_bytes) / args.items,
        "api_peak_rss_bytes": api_rss,
        "largest_key": key,
        "largest_key_bytes": key_bytes,
        "most_arguments_in_one_call": arguments,
        "call_with_most_arguments": call,
    }
    lines = [
        ("first run: computed", f"{computed['submit_s']:.1f}", f"{computed['complete_s']:.1f}", f"{computed['stream_s']:.1f}", f"{args.items / computed['total_s']:,.0f}"),
        ("second run: all cached", f"{cached['submit_s']:.1f}", f"{cached['complete_s']:.1f}", f"{cached['stream_s']:.1f}", f"{args.items / cached['total_s']:,.0f}"),
    ]
    text = "\n".join([
        report.grid(("run", "submit s", "complete s", "stream s", "items/s end to end"), lines, right={1, 2, 3, 4}),
        "",
        f"Redis peak: {figures['redis_peak_bytes'] / 2**20:,.0f} MiB, {figures['redis_peak_bytes_per_item']:,.0f} bytes per item",
        f"API peak RSS: {api_rss / 2**20:,.0f} MiB",
        f"largest key: {key} at {key_bytes / 2**20:,.1f} MiB (limit {KEY_LIMIT_BYTES / 2**20:.0f})",
        f"most arguments in one call: {arguments:,} (limit {ARGS_LIMIT:,}): {call}",
    ])
    return {
        "benchmark": "million", "machine": report.machine(), "figures": figures,
        "total_s": time.perf_counter() - started, "_table_text": text,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    document = run_interruptibly(run, args)
    if document is None:
        return 130
    report.publish(args.out, document)
    figures = document["figures"]
    within = figures["largest_key_bytes"] <= KEY_LIMIT_BYTES and figures["most_arguments_in_one_call"] < ARGS_LIMIT
    return 0 if within else 1


if __name__ == "__main__":
    raise SystemExit(main())
