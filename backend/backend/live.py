"""Live job changes inside the backend process: long-polling readers and server-sent events.

Every state change and progress report is published here by `backend.jobs`; readers either
wait on `changed` (long polls) or subscribe to a queue of job snapshots (the SSE stream).
"""
from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from typing import Iterator

SUBSCRIBER_BACKLOG = 1000


class JobFeed:
    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.version = 0  # counts changes, so a reader can wait for one it has not seen yet
        self.closed = threading.Event()  # set when the backend stops: every stream ends at once
        self._lock = threading.Lock()
        self._subscribers: set[queue.Queue] = set()

    def publish(self, job: dict) -> None:
        with self._lock:
            for subscriber in self._subscribers:
                try:
                    subscriber.put_nowait(job)
                except queue.Full:  # a reader that stopped reading loses old news, never blocks writers
                    pass
        with self.changed:
            self.version += 1
            self.changed.notify_all()

    def close(self) -> None:
        """End every event stream now (the backend is stopping): an open stream would otherwise
        hold the graceful stop for its whole timeout. Browsers reconnect to the next backend."""
        self.closed.set()
        with self._lock:
            for subscriber in self._subscribers:
                try:
                    subscriber.put_nowait(None)
                except queue.Full:  # that reader sees `closed` after the news it has queued
                    pass

    @contextmanager
    def subscribe(self) -> Iterator[queue.Queue]:
        subscriber: queue.Queue = queue.Queue(maxsize=SUBSCRIBER_BACKLOG)
        with self._lock:
            self._subscribers.add(subscriber)
        try:
            yield subscriber
        finally:
            with self._lock:
                self._subscribers.discard(subscriber)

    def wait(self, timeout_s: float, since: int | None = None) -> int:
        """Wait until a change newer than version `since` (default: now) or the timeout; return
        the version. Read `version` before looking at the store, so a change that lands in
        between is not missed."""
        with self.changed:
            seen = self.version if since is None else since
            self.changed.wait_for(lambda: self.version != seen, timeout_s)
            return self.version


feed = JobFeed()
