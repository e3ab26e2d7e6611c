"""``POST /v1/embeddings``: OpenAI's embeddings request, answered through the same queue and batcher as predict."""

from __future__ import annotations

from flask import Blueprint, Response, request

from batchery import tiers
from batchery.app import tenancy
from batchery.app.inline import run_now
from batchery.app.jobs import json_response
from batchery.app.requests import json_object
from batchery.app.services import services
from batchery.openai_compat.embeddings import count_tokens, read_request
from batchery.openai_compat.shapes import embedding_list, item_failure, vector

bp = Blueprint("embeddings", __name__, url_prefix="/v1/embeddings")


@bp.post("")
def create_embeddings() -> Response:
    """At the interactive tier (or the key's ceiling, if lower), like predict; the same texts give the same
    vectors as ``/v1/models/<name>/predict``. A request with any failed input answers that input's error."""
    svc = services()
    embedding = read_request(json_object(request), svc.registry, svc.settings)
    tier = tenancy.default_tier(tiers.INTERACTIVE)
    tenancy.check_tier(tier)
    vectors = []
    spec, results = run_now(svc, embedding.model, embedding.texts, tier, embedding.user)
    for index, (kind, value) in enumerate(results):
        found = vector(kind, value)
        if found is None:
            raise item_failure(index, kind, value)
        vectors.append(found)
    tokens = sum(count_tokens(spec, embedding.texts))
    return json_response(embedding_list(vectors, embedding.encoding_format, spec.ref, tokens))
