"""A job's timeline: every service marks the hops it sees, and the job keeps them."""
from __future__ import annotations

from datetime import datetime

from nias.client import NiasClient
from nias.timeline import ORDER
from tests.e2e.test_accounts import new_user, token_for
from tests.support.projects import zip_entries

TRIVIAL = {"code.py": "open('output/answer.txt', 'w').write('42')\n"}


def test_a_finished_job_has_every_hop_from_its_upload_to_its_outcome_in_order(client, stack, tmp_path):
    job = client.wait(client.submit(zip_entries(tmp_path / "t.zip", TRIVIAL))["id"], timeout_s=120)
    assert job["state"] == "succeeded"
    timings = stack.http.get(f"{stack.url}/api/jobs/{job['id']}/timings", timeout=10).json()
    assert timings["job_id"] == job["id"] and timings["attempt"] == 1
    assert [row["hop"] for row in timings["hops"]] == [hop.value for hop in ORDER]
    assert timings["hops"][0]["ms"] is None and all(row["ms"] is not None for row in timings["hops"][1:])
    moments = [datetime.fromisoformat(row["at"]) for row in timings["hops"]]
    unit_hops = moments[5:12]  # accepted .. packed: one clock, one thread
    assert unit_hops == sorted(unit_hops)
    assert moments[-1] == max(moments)  # recorded last
    assert timings["total_ms"] > 0


def test_a_queued_job_shows_the_hops_it_has_passed_so_far(client, stack, tmp_path):
    blocker = zip_entries(tmp_path / "b.zip", {"code.py": "import time\ntime.sleep(30)\n"})
    blockers = [client.submit(blocker) for _ in range(2)]
    try:
        waiting = client.submit(zip_entries(tmp_path / "t.zip", TRIVIAL))
        hops = [row["hop"] for row in
                stack.http.get(f"{stack.url}/api/jobs/{waiting['id']}/timings", timeout=10).json()["hops"]]
        assert hops[:2] == ["received", "stored"] and "recorded" not in hops
    finally:
        for job in blockers:
            client.set_state(job["id"], "cancelled")


def test_another_users_job_timings_are_not_shown(client, stack, tmp_path):
    job = client.submit(zip_entries(tmp_path / "t.zip", TRIVIAL))
    email, password = new_user(stack)
    other = NiasClient(stack.url, token=token_for(stack, email, password))
    answer = other.session.get(f"{stack.url}/api/jobs/{job['id']}/timings", timeout=10)
    assert answer.status_code == 404 and answer.json()["error"]["code"]


def test_waiting_until_final_answers_once_the_job_has_ended_not_at_each_state_change(client, stack, tmp_path):
    job = client.submit(zip_entries(tmp_path / "s.zip", {"code.py": "import time\ntime.sleep(1)\n"}))
    answer = stack.http.get(f"{stack.url}/api/jobs/{job['id']}", params={"wait_s": 30, "until": "final"}, timeout=60)
    assert answer.status_code == 200 and answer.json()["state"] == "succeeded"


def test_waiting_until_anything_but_final_is_refused(client, stack, tmp_path):
    job = client.submit(zip_entries(tmp_path / "t.zip", TRIVIAL))
    answer = stack.http.get(f"{stack.url}/api/jobs/{job['id']}", params={"wait_s": 1, "until": "running"}, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_until"
