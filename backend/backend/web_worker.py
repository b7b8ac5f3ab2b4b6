"""The backend's gunicorn worker: gthread, made to withstand slow clients.

gunicorn's gthread worker gives a connection to a pool thread as soon as it has bytes, and the
thread then blocks reading the request head for as long as the client takes: a client sending a
header byte every few seconds holds its thread for ever, and as many such clients as threads
freeze the backend. This worker, the one `backend/gunicorn.conf.py` names:

- waits for a new connection's first bytes in its event loop, never on a pool thread;
- gives every request head `NIAS_HEADER_TIMEOUT_S` in all, counted from the accept (on a kept-alive
  connection, from its next bytes): at the deadline the event loop shuts the socket's reading
  side, which ends the blocked read at once, and the client gets a 408. Reaching the application
  ends the head's deadline; a request with a body then has as long again for the application to
  read it and answer, unless its view calls `environ["nias.slow_body"]()` (an upload, which has
  deadlines of its own: `backend.uploads`);
- lets a view take its connection off the pool (`environ["nias.hand_off"]`, the event streams);
- honours an application's `Connection: close`, which gunicorn itself drops, and closes such
  connections without blocking its event loop on a client that is still sending;
- answers the requests gunicorn itself refuses (a request line or headers too long, a malformed
  head) in the API's JSON error shape rather than gunicorn's HTML page.
"""
from __future__ import annotations

import errno
import json
import logging
import selectors
import socket
import threading
import time
from functools import partial
from typing import Callable

from gunicorn import util as gunicorn_util
from gunicorn.workers.gthread import ThreadWorker, TConn

from nias.settings import load_settings

logger = logging.getLogger(__name__)

HANDED_OFF = object()  # what a pool thread returns for a connection a view took over
LINGER_S = 2.0  # how long a closed connection's late bytes are read and dropped (RFC 9112 9.6)
LINGER_READ_BYTES = 64 * 1024
ANSWER_TIMEOUT_S = 1.0  # for writing the 408: a client that reads nothing gets nothing


class HeadDeadlines:
    """Request heads being read on pool threads, and when each must be complete.

    Pool threads `start` a head and `finish` it; the application's entry marks it `reached_app`;
    the event loop calls `expire` about once a second, which cuts every head past its deadline.
    """

    def __init__(self, seconds: float, cut: Callable[[object], None]):
        self.seconds = seconds
        self._cut = cut
        self._lock = threading.Lock()
        self._due: dict[object, float] = {}
        self._expired: set[object] = set()

    def start(self, conn: object, since: float) -> None:
        with self._lock:
            self._due[conn] = since + self.seconds

    def reached_app(self, conn: object) -> None:
        """The head is complete: from here on it is never cut, nor answered with a 408."""
        with self._lock:
            self._due.pop(conn, None)
            self._expired.discard(conn)

    def finish(self, conn: object) -> bool:
        """The pool thread is done with this connection; True when its head was cut."""
        with self._lock:
            self._due.pop(conn, None)
            if conn in self._expired:
                self._expired.discard(conn)
                return True
            return False

    def expire(self, now: float) -> int:
        """Cut every head past its deadline; returns how many were cut."""
        with self._lock:  # held while cutting, so a head that reaches the app is never cut after
            late = [conn for conn, due in self._due.items() if due <= now]
            for conn in late:
                del self._due[conn]
                self._expired.add(conn)
                self._cut(conn)
        return len(late)

    def __len__(self) -> int:
        with self._lock:
            return len(self._due)


def shut_reading(conn: TConn) -> None:
    """End a blocked read of this connection at once (recv then sees the end of the stream)."""
    try:
        conn.sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass  # the client already went away


def error_answer(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP answer in the API's error shape, for what the worker says before any view."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def slow_head_answer(seconds: float) -> bytes:
    return error_answer(408, "Request Timeout", "request_head_too_slow",
                        f"The request's headers did not all arrive within {seconds:g} s; the connection is closed.")


def has_body(environ: dict) -> bool:
    return environ.get("CONTENT_LENGTH", "") not in ("", "0") or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "")


