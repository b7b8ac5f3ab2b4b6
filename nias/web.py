"""What every NIAS Flask service shares: the error boundary, a JSON body reader, the internal
credential check, the health checks' probe of a folder and their answer."""
from __future__ import annotations

import hmac
import logging
import tempfile
from pathlib import Path

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from nias.errors import BadRequest, NiasError
from nias.health import Health
from nias.settings import Settings

INTERNAL_HEADER = "X-Nias-Internal-Token"
PROBE_PREFIX = ".nias-probe-"  # the health checks' short-lived files, so watchers can tell them apart

logger = logging.getLogger(__name__)


def folder_writable(folder: Path) -> bool:
    """A real write, for health checks: `os.access` says yes to root on a read-only mount."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=PROBE_PREFIX):
            return True
    except OSError:
        return False


def health_response(health: Health):
    """`GET /healthz`'s answer: who answers and what it checked; 200 only when every check passed."""
    return jsonify(health.to_dict()), health.status


def install_error_handlers(app: Flask) -> None:
    """Turn every error into `{"error": {"code", "message"}}` with its status."""

    @app.errorhandler(NiasError)
    def _nias_error(exc: NiasError):
        if exc.status >= 500:
            logger.error("%s %s: %s", request.method, request.path, exc.message)
        return jsonify(exc.to_dict()), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            code = "upload_too_large"
            if limit:
                message = f"The upload is larger than the limit of {limit // (1024 * 1024)} MB."
        return jsonify({"error": {"code": code, "message": message}}), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("%s %s failed", request.method, request.path)
        return jsonify({"error": {"code": "internal_error", "message": "Something went wrong on the server."}}), 500


def read_json() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def internal_headers(settings: Settings) -> dict[str, str]:
    """What one NIAS service sends to prove to another that it is one of them."""
    return {INTERNAL_HEADER: settings.internal_token}


def require_internal_token(app: Flask, settings: Settings, prefixes: tuple[str, ...]) -> None:
    """Refuse requests under `prefixes` that lack the internal credential (health checks stay open)."""

    @app.before_request
    def _check_internal_token():
        if not request.path.startswith(prefixes):
            return None
        sent = request.headers.get(INTERNAL_HEADER, "")
        if not settings.internal_token or not hmac.compare_digest(sent, settings.internal_token):
            raise NiasError("This endpoint is for NIAS services only.", code="internal_only", status=403)
        return None


def presented_token() -> str:
    """The credential a request carries: `Authorization: Bearer <token>`, else the internal-token header."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer "):].strip()
    return request.headers.get(INTERNAL_HEADER, "")


def is_internal_token(settings: Settings, sent: str) -> bool:
    return bool(settings.internal_token) and hmac.compare_digest(sent.encode(), settings.internal_token.encode())


def require_scraper(settings: Settings) -> None:
    """Metrics are for the internal token (Prometheus sends it as a bearer token): 401 without one, 403 for another."""
    sent = presented_token()
    if not sent:
        raise NiasError("Send the internal token as 'Authorization: Bearer <token>'.", code="unauthenticated",
                        status=401)
    if not is_internal_token(settings, sent):
        raise NiasError("Only the internal token may read this service's metrics.", code="internal_only", status=403)
