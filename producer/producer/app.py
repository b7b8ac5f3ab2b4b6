"""The producer's Flask app: turns a job reference from the backend into a confirmed message."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request

from nias.logs import configure_logging
from nias.messages import JobMessage, UnitDrain, decode_control
from nias.settings import Settings, load_settings
from nias.settings import require
from nias.health import Health, ServiceKind
from nias.web import health_response, install_error_handlers, require_internal_token

from producer.publisher import JobPublisher

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, publisher: JobPublisher | None = None) -> Flask:
    settings = settings or load_settings()
    publisher = publisher or JobPublisher(settings)
    app = Flask(__name__)
    app.extensions["publisher"] = publisher
    install_error_handlers(app)
    require_internal_token(app, settings, ("/api/",))

    @app.post("/api/publish")
    def publish():
        message = JobMessage.decode(request.get_data())
        publisher.publish(message)
        return jsonify({"published": message.job_id}), 202

    @app.post("/api/control")
    def control():
        message = decode_control(request.get_data())
        publisher.publish_control(message)
        if isinstance(message, UnitDrain):
            return jsonify({"sent": "drain" if message.drain else "undrain", "unit": message.unit}), 202
        return jsonify({"sent": message.action, "job_id": message.job_id}), 202

    @app.get("/healthz")
    def healthz():
        return health_response(Health(ServiceKind.PRODUCER, "producer", {"broker": publisher.is_ready()},
                                      instance=settings.instance_id))

    return app


def create_served_app() -> Flask:
    settings = load_settings()
    configure_logging(settings.log_level, "producer")
    require(settings, "internal_token")
    app = create_app(settings)
    app.extensions["publisher"].start_keepalive()
    logger.info("Producer publishing to the job queues of pools %s", ", ".join(settings.pool_names))
    return app
