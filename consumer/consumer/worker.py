"""What a consumer does with one job message, as plain functions testable without a broker.

The message is only a wake-up call: the backend's job store decides whether it may run.
1. claim the job at the backend (which refuses a stale, cancelled or already-held job), waiting
   out a backend that is down and trying a failed claim `CLAIM_TRIES` times before the message
   is handed back (counted: see `delivery.py`);
2. hand it to this consumer's processing unit over HTTP;
3. follow the run until the unit reports it done; if the unit dies, report the attempt lost
   so the backend can queue the job again.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import Enum

import requests

from nias.errors import BadMessage, ServiceUnavailable
from nias.health import Health, ServiceKind
from nias.internal import ClaimAnswer, ClaimRequest, RunStatus, claim_path
from nias.messages import ControlMessage, JobEvent, JobMessage
from nias.settings import Settings
from nias.web import internal_headers

logger = logging.getLogger(__name__)

UNIT_POLL_S = 5
CLAIM_TRIES = 3  # claims of one delivery while the backend answers with failures
RETRY_DELAY_S = 0.2  # between those claims; doubled on each try
OUTAGE_DELAY_MAX_S = 5.0  # the longest wait between claims while the backend does not answer
RETRYABLE_4XX = {408, 429}  # client errors that say "not now" rather than "never"
MAX_ANSWER_TEXT = 300


class Verdict(str, Enum):
    RUN = "run"  # claimed: ack the message and run the job
    DROP = "drop"  # stale or already handled: ack and forget
    DEAD = "dead"  # can never run (unknown job, claim refused): dead-letter with the reason
    AGAIN = "again"  # the backend answered with a failure: try again, a bounded number of times


@dataclass
class Claim:
    verdict: Verdict
    attempt: int = 0
    reason: str = ""


def _answer_text(response: requests.Response) -> str:
    """The backend's error message if it sent one, else the start of its answer."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    if not isinstance(message, str):
        message = response.content[:MAX_ANSWER_TEXT].decode(errors="replace")
    return message[:MAX_ANSWER_TEXT]


def _attempt_of(response: requests.Response) -> int | None:
    try:
        return ClaimAnswer.decode(response.content).attempt
    except BadMessage:
        return None


def read_claim_answer(response: requests.Response) -> Claim:
    """What the backend's answer to a claim means for the message."""
    status = response.status_code
    if status == 200:
        attempt = _attempt_of(response)
        if attempt is not None:
            return Claim(Verdict.RUN, attempt=attempt)
        return Claim(Verdict.AGAIN, reason=f"claim answered 200 without a valid attempt: {_answer_text(response)}")
    if status == 409:
        return Claim(Verdict.DROP, reason=f"HTTP 409: {_answer_text(response)}")
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return Claim(Verdict.DEAD, reason=f"claim refused with HTTP {status}: {_answer_text(response)}")
    return Claim(Verdict.AGAIN, reason=f"claim answered HTTP {status}: {_answer_text(response)}")


class Backend:
    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self._url = settings.backend_url.rstrip("/")
        self._session = session or requests.Session()
        self._session.headers.update(internal_headers(settings))

    def claim(self, message: JobMessage, unit: str, delivered_at: float | None = None) -> Claim:
        """The claim's answer; ServiceUnavailable when the backend does not answer at all."""
        request = ClaimRequest(dispatch=message.dispatch, unit=unit, delivered_at=delivered_at)
        try:
            response = self._session.post(self._url + claim_path(message.job_id), data=request.encode(),
                                          headers={"Content-Type": "application/json"}, timeout=15)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ServiceUnavailable(f"the backend did not answer the claim ({exc.__class__.__name__})") from None
        except requests.RequestException as exc:  # it answered, but not in a way we could read
            return Claim(Verdict.AGAIN, reason=f"claim answer unreadable: {exc.__class__.__name__}: {exc}"[:500])
        if response.status_code in (401, 403):
            # This consumer's setup is wrong, not the message: wait (uncounted) rather than dead-letter every job.
            raise ServiceUnavailable(f"the backend refuses this consumer's internal token (HTTP "
                                     f"{response.status_code}); check NIAS_INTERNAL_TOKEN")
        return read_claim_answer(response)

    def is_healthy(self) -> bool:
        """True when the backend says it can work (its `/healthz`: the store and data dir answer)."""
        try:
            response = self._session.get(f"{self._url}/healthz", timeout=5)
            return response.status_code == 200 and response.json().get("ok") is True
        except (requests.RequestException, ValueError, AttributeError):
            return False


def claim_with_retry(backend: Backend, message: JobMessage, unit: str, stop,
                     delivered_at: float | None = None) -> Claim | None:
    """Claim, waiting out a backend that does not answer; None if asked to stop meanwhile.

    An outage is waited out however long it lasts: jobs must survive one. So is a failed answer
    from a backend that reports itself unhealthy (its store is down: every claim would fail).
    Other failed answers are tried `CLAIM_TRIES` times, then returned (AGAIN) for the message to be
    handed back, counted.
    """
    failed = 0
    outage_delay = RETRY_DELAY_S
    while not stop.is_set():
        try:
            claim = backend.claim(message, unit, delivered_at)
            if claim.verdict is Verdict.AGAIN and not backend.is_healthy():
                raise ServiceUnavailable(f"the backend reports itself unhealthy ({claim.reason})")
        except ServiceUnavailable as exc:
            logger.warning("Job %s: %s; retrying in %.1f s", message.job_id, exc.message[:300], outage_delay)
            stop.wait(outage_delay)
            outage_delay = min(outage_delay * 2, OUTAGE_DELAY_MAX_S)
            continue
        outage_delay = RETRY_DELAY_S
        if claim.verdict is not Verdict.AGAIN:
            return claim
        failed += 1
        if failed >= CLAIM_TRIES:
            return Claim(Verdict.AGAIN, reason=f"{claim.reason} ({failed} tries)")
        logger.warning("Job %s: %s (try %s of %s)", message.job_id, claim.reason, failed, CLAIM_TRIES)
        stop.wait(RETRY_DELAY_S * 2 ** (failed - 1))
    return None


