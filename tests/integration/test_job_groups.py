"""Real cgroups (this host: v1, as root) and real job uids: what a job leaves behind ends with it.

The job of these tests double-forks a daemon that calls setsid(), leaving the job's process
group, and keeps appending to a file: only the job's cgroup still reaches it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from nias.errors import ConfigurationError
from nias.settings import load_settings
from process_unit.cgroups import CgroupRoot, JobGroup, JobGroupV2
from process_unit.job_users import JobUsers, NoFreeJobUser, available

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20
SYSTEM_PYTHON = "/usr/bin/python3"  # a non-root user cannot reach the venv's interpreter under /root
NOBODY = 65534

DAEMON = textwrap.dedent("""
    import os, sys, time
    ticks, pid_file = sys.argv[1], sys.argv[2]
    if os.fork():
        os._exit(0)            # the job's own process ends at once
    os.setsid()                # a session, so a process group, of its own
    if os.fork():
        os._exit(0)
    with open(pid_file + ".tmp", "w") as handle:
        handle.write(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)
    while True:
        with open(ticks, "a") as handle:
            handle.write("x")
        time.sleep(0.02)
""")


def wait_for(condition: Callable[[], object], timeout_s: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def exists(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def grows(path: Path, within_s: float = 5.0) -> bool:
    before = size(path)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if size(path) > before:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def unit_root() -> Iterator[CgroupRoot]:
    root = CgroupRoot.open(f"test-{uuid.uuid4().hex[:10]}")
    yield root
    root.clean_stale()
    assert root.remove()


class Daemon:
    def __init__(self, tmp_path: Path, group: JobGroup):
        self.ticks = tmp_path / "ticks"
        pid_file = tmp_path / "daemon.pid"
        job = subprocess.Popen([sys.executable, "-c", DAEMON, str(self.ticks), str(pid_file)],
                               start_new_session=True, preexec_fn=group.enter)
        assert job.wait(timeout=10) == 0
        self.job_pgid = job.pid
        wait_for(pid_file.exists, what="the daemon's pid")
        self.pid = int(pid_file.read_text())
        wait_for(lambda: size(self.ticks) > 0, what="the daemon's first write")


@pytest.fixture
def daemon(tmp_path: Path, unit_root: CgroupRoot) -> Iterator[tuple[Daemon, JobGroup]]:
    group = unit_root.create("job-1")
    started = Daemon(tmp_path, group)
    yield started, group
    if exists(started.pid):
        os.kill(started.pid, signal.SIGKILL)


def test_the_daemon_has_left_the_jobs_process_group_but_not_its_cgroup(daemon):
    started, group = daemon
    assert os.getpgid(started.pid) != started.job_pgid
    assert group.pids() == {started.pid}


def test_kill_all_ends_a_daemon_that_left_the_process_group(daemon):
    started, group = daemon
    assert group.kill_all(timeout_s=10)
    assert group.pids() == set()
    wait_for(lambda: not exists(started.pid), what="the daemon's pid to disappear")
    written = size(started.ticks)
    assert not grows(started.ticks, within_s=0.5)
    assert size(started.ticks) == written


def test_freeze_stops_the_daemons_writes_and_thaw_restarts_them(daemon):
    started, group = daemon
    assert group.freeze(timeout_s=5)
    time.sleep(0.1)  # a write already under way when the freeze landed
    assert not grows(started.ticks, within_s=0.5)
    group.thaw()
    assert grows(started.ticks, within_s=5)


def test_sigterm_to_the_group_reaches_the_daemon_that_left_the_process_group(daemon):
    started, group = daemon
    assert group.signal_all(signal.SIGTERM) == 1
    wait_for(lambda: not exists(started.pid), what="the daemon to end on SIGTERM")


def test_a_raised_memory_limit_applies_after_a_lower_one(unit_root):
    group = unit_root.create("job-raised", memory_bytes=64 * MIB)
    group.set_limits(memory_bytes=256 * MIB)
    assert (group.folders["memory"] / "memory.limit_in_bytes").read_text().strip() == str(256 * MIB)


def test_a_frozen_group_can_still_be_killed(daemon):
    started, group = daemon
    assert group.freeze(timeout_s=5)
    assert group.kill_all(timeout_s=10)
    wait_for(lambda: not exists(started.pid), what="the daemon's pid to disappear")


def test_a_stale_group_from_an_earlier_run_is_emptied_and_removed_at_unit_start(daemon, unit_root):
    started, group = daemon
    restarted = CgroupRoot.open(unit_root.unit_name)
    assert restarted.clean_stale() == ["job-1"]
    wait_for(lambda: not exists(started.pid), what="the stale daemon to end")
    assert not any(folder.exists() for folder in group.folders.values())


def test_a_group_a_crash_left_in_only_some_hierarchies_is_removed_from_all(unit_root):
    (unit_root.folders["memory"] / "job-half").mkdir()
    assert unit_root.clean_stale() == ["job-half"]
    assert not any((folder / "job-half").exists() for folder in unit_root.folders.values())


def test_a_64_mib_limit_kills_a_process_touching_200_mib_and_says_it_was_the_oom_killer(unit_root):
    group = unit_root.create("job-oom", memory_bytes=64 * MIB)
    touch = ("import mmap\nm = mmap.mmap(-1, 200 * 2**20, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)\n"
             "for i in range(0, len(m), 4096):\n    m[i] = 1\n")
    job = subprocess.run([sys.executable, "-c", touch], preexec_fn=group.enter, timeout=60)
    assert job.returncode == -signal.SIGKILL
    assert group.oom_killed()


def test_a_job_within_its_memory_limit_is_not_reported_as_oom_killed(unit_root):
    group = unit_root.create("job-small", memory_bytes=64 * MIB)
    job = subprocess.run([sys.executable, "-c", "b = bytearray(8 * 2**20)"], preexec_fn=group.enter, timeout=60)
    assert job.returncode == 0
    assert not group.oom_killed()


def test_the_process_limit_stops_a_job_from_starting_more_processes(unit_root):
    group = unit_root.create("job-forks", pids_max=4)
    forks = textwrap.dedent("""
        import os, time
        made = 0
        try:
            for _ in range(20):
                if os.fork() == 0:
                    os.close(1), os.close(2)  # so that run() need not wait for the children's pipes
                    time.sleep(60)
                    os._exit(0)
                made += 1
        except BlockingIOError:
            pass
        print(made)
    """)
    job = subprocess.run([sys.executable, "-c", forks], preexec_fn=group.enter, capture_output=True, text=True,
                         timeout=60)
    assert int(job.stdout) == 3  # the job itself plus three children
    assert group.kill_all(timeout_s=10)


def test_a_process_added_after_it_started_is_killed_with_the_group(unit_root):
    group = unit_root.create("job-added")
    sleeper = subprocess.Popen(["sleep", "60"])
    group.add(sleeper.pid)
    assert group.pids() == {sleeper.pid}
    assert group.kill_all(timeout_s=10)
    assert sleeper.wait(timeout=10) == -signal.SIGKILL


@pytest.fixture
def unified_daemon(tmp_path: Path) -> Iterator[tuple[Daemon, JobGroupV2]]:
    """The daemon in a group of this host's cgroup2 mount: it offers no controllers, but freezing
    and killing are the core of cgroup v2 and need none."""
    mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    point = next(Path(fields[4]) for fields in mounts if fields[fields.index("-") + 1] == "cgroup2")
    group = JobGroupV2("job-v2", {"unified": point / f"nias-test-{uuid.uuid4().hex[:10]}"})
    group.folder.mkdir()
    started = Daemon(tmp_path, group)
    yield started, group
    group.kill_all(timeout_s=10)
    assert group.remove()


def test_on_cgroup_v2_freeze_stops_the_daemon_and_thaw_restarts_it(unified_daemon):
    started, group = unified_daemon
    assert group.pids() == {started.pid}
    assert group.freeze(timeout_s=5)
    time.sleep(0.1)
    assert not grows(started.ticks, within_s=0.5)
    group.thaw()
    assert grows(started.ticks, within_s=5)


def test_on_cgroup_v2_kill_all_ends_the_daemon(unified_daemon):
    started, group = unified_daemon
    assert group.kill_all(timeout_s=10)
    wait_for(lambda: not exists(started.pid), what="the daemon's pid to disappear")
    assert not grows(started.ticks, within_s=0.5)


def run_as_nobody(code: str) -> str:
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'process-unit'}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([SYSTEM_PYTHON, "-c", code], user=NOBODY, group=NOBODY, extra_groups=[], env=env,
                          cwd="/", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_cgroups_are_unavailable_to_a_unit_that_is_not_root_and_it_says_so():
    said = run_as_nobody("from process_unit.cgroups import available\nroot, why = available('unit-1')\n"
                         "print(root, why)")
    assert said.startswith("None cannot create cgroups in /sys/fs/cgroup/")
    assert said.endswith("the unit does not run as root")


# -- job users ---------------------------------------------------------------------------------
@pytest.fixture
def uids() -> range:
    """Uids far above any account, a different few for each test."""
    first = 4_000_000_000 + uuid.uuid4().int % 100_000_000
    return range(first, first + 3)


def test_held_job_users_never_share_a_uid_and_a_released_one_is_given_again(tmp_path, uids):
    users = JobUsers(uids, tmp_path / "locks")
    held = [users.allocate(f"job-{n}") for n in range(3)]
    assert sorted(user.uid for user in held) == list(uids)
    with pytest.raises(NoFreeJobUser):
        users.allocate("one too many")
    held[1].release()
    assert users.allocate("job-3").uid == held[1].uid


def test_a_second_unit_on_the_host_cannot_take_a_uid_this_unit_holds(tmp_path, uids):
    mine = JobUsers(uids, tmp_path / "locks")
    other = JobUsers(uids, tmp_path / "locks")
    held = {mine.allocate("a").uid, other.allocate("b").uid, mine.allocate("c").uid}
    assert held == set(uids)


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from process_unit.job_users import JobUsers
    user = JobUsers(range(int(sys.argv[1]), int(sys.argv[1]) + 1), Path(sys.argv[2])).allocate("holder")
    print(user.uid, flush=True)
    time.sleep(600)
""")


