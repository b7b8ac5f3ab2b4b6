"""The backend worker's own logic: head deadlines, cutting a blocked read, and handing a response off."""
from __future__ import annotations

import http.client
import io
import json
import socket
import threading

from backend.web_worker import HandOff, HeadDeadlines, WebWorker, asks_to_close, shut_reading, slow_head_answer


def deadlines(seconds: float = 10.0):
    cut: list[object] = []
    return HeadDeadlines(seconds, cut.append), cut


def test_a_head_past_its_deadline_is_cut_and_its_thread_hears_so_once():
    heads, cut = deadlines()
    late, early = object(), object()
    heads.start(late, since=100.0)
    heads.start(early, since=105.0)
    assert heads.expire(109.9) == 0 and cut == []
    assert heads.expire(110.0) == 1 and cut == [late]
    assert heads.finish(late) is True
    assert heads.finish(late) is False
    assert heads.finish(early) is False and len(heads) == 0


def test_a_head_that_reached_the_application_is_never_cut_nor_answered_with_a_timeout():
    heads, cut = deadlines()
    conn = object()
    heads.start(conn, since=0.0)
    heads.reached_app(conn)
    assert heads.expire(1000.0) == 0 and cut == []
    assert heads.finish(conn) is False


def test_reaching_the_application_just_after_the_cut_still_answers_the_request_not_a_timeout():
    heads, cut = deadlines()
    conn = object()
    heads.start(conn, since=0.0)
    heads.expire(10.0)
    heads.reached_app(conn)  # its head was complete after all: the application answers it
    assert cut == [conn] and heads.finish(conn) is False


def test_the_deadline_counts_from_when_the_head_began_not_from_each_read():
    heads, cut = deadlines(4.0)
    conn = object()
    heads.start(conn, since=50.0)  # e.g. accepted at 50, picked up by a thread later
    assert heads.expire(53.9) == 0
    assert heads.expire(54.0) == 1


class _Conn:
    def __init__(self, sock):
        self.sock = sock


def test_shutting_the_reading_side_ends_a_read_blocked_in_another_thread_at_once():
    server, client = socket.socketpair()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(server.recv(10)))
    try:
        client.sendall(b"GET / HTTP/1.1\r\n")
        assert server.recv(100).startswith(b"GET")
        reader.start()
        shut_reading(_Conn(server))
        reader.join(timeout=10)
        assert not reader.is_alive() and got == [b""]
        shut_reading(_Conn(server))  # twice, or after the client left, is harmless
    finally:
        server.close()
        client.close()


def test_the_timeout_answer_is_a_408_with_the_json_error_shape():
    response = http.client.HTTPResponse(_FakeSocket(slow_head_answer(4)))
    response.begin()
    body = json.loads(response.read())
    assert response.status == 408 and response.getheader("Connection") == "close"
    assert body["error"]["code"] == "request_head_too_slow" and "4 s" in body["error"]["message"]


class _FakeSocket:
    def __init__(self, data: bytes):
        self._file = io.BytesIO(data)

    def makefile(self, *_args, **_kwargs):
        return self._file


def test_an_application_asks_to_close_with_a_connection_close_header():
    assert asks_to_close([("Content-Type", "application/json"), ("Connection", "Close ")])
    assert not asks_to_close([("Content-Type", "application/json"), ("Connection", "keep-alive")])


class _Response:
    def __init__(self, chunked: bool):
        self.chunked = chunked
        self.sock = object()
        self.headers_sent = False

    def send_headers(self):
        self.headers_sent = True


def test_a_handed_off_body_is_left_open_for_its_taker_with_its_framing():
    resp, hand_off = _Response(chunked=True), HandOff()
    taken: list[tuple] = []
    hand_off(lambda sock, chunked: taken.append((sock, chunked)), lambda: taken.append("abandoned"))
    assert list(WebWorker.pass_on(iter([b"retry: 2000\n\n"]), resp, hand_off)) == [b"retry: 2000\n\n"]
    assert resp.headers_sent and resp.chunked is False  # gunicorn then writes no last chunk
    hand_off.settle()
    assert taken == [(resp.sock, True)]


def test_a_hand_off_that_never_came_to_be_is_abandoned_and_a_failed_take_closes_the_socket():
    abandoned: list[str] = []
    never = HandOff()
    never(lambda sock, chunked: None, lambda: abandoned.append("never"))
    never.settle()

    def refuse(sock, chunked):
        raise RuntimeError("no room")

    server, client = socket.socketpair()
    failed = HandOff()
    failed(refuse, lambda: abandoned.append("failed"))
    failed.ready = (server, True)
    failed.settle()
    assert abandoned == ["never", "failed"] and server.fileno() == -1
    client.close()


def test_a_handed_off_stream_is_written_kept_alive_and_ended_in_valid_chunked_framing():
    from backend.live import EventStreams, JobFeed

    source = JobFeed()
    streams = EventStreams(source, keepalive_s=0.2, lifetime_s=1.0)
    streams.start(lambda job: f"event: job\ndata: {job['id']}\n\n".encode())
    server, client = socket.socketpair()
    ended = threading.Event()
    try:
        streams.add(server, True, lambda job: job["id"] != "not-mine", ended.set)
        source.publish({"id": "not-mine"})
        source.publish({"id": "mine"})
        client.settimeout(10)
        received = b""
        while chunk := client.recv(4096):  # the stream closes its socket at the end of its lifetime
            received += chunk
        response = http.client.HTTPResponse(_FakeSocket(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                        + received))
        response.begin()
        body = response.read().decode()  # raises on broken framing or a missing last chunk
        assert "event: job\ndata: mine\n\n" in body and "not-mine" not in body
        assert ": keepalive\n\n" in body
        assert ended.wait(5) and streams.count() == 0
    finally:
        client.close()
