"""Where a job's state changes: `apply_transition` is the only writer of `jobs.state`.

Everything that moves a job (claims by consumers, events from units, lease expiry)
goes through it, so the transition table in `nias.states` is enforced in one place.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
from typing import Any, Callable

from nias.errors import BadMessage, BadRequest, Conflict, ForeignEvent, InvalidTransition
from nias.messages import ControlMessage, EventKind, JobEvent
from nias.states import REQUESTABLE, JobState, allowed_targets, can_transition, is_final
from nias.settings import Settings
from nias.job_files import JobFiles
from nias import timeline as timelines
from nias.timeline import Hop

from backend.live import feed
from backend.store import Store

logger = logging.getLogger(__name__)

# Sends a pause/resume/cancel to whichever unit holds the job (through the producer).
SendControl = Callable[[ControlMessage], None]
RUN_NEXT_PRIORITY = 10


def apply_transition(
    store: Store,
    job_id: str,
    target: JobState,
    *,
    guard: dict[str, Any] | None = None,
    reason: str | None = None,
    **fields: Any,
) -> dict:
    """Move a job to `target` if the table allows it and `guard` still holds; record when and why.

    Raises InvalidTransition when the table forbids it, Conflict when another writer
    changed the job first (the compare-and-set on the current state failed).
    """
    job = store.get_job(job_id)
    current = JobState(job["state"])
    if not can_transition(current, target):
        raise InvalidTransition(
            f"A {current.value} job cannot become {target.value}.",
            state=current.value,
            allowed=allowed_targets(current),
        )
    now = time.time()
    values = {"state": target.value, **fields}
    if current is JobState.PAUSED and job["paused_at"] is not None:
        # Time spent paused is not run time: bank it when the job leaves the paused state.
        values["paused_seconds"] = (job["paused_seconds"] or 0.0) + max(now - job["paused_at"], 0.0)
        values["paused_at"] = None
    if target is JobState.PAUSED:
        values["paused_at"] = now
    if is_final(target):
        values.setdefault("finished_at", now)
        values["lease_until"] = None
    record = {
        "from_state": current.value,
        "to_state": target.value,
        "at": now,
        "attempt": fields.get("attempt", job["attempt"]),
        "unit": fields.get("unit", job["unit"]),
        "reason": reason,
    }
    if not store.update_job_if(job_id, {"state": current.value, **(guard or {})}, values, record):
        raise Conflict(f"Job {job_id} changed while it was being updated; try again.", state=current.value)
    logger.info("Job %s: %s -> %s%s", job_id, current.value, target.value, f" ({reason})" if reason else "")
    changed = store.get_job(job_id)
    feed.publish(changed)
    return changed


def kept_outcome(settings: Settings, job: dict) -> JobEvent | None:
    """The outcome a unit sent with the attempt's result, if the result was kept."""
    files = JobFiles(settings.jobs_dir, job["id"]).run(job["attempt"])
    try:
        if not files.result.is_file():
            return None
        outcome = JobEvent.decode(files.outcome.read_bytes())
    except (OSError, BadMessage):
        return None
    if (outcome.job_id, outcome.attempt, outcome.unit) != (job["id"], job["attempt"], job["unit"]):
        return None
    return outcome


def keep_only_run(settings: Settings, job_id: str, attempt: int) -> None:
    """A finished job keeps one result: the recorded attempt's. Lost attempts' folders go."""
    runs = JobFiles(settings.jobs_dir, job_id).runs
    if runs.is_dir():
        for folder in runs.iterdir():
            if folder.name != str(attempt):
                shutil.rmtree(folder, ignore_errors=True)


def claim_job(store: Store, settings: Settings, job_id: str, dispatch: int, unit: str,
              delivered_at: float | None = None) -> dict:
    """Give a queued job to `unit` for its next attempt; Conflict if the message is stale."""
    job = store.get_job(job_id)
    if job["state"] != JobState.QUEUED.value or job["dispatch"] != dispatch:
        raise Conflict(
            f"Job {job_id} is {job['state']} (dispatch {job['dispatch']}); message {dispatch} is stale.",
            state=job["state"],
        )
    now = time.time()
    timeline = timelines.for_new_attempt(job.get("timeline"))
    if delivered_at is not None:
        timeline[Hop.DELIVERED.value] = delivered_at
    timeline[Hop.CLAIMED.value] = now
    return apply_transition(
        store,
        job_id,
        JobState.RUNNING,
        guard={"dispatch": dispatch, "attempt": job["attempt"]},
        reason=f"attempt {job['attempt'] + 1} on {unit}",
        attempt=job["attempt"] + 1,
        unit=unit,
        started_at=now,
        lease_until=now + settings.lease_s,
        timeline=timeline,
    )


