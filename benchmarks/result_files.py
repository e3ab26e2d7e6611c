"""``python -m benchmarks.result_files [--items N] [--dims D] [--formats jsonl,npy] [--out PATH]``: what an
embedding job's results hold in Redis with result files and without, and how long writing the files takes.

On a redis-server of its own, two jobs of the same N vectors are stored through the storing script workers use
(:meth:`batchery.store.JobStore.record`): one without result files, whose outputs stay in Redis for the job
TTL, and one that asks for them, whose files are then written by the writer every worker runs
(:class:`batchery.results.writer.ResultWriter`, keeping nothing in Redis once written). Reported: Redis's memory
held by each job's outputs (``used_memory`` before and after, and the shards' ``MEMORY USAGE``), their ratio, the
finalise time and the files' sizes. No model runs: the vectors are random, so what is measured is batchery's own
storing and writing. One run on a shared machine: the seconds are noisy, the bytes are not.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from batchery import keys
from batchery.cli.redis_server import RedisServer
from batchery.results.formats import FORMATS, ResultsRequest
from batchery.results.writer import ResultWriter
from batchery.settings import Settings
from batchery.store import ItemResult, JobStore
from batchery.store.codec import encode_output
from batchery.store.files import Blobs, FileStore
from benchmarks import report

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "result_files.json"
PAGE = 5000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.result_files", description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384, help="vector width (MiniLM's: 384)")
    parser.add_argument("--formats", default="jsonl,npy", help=f"of {', '.join(FORMATS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default: {DEFAULT_OUT})")
    return parser.parse_args(argv)


def fill(store: JobStore, job_id: str, items: int, dims: int) -> float:
    """Store every item's vector, a page per call as a worker's batches would; returns the seconds taken."""
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    for start in range(0, items, PAGE):
        vectors = rng.standard_normal((min(PAGE, items - start), dims), dtype=np.float32)
        store.record(ItemResult(job_id, start + i, encode_output(v), True) for i, v in enumerate(vectors))
    return time.perf_counter() - started


def used_memory(store: JobStore) -> int:
    return int(store.redis.info("memory")["used_memory"])


def shards_bytes(store: JobStore, job_id: str, items: int) -> int:
    shards = range(keys.shard(items - 1) + 1)
    return sum(store.redis.memory_usage(keys.job_outputs(job_id, n)) or 0 for n in shards)


def one_job(store: JobStore, items: int, dims: int, wanted: ResultsRequest | None) -> tuple[str, dict[str, Any]]:
    job_id = uuid.uuid4().hex
    fields: dict[str, Any] = {"model": "embed", "version": "1", "total": items}
    if wanted is not None:
        fields["results"] = wanted.as_dict()
    before = used_memory(store)
    store.create(job_id, fields)
    seconds = fill(store, job_id, items, dims)
    job = store.get(job_id)
    assert job is not None and job["status"] == "completed" and job["succeeded"] == items, job
    return job_id, {
        "store_s": seconds,
        "held_bytes": used_memory(store) - before,
        "shards_bytes": shards_bytes(store, job_id, items),
        "before": before,
    }


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    server = RedisServer(folder / "redis", persist=False).start()
    try:
        settings = Settings(
            redis_url=server.url, files_url=str(folder / "files"), result_files_keep_s=0, max_items_per_job=args.items
        )
        store = settings.job_store()
        files = FileStore(store.redis, Blobs(settings.effective_files_url), settings.file_ttl_s)
        wanted = ResultsRequest(tuple(args.formats.split(",")), args.dims)
        _, plain = one_job(store, args.items, args.dims, None)
        job_id, filed = one_job(store, args.items, args.dims, wanted)
        started = time.perf_counter()
        written = ResultWriter(store, files, dataclasses.replace(settings)).round()
        finalise_s = time.perf_counter() - started
        job = store.get(job_id)
        assert written == 1 and job is not None and job["results_state"] == "written", job
        filed["held_after_bytes"] = used_memory(store) - filed["before"]
        filed["shards_after_bytes"] = shards_bytes(store, job_id, args.items)
        sizes = {f["filename"]: f["bytes"] for f in job["result_files"]}
    finally:
        server.stop()
    return {
        "items": args.items,
        "dims": args.dims,
        "formats": list(wanted.formats),
        "without_files": plain,
        "with_files": filed,
        "ratio_held": filed["held_after_bytes"] / plain["held_bytes"],
        "finalise_s": finalise_s,
        "finalise_items_per_s": args.items / finalise_s,
        "file_bytes": sizes,
    }


def summary(figures: dict[str, Any]) -> str:
    plain, filed = figures["without_files"], figures["with_files"]
    mib = 2**20
    lines = [
        ("without result files: outputs held for the job TTL", f"{plain['held_bytes'] / mib:,.1f} MiB"),
        ("with result files: held once they are written", f"{filed['held_after_bytes'] / mib:,.2f} MiB"),
        ("ratio, with / without", f"{figures['ratio_held']:.4f}"),
        ("their shards (MEMORY USAGE): without / with, after", f"{plain['shards_bytes'] / mib:,.1f} / "
         f"{filed['shards_after_bytes'] / mib:,.1f} MiB"),
        (f"finalise ({'+'.join(figures['formats'])}, {figures['items']:,} items)", f"{figures['finalise_s']:.2f} s"),
        *((f"file {name}", f"{size / mib:,.1f} MiB") for name, size in figures["file_bytes"].items()),
    ]
    return report.grid(("what", "figure"), lines, right={1})


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="batchery-result-files-") as folder:
        figures = run(args, Path(folder))
    document = {"benchmark": "result_files", "machine": report.machine(), "figures": figures}
    document["total_s"] = time.perf_counter() - started
    document["_table_text"] = summary(figures)
    report.publish(args.out, document)


if __name__ == "__main__":
    main()
