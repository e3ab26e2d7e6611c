"""The OpenAPI description: a valid document that describes exactly the routes Flask serves."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from batchery.app import create_app
from batchery.app.openapi import describe as describe_with
from batchery.models.registry import load_registry

METHODS = {"get", "post", "put", "patch", "delete"}


def describe(settings) -> dict:
    return describe_with(settings, load_registry(settings.models_file))


def flask_operations(app) -> set[tuple[str, str]]:
    return {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods
        if method.lower() in METHODS
    }


def described_operations(doc: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in item if method in METHODS}


@pytest.mark.parametrize("keys", ["", "one-key,another"])
def test_the_description_is_valid_openapi_3_1(settings_with, keys):
    doc = describe(settings_with(api_keys=keys))
    validate(doc)
    assert doc["openapi"] == "3.1.0"


def test_every_flask_route_is_described_and_nothing_else(settings):
    app = create_app(settings)
    assert flask_operations(app) == described_operations(describe(settings))


def test_every_error_answer_is_the_error_document(settings_with):
    """OpenAI's routes answer errors in OpenAI's shape, every other route in batchery's."""
    doc = describe(settings_with(api_keys="k"))
    for path, item in doc["paths"].items():
        shape = "OpenAIError" if path.startswith(("/v1/embeddings", "/v1/files", "/v1/batches")) else "Error"
        for method in METHODS & item.keys():
            for status, response in item[method]["responses"].items():
                if int(status) >= 400 and path != "/readyz":
                    assert response["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{shape}"}, (path, method, status)


def test_keys_add_security_and_401_except_on_the_open_routes(settings, settings_with):
    open_doc = describe(settings)
    assert "security" not in open_doc and "securitySchemes" not in open_doc["components"]
    assert not any("401" in item[m]["responses"] for item in open_doc["paths"].values() for m in METHODS & item.keys())
    doc = describe(settings_with(api_keys="k"))
    assert doc["security"] == [{"bearer": []}, {"apiKey": []}]
    for path in ("/", "/static/{filename}", "/v1", "/healthz", "/readyz", "/openapi.json"):
        assert doc["paths"][path]["get"]["security"] == []
    assert "401" in doc["paths"]["/v1/jobs"]["post"]["responses"]
    assert "401" in doc["paths"]["/metrics"]["get"]["responses"]


def test_served_at_openapi_json_with_the_settings_limits(http, api, settings):
    response = http.get(f"{api.url}/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc == describe(settings)
    for job_request in doc["components"]["schemas"]["JobRequest"]["oneOf"]:
        assert job_request["properties"]["inputs"]["maxItems"] == settings.max_items_per_job


def test_the_index_links_to_the_description(http, api):
    body = http.get(f"{api.url}/v1").json()
    assert body["name"] == "batchery"
    assert http.get(body["links"]["openapi"]).json()["openapi"] == "3.1.0"


def test_a_job_request_is_described_per_input_kind_with_the_registry_s_models(settings):
    doc = describe(settings)
    by_kind = {r["title"]: r["properties"] for r in doc["components"]["schemas"]["JobRequest"]["oneOf"]}
    assert set(by_kind) == {"text job", "json job"}
    assert by_kind["text job"]["model"]["enum"] == ["minilm", "minilm@l6-v2"]
    assert by_kind["text job"]["inputs"]["items"] == {"type": "string", "maxLength": settings.max_input_chars}
    assert {"echo", "echo@1", "echo-orphan", "echo-slow@1"} <= set(by_kind["json job"]["model"]["enum"])
    predict = doc["paths"]["/v1/models/{name}/predict"]["post"]["parameters"][0]
    assert set(predict["schema"]["enum"]) == set(by_kind["text job"]["model"]["enum"] + by_kind["json job"]["model"]["enum"])


def test_keys_add_403_to_submissions_and_say_what_keys_do(settings, settings_with):
    open_doc, doc = describe(settings), describe(settings_with(api_keys="k"))
    for path in ("/v1/jobs", "/v1/models/{name}/predict"):
        assert "403" not in open_doc["paths"][path]["post"]["responses"]
        assert "tier_not_allowed" in doc["paths"][path]["post"]["responses"]["403"]["description"]
        assert "quota_exceeded" in doc["paths"][path]["post"]["responses"]["429"]["description"]
    weights = doc["paths"]["/v1/models/{name}/weights"]
    assert all("admin_required" in weights[m]["responses"]["403"]["description"] for m in ("put", "delete"))
    forbidding = {
        (path, m) for path, item in doc["paths"].items() for m in METHODS & item.keys() if "403" in item[m]["responses"]
    }
    assert forbidding == {("/v1/jobs", "post"), ("/v1/models/{name}/predict", "post"),
                          ("/v1/models/{name}/weights", "put"), ("/v1/models/{name}/weights", "delete")}
    assert "quota" in doc["info"]["description"] and "quota" not in open_doc["info"]["description"]
    assert "owner" in doc["components"]["schemas"]["Job"]["properties"]
