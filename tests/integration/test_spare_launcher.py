"""process_unit.launcher against the machine's real cgroups and job uids (the tests run as root):
the launcher kept ready for the next job waits in its own box and becomes the job's process."""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import pytest

from nias.settings import load_settings
from process_unit.isolation import Isolation, cgroup_name
from process_unit.launcher import SpareLauncher
from process_unit.sandbox import Sandbox


@pytest.fixture
def spare(tmp_path):
    settings = load_settings({}, unit_name=f"spare-{uuid.uuid4().hex[:8]}", data_dir=tmp_path / "data")
    sandbox = Sandbox(settings)
    isolation = Isolation.for_unit(settings, sandbox)
    assert isolation.root is not None, f"no cgroup for {cgroup_name(settings)}: these tests need root and cgroups"
    spare = SpareLauncher(isolation, sandbox)
    yield spare
    spare.close()
    isolation.root.remove()


def ready(spare: SpareLauncher) -> None:
    """Ask for a launcher from a thread that ends at once, as a job's thread does."""
    asker = threading.Thread(target=spare.prepare)
    asker.start()
    asker.join()


def test_the_launcher_becomes_the_jobs_process_in_its_own_cgroup_and_uid(spare, tmp_path):
    ready(spare)
    launcher = spare.take(spare.sandbox.limits)
    assert launcher is not None
    waiting_pid = launcher.process.pid
    code = "import os; print(os.getuid()); print(open('/proc/self/cgroup').read())"
    process = launcher.launch(["/usr/bin/python3", "-c", code], tmp_path, {"PATH": "/usr/bin"}, spare.sandbox.limits)
    out, err = process.communicate(timeout=30)
    launcher.box.close()
    assert process.returncode == 0, err
    uid, cgroups = out.decode().split("\n", 1)
    assert process.pid == waiting_pid
    assert int(uid) == launcher.box.uid and launcher.box.uid != 0
    assert f"/{launcher.box.name}" in cgroups


def test_a_launcher_outlives_the_thread_that_asked_for_it(spare):
    ready(spare)
    time.sleep(0.5)  # a parent-death signal tied to the asking thread would have killed it by now
    launcher = spare.take(spare.sandbox.limits)
    assert launcher is not None and launcher.alive()
    launcher.discard()


def test_a_job_with_tighter_limits_than_the_admins_does_not_take_the_launcher(spare):
    ready(spare)
    tighter = dataclasses.replace(spare.sandbox.limits, memory_mb=spare.sandbox.limits.memory_mb // 2)
    assert spare.take(tighter) is None
    launcher = spare.take(spare.sandbox.limits)
    assert launcher is not None
    launcher.discard()


def test_closing_stops_the_ready_launcher_and_removes_its_box(spare):
    ready(spare)  # and not taken: it waits until the close
    with spare._lock:
        spare._lock.wait_for(lambda: spare._ready is not None, 10)
        launcher = spare._ready
    assert launcher is not None
    spare.close()
    assert launcher.process.returncode is not None  # ended and reaped
    assert all(not (folder / launcher.box.name).exists() for folder in spare.isolation.root.folders.values())


def test_a_launched_job_outlives_the_close_of_the_spare_launcher(spare, tmp_path):
    """A unit stopping gracefully closes its spare while its last job runs to its end."""
    ready(spare)
    launcher = spare.take(spare.sandbox.limits)
    assert launcher is not None
    process = launcher.launch(["/usr/bin/python3", "-c", "import time; time.sleep(1); print('done')"], tmp_path,
                              {"PATH": "/usr/bin"}, spare.sandbox.limits)
    spare.close()
    out, _err = process.communicate(timeout=30)
    launcher.box.close()
    assert (process.returncode, out) == (0, b"done\n")
