"""The OpenAPI document: valid OpenAPI 3.1, and complete: every public route the app serves is in it."""
from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from backend.app import create_app
from backend.openapi import openapi_path, public_rules


@pytest.fixture
def app(sqlite_store, make_settings):
    return create_app(make_settings(database_url=sqlite_store.url, internal_token="t"))


@pytest.fixture
def document(app) -> dict:
    answer = app.test_client().get("/api/openapi.json")
    assert answer.status_code == 200
    return answer.get_json()


def test_the_document_is_valid_openapi_3_1_and_served_without_signing_in(document):
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_public_api_route_and_method_is_described_in_the_document(app, document):
    missing = []
    for rule, method, _view in public_rules(app):
        path, _parameters = openapi_path(rule)
        if method.lower() not in document["paths"].get(path, {}):
            missing.append(f"{method} {rule}")
    assert not missing, f"routes without an OpenAPI description: {missing}"
    assert len(document["paths"]) >= 30


def test_the_internal_api_stays_out_of_the_public_document(document):
    assert not [path for path in document["paths"] if path.startswith("/internal")]


def test_routes_open_to_everyone_say_so_and_the_rest_need_a_token_or_a_session(document):
    open_ones = {(path, method) for path, item in document["paths"].items() for method, op in item.items()
                 if op.get("security") == []}
    assert ("/api/auth/login", "post") in open_ones and ("/api/openapi.json", "get") in open_ones
    assert ("/api/jobs", "post") not in open_ones
    assert {"token", "session"} <= set(document["components"]["securitySchemes"])


def test_flask_rule_arguments_become_typed_path_parameters():
    path, parameters = openapi_path("/api/jobs/<job_id>/runs/<int:attempt>/files/<path:name>")
    assert path == "/api/jobs/{job_id}/runs/{attempt}/files/{name}"
    assert [(p["name"], p["schema"]["type"]) for p in parameters] == [
        ("job_id", "string"), ("attempt", "integer"), ("name", "string")]


def test_the_reference_page_and_its_assets_come_from_the_server_itself(app):
    client = app.test_client()
    page = client.get("/api-docs/")
    assert page.status_code == 200 and b"/api-docs/assets/swagger-ui-bundle.js" in page.data
    assert b"//" not in page.data.replace(b"<!DOCTYPE", b"").split(b"<body>")[0].replace(b"://", b"")
    bundle = client.get("/api-docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.data) > 100_000
    assert b"/api/openapi.json" in client.get("/api-docs/start.js").data
