"""The job pipeline end to end: upload -> RabbitMQ -> processing unit -> result, over HTTP."""
from __future__ import annotations

import os
import subprocess
import time
import zipfile
from datetime import datetime

import pytest

from nias.client import ApiError
from tests.support.projects import zip_entries, zip_project
from tests.support.stack import wait_until


def _result_members(client, job_id, tmp_path) -> dict[str, bytes]:
    path = client.result(job_id, tmp_path / f"{job_id}.zip")
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_a_good_job_returns_what_code_py_wrote_in_its_result_zip(client, tmp_path):
    job = client.submit(zip_project("hello", tmp_path / "hello.zip"), name="hello")
    assert job["state"] == "queued"
    done = client.wait(job["id"], timeout_s=120)
    assert done["state"] == "succeeded", done
    assert done["exit_code"] == 0 and done["error"] is None
    assert done["unit"] in {"unit-1", "unit-2"}
    assert done["started_at"] and done["finished_at"] and done["result_size"] > 0
    members = _result_members(client, job["id"], tmp_path)
    assert members["result.txt"] == b"42\n"
    assert members["channels.csv"].startswith(b"channel,mean,std")
    assert members["plot.png"].startswith(b"\x89PNG")
    log = client.log(job["id"])
    assert "hello from NIAS" in log and "computing 3 channels" in log


def test_a_project_under_one_top_folder_runs_from_that_folder(client, tmp_path):
    job = client.submit(zip_project("hello", tmp_path / "nested.zip", top_folder="my-analysis"))
    assert client.wait(job["id"], timeout_s=120)["state"] == "succeeded"
    assert _result_members(client, job["id"], tmp_path)["result.txt"] == b"42\n"


def test_a_job_with_requirements_imports_them_and_a_repeat_job_reuses_the_environment(client, tmp_path):
    first = client.wait(client.submit(zip_project("with_requirements", tmp_path / "a.zip"))["id"], timeout_s=300)
    assert first["state"] == "succeeded", client.log(first["id"])
    assert _result_members(client, first["id"], tmp_path)["version.txt"] == b"1.16.0"
    second = client.wait(client.submit(zip_project("with_requirements", tmp_path / "b.zip"))["id"], timeout_s=120)
    assert second["state"] == "succeeded"
    assert second["env_cached"] is True
    assert "six 1.16.0" in client.log(second["id"])


def test_a_raising_code_py_ends_failed_with_its_traceback_in_the_log_and_keeps_partial_output(client, tmp_path):
    job = client.wait(client.submit(zip_project("raises", tmp_path / "raises.zip"))["id"], timeout_s=120)
    assert job["state"] == "failed"
    assert job["exit_code"] == 1
    assert "ValueError: channel 3 has no samples" in job["error"]
    log = client.log(job["id"])
    assert "Traceback (most recent call last)" in log and "filter_channel" in log
    assert _result_members(client, job["id"], tmp_path)["partial.txt"] == b"written before the crash\n"


def test_two_jobs_with_the_same_name_keep_two_results(client, tmp_path):
    one = client.submit(zip_entries(tmp_path / "1.zip", {"code.py": "open('output/n.txt','w').write('one')"}),
                        name="same")
    two = client.submit(zip_entries(tmp_path / "2.zip", {"code.py": "open('output/n.txt','w').write('two')"}),
                        name="same")
    assert one["id"] != two["id"]
    for job, expected in ((one, b"one"), (two, b"two")):
        assert client.wait(job["id"], timeout_s=120)["state"] == "succeeded"
        assert _result_members(client, job["id"], tmp_path)["n.txt"] == expected


def test_a_job_running_three_heartbeat_intervals_runs_exactly_once(client, stack, tmp_path):
    heartbeat = int(stack.env["NIAS_AMQP_HEARTBEAT_S"])
    code = f"import time\nprint('start', flush=True)\ntime.sleep({3 * heartbeat + 1})\nprint('end')\n"
    job = client.wait(client.submit(zip_entries(tmp_path / "long.zip", {"code.py": code}))["id"], timeout_s=120)
    assert job["state"] == "succeeded"
    assert job["attempts"] == 1
    runs = [t for t in client.history(job["id"]) if t["to"] == "running"]
    assert len(runs) == 1
    assert client.log(job["id"]).count("start") == 1
    assert sorted(os.listdir(stack.data_dir / "jobs" / job["id"] / "runs")) == ["1"]


def _running_processes(marker: str) -> list[str]:
    """Live (not zombie) processes whose command line holds `marker`."""
    found = subprocess.run(["pgrep", "-f", "-r", "R,S,D,T", marker], capture_output=True, text=True)
    return found.stdout.split()


