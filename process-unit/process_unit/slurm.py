"""The Slurm client commands a Slurm unit uses, and what their answers mean.

sbatch submits (`--parsable`: the job id alone), `scontrol show job -o` says where a batch job
stands (it works without accounting, for MinJobAge seconds after the job ends), `sacct` gives the
final state and exit code where accounting is set up, scancel signals or ends a job, and
`scontrol suspend/resume/update` pause, resume and re-prioritise it. Every failure becomes
`SlurmFailed` with Slurm's own words.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nias.errors import SlurmFailed

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 30
# States in which a batch job may still run: everything else is its end.
LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
               "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "STOPPED"}
LOST_STATES = {"NODE_FAIL", "BOOT_FAIL", "PREEMPTED"}  # the cluster lost it: the attempt is lost, not failed
_FIELD = re.compile(r"(?:^|\s)([A-Za-z/:]+)=(.*?)(?=\s[A-Za-z/:]+=|$)")
_RUN_TIME = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)")


@dataclass(frozen=True)
class BatchJob:
    """What Slurm says of one batch job."""

    job_id: str
    state: str  # COMPLETED, FAILED, TIMEOUT, ... (the first word of Slurm's state)
    reason: str = ""  # why it waits ("Resources", "Priority"), "None" when it does not
    node: str = ""
    exit_code: int | None = None
    signal: int | None = None
    run_seconds: float | None = None  # time it has run, suspended time left out
    nice: int | None = None

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def _exit_pair(text: str) -> tuple[int | None, int | None]:
    """`2:0` -> (2, None); `0:15` -> (None, 15): the exit code, or the signal that ended the job."""
    code, _, signum = text.partition(":")
    try:
        code_value, signal_value = int(code), int(signum or 0)
    except ValueError:
        return None, None
    return (code_value, signal_value or None) if not signal_value else (None, signal_value)


def _seconds(text: str) -> float | None:
    match = _RUN_TIME.fullmatch(text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return float(days * 86400 + hours * 3600 + minutes * 60 + seconds)


def parse_show_job(text: str) -> BatchJob | None:
    """One `scontrol show job -o` line as a BatchJob; None when it names no job."""
    fields = {key: value for key, value in _FIELD.findall(text.strip())}
    if "JobId" not in fields or "JobState" not in fields:
        return None
    code, signum = _exit_pair(fields.get("ExitCode", ""))
    node = fields.get("NodeList", "")
    nice = fields.get("Nice", "")
    return BatchJob(job_id=fields["JobId"], state=fields["JobState"].split()[0], reason=fields.get("Reason", ""),
                    node="" if node in ("(null)", "None") else node, exit_code=code, signal=signum,
                    run_seconds=_seconds(fields.get("RunTime", "")),
                    nice=int(nice) if nice.lstrip("-").isdigit() else None)


def parse_sacct(text: str, job_id: str) -> BatchJob | None:
    """`sacct -n -P -X -o JobID,State,ExitCode,Reason,NodeList` for one job; None when it is not listed."""
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 5 and parts[0] == job_id:
            code, signum = _exit_pair(parts[2])
            node = parts[4]
            return BatchJob(job_id=job_id, state=parts[1].split()[0], reason=parts[3],
                            node="" if node in ("None assigned", "(null)") else node, exit_code=code, signal=signum)
    return None


class Slurm:
    """The Slurm client commands, run with this unit's environment (SLURM_CONF and the like)."""

    def __init__(self, env: dict[str, str] | None = None, as_user: str | None = None):
        self._env = dict(os.environ if env is None else env)
        # Commands run as this unit's account; `as_user` (tests, as root) runs them as another one.
        self._prefix = ["runuser", "-u", as_user, "--"] if as_user else []
        self._accounting: bool | None = None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run([*self._prefix, *args], capture_output=True, text=True, env=self._env,
                                  timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmFailed(f"{args[0]} could not be run: {exc}") from None
        if check and done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise SlurmFailed(f"{' '.join(args[:2])} failed: {said[-1][:300] if said else f'exit {done.returncode}'}")
        return done

    def submit(self, script: Path, options: list[str]) -> str:
        """sbatch the script; the batch job's id."""
        answer = self._run("sbatch", "--parsable", *options, str(script)).stdout.strip()
        job_id = answer.split(";")[0]  # "<id>;<cluster>" on federated clusters
        if not job_id.isdigit():
            raise SlurmFailed(f"sbatch answered {answer[:200]!r}, not a job id")
        return job_id

    def show(self, job_id: str) -> BatchJob | None:
        """Where the job stands; None once Slurm has forgotten it (MinJobAge after its end)."""
        done = self._run("scontrol", "show", "job", "-o", job_id, check=False)
        if done.returncode != 0:
            if "Invalid job id" in done.stderr:
                return None
            raise SlurmFailed(f"scontrol show job failed: {done.stderr.strip()[:300]}")
        return parse_show_job(done.stdout.splitlines()[0] if done.stdout else "")

    def find(self, name: str) -> str:
        """The id of this account's live batch job named `name`, or "" when there is none."""
        user = self._run("id", "-un").stdout.strip()
        listed = self._run("squeue", "-h", "-u", user, f"--name={name}", "-o", "%i").stdout.split()
        return listed[-1] if listed else ""

    def accounting(self) -> bool:
        """Whether the cluster keeps accounting (slurmdbd), so that sacct knows finished jobs."""
        if self._accounting is None:
            config = self._run("scontrol", "show", "config", check=False).stdout
            match = re.search(r"^AccountingStorageType\s*=\s*(\S+)", config, re.MULTILINE)
            self._accounting = bool(match) and match.group(1) != "accounting_storage/none"
        return self._accounting

    def final(self, job_id: str) -> BatchJob | None:
        """The job's end as accounting records it, else as scontrol still shows it."""
        if self.accounting():
            done = self._run("sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode,Reason,NodeList",
                             check=False)
            job = parse_sacct(done.stdout, job_id) if done.returncode == 0 else None
            if job is not None and not job.live:
                return job
        return self.show(job_id)

    def signal(self, job_id: str, name: str) -> None:
        """Send a signal to the batch script and all it started (`--full`); the job is not ended."""
        self._run("scancel", f"--signal={name}", "--full", job_id)

    def cancel(self, job_id: str) -> None:
        self._run("scancel", job_id)

    def suspend(self, job_id: str) -> None:
        self._run("scontrol", "suspend", job_id)

    def resume(self, job_id: str) -> None:
        self._run("scontrol", "resume", job_id)

    def set_nice(self, job_id: str, nice: int) -> None:
        self._run("scontrol", "update", f"JobId={job_id}", f"Nice={nice}")

    def slurm_user(self) -> str:
        config = self._run("scontrol", "show", "config", check=False).stdout
        match = re.search(r"^SlurmUser\s*=\s*([^\s(]+)", config, re.MULTILINE)
        return match.group(1) if match else ""

    def pause_refusal(self) -> str | None:
        """Why this account may not suspend jobs (only root, SlurmUser and Operators may); None if it may."""
        user = self._run("id", "-un").stdout.strip()
        if user in ("root", self.slurm_user()):
            return None
        if self.accounting():
            level = self._run("sacctmgr", "-n", "-P", "show", "user", user, "format=AdminLevel", check=False).stdout
            if level.strip() in ("Operator", "Administrator"):
                return None
        return (f"This cluster lets only its operators suspend jobs (scontrol suspend), and the unit's account "
                f"{user} is not one; an admin can make it one with sacctmgr (AdminLevel=Operator).")


def nice_for(priority: int) -> int:
    """NIAS priority 0..9 (higher runs sooner) as Slurm's Nice (higher waits longer): never negative,
    which only Slurm's operators may set."""
    return (9 - min(max(priority, 0), 9)) * 100
