"""Publishing job messages: one long-lived, confirmed AMQP connection for the whole service."""
from __future__ import annotations

import logging

from nias.amqp import Publisher, Topology
from nias.messages import ControlMessage, JobMessage, UnitDrain
from nias.settings import Settings

logger = logging.getLogger(__name__)


class JobPublisher:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._topology = Topology.of_backend(settings)
        self._publisher = Publisher(settings)

    def publish(self, message: JobMessage) -> None:
        """Return once RabbitMQ has the message on disk; BrokerUnavailable otherwise."""
        self._publisher.publish(self._topology.jobs_queue(message.pool), message.encode(),
                                message_id=message.job_id, priority=message.priority)
        logger.info("Job %s: published to pool %s (dispatch %s, priority %s)", message.job_id, message.pool,
                    message.dispatch, message.priority)

    def publish_control(self, message: ControlMessage | UnitDrain) -> None:
        """Fan a pause/resume/cancel out to every consumer (the one holding the job acts on it), or a
        drain (the unit it names acts on it)."""
        self._publisher.publish("", message.encode(), exchange=self._topology.control_exchange)
        if isinstance(message, UnitDrain):
            logger.info("Unit %s: %s sent", message.unit, "drain" if message.drain else "undrain")
        else:
            logger.info("Job %s: %s sent to the units", message.job_id, message.action)

    def is_ready(self) -> bool:
        return self._publisher.is_connected()

    def start_keepalive(self) -> None:
        self._publisher.start_keepalive()

    def close(self) -> None:
        self._publisher.close()
