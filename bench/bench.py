"""`make bench`: latency figures on a local stack started as `make up` starts it.

Prints: upload-to-result-downloadable time for a trivial job (median and p95 over 50 runs),
the same code run bare with `python code.py`, and the environment time of a job with one
requirement, cold (empty cache) and warm (a repeat job). Then, with a unit started by `make unit`
on a host that shares nothing with the stack (its own network and mount namespaces; needs root):
the trivial job through it, and a 1 GiB upload (its POST, and the job that fetches and unpacks it)
on a local unit and on the remote one. Every unit gets a job's files over HTTP: there is no other path.
"""
from __future__ import annotations

import argparse
import logging
import os
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
from tests.support.stack import LocalStack  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--local-only", action="store_true", help="skip the remote unit and the 1 GiB job")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="nias-bench-", dir="/var/tmp") as folder:
        workdir = Path(folder)
        stack = LocalStack(workdir / "stack", units=2, NIAS_LOG_LEVEL="WARNING", NIAS_POOLS="default,remote",
                           NIAS_MAX_UPLOAD_MB="1100", NIAS_MAX_UNPACKED_MB="2048").start()
        try:
            project = zip_entries(workdir / "trivial.zip", {"code.py": TRIVIAL})
            jobs = time_trivial_jobs(stack, project, args.runs)
            bare = time_bare_runs(load_settings().job_python, args.runs)
            cold, warm = time_environments(stack, workdir)
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
    print(f"environment for one requirement (six==1.16.0): cold {ms(cold)}, warm repeat {ms(warm)}")
    if args.local_only:
        return
    print(f"trivial job through a unit on another host ({args.runs} runs):  "
          f"median {ms(statistics.median(remote))}, p95 {ms(percentile(remote, 0.95))}")
    for where, (post, run) in (("a local unit", gib_local), ("a unit on another host", gib_remote)):
        print(f"1 GiB upload for {where}: POST {post:5.1f} s ({rate(post)}); accepted to succeeded "
              f"(fetch, check, unpack, run) {run:5.1f} s")


if __name__ == "__main__":
    main()