class Unit:
    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self._url = settings.unit_url.rstrip("/")
        self._name = settings.unit_name
        self._session = session or requests.Session()
        self._session.headers.update(internal_headers(settings))

    def start(self, message: JobMessage, attempt: int) -> None:
        response = self._session.post(f"{self._url}/api/runs", params={"attempt": attempt},
                                      data=message.encode(), timeout=15)
        response.raise_for_status()

    def status(self, job_id: str, wait_s: float) -> RunStatus:
        """The unit's run of the job; ValueError (a BadMessage) for an answer that is not one."""
        response = self._session.get(f"{self._url}/api/runs/{job_id}", params={"wait_s": wait_s},
                                     timeout=wait_s + 15)
        response.raise_for_status()
        try:
            return RunStatus.decode(response.content)
        except BadMessage as exc:
            raise ValueError(f"the unit's run status is not one: {exc.message}") from None

    def control(self, message: ControlMessage) -> bool:
        response = self._session.post(f"{self._url}/api/control", data=message.encode(), timeout=15)
        response.raise_for_status()
        return bool(response.json().get("applied"))

    def health(self) -> dict:
        """The unit's /healthz answer; `ok` is false when it cannot work, `busy` names its run."""
        response = self._session.get(f"{self._url}/healthz", timeout=5)
        health = response.json()
        if not isinstance(health, dict):
            raise ValueError(f"the unit's health is not an object: {str(health)[:100]}")
        try:
            itself = Health.from_dict(health).is_of(ServiceKind.UNIT, self._name)
        except BadMessage:
            itself = False
        if not itself:  # another program (or another unit) answers at this unit's address
            logger.warning("%s answers as %r, not as unit %s", self._url, str(health.get("name"))[:100], self._name)
        health["ok"] = response.status_code == 200 and bool(health.get("ok")) and itself
        return health


def follow_run(unit: Unit, message: JobMessage, attempt: int, unit_name: str, stop,
               lost_after_s: float = 60.0) -> JobEvent | None:
    """Start the run and follow it; return a LOST event only when the unit has surely lost it.

    An unreachable unit may be finishing the job during a graceful stop, so the consumer waits
    for the unit to answer again (a restarted unit that does not know the run has lost it), or
    for `lost_after_s` to pass (the backend's lease would expire then anyway).
    """
    lost = JobEvent(job_id=message.job_id, attempt=attempt, unit=unit_name, event=JobEvent.LOST,
                    error=f"The processing unit {unit_name} stopped during the job.")
    unreachable_since: float | None = None
    try:
        unit.start(message, attempt)
    except requests.HTTPError as exc:
        logger.error("Job %s: processing unit refused attempt %s: %s", message.job_id, attempt, exc)
        return lost
    except requests.RequestException as exc:
        # The unit may have died (it is then restarted) or taken the run without answering in
        # time: find out from the unit once it answers, as for a unit lost during the run.
        logger.warning("Job %s: no answer from the processing unit to attempt %s (%s)",
                       message.job_id, attempt, exc.__class__.__name__)
        unreachable_since = time.monotonic()
    while not stop.is_set():
        try:
            status = unit.status(message.job_id, UNIT_POLL_S if unreachable_since is None else 0)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                logger.error("Job %s: the processing unit no longer knows attempt %s", message.job_id, attempt)
                return lost
            status = None
        except (requests.RequestException, ValueError):
            status = None
        if status is None:
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > lost_after_s:
                logger.error("Job %s: processing unit unreachable for %.0f s", message.job_id, lost_after_s)
                return lost
            stop.wait(0.5)
            continue
        unreachable_since = None
        if status.attempt != attempt:
            return lost
        if status.done:
            return None
    # This consumer is stopping; the unit keeps running the job and reports it itself.
    return None


def unit_is_ready(unit: Unit) -> bool:
    """True when the unit answers, is healthy and runs nothing; whatever fails to tell means not ready."""
    try:
        health = unit.health()
    except (requests.RequestException, ValueError):
        return False
    except Exception as exc:  # noqa: BLE001 - a broken answer must not kill the thread that asks
        logger.warning("The processing unit's health could not be read: %r", exc)
        return False
    return bool(health.get("ok")) and health.get("busy") is None


def wait_for_ready_unit(unit: Unit, stop, interval_s: float = 0.25) -> bool:
    """Block until the unit is healthy and idle (or the consumer stops).

    A consumer takes no message for a unit that is down, unhealthy or still busy (with a run
    from before a restart, say): the message would only wait behind it, or worse, spend one of
    the job's attempts on a unit that cannot run it. Other consumers take the queue meanwhile.
    """
    if stop.is_set():
        return False
    if unit_is_ready(unit):
        return True
    logger.info("Waiting for the processing unit to be healthy and idle before taking a job")
    while not stop.wait(interval_s):
        if unit_is_ready(unit):
            logger.info("The processing unit is ready again")
            return True
    return False
