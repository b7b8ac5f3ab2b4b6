"""Slow clients never freeze the backend: more slow request heads, slow uploads or open event
streams than the backend has request threads (64), and it still answers everyone else."""
from __future__ import annotations

import http.client
import json
import re
import select
import socket
import threading
import time
import uuid
from contextlib import contextmanager

import pytest
import requests
from playwright.sync_api import expect

from tests.support.browser import admin_page, browser, console_errors  # noqa: F401 (fixtures)
from tests.support.projects import zip_entries
from tests.support.stack import LocalStack, wait_until

HEAD_TIMEOUT_S = 4
SOCKET_TIMEOUT_S = 30
ANSWER_TIMEOUT_S = 20  # generous: what "the backend answers" means while slow clients hold on
STREAMS_PER_USER = 4
UPLOADS_PER_USER = 2
UPLOAD_SENDERS = 4
USERS = 20
# Every user's streams, plus one more (the admin's): one beyond that is refused by the overall cap.
MAX_STREAMS = USERS * STREAMS_PER_USER + 1


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory):
    """A stack of its own (no units needed: jobs only have to be accepted)."""
    with LocalStack(tmp_path_factory.mktemp("slow-clients"), units=0, NIAS_HEADER_TIMEOUT_S=str(HEAD_TIMEOUT_S),
                    NIAS_MAX_STREAMS_PER_USER=str(STREAMS_PER_USER), NIAS_MAX_UPLOADS_PER_USER=str(UPLOADS_PER_USER),
                    NIAS_MAX_UPLOADS=str(UPLOADS_PER_USER * UPLOAD_SENDERS), NIAS_MAX_STREAMS=str(MAX_STREAMS)) as stack:
        yield stack


def new_token(stack: LocalStack) -> str:
    email, password = f"{uuid.uuid4().hex[:8]}@lab.example", "a long enough password"
    created = stack.http.post(f"{stack.url}/api/users", json={"email": email, "password": password, "role": "user"},
                              timeout=10)
    assert created.status_code == 201, created.text
    browser = requests.Session()
    signed_in = browser.post(f"{stack.url}/api/auth/login", json={"email": email, "password": password}, timeout=10)
    answer = browser.post(f"{stack.url}/api/tokens", json={"name": "slow"},
                          headers={"X-CSRF-Token": signed_in.json()["csrf_token"]}, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()["token"]


@pytest.fixture(scope="module")
def tokens(slow_stack) -> list[str]:
    return [new_token(slow_stack) for _ in range(USERS)]


def assert_backend_answers(stack: LocalStack) -> None:
    """The health check and an ordinary API request both answer, each on a new connection."""
    health = requests.get(f"{stack.url}/healthz", timeout=ANSWER_TIMEOUT_S)
    assert health.status_code == 200, health.text
    listed = requests.get(f"{stack.url}/api/jobs", headers={"Authorization": f"Bearer {stack.admin_token}"},
                          timeout=ANSWER_TIMEOUT_S)
    assert listed.status_code == 200 and "jobs" in listed.json()


@contextmanager
def connections():
    """Sockets the test opens, every one closed at the end whatever happens."""
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # also ends a connection a response object still reads from
            except OSError:
                pass
            sock.close()


def connect(stack: LocalStack, opened: list[socket.socket]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=SOCKET_TIMEOUT_S)
    opened.append(sock)
    return sock


def trickle(socks: list[socket.socket], byte: bytes, stop: threading.Event, interval_s: float = 1.0) -> threading.Thread:
    """Send one byte on each socket every `interval_s` until `stop`: a client that never stalls."""
    def run():
        while not stop.wait(interval_s):
            for sock in socks:
                try:
                    sock.send(byte)
                except OSError:
                    pass  # the server let it go

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def read_answer(sock: socket.socket) -> tuple[int, dict]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read())


def answered(socks: list[socket.socket], within_s: float) -> list[socket.socket]:
    """The sockets that have something to read (an answer, or the end) within `within_s`."""
    ready: set[socket.socket] = set()
    deadline = time.monotonic() + within_s
    while len(ready) < len(socks) and time.monotonic() < deadline:
        waiting = [sock for sock in socks if sock not in ready]
        readable, _, _ = select.select(waiting, [], [], max(deadline - time.monotonic(), 0))
        ready.update(readable)
    return [sock for sock in socks if sock in ready]


def ended_or_timed_out(sock: socket.socket) -> bytes | None:
    """What the server sent before it closed the connection; None if it still holds it open."""
    received = b""
    sock.settimeout(HEAD_TIMEOUT_S + 15)
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass  # a reset also lets the client go
    except socket.timeout:
        return None
    return received


