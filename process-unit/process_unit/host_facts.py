"""What a unit says of its host with every announcement: name, CPUs, memory, GPUs, the job Python."""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostFacts:
    host: str
    cpus: int | None
    memory_mb: int | None
    gpus: list[str] = field(default_factory=list)
    python: str | None = None


def _memory_mb() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gpus() -> list[str]:
    """GPU names from `nvidia-smi`, when the host has one; none otherwise."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        answer = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                                timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("nvidia-smi is there but did not list the GPUs: %s", exc)
        return []
    return [line.strip()[:200] for line in answer.stdout.splitlines() if line.strip()][:64]


def _python_version(python: str) -> str | None:
    try:
        answer = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return answer.stdout.strip()[:64] or None


def read_host_facts(job_python: str) -> HostFacts:
    """Read once at start: none of it changes while the unit runs."""
    try:
        cpus: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count()
    return HostFacts(socket.gethostname()[:255], cpus, _memory_mb(), _gpus(), _python_version(job_python))
