"""A job's first process, started before the job arrives and waiting in a box of its own.

Moving a process into a cgroup (v1) waits for the kernel's RCU grace period, 10 to 20 ms, and a
fork of the unit costs a few more: most of a trivial job's start. So while the unit is idle it
opens the next job's box (`Isolation.open_box`) and starts a launcher in it: a small Python,
still root, that waits on its stdin. When a job comes, the unit sends it what to run (argv,
folder, environment, rlimits, uid) in one line; the launcher applies them, gives up root for the
job's uid and execs, so the job's process is the launcher's: same pid, session, pipes and box.

    spare = SpareLauncher(isolation, sandbox)
    spare.prepare()                     # in the background, after a run
    taken = spare.take(limits)          # None: no launcher fits; start the job the usual way
    process = taken.launch(argv, cwd, env, uid)

A launcher that is never used is stopped with its box (`discard`); one whose unit dies gets
SIGKILL (parent-death signal), and its cgroup is removed when the unit starts again.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from process_unit.isolation import Isolation, JobBox
from process_unit.sandbox import Limits, Sandbox, die_with_unit, process_limits
from process_unit.usage import MeasuredPopen

logger = logging.getLogger(__name__)

TAKE_WAIT_S = 2.0  # how long a job waits for a launcher still being prepared

# Runs with -I -S: no site, no environment variables; everything it needs is imported before it waits.
LAUNCHER_CODE = r"""
import ctypes, json, os, resource, sys
libc = ctypes.CDLL(None, use_errno=True)
line = sys.stdin.buffer.readline()
if not line:
    os._exit(0)
spec = json.loads(line)
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.close(null)
try:
    os.chdir(spec["cwd"])
    for name, value in spec["rlimits"]:
        resource.setrlimit(getattr(resource, name), tuple(value))
    if spec["uid"] is not None:
        os.setgroups([])
        os.setgid(spec["uid"])
        os.setuid(spec["uid"])
    libc.prctl(1, 9)
    os.execve(spec["argv"][0], spec["argv"], spec["env"])
except OSError as exc:
    os.write(2, ("code.py could not be started: %s\n" % (exc.strerror or exc)).encode())
    os._exit(127)
"""


@dataclass
class Launcher:
    """A launcher process waiting in its box."""

    box: JobBox
    process: MeasuredPopen

    def launch(self, argv: list[str], cwd: Path, env: dict[str, str], limits: Limits) -> MeasuredPopen:
        """Turn the launcher into the job's process; OSError if it is gone."""
        spec = {"argv": argv, "cwd": str(cwd), "env": env, "uid": self.box.uid,
                "rlimits": process_limits(limits, self.box.uid)}
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(spec).encode() + b"\n")
        self.process.stdin.close()
        self.process.stdin = None
        return self.process

    def alive(self) -> bool:
        return self.process.poll() is None

    def discard(self) -> None:
        """Stop the launcher and close its box."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except OSError:
            pass
        self.box.started(self.process)
        self.box.end_all()
        self.process.wait()
        self.box.close()


class SpareLauncher:
    """At most one launcher kept ready for the unit's next job, with the admin's limits.

    Launchers are started by one thread that lives as long as the unit: a child's parent-death
    signal fires when the thread that started it ends, not only the process, and a launched job
    keeps the launcher's.
    """

    def __init__(self, isolation: Isolation, sandbox: Sandbox):
        self.isolation = isolation
        self.sandbox = sandbox
        self._lock = threading.Condition()
        self._ready: Launcher | None = None
        self._wanted = False  # a launcher is asked for and not ready yet
        self._closed = False
        self._count = 0
        self._thread: threading.Thread | None = None

    def prepare(self) -> None:
        """Have the next launcher started in the background, unless one is ready or coming."""
        with self._lock:
            if self._closed or self._ready is not None or self._wanted:
                return
            self._wanted = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="spare-launcher", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def _serve(self) -> None:
        # Never returns, even once closed: the jobs it launched die with this thread (their
        # parent-death signal), so it lives until the unit's process ends.
        while True:
            with self._lock:
                while not self._wanted or self._closed:
                    self._lock.wait()
                self._count += 1
                name = f"next-{self._count}"
            launcher = None
            try:
                launcher = self._open(name)
            except Exception as exc:  # noqa: BLE001 - without a spare, jobs start the usual way
                logger.warning("No launcher kept ready for the next job: %s", exc)
            with self._lock:
                self._wanted = False
                if self._closed and launcher is not None:
                    threading.Thread(target=launcher.discard, daemon=True).start()
                else:
                    self._ready = launcher
                self._lock.notify_all()

    def _open(self, name: str) -> Launcher:
        box = self.isolation.open_box(name, self.sandbox.limits)
        try:
            def enter() -> None:
                box.enter()
                die_with_unit()

            process = MeasuredPopen([sys.executable, "-I", "-S", "-c", LAUNCHER_CODE], env={}, cwd="/",
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, preexec_fn=enter)
        except BaseException:
            box.close()
            raise
        return Launcher(box, process)

    def take(self, limits: Limits) -> Launcher | None:
        """The ready launcher if it fits `limits` (the admin's, not a job's tighter ones); one
        being started is waited for a moment."""
        if limits != self.sandbox.limits:
            return None
        with self._lock:
            self._lock.wait_for(lambda: not self._wanted or self._closed, TAKE_WAIT_S)
            launcher, self._ready = self._ready, None
        if launcher is not None and not launcher.alive():
            logger.warning("The launcher kept ready ended by itself (%s); starting the job the usual way",
                           launcher.process.returncode)
            threading.Thread(target=launcher.discard, daemon=True).start()
            return None
        return launcher

    def close(self) -> None:
        """No more launchers; the ready one is stopped."""
        with self._lock:
            self._closed = True
            launcher, self._ready = self._ready, None
            self._lock.notify_all()
        if launcher is not None:
            launcher.discard()
