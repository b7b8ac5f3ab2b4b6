"""`nias.transfer.BackendLink` against a small HTTP server on 127.0.0.1: a result the backend
cannot keep is refused at once, one it cannot take just now is offered again until it can, and
the offering has a bound in time; `nias.retry.Backoff` keeps that bound."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nias.errors import TransferFailed
from nias.retry import Backoff
from nias.settings import load_settings
from nias.transfer import BackendLink


class Backend:
    """Answers each PUT with the next status of `answers` (the last one for ever), keeping the bodies."""

    def __init__(self, answers: list[int]):
        self.answers, self.bodies = list(answers), []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers["Content-Length"]))
                backend.bodies.append(body)
                status = backend.answers.pop(0) if len(backend.answers) > 1 else backend.answers[0]
                if status == 200:
                    answer = {"v": 1, "type": "receipt", "size": len(body), "sha256": self.headers["X-Nias-Sha256"]}
                else:
                    answer = {"error": {"code": "storage_full" if status == 507 else "busy",
                                        "message": f"answered {status} on purpose"}}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def result(tmp_path):
    path = tmp_path / "result.zip"
    path.write_bytes(b"PK" + b"x" * 1000)
    return path


def _link(url: str, within_s: float = 5.0) -> BackendLink:
    link = BackendLink(load_settings({"NIAS_BACKEND_URL": url, "NIAS_INTERNAL_TOKEN": "t" * 32}))
    link.delivery = Backoff(tries=None, first_s=0.01, max_s=0.05, within_s=within_s)
    return link


def test_a_result_the_backend_has_no_room_for_is_refused_at_once_with_its_reason(result):
    backend = Backend([507])
    with pytest.raises(TransferFailed) as refused:
        _link(backend.url).put_result("job1", 1, result)
    assert refused.value.status == 507 and "answered 507 on purpose" in refused.value.message
    assert len(backend.bodies) == 1


def test_a_result_the_backend_cannot_take_just_now_is_offered_again_until_it_is_kept(result):
    backend = Backend([503, 503, 503, 200])
    receipt = _link(backend.url).put_result("job1", 1, result)
    assert receipt.size == result.stat().st_size
    assert backend.bodies == [result.read_bytes()] * 4


def test_a_result_is_offered_no_longer_than_its_delivery_bound(result):
    backend = Backend([503])
    began = time.monotonic()
    with pytest.raises(TransferFailed) as failed:
        _link(backend.url, within_s=0.3).put_result("job1", 1, result)
    assert time.monotonic() - began < 10  # generous: the bound is 0.3 s
    assert "s of tries" in failed.value.message and len(backend.bodies) >= 2


def test_a_backoff_takes_no_pause_that_would_end_past_its_bound():
    calls = []

    def failing():
        calls.append(time.monotonic())
        raise ConnectionError("down")

    backoff = Backoff(tries=None, first_s=0.05, max_s=0.05, within_s=0.2)
    with pytest.raises(ConnectionError):
        backoff.call(failing, (ConnectionError,), "a call")
    assert 2 <= len(calls) <= 5
