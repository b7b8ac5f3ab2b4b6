"""`process_unit.environments`: requirement normalisation, cache keys, and the uv-built cache."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from nias.errors import BadUpload, ExecutionFailed
from process_unit.environments import (
    READY_MARKER,
    EnvironmentCache,
    environment_key,
    interpreter_identity,
)
from nias.requirements import normalise_requirements
from tests.support.wheels import probe_wheel as _wheel

UV = str(Path(sys.executable).with_name("uv"))  # the uv installed in the project venv
PYTHON = "/usr/bin/python3"
MISSING_PACKAGE = "this-package-does-not-exist-nias"


class Log(list):
    """Collects the lines a build reports, from any thread."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.append(line)

    def builds(self) -> int:
        return sum(line.startswith("Preparing a Python environment") for line in self)


@pytest.fixture
def cache(tmp_path) -> EnvironmentCache:
    return EnvironmentCache(tmp_path / "envs", UV, PYTHON)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".build-"))


# --- normalise_requirements ------------------------------------------------------------------


def test_comment_lines_and_blank_lines_do_not_count():
    text = "# pinned for the paper\n\nnumpy==1.26.4\n   \n  # indented comment\npandas\n"
    assert normalise_requirements(text) == ["numpy==1.26.4", "pandas"]


def test_an_inline_comment_is_dropped():
    assert normalise_requirements("scipy>=1.10  # for the filters\n") == ["scipy>=1.10"]


def test_an_inline_comment_after_a_tab_is_dropped():
    assert normalise_requirements("scipy>=1.10\t# for the filters\n") == ["scipy>=1.10"]


def test_runs_of_whitespace_fold_to_one_space_and_ends_are_trimmed():
    text = "  requests [security]   >= 2.31 ;  python_version >= '3.8'  \n"
    assert normalise_requirements(text) == ["requests [security] >= 2.31 ; python_version >= '3.8'"]


def test_the_order_of_lines_and_repeats_do_not_matter():
    first = normalise_requirements("pandas\nnumpy==1.26.4\n")
    second = normalise_requirements("numpy==1.26.4\r\n\r\npandas\nnumpy==1.26.4\n")
    assert first == second == ["numpy==1.26.4", "pandas"]


def test_an_empty_file_means_no_requirements():
    assert normalise_requirements("") == []
    assert normalise_requirements("# nothing yet\n\n") == []


# --- environment_key and interpreter_identity ----------------------------------------------


def test_the_key_is_stable_for_the_same_inputs():
    identity = interpreter_identity(PYTHON)
    assert environment_key(["numpy"], identity) == environment_key(["numpy"], identity)
    assert len(environment_key([], identity)) == 32


def test_the_key_changes_with_the_requirements():
    identity = interpreter_identity(PYTHON)
    keys = {environment_key(reqs, identity) for reqs in ([], ["numpy"], ["numpy==1.26.4"], ["numpy", "pandas"])}
    assert len(keys) == 4


def test_equivalent_requirement_files_give_the_same_key():
    identity = interpreter_identity(PYTHON)
    first = environment_key(normalise_requirements("pandas\nnumpy  # fast arrays\n"), identity)
    second = environment_key(normalise_requirements("# deps\nnumpy\n\npandas\n"), identity)
    assert first == second


def test_the_key_changes_with_the_interpreter_identity():
    assert environment_key(["numpy"], "/usr/bin/python3.11:100:1") != environment_key(["numpy"], "/usr/bin/python3.12:100:1")
    assert environment_key([], "/usr/bin/python3:100:1") != environment_key([], "/usr/bin/python3:100:2")


def test_an_interpreter_is_identified_by_its_real_path_size_and_time(tmp_path):
    interpreter = tmp_path / "python3"
    interpreter.write_bytes(b"\x7fELF fake interpreter")
    link = tmp_path / "python"
    link.symlink_to(interpreter)
    before = interpreter_identity(str(interpreter))
    assert interpreter_identity(str(link)) == before
    assert before.startswith(str(interpreter.resolve()))
    os.utime(interpreter, (1_000_000_000, 1_000_000_000))
    assert interpreter_identity(str(interpreter)) != before