def test_a_job_over_its_time_limit_is_killed_with_its_children(client, tmp_path):
    job = client.submit(zip_project("spawner", tmp_path / "spawner.zip"), timeout_s=3)
    done = client.wait(job["id"], timeout_s=120)
    assert done["state"] == "failed"
    assert "time limit of 3 s" in done["error"]
    marker = _result_members(client, job["id"], tmp_path)["child.txt"].decode()
    assert marker == f"nias-spawned-by-{job['id']}"
    wait_until(lambda: not _running_processes(marker), timeout_s=10, message="the job's child ended")


def test_the_log_grows_while_the_job_runs(client, tmp_path):
    code = "import time\nfor i in range(6):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n"
    job = client.submit(zip_entries(tmp_path / "ticks.zip", {"code.py": code}))
    early = wait_until(lambda: "tick 1" in client.log(job["id"]) and client.log(job["id"]), timeout_s=60,
                       message="first ticks in the log")
    assert "tick 5" not in early
    client.wait(job["id"], timeout_s=60)
    full = client.log(job["id"])
    assert "tick 5" in full
    assert client.log(job["id"], offset=len(early.encode())) == full[len(early):]


def test_the_result_is_409_while_the_job_runs_and_404_for_an_unknown_job(client, tmp_path):
    job = client.submit(zip_entries(tmp_path / "slow.zip", {"code.py": "import time; time.sleep(3)"}))
    with pytest.raises(ApiError) as running:
        client.result(job["id"], tmp_path / "r.zip")
    assert running.value.status == 409
    with pytest.raises(ApiError) as unknown:
        client.result("0123456789abcdef", tmp_path / "r.zip")
    assert unknown.value.status == 404 and unknown.value.code == "job_not_found"
    client.wait(job["id"], timeout_s=60)


def test_the_job_list_is_newest_first_paginated_and_filtered_by_state(client, tmp_path):
    earlier = client.submit(zip_entries(tmp_path / "earlier.zip", {"code.py": "pass"}), name="list-earlier")
    ok = client.submit(zip_entries(tmp_path / "ok.zip", {"code.py": "pass"}), name="list-ok")
    bad = client.submit(zip_entries(tmp_path / "bad.zip", {"code.py": "raise SystemExit(3)"}), name="list-bad")
    client.wait(earlier["id"], timeout_s=60)
    client.wait(ok["id"], timeout_s=60)
    assert client.wait(bad["id"], timeout_s=60)["exit_code"] == 3
    page = client.jobs(per_page=2)
    assert [j["id"] for j in page["jobs"]] == [bad["id"], ok["id"]]
    assert page["total"] >= 3 and page["per_page"] == 2
    second = client.jobs(page=2, per_page=2)
    assert second["page"] == 2 and second["total"] == page["total"]
    assert second["jobs"][0]["id"] == earlier["id"]
    newest = client.jobs(per_page=4)["jobs"]
    assert [j["id"] for j in page["jobs"] + second["jobs"]] == [j["id"] for j in newest]
    created = [datetime.fromisoformat(j["created_at"]) for j in newest]
    assert created == sorted(created, reverse=True)
    failed = client.jobs(state="failed", per_page=100)["jobs"]
    assert bad["id"] in {j["id"] for j in failed} and all(j["state"] == "failed" for j in failed)
    with pytest.raises(ApiError) as wrong:
        client.jobs(state="sleeping")
    assert wrong.value.status == 400


def test_every_http_service_answers_its_health_check(stack):
    import requests

    urls = [stack.url, f"http://127.0.0.1:{stack.producer_port}"] + [stack.unit_url(i) for i in (1, 2)]
    for url in urls:
        response = requests.get(f"{url}/healthz", timeout=5)
        assert response.status_code == 200 and response.json()["ok"] is True, url


def test_a_slow_upload_is_not_cut_by_the_web_workers_timeout(stack, tmp_path):
    """The stack runs gunicorn with a 3 s worker timeout; this upload takes about twice that, in steady
    trickles shorter than the 3 s read timeout."""
    body_path = zip_entries(tmp_path / "slow.zip", {"code.py": "pass", "data.bin": os.urandom(64 * 1024)})
    boundary = "niasboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.zip\"\r\n"
            "Content-Type: application/zip\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    payload = body_path.read_bytes()

    def trickle():
        yield head
        for start in range(0, len(payload), len(payload) // 6 + 1):
            time.sleep(1)
            yield payload[start:start + len(payload) // 6 + 1]
        yield tail

    response = stack.http.post(f"{stack.url}/api/jobs", data=trickle(), timeout=60,
                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 201, response.text
