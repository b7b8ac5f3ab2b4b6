"""The one exception tree of NIAS. Library errors are translated into it where they enter.

Each error carries a stable `code` (for clients) and an HTTP `status` (for the API
boundary, which turns any NiasError into `{"error": {"code", "message"}}`).
"""
from __future__ import annotations


class NiasError(Exception):
    """Raised for any failure NIAS knows how to name."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, **details: object):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = details

    def to_dict(self) -> dict:
        body: dict = {"code": self.code, "message": self.message}
        if self.details:
            body.update(self.details)
        return {"error": body}


class ConfigurationError(NiasError):
    """Raised when a setting is missing or malformed at start-up."""

    code = "configuration_error"


class BadUpload(NiasError):
    """Raised when an uploaded project is refused; `code` names the rule it broke."""

    code = "bad_upload"
    status = 400


class BadRequest(NiasError):
    """Raised when a request's parameters are malformed."""

    code = "bad_request"
    status = 400


class JobNotFound(NiasError):
    """Raised when no job has the given id."""

    code = "job_not_found"
    status = 404


class Conflict(NiasError):
    """Raised when a request does not fit the job's current state."""

    code = "conflict"
    status = 409


class InvalidTransition(Conflict):
    """Raised when the transition table forbids a state change."""

    code = "invalid_transition"


class BrokerUnavailable(NiasError):
    """Raised when RabbitMQ cannot be reached or refuses a publish."""

    code = "broker_unavailable"
    status = 503


class MessageRefused(BrokerUnavailable):
    """Raised when a message is refused for itself (too large, unroutable): sending it again cannot help."""

    code = "message_refused"
    status = 502


class ServiceUnavailable(NiasError):
    """Raised when another NIAS service cannot be reached over HTTP."""

    code = "service_unavailable"
    status = 503


class BadMessage(NiasError):
    """Raised when an AMQP message body does not decode to a known message."""

    code = "bad_message"
    status = 400


class BadSignature(BadMessage):
    """Raised when a message that must be signed by its unit is unsigned or its signature does not verify."""

    code = "bad_signature"
    status = 403


class ForeignEvent(NiasError):
    """Raised when an event comes from a unit that does not hold the attempt it reports on."""

    code = "foreign_event"
    status = 403


class ExecutionFailed(NiasError):
    """Raised when a job cannot be prepared or run; the message is shown to the researcher."""

    code = "execution_failed"
    status = 500


class UnitBusy(Conflict):
    """Raised when a processing unit is asked to run a job while it runs another."""

    code = "unit_busy"


class TransferFailed(NiasError):
    """A job's files could not be moved between the backend and a unit, after the retries."""

    code = "transfer_failed"
    status = 502


class StorageFull(NiasError):
    """The backend's volume has no room left for what was sent."""

    code = "storage_full"
    status = 507


class UnknownPool(BadRequest):
    """A job names a pool the admin has not declared (NIAS_POOLS)."""

    code = "unknown_pool"
