"""`GET /api/events`: job changes (state, progress) as server-sent events, for the pages."""
from __future__ import annotations

import json
import queue
import time

from flask import Blueprint, Response, request, stream_with_context

from backend.auth import owner_filter, visible_job
from backend.jobs_api import job_to_json
from backend.live import feed

bp = Blueprint("events", __name__, url_prefix="/api")

# Each open stream holds one of the backend's threads: a short keep-alive finds closed tabs
# quickly, and a stream ends after a while (the browser's EventSource reconnects by itself).
KEEPALIVE_S = 5
STREAM_LIFETIME_S = 300


@bp.get("/events")
def stream_events():
    """`event: job` with the job as JSON for every change; `?job=<id>` follows one job only."""
    only = request.args.get("job")
    if only:
        visible_job(only)  # another user's job, or an unknown one, answers 404 like every job endpoint
    owner = owner_filter()

    def generate():
        ends = time.monotonic() + STREAM_LIFETIME_S
        with feed.subscribe() as changes:
            yield "retry: 2000\n\n"
            while time.monotonic() < ends and not feed.closed.is_set():
                try:
                    job = changes.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    yield ": keepalive\n\n"
                    continue
                if job is None:  # the backend is stopping
                    break
                if (only and job["id"] != only) or (owner and job.get("owner_id") != owner):
                    continue
                yield f"event: job\ndata: {json.dumps(job_to_json(job))}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream_with_context(generate()), mimetype="text/event-stream", headers=headers)
