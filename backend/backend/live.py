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
            self.changed.notify_all()

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

    def wait(self, timeout_s: float) -> None:
        with self.changed:
            self.changed.wait(timeout_s)


feed = JobFeed()
