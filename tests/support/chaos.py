"""A chaos run: many short jobs on a stack while units, consumers, RabbitMQ and the backend die.

Used by `make chaos` (bench/chaos.py, 200 jobs) and, smaller, by `make test`. Every job is then
checked: lost (no final state), duplicated (ran to completion more than once, counted from the
units' own "attempt N succeeded" log lines), failed, succeeded.
"""
from __future__ import annotations

import logging
import random
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from nias.errors import NiasError
from nias.states import is_final
from tests.support.projects import zip_entries
from tests.support.rabbit import BrokerNode
from tests.support.stack import LocalStack

logger = logging.getLogger(__name__)

COMPLETED = re.compile(r"Job ([0-9a-f]{16}): attempt (\d+) (succeeded|failed|cancelled)")


@dataclass
class ChaosReport:
    jobs: int
    succeeded: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    actions: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.jobs} jobs: lost {self.lost}, duplicated {self.duplicated}, failed {self.failed}, "
                f"succeeded {self.succeeded} in {self.seconds:.0f} s; actions: {', '.join(self.actions)}")


def job_code(seed: int) -> str:
    duration = 0.2 + (seed % 7) * 0.2
    return (f"import time\nprint('job {seed} starts', flush=True)\ntime.sleep({duration:.1f})\n"
            f"open('output/n.txt', 'w').write('{seed}')\n")


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


def _act(stack: LocalStack, broker: BrokerNode, plan: list[str], units: int, report: ChaosReport,
         rng: random.Random, period_s: float) -> None:
    for action in plan:
        time.sleep(period_s)
        if action == "unit":
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


def run_chaos(workdir: Path, *, jobs: int, units: int, plan: list[str], seed: int = 7,
              spread_s: float = 20.0, timeout_s: float = 600) -> ChaosReport:
    """Start a broker node and a stack, run the jobs through `plan` (kinds of kill), report."""
    rng = random.Random(seed)
    report = ChaosReport(jobs=jobs)
    started = time.monotonic()
    broker = BrokerNode(consumer_timeout_ms=60_000).start()
    stack = LocalStack(workdir / "stack", units=units, NIAS_AMQP_URL=broker.url, NIAS_JOB_RETRIES="5",
                       NIAS_LEASE_S="15", NIAS_AMQP_HEARTBEAT_S="10", NIAS_LOG_LEVEL="INFO")
    try:
        stack.start()
        ids: list[str] = []
        submitter = threading.Thread(target=_submit_all, args=(stack, workdir, jobs, ids, spread_s))
        submitter.start()
        _act(stack, broker, plan, units, report, rng, period_s=spread_s / (len(plan) + 1))
        submitter.join()
        states = _final_states(stack, ids, timeout_s)
        completions = Counter(match.group(1) for match in COMPLETED.finditer(stack.log_path.read_text()))
        counts = Counter(states.values())
        report.succeeded, report.failed = counts["succeeded"], counts["failed"]
        report.lost = jobs - len(states)
        report.duplicated = sum(1 for job_id in ids if completions[job_id] > 1)
    finally:
        stack.stop()
        broker.destroy()
    report.seconds = time.monotonic() - started
    return report