def retry_or_fail(store: Store, settings: Settings, job: dict, reason: str) -> dict:
    """An attempt was lost: queue the job again (a new dispatch) or fail it once retries are spent."""
    guard = {"attempt": job["attempt"]}
    if job["attempt"] > settings.job_retries:
        failed = apply_transition(
            store,
            job["id"],
            JobState.FAILED,
            guard=guard,
            reason=reason,
            error=f"{reason} The job was tried {job['attempt']} times and has been given up.",
        )
        keep_only_run(settings, job["id"], job["attempt"])
        return failed
    return apply_transition(
        store,
        job["id"],
        JobState.QUEUED,
        guard=guard,
        reason=f"{reason} Queued again.",
        dispatch=job["dispatch"] + 1,
        lease_until=None,
        unit=None,
        queued_at=time.time(),
        progress=None,
        progress_message=None,
        progress_active_s=None,
        paused_seconds=0.0,
    )


def _reconcile(job: dict, event: JobEvent, send_control: SendControl | None) -> None:
    """A unit's report disagrees with what the store says was asked: ask the unit again."""
    if send_control is None:
        return
    paused = bool((event.details or {}).get("paused"))
    action = None
    if job["state"] == JobState.CANCELLED.value:
        action = ControlMessage.CANCEL
    elif job["state"] == JobState.PAUSED.value and not paused:
        action = ControlMessage.PAUSE
    elif job["state"] == JobState.RUNNING.value and paused:
        action = ControlMessage.RESUME
    if action:
        logger.info("Job %s: unit %s reports %s; sending %s again", job["id"], event.unit,
                    "paused" if paused else "running", action)
        send_control(ControlMessage(job_id=job["id"], attempt=event.attempt, action=action))


def _record_progress(store: Store, job: dict, event: JobEvent) -> None:
    details = event.details or {}
    values: dict[str, Any] = {}
    if details.get("execution") and details["execution"] != job.get("execution"):
        values["execution"] = details["execution"]
    if details.get("progress") is not None:
        values.update(progress=float(details["progress"]), progress_message=str(details.get("message") or "")[:200],
                      progress_active_s=details.get("active_s"))
    if not values:
        return
    if store.update_job_fields(job["id"], {"attempt": event.attempt}, values):
        feed.publish({**job, **values})


def check_sender(job: dict, event: JobEvent) -> None:
    """Only the unit that holds the attempt may report on it (ForeignEvent otherwise)."""
    if job["unit"] is not None and event.unit != job["unit"]:
        raise ForeignEvent(f"Unit {event.unit} reported on attempt {event.attempt} of job {job['id']}, "
                           f"which unit {job['unit']} holds.")


def lease_for(settings: Settings, event: JobEvent) -> float:
    """How long a heartbeat holds the attempt: longer for a batch job, which runs on while its Slurm
    unit restarts (it adopts the job again), so the job is not queued twice meanwhile."""
    execution = (event.details or {}).get("execution") or {}
    return max(settings.lease_s, settings.slurm_lease_s) if execution.get("executor") == "slurm" else settings.lease_s


def stop_given_up_attempt(event: JobEvent, send_control: SendControl | None) -> None:
    """An attempt given up on (its lease ran out) still beats somewhere: stop it, so no job runs twice."""
    if event.event is EventKind.HEARTBEAT and send_control is not None:
        logger.warning("Job %s: attempt %s on %s was given up on but still runs; cancelling it", event.job_id,
                       event.attempt, event.unit)
        send_control(ControlMessage(job_id=event.job_id, attempt=event.attempt, action=ControlMessage.CANCEL))


