"""`make bench`: latency figures on a local stack started as `make up` starts it.

Prints: upload-to-result-downloadable time for a trivial job (median and p95 over 50 runs), by
each way a client can wait, beside their floors, and per hop from the timeline the services
record (bench/latency.py); throughput with 8 clients on 2 units; the same code run bare with `python code.py`, and the environment time of a job with one
requirement, cold (empty cache) and warm (a repeat job). Then, with a unit started by `make unit`
on a host that shares nothing with the stack (its own network and mount namespaces; needs root):
the trivial job through it, and a 1 GiB upload (its POST, and the job that fetches and unpacks it)
on a local unit and on the remote one. Every unit gets a job's files over HTTP: there is no other path.
Where Slurm is installed it also starts the one-node test cluster (tools/slurm_cluster.py) and a
Slurm unit, and times the same trivial job through Slurm (median and p95 over `--slurm-runs`).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nias.settings import load_settings  # noqa: E402
from tests.support.projects import zip_entries  # noqa: E402
from tests.support.remote_host import RemoteHost  # noqa: E402
from tests.support.slurm import SlurmUnit  # noqa: E402
from tests.support.stack import LocalStack  # noqa: E402
from tools import slurm_cluster  # noqa: E402
import latency  # noqa: E402  (beside this script)

logger = logging.getLogger("nias.bench")

TRIVIAL = "with open('output/answer.txt', 'w') as handle:\n    handle.write('42')\n"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def time_trivial_jobs(stack: LocalStack, project: Path, runs: int, pool: str | None = None) -> list[float]:
    client = stack.client
    client.wait(client.submit(project, pool=pool)["id"], timeout_s=120)  # warm-up: builds the empty environment
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        job = client.submit(project, pool=pool)
        done = client.wait(job["id"], timeout_s=120)
        response = client.session.get(f"{stack.url}/api/jobs/{job['id']}/result", timeout=30)
        elapsed = time.perf_counter() - started
        if done["state"] != "succeeded" or response.status_code != 200:
            raise SystemExit(f"bench job {job['id']} ended {done['state']}: {done['error']}")
        timings.append(elapsed)
    return timings


def time_bare_runs(python: str, runs: int) -> list[float]:
    timings = []
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "code.py").write_text(TRIVIAL)
        Path(folder, "output").mkdir()
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([python, "code.py"], cwd=folder, check=True)
            timings.append(time.perf_counter() - started)
    return timings


def time_environments(stack: LocalStack, workdir: Path) -> tuple[float, float]:
    project = zip_entries(workdir / "six.zip", {"code.py": "import six", "requirements.txt": "six==1.16.0\n"})
    cold = stack.client.wait(stack.client.submit(project)["id"], timeout_s=300)
    warm = stack.client.wait(stack.client.submit(project)["id"], timeout_s=300)
    if cold["env_cached"] or not warm["env_cached"]:
        raise SystemExit("environment cache did not behave: cold job found a cache or warm job built one")
    return cold["env_seconds"], warm["env_seconds"]


GIB_CODE = "import os\nassert os.path.getsize('data.bin') == 1 << 30\n"


def write_gib_project(path: Path) -> Path:
    """A zip of code.py and 1 GiB of random bytes, stored (nothing to gain by compressing them)."""
    import zipfile
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr("code.py", GIB_CODE)
        with archive.open("data.bin", "w", force_zip64=True) as handle:
            for _ in range(1024):
                handle.write(os.urandom(1 << 20))
    return path


def time_gib_job(stack: LocalStack, project: Path, pool: str | None) -> tuple[float, float]:
    """Seconds for the upload's POST, and from accepted to succeeded (fetch, checks, unpack, run)."""
    started = time.perf_counter()
    job = stack.client.submit(project, pool=pool)
    posted = time.perf_counter()
    done = stack.client.wait(job["id"], timeout_s=900)
    if done["state"] != "succeeded":
        raise SystemExit(f"the 1 GiB job ended {done['state']}: {done['error']}")
    return posted - started, time.perf_counter() - posted


def start_remote_unit(stack: LocalStack, host: RemoteHost, pool: str) -> None:
    env = {"NIAS_AMQP_URL": f"amqp://guest:guest@{host.address}:{host.forward(5672)}/%2F",
           "NIAS_BACKEND_URL": f"http://{host.address}:{host.forward(stack.port)}",
           "NIAS_INTERNAL_TOKEN": stack.env["NIAS_INTERNAL_TOKEN"], "NIAS_QUEUE_PREFIX": stack.prefix,
           "NIAS_UNIT_POOLS": pool, "NIAS_LOG_LEVEL": "WARNING", "NIAS_MAX_UNPACKED_MB": "2048"}
    host.start_unit("remote-1", env, host.home / "unit.log")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        units = stack.http.get(f"{stack.url}/api/units", timeout=10).json()["units"]
        if any(u["name"] == "remote-1" and u["state"] != "offline" for u in units):
            return
        time.sleep(0.5)
    raise SystemExit(f"the remote unit did not start: {(host.home / 'unit.log').read_text()[-2000:]}")