def asks_to_close(headers) -> bool:
    return any(name.lower() == "connection" and value.strip().lower() == "close" for name, value in headers)


class Connection(TConn):
    """A client connection whose graceful close lingers in the worker's event loop instead of blocking it."""

    linger: Callable[[socket.socket], None] | None = None

    def close(self, graceful: bool = False) -> None:
        if graceful and self.linger is not None:
            self.linger(self.sock)
        else:
            super().close(graceful)


class HandOff:
    """`environ["nias.hand_off"]`: a view calls it with `take(sock, chunked)` and `abandon()`.

    If the view then answers 200, the worker writes the response's head and body as usual and,
    instead of ending the response, calls `take` with the socket and whether the body is chunked:
    from then on the body is the taker's to write, frame and end, and the socket its to close.
    Otherwise (another status, an error, a HEAD) it calls `abandon`.
    """

    def __init__(self) -> None:
        self.take: Callable[[socket.socket, bool], None] | None = None
        self.abandon: Callable[[], None] | None = None
        self.accepted = False  # the response is a 200 the taker may continue
        self.ready: tuple[socket.socket, bool] | None = None

    def __call__(self, take: Callable[[socket.socket, bool], None], abandon: Callable[[], None]) -> None:
        self.take, self.abandon = take, abandon

    def settle(self) -> None:
        """After the pool thread is done: give the socket to the taker, or tell it why not."""
        if self.take is None:
            return
        if self.ready is None:
            self.abandon()
            return
        try:
            self.take(*self.ready)
        except Exception:  # the taker never got it: the connection ends here
            logger.exception("A connection handed off by its view could not be taken")
            self.ready[0].close()
            self.abandon()


