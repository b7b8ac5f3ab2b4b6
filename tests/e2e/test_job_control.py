"""Job control over the API: pause, resume, cancel, priorities, run next, re-run, progress, dry runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import zipfile
from datetime import datetime

import pytest
import requests

from tests.support.projects import zip_entries, zip_project
from tests.support.stack import LocalStack, healthy, wait_until

COUNTER = (
    "import time\n"
    "for i in range(40):\n"
    "    print('count', i, flush=True)\n"
    "    time.sleep(0.2)\n"
)


@pytest.fixture(scope="module")
def single_unit(tmp_path_factory):
    """One processing unit, so jobs wait in the queue and their order can be observed."""
    # The web graceful stop far above how long a stop takes, so a stream that waited for it would show.
    with LocalStack(tmp_path_factory.mktemp("control"), units=1, NIAS_KILL_GRACE_S="2",
                    NIAS_WEB_GRACEFUL_S="60") as stack:
        yield stack


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def put_state(stack, job_id, state) -> requests.Response:
    return stack.http.put(f"{stack.url}/api/jobs/{job_id}/state", json={"state": state}, timeout=10)


def running(client, job_id, marker=None):
    wait_until(lambda: client.job(job_id)["state"] == "running", timeout_s=60, message="running")
    if marker:
        wait_until(lambda: marker in client.log(job_id), timeout_s=30, message=f"{marker!r} in the log")


def test_pausing_a_counting_script_stops_it_and_resuming_continues_without_counting_the_pause(single_unit, tmp_path):
    stack, client = single_unit, single_unit.client
    job = client.submit(zip_entries(tmp_path / "count.zip", {"code.py": COUNTER}))
    running(client, job["id"], "count 3")
    paused = put_state(stack, job["id"], "paused")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    time.sleep(0.5)  # let the last line written before the stop reach the log
    frozen_log = client.log(job["id"])
    frozen_elapsed = client.job(job["id"])["elapsed_s"]
    time.sleep(2.0)
    assert client.log(job["id"]) == frozen_log
    assert client.job(job["id"])["elapsed_s"] == pytest.approx(frozen_elapsed, abs=0.2)
    assert put_state(stack, job["id"], "running").json()["state"] == "running"
    wait_until(lambda: len(client.log(job["id"])) > len(frozen_log), timeout_s=10, message="counter resumed")
    done = client.wait(job["id"], timeout_s=60)
    assert done["state"] == "succeeded"
    wall = _timestamp(done["finished_at"]) - _timestamp(done["started_at"])
    assert 40 * 0.2 - 1.0 < done["elapsed_s"] < wall - 2.0, (done["elapsed_s"], wall)  # the 2.5 s pause is not in it
    assert "count 39" in client.log(job["id"])


def test_the_same_request_twice_answers_200_and_changes_nothing(single_unit, tmp_path):
    stack, client = single_unit, single_unit.client
    job = client.submit(zip_entries(tmp_path / "count.zip", {"code.py": COUNTER}))
    running(client, job["id"], "count 1")
    first, second = put_state(stack, job["id"], "paused"), put_state(stack, job["id"], "paused")
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["state"] == "paused"
    assert [t["to"] for t in client.history(job["id"])].count("paused") == 1
    assert put_state(stack, job["id"], "cancelled").json()["state"] == "cancelled"
    again = put_state(stack, job["id"], "cancelled")
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    assert [t["to"] for t in client.history(job["id"])].count("cancelled") == 1


def test_forbidden_transitions_answer_409_with_the_state_and_the_allowed_targets(single_unit, tmp_path):
    stack, client = single_unit, single_unit.client
    blocker = client.submit(zip_entries(tmp_path / "block.zip", {"code.py": "import time; time.sleep(3)"}))
    queued = client.submit(zip_entries(tmp_path / "q.zip", {"code.py": "pass"}))
    refused = put_state(stack, queued["id"], "paused")
    assert refused.status_code == 409
    assert refused.json()["error"]["state"] == "queued"
    assert refused.json()["error"]["allowed"] == ["cancelled"]
    unknown = put_state(stack, queued["id"], "exploded")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "bad_request"
    done = client.wait(queued["id"], timeout_s=60)
    assert done["state"] == "succeeded"
    after = put_state(stack, queued["id"], "running")
    assert after.status_code == 409 and after.json()["error"] == {
        "code": "invalid_transition", "message": after.json()["error"]["message"], "state": "succeeded",
        "allowed": []}
    assert client.wait(blocker["id"], timeout_s=60)["state"] == "succeeded"


def _running_processes(marker: str) -> list[str]:
    """Live (not zombie) processes whose command line holds `marker`."""
    found = subprocess.run(["pgrep", "-f", "-r", "R,S,D,T", marker], capture_output=True, text=True)
    return found.stdout.split()


def test_cancelling_a_running_job_ends_its_children_and_keeps_the_partial_output(single_unit, tmp_path):
    client = single_unit.client
    job = client.submit(zip_project("spawner", tmp_path / "spawner.zip"))
    running(client, job["id"], "child")
    assert put_state(single_unit, job["id"], "cancelled").json()["state"] == "cancelled"
    wait_until(lambda: client.job(job["id"])["result_size"], timeout_s=30, message="result recorded")
    path = client.result(job["id"], tmp_path / "r.zip")
    marker = zipfile.ZipFile(path).read("child.txt").decode()
    assert marker == f"nias-spawned-by-{job['id']}"
    wait_until(lambda: not _running_processes(marker), timeout_s=10, message="the job's child ended")
    done = client.job(job["id"])
    assert done["state"] == "cancelled" and done["error"] == "Cancelled on request."


def test_a_cancelled_job_that_handles_sigterm_saves_its_work_within_the_grace_period(single_unit, tmp_path):
    client = single_unit.client
    code = ("import signal, sys, time\n"
            "def save(signum, frame):\n"
            "    time.sleep(0.5)  # some work to save, well within the grace period\n"
            "    open('output/saved.txt', 'w').write('saved on SIGTERM')\n"
            "    sys.exit(3)\n"
            "signal.signal(signal.SIGTERM, save)\n"
            "print('waiting for SIGTERM', flush=True)\n"
            "time.sleep(1000)\n")
    job = client.submit(zip_entries(tmp_path / "saver.zip", {"code.py": code}))
    running(client, job["id"], "waiting for SIGTERM")
    assert put_state(single_unit, job["id"], "cancelled").json()["state"] == "cancelled"
    done = wait_until(lambda: (j := client.job(job["id"]))["exit_code"] is not None and j, timeout_s=30,
                      message="the run's end recorded")
    assert done["exit_code"] == 3, "the job was killed before its SIGTERM handler could finish"
    wait_until(lambda: client.job(job["id"])["result_size"], timeout_s=30, message="result recorded")
    path = client.result(job["id"], tmp_path / "r.zip")
    assert zipfile.ZipFile(path).read("saved.txt") == b"saved on SIGTERM"
    assert client.job(job["id"])["state"] == "cancelled"


def test_cancelling_a_job_that_ignores_sigterm_kills_it_and_its_child_after_the_grace_period(
        single_unit, tmp_path):
    client = single_unit.client
    grace_s = float(single_unit.env["NIAS_KILL_GRACE_S"])
    job = client.submit(zip_project("stubborn", tmp_path / "stubborn.zip"))
    running(client, job["id"], "ignores SIGTERM")
    marker = f"nias-stubborn-child-of-{job['id']}"
    assert _running_processes(marker), "the job's child is not running"
    asked = time.monotonic()
    assert put_state(single_unit, job["id"], "cancelled").json()["state"] == "cancelled"
    done = wait_until(lambda: (j := client.job(job["id"]))["exit_code"] is not None and j,
                      timeout_s=grace_s + 20, message="the run's end recorded")
    took = time.monotonic() - asked
    assert took >= grace_s * 0.8, f"the job ended {took:.1f} s after the cancel, before the {grace_s} s grace"
    assert done["exit_code"] == -9, "the job was not ended by SIGKILL"
    assert done["state"] == "cancelled" and done["error"] == "Cancelled on request."
    wait_until(lambda: not _running_processes(marker), timeout_s=10, message="the job's child ended")
    wait_until(lambda: client.job(job["id"])["result_size"], timeout_s=30, message="result recorded")
    path = client.result(job["id"], tmp_path / "r.zip")
    assert zipfile.ZipFile(path).read("partial.txt").decode() == marker


def test_a_cancelled_queued_job_never_runs(single_unit, tmp_path):
    stack, client = single_unit, single_unit.client
    blocker = client.submit(zip_entries(tmp_path / "block.zip", {"code.py": "import time; time.sleep(2)"}))
    waiting = client.submit(zip_entries(tmp_path / "w.zip", {"code.py": "open('output/ran','w').write('yes')"}))
    assert put_state(stack, waiting["id"], "cancelled").json()["state"] == "cancelled"
    after = client.submit(zip_entries(tmp_path / "after.zip", {"code.py": "pass"}))
    client.wait(blocker["id"], timeout_s=60)
    client.wait(after["id"], timeout_s=60)  # the unit went past the cancelled job's message
    job = client.job(waiting["id"])
    assert job["state"] == "cancelled" and job["attempts"] == 0 and job["started_at"] is None
    assert not (stack.data_dir / "jobs" / waiting["id"] / "runs").exists()


def test_priorities_and_run_next_reorder_the_waiting_jobs_on_a_single_unit(single_unit, tmp_path):
    stack, client = single_unit, single_unit.client
    blocker = client.submit(zip_entries(tmp_path / "block.zip", {"code.py": "import time; time.sleep(3)"}))
    running(client, blocker["id"])
    project = zip_entries(tmp_path / "quick.zip", {"code.py": "pass"})
    low_a = client.submit(project, name="low-a")
    low_b = client.submit(project, name="low-b")
    high = client.submit(project, name="high", priority=5)
    urgent = client.submit(project, name="urgent")
    assert client.job(high["id"])["queue_position"] == 1
    raised = stack.http.put(f"{stack.url}/api/jobs/{low_b['id']}/priority", json={"priority": 9}, timeout=10).json()
    assert raised["priority"] == 9 and raised["queue_position"] == 1
    moved = stack.http.post(f"{stack.url}/api/jobs/{urgent['id']}/run-next", timeout=10).json()
    assert moved["queue_position"] == 1 and moved["run_next"] is True
    assert client.job(low_a["id"])["queue_position"] == 4
    jobs = [client.wait(j["id"], timeout_s=60) for j in (low_a, low_b, high, urgent)]
    order = [j["name"] for j in sorted(jobs, key=lambda j: j["started_at"])]
    assert order == ["urgent", "low-b", "high", "low-a"]


def test_a_cancel_racing_the_start_of_a_job_ends_in_one_consistent_state(single_unit, tmp_path):
    stack, client = single_unit, single_unit.client
    project = zip_entries(tmp_path / "race.zip", {"code.py": "import time; time.sleep(0.3)"})
    jobs = [client.submit(project) for _ in range(6)]
    answers = []
    for index, job in enumerate(jobs):
        time.sleep(0.05 * index)
        answers.append(put_state(stack, job["id"], "cancelled"))
    for job, answer in zip(jobs, answers):
        final = client.wait(job["id"], timeout_s=60)
        history = [t["to"] for t in client.history(job["id"])]
        if answer.status_code == 200:  # the cancel won: whatever had started was stopped
            assert final["state"] == "cancelled" and history.count("cancelled") == 1
            assert history[-1] == "cancelled"
        else:  # the job had already ended: the cancel was refused, nothing changed
            assert answer.status_code == 409 and answer.json()["error"]["state"] == "succeeded"
            assert final["state"] == "succeeded" and "cancelled" not in history
    assert any(answer.status_code == 200 for answer in answers)
    wait_until(lambda: requests.get(f"{stack.unit_url(1)}/api/runs/current", headers=stack.internal_headers,
                                    timeout=5).json()["job_id"] is None, timeout_s=30, message="unit idle")
    assert client.wait(client.submit(project)["id"], timeout_s=60)["state"] == "succeeded"


PROGRESS = (
    "import time\n"
    "import nias_job\n"
    "for step in range(1, 9):\n"
    "    time.sleep(0.4)\n"
    "    print(f'##nias progress {step / 10:.2f} filtering channel {step}', flush=True)\n"
    "nias_job.progress(0.95, 'writing results')\n"
    "time.sleep(0.6)\n"
    "print('done')\n"
)


def test_progress_and_eta_appear_in_the_api_and_progress_lines_stay_out_of_the_log(single_unit, tmp_path):
    client = single_unit.client
    job = client.submit(zip_entries(tmp_path / "progress.zip", {"code.py": PROGRESS}))
    seen = wait_until(lambda: (j := client.job(job["id"]))["progress"] and j["progress"] >= 0.3 and j,
                      timeout_s=60, message="progress reported")
    assert seen["progress_message"].startswith("filtering channel")
    assert 0 < seen["eta_s"] < 30
    assert seen["elapsed_s"] > 0
    done = client.wait(job["id"], timeout_s=60)
    assert done["progress"] == pytest.approx(0.95) and done["progress_message"] == "writing results"
    assert "eta_s" not in done  # absent once there is nothing left to estimate
    log = client.log(job["id"])
    assert "done" in log and "##nias" not in log


def test_paused_time_does_not_count_against_the_time_limit(single_unit, tmp_path):
    stack, client = single_unit, single_unit.client
    limit_s = 4  # the job needs about 2.5 s of run time; it stays paused until its wall time is past 4 s
    code = "import time\nfor i in range(10):\n    print('step', i, flush=True)\n    time.sleep(0.25)\n"
    job = client.submit(zip_entries(tmp_path / "t.zip", {"code.py": code}), timeout_s=limit_s)
    running(client, job["id"], "step 2")
    paused = put_state(stack, job["id"], "paused")
    assert paused.status_code == 200 and paused.json()["state"] == "paused", paused.text
    started = _timestamp(client.job(job["id"])["started_at"])
    wait_until(lambda: time.time() > started + limit_s + 1, timeout_s=limit_s + 10, message="past the time limit")
    during = client.job(job["id"])
    assert during["state"] == "paused", during
    assert "step 9" not in client.log(job["id"]), "the job kept running while it was paused"
    resumed = put_state(stack, job["id"], "running")
    assert resumed.status_code == 200 and resumed.json()["state"] == "running", resumed.text
    done = client.wait(job["id"], timeout_s=60)
    assert done["state"] == "succeeded" and done["exit_code"] == 0, done
    assert "step 9" in client.log(job["id"])
    assert _timestamp(done["finished_at"]) - started > limit_s + 1, "the job ended before its wall time passed the limit"
    assert [t["to"] for t in client.history(job["id"])] == ["queued", "running", "paused", "running", "succeeded"]


def test_a_rerun_makes_a_new_job_from_the_same_upload_linked_to_the_original(single_unit, tmp_path):
    stack, client = single_unit, single_unit.client
    original = client.submit(zip_entries(tmp_path / "r.zip", {"code.py": "import time; time.sleep(1)"}), name="rr")
    early = stack.http.post(f"{stack.url}/api/jobs/{original['id']}/rerun", timeout=10)
    assert early.status_code == 409 and early.json()["error"]["code"] == "conflict"
    assert early.json()["error"]["state"] in ("queued", "running")
    client.wait(original["id"], timeout_s=60)
    again = stack.http.post(f"{stack.url}/api/jobs/{original['id']}/rerun", timeout=10)
    assert again.status_code == 201
    rerun = again.json()
    assert rerun["id"] != original["id"] and rerun["rerun_of"] == original["id"] and rerun["name"] == "rr"
    assert client.wait(rerun["id"], timeout_s=60)["state"] == "succeeded"
    unknown = stack.http.post(f"{stack.url}/api/jobs/0000000000000000/rerun", timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "job_not_found"


def dry_run(stack, path) -> requests.Response:
    with open(path, "rb") as handle:
        return stack.http.post(f"{stack.url}/api/jobs", params={"dry_run": "true"},
                             files={"file": (path.name, handle, "application/zip")}, timeout=120)


def check_named(report: dict, name: str) -> dict:
    """The one check of a dry-run report called `name`."""
    [check] = [check for check in report["checks"] if check["check"] == name]
    return check


def test_a_dry_run_reports_a_syntax_error_with_file_line_and_message_and_stores_nothing(single_unit, tmp_path):
    stack, client = single_unit, single_unit.client
    before = (client.jobs()["total"], sorted(os.listdir(stack.data_dir / "jobs")))
    path = zip_entries(tmp_path / "syntax.zip", {"proj/code.py": "import helpers\n", "proj/helpers.py":
                                                  "def f(:\n    pass\n"})
    report = dry_run(stack, path)
    assert report.status_code == 200
    body = report.json()
    assert body["ok"] is False
    syntax = check_named(body, "syntax")
    assert syntax["errors"][0]["file"] == "helpers.py" and syntax["errors"][0]["line"] == 1
    assert syntax["errors"][0]["message"]
    assert (client.jobs()["total"], sorted(os.listdir(stack.data_dir / "jobs"))) == before
    assert os.listdir(stack.data_dir / "uploads") == []


def test_a_dry_run_names_a_package_the_index_does_not_have(single_unit, tmp_path):
    path = zip_entries(tmp_path / "req.zip", {"code.py": "pass",
                                              "requirements.txt": "six==1.16.0\nnias-no-such-package-xyz==1.0\n"})
    body = dry_run(single_unit, path).json()
    requirements = check_named(body, "requirements")
    assert body["ok"] is False and requirements["ok"] is False
    assert "nias-no-such-package-xyz" in requirements["message"]
    good = zip_entries(tmp_path / "good.zip", {"code.py": "import six", "requirements.txt": "six==1.16.0\n"})
    body = dry_run(single_unit, good).json()
    assert body["ok"] is True
    assert any(line.startswith("six==1.16.0") for line in check_named(body, "requirements")["resolved"])


def test_the_events_stream_reports_a_jobs_state_changes(single_unit, tmp_path):
    stack, client = single_unit, single_unit.client
    states: list[str] = []
    ready = threading.Event()

    def listen():
        with stack.http.get(f"{stack.url}/api/events", stream=True, timeout=60) as response:
            lines = response.iter_lines(decode_unicode=True)
            if next(lines, None) is not None:  # the stream's first line: it is subscribed to the changes
                ready.set()
            for line in lines:
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    if event["name"] == "sse-probe":
                        states.append(event["state"])
                        if event["state"] == "succeeded":
                            return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10), "the event stream did not open"
    client.submit(zip_entries(tmp_path / "sse.zip", {"code.py": "import time; time.sleep(0.5)"}), name="sse-probe")
    listener.join(60)
    assert not listener.is_alive(), f"the stream never reported the job succeeded; it reported {states}"
    assert "running" in states and states[-1] == "succeeded"


def test_a_stopping_backend_ends_its_event_streams_at_once_and_its_successor_serves_them(single_unit):
    """Last in this module: it restarts the backend."""
    stack = single_unit
    opened, ended = threading.Event(), threading.Event()

    def listen():
        with stack.http.get(f"{stack.url}/api/events", stream=True, timeout=120) as response:
            lines = response.iter_lines()
            if next(lines, None) is not None:  # the first line came from the backend about to stop
                opened.set()
            for _line in lines:
                pass
        ended.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert opened.wait(10), "the event stream did not open"
    stack.kill_service("backend", signal.SIGTERM)
    # Within half the 60 s grace the backend may take: the stream did not wait for it.
    assert ended.wait(30), "the event stream stayed open through the backend's graceful stop"
    wait_until(lambda: healthy(stack.url), timeout_s=60, message="the restarted backend answers")
    with stack.http.get(f"{stack.url}/api/events", stream=True, timeout=30) as response:
        assert response.status_code == 200
        assert next(response.iter_lines(decode_unicode=True)).startswith("retry:")