# --- EnvironmentCache with the real uv -------------------------------------------------------


def test_an_empty_environment_is_built_marked_ready_and_runs_python(cache):
    log = Log()
    env = cache.prepare(None, log)
    assert env.cached is False
    assert env.path.parent == cache.root and env.path.name.startswith(f"{env.key}@")  # a generation
    assert (cache.root / env.key).resolve() == env.path  # the key links to the newest one
    assert (env.path / READY_MARKER).is_file()
    assert log.builds() == 1
    ran = subprocess.run([str(env.python), "-c", "import sys, nias_job; print(sys.prefix)"],
                         capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0, ran.stderr
    assert Path(ran.stdout.strip()).resolve() == env.path.resolve()
    assert leftovers(cache.root) == []


def test_the_second_prepare_finds_the_environment_cached(cache):
    first = cache.prepare(None, Log())
    log = Log()
    second = cache.prepare(None, log)
    assert second.cached is True
    assert (second.path, second.key) == (first.path, first.key)
    assert log.builds() == 0


def test_a_missing_requirements_file_and_a_comment_only_file_share_one_environment(cache, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing needed yet\n")
    first = cache.prepare(tmp_path / "absent.txt", Log())
    second = cache.prepare(requirements, Log())
    assert second.cached is True and second.key == first.key


def test_two_threads_preparing_the_same_key_build_it_once(cache):
    barrier = threading.Barrier(2)
    log = Log()
    results: list = []
    errors: list = []

    def prepare() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(cache.prepare(None, log))
        except Exception as exc:  # reported below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(env.cached for env in results) == [False, True]
    assert len({env.path for env in results}) == 1
    assert log.builds() == 1
    assert leftovers(cache.root) == []
    assert sorted(p.name for p in cache.root.iterdir() if not p.name.startswith(".") and not p.name.endswith(".lock")) \
        == sorted([results[0].key, results[0].path.name])


def test_a_leftover_folder_without_the_ready_marker_is_rebuilt(cache):
    key = cache.prepare(None, Log()).key
    target = cache.root / key
    target.unlink()  # as an older unit left it: a folder under the key itself, not a link
    target.mkdir()
    (target / "half-installed.txt").write_text("interrupted build")
    log = Log()
    env = cache.prepare(None, log)
    assert env.cached is False and log.builds() == 1
    assert (target / READY_MARKER).is_file()
    assert not (target / "half-installed.txt").exists()


def test_a_requirement_that_cannot_be_installed_fails_naming_it_and_leaves_nothing_behind(cache, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{MISSING_PACKAGE}==0.0.1\n")
    log = Log()
    with pytest.raises(ExecutionFailed) as caught:
        cache.prepare(requirements, log)
    assert MISSING_PACKAGE in caught.value.message
    assert "could not be installed" in caught.value.message
    assert any(MISSING_PACKAGE in line for line in log)
    assert leftovers(cache.root) == []
    assert [p for p in cache.root.iterdir() if p.is_dir() and not p.name.startswith(".")] == []


def test_an_environment_tool_that_cannot_start_fails_as_execution_failed(tmp_path):
    cache = EnvironmentCache(tmp_path / "envs", str(tmp_path / "no-such-uv"), PYTHON)
    with pytest.raises(ExecutionFailed) as caught:
        cache.prepare(None, Log())
    assert "could not start" in caught.value.message
    assert leftovers(cache.root) == []


def test_requirements_that_name_a_path_are_refused_before_anything_is_built(cache, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six==1.16.0\n-e ./evil\n")
    log = Log()
    with pytest.raises(BadUpload) as caught:
        cache.prepare(requirements, log)
    assert caught.value.code == "unsafe_requirements" and "line 2" in caught.value.message
    assert log == [] and leftovers(cache.root) == []


def recording_uv(tmp_path) -> Path:
    """A stand-in for uv that records each command line, then runs the real uv."""
    script = tmp_path / "uv"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'uv-calls.txt'}\nexec {UV} \"$@\"\n")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("build_sdists, builds", [(False, False), (True, True)])
def test_requirements_install_from_wheels_only_unless_the_admin_allows_builds(tmp_path, build_sdists, builds):
    cache = EnvironmentCache(tmp_path / "envs", str(recording_uv(tmp_path)), PYTHON, build_sdists=build_sdists)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six==1.16.0\n")
    cache.prepare(requirements, Log())
    install = next(line for line in (tmp_path / "uv-calls.txt").read_text().splitlines() if " install " in line)
    assert ("--no-build" not in install.split()) is builds


# --- freshness: unpinned environments are built again ------------------------------------------


def _version(env) -> str:
    ran = subprocess.run([str(env.python), "-c", "import niasprobe; print(niasprobe.VERSION)"],
                         capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip()


@pytest.fixture
def index(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "index"
    folder.mkdir()
    _wheel(folder, "1.0")
    monkeypatch.setenv("UV_FIND_LINKS", str(folder))
    monkeypatch.setenv("UV_NO_INDEX", "1")
    return folder


def _requirements(tmp_path, text: str) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    return path


def _age(env, days: float) -> None:
    (env.path / READY_MARKER).write_text(f"{env.built_at - days * 86400:.3f}\n")


def test_an_unpinned_environment_is_reused_until_it_is_too_old_then_built_with_the_newest_version(tmp_path, index):
    cache = EnvironmentCache(tmp_path / "envs", UV, PYTHON, max_age_s=7 * 86400)
    wanted = _requirements(tmp_path, "niasprobe\n")
    first = cache.prepare(wanted, Log())
    assert _version(first) == "1.0"
    _wheel(index, "1.1")  # a newer release appears
    assert cache.prepare(wanted, Log()).cached is True  # young enough: kept, with 1.0
    _age(first, 8)
    log = Log()
    second = cache.prepare(wanted, log)
    assert second.cached is False and _version(second) == "1.1" and second.path != first.path
    assert any("older than 7 days" in line for line in log)
    assert second.built_at > first.built_at - 8 * 86400
    assert _version(first) == "1.0"  # a job that began with the old generation keeps it


def test_a_job_asking_for_the_newest_versions_gets_a_new_build_at_once(tmp_path, index):
    cache = EnvironmentCache(tmp_path / "envs", UV, PYTHON)
    wanted = _requirements(tmp_path, "niasprobe>=1.0\n")
    first = cache.prepare(wanted, Log())
    _wheel(index, "1.1")
    log = Log()
    fresh = cache.prepare(wanted, log, fresh=True)
    assert fresh.cached is False and _version(fresh) == "1.1"
    assert any("newest versions, as the job asked" in line for line in log)
    assert cache.prepare(wanted, Log()).path == fresh.path  # the next job takes the new one
    assert _version(first) == "1.0"


def test_a_pinned_environment_is_kept_however_old(tmp_path, index):
    cache = EnvironmentCache(tmp_path / "envs", UV, PYTHON, max_age_s=86400)
    wanted = _requirements(tmp_path, "niasprobe==1.0\n")
    first = cache.prepare(wanted, Log())
    _wheel(index, "1.1")
    _age(first, 400)
    again = cache.prepare(wanted, Log())
    assert again.cached is True and again.path == first.path and _version(again) == "1.0"


def test_a_replaced_generation_goes_only_once_no_job_that_began_with_it_can_still_run(tmp_path, index):
    cache = EnvironmentCache(tmp_path / "envs", UV, PYTHON, keep_old_s=3600)
    wanted = _requirements(tmp_path, "niasprobe\n")
    first = cache.prepare(wanted, Log())
    cache.touch(first)  # a job begins with it
    cache.prepare(wanted, Log(), fresh=True)
    assert first.path.is_dir()  # that job may still be running
    os.utime(first.path, (first.built_at - 7200, first.built_at - 7200))  # its last job began two hours ago
    third = cache.prepare(wanted, Log(), fresh=True)
    assert not first.path.exists() and third.path.is_dir()
