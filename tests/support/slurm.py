"""A Slurm unit for tests, started with `make unit` beside a LocalStack, on the one-node test cluster
(tools/slurm_cluster.py); and the Slurm commands tests use to look at the cluster themselves."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.support.stack import ROOT, LocalStack, wait_until
from tools.slurm_cluster import Cluster


def slurm(cluster: Cluster, *args: str) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, env={**os.environ, **cluster.environment},
                          timeout=30)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    return done.stdout


def in_queue(cluster: Cluster, batch_id: str) -> bool:
    """Whether squeue still lists the batch job (pending, running or suspended)."""
    return bool(slurm(cluster, "squeue", "-h", "-j", batch_id, "-o", "%i").strip())


def queue_state(cluster: Cluster, batch_id: str) -> str:
    return slurm(cluster, "squeue", "-h", "-j", batch_id, "-o", "%T").strip()


class SlurmUnit:
    """`make unit` with NIAS_EXECUTOR=slurm, serving the `cluster` pool of `stack`."""

    def __init__(self, stack: LocalStack, cluster: Cluster, work_dir: Path, log: Path, name: str = "hpc-1", **env):
        self.stack, self.cluster, self.name, self.log = stack, cluster, name, log
        self.env = {**{k: v for k, v in stack.env.items() if k not in ("NIAS_PORT", "NIAS_UNIT_BASE_PORT")},
                    **cluster.environment, "NIAS_EXECUTOR": "slurm", "NIAS_UNIT_NAME": name,
                    "NIAS_UNIT_POOLS": "cluster", "NIAS_SLURM_WORK_DIR": str(work_dir),
                    "NIAS_DATA_DIR": str(work_dir / "unit-data"), "NIAS_BACKEND_URL": stack.url,
                    **{key: str(value) for key, value in env.items()}}
        self.process: subprocess.Popen | None = None

    def start(self) -> "SlurmUnit":
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(["make", "--no-print-directory", "-C", str(ROOT), "unit"], env=self.env,
                                            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self.online, timeout_s=90, interval_s=0.5, message=f"Slurm unit {self.name} announcing itself")
        return self

    def online(self) -> dict | None:
        units = self.stack.http.get(f"{self.stack.url}/api/units", timeout=10).json()["units"]
        return next((u for u in units if u["name"] == self.name and u["state"] != "offline"), None)

    def kill(self) -> None:
        """SIGKILL to the unit and its consumer at once, as a crash of the login node's session would."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(60)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]