def test_eighty_clients_sending_their_headers_a_byte_a_second_are_cut_off_and_the_backend_keeps_answering(slow_stack):
    stop = threading.Event()
    with connections() as opened:
        for _ in range(80):
            connect(slow_stack, opened).sendall(b"GET /api/jobs HTTP/1.1\r\nHost: nias\r\nX-Slow: ")
        trickle(opened, b"x", stop)
        try:
            assert_backend_answers(slow_stack)
            endings = [ended_or_timed_out(sock) for sock in opened]
        finally:
            stop.set()
        assert None not in endings, f"{endings.count(None)} slow heads were never cut off"
        answers = [ending for ending in endings if ending]
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[:3]
        assert any(b'"request_head_too_slow"' in answer for answer in answers)
    assert_backend_answers(slow_stack)


def test_a_kept_alive_connection_that_sends_its_next_head_slowly_is_cut_off_too(slow_stack):
    stop = threading.Event()
    with connections() as opened:
        kept = [connect(slow_stack, opened) for _ in range(80)]
        for sock in kept:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: nias\r\n\r\n")
        for sock in kept:
            status, _body = read_answer(sock)
            assert status == 200
            sock.sendall(b"GET /api/jobs HTTP/1.1\r\nHost: nias\r\nX-Slow: ")
        trickle(kept, b"x", stop)
        try:
            assert_backend_answers(slow_stack)
            endings = [ended_or_timed_out(sock) for sock in kept]
        finally:
            stop.set()
        assert None not in endings, f"{endings.count(None)} slow second heads were never cut off"
    assert_backend_answers(slow_stack)


def test_eighty_clients_trickling_a_sign_in_body_are_cut_off_and_the_backend_keeps_answering(slow_stack):
    """Only an upload's body may be slow (it has deadlines of its own); any other has the head's time again."""
    stop = threading.Event()
    with connections() as opened:
        for _ in range(80):
            connect(slow_stack, opened).sendall(b"POST /api/auth/login HTTP/1.1\r\nHost: nias\r\nContent-Type: "
                                                b"application/json\r\nContent-Length: 10000\r\n\r\n{\"email\": \"")
        trickle(opened, b"a", stop)
        try:
            assert_backend_answers(slow_stack)
            endings = [ended_or_timed_out(sock) for sock in opened]
        finally:
            stop.set()
        assert None not in endings, f"{endings.count(None)} slow bodies were never cut off"
        answers = [ending for ending in endings if ending]
        assert answers and all(answer.startswith(b"HTTP/1.1 400 ") for answer in answers), answers[:3]
    assert_backend_answers(slow_stack)


def test_connections_that_send_nothing_or_idle_after_a_request_are_closed_and_the_backend_keeps_answering(slow_stack):
    with connections() as opened:
        silent = [connect(slow_stack, opened) for _ in range(80)]
        idle = [connect(slow_stack, opened) for _ in range(80)]
        for sock in idle:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: nias\r\n\r\n")
        for sock in idle:
            assert read_answer(sock)[0] == 200  # a kept-alive connection, now idle
        assert_backend_answers(slow_stack)
        assert [ended_or_timed_out(sock) for sock in silent] == [b""] * len(silent)
        assert None not in [ended_or_timed_out(sock) for sock in idle]
    assert_backend_answers(slow_stack)


def upload_head(token: str, content_length: int) -> bytes:
    return (b"POST /api/jobs HTTP/1.1\r\nHost: nias\r\nAuthorization: Bearer " + token.encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: "
            + str(content_length).encode() + b"\r\n\r\n"
            + b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\r\nPK")


def test_eighty_slow_uploads_from_four_users_leave_two_each_in_flight_and_the_backend_answering(
        slow_stack, tokens, tmp_path):
    senders = tokens[:UPLOAD_SENDERS]
    stop = threading.Event()
    with connections() as opened:
        for token in senders:
            for _ in range(20):
                connect(slow_stack, opened).sendall(upload_head(token, 1_000_000))
        refused = answered(opened, within_s=ANSWER_TIMEOUT_S)
        in_flight = [sock for sock in opened if sock not in refused]
        trickle(in_flight, b"\0", stop)  # the uploads under way never stall
        try:
            answers = [read_answer(sock) for sock in refused]
            assert [(status, body["error"]["code"]) for status, body in answers] == \
                [(429, "too_many_uploads")] * (len(opened) - UPLOADS_PER_USER * len(senders))
            assert all(ended_or_timed_out(sock) is not None for sock in refused), "a refused upload kept its connection"
            assert len(in_flight) == UPLOADS_PER_USER * len(senders)
            assert_backend_answers(slow_stack)
            # one more user's upload passes the overall limit (NIAS_MAX_UPLOADS), also refused at once
            one_more = connect(slow_stack, opened)
            one_more.sendall(upload_head(tokens[UPLOAD_SENDERS], 1_000_000))
            status, body = read_answer(one_more)
            assert (status, body["error"]["code"]) == (429, "too_many_uploads")
            assert "The server is receiving" in body["error"]["message"]
        finally:
            stop.set()
    project = zip_entries(tmp_path / "ok.zip", {"code.py": "pass"})
    for token in senders:  # the closed uploads gave back their places
        submit = lambda: requests.post(f"{slow_stack.url}/api/jobs", files={"file": project.open("rb")},  # noqa: E731
                                       headers={"Authorization": f"Bearer {token}"}, timeout=ANSWER_TIMEOUT_S)
        assert wait_until(lambda: submit().status_code == 201, timeout_s=30, interval_s=0.5,
                          message="an upload after the slow ones closed")


def open_stream(stack: LocalStack, opened: list[socket.socket], token: str) -> tuple[int, http.client.HTTPResponse]:
    sock = connect(stack, opened)
    sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: nias\r\nAccept: text/event-stream\r\nAuthorization: Bearer "
                 + token.encode() + b"\r\n\r\n")
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response


