"""Failure injection: faults on purpose, to prove that retries, isolation, redelivery and recovery keep every item.

:mod:`batchery.faults.injection` wraps a model's runtime and the store a batcher writes through;
:mod:`batchery.faults.handoff` strikes the janitor's handoffs.
"""
