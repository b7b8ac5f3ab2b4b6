"""Whatever a job leaves behind in `output/` or writes to its pipes, the attempt ends in one final
state with a clear reason, and the next job on the same unit runs. One unit, so "the next job" is
always on the unit that handled the odd one."""
from __future__ import annotations

import signal
import zipfile
from pathlib import Path

import pytest

from nias.client import ApiError
from nias.messages import MAX_ERROR_BYTES
from tests.e2e.conftest import STACK_ENV
from tests.support.projects import own_files, zip_entries
from tests.support.stack import LocalStack, healthy, wait_until

FINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def lone_unit(tmp_path_factory):
    env = {**STACK_ENV, "NIAS_MAX_RESULT_MB": "5", "NIAS_MAX_LOG_MB": "20", "NIAS_JOB_RETRIES": "0",
           "NIAS_LEASE_S": "5"}  # a killed unit's attempt lapses in seconds
    with LocalStack(tmp_path_factory.mktemp("leftovers"), units=1, **env) as stack:
        yield stack


def _run(stack, tmp_path: Path, code: str, name: str = "odd") -> tuple[dict, str]:
    client = stack.client
    job = client.submit(zip_entries(tmp_path / f"{name}.zip", {"code.py": code}), name=name)
    done = client.wait(job["id"], timeout_s=240)
    assert done["state"] in FINAL, done
    return done, client.log(job["id"])


def _result(stack, job: dict, tmp_path: Path) -> dict[str, bytes]:
    path = stack.client.result(job["id"], tmp_path / f"{job['id']}.zip")
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return own_files({name: archive.read(name) for name in archive.namelist()})


def _assert_the_unit_runs_the_next_job(stack, tmp_path: Path) -> None:
    done, _ = _run(stack, tmp_path, "open('output/next.txt', 'w').write('next')\n", name="next")
    assert done["state"] == "succeeded" and done["unit"] == "unit-1", done
    assert _result(stack, done, tmp_path) == {"next.txt": b"next"}


def test_a_file_whose_name_is_not_utf8_is_left_out_with_its_reason_and_the_unit_goes_on(lone_unit, tmp_path):
    done, log = _run(lone_unit, tmp_path, (
        "open(b'output/\\xff.txt', 'wb').write(b'odd')\n"
        "open('output/kept.txt', 'w').write('kept')\n"))
    assert done["state"] == "succeeded", done
    assert _result(lone_unit, done, tmp_path) == {"kept.txt": b"kept"}
    assert "Left out of the result: output/\\xff.txt: its name is not valid UTF-8" in log
    _assert_the_unit_runs_the_next_job(lone_unit, tmp_path)


def test_a_long_name_is_kept_and_a_path_past_the_limit_is_left_out(lone_unit, tmp_path):
    done, log = _run(lone_unit, tmp_path, (
        "import os\n"
        "open('output/' + 'n' * 255, 'w').write('long')\n"
        "deep = 'output/' + '/'.join(['d' * 200] * 6)\n"
        "os.makedirs(deep)\n"
        "open(deep + '/f.txt', 'w').write('deep')\n"))
    assert done["state"] == "succeeded", done
    assert _result(lone_unit, done, tmp_path) == {"n" * 255: b"long"}
    assert "its path is longer than 1024 bytes" in log
    _assert_the_unit_runs_the_next_job(lone_unit, tmp_path)


def test_a_hundred_thousand_small_files_fail_with_the_file_limit_named_and_ten_thousand_come_back(
        lone_unit, tmp_path):
    many = ("import os\n"
            "for folder in range({folders}):\n"
            "    os.makedirs(f'output/{{folder}}')\n"
            "    for number in range(1000):\n"
            "        open(f'output/{{folder}}/{{number}}.txt', 'w').write(str(number))\n")
    done, log = _run(lone_unit, tmp_path, many.format(folders=100))
    assert done["state"] == "failed", done
    assert "more than the result limit of 10000 files" in done["error"] and "10000 files" in log
    assert done["result_size"] is None
    done, _ = _run(lone_unit, tmp_path, many.format(folders=10))
    assert done["state"] == "succeeded", done
    files = _result(lone_unit, done, tmp_path)
    assert len(files) == 10_000 and files["9/999.txt"] == b"999"
    _assert_the_unit_runs_the_next_job(lone_unit, tmp_path)


