"""Benchmarks of the whole batchery pipeline against the baselines it has to beat.

``python -m benchmarks.pipeline [--out DIR] [--quick]`` starts a private redis-server, the API, workers and a
plain Celery worker, measures throughput and writes a table and a JSON report. Nothing here touches the
Redis on port 6379, and every process it starts is stopped before it exits.
"""
