"""`process_unit.cgroups` on fake cgroup trees: how hierarchies are found and which files each
version writes. A fake tree is a folder of plain files laid out as the kernel lays out cgroupfs,
with its own `mountinfo` and `cgroup` as /proc/self shows them. (Real cgroups: the integration
test `test_job_groups.py`.)"""
from __future__ import annotations

from pathlib import Path

import pytest

from process_unit.cgroups import CgroupRoot, CgroupsUnavailable, JobGroupV1, JobGroupV2, available

UNIT = "unit-1"
SERVICE = "/system.slice/nias-unit.service"


def fake_proc(tmp_path: Path, mounts: list[str], cgroup: list[str]) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "mountinfo").write_text("\n".join(mounts) + "\n")
    (proc / "cgroup").write_text("\n".join(cgroup) + "\n")
    return proc


def v1_mount(tmp_path: Path, controller: str, number: int, shown: str = "/") -> str:
    return f"{number} 31 0:{number} {shown} {tmp_path}/{controller} rw,relatime - cgroup cgroup rw,{controller}"


def v2_mount(tmp_path: Path, point: str = "cgroup") -> str:
    return f"29 23 0:26 / {tmp_path}/{point} rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate"


@pytest.fixture
def v2_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A pure cgroup v2 host whose unit runs in a systemd service: (fake /proc/self, the service's cgroup)."""
    service = tmp_path / "cgroup" / SERVICE.lstrip("/")
    service.mkdir(parents=True)
    (service / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (service / "cgroup.subtree_control").write_text("")
    return fake_proc(tmp_path, [v2_mount(tmp_path)], [f"0::{SERVICE}"]), service


@pytest.fixture
def v2_group(v2_tree: tuple[Path, Path]) -> JobGroupV2:
    proc, _ = v2_tree
    group = CgroupRoot.open(UNIT, proc).create("job-7-1", memory_bytes=64 * 2**20, pids_max=100)
    for name, content in (("cgroup.procs", ""), ("cgroup.events", "populated 0\nfrozen 0\n"),
                          ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")):
        (group.folder / name).write_text(content)
    assert isinstance(group, JobGroupV2)
    return group


def test_a_pure_v2_host_gets_the_unit_parent_inside_the_units_own_cgroup(v2_tree):
    proc, service = v2_tree
    root = CgroupRoot.open(UNIT, proc)
    assert root.version == 2
    assert root.folders == {"unified": service / "nias" / UNIT}


def test_on_v2_every_level_down_to_the_unit_parent_hands_memory_and_pids_to_its_children(v2_tree):
    proc, service = v2_tree
    CgroupRoot.open(UNIT, proc)
    # cpu too where the level offers it (the fake tree lists controllers at the top level only)
    assert set((service / "cgroup.subtree_control").read_text().split()) == {"+cpu", "+memory", "+pids"}
    for level in (service / "nias", service / "nias" / UNIT):
        assert set((level / "cgroup.subtree_control").read_text().split()) == {"+memory", "+pids"}


def test_on_v2_a_level_that_already_delegates_is_not_written_again(v2_tree):
    proc, service = v2_tree
    (service / "cgroup.subtree_control").write_text("cpu memory pids\n")
    CgroupRoot.open(UNIT, proc)
    assert (service / "cgroup.subtree_control").read_text() == "cpu memory pids\n"


def test_a_v2_group_gets_its_memory_and_process_limits(v2_group):
    assert (v2_group.folder / "memory.max").read_text() == str(64 * 2**20)
    assert (v2_group.folder / "pids.max").read_text() == "100"


def test_a_v2_group_keeps_the_job_out_of_swap_where_the_kernel_offers_it(v2_group):
    (v2_group.folder / "memory.swap.max").write_text("max\n")
    v2_group.set_limits(memory_bytes=2**20)
    assert (v2_group.folder / "memory.swap.max").read_text() == "0"


def test_entering_a_v2_group_writes_zero_meaning_the_calling_process(v2_group):
    v2_group.enter()
    assert (v2_group.folder / "cgroup.procs").read_text() == "0"


def test_adding_a_started_process_writes_its_pid(v2_group):
    v2_group.add(4242)
    assert (v2_group.folder / "cgroup.procs").read_text() == "4242"


def test_the_groups_processes_are_read_from_cgroup_procs(v2_group):
    (v2_group.folder / "cgroup.procs").write_text("12\n345\n")
    assert v2_group.pids() == {12, 345}


def test_freezing_a_v2_group_waits_until_the_kernel_reports_it_frozen(v2_group):
    (v2_group.folder / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    assert v2_group.freeze(timeout_s=1.0) is True
    assert (v2_group.folder / "cgroup.freeze").read_text() == "1"
    v2_group.thaw()
    assert (v2_group.folder / "cgroup.freeze").read_text() == "0"


def test_freezing_gives_up_after_its_timeout_when_the_group_never_freezes(v2_group):
    (v2_group.folder / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    assert v2_group.freeze(timeout_s=0.1) is False


def test_killing_a_v2_group_uses_cgroup_kill_where_the_kernel_has_it(v2_group):
    (v2_group.folder / "cgroup.kill").write_text("")
    assert v2_group.kill_all(timeout_s=1.0) is True
    assert (v2_group.folder / "cgroup.kill").read_text() == "1"
    assert not (v2_group.folder / "cgroup.freeze").exists()


def test_killing_reports_failure_when_processes_stay_past_the_timeout(v2_group):
    (v2_group.folder / "cgroup.kill").write_text("")
    (v2_group.folder / "cgroup.procs").write_text("999999999\n")  # no such process: it never leaves the fake
    assert v2_group.kill_all(timeout_s=0.2) is False


def test_a_v2_group_was_oom_killed_only_when_memory_events_count_a_kill(v2_group):
    assert v2_group.oom_killed() is False
    (v2_group.folder / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert v2_group.oom_killed() is True


def test_a_hybrid_host_uses_the_v1_controllers_not_its_empty_unified_mount(tmp_path):
    mounts = [v1_mount(tmp_path, name, 30 + i) for i, name in enumerate(("memory", "pids", "freezer"))]
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    mounts.append(v2_mount(tmp_path, "unified"))
    for name in ("memory", "pids", "freezer"):
        (tmp_path / name).mkdir()
    proc = fake_proc(tmp_path, mounts, ["8:pids:/", "6:freezer:/", "4:memory:/lab/unit", "0::/"])
    (tmp_path / "memory" / "lab" / "unit").mkdir(parents=True)
    root = CgroupRoot.open(UNIT, proc)
    assert root.version == 1
    assert root.folders == {"memory": tmp_path / "memory" / "lab" / "unit" / "nias" / UNIT,
                            "pids": tmp_path / "pids" / "nias" / UNIT,
                            "freezer": tmp_path / "freezer" / "nias" / UNIT}


def test_a_container_that_sees_only_its_own_v1_cgroup_nests_at_the_mount_point(tmp_path):
    names = ("memory", "pids", "freezer")
    mounts = [v1_mount(tmp_path, name, 30 + i, shown="/docker/abc") for i, name in enumerate(names)]
    proc = fake_proc(tmp_path, mounts, [f"{i}:{name}:/docker/abc" for i, name in enumerate(names)])
    for name in names:
        (tmp_path / name).mkdir()
    root = CgroupRoot.open(UNIT, proc)
    assert root.folders["memory"] == tmp_path / "memory" / "nias" / UNIT


def test_a_v1_group_limits_memory_and_swap_and_processes(tmp_path):
    folders = {name: tmp_path / name for name in ("memory", "pids", "freezer")}
    for folder in folders.values():
        folder.mkdir()
    (folders["memory"] / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    JobGroupV1("job", folders).set_limits(memory_bytes=5 * 2**20, pids_max=8)
    assert (folders["memory"] / "memory.limit_in_bytes").read_text() == str(5 * 2**20)
    assert (folders["memory"] / "memory.memsw.limit_in_bytes").read_text() == str(5 * 2**20)
    assert (folders["pids"] / "pids.max").read_text() == "8"


def test_a_v1_group_enters_every_hierarchy(tmp_path):
    folders = {name: tmp_path / name for name in ("memory", "pids", "freezer")}
    for folder in folders.values():
        folder.mkdir()
        (folder / "cgroup.procs").write_text("")
    JobGroupV1("job", folders).enter()
    assert [(folder / "cgroup.procs").read_text() for folder in folders.values()] == ["0", "0", "0"]


@pytest.mark.parametrize("oom_control, failcnt, killed", [
    ("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", "3", True),
    ("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n", "3", False),  # the limit was hit, reclaim sufficed
    ("oom_kill_disable 0\nunder_oom 0\n", "3", True),  # an old kernel counts only the hits
    ("oom_kill_disable 0\nunder_oom 0\n", "0", False),
])
def test_a_v1_group_reads_oom_kills_from_oom_control_else_the_failure_count(tmp_path, oom_control, failcnt, killed):
    memory = tmp_path / "memory"
    memory.mkdir()
    (memory / "memory.oom_control").write_text(oom_control)
    (memory / "memory.failcnt").write_text(failcnt + "\n")
    assert JobGroupV1("job", {"memory": memory}).oom_killed() is killed


def test_no_cgroup_mount_at_all_is_the_reason_given(tmp_path):
    proc = fake_proc(tmp_path, ["22 1 0:21 / /proc rw - proc proc rw"], ["0::/"])
    root, reason = available(UNIT, proc)
    assert root is None
    assert reason == "no cgroup file system is mounted"


def test_missing_v1_controllers_are_named_in_the_reason(tmp_path):
    (tmp_path / "memory").mkdir()
    proc = fake_proc(tmp_path, [v1_mount(tmp_path, "memory", 30)], ["4:memory:/"])
    root, reason = available(UNIT, proc)
    assert root is None
    assert "pids, freezer are not mounted" in reason


def test_a_v2_mount_without_the_memory_controller_is_not_enough(tmp_path, v2_tree):
    proc, service = v2_tree
    (service / "cgroup.controllers").write_text("cpu io pids\n")
    with pytest.raises(CgroupsUnavailable, match="no cgroup2 mount offers memory and pids"):
        CgroupRoot.open(UNIT, proc)


@pytest.mark.parametrize("name", ["", "..", "a/b"])
def test_a_unit_name_that_is_not_one_folder_name_is_refused(v2_tree, name):
    proc, _ = v2_tree
    root, reason = available(name, proc)
    assert root is None and "cannot name a cgroup" in reason