def apply_event(store: Store, settings: Settings, event: JobEvent, send_control: SendControl | None = None) -> dict | None:
    """Apply one event from a unit or consumer; events about a stale attempt are ignored.

    Raises ForeignEvent when the current attempt is held by another unit than the sender.
    """
    job = store.get_job(event.job_id)
    if job["attempt"] != event.attempt:
        logger.info("Job %s: ignoring %s of old attempt %s", event.job_id, event.event, event.attempt)
        if event.attempt < job["attempt"]:
            stop_given_up_attempt(event, send_control)
        return None
    check_sender(job, event)
    if job["state"] == JobState.CANCELLED.value:
        record_cancelled_outcome(store, settings, job, event, send_control)
        return None
    if job["state"] not in (JobState.RUNNING.value, JobState.PAUSED.value):
        logger.info("Job %s: ignoring %s (job is %s)", event.job_id, event.event, job["state"])
        if job["state"] == JobState.QUEUED.value:
            stop_given_up_attempt(event, send_control)
        return None
    if event.event is EventKind.HEARTBEAT:
        store.renew_lease(event.job_id, event.attempt, time.time() + lease_for(settings, event))
        _record_progress(store, job, event)
        _reconcile(job, event, send_control)
        return None
    if event.event is EventKind.PROGRESS:
        _record_progress(store, job, event)
        return None
    if event.event is EventKind.LOST:
        return retry_or_fail(store, settings, job, event.error or "The processing unit stopped during the job.")
    return _record_finish(store, settings, job, event)


def _finished_timeline(settings: Settings, job: dict, event: JobEvent) -> dict:
    """The job's timeline with the unit's marks of the attempt, when its result was kept, and now."""
    timeline = {**(job.get("timeline") or {}), **timelines.clean_marks(event.details.get("timeline"), timelines.UNIT_HOPS)}
    with contextlib.suppress(OSError):  # written when the result was kept, with the outcome sent beside it
        timeline[Hop.RESULT_STORED.value] = JobFiles(settings.jobs_dir, event.job_id).run(event.attempt).outcome.stat().st_mtime
    timeline[Hop.RECORDED.value] = time.time()
    return timeline


def _record_finish(store: Store, settings: Settings, job: dict, event: JobEvent) -> dict:
    details = event.details
    target = JobState(event.state or JobState.FAILED)
    if target is JobState.CANCELLED:  # a cancel the store never asked for: call it a failure
        target = JobState.FAILED
    finished = apply_transition(
        store,
        event.job_id,
        target,
        guard={"attempt": event.attempt},
        reason=event.error,
        exit_code=event.exit_code,
        error=event.error,
        result_size=event.result_size,
        log_size=details.get("log_bytes"),
        finished_at=event.at,
        env_seconds=details.get("env_seconds"),
        env_cached=details.get("env_cached"),
        env_built_at=details.get("env_built_at") if isinstance(details.get("env_built_at"), (int, float)) else None,
        run_seconds=details.get("run_seconds"),
        progress=details.get("progress", job["progress"]),
        progress_message=details.get("message", job["progress_message"]),
        progress_active_s=details.get("active_s"),
        execution=details.get("execution", job.get("execution")),
        ran_with=details.get("ran_with"),
        timeline=_finished_timeline(settings, job, event),
    )
    keep_only_run(settings, event.job_id, event.attempt)
    with contextlib.suppress(OSError):  # applied: the copy sent with the result is not needed any more
        JobFiles(settings.jobs_dir, event.job_id).run(event.attempt).outcome.unlink(missing_ok=True)
    return finished


def record_cancelled_outcome(store: Store, settings: Settings, job: dict, event: JobEvent,
                             send_control: SendControl | None) -> None:
    """A cancelled job's attempt reports in: its outcome fills the kept result, a heartbeat says it
    is still being saved (the result stays pending a lease longer)."""
    if event.event is EventKind.FINISHED:
        values = {"exit_code": event.exit_code, "result_size": event.result_size,
                  "log_size": event.details.get("log_bytes"), "run_seconds": event.details.get("run_seconds"),
                  "ran_with": event.details.get("ran_with"), "result_due": None}
        if store.update_job_fields(event.job_id, {"attempt": event.attempt}, values):
            feed.publish({**job, **values})  # the pages waiting for the kept result show it now
        keep_only_run(settings, event.job_id, event.attempt)
        return
    if event.event is EventKind.HEARTBEAT and job.get("result_due") is not None:
        store.update_job_fields(event.job_id, {"attempt": event.attempt, "state": JobState.CANCELLED.value},
                                {"result_due": time.time() + settings.lease_s})
    _reconcile(job, event, send_control)


RACE_TRIES = 3  # a job that starts (or ends) just as the user asks is asked again, from its new state


