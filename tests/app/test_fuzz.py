"""Fuzzing the API from its own OpenAPI description (schemathesis), against a real worker.

The run has a redis-server of its own (jobs, queues and heartbeats), with a models file
in which every model is synthetic (``minilm`` is overridden by echo, still taking text) and one worker serving
them all, so that ``/readyz`` can answer 200 when the run is over. API keys are on, so schemathesis also checks
that requests without one are refused.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Iterator

import pytest
import redis
import requests
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance, use_after_free

from batchery.cli.redis_server import RedisServer
from batchery.models.registry import load_registry
from batchery.settings import Settings
from batchery.store.heartbeats import live_workers
from tests.conftest import ApiServer, WorkerProcess

KEY = "fuzz-key"
NDJSON = "application/x-ndjson"
AUTH = {"Authorization": f"Bearer {KEY}"}
FUZZ_MODELS = textwrap.dedent(
    """
    [models.minilm]
    runtime = "echo"
    description = "synthetic: minilm's name and text inputs, served by echo for the fuzz run"
    [models.minilm.options]
    vector_dims = 384

    [models.echo-slow]
    runtime = "echo"
    input = "json"
    max_batch_size = 8
    max_wait_ms = 1
    description = "synthetic: 50 ms a batch, so that a big predict can pass its timeout"
    [models.echo-slow.options]
    batch_latency_ms = 50
    """
)


@pytest.fixture(scope="module")
def fuzz_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "models.toml").write_text(FUZZ_MODELS)
    server = RedisServer(folder / "redis", persist=False).start()
    yield dataclasses.replace(
        settings, redis_url=server.url, models_file=str(folder / "models.toml"), api_keys=KEY, predict_timeout_s=2.0,
        results_wait_max_s=2.0,  # as the predict timeout: every call answers well within the client's 30 s
    )
    server.stop()


@pytest.fixture(scope="module")
def fuzz_worker(fuzz_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    models = load_registry(fuzz_settings.models_file).names()
    worker = WorkerProcess(fuzz_settings, sorted(models), "fuzz", tmp_path_factory.mktemp("fuzz-worker") / "worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def fuzzed_api(fuzz_settings: Settings, fuzz_worker: WorkerProcess) -> Iterator[ApiServer]:
    with ApiServer(fuzz_settings) as server:
        yield server
        readiness = requests.get(f"{server.url}/readyz", timeout=10)
        assert readiness.status_code == 200, f"not ready after fuzzing: {readiness.text}"


@pytest.fixture(scope="module")
def api_schema(fuzzed_api: ApiServer):
    rejections = [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]  # limits on items and characters
    config = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": rejections}}})
    return schemathesis.openapi.from_url(f"{fuzzed_api.url}/openapi.json", config=config)


def named_model(case) -> str | None:
    """The model a request names: in the path (predict), in a JSON body, or in ?model= (NDJSON)."""
    if case.path_parameters and "name" in case.path_parameters:
        return case.path_parameters["name"]
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        return case.body["model"]
    return (case.query or {}).get("model")


def served(settings: Settings, model: str | None) -> bool:
    queues = set(load_registry(settings.models_file).get(model).queues)
    return any(queues <= set(w.get("queues", [])) for w in live_workers(redis.Redis.from_url(settings.redis_url)))


def make_documented_server_errors_only(settings: Settings):
    """5xx only where promised: 503 ``no_live_worker`` when no worker serves the model, 504 on predict and embeddings."""

    def documented_server_errors_only(ctx, response, case) -> None:
        if response.status_code < 500:
            return
        code = response.json()["error"]["code"]
        if (response.status_code, code) == (504, "timeout"):
            assert case.operation.path in ("/v1/models/{name}/predict", "/v1/embeddings"), f"timeout: {response.text}"
        elif (response.status_code, code) == (503, "no_live_worker"):
            assert case.operation.path == "/readyz" or not served(settings, named_model(case)), response.text
        else:
            raise AssertionError(f"undocumented server error {response.status_code}: {response.text}")

    return documented_server_errors_only


def positive_data_accepted(ctx, response, case) -> None:
    """schemathesis's own check, less the rejections that tie two parts of a request, which OpenAPI 3.1 cannot describe.

    A predict body's inputs must fit the model named in the path (422); an NDJSON body is a string that must hold
    one JSON value per line, with ?model= beside it (400); a ?model=, ?cache= or ?tier= beside a JSON body must agree with it
    (400), as the operation's parameters say.
    An input nested past the depth limit or holding an integer beyond 64 bits is 422, and its metadata 400: a schema
    cannot bound the depth of any JSON value, nor tell ``100000000000000000000`` from ``1e20``. New weights must name
    the versions of the model in the path, one of them above 0 (400).
    """
    if case.operation.path == "/v1/models/{name}/weights" and response.status_code == 400:
        if any(s in response.text for s in ("has no version", "weight above 0")):
            return
    if case.operation.path == "/v1/models/{name}/predict" and response.status_code == 422:
        return
    if response.status_code in (400, 422) and any(s in response.text for s in ("64 bits", "levels of lists")):
        return
    if response.status_code == 400 and (case.media_type == NDJSON or {"model", "cache", "tier"} & set(case.query or {})):
        return
    positive_data_acceptance(ctx, response, case)


def negative_data_rejected(ctx, response, case) -> None:
    """schemathesis's own check, but not for NDJSON: any value it makes for that string body goes out as text."""
    if case.media_type != NDJSON:
        negative_data_rejection(ctx, response, case)


EXCLUDED = [not_a_server_error, positive_data_acceptance, negative_data_rejection]
ADDED = [positive_data_accepted, negative_data_rejected]
schema = schemathesis.pytest.from_fixture("api_schema")
schemathesis.serializer.alias(NDJSON, "text/plain")  # the description's NDJSON body is a string
FUZZ = hypothesis_settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.mark.slow
@schema.parametrize()
@hypothesis_settings(FUZZ, max_examples=12)
def test_every_operation_answers_as_described(case, fuzzed_api, fuzz_settings):
    case.call_and_validate(
        base_url=fuzzed_api.url,
        headers=AUTH,
        excluded_checks=EXCLUDED,
        additional_checks=[make_documented_server_errors_only(fuzz_settings), *ADDED],
        timeout=30,
    )


@pytest.mark.slow
def test_jobs_followed_through_their_links_answer_as_described(api_schema, fuzzed_api, fuzz_settings):
    """Submit, then poll, read results or cancel the job just made (the 202's OpenAPI links).

    ``DELETE /v1/jobs/<id>`` cancels: the job and its finished items stay readable until the job TTL, by design,
    so schemathesis's ``use_after_free`` check (a deleted resource must be gone) does not apply.
    """
    check = make_documented_server_errors_only(fuzz_settings)

    class Workflow(api_schema.as_state_machine()):
        def get_call_kwargs(self, case) -> dict:
            return {"base_url": fuzzed_api.url, "headers": AUTH, "timeout": 30}

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            case.validate_response(
                response, excluded_checks=[*EXCLUDED, use_after_free], additional_checks=[check, *ADDED],
                transport_kwargs=kwargs, recorder=getattr(self, "recorder", None),
            )

    Workflow.run(settings=hypothesis_settings(FUZZ, max_examples=10, stateful_step_count=5))
