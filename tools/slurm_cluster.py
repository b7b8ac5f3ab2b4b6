"""A one-node Slurm cluster on 127.0.0.1 for tests and trials: munged, slurmctld and slurmd.

`python tools/slurm_cluster.py start DIR` writes a minimal `slurm.conf` into DIR, starts the
daemons (munged only if none runs) and waits until the node is idle; it prints the `SLURM_CONF`
to export. `stop DIR` ends the daemons it started there. No systemd is needed: Debian's
`slurm-wlm` and `munge` packages are enough. The daemons run as root (SlurmUser=root), so root
may suspend and resume jobs; no accounting (`sacct` is not set up: outcomes come from
`scontrol show job`, which keeps a finished job for MinJobAge seconds).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

NODE = "localhost"
PARTITION = "nias"
START_TIMEOUT_S = 90
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")

SLURM_CONF = """\
ClusterName=nias-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=2
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=30
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass(frozen=True)
class Cluster:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def environment(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    return max(total_kb // 1024 - 512, 256)


def write_conf(root: Path) -> Cluster:
    root.mkdir(parents=True, exist_ok=True)
    for folder in ("state", "spool"):
        (root / folder).mkdir(exist_ok=True)
    cluster = Cluster(root)
    cluster.conf.write_text(SLURM_CONF.format(node=NODE, root=root, ctld_port=_free_port(), slurmd_port=_free_port(),
                                              cpus=os.cpu_count() or 1, memory_mb=_memory_mb(), partition=PARTITION))
    return cluster


def ensure_munged() -> None:
    """Start munged as the munge user unless one answers already."""
    if shutil.which("munge") and subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
        return
    MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True, timeout=30)
    deadline = time.monotonic() + 30
    while subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("munged did not start (see /var/log/munge/munged.log)")
        time.sleep(0.2)


def _node_state(cluster: Cluster) -> str:
    done = subprocess.run(["sinfo", "-h", "-n", NODE, "-o", "%T"], capture_output=True, text=True,
                          env={**os.environ, **cluster.environment}, timeout=30)
    return done.stdout.strip() if done.returncode == 0 else ""


def start(root: Path) -> Cluster:
    """Write the configuration, start the daemons and wait until the node takes jobs."""
    stop(root)
    cluster = write_conf(root)
    ensure_munged()
    env = {**os.environ, **cluster.environment}
    subprocess.run(["/usr/sbin/slurmctld", "-f", str(cluster.conf)], check=True, env=env, timeout=60)
    subprocess.run(["/usr/sbin/slurmd", "-f", str(cluster.conf), "-N", NODE], check=True, env=env, timeout=60)
    deadline = time.monotonic() + START_TIMEOUT_S
    while (state := _node_state(cluster)) not in ("idle", "mixed", "allocated"):
        if time.monotonic() > deadline:
            log = (root / "slurmctld.log").read_text(errors="replace")[-2000:] if (root / "slurmctld.log").exists() else ""
            raise RuntimeError(f"the Slurm node is {state or 'unknown'} after {START_TIMEOUT_S} s\n{log}")
        time.sleep(0.5)
    logger.info("Slurm cluster up: SLURM_CONF=%s", cluster.conf)
    return cluster


def _end(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def stop(root: Path) -> None:
    """End the slurmd and slurmctld started in `root` (munged stays: others may use it)."""
    _end(root / "slurmd.pid")
    _end(root / "slurmctld.pid")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("root", type=Path)
    args = parser.parse_args()
    root = args.root.resolve()
    if args.action == "start":
        cluster = start(root)
        sys.stdout.write(f"export SLURM_CONF={cluster.conf}\n")
    else:
        stop(root)


if __name__ == "__main__":
    main()