def test_a_uid_held_by_a_unit_that_died_is_free_again(tmp_path, uids):
    one = range(uids.start, uids.start + 1)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(one.start), str(tmp_path / "locks")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert int(holder.stdout.readline()) == one.start
        with pytest.raises(NoFreeJobUser):
            JobUsers(one, tmp_path / "locks").allocate("while the holder lives")
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert JobUsers(one, tmp_path / "locks").allocate("after it died").uid == one.start


def test_a_uid_that_still_owns_a_process_is_passed_over(tmp_path, uids):
    leftover = subprocess.Popen(["sleep", "60"], user=uids.start, group=uids.start, extra_groups=[])
    try:
        wait_for(lambda: os.stat(f"/proc/{leftover.pid}").st_uid == uids.start, what="the switch of user")
        assert JobUsers(uids, tmp_path / "locks").allocate("next job").uid == uids.start + 1
    finally:
        leftover.kill()
        leftover.wait(timeout=10)


def test_a_lock_folder_others_may_write_is_refused(tmp_path, uids):
    (tmp_path / "locks").mkdir(mode=0o777)
    os.chmod(tmp_path / "locks", 0o777)
    users, reason = available(load_settings({}), tmp_path / "locks")
    assert users is None
    assert "only it may write" in reason


def test_a_root_unit_gets_job_users_from_its_configured_range(tmp_path, uids):
    settings = load_settings({"NIAS_JOB_UID_RANGE": f"{uids.start}-{uids.stop - 1}"})
    users, reason = available(settings, tmp_path / "locks")
    assert reason == "" and users is not None
    assert users.allocate("job").uid in uids


