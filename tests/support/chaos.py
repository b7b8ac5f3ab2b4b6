"""A chaos run: many short jobs on a stack while units, consumers, RabbitMQ and the backend die,
and, when asked, a unit on a host that shares nothing with the stack (remote_host.py) is killed
and started again.

Used by `make chaos` (bench/chaos.py, 200 jobs) and, smaller, by `make test`. Every job is then
checked: lost (no final state), duplicated, failed, succeeded, and mismatched (a succeeded job
whose result is not its own recorded run's).

Duplicates are counted from each job's own evidence, not only from what the units log: every run
of a job's code.py that gets to its end writes its job id and a fresh random token into
output/, and prints the token. A watcher reads every run folder's result while the jobs run
(a superseded attempt's folder is removed when the job ends), and the final check reads each
job's result and log. A job with two tokens, two run folders left, or two completions in the
units' logs ran to completion twice.
"""
from __future__ import annotations

import logging
import random
import re
import signal
import tempfile
import threading
import time
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from nias.errors import NiasError
from nias.states import is_final
from tests.support.projects import zip_entries
from tests.support.rabbit import BrokerNode
from tests.support.remote_host import RemoteHost
from tests.support.stack import LocalStack

logger = logging.getLogger(__name__)

COMPLETED = re.compile(r"Job ([0-9a-f]{16}): attempt (\d+) (succeeded|failed|cancelled)")
EVIDENCE = "run.txt"  # in output/, so at the top of result.zip


@dataclass
class ChaosReport:
    jobs: int
    succeeded: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    mismatched: int = 0
    actions: list[str] = field(default_factory=list)
    seconds: float = 0.0
    remote_jobs: int = 0  # jobs whose last attempt ran on a remote unit

    def summary(self) -> str:
        return (f"{self.jobs} jobs: lost {self.lost}, duplicated {self.duplicated}, failed {self.failed}, "
                f"succeeded {self.succeeded}, mismatched {self.mismatched} in {self.seconds:.0f} s "
                f"({self.remote_jobs} ended on a remote unit); "
                f"actions: {', '.join(self.actions)}")


def job_code(seed: int) -> str:
    """A short job whose every completed run leaves its job id and a token of its own."""
    duration = 0.2 + (seed % 7) * 0.2
    return (f"import os, secrets, time\nprint('job {seed} starts', flush=True)\ntime.sleep({duration:.1f})\n"
            "token = secrets.token_hex(8)\n"
            f"with open('output/{EVIDENCE}', 'a') as out:\n"
            f"    out.write(os.environ['NIAS_JOB_ID'] + ' {seed} ' + token + '\\n')\n"
            "print('chaos-done', token, flush=True)\n")


def read_evidence(result: Path) -> list[tuple[str, str]]:
    """(job id, token) of each completed run whose evidence is in this result.zip."""
    with zipfile.ZipFile(result) as archive:
        lines = archive.read(EVIDENCE).decode().splitlines()
    return [(words[0], words[2]) for words in (line.split() for line in lines) if len(words) == 3]


class RunWatcher:
    """Reads every result.zip under the stack's job folders while the jobs run, before any is removed."""

    def __init__(self, jobs_dir: Path, interval_s: float = 0.2):
        self.jobs_dir = jobs_dir
        self.interval_s = interval_s
        self.tokens: dict[str, set[str]] = defaultdict(set)
        self.foreign: set[str] = set()  # jobs whose run folder held another job's evidence
        self._seen: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="chaos-watcher", daemon=True)

    def start(self) -> "RunWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self.scan()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.scan()

    def scan(self) -> None:
        for result in self.jobs_dir.glob("*/runs/*/result.zip"):
            try:
                key = (str(result), result.stat().st_mtime_ns)
                if key in self._seen:
                    continue
                evidence = read_evidence(result)
            except (OSError, zipfile.BadZipFile, KeyError):
                continue  # removed meanwhile, or a run that did not get to its end
            self._seen.add(key)
            self.record(result.parents[2].name, evidence)

    def record(self, job_id: str, evidence: list[tuple[str, str]]) -> None:
        for owner, token in evidence:
            if owner != job_id:
                self.foreign.add(job_id)
            self.tokens[job_id].add(token)