def request_state(store: Store, job_id: str, target: str, send_control: SendControl,
                  settings: Settings | None = None) -> dict:
    """A user asks to pause, resume or cancel. Asking for the current state again changes nothing."""
    tried = 1
    while True:
        try:
            return _request_state_once(store, job_id, target, send_control, settings)
        except InvalidTransition:
            raise
        except Conflict:  # another writer changed the job between the read and the write
            if tried >= RACE_TRIES:
                raise
            tried += 1


def _request_state_once(store: Store, job_id: str, target: str, send_control: SendControl,
                        settings: Settings | None) -> dict:
    valid = {JobState.PAUSED.value, JobState.RUNNING.value, JobState.CANCELLED.value}
    if target not in valid:
        raise BadRequest(f"state must be one of {', '.join(sorted(valid))}.")
    job = store.get_job(job_id)
    current, wanted = JobState(job["state"]), JobState(target)
    if current is wanted:
        return job
    if wanted not in REQUESTABLE[current]:
        raise InvalidTransition(
            f"A {current.value} job cannot be made {wanted.value}.",
            state=current.value,
            allowed=allowed_targets(current, REQUESTABLE),
        )
    if wanted is JobState.PAUSED:
        check_unit_pauses(store, job)
    reason = {JobState.PAUSED: "paused on request", JobState.RUNNING: "resumed on request",
              JobState.CANCELLED: "cancelled on request"}[wanted]
    extra = {"error": "Cancelled on request."} if wanted is JobState.CANCELLED else {}
    if wanted is JobState.CANCELLED and current is not JobState.QUEUED:
        extra["result_due"] = time.time() + (settings or Settings()).lease_s  # its unit still saves the result
    changed = apply_transition(store, job_id, wanted, guard={"attempt": job["attempt"]}, reason=reason, **extra)
    if current is not JobState.QUEUED:
        action = {JobState.PAUSED: ControlMessage.PAUSE, JobState.RUNNING: ControlMessage.RESUME,
                  JobState.CANCELLED: ControlMessage.CANCEL}[wanted]
        send_control(ControlMessage(job_id=job_id, attempt=job["attempt"], action=action))
    return changed


def check_unit_pauses(store: Store, job: dict) -> None:
    """Conflict (409) with the unit's reason when the unit holding the job cannot pause it (a Slurm
    unit whose account may not suspend batch jobs)."""
    unit = store.get_unit(job["unit"]) if job["unit"] else None
    if unit is not None and unit.get("pause_refusal"):
        raise Conflict(f"Job {job['id']} cannot be paused: {unit['pause_refusal']}", state=job["state"])


def waits_on_cluster(job: dict) -> bool:
    """A running job whose batch job still waits in its cluster's queue."""
    execution = job.get("execution") or {}
    return (job["state"] == JobState.RUNNING.value and execution.get("executor") == "slurm"
            and execution.get("slurm_state") == "PENDING")


def reprioritise_on_cluster(store: Store, job: dict, priority: int, send_control: SendControl) -> dict:
    """A new priority for a job whose batch job still waits: kept here, and sent to Slurm by its unit."""
    if not store.update_job_fields(job["id"], {"state": JobState.RUNNING.value, "attempt": job["attempt"]},
                                   {"priority": priority}):
        raise Conflict(f"Job {job['id']} changed while its priority was being set; try again.")
    send_control(ControlMessage(job_id=job["id"], attempt=job["attempt"], action=ControlMessage.PRIORITY,
                                priority=priority))
    logger.info("Job %s: priority %s sent to its batch job", job["id"], priority)
    changed = store.get_job(job["id"])
    feed.publish(changed)
    return changed


def requeue_with_priority(store: Store, job_id: str, priority: int | None, *, run_next: bool = False,
                          send_control: SendControl | None = None) -> dict:
    """Change a queued job's place: a new priority, or the front of the queue ("run next"); a job
    whose batch job still waits on its cluster gets the new priority there (`send_control`)."""
    job = store.get_job(job_id)
    if priority is not None and send_control is not None and waits_on_cluster(job):
        return reprioritise_on_cluster(store, job, priority, send_control)
    if job["state"] != JobState.QUEUED.value:
        raise Conflict(f"Job {job_id} is {job['state']}; only a queued job can be moved.", state=job["state"])
    new_priority = job["priority"] if priority is None else priority
    queue_priority = RUN_NEXT_PRIORITY if run_next else new_priority
    if new_priority == job["priority"] and queue_priority == job["queue_priority"]:
        return job
    values = {"priority": new_priority, "queue_priority": queue_priority, "dispatch": job["dispatch"] + 1,
              "queued_at": time.time()}
    if not store.update_job_fields(job_id, {"state": JobState.QUEUED.value, "dispatch": job["dispatch"]}, values):
        raise Conflict(f"Job {job_id} changed while it was being moved; try again.")
    logger.info("Job %s: queued again with priority %s", job_id, queue_priority)
    moved = store.get_job(job_id)
    feed.publish(moved)
    return moved


