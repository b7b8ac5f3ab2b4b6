"""Parameters, commands and sweeps end to end: what reaches code.py, commands seen on disk at
runtime, every kind of bad parameter, sweeps over a zip and over a command, cancelling a sweep,
its combined download and its metrics."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from nias.client import ApiError, NiasClient
from tests.e2e.test_accounts import new_user, token_for
from tests.support.projects import WELCH, zip_entries

BIN = Path(sys.executable).parent

# Reads its parameters both ways, echoes them, and writes metrics that depend on them.
PARAMS_CODE = """
import json, os, time
params = json.load(open("params.json"))
assert params == json.load(open(os.environ["NIAS_PARAMS_FILE"])), "the two ways disagree"
os.makedirs("output", exist_ok=True)
json.dump(params, open("output/seen.json", "w"))
alpha = params.get("alpha", 0)
score = alpha * (2 if params.get("mode") == "exact" else 1)
json.dump({"score": score, "tenfold": alpha * 10, "note": "not a number"}, open("output/metrics.json", "w"))
time.sleep(params.get("sleep", 0))
if params.get("fail"):
    raise SystemExit(3)
"""



@pytest.fixture(scope="module")
def commands_dir(stack) -> Path:
    """The stack's default NIAS_COMMANDS_DIR (<data>/commands), emptied after the module."""
    folder = stack.data_dir / "commands"
    folder.mkdir(exist_ok=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def add_command(commands_dir: Path, folder: str, declaration: str, code: str = PARAMS_CODE) -> Path:
    path = commands_dir / folder
    path.mkdir(exist_ok=True)
    (path / "code.py").write_text(code)
    (path / "command.toml").write_text(declaration)
    return path


@pytest.fixture(scope="module")
def welch(commands_dir) -> Path:
    return add_command(commands_dir, f"welch-{uuid.uuid4().hex[:6]}", WELCH)


def params_zip(tmp_path: Path) -> Path:
    return zip_entries(tmp_path / "params.zip", {"code.py": PARAMS_CODE})


def result_json(client: NiasClient, job_id: str, tmp_path: Path, member: str = "seen.json"):
    path = client.result(job_id, tmp_path / f"{job_id}.zip")
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(member))



# Parameters of any job


def test_parameters_given_at_submit_reach_code_py_and_are_shown_and_kept_by_rerun(client, tmp_path):
    params = {"alpha": 0.5, "mode": "fast", "tags": ["a", "b"]}
    job = client.submit(params_zip(tmp_path), name="params", params=params)
    assert job["params"] == params
    done = client.wait(job["id"], timeout_s=120)
    assert done["state"] == "succeeded", client.log(job["id"])
    assert result_json(client, job["id"], tmp_path) == params
    listed = next(row for row in client.jobs(per_page=50)["jobs"] if row["id"] == job["id"])
    assert listed["params"] == params
    again = client.wait(client.rerun(job["id"])["id"], timeout_s=120)
    assert again["params"] == params and result_json(client, again["id"], tmp_path) == params
    changed = client.wait(client.rerun(job["id"], params={"alpha": 0.25})["id"], timeout_s=120)
    assert changed["params"] == {"alpha": 0.25} and result_json(client, changed["id"], tmp_path) == {"alpha": 0.25}


def test_a_job_without_parameters_reads_an_empty_object(client, tmp_path):
    job = client.wait(client.submit(params_zip(tmp_path))["id"], timeout_s=120)
    assert job["state"] == "succeeded" and job["params"] == {}
    assert result_json(client, job["id"], tmp_path) == {}


@pytest.mark.parametrize("raw, code", [
    ("not json", "bad_params"), ("[1, 2]", "bad_params"), ('{"bad name": 1}', "bad_params"),
    (json.dumps({"x": "a" * 20000}), "bad_params"),
])
def test_malformed_parameters_of_an_upload_answer_400_and_queue_nothing(stack, tmp_path, raw, code):
    before = stack.client.jobs(per_page=1)["total"]
    with open(params_zip(tmp_path), "rb") as handle:
        answer = stack.http.post(f"{stack.url}/api/jobs", files={"file": ("p.zip", handle)}, data={"params": raw},
                                 timeout=30)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code
    assert stack.client.jobs(per_page=1)["total"] == before


# Commands


def test_a_command_added_at_runtime_is_listed_with_its_parameters(client, welch):
    listing = client.commands()
    command = next(c for c in listing["commands"] if c["name"] == "welch-psd")
    assert command["title"] == "Power spectrum (Welch)"
    assert [p["name"] for p in command["parameters"]] == ["nperseg", "window", "label", "detrend", "alpha"]
    assert command["parameters"][1]["choices"] == ["hann", "hamming", "blackman"]


