"""Live job changes inside the backend process: long-polling readers and server-sent events.

Every state change and progress report is published here by `backend.jobs`; readers either
wait on `changed` (long polls), subscribe to a queue of job snapshots (an event stream served
on a request thread) or listen (`EventStreams`, which writes every handed-off stream from one
thread). `Slots` counts what each user holds open at once.
"""
from __future__ import annotations

import logging
import queue
import selectors
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

logger = logging.getLogger(__name__)

SUBSCRIBER_BACKLOG = 1000


class JobFeed:
    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.version = 0  # counts changes, so a reader can wait for one it has not seen yet
        self.closed = threading.Event()  # set when the backend stops: every stream ends at once
        self._lock = threading.Lock()
        self._subscribers: set[queue.Queue] = set()
        self._listeners: list[Callable[[dict | None], None]] = []

    def listen(self, listener: Callable[[dict | None], None]) -> None:
        """Call `listener` with every job published, and with None when the feed closes; it must
        not block (it runs in the publisher's thread)."""
        with self._lock:
            self._listeners.append(listener)

    def publish(self, job: dict) -> None:
        with self._lock:
            for listener in self._listeners:
                listener(job)
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
            for listener in self._listeners:
                listener(None)
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


class Slots:
    """What users hold open at once (event streams, uploads being received), against a limit per
    user and, optionally, one in all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def take(self, user: str, per_user: int, in_all: int | None = None) -> bool:
        with self._lock:
            if self._held.get(user, 0) >= per_user or (in_all is not None and sum(self._held.values()) >= in_all):
                return False
            self._held[user] = self._held.get(user, 0) + 1
            return True

    def give_back(self, user: str) -> None:
        with self._lock:
            left = self._held.get(user, 0) - 1
            if left > 0:
                self._held[user] = left
            else:
                self._held.pop(user, None)

    def held(self, user: str | None = None) -> int:
        with self._lock:
            return self._held.get(user, 0) if user is not None else sum(self._held.values())


@dataclass(eq=False)
class Stream:
    """One handed-off event stream: its socket, which jobs it wants, and what it still has to send."""

    sock: socket.socket
    chunked: bool  # gunicorn began the body as chunked: every write is a chunk, and a last one ends it
    wants: Callable[[dict], bool]
    on_end: Callable[[], None]
    ends_at: float
    next_keepalive: float = 0.0
    unsent: bytearray = field(default_factory=bytearray)
    ending: bool = False

    def frame(self, data: bytes) -> bytes:
        return b"%X\r\n%s\r\n" % (len(data), data) if self.chunked else data


MAX_UNSENT_BYTES = 1024 * 1024  # a reader this far behind is dropped; its browser reconnects


class EventStreams:
    """Every handed-off event stream, written by one thread: an open stream costs a socket, not
    one of the backend's request threads.

    The thread waits on the streams' sockets (a readable one is a client that left), on a wake-up
    socket (a new stream, a published job, the feed closing) and on the next keep-alive or end of
    a stream. Each job is rendered once and queued on every stream that wants it; a write never
    blocks, and a stream whose reader falls too far behind is dropped.
    """

    def __init__(self, source: JobFeed, *, keepalive_s: float, lifetime_s: float) -> None:
        self.keepalive_s = keepalive_s
        self.lifetime_s = lifetime_s
        self._source = source
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._render: Callable[[dict], bytes | None] = lambda job: None
        self._streams: set[Stream] = set()

    def start(self, render: Callable[[dict], bytes | None]) -> None:
        """Start the writing thread once; `render` turns a job into its event's bytes."""
        with self._lock:
            if self._thread is not None:
                return
            self._render = render
            self._selector = selectors.DefaultSelector()
            self._wake_in, self._wake_out = socket.socketpair()
            for end in (self._wake_in, self._wake_out):
                end.setblocking(False)
            self._selector.register(self._wake_in, selectors.EVENT_READ)
            self._source.listen(self._post)
            self._thread = threading.Thread(target=self._run, name="event-streams", daemon=True)
            self._thread.start()

    def add(self, sock: socket.socket, chunked: bool, wants: Callable[[dict], bool],
            on_end: Callable[[], None]) -> None:
        """Take over a stream whose response head and first bytes have been sent."""
        now = time.monotonic()
        sock.setblocking(False)
        self._post(Stream(sock, chunked, wants, on_end, now + self.lifetime_s, now + self.keepalive_s))

    def count(self) -> int:
        return len(self._streams)

    def _post(self, item: Stream | dict | None) -> None:
        self._inbox.put(item)
        try:
            self._wake_out.send(b"\0")
        except BlockingIOError:
            pass  # a wake-up is already pending

    def _run(self) -> None:
        while True:
            try:
                self._turn()
            except Exception:  # one bad turn must not end every stream for good
                logger.exception("Event streams: a turn failed")
                time.sleep(0.1)

    def _turn(self) -> None:
        now = time.monotonic()
        due = min([s.next_keepalive for s in self._streams] + [s.ends_at for s in self._streams] + [now + 1.0])
        for key, events in self._selector.select(max(due - now, 0.0)):
            if key.fileobj is self._wake_in:
                self._drain_wake()
                continue
            stream = key.data
            if events & selectors.EVENT_READ:
                self._hear(stream)
            if events & selectors.EVENT_WRITE and stream in self._streams:
                self._flush(stream)
        self._take_inbox()
        self._keep_time(time.monotonic())

    def _drain_wake(self) -> None:
        try:
            while self._wake_in.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _take_inbox(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Stream):
                self._streams.add(item)
                self._selector.register(item.sock, selectors.EVENT_READ, item)
            elif item is None:  # the backend is stopping
                for stream in list(self._streams):
                    self._end(stream)
            else:
                self._announce(item)

    def _announce(self, job: dict) -> None:
        wanting = [stream for stream in self._streams if not stream.ending and stream.wants(job)]
        if not wanting:
            return
        event = self._render(job)
        if event is None:
            return
        for stream in wanting:
            self._send(stream, event)

    def _keep_time(self, now: float) -> None:
        for stream in list(self._streams):
            if stream.ending and now >= stream.ends_at:
                self._drop(stream)  # its reader never took the end
            elif not stream.ending and now >= stream.ends_at:
                self._end(stream)
            elif not stream.ending and now >= stream.next_keepalive:
                self._send(stream, b": keepalive\n\n")

    def _send(self, stream: Stream, data: bytes) -> None:
        stream.unsent += stream.frame(data)
        stream.next_keepalive = time.monotonic() + self.keepalive_s
        self._flush(stream)

    def _end(self, stream: Stream) -> None:
        """The stream's lifetime is over (the browser reconnects by itself): end its body."""
        stream.ending = True
        stream.ends_at = time.monotonic() + self.keepalive_s  # for writing what is left
        if stream.chunked:
            stream.unsent += b"0\r\n\r\n"
        self._flush(stream)

    def _flush(self, stream: Stream) -> None:
        try:
            while stream.unsent:
                del stream.unsent[:stream.sock.send(stream.unsent)]
        except BlockingIOError:
            pass
        except OSError:
            self._drop(stream)
            return
        if len(stream.unsent) > MAX_UNSENT_BYTES:
            self._drop(stream)
        elif not stream.unsent and stream.ending:
            self._drop(stream)
        else:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if stream.unsent else 0)
            self._selector.modify(stream.sock, events, stream)

    def _hear(self, stream: Stream) -> None:
        """A stream's client sends nothing but its leaving (the end of its stream or a reset)."""
        try:
            data = stream.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(stream)

    def _drop(self, stream: Stream) -> None:
        if stream not in self._streams:
            return
        self._streams.discard(stream)
        try:
            self._selector.unregister(stream.sock)
        except (KeyError, ValueError):
            pass
        stream.sock.close()
        stream.on_end()


feed = JobFeed()