def next_event(response: http.client.HTTPResponse) -> str:
    """The next message of a stream (its chunked framing decoded), comments and retry included."""
    lines = []
    while (line := response.readline().decode()) not in ("\n", ""):
        lines.append(line)
    return "".join(lines)


def test_eighty_open_event_streams_from_twenty_users_hold_no_thread_and_each_user_may_open_four(
        slow_stack, tokens, tmp_path):
    with connections() as opened:
        streams = {token: [] for token in tokens}
        for token in tokens:
            for _ in range(STREAMS_PER_USER):
                status, response = open_stream(slow_stack, opened, token)
                assert status == 200 and response.chunked
                assert next_event(response) == "retry: 2000\n"
                streams[token].append(response)
        assert_backend_answers(slow_stack)
        status, refused = open_stream(slow_stack, opened, tokens[0])
        assert status == 429 and json.loads(refused.read())["error"]["code"] == "too_many_streams"
        assert open_stream(slow_stack, opened, slow_stack.admin_token)[0] == 200  # the last one of all
        status, refused = open_stream(slow_stack, opened, slow_stack.admin_token)
        assert status == 429 and json.loads(refused.read())["error"]["code"] == "too_many_streams"

        project = zip_entries(tmp_path / "news.zip", {"code.py": "pass"})
        job = requests.post(f"{slow_stack.url}/api/jobs", files={"file": project.open("rb")},
                            headers={"Authorization": f"Bearer {tokens[0]}"}, timeout=ANSWER_TIMEOUT_S).json()
        for response in streams[tokens[0]]:  # the streams are written off the request threads
            event = next(e for e in iter(lambda: next_event(response), "") if e.startswith("event: job"))
            assert json.loads(event.split("data: ", 1)[1])["id"] == job["id"]
        assert_backend_answers(slow_stack)
    for token in tokens[:2]:  # the closed streams gave back their places
        with connections() as opened:
            assert wait_until(lambda: open_stream(slow_stack, opened, token)[0] == 200, timeout_s=30,
                              interval_s=0.5, message="a stream after the others closed")
            for _ in range(STREAMS_PER_USER - 1):
                assert open_stream(slow_stack, opened, token)[0] == 200


def test_a_job_page_whose_event_stream_is_refused_polls_and_still_shows_the_jobs_change(
        slow_stack, browser, console_errors, tmp_path):  # noqa: F811 (fixtures)
    stack = slow_stack
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    project = zip_entries(tmp_path / "watched.zip", {"code.py": "pass"})
    job = requests.post(f"{stack.url}/api/jobs", files={"file": project.open("rb")}, headers=admin,
                        timeout=ANSWER_TIMEOUT_S).json()
    with connections() as opened:
        for _ in range(STREAMS_PER_USER):  # the admin's other tabs hold every stream it may have
            assert open_stream(stack, opened, stack.admin_token)[0] == 200
        with admin_page(browser, stack, console_errors) as page:
            console_errors.allow(r"429")  # the browser reports the refused stream
            streams: list[int] = []
            page.on("response", lambda answer: streams.append(answer.status) if "/api/events" in answer.url else None)
            page.goto(f"/job.html?id={job['id']}")
            expect(page.locator("#job-state")).to_have_attribute("data-state", "queued")
            cancelled = requests.put(f"{stack.url}/api/jobs/{job['id']}/state", json={"state": "cancelled"},
                                     headers=admin, timeout=ANSWER_TIMEOUT_S)
            assert cancelled.status_code == 200, cancelled.text
            expect(page.locator("#job-state")).to_have_attribute("data-state", "cancelled", timeout=30_000)
            assert streams and set(streams) == {429}, streams
            expect(page.locator("#job-live")).to_have_text(re.compile("checking every"))
