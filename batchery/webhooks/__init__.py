"""Completion webhooks: the signed call made when a job ends, and the thread in each worker that makes it.

What is due and how each call went lives in Redis (:mod:`batchery.store.webhooks`); this package makes the
calls. :func:`batchery.webhooks.signing.verify` is what a receiver in Python checks a call with.
"""
