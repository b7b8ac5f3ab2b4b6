"""The public API's OpenAPI 3.1 document, built from the views themselves.

Each public view carries its description (`@describe(...)`): a summary, its query and body models
and its answers, all pydantic models (`backend.api_models`). `build_document` walks the app's
url_map, so the document lists exactly the routes the app serves, and a route without a
description is a gap the tests name. Pydantic writes JSON Schema 2020-12, the dialect OpenAPI 3.1
uses, so the schemas go into the document as they are.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"
PUBLIC_PREFIX = "/api/"
CONVERTER_TYPES = {"int": {"type": "integer", "minimum": 0}, "float": {"type": "number"}}
_RULE_ARGUMENT = re.compile(r"<(?:(?P<converter>[a-z]+)(?:\([^)]*\))?:)?(?P<name>\w+)>")

JSON = "application/json"


@dataclass(frozen=True)
class Answer:
    """One documented answer: its status, what it holds (a model, or a schema for non-JSON media)."""

    description: str
    model: type[BaseModel] | None = None
    media: str = JSON
    schema: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)  # name -> description (integer-valued)


@dataclass(frozen=True)
class Operation:
    summary: str
    answers: dict[int | str, Answer]
    description: str = ""
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_media: str = JSON
    body_required: bool = True
    public: bool = False  # answered without signing in
    tag: str | None = None


def describe(summary: str, answers: dict[int | str, Answer | type[BaseModel] | str], **options: Any) -> Callable:
    """Attach the view's OpenAPI description; `answers` maps a status to an Answer, a model or a sentence."""
    normalised = {status: _answer(value) for status, value in answers.items()}

    def attach(view: Callable) -> Callable:
        view.openapi = Operation(summary, normalised, description=(view.__doc__ or "").strip(), **options)
        return view
    return attach


def _answer(value: Answer | type[BaseModel] | str) -> Answer:
    if isinstance(value, Answer):
        return value
    if isinstance(value, str):
        return Answer(value)
    return Answer((value.__doc__ or value.__name__).strip().splitlines()[0], model=value)


def openapi_path(rule: str) -> tuple[str, list[dict]]:
    """`/api/jobs/<job_id>/runs/<int:attempt>` -> `/api/jobs/{job_id}/runs/{attempt}` and its parameters."""
    parameters = []
    for match in _RULE_ARGUMENT.finditer(rule):
        schema = CONVERTER_TYPES.get(match["converter"] or "", {"type": "string", "minLength": 1})
        parameters.append({"name": match["name"], "in": "path", "required": True, "schema": dict(schema)})
    return _RULE_ARGUMENT.sub(lambda m: "{" + m["name"] + "}", rule), parameters


def public_rules(app: Flask) -> list[tuple[str, str, Callable]]:
    """Every (rule, method, view) the app serves under /api/."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(PUBLIC_PREFIX):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((rule.rule, method, app.view_functions[rule.endpoint]))
    return found


def build_document(app: Flask, *, version: str = "1") -> dict:
    """The OpenAPI document of every described route under /api/ (undescribed ones are left out)."""
    models: set[type[BaseModel]] = set()
    operations = []
    for rule, method, view in public_rules(app):
        operation: Operation | None = getattr(view, "openapi", None)
        if operation is not None:
            operations.append((rule, method, operation))
            models.update(_models_of(operation))
    schemas = _component_schemas(models)
    paths: dict[str, dict] = {}
    for rule, method, operation in operations:
        path, parameters = openapi_path(rule)
        paths.setdefault(path, {})[method.lower()] = _operation_object(operation, parameters, method, rule)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "NIAS", "version": version,
                 "description": "Submit zipped Python projects as jobs, follow them and fetch their results."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "token": {"type": "http", "scheme": "bearer", "description": "an API token from the Account page"},
            "session": {"type": "apiKey", "in": "cookie", "name": "nias_session",
                        "description": "the pages' session; changes also need the X-CSRF-Token header"},
        }},
        "security": [{"token": []}, {"session": []}],
    }


def _models_of(operation: Operation) -> list[type[BaseModel]]:
    found = [answer.model for answer in operation.answers.values() if answer.model]
    return found + [model for model in (operation.body,) if model]


def _component_schemas(models: set[type[BaseModel]]) -> dict:
    ordered = sorted(models, key=lambda model: model.__name__)
    _, top = models_json_schema([(model, "serialization") for model in ordered], ref_template=REF_TEMPLATE)
    schemas = dict(top.get("$defs", {}))
    for model in ordered:  # a body model is read as validation input; its schema is the same shape
        schemas.setdefault(model.__name__, model.model_json_schema(ref_template=REF_TEMPLATE))
    return schemas


def _operation_object(operation: Operation, parameters: list[dict], method: str, rule: str) -> dict:
    body: dict[str, Any] = {
        "operationId": f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', rule.lower()).strip('_')}",
        "summary": operation.summary,
        "parameters": parameters + _query_parameters(operation.query),
        "responses": {str(status): _response_object(answer) for status, answer in operation.answers.items()},
    }
    if operation.description:
        body["description"] = operation.description
    if operation.tag:
        body["tags"] = [operation.tag]
    if operation.public:
        body["security"] = []
    if operation.body is not None:
        body["requestBody"] = {"required": operation.body_required, "content": {
            operation.body_media: {"schema": {"$ref": REF_TEMPLATE.format(model=operation.body.__name__)}}}}
    return body


def _query_parameters(query: type[BaseModel] | None) -> list[dict]:
    if query is None:
        return []
    schema = query.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        described = {key: value for key, value in prop.items() if key not in ("title", "description")}
        parameter = {"name": name, "in": "query", "required": name in required, "schema": described}
        if prop.get("description"):
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


def _response_object(answer: Answer) -> dict:
    body: dict[str, Any] = {"description": answer.description}
    if answer.model is not None:
        body["content"] = {answer.media: {"schema": {"$ref": REF_TEMPLATE.format(model=answer.model.__name__)}}}
    elif answer.schema is not None:
        body["content"] = {answer.media: {"schema": answer.schema}}
    if answer.headers:
        body["headers"] = {name: {"description": text, "schema": {"type": "integer"}}
                           for name, text in answer.headers.items()}
    return body
