"""``python -m benchmarks.host [--out FILE.json]``: the host side's costs per item, each against the plain way.

At 50,000 items/s a microsecond per item is 5% of a core, and most of the host's work holds the GIL. Each
row times one step of the path on the same inputs both ways, alternated, in one run, as the median CPU time
of the calling thread (so other programs on the machine move the figures less; the tokenizer's own native
threads are left out, since they run beside the GIL):

- tokens to arrays: padding in numpy from the lengths, against the tokenizer's padding and ``np.array``;
- pooling: what the torch runtime no longer does on the host thread that drives the GPU (numpy mean
  pooling of every token's hidden state, after copying all of them back);
- one batch's Redis write: the script called by its hash, against a ``Script`` in the pipeline (which
  makes redis-py send ``SCRIPT EXISTS`` first, a second round trip), as the median wall time of alternated
  runs against a private Redis;
- results at the API edge: binary frames against one JSON line per item.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from batchery.cli.redis_server import RedisServer
from batchery.models import hf
from batchery.models.registry import BUILTINS
from batchery.runtimes.text import TextEncoder, embeddings
from batchery.store import ItemResult, JobStore
from batchery.store.codec import dumps, encode_output, frame, result_record
from benchmarks import corpus, report

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "host.json"
BATCH = 512
DIMS = 384


def per_item_us(step: Callable[[], Any], items: int, clock: Callable[[], float] = time.thread_time) -> float:
    started = clock()
    step()
    return (clock() - started) / items * 1e6


def compare(
    now: Callable[[], Any], plain: Callable[[], Any], items: int, repeat: int, clock: Callable[[], float] = time.thread_time
) -> tuple[float, float]:
    """Both ways, alternated ``repeat`` times after one warm-up each; the median of each, in µs per item.

    Alternating keeps drift in the machine (other programs, caches, the server warming up) from favouring
    whichever way ran first.
    """
    now(), plain()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        times[0].append(per_item_us(now, items, clock))
        times[1].append(per_item_us(plain, items, clock))
    return float(np.median(times[0])), float(np.median(times[1]))


def tokens_to_arrays(texts: Sequence[str], repeat: int) -> tuple[float, float]:
    path = hf.weights_dir(BUILTINS["minilm"]) / "tokenizer.json"
    encoder = TextEncoder(path, 256)
    plain = TextEncoder(path, 256).tokenizer
    plain.enable_padding(pad_id=encoder.pad_id, pad_type_id=encoder.pad_type_id)

    def the_plain_way() -> None:
        encodings = plain.encode_batch(list(texts))
        for attribute in ("ids", "attention_mask", "type_ids"):
            np.array([getattr(e, attribute) for e in encodings], dtype=np.int64)

    return compare(lambda: encoder.encode(texts), the_plain_way, len(texts), repeat)


def pooling(texts: Sequence[str], repeat: int) -> tuple[float, float, int]:
    """(0, numpy pooling µs per item, token states copied per item): the first is what is left on the host."""
    batch = TextEncoder(hf.weights_dir(BUILTINS["minilm"]) / "tokenizer.json", 256).encode(texts)
    mask = batch["attention_mask"]
    hidden = np.random.default_rng(0).standard_normal((*mask.shape, DIMS)).astype(np.float32)
    _, on_host = compare(lambda: None, lambda: embeddings(hidden.copy(), mask, "mean", True), len(texts), repeat)
    return 0.0, on_host, int(mask.shape[1])


def redis_write(repeat: int) -> tuple[float, float]:
    """Wall µs per item of one batch's write: by hash, and with the ``Script`` object in the pipeline."""
    vectors = [encode_output(v) for v in np.random.default_rng(1).standard_normal((BATCH, DIMS)).astype(np.float32)]
    with tempfile.TemporaryDirectory() as scratch:
        server = RedisServer(Path(scratch) / "redis", persist=False).start()
        try:
            store = JobStore.from_url(server.url, 600)

            def batch(write: Callable[[list[ItemResult]], Any]) -> Callable[[], None]:
                def step() -> None:
                    job_id = uuid.uuid4().hex
                    store.create(job_id, {"model": "minilm", "version": "x", "total": BATCH})
                    write([ItemResult(job_id, i, raw, True) for i, raw in enumerate(vectors)])

                return step

            def with_script_object(records: list[ItemResult]) -> None:
                pipe = store.redis.pipeline(transaction=False)
                for job_keys, args in store.record_calls(records, time.time()).values():
                    store._record(keys=job_keys, args=args, client=pipe)
                pipe.execute()

            by_hash, script_object = compare(batch(store.record), batch(with_script_object), BATCH, repeat * 4, time.perf_counter)
        finally:
            server.stop()
    return by_hash, script_object


def results_edge(repeat: int) -> tuple[float, float]:
    stored = [encode_output(v) for v in np.random.default_rng(2).standard_normal((1000, DIMS)).astype(np.float32)]

    def frames() -> bytes:
        return b"".join(frame(i, raw) for i, raw in enumerate(stored))

    def ndjson() -> bytes:
        return b"".join(dumps(result_record(i, raw)) + b"\n" for i, raw in enumerate(stored))

    return compare(frames, ndjson, len(stored), repeat)


def run(repeat: int) -> list[dict[str, Any]]:
    texts = corpus.texts(BATCH)
    rows = []
    new, old = tokens_to_arrays(texts, repeat)
    rows.append({"step": "tokens to arrays (batch of 512, thread CPU)", "now_us": new, "plain_us": old})
    new, old, tokens = pooling(texts, repeat)
    rows.append({"step": f"pooling on the GPU thread ({tokens} token states/item come back)", "now_us": new, "plain_us": old})
    new, old = redis_write(repeat)
    rows.append({"step": "one batch's Redis write (512 vectors, median wall time)", "now_us": new, "plain_us": old})
    new, old = results_edge(repeat)
    rows.append({"step": "results at the API edge (frames vs NDJSON)", "now_us": new, "plain_us": old})
    for row in rows:
        row["now_us"], row["plain_us"] = round(row["now_us"], 2), round(row["plain_us"], 2)
        row["saved_us"] = round(row["plain_us"] - row["now_us"], 2)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    width = max(len(r["step"]) for r in rows)
    lines = [f"{'step'.ljust(width)}  µs/item now  the plain way  saved", "-" * (width + 38)]
    lines += [f"{r['step'].ljust(width)}  {r['now_us']:11.2f}  {r['plain_us']:13.2f}  {r['saved_us']:5.2f}" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeat", type=int, default=9, help="runs of each step, each way; the median is kept")
    args = parser.parse_args(argv)
    rows = run(args.repeat)
    report.write_json(args.out, {"rows": rows, "batch": BATCH, "repeat": args.repeat, "machine": report.machine()})
    print(table(rows))
    print(f"\nJSON in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
