"""What a consumer does with one job message, as plain functions testable without a broker.

The message is only a wake-up call: the backend's job store decides whether it may run.
1. claim the job at the backend (which refuses a stale, cancelled or already-held job);
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

from nias.messages import ControlMessage, JobEvent, JobMessage
from nias.settings import Settings
from nias.web import internal_headers

logger = logging.getLogger(__name__)

UNIT_POLL_S = 5


class Verdict(str, Enum):
    RUN = "run"  # claimed: ack the message and run the job
    DROP = "drop"  # stale or already handled: ack and forget
    DEAD = "dead"  # unknown job: dead-letter


@dataclass
class Claim:
    verdict: Verdict
    attempt: int = 0
    reason: str = ""


class Backend:
    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self._url = settings.backend_url.rstrip("/")
        self._session = session or requests.Session()
        self._session.headers.update(internal_headers(settings))

    def claim(self, message: JobMessage, unit: str) -> Claim:
        response = self._session.post(f"{self._url}/internal/jobs/{message.job_id}/claim",
                                      json={"dispatch": message.dispatch, "unit": unit}, timeout=15)
        if response.status_code == 200:
            return Claim(Verdict.RUN, attempt=response.json()["attempt"])
        if response.status_code == 404:
            return Claim(Verdict.DEAD, reason="no such job")
        if response.status_code == 409:
            return Claim(Verdict.DROP, reason=response.json()["error"]["message"])
        response.raise_for_status()
        raise requests.HTTPError(f"unexpected claim answer {response.status_code}")


def claim_with_retry(backend: Backend, message: JobMessage, unit: str, stop) -> Claim | None:
    """Claim, retrying while the backend is unreachable; None if asked to stop meanwhile."""
    delay = 0.2
    while not stop.is_set():
        try:
            return backend.claim(message, unit)
        except (requests.RequestException, ValueError, KeyError) as exc:
            logger.warning("Job %s: backend unavailable for the claim (%s); retrying", message.job_id, exc)
            stop.wait(delay)
            delay = min(delay * 2, 5.0)
    return None


class Unit:
    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self._url = settings.unit_url.rstrip("/")
        self._session = session or requests.Session()
        self._session.headers.update(internal_headers(settings))

    def start(self, message: JobMessage, attempt: int) -> None:
        response = self._session.post(f"{self._url}/api/runs", params={"attempt": attempt},
                                      data=message.encode(), timeout=15)
        response.raise_for_status()

    def status(self, job_id: str, wait_s: float) -> dict:
        response = self._session.get(f"{self._url}/api/runs/{job_id}", params={"wait_s": wait_s},
                                     timeout=wait_s + 15)
        response.raise_for_status()
        return response.json()

    def control(self, message: ControlMessage) -> bool:
        response = self._session.post(f"{self._url}/api/control", data=message.encode(), timeout=15)
        response.raise_for_status()
        return bool(response.json().get("applied"))

    def health(self) -> dict:
        """The unit's /healthz answer; `ok` is false when it cannot work, `busy` names its run."""
        response = self._session.get(f"{self._url}/healthz", timeout=5)
        health = response.json()
        health["ok"] = response.status_code == 200 and bool(health.get("ok"))
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
        if status.get("attempt") != attempt:
            return lost
        if status.get("done"):
            return None
    # This consumer is stopping; the unit keeps running the job and reports it itself.
    return None


def unit_is_ready(unit: Unit) -> bool:
    """True when the unit answers, is healthy and runs nothing."""
    try:
        health = unit.health()
    except (requests.RequestException, ValueError):
        return False
    return bool(health.get("ok")) and health.get("busy") is None


def wait_for_ready_unit(unit: Unit, stop, interval_s: float = 0.25) -> None:
    """Block until the unit is healthy and idle (or the consumer stops).

    A consumer takes no message for a unit that is down, unhealthy or still busy (with a run
    from before a restart, say): the message would only wait behind it, or worse, spend one of
    the job's attempts on a unit that cannot run it. Other consumers take the queue meanwhile.
    """
    if stop.is_set() or unit_is_ready(unit):
        return
    logger.info("Waiting for the processing unit to be healthy and idle before taking a job")
    while not stop.wait(interval_s):
        if unit_is_ready(unit):
            logger.info("The processing unit is ready again")
            return
