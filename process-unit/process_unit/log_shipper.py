"""Streaming a running job's log to the backend: what the log file gained, every quarter second.

The unit writes the log to a file of its own (joblog.py); this thread sends what is new, at most
`LOG_CHUNK_BYTES` a request, from wherever the backend says its copy ends. Memory stays one piece
whatever the job prints; a backend that is away is waited for (the link retries), and the rest
is sent when the run ends, before its outcome is reported.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from nias.errors import TransferFailed
from nias.internal import LOG_CHUNK_BYTES
from nias.transfer import BackendLink

logger = logging.getLogger(__name__)

SHIP_EVERY_S = 0.25


class LogShipper:
    def __init__(self, link: BackendLink, job_id: str, attempt: int, path: Path, every_s: float = SHIP_EVERY_S):
        self._link, self._job_id, self._attempt, self._path = link, job_id, attempt, path
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"log-{job_id}", daemon=True)
        self.sent = 0  # bytes of the log the backend has

    def start(self) -> None:
        self._thread.start()

    def _ship_available(self) -> None:
        size = self._path.stat().st_size
        while self.sent < size:
            with open(self._path, "rb") as handle:
                handle.seek(self.sent)
                piece = handle.read(min(LOG_CHUNK_BYTES, size - self.sent))
            # Where the backend's copy ends now; less than we thought, and we send on from there.
            self.sent = self._link.append_log(self._job_id, self._attempt, self.sent, piece)

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self._ship_available()
            except (TransferFailed, OSError) as exc:
                logger.warning("Job %s: the log could not be sent just now: %s", self._job_id, str(exc)[:300])

    def finish(self) -> str | None:
        """Send the rest of the log; None when the backend has all of it, else why not."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self._ship_available()
        except (TransferFailed, OSError) as exc:
            logger.error("Job %s: the end of the log could not be sent: %s", self._job_id, str(exc)[:300])
            return f"the log could not be sent in full ({str(exc)[:200]})"
        return None