def test_a_broken_command_is_shown_to_admins_with_its_reason_and_hidden_from_users(stack, commands_dir, welch):
    folder = add_command(commands_dir, "broken-one", '[[parameters]]\nname = "x"\ntype = "complex"\n')
    try:
        admin_view = stack.client.commands()
        broken = next(b for b in admin_view["broken"] if b["folder"] == "broken-one")
        assert "type 'complex'" in broken["reason"]
        assert "welch-psd" in [c["name"] for c in admin_view["commands"]]
        user = NiasClient(stack.url, token=token_for(stack, *new_user(stack)))
        user_view = user.commands()
        assert "broken" not in user_view and "welch-psd" in [c["name"] for c in user_view["commands"]]
        with pytest.raises(ApiError) as caught:
            user.run_command("broken-one", params={})
        assert caught.value.status == 404
    finally:
        shutil.rmtree(folder)
    assert not any(b["folder"] == "broken-one" for b in stack.client.commands()["broken"])


def test_a_command_changed_or_removed_on_disk_is_seen_without_a_restart(client, commands_dir):
    folder = add_command(commands_dir, "changing", '[command]\ntitle = "First"\n')
    assert next(c for c in client.commands()["commands"] if c["name"] == "changing")["title"] == "First"
    (folder / "command.toml").write_text('[command]\ntitle = "Second"\n')
    os.utime(folder / "command.toml", ns=(1, 1))
    assert next(c for c in client.commands()["commands"] if c["name"] == "changing")["title"] == "Second"
    shutil.rmtree(folder)
    assert "changing" not in [c["name"] for c in client.commands()["commands"]]
    with pytest.raises(ApiError) as caught:
        client.run_command("changing")
    assert caught.value.status == 404 and caught.value.code == "command_not_found"


def test_a_job_from_a_command_gets_checked_parameters_and_keeps_what_the_command_was(client, welch, tmp_path):
    job = client.run_command("welch-psd", params={"label": "s3", "nperseg": 4096}, name="psd of s3")
    assert job["command"] == "welch-psd" and len(job["command_digest"]) == 64 and job["name"] == "psd of s3"
    done = client.wait(job["id"], timeout_s=120)
    assert done["state"] == "succeeded", client.log(job["id"])
    expected = {"label": "s3", "nperseg": 4096, "window": "hann", "detrend": False}
    assert result_json(client, job["id"], tmp_path) == expected
    origin = {"name": "welch-psd", "digest": job["command_digest"]}
    assert done["provenance"]["command"] == origin and done["provenance"]["git"] is None
    assert result_json(client, job["id"], tmp_path, ".nias/provenance.json")["command"] == origin
    (welch / "code.py").write_text("raise SystemExit('the command changed')\n")
    try:
        assert next(c for c in client.commands()["commands"] if c["name"] == "welch-psd")["digest"] != \
            job["command_digest"]
        again = client.wait(client.rerun(job["id"])["id"], timeout_s=120)  # the job's own copy runs
        assert again["state"] == "succeeded" and again["command_digest"] == job["command_digest"]
    finally:
        (welch / "code.py").write_text(PARAMS_CODE)


@pytest.mark.parametrize("params, name, problem", [
    ({"label": "s3", "nperseg": "4096"}, "nperseg", "invalid"),
    ({"label": "s3", "nperseg": 4.5}, "nperseg", "invalid"),
    ({"label": "s3", "nperseg": 8}, "nperseg", "invalid"),
    ({"label": "s3", "nperseg": 100000}, "nperseg", "invalid"),
    ({"label": "s3", "window": "kaiser"}, "window", "invalid"),
    ({"label": 7}, "label", "invalid"),
    ({"label": "s3", "detrend": "yes"}, "detrend", "invalid"),
    ({"label": "s3", "alpha": 2.0}, "alpha", "invalid"),
    ({"nperseg": 4096}, "label", "missing"),
    ({"label": "s3", "colour": "red"}, "colour", "unknown"),
])
def test_every_kind_of_bad_command_parameter_answers_400_naming_it_and_queues_nothing(stack, welch, params, name,
                                                                                      problem):
    before = stack.client.jobs(per_page=1)["total"]
    answer = stack.http.post(f"{stack.url}/api/commands/welch-psd/jobs", json={"params": params}, timeout=30)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "bad_param" and error["param"] == name and error["problem"] == problem
    assert repr(name) in error["message"]
    assert stack.client.jobs(per_page=1)["total"] == before


