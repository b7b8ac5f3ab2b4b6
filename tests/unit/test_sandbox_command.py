"""What the sandbox lets a job see and use (the command line and the limits, without running it)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from nias.errors import ConfigurationError
from nias.settings import load_settings
from process_unit import sandbox as sandbox_module
from process_unit.sandbox import Limits, Sandbox, group_members

FAKE_BWRAP = "/opt/bubblewrap/bin/bwrap"  # never run: these tests only read the command line


def sandbox(tmp_path, **overrides) -> Sandbox:
    return Sandbox(load_settings({}, data_dir=tmp_path, **overrides))


def installed(monkeypatch, bwrap: str | None) -> None:
    """Whether `bwrap` is on this unit's PATH, whatever this machine has."""
    which = sandbox_module.shutil.which

    def fake_which(name: str, *args, **kwargs) -> str | None:
        return bwrap if name == "bwrap" else which(name, *args, **kwargs)

    monkeypatch.setattr(sandbox_module.shutil, "which", fake_which)
    if bwrap is not None and not os.path.exists(bwrap):  # a name only: nothing there to probe
        monkeypatch.setattr(sandbox_module.Sandbox, "_check_bwrap_works", lambda self: None)


@pytest.fixture
def with_bwrap(monkeypatch) -> None:
    installed(monkeypatch, FAKE_BWRAP)


def test_a_job_may_ask_for_lower_limits_but_never_higher():
    limits = Limits(memory_mb=1024, cpu_s=60, processes=64, open_files=256, file_mb=100)
    asked = limits.tightened({"memory_mb": 256, "cpu_s": 600, "processes": 0, "unknown": 1, "file_mb": "9"})
    assert asked == Limits(memory_mb=256, cpu_s=60, processes=64, open_files=256, file_mb=100)
    assert limits.tightened(None) == limits


def test_the_bubblewrap_command_shows_only_the_project_the_environment_and_system_files(tmp_path, with_bwrap):
    box = sandbox(tmp_path, sandbox="bwrap")
    project, env = tmp_path / "work" / "project", tmp_path / "envs" / "abc"
    argv = box.command(Path("/usr/bin/python3"), project, env)
    assert argv[0] == FAKE_BWRAP and argv[-2:] == ["/usr/bin/python3", "code.py"]
    assert ["--bind", str(project), str(project)] == argv[argv.index("--bind"):argv.index("--bind") + 3]
    assert ["--ro-bind", str(env), str(env)] == argv[argv.index(str(env)) - 1:argv.index(str(env)) + 2]
    assert "--unshare-all" in argv and "--share-net" not in argv and "--remount-ro" in argv
    data = str(project / "data")  # the job's data sets, read only
    assert ["--ro-bind-try", data, data] == argv[argv.index(data) - 1:argv.index(data) + 2]
    assert str(tmp_path) not in " ".join(a for a in argv if a not in (str(project), str(env), data))


def test_network_is_shared_only_when_the_admin_allows_it(tmp_path, with_bwrap):
    argv = sandbox(tmp_path, sandbox="bwrap", job_network=1).command(Path("/usr/bin/python3"), tmp_path, tmp_path)
    assert "--share-net" in argv and "/etc/resolv.conf" in argv


def test_without_a_sandbox_the_job_runs_python_directly(tmp_path):
    assert sandbox(tmp_path, sandbox="off").command(Path("/env/bin/python"), tmp_path, tmp_path) == [
        "/env/bin/python", "code.py"]


def test_auto_uses_bubblewrap_where_it_is_installed_and_runs_python_directly_where_not(tmp_path, monkeypatch):
    installed(monkeypatch, FAKE_BWRAP)
    assert sandbox(tmp_path, sandbox="auto").command(Path("/env/bin/python"), tmp_path, tmp_path)[0] == FAKE_BWRAP
    installed(monkeypatch, None)
    assert sandbox(tmp_path, sandbox="auto").command(Path("/env/bin/python"), tmp_path, tmp_path) == [
        "/env/bin/python", "code.py"]


def test_requiring_bubblewrap_where_it_is_missing_fails_at_start_naming_it(tmp_path, monkeypatch):
    installed(monkeypatch, None)
    with pytest.raises(ConfigurationError, match=r"NIAS_SANDBOX=bwrap, the default\), but bubblewrap \(bwrap\) is not installed: install it .*NIAS_SANDBOX=off"):
        sandbox(tmp_path, sandbox="bwrap")


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


def test_a_bubblewrap_that_cannot_make_a_sandbox_stops_the_unit_at_start_with_its_reason(tmp_path, monkeypatch):
    folder = Path(tempfile.mkdtemp(prefix="nias-fake-bwrap-"))  # the job's user must reach it: not under tmp_path
    folder.chmod(0o755)
    refusing = folder / "bwrap"
    refusing.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    refusing.chmod(0o755)
    installed(monkeypatch, str(refusing))
    try:
        with pytest.raises(ConfigurationError) as caught:
            sandbox(tmp_path, sandbox="bwrap")
    finally:
        shutil.rmtree(folder)
    assert "setting up uid map: Permission denied" in caught.value.message
    assert "NIAS_SANDBOX=off" in caught.value.message and "seccomp=unconfined" in caught.value.message