def redispatch_lost_messages(store: Store, settings: Settings, ready_messages: Callable[[str], int | None]) -> int:
    """Publish again (a new dispatch) each queued job whose message is lost: dead-lettered after
    failed deliveries, purged, or gone with a broker's disk. A message is lost when its job has
    waited `NIAS_REDISPATCH_S` while its pool's queue holds none ready (so it waits nowhere); after
    `NIAS_REDISPATCH_LIMIT` re-publications the job fails, saying so."""
    if not settings.redispatch_s:
        return 0
    waiting = store.published_waiting_since(time.time() - settings.redispatch_s)
    pools = {job["pool"] for job in waiting}
    empty = {pool for pool in pools if ready_messages(pool) == 0}  # None: the broker cannot say; wait
    lost_jobs = [job for job in waiting if job["pool"] in empty]
    for job in lost_jobs:
        lost = (job["redispatched"] or 0) + 1
        guard = {"state": JobState.QUEUED.value, "dispatch": job["dispatch"]}
        if lost > settings.redispatch_limit:
            reason = (f"Its queue message was lost {lost} times (dead-lettered or removed from RabbitMQ); an admin "
                      "finds why under the dead letters.")
            with contextlib.suppress(Conflict, InvalidTransition):
                apply_transition(store, job["id"], JobState.FAILED, guard={"dispatch": job["dispatch"]},
                                 reason=reason, error=reason)
            continue
        if store.update_job_fields(job["id"], guard, {"dispatch": job["dispatch"] + 1, "redispatched": lost,
                                                      "queued_at": time.time()}):
            logger.warning("Job %s: its message %s is lost; publishing it again (%s of %s)", job["id"],
                           job["dispatch"], lost, settings.redispatch_limit)
    return len(lost_jobs)


def expire_leases(store: Store, settings: Settings) -> int:
    """Retry (or fail) every running job whose unit stopped sending heartbeats."""
    expired = 0
    for job in store.expired_leases(time.time()):
        try:
            outcome = kept_outcome(settings, job)
            if outcome is not None:  # the unit delivered its result, then died before it reported
                logger.warning("Job %s: unit %s stopped after delivering attempt %s's result; ending it with the "
                               "outcome sent with that result", job["id"], job["unit"], job["attempt"])
                _record_finish(store, settings, job, outcome)
            else:
                retry_or_fail(store, settings, job, f"The processing unit {job['unit']} stopped answering.")
            expired += 1
        except Conflict:
            continue  # it changed meanwhile (finished, or a heartbeat came): nothing to do
    return expired


def settle_overdue_results(store: Store, settings: Settings) -> int:
    """A cancelled attempt that never reported its outcome within its lease has no result to wait for."""
    settled = 0
    for job in store.overdue_results(time.time()):
        if store.update_job_fields(job["id"], {"attempt": job["attempt"], "result_due": job["result_due"]},
                                   {"result_due": None}):
            logger.info("Job %s: the cancelled attempt's result never came; not waiting for it", job["id"])
            feed.publish({**job, "result_due": None})
            settled += 1
    return settled


def pause_limit_reason(settings: Settings) -> str:
    return f"paused for longer than the limit of {settings.max_pause_s} s"


def cancel_overlong_pauses(store: Store, settings: Settings, send_control: SendControl) -> int:
    """Cancel every job paused longer than NIAS_MAX_PAUSE_S: a paused job holds its unit."""
    if not settings.max_pause_s:
        return 0
    cancelled = 0
    reason = pause_limit_reason(settings)
    for job in store.paused_since_before(time.time() - settings.max_pause_s):
        try:
            apply_transition(store, job["id"], JobState.CANCELLED, reason=reason,
                             guard={"attempt": job["attempt"], "paused_at": job["paused_at"]},
                             error=f"Cancelled: {reason}.", result_due=time.time() + settings.lease_s)
        except (Conflict, InvalidTransition):
            continue  # resumed or cancelled meanwhile
        send_control(ControlMessage(job_id=job["id"], attempt=job["attempt"], action=ControlMessage.CANCEL))
        cancelled += 1
    return cancelled