def time_slurm_jobs(stack: LocalStack, project: Path, runs: int) -> list[float]:
    """The trivial job through a Slurm unit on a one-node cluster of its own; [] without Slurm."""
    if not runs or not shutil.which("sbatch") or not Path("/usr/sbin/slurmctld").exists():
        return []
    root = Path(tempfile.mkdtemp(prefix="nias-bench-slurm-", dir="/var/tmp"))
    root.chmod(0o755)
    cluster = slurm_cluster.start(root / "cluster")
    unit = SlurmUnit(stack, cluster, root / "work", root / "unit.log", NIAS_LOG_LEVEL="WARNING")
    try:
        unit.start()
        return time_trivial_jobs(stack, project, runs, pool="cluster")
    finally:
        unit.stop()
        slurm_cluster.stop(root / "cluster")
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--local-only", action="store_true", help="skip the remote unit and the 1 GiB job")
    parser.add_argument("--slurm-runs", type=int, default=10)
    parser.add_argument("--throughput-jobs", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="nias-bench-", dir="/var/tmp") as folder:
        workdir = Path(folder)
        stack = LocalStack(workdir / "stack", units=2, NIAS_LOG_LEVEL="WARNING", NIAS_POOLS="default,remote,cluster",
                           NIAS_MAX_UPLOAD_MB="1100", NIAS_MAX_UNPACKED_MB="2048",
                           NIAS_MAX_UPLOADS_PER_USER="16", NIAS_MAX_QUEUED_PER_USER="1000").start()
        try:
            project = zip_entries(workdir / "trivial.zip", {"code.py": TRIVIAL})
            jobs = time_trivial_jobs(stack, project, args.runs)
            bare = time_bare_runs(load_settings().job_python, args.runs)
            strategies = latency.time_wait_strategies(stack, project, args.runs)
            cli = latency.time_cli_submits(stack, project, max(5, args.runs // 5))
            cli_start = latency.time_python_start(max(5, args.runs // 5))
            loopback = latency.time_loopback_http(200)
            broker = latency.time_broker_round_trip(200)
            hops = latency.hop_breakdown(stack, project, args.runs)
            throughput = latency.time_throughput(stack, project, args.throughput_jobs)
            cold, warm = time_environments(stack, workdir)
            slurm = time_slurm_jobs(stack, project, args.slurm_runs)
            if not args.local_only:
                with RemoteHost(hide=[stack.data_dir, stack.workdir]) as host:
                    start_remote_unit(stack, host, "remote")
                    remote = time_trivial_jobs(stack, project, args.runs, pool="remote")
                    gib = write_gib_project(workdir / "gib.zip")
                    gib_local = time_gib_job(stack, gib, None)
                    gib_remote = time_gib_job(stack, gib, "remote")
        finally:
            stack.stop()
    ms = lambda seconds: f"{seconds * 1000:7.1f} ms"  # noqa: E731
    rate = lambda seconds: f"{1024 / seconds:6.0f} MiB/s"  # noqa: E731
    print(f"trivial job, upload to result downloadable ({args.runs} runs): "
          f"median {ms(statistics.median(jobs))}, p95 {ms(percentile(jobs, 0.95))}")
    print(f"same code run bare with python code.py ({args.runs} runs):       "
          f"median {ms(statistics.median(bare))}, p95 {ms(percentile(bare, 0.95))}")
    for name, timings in strategies.items():
        print(f"trivial job waited for by {name:28s}: {latency.summary(timings)}")
    print(f"trivial job by `nias submit --wait` (a new process)   : {latency.summary(cli)}")
    print(f"  floor: starting Python and importing the CLI         : {latency.summary(cli_start)}")
    print(f"  floor: a loopback HTTP round trip                    : {latency.summary(loopback)}")
    print(f"  floor: a RabbitMQ publish (confirmed) and consume    : {latency.summary(broker)}")
    print(f"where one trivial job's time goes (median over {args.runs}, ms since the hop before):")
    for hop, values in hops.items():
        print(f"  {hop:14s} {statistics.median(values):7.1f} ms" if values else f"  {hop:14s}       -")
    print(f"throughput: {args.throughput_jobs} trivial jobs from 8 clients on 2 units: {throughput:5.1f} jobs/s")
    print(f"environment for one requirement (six==1.16.0): cold {ms(cold)}, warm repeat {ms(warm)}")
    if slurm:
        print(f"trivial job through Slurm (one-node cluster, {len(slurm)} runs):   "
              f"median {ms(statistics.median(slurm))}, p95 {ms(percentile(slurm, 0.95))}")
    else:
        print("trivial job through Slurm: not measured (--slurm-runs 0, or Slurm is not installed here)")
    if args.local_only:
        return
    print(f"trivial job through a unit on another host ({args.runs} runs):  "
          f"median {ms(statistics.median(remote))}, p95 {ms(percentile(remote, 0.95))}")
    for where, (post, run) in (("a local unit", gib_local), ("a unit on another host", gib_remote)):
        print(f"1 GiB upload for {where}: POST {post:5.1f} s ({rate(post)}); accepted to succeeded "
              f"(fetch, check, unpack, run) {run:5.1f} s")


if __name__ == "__main__":
    main()