@pytest.mark.parametrize("text", ["61000", "61999-61000", "0-10", "a-b"])
def test_a_malformed_uid_range_fails_naming_its_variable(tmp_path, text):
    with pytest.raises(ConfigurationError, match="NIAS_JOB_UID_RANGE"):
        available(load_settings({"NIAS_JOB_UID_RANGE": text}), tmp_path / "locks")


def test_a_unit_that_is_not_root_gets_no_job_users_and_says_why():
    said = run_as_nobody("from nias.settings import load_settings\nfrom process_unit.job_users import available\n"
                         "users, why = available(load_settings({'NIAS_DATA_DIR': '/tmp'}))\nprint(users, why)")
    assert said == "None the unit does not run as root, so it cannot run jobs as other users"


def _throttled(group: JobGroup) -> int:
    stat = (group.folders["cpu"] / "cpu.stat").read_text() if "cpu" in group.folders else \
        (group.folders["unified"] / "cpu.stat").read_text()
    return int(dict(line.split() for line in stat.splitlines())["nr_throttled"])


def test_a_cpu_quota_throttles_every_process_of_the_group_and_none_without_it(unit_root):
    spin = "import time\nend = time.time() + 1.5\nwhile time.time() < end:\n    pass\n"
    limited = unit_root.create("limited", cpus=0.25)
    assert (limited.folders["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "25000"
    free = unit_root.create("free")
    for group in (limited, free):
        job = subprocess.Popen([sys.executable, "-c", spin], preexec_fn=group.enter)
        assert job.wait(timeout=30) == 0
    assert _throttled(limited) > 0
    assert _throttled(free) == 0
    for group in (limited, free):
        group.remove()