def _submit_all(stack: LocalStack, workdir: Path, count: int, ids: list[str], spread_s: float) -> None:
    for seed in range(count):
        path = zip_entries(workdir / f"job-{seed}.zip", {"code.py": job_code(seed)})
        while True:
            try:
                ids.append(stack.client.submit(path, name=f"chaos-{seed}")["id"])
                break
            except NiasError:  # the backend is being restarted: try again, as a researcher would
                time.sleep(0.5)
        time.sleep(spread_s / count)


class RemoteUnits:
    """Units started with `make unit` on a host of their own, serving the stack's default pool."""

    def __init__(self, stack: LocalStack, broker: BrokerNode, count: int):
        self.stack, self.broker, self.count = stack, broker, count
        self.host: RemoteHost | None = None
        self.env: dict[str, str] = {}

    def __enter__(self) -> "RemoteUnits":
        if not self.count:
            return self
        self.host = RemoteHost(hide=[self.stack.data_dir, self.stack.workdir]).__enter__()
        self.log = self.host.home / "units.log"
        self.env = {"NIAS_AMQP_URL": f"amqp://guest:guest@{self.host.address}:{self.host.forward(self.broker.port)}/%2F",
                    "NIAS_BACKEND_URL": f"http://{self.host.address}:{self.host.forward(self.stack.port)}",
                    "NIAS_INTERNAL_TOKEN": self.stack.env["NIAS_INTERNAL_TOKEN"],
                    "NIAS_QUEUE_PREFIX": self.stack.prefix, "NIAS_LEASE_S": self.stack.env["NIAS_LEASE_S"],
                    "NIAS_AMQP_HEARTBEAT_S": self.stack.env["NIAS_AMQP_HEARTBEAT_S"], "NIAS_LOG_LEVEL": "INFO"}
        for name in self.names:
            self.host.start_unit(name, self.env, self.log)
        self._wait_online()
        return self

    @property
    def names(self) -> list[str]:
        return [f"remote-{index}" for index in range(1, self.count + 1)]

    def _wait_online(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                online = {u["name"] for u in self.stack.http.get(f"{self.stack.url}/api/units", timeout=10)
                          .json()["units"] if u["state"] != "offline"}
            except (OSError, ValueError, KeyError):
                online = set()
            if set(self.names) <= online:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the remote units did not come online; their log:\n{self.log.read_text()[-3000:]}")

    def kill_and_restart(self, name: str) -> None:
        """SIGKILL to the unit and its consumer, then `make unit` again, as a host's supervisor would."""
        assert self.host is not None
        self.host.kill_unit(name, signal.SIGKILL)
        self.host.start_unit(name, self.env, self.log)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.host else ""

    def __exit__(self, *_exc) -> None:
        if self.host is not None:
            self.host.__exit__(None, None, None)


def _act(stack: LocalStack, broker: BrokerNode, plan: list[str], units: int, report: ChaosReport,
         rng: random.Random, period_s: float, remote: RemoteUnits) -> None:
    for action in plan:
        time.sleep(period_s)
        if action == "remote":
            target = rng.choice(remote.names)
            remote.kill_and_restart(target)
        elif action == "unit":
            target = f"unit-{rng.randint(1, units)}"
            stack.kill_service(target, signal.SIGKILL)
        elif action == "consumer":
            target = f"consumer-{rng.randint(1, units)}"
            stack.kill_service(target, signal.SIGKILL)
        elif action == "backend":
            target = "backend"
            stack.kill_service(target, signal.SIGKILL)
        else:
            target = "rabbitmq"
            broker.restart()
        report.actions.append(f"{action}:{target}")
        logger.info("chaos: %s", report.actions[-1])


def _final_states(stack: LocalStack, ids: list[str], timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    states: dict[str, str] = {}
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        still = []
        for job_id in pending:
            try:
                state = stack.client.job(job_id)["state"]
            except NiasError:
                still.append(job_id)
                continue
            if is_final(state):
                states[job_id] = state
            else:
                still.append(job_id)
        pending = still
        if pending:
            time.sleep(1)
    return states


def _own_result(stack: LocalStack, job_id: str, folder: Path, watcher: RunWatcher) -> bool:
    """True when the job's result holds one run's evidence, its own, from the run its log shows."""
    try:
        evidence = read_evidence(stack.client.result(job_id, folder / f"{job_id}.zip"))
        log = stack.client.log(job_id)
    except (NiasError, OSError, zipfile.BadZipFile, KeyError) as exc:
        logger.error("chaos: job %s: no readable result (%s)", job_id, exc)
        return False
    watcher.record(job_id, evidence)
    return (len(evidence) == 1 and evidence[0][0] == job_id and f"chaos-done {evidence[0][1]}" in log
            and job_id not in watcher.foreign)


def _check_results(stack: LocalStack, ids: list[str], states: dict[str, str], watcher: RunWatcher,
                   report: ChaosReport, units_log: str) -> None:
    """Each job ran to completion at most once and keeps one run folder; a succeeded job's result is its own."""
    completions = Counter(match.group(1) for match in COMPLETED.finditer(stack.log_path.read_text() + units_log))
    with tempfile.TemporaryDirectory(prefix="chaos-results-") as folder:
        for job_id in ids:
            if states.get(job_id) == "succeeded" and not _own_result(stack, job_id, Path(folder), watcher):
                report.mismatched += 1
            runs = sorted(path.name for path in (stack.data_dir / "jobs" / job_id / "runs").glob("*"))
            if len(watcher.tokens[job_id]) > 1 or len(runs) > 1 or completions[job_id] > 1:
                logger.error("chaos: job %s ran to completion more than once: tokens %s, run folders %s, "
                             "completions logged %s", job_id, sorted(watcher.tokens[job_id]), runs,
                             completions[job_id])
                report.duplicated += 1


def run_chaos(workdir: Path, *, jobs: int, units: int, plan: list[str], seed: int = 7,
              spread_s: float = 20.0, timeout_s: float = 600, remote_units: int = 0) -> ChaosReport:
    """Start a broker node and a stack (with `remote_units` units on a host of their own), run the
    jobs through `plan` (kinds of kill: unit, consumer, rabbitmq, backend, remote), report."""
    rng = random.Random(seed)
    report = ChaosReport(jobs=jobs)
    started = time.monotonic()
    broker = BrokerNode(consumer_timeout_ms=60_000).start()
    stack = LocalStack(workdir / "stack", units=units, NIAS_AMQP_URL=broker.url, NIAS_JOB_RETRIES="5",
                       NIAS_LEASE_S="15", NIAS_AMQP_HEARTBEAT_S="10", NIAS_LOG_LEVEL="INFO")
    watcher = RunWatcher(stack.data_dir / "jobs")
    try:
        stack.start()
        with RemoteUnits(stack, broker, remote_units) as remote:
            watcher.start()
            ids: list[str] = []
            submitter = threading.Thread(target=_submit_all, args=(stack, workdir, jobs, ids, spread_s))
            submitter.start()
            _act(stack, broker, plan, units, report, rng, period_s=spread_s / (len(plan) + 1), remote=remote)
            submitter.join()
            states = _final_states(stack, ids, timeout_s)
            watcher.stop()
            counts = Counter(states.values())
            report.succeeded, report.failed = counts["succeeded"], counts["failed"]
            report.lost = jobs - len(states)
            _check_results(stack, ids, states, watcher, report, remote.log_text())
            report.remote_jobs = sum(1 for job_id in ids if (stack.client.job(job_id).get("unit") or "")
                                     .startswith("remote-"))
    finally:
        watcher.stop()
        stack.stop()
        broker.destroy()
    report.seconds = time.monotonic() - started
    return report
