"""`GET /api/events`: job changes (state, progress) as server-sent events, for the pages.

Under the backend's gunicorn worker (backend/web_worker.py) a stream, once its head is sent,
is handed off to `streams`, one thread that writes every open stream: streams hold no request
thread. Elsewhere (the Flask test client, a development server) a stream is served on its
request's thread. Either way a user may hold NIAS_MAX_STREAMS_PER_USER streams open, and the
backend NIAS_MAX_STREAMS in all; more answer 429 and the pages poll instead.
"""
from __future__ import annotations

import json
import queue
import time
from functools import partial

from flask import Blueprint, Flask, Response, current_app, request, stream_with_context

from nias.errors import NiasError

from backend import api_models as api
from backend.openapi import describe
from backend.auth import current_user, owner_filter, visible_job
from backend.jobs_api import job_to_json
from backend.live import EventStreams, Slots, feed

bp = Blueprint("events", __name__, url_prefix="/api")

# A short keep-alive finds closed tabs quickly, and a stream ends after a while (the browser's
# EventSource reconnects by itself), so a revoked session's stream does not outlive it for long.
KEEPALIVE_S = 5
STREAM_LIFETIME_S = 300
PROLOGUE = "retry: 2000\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

streams = EventStreams(feed, keepalive_s=KEEPALIVE_S, lifetime_s=STREAM_LIFETIME_S)
stream_slots = Slots()


def job_event(job: dict) -> str:
    return f"event: job\ndata: {json.dumps(job_to_json(job))}\n\n"


def render_event(app: Flask, job: dict) -> bytes | None:
    """A job's event, rendered outside any request (in the streams' thread); links are paths."""
    with app.test_request_context("/api/events"):
        return job_event(job).encode()


def wanted(only: str | None, owner: str | None, job: dict) -> bool:
    return not ((only and job["id"] != only) or (owner and job.get("owner_id") != owner))


def hold_stream_slot(user_id: str) -> None:
    settings = current_app.extensions["nias"].settings
    if not stream_slots.take(user_id, settings.max_streams_per_user, settings.max_streams):
        if stream_slots.held(user_id) >= settings.max_streams_per_user:
            message = (f"You have {settings.max_streams_per_user} live streams open, the most allowed; "
                       "this page checks for changes every few seconds instead.")
        else:
            message = "The server has as many live streams open as it allows; this page checks every few seconds instead."
        raise NiasError(message, code="too_many_streams", status=429)


@bp.get("/events")
@describe("Follow job changes as server-sent events",
          {200: api.EVENT_STREAM, **api.REFUSED},
          query=api.EventsQuery, tag="jobs")
def stream_events():
    """`event: job` with the job as JSON for every change; `?job=<id>` follows one job only."""
    only = request.args.get("job")
    if only:
        visible_job(only)  # another user's job, or an unknown one, answers 404 like every job endpoint
    if request.method == "HEAD":
        return Response(mimetype="text/event-stream", headers=HEADERS)
    wants = partial(wanted, only, owner_filter())
    user_id = current_user()["id"]
    hold_stream_slot(user_id)
    release = partial(stream_slots.give_back, user_id)
    hand_off = request.environ.get("nias.hand_off")
    if hand_off is None:
        response = Response(stream_with_context(serve_on_this_thread(wants)), mimetype="text/event-stream",
                            headers=HEADERS)
        response.call_on_close(release)  # however the stream ends, also before its first byte
        return response
    streams.start(partial(render_event, current_app._get_current_object()))
    hand_off(lambda sock, chunked: streams.add(sock, chunked, wants, release), release)
    # A body of unknown length, so no Content-Length ends it: the streams' thread writes the rest.
    return Response(iter([PROLOGUE]), mimetype="text/event-stream", headers=HEADERS)


def serve_on_this_thread(wants):
    ends = time.monotonic() + STREAM_LIFETIME_S
    with feed.subscribe() as changes:
        yield PROLOGUE
        while time.monotonic() < ends and not feed.closed.is_set():
            try:
                job = changes.get(timeout=KEEPALIVE_S)
            except queue.Empty:
                yield ": keepalive\n\n"
                continue
            if job is None:  # the backend is stopping
                break
            if wants(job):
                yield job_event(job)
