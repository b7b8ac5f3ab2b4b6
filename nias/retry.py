"""Trying a call again after a growing pause: one helper for every loop that retries."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Backoff:
    """Pauses of `first_s`, doubling up to `max_s`; `tries` calls at most (None: for ever), and no
    pause that would end more than `within_s` after the first call (None: no such bound)."""

    def __init__(self, *, tries: int | None = 5, first_s: float = 0.5, max_s: float = 10.0,
                 within_s: float | None = None, stop: threading.Event | None = None):
        self.tries, self.first_s, self.max_s, self.within_s = tries, first_s, max_s, within_s
        self.stop = stop or threading.Event()

    def delays(self):
        """The pause before each try after the first."""
        delay, tried = self.first_s, 1
        while self.tries is None or tried < self.tries:
            yield delay
            delay, tried = min(delay * 2, self.max_s), tried + 1

    def call(self, call: Callable[[], T], retry_on: tuple[type[BaseException], ...], what: str) -> T:
        """`call()`'s answer; a `retry_on` error is tried again after a pause, the last one raised."""
        pauses = self.delays()
        ends = None if self.within_s is None else time.monotonic() + self.within_s
        while True:
            try:
                return call()
            except retry_on as exc:
                delay = next(pauses, None)
                if delay is None or self.stop.is_set() or (ends is not None and time.monotonic() + delay > ends):
                    raise
                logger.warning("%s failed (%s: %s); trying again in %.1f s", what, exc.__class__.__name__,
                               str(exc)[:200], delay)
                if self.stop.wait(delay):
                    raise
