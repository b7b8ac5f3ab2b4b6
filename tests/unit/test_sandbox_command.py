"""What the sandbox lets a job see and use (the command line and the limits, without running it)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from nias.errors import ConfigurationError
from nias.settings import load_settings
from process_unit.sandbox import Limits, Sandbox, group_members


def sandbox(tmp_path, **overrides) -> Sandbox:
    return Sandbox(load_settings({}, data_dir=tmp_path, **overrides))


def test_a_job_may_ask_for_lower_limits_but_never_higher():
    limits = Limits(memory_mb=1024, cpu_s=60, processes=64, open_files=256, file_mb=100)
    asked = limits.tightened({"memory_mb": 256, "cpu_s": 600, "processes": 0, "unknown": 1, "file_mb": "9"})
    assert asked == Limits(memory_mb=256, cpu_s=60, processes=64, open_files=256, file_mb=100)
    assert limits.tightened(None) == limits


def test_the_bubblewrap_command_shows_only_the_project_the_environment_and_system_files(tmp_path):
    box = sandbox(tmp_path, sandbox="bwrap")
    project, env = tmp_path / "work" / "project", tmp_path / "envs" / "abc"
    argv = box.command(Path("/usr/bin/python3"), project, env)
    assert argv[0].endswith("bwrap") and argv[-2:] == ["/usr/bin/python3", "code.py"]
    assert ["--bind", str(project), str(project)] == argv[argv.index("--bind"):argv.index("--bind") + 3]
    assert ["--ro-bind", str(env), str(env)] == argv[argv.index(str(env)) - 1:argv.index(str(env)) + 2]
    assert "--unshare-all" in argv and "--share-net" not in argv and "--remount-ro" in argv
    assert str(tmp_path) not in " ".join(a for a in argv if a not in (str(project), str(env)))


def test_network_is_shared_only_when_the_admin_allows_it(tmp_path):
    argv = sandbox(tmp_path, sandbox="bwrap", job_network=1).command(Path("/usr/bin/python3"), tmp_path, tmp_path)
    assert "--share-net" in argv and "/etc/resolv.conf" in argv


def test_without_a_sandbox_the_job_runs_python_directly(tmp_path):
    assert sandbox(tmp_path, sandbox="off").command(Path("/env/bin/python"), tmp_path, tmp_path) == [
        "/env/bin/python", "code.py"]


def test_an_unknown_sandbox_mode_is_refused_with_its_name(tmp_path):
    with pytest.raises(ConfigurationError, match="NIAS_SANDBOX"):
        sandbox(tmp_path, sandbox="docker")


def test_the_members_of_a_jobs_process_group_are_found_and_a_named_command_left_out():
    leader = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(group_members(leader.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        members = group_members(leader.pid)
        assert leader.pid in members and len(members) == 3
        assert group_members(leader.pid, except_command="sleep") == [leader.pid]
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
