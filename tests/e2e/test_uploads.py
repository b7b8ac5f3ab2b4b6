"""Every refused upload gets its 4xx and a clear message, and leaves nothing queued or on disk."""
from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import threading
import time
import warnings
import zipfile

import pytest

from nias.client import ApiError
from tests.support.projects import zip_entries
from tests.support.stack import LocalStack

UPLOAD_TIMEOUT_S = 4.0


def _symlink_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("code.py", "pass")
        link = zipfile.ZipInfo("output/passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return path


def _duplicate_entry_zip(path):
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as archive:
        warnings.simplefilter("ignore")
        archive.writestr("code.py", "print('first')")
        archive.writestr("code.py", "print('second')")
    return path


def _bomb_zip(path):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("code.py", "pass")
        archive.writestr("zeros.bin", b"\0" * (20 * 1024 * 1024))
    return path


def _many_files_zip(path):
    return zip_entries(path, {"code.py": "pass", **{f"data/{i}.txt": str(i) for i in range(60)}})


def _too_large_unpacked_zip(path):
    """Unpacks past the limit while each member compresses only about 2.5:1 (no bomb)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("code.py", "pass")
        for i in range(3):
            archive.writestr(f"chunk{i}.bin", os.urandom(10 * 1024 * 1024) + b"\0" * (15 * 1024 * 1024))
    return path


BAD_UPLOADS = {
    "not_a_zip": lambda p: (p.write_bytes(b"this is not a zip file at all"), p)[1],
    "empty_zip": lambda p: zip_entries(p, {}),
    "only_mac_metadata_is_empty": lambda p: zip_entries(p, {"__MACOSX/._code.py": "x", ".DS_Store": "x"}),
    "no_code_py": lambda p: zip_entries(p, {"main.py": "pass", "requirements.txt": ""}),
    "code_py_two_levels_apart": lambda p: zip_entries(p, {"a/code.py": "pass", "b/other.py": "pass"}),
    "absolute_path": lambda p: zip_entries(p, {"code.py": "pass", "/etc/cron.d/evil": "x"}),
    "dotdot_path": lambda p: zip_entries(p, {"code.py": "pass", "../../evil.py": "x"}),
    "symlink_entry": _symlink_zip,
    "duplicate_entry": _duplicate_entry_zip,
    "too_many_files": _many_files_zip,
    "compression_ratio": _bomb_zip,
    "too_large_unpacked": _too_large_unpacked_zip,
    "name_too_long": lambda p: zip_entries(p, {f"{'x' * 300}/code.py": "pass"}),
    # installing runs as the unit, outside the sandbox: a path, URL or option would run the job's code there
    "requirement_from_a_local_path": lambda p: zip_entries(p, {"code.py": "pass", "requirements.txt": "./evil\n",
                                                             "evil/setup.py": "import os; os.system('id')"}),
    "requirement_from_a_url": lambda p: zip_entries(p, {"code.py": "pass",
                                                      "requirements.txt": "six @ https://example.org/six.whl\n"}),
    "requirement_option": lambda p: zip_entries(p, {"code.py": "pass",
                                                  "requirements.txt": "--index-url http://10.0.0.1/\nsix\n"}),
}
EXPECTED_CODE = {
    "only_mac_metadata_is_empty": "empty_zip",
    "code_py_two_levels_apart": "no_code_py",
    "absolute_path": "unsafe_path",
    "dotdot_path": "unsafe_path",
    "requirement_from_a_local_path": "unsafe_requirements",
    "requirement_from_a_url": "unsafe_requirements",
    "requirement_option": "unsafe_requirements",
}


def _disk_state(stack) -> tuple[list[str], list[str]]:
    jobs = sorted(os.listdir(stack.data_dir / "jobs"))
    uploads = sorted(os.listdir(stack.data_dir / "uploads"))
    return jobs, uploads


@pytest.mark.parametrize("kind", sorted(BAD_UPLOADS))
def test_a_bad_upload_is_refused_with_a_4xx_and_leaves_nothing_behind(kind, stack, client, tmp_path):
    path = BAD_UPLOADS[kind](tmp_path / f"{kind}.zip")
    before_total = client.jobs()["total"]
    before_disk = _disk_state(stack)
    with pytest.raises(ApiError) as refused:
        client.submit(path, name=kind)
    assert refused.value.status == 400
    assert refused.value.code == EXPECTED_CODE.get(kind, kind)
    assert len(refused.value.message) > 10
    assert client.jobs()["total"] == before_total
    assert _disk_state(stack) == before_disk


def test_an_upload_above_the_size_limit_is_refused_with_413_and_leaves_nothing_behind(stack, client, tmp_path):
    limit_mb = int(stack.env["NIAS_MAX_UPLOAD_MB"])
    path = tmp_path / "huge.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("code.py", "pass")
        archive.writestr("big.bin", os.urandom((limit_mb + 2) * 1024 * 1024))
    before = _disk_state(stack)
    with pytest.raises(ApiError) as refused:
        client.submit(path)
    assert refused.value.status == 413 and refused.value.code == "upload_too_large"
    assert f"{limit_mb} MB" in refused.value.message
    assert _disk_state(stack) == before


def test_an_upload_without_a_file_field_is_refused(stack):
    response = stack.http.post(f"{stack.url}/api/jobs", data={"name": "nothing"}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_file"


def test_a_priority_out_of_range_is_refused_and_nothing_is_kept(stack, client, tmp_path):
    before = _disk_state(stack)
    with pytest.raises(ApiError) as refused:
        client.submit(zip_entries(tmp_path / "p.zip", {"code.py": "pass"}), priority=42)
    assert refused.value.status == 400 and "priority" in refused.value.message
    assert _disk_state(stack) == before


def _backend_rss_kib(stack) -> int:
    pids = stack.pids("backend.app:create_served_app")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as handle:
            total += next(int(line.split()[1]) for line in handle if line.startswith("VmRSS"))
    return total


def test_a_large_upload_is_streamed_to_disk_not_held_in_memory(stack, client, tmp_path):
    path = tmp_path / "large.zip"
    size_mb = int(stack.env["NIAS_MAX_UPLOAD_MB"]) - 8
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("code.py", "pass")
        archive.writestr("data.bin", os.urandom(size_mb * 1024 * 1024))
    baseline = _backend_rss_kib(stack)
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _backend_rss_kib(stack))
            done.wait(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        job = client.submit(path)
    finally:
        done.set()
        sampler.join()
    assert job["upload_size"] == path.stat().st_size
    assert peak[0] - baseline < size_mb * 1024 // 2, f"backend grew {(peak[0] - baseline) // 1024} MiB"
    client.wait(job["id"], timeout_s=120)


def test_clients_that_stall_mid_upload_do_not_hold_the_servers_threads(stack, client, tmp_path):
    """More stalled uploads than the backend has threads: each is dropped after NIAS_READ_TIMEOUT_S."""
    stalled = []
    for _ in range(72):  # the backend runs 64 threads
        sock = socket.create_connection(("127.0.0.1", stack.port), timeout=30)
        sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: nias\r\nAuthorization: Bearer " + stack.admin_token.encode()
                     + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n"
                     + b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\r\nPK")
        stalled.append(sock)
    try:
        started = time.monotonic()
        job = client.submit(zip_entries(tmp_path / "ok.zip", {"code.py": "pass"}))
        assert job["state"] == "queued"
        assert time.monotonic() - started < 30
        answers = [_answer(sock) for sock in stalled]
        refusals = [(status, body["error"]["code"]) for status, body in answers]
        assert refusals == [(408, "upload_stalled")] * len(stalled), refusals
    finally:
        for sock in stalled:
            sock.close()
    assert os.listdir(stack.data_dir / "uploads") == []


@pytest.fixture(scope="module")
def deadline_stack(tmp_path_factory):
    """A stack of its own (no units needed) whose uploads must be complete within a few seconds."""
    with LocalStack(tmp_path_factory.mktemp("deadline"), units=0, NIAS_READ_TIMEOUT_S="3",
                    NIAS_UPLOAD_TIMEOUT_S=f"{UPLOAD_TIMEOUT_S:g}") as stack:
        yield stack


def _multipart(project: bytes) -> bytes:
    """The body of a POST /api/jobs carrying `project` as its file."""
    return (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n"
            b"Content-Type: application/zip\r\n\r\n" + project + b"\r\n--b--\r\n")


def _upload_head(stack, content_length: int) -> bytes:
    return (b"POST /api/jobs HTTP/1.1\r\nHost: nias\r\nAuthorization: Bearer " + stack.admin_token.encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: "
            + str(content_length).encode() + b"\r\n\r\n")


def _trickle(sock: socket.socket, pieces, interval_s: float, stop: threading.Event) -> None:
    for piece in pieces:
        if stop.wait(interval_s):
            return
        try:
            sock.sendall(piece)
        except OSError:
            return


def _answer(sock: socket.socket) -> tuple[int, dict]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read())


def _let_go(sock: socket.socket, within_s: float) -> bool:
    """True once the server has closed the connection (end of stream, or a reset)."""
    sock.settimeout(within_s)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_a_client_trickling_an_upload_is_cut_off_at_the_upload_deadline_and_nothing_is_kept(deadline_stack):
    """One byte a second never trips the per-read timeout (3 s); the overall deadline still ends it."""
    stack = deadline_stack
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=UPLOAD_TIMEOUT_S + 15)
    stop = threading.Event()
    try:
        sock.sendall(_upload_head(stack, 100_000) + b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
                     b"filename=\"a.zip\"\r\n\r\nPK")
        started = time.monotonic()
        threading.Thread(target=_trickle, args=(sock, iter(lambda: b"\0", None), 1.0, stop), daemon=True).start()
        status, body = _answer(sock)
        answered_after = time.monotonic() - started
        assert _let_go(sock, within_s=15), "the server kept reading the trickle after its 408"
    finally:
        stop.set()
        sock.close()
    assert status == 408 and body["error"]["code"] == "upload_too_slow", body
    assert f"{UPLOAD_TIMEOUT_S:g} s" in body["error"]["message"]
    # upload_too_slow names the deadline as the cause; without it the trickle would run for a day
    assert answered_after < UPLOAD_TIMEOUT_S + 15, answered_after
    assert os.listdir(stack.data_dir / "uploads") == []
    assert os.listdir(stack.data_dir / "jobs") == []
    assert stack.client.jobs()["total"] == 0


def test_a_slow_upload_that_arrives_within_the_upload_deadline_is_accepted(deadline_stack, tmp_path):
    stack = deadline_stack
    project = zip_entries(tmp_path / "slow.zip", {"code.py": "pass"}).read_bytes()
    body = _multipart(project)
    step = len(body) // 4 + 1
    pieces = [body[i:i + step] for i in range(0, len(body), step)]
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=UPLOAD_TIMEOUT_S + 15)
    try:
        sock.sendall(_upload_head(stack, len(body)))
        _trickle(sock, pieces, UPLOAD_TIMEOUT_S / (len(pieces) + 2), threading.Event())
        status, job = _answer(sock)
    finally:
        sock.close()
    assert status == 201, job
    assert job["state"] == "queued" and job["upload_size"] == len(project)
