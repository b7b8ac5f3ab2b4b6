"""The backend's Flask app factory: the public API, the internal API and the frontend."""
from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, jsonify, send_from_directory
from werkzeug.exceptions import NotFound

from nias.logs import configure_logging
from nias.settings import Settings, load_settings, require
from nias.health import Health, ServiceKind
from nias.web import folder_writable, health_response, install_error_handlers, require_internal_token

from backend import (accounts, accounts_api, admin_api, api_docs, api_models, commands_api, control_api, datasets_api,
                     events_api, internal_api, job_records_api, jobs_api, metrics_api, provenance_api, results_api,
                     summary, sweeps_api)
from backend.openapi import describe
from backend.dispatcher import Dispatcher
from backend.recorder import Recorder
from backend.store import Store, open_store
from backend.auth import install_auth
from backend.jobs_api import job_to_json
from backend.live import feed
from backend.uploads import ReadTimeout, UploadRequest
from backend.webhooks import WebhookSender

logger = logging.getLogger(__name__)

FRONTEND_DIR = Path(os.environ.get("NIAS_FRONTEND_DIR", Path(__file__).resolve().parents[2] / "frontend"))


@dataclass
class Backend:
    """What the views share: settings, the store, the dispatcher, the recorder and the webhooks."""

    settings: Settings
    store: Store
    dispatcher: Dispatcher
    recorder: Recorder
    webhooks: WebhookSender | None = None

    def start_background(self) -> None:
        self.dispatcher.start()
        self.recorder.start()
        if self.webhooks is not None:
            feed.listen(self.webhooks.hear)
            self.webhooks.start()


def secret_key(settings: Settings) -> str:
    """NIAS_SECRET_KEY, or one made once and kept (0600) in the data dir, so CSRF tokens survive restarts."""
    if settings.secret_key:
        return settings.secret_key
    path = settings.private_dir / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    for folder in (settings.jobs_dir, settings.uploads_dir, settings.private_dir):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)  # jobs run as another user: uploads, logs, results and the store stay private
    store = open_store(settings.store_url)
    app = Flask(__name__, static_folder=None)
    app.request_class = UploadRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config.update(SECRET_KEY=secret_key(settings))  # derives CSRF tokens; sessions live in the store
    app.json.sort_keys = False
    dispatcher = Dispatcher(store, settings)
    recorder = Recorder(store, settings, dispatcher.send_control)
    dispatcher.recorder = recorder
    def render_job(job: dict) -> dict:
        with app.test_request_context():  # the job's links are paths, as the API gives them
            return job_to_json(job)

    app.extensions["nias"] = Backend(settings, store, dispatcher, recorder, WebhookSender(store, settings, render_job))
    app.wsgi_app = ReadTimeout(app.wsgi_app, settings.read_timeout_s)
    install_error_handlers(app)
    require_internal_token(app, settings, ("/internal/",))
    install_auth(app)
    accounts.ensure_admin(store, settings)
    app.register_blueprint(accounts_api.bp)
    app.register_blueprint(jobs_api.bp)
    app.register_blueprint(datasets_api.bp)
    app.register_blueprint(internal_api.bp)
    app.register_blueprint(results_api.bp)
    app.register_blueprint(summary.bp)
    app.register_blueprint(control_api.bp)
    app.register_blueprint(job_records_api.bp)
    app.register_blueprint(provenance_api.bp)
    app.register_blueprint(events_api.bp)
    app.register_blueprint(admin_api.bp)
    app.register_blueprint(commands_api.bp)
    app.register_blueprint(sweeps_api.bp)
    app.register_blueprint(api_docs.bp)
    app.register_blueprint(metrics_api.bp)

    @app.get("/healthz")
    def healthz():
        # Uploads land in uploads/, then move to jobs/<id>/ with the job's log and result.
        checks = {"store": store.ping(),
                  "data_dir": folder_writable(settings.uploads_dir) and folder_writable(settings.jobs_dir)}
        return health_response(Health(ServiceKind.BACKEND, "backend", checks, instance=settings.instance_id))

    @app.get("/api/limits")
    @describe("The upload limits", {200: api_models.Limits}, public=True, tag="server")
    def limits():
        return jsonify({
            "max_upload_mb": settings.max_upload_mb,
            "max_files": settings.max_files,
            "max_unpacked_mb": settings.max_unpacked_mb,
            "job_timeout_s": settings.job_timeout_s,
        })

    @app.get("/", defaults={"path": "index.html"})
    @app.get("/<path:path>")
    def frontend(path: str):
        try:
            return send_from_directory(FRONTEND_DIR, path)
        except NotFound:
            if path.startswith(("api/", "internal/")):
                raise
            page = send_from_directory(FRONTEND_DIR, "404.html")  # a person typed it: answer a page
            page.status_code = 404
            return page

    return app


def create_served_app() -> Flask:
    """The gunicorn entry point: settings from the environment, logging, background threads."""
    settings = load_settings()
    configure_logging(settings.log_level, "backend")
    require(settings, "internal_token")
    app = create_app(settings)
    app.extensions["nias"].start_background()
    logger.info("Backend serving on %s:%s with data in %s", settings.host, settings.port, settings.data_dir)
    return app