GUNICORN_CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
                  431: "headers_too_large", 501: "not_implemented"}


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's `util.write_error`, in the API's `{"error": {"code", "message"}}` shape."""
    gunicorn_util.write_nonblock(sock, error_answer(status_int, reason, GUNICORN_CODES.get(status_int, "http_error"),
                                                    f"{reason}: {mesg}" if mesg else reason))


class WebWorker(ThreadWorker):
    """gthread with head deadlines, hand-offs and non-blocking closes (see the module's notes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        gunicorn_util.write_error = write_json_error  # this process serves the backend alone
        self.heads = HeadDeadlines(load_settings().header_timeout_s, shut_reading)
        self.lingering: dict[socket.socket, float] = {}
        self._local = threading.local()
        self._app = None

    def load_wsgi(self):
        super().load_wsgi()
        self._app = self.wsgi
        self.wsgi = self.enter_app

    # -- the event loop (the worker's main thread) ---------------------------------------------
    def accept(self, listener):
        """Take a connection and wait for its first bytes on the poller, at most the head timeout."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = Connection(self.cfg, client_sock, client_addr, listener.getsockname())
        conn.linger = self.linger_close
        conn.accepted_at = time.monotonic()
        conn.timeout = conn.accepted_at + self.heads.seconds  # murder_pending closes it unheard
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def murder_pending(self):
        """Runs on every turn of the event loop (at least once a second): every deadline is kept here.

        Stopping, a connection that has sent nothing yet, or lingers after its answer, is closed at
        once: only requests under way may use the graceful stop."""
        if not self.alive:
            self.close_unheard()
        super().murder_pending()
        now = time.monotonic()
        self.heads.expire(now)
        for sock in [sock for sock, due in self.lingering.items() if due <= now]:
            self.forget_lingering(sock)

    def close_unheard(self) -> None:
        while self.pending_conns:
            conn = self.pending_conns.popleft()
            try:
                self.poller.unregister(conn.sock)
            except (OSError, KeyError, ValueError):
                pass
            self.nr_conns -= 1
            conn.close()
        for sock in list(self.lingering):
            self.forget_lingering(sock)
        now = time.monotonic()
        if self.nr_conns > 0 and now >= getattr(self, "_next_stop_report", 0.0):
            self._next_stop_report = now + 5.0
            self.log.info("Stopping: %s connections under way (%s kept alive)", self.nr_conns,
                          len(self.keepalived_conns))

    def linger_close(self, sock: socket.socket) -> None:
        """Send our end of the stream, then read and drop what the client still sends for a while
        before closing, so a late byte does not reset the connection under the answer unread."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, self.drain_lingering)
        except (OSError, ValueError, KeyError):
            sock.close()
            return
        self.lingering[sock] = time.monotonic() + LINGER_S

    def drain_lingering(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(LINGER_READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.forget_lingering(sock)

    def forget_lingering(self, sock: socket.socket) -> None:
        self.lingering.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (OSError, KeyError, ValueError):
            pass
        sock.close()

    def finish_request(self, conn, fs):
        if not fs.cancelled() and fs.exception() is None and fs.result() is HANDED_OFF:
            self.nr_conns -= 1  # the socket is its taker's now
            return
        super().finish_request(conn, fs)

    # -- a pool thread -------------------------------------------------------------------------
    def handle(self, conn):
        since = time.monotonic() if conn.initialized else getattr(conn, "accepted_at", time.monotonic())
        self.heads.start(conn, since)
        self._local.hand_off = None
        try:
            result = super().handle(conn)
        finally:
            cut = self.heads.finish(conn)
        hand_off, self._local.hand_off = self._local.hand_off, None
        if hand_off is not None:
            hand_off.settle()
            if hand_off.ready is not None:
                return HANDED_OFF
        if cut:
            self.answer_slow_head(conn)
            return False
        return result

    def answer_slow_head(self, conn) -> None:
        logger.info("Closed a connection from %s whose request head took over %g s", conn.client, self.heads.seconds)
        try:
            conn.sock.settimeout(ANSWER_TIMEOUT_S)
            conn.sock.sendall(slow_head_answer(self.heads.seconds))
        except OSError:
            pass

    def handle_request(self, req, conn):
        self._local.conn = conn
        try:
            return super().handle_request(req, conn)
        finally:
            self._local.conn = None

    def enter_app(self, environ, start_response):
        """The application's entry: the head is complete, and the response may close or hand off."""
        conn = getattr(self._local, "conn", None)
        resp = getattr(start_response, "__self__", None)  # gunicorn passes its Response's method
        if conn is None or resp is None:  # an HTTP/2 stream: served as it comes
            return self._app(environ, start_response)
        if has_body(environ):  # its body gets as long again, unless the view says it may be slow
            self.heads.start(conn, time.monotonic())
            environ["nias.slow_body"] = partial(self.heads.reached_app, conn)
        else:
            self.heads.reached_app(conn)
        hand_off = self._local.hand_off = HandOff()
        environ["nias.hand_off"] = hand_off

        def start(status, headers, exc_info=None):
            hand_off.accepted = (hand_off.take is not None and status.startswith("200 ") and exc_info is None
                                 and environ["REQUEST_METHOD"] != "HEAD")
            if asks_to_close(headers) or hand_off.accepted:
                resp.force_close()  # gunicorn drops the header: an unread body is then never drained
            return start_response(status, headers, exc_info)

        try:
            body = self._app(environ, start)
        finally:
            self.heads.reached_app(conn)  # answered: a cut body has had its answer, never a 408
        return self.pass_on(body, resp, hand_off) if hand_off.accepted else body

    @staticmethod
    def pass_on(body, resp, hand_off: HandOff):
        """Yield the view's first bytes, then keep gunicorn from ending the body: when the view
        returns, gunicorn writes a chunked body's last chunk; this body goes on, so its taker
        frames it and ends it."""
        try:
            yield from body
        finally:
            if hasattr(body, "close"):
                body.close()
        resp.send_headers()
        hand_off.ready = (resp.sock, resp.chunked)
        resp.chunked = False