@pytest.mark.parametrize("extra", [{"priority": 12}, {"timeout_s": 0}, {"name": 7}, {"sweep": {"nperseg": []}}])
def test_a_bad_option_of_a_command_job_answers_400_and_queues_nothing(stack, welch, extra):
    before = stack.client.jobs(per_page=1)["total"]
    answer = stack.http.post(f"{stack.url}/api/commands/welch-psd/jobs", json={"params": {"label": "x"}, **extra},
                             timeout=30)
    assert answer.status_code == 400, answer.text
    assert stack.client.jobs(per_page=1)["total"] == before
    assert not list((stack.data_dir / "uploads").glob("command-*"))


def test_a_command_job_takes_its_priority_and_time_limit(client, welch):
    job = client.run_command("welch-psd", params={"label": "x"}, priority=3, timeout_s=60)
    assert job["priority"] == 3 and job["timeout_s"] == 60
    assert client.wait(job["id"], timeout_s=120)["state"] == "succeeded"


def test_nias_run_queues_a_command_job_and_waits_for_it(stack, welch):
    env = {**os.environ, "NIAS_URL": stack.url, "NIAS_TOKEN": stack.admin_token}
    listing = subprocess.run([str(BIN / "nias"), "commands"], env=env, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and "welch-psd  Power spectrum (Welch)" in listing.stdout
    assert "--param nperseg=<int> default=2048 min=64 max=65536  Segment length" in listing.stdout
    run = subprocess.run([str(BIN / "nias"), "run", "welch-psd", "--param", "nperseg=4096", "--param", "label=s3",
                          "--wait"], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1].split()[1] == "succeeded"
    bad = subprocess.run([str(BIN / "nias"), "run", "welch-psd", "--param", "nperseg=8", "--param", "label=s3"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "Parameter 'nperseg' must be at least 64" in bad.stderr


# Sweeps


def test_nias_submit_with_sweep_options_queues_the_product_and_waits_for_every_job(stack, tmp_path):
    env = {**os.environ, "NIAS_URL": stack.url, "NIAS_TOKEN": stack.admin_token}
    run = subprocess.run([str(BIN / "nias"), "submit", str(params_zip(tmp_path)), "--param", "label=x",
                          "--sweep", "alpha=0.1,0.2", "--sweep", "mode=fast,exact", "--wait"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("sweep ") and "4 jobs" in lines[0]
    finished = [line for line in lines if "succeeded" in line]
    assert len(finished) == 4 and all('"score"' in line for line in finished)
    bad = subprocess.run([str(BIN / "nias"), "submit", str(params_zip(tmp_path)), "--param", "no-equals-sign"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "is not name=value" in bad.stderr


def test_a_3x2_sweep_over_a_zip_runs_six_jobs_over_one_stored_upload_with_metrics(stack, client, tmp_path):
    sweep = client.submit(params_zip(tmp_path), name="grid", params={"label": "fixed"},
                          sweep={"alpha": [0.1, 0.2, 0.5], "mode": ["fast", "exact"]})
    assert sweep["total"] == 6 and sweep["varied"] == ["alpha", "mode"]
    assert sorted((j["params"]["alpha"], j["params"]["mode"]) for j in sweep["jobs"]) == sorted(
        (a, m) for a in (0.1, 0.2, 0.5) for m in ("fast", "exact"))
    assert all(j["params"]["label"] == "fixed" and j["sweep_id"] == sweep["id"] for j in sweep["jobs"])
    uploads = {os.stat(stack.data_dir / "jobs" / j["id"] / "upload.zip").st_ino for j in sweep["jobs"]}
    assert len(uploads) == 1  # stored once, linked into each job's folder
    done = client.wait_sweep(sweep["id"], timeout_s=300)
    assert done["counts"]["succeeded"] == 6, done["counts"]
    assert done["metric_names"] == ["score", "tenfold"]  # the text entry is left out
    by_point = {(j["params"]["alpha"], j["params"]["mode"]): j for j in done["jobs"]}
    assert by_point[(0.5, "exact")]["metrics"]["score"] == 1.0
    assert by_point[(0.2, "fast")]["metrics"]["tenfold"] == 2.0
    for job in done["jobs"]:
        assert result_json(client, job["id"], tmp_path) == job["params"]
    only = stack.http.get(f"{stack.url}/api/jobs", params={"sweep": sweep["id"]}, timeout=30).json()
    assert only["total"] == 6
    outside = stack.http.get(f"{stack.url}/api/jobs", params={"sweep": "none", "per_page": 100},
                             timeout=30).json()["jobs"]
    assert not any(job["sweep_id"] for job in outside)
    # retention removing one job's folder leaves the others their upload
    shutil.rmtree(stack.data_dir / "jobs" / done["jobs"][0]["id"])
    again = client.wait(client.rerun(done["jobs"][1]["id"])["id"], timeout_s=120)
    assert again["state"] == "succeeded" and again["sweep_id"] == sweep["id"]


def test_the_combined_download_holds_a_folder_per_job_named_by_its_parameters_and_a_summary(client, tmp_path):
    sweep = client.submit(params_zip(tmp_path), sweep=[{"alpha": 0.1, "mode": "fast"}, {"alpha": 0.3}])
    client.wait_sweep(sweep["id"], timeout_s=300)
    path = client.sweep_results(sweep["id"], tmp_path / "all.zip")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        assert {"sweep.csv", "alpha=0.1_mode=fast/seen.json", "alpha=0.3_mode=null/seen.json"} <= names
        assert json.loads(archive.read("alpha=0.1_mode=fast/seen.json")) == {"alpha": 0.1, "mode": "fast"}
        rows = list(csv.DictReader(io.StringIO(archive.read("sweep.csv").decode())))
    assert [row["folder"] for row in rows] == ["alpha=0.1_mode=fast", "alpha=0.3_mode=null"]
    assert rows[0]["state"] == "succeeded" and float(rows[1]["score"]) == pytest.approx(0.3)


def test_a_sweep_over_a_command_checks_every_point_and_runs_each(client, welch):
    with pytest.raises(ApiError) as caught:
        client.run_command("welch-psd", params={"label": "x"}, sweep={"nperseg": [128, 8]})
    assert caught.value.status == 400 and caught.value.details["param"] == "nperseg"
    assert caught.value.details["job"] == 2
    sweep = client.run_command("welch-psd", params={"label": "x"}, sweep={"nperseg": [128, 256], "window": ["hann",
                                                                                                       "blackman"]})
    assert sweep["total"] == 4 and sweep["command"] == "welch-psd"
    done = client.wait_sweep(sweep["id"], timeout_s=300)
    assert done["counts"]["succeeded"] == 4
    assert {(j["params"]["nperseg"], j["params"]["window"]) for j in done["jobs"]} == {
        (n, w) for n in (128, 256) for w in ("hann", "blackman")}
    assert all(j["params"]["detrend"] is False and j["command_digest"] for j in done["jobs"])


def test_cancelling_a_sweep_ends_every_job_that_had_not_ended_and_failed_jobs_can_be_rerun(stack, client, tmp_path):
    sweep = client.submit(params_zip(tmp_path), sweep=[{"fail": True}] + [{"sleep": 120, "n": n} for n in range(4)])
    failed = sweep["jobs"][0]["id"]
    client.wait(failed, timeout_s=120)
    cancelled = client.cancel_sweep(sweep["id"])
    assert cancelled["cancelled"] == 4
    done = client.wait_sweep(sweep["id"], timeout_s=120)
    assert done["counts"]["cancelled"] == 4 and done["counts"]["failed"] == 1
    answer = stack.http.post(f"{stack.url}/api/sweeps/{sweep['id']}/rerun-failed", timeout=30)
    assert answer.status_code == 201 and len(answer.json()["rerun"]) == 1
    rerun = answer.json()["rerun"][0]
    assert rerun["rerun_of"] == failed and rerun["params"] == {"fail": True}
    assert client.wait(rerun["id"], timeout_s=120)["state"] == "failed"
    shown = client.sweep(sweep["id"])
    assert shown["total"] == 5 and failed not in [j["id"] for j in shown["jobs"]]


def test_a_sweep_larger_than_allowed_or_than_the_queue_quota_is_refused_whole(stack, client, tmp_path):
    before = client.jobs(per_page=1)["total"]
    with pytest.raises(ApiError) as caught:
        client.submit(params_zip(tmp_path), sweep={"a": list(range(40)), "b": list(range(30))})
    assert caught.value.status == 400 and caught.value.code == "sweep_too_large"
    with pytest.raises(ApiError) as caught:
        client.submit(params_zip(tmp_path), sweep={"a": list(range(101))})
    assert caught.value.status == 429 and caught.value.code == "quota_queued"
    assert client.jobs(per_page=1)["total"] == before
    assert not list((stack.data_dir / "uploads").glob("*.part"))


def test_another_users_sweep_is_answered_like_an_unknown_one(stack, client, tmp_path):
    sweep = client.submit(params_zip(tmp_path), sweep={"alpha": [0.1]})
    user = NiasClient(stack.url, token=token_for(stack, *new_user(stack)))
    for call in (lambda: user.sweep(sweep["id"]), lambda: user.cancel_sweep(sweep["id"])):
        with pytest.raises(ApiError) as caught:
            call()
        assert caught.value.status == 404 and caught.value.code == "sweep_not_found"
    client.wait_sweep(sweep["id"], timeout_s=120)
