"""A full shared volume or an oversized result fails the job with a clear reason; nothing else breaks."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.projects import zip_entries
from tests.support.stack import LocalStack

VOLUME_MB = 8
RESULT_LIMIT_MB = 3


@pytest.fixture(scope="module")
def small_volume(tmp_path_factory):
    """The shared volume is a tmpfs of 8 MB; the store, work and environments live elsewhere."""
    root = Path(tempfile.mkdtemp(prefix="nias-small-volume-"))
    root.chmod(0o711)
    volume = root / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={VOLUME_MB}m", "tmpfs", str(volume)], check=True)
    stack = LocalStack(root / "stack", units=1, data_dir=volume,
                       DATABASE_URL=f"sqlite:///{root / 'nias.db'}", NIAS_WORK_DIR=str(root / "work"),
                       NIAS_ENV_DIR=str(root / "envs"), NIAS_MAX_RESULT_MB=str(RESULT_LIMIT_MB))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        subprocess.run(["umount", "-l", str(volume)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def writes_random_output(megabytes: float) -> str:
    return f"import os\nopen('output/noise.bin', 'wb').write(os.urandom({int(megabytes * 1024 * 1024)}))\n"


def fill(volume, keep_free_kib: int) -> None:
    """Fill the volume until only about `keep_free_kib` remain."""
    stats = os.statvfs(volume)
    free = stats.f_bavail * stats.f_frsize
    with open(volume / "filler.bin", "wb") as handle:
        try:
            handle.write(b"\0" * max(free - keep_free_kib * 1024, 0))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_result_over_its_size_limit_fails_the_job_with_the_limit_named(small_volume, tmp_path):
    client = small_volume.client
    job = client.submit(zip_entries(tmp_path / "big.zip", {"code.py": writes_random_output(RESULT_LIMIT_MB + 1)}))
    done = client.wait(job["id"], timeout_s=60)
    assert done["state"] == "failed"
    assert f"result limit of {RESULT_LIMIT_MB} MB" in done["error"]
    after = client.wait(client.submit(zip_entries(tmp_path / "ok.zip", {"code.py": "pass"}))["id"], timeout_s=60)
    assert after["state"] == "succeeded"


def test_a_full_volume_fails_the_job_with_a_clear_reason_and_the_next_job_runs(small_volume, tmp_path):
    client, volume = small_volume.client, small_volume.data_dir
    fill(volume, keep_free_kib=512)
    try:
        job = client.submit(zip_entries(tmp_path / "fill.zip", {"code.py": writes_random_output(2)}))
        done = client.wait(job["id"], timeout_s=60)
        assert done["state"] == "failed"
        assert "No space left on device" in done["error"]
        run = volume / "jobs" / job["id"] / "runs" / "1"
        assert run.is_dir(), f"{run} is missing: the attempt wrote nowhere, so no leftover could show"
        assert not list(run.glob("*.part"))
    finally:
        (volume / "filler.bin").unlink()
    after = client.wait(client.submit(zip_entries(tmp_path / "ok.zip", {"code.py": "print('fine')"}))["id"],
                        timeout_s=60)
    assert after["state"] == "succeeded" and "fine" in client.log(after["id"])
