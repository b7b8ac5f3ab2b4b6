"""`GET /metrics`: the backend's Prometheus metrics, for the internal token or an admin's API token.

Prometheus sends either as `Authorization: Bearer <token>` (its `authorization: credentials_file`);
NIAS services may send the internal token in `X-Nias-Internal-Token` as they do elsewhere.
"""
from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nias.web import is_internal_token, presented_token

from backend import accounts
from backend.accounts import AuthenticationFailed, Forbidden
from backend.metrics import backend_registry

bp = Blueprint("metrics", __name__)


def check_scraper() -> None:
    """Let the internal token or an admin's API token through; anyone else gets 401 or 403."""
    nias = current_app.extensions["nias"]
    sent = presented_token()
    if not sent:
        raise AuthenticationFailed("Send the internal token or an admin's API token as "
                                   "'Authorization: Bearer <token>'.")
    if is_internal_token(nias.settings, sent):
        return
    if accounts.user_for_token(nias.store, sent)["role"] != "admin":
        raise Forbidden("Only the internal token or an admin's API token may read the metrics.")


@bp.get("/metrics")
def metrics():
    check_scraper()
    registry = current_app.extensions.get("nias.metrics")
    if registry is None:
        nias = current_app.extensions["nias"]
        registry = current_app.extensions["nias.metrics"] = backend_registry(nias.store, nias.settings)
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
