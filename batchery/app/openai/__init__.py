"""OpenAI's routes: ``/v1/embeddings``, ``/v1/files`` and ``/v1/batches``, so that OpenAI's own clients (the
``openai`` Python SDK with ``base_url`` at batchery) work unchanged.

They run on batchery's jobs: an embeddings request is a predict at the interactive tier, and a batch is an
ordinary job at the bulk tier, owned by the submitting API key. Errors here are in OpenAI's shape
(:mod:`batchery.app.errors`).
"""