def test_fifos_sockets_links_and_unreadable_files_end_in_success_with_each_one_named(lone_unit, tmp_path):
    done, log = _run(lone_unit, tmp_path, (
        "import os, socket\n"
        "os.mkfifo('output/pipe')\n"
        "socket.socket(socket.AF_UNIX).bind('output/control.sock')\n"
        "os.symlink('loop-b', 'output/loop-a')\n"
        "os.symlink('loop-a', 'output/loop-b')\n"
        "os.symlink('/etc/passwd', 'output/passwd')\n"
        "open('output/locked.txt', 'w').write('locked')\n"
        "os.chmod('output/locked.txt', 0)\n"))
    assert done["state"] == "succeeded", done
    files = _result(lone_unit, done, tmp_path)
    assert "pipe" not in files and "passwd" not in files and "control.sock" not in files
    for note in ("output/pipe: a named pipe (FIFO)", "output/control.sock: a socket",
                 "output/loop-a: a symbolic link", "output/passwd: a symbolic link"):
        assert f"Left out of the result: {note}" in log, note
    # The unit reads what it can: a mode-000 file comes back readable, or is named as unreadable.
    assert files.get("locked.txt") == b"locked" or "output/locked.txt: could not be opened" in log
    _assert_the_unit_runs_the_next_job(lone_unit, tmp_path)


def test_an_output_folder_that_is_a_link_gives_an_empty_result_and_says_why(lone_unit, tmp_path):
    done, log = _run(lone_unit, tmp_path, (
        "import os, shutil\n"
        "shutil.rmtree('output', ignore_errors=True)\n"
        "os.symlink('/etc', 'output')\n"))
    assert done["state"] == "succeeded", done
    assert _result(lone_unit, done, tmp_path) == {}
    assert "output is a symbolic link, which is not followed: the result is empty" in log
    _assert_the_unit_runs_the_next_job(lone_unit, tmp_path)


def test_a_file_still_growing_while_the_result_is_packed_gives_a_valid_zip(lone_unit, tmp_path):
    done, _ = _run(lone_unit, tmp_path, (
        "import os, time\n"
        "open('output/growing.txt', 'w').write('start\\n')\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        end = time.time() + 20\n"
        "        while time.time() < end:\n"
        "            try:\n"
        "                with open('output/growing.txt', 'a') as handle:\n"
        "                    handle.write('x' * 100)\n"
        "                time.sleep(0.001)\n"
        "            except OSError:\n"
        "                break\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\n"))
    assert done["state"] == "succeeded", (done, _)
    files = _result(lone_unit, done, tmp_path)  # testzip() checks every entry's CRC
    assert files["growing.txt"].startswith(b"start\n")
    _assert_the_unit_runs_the_next_job(lone_unit, tmp_path)


def test_a_result_over_the_size_limit_fails_with_the_limit_named(lone_unit, tmp_path):
    done, log = _run(lone_unit, tmp_path, "open('output/big.bin', 'wb').write(b'x' * (6 * 2**20))\n")
    assert done["state"] == "failed", done
    assert "result limit of 5 MB" in done["error"] and "result limit of 5 MB" in log
    assert done["result_size"] is None
    _assert_the_unit_runs_the_next_job(lone_unit, tmp_path)


def test_one_stderr_line_of_150_mib_fails_the_job_with_a_short_error_and_a_bounded_log(lone_unit, tmp_path):
    service_log_before = lone_unit.log_path.stat().st_size
    done, log = _run(lone_unit, tmp_path, "import sys\nsys.stderr.write('E' * (150 * 2**20))\nsys.exit(1)\n")
    assert done["state"] == "failed", done
    assert done["error"].startswith("code.py exited with code 1.")
    assert len(done["error"].encode()) <= MAX_ERROR_BYTES
    assert 20 * 2**20 - 64 * 1024 <= len(log.encode()) <= 20 * 2**20 + 4096
    assert "The log reached its limit of 20 MB (NIAS_MAX_LOG_MB)" in log
    assert lone_unit.log_path.stat().st_size - service_log_before < 2**20  # no service logged the line
    _assert_the_unit_runs_the_next_job(lone_unit, tmp_path)


def test_a_killed_unit_removes_the_work_folder_of_its_unfinished_attempt_when_it_starts_again(lone_unit, tmp_path):
    client = lone_unit.client
    job = client.submit(zip_entries(tmp_path / "slow.zip", {"code.py": "import time\nprint('started', flush=True)\n"
                                                                      "time.sleep(60)\n"}), name="slow")
    work = lone_unit.data_dir / "work" / "unit-1" / f"{job['id']}-1"
    wait_until(lambda: "started" in client.log(job["id"]), timeout_s=60, message="the job started")
    assert (work / "project" / "code.py").is_file()
    old_pid = lone_unit.kill_service("unit-1", signal.SIGKILL)
    wait_until(lambda: lone_unit.service_pid("unit-1") != old_pid and healthy(lone_unit.unit_url(1)),
               timeout_s=60, message="unit-1 restarted")
    assert not work.exists()
    try:
        client.set_state(job["id"], "cancelled")
    except ApiError as refused:  # the lost attempt (5 s lease, no retries) may have failed the job first
        assert refused.status == 409, refused
    assert client.wait(job["id"], timeout_s=120)["state"] in FINAL
    _assert_the_unit_runs_the_next_job(lone_unit, tmp_path)
