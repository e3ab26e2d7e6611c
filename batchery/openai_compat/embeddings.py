"""An OpenAI embeddings request (``POST /v1/embeddings``, or one line of a batch file) read into texts.

``input`` is a string, an array of strings, an array of token ids, or an array of such arrays. Token ids are
decoded to text with the model's own tokenizer, and the text is embedded as any other: the worker's path stays
one. So ids that the model's tokenizer made come back to the same model input (MiniLM's vocabulary is uncased
WordPiece, which decodes and re-encodes to the same ids for ordinary text), while ids from another tokenizer
(tiktoken's, which some OpenAI clients send by default) decode to text that means nothing: send strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchery.errors import BadRequest, ModelNotFound, PayloadTooLarge
from batchery.models.registry import ModelSpec, Registry
from batchery.models.tokens import tokens_of
from batchery.settings import Settings

ENCODINGS = ("float", "base64")
INPUT_FORMS = "a string, an array of strings, an array of token ids, or an array of arrays of token ids"


@dataclass(frozen=True)
class EmbeddingRequest:
    spec: ModelSpec
    texts: list[str]
    encoding_format: str = "float"
    #: The model as named: a bare name is split across its versions by weight, keyed by ``user`` when given.
    model: str = ""
    #: OpenAI's end-user id: it keeps one user's requests on one version of the model.
    user: str | None = None


def read_request(body: Any, registry: Registry, settings: Settings) -> EmbeddingRequest:
    """The model, texts and encoding of a request body; 400 (or 404, 413) naming the field at fault."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    spec = embedding_model(body.get("model"), registry)
    encoding = body.get("encoding_format")
    if encoding is None:
        encoding = "float"
    if encoding not in ENCODINGS:
        raise BadRequest(f"'encoding_format' must be 'float' or 'base64', not {encoding!r}", param="encoding_format")
    check_dimensions(body.get("dimensions"), spec)
    user = body.get("user", "")
    if not isinstance(user, str):
        raise BadRequest("'user' must be a string", param="user")
    texts = read_input(body.get("input"), spec, settings)
    return EmbeddingRequest(spec, texts, encoding, body["model"], user or None)


def embedding_model(name: Any, registry: Registry) -> ModelSpec:
    """A text model that declares its vectors' length (``options.dimensions``), by name, ``name@version`` or alias."""
    if not isinstance(name, str) or not name:
        raise BadRequest("'model' must be a model name, e.g. \"minilm\"", param="model")
    try:
        spec = registry.get(name)
    except ModelNotFound as exc:
        raise ModelNotFound(exc.message, param="model") from exc
    if spec.input != "text" or spec.dimensions is None:
        served = ", ".join(sorted({s.name for s in embedding_models(registry)})) or "none"
        raise BadRequest(f"model {name!r} is not an embedding model; these are: {served}", param="model")
    return spec


def embedding_models(registry: Registry) -> list[ModelSpec]:
    return [spec for spec in registry if spec.input == "text" and spec.dimensions is not None]


def check_dimensions(value: Any, spec: ModelSpec) -> None:
    """``dimensions`` may only say what the model gives: vectors are never cut short, since a model not trained
    for it (MiniLM) loses meaning, without a word, in a truncated vector."""
    if value is None or (type(value) is int and value == spec.dimensions):
        return
    raise BadRequest(
        f"model {spec.name!r} gives vectors of {spec.dimensions} dimensions only; 'dimensions' may be "
        f"{spec.dimensions} or left out, not {value!r}",
        param="dimensions",
    )


def read_input(value: Any, spec: ModelSpec, settings: Settings) -> list[str]:
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        texts = value
    elif isinstance(value, list) and value and all(_is_id(v) for v in value):
        texts = _decode(spec, [[int(v) for v in value]], settings)
    elif isinstance(value, list) and value and all(_is_ids(v) for v in value):
        texts = _decode(spec, [[int(v) for v in row] for row in value], settings)
    else:
        raise BadRequest(f"'input' must be {INPUT_FORMS}, none of them empty", param="input")
    if len(texts) > settings.max_items_per_job:
        raise PayloadTooLarge(f"{len(texts)} inputs, over the limit of {settings.max_items_per_job}", param="input")
    for index, text in enumerate(texts):
        if len(text) > settings.max_input_chars:
            raise PayloadTooLarge(
                f"input[{index}]: {len(text)} characters, over the limit of {settings.max_input_chars}", param="input"
            )
    return texts


def count_tokens(spec: ModelSpec, texts: list[str]) -> list[int]:
    """Each text's tokens as the model runs them; zeros for a model without a tokenizer."""
    tokens = tokens_of(spec)
    return tokens.count(texts) if tokens is not None and texts else [0] * len(texts)


def _decode(spec: ModelSpec, rows: list[list[int]], settings: Settings) -> list[str]:
    tokens = tokens_of(spec)
    if tokens is None:
        raise BadRequest(f"model {spec.name!r} has no tokenizer to read token ids with; send text", param="input")
    for index, row in enumerate(rows):
        if len(row) > settings.max_input_chars:
            raise PayloadTooLarge(
                f"input[{index}]: {len(row)} token ids, over the limit of {settings.max_input_chars}", param="input"
            )
    return tokens.decode(rows)


def _is_id(value: Any) -> bool:
    """An integer; JSON does not tell 986 from 986.0, so a whole float is one too."""
    return type(value) is int or (type(value) is float and value.is_integer())


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_id(v) for v in value)
