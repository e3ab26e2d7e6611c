"""``python -m benchmarks.gpu OUT_DIR``: the GPU path proven end to end, with every figure the issue asks for.

One command starts a private Redis, the API under gunicorn and a ``batchery worker`` on the GPU (or on the
CPU with ``--device cpu``, which is how it is tested on a machine without one), then measures, in one run:

- the load: many texts submitted over HTTP in jobs, every result fetched back through the API;
- the same load through ``synthetic-embed``, a model that costs the device nothing: the host path's ceiling;
- plain Celery, one task per item, running the same model on the same device, for a bounded time;
- a single item through ``POST /v1/models/minilm/predict`` on the idle worker, many times: its p99;
- the GPU's float16 outputs against the float32 CPU reference, item by item (cosine similarity);
- what ``/metrics`` says about the device (NVML gauges) beside what NVML says directly, and the
  ``CUDA_VISIBLE_DEVICES`` the worker reports;
- a real CUDA out-of-memory error (the worker's share of the device capped low) that the batcher splits,
  with every item of the job still correct.

It prints a table and writes ``gpu.json`` and ``table.txt`` under OUT_DIR, with ``--profile`` py-spy's
collapsed stacks of the worker and the API during each timed load, and the models files and every
process's log under ``OUT_DIR/logs``.
"""
