"""The API session against a server that closes each connection after one answer, as gunicorn does
with a connection left idle past its keep-alive."""
import socket
import threading
import time

import pytest
import requests

from nias import client as client_module
from nias.client import ApiSession


class OneAnswerServer:
    """Answers the first request on each connection, then reads the next one and closes without
    answering. Records, per request, whether it was the first on its connection."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.requests: list[tuple[str, bool]] = []  # (request line, first on its connection)
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            connection, _ = self._socket.accept()
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            first = connection.recv(65536)
            self.requests.append((first.split(b"\r\n")[0].decode(), True))
            time.sleep(self.delay_s)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            second = connection.recv(65536)
            if second:
                self.requests.append((second.split(b"\r\n")[0].decode(), False))

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def server():
    server = OneAnswerServer()
    yield server
    server.close()


def test_a_safe_request_is_sent_again_when_the_server_drops_the_pooled_connection(server):
    session = ApiSession()
    assert session.get(f"{server.url}/a").text == "ok"
    assert session.get(f"{server.url}/b").text == "ok"
    assert [line for line, _ in server.requests] == ["GET /a HTTP/1.1", "GET /b HTTP/1.1", "GET /b HTTP/1.1"]


def test_a_post_after_an_idle_pause_goes_on_a_new_connection(server, monkeypatch):
    monkeypatch.setattr(client_module, "IDLE_REUSE_S", 0.05)
    session = ApiSession()
    session.get(f"{server.url}/a")
    time.sleep(0.1)
    assert session.post(f"{server.url}/jobs", data=b"x").text == "ok"
    assert ("POST /jobs HTTP/1.1", True) in server.requests
    assert ("POST /jobs HTTP/1.1", False) not in server.requests


def test_a_post_on_a_dropped_connection_is_not_sent_twice(server):
    session = ApiSession()
    session.get(f"{server.url}/a")
    with pytest.raises(requests.ConnectionError):
        session.post(f"{server.url}/jobs", data=b"x")  # within IDLE_REUSE_S: the pooled connection
    assert [line for line, _ in server.requests].count("POST /jobs HTTP/1.1") == 1


def test_a_safe_request_the_server_is_slow_to_answer_is_asked_once():
    server = OneAnswerServer(delay_s=0.5)
    try:
        with pytest.raises(requests.ReadTimeout):
            ApiSession().get(f"{server.url}/slow", timeout=0.1)
        time.sleep(0.6)
        assert [line for line, _ in server.requests] == ["GET /slow HTTP/1.1"]
    finally:
        server.close()
