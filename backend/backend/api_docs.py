"""The API's own description: the OpenAPI document at /api/openapi.json and a reference page.

The page is Swagger UI, served from the swagger-ui-py package's assets (no CDN: the server may
have no internet), with a start-up script of NIAS's own that points it at the document.
"""
from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, current_app, jsonify, send_from_directory

from backend import api_models as api
from backend.openapi import build_document, describe

bp = Blueprint("api_docs", __name__)

ASSETS = resources.files("swagger_ui") / "static"
REFERENCE_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>NIAS API reference</title>
  <link rel="stylesheet" href="/api-docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/api-docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api-docs/assets/swagger-ui-bundle.js"></script>
  <script src="/api-docs/start.js"></script>
</body>
</html>
"""
START_SCRIPT = """window.onload = function () {
  window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
                               withCredentials: true});
};
"""


@bp.get("/api/openapi.json")
@describe("This API's OpenAPI 3.1 document", {200: api.OPENAPI_DOCUMENT},
          public=True, tag="server")
def openapi_document():
    document = current_app.extensions.get("nias.openapi")
    if document is None:  # built once: the routes do not change while the app runs
        document = current_app.extensions["nias.openapi"] = build_document(current_app)
    return jsonify(document)


@bp.get("/api-docs/")
def reference_page():
    return Response(REFERENCE_PAGE, mimetype="text/html")


@bp.get("/api-docs/start.js")
def start_script():
    return Response(START_SCRIPT, mimetype="text/javascript")


@bp.get("/api-docs/assets/<path:name>")
def asset(name: str):
    return send_from_directory(str(ASSETS), name, max_age=3600)
