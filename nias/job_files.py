"""Where a job's files live in the backend's data dir: one folder per job, one per attempt.

    <data>/jobs/<job id>/upload.zip                 the project as accepted
    <data>/jobs/<job id>/runs/<attempt>/log.txt     the attempt's log, as the unit sends it
    <data>/jobs/<job id>/runs/<attempt>/result.zip  the attempt's result, once verified
    <data>/jobs/<job id>/runs/<attempt>/outcome.json the outcome sent with it, until it is applied

Only the backend reads and writes these; units get and send them over HTTP (nias/transfer.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFiles:
    folder: Path

    @property
    def log(self) -> Path:
        return self.folder / "log.txt"

    @property
    def result(self) -> Path:
        return self.folder / "result.zip"

    @property
    def outcome(self) -> Path:
        return self.folder / "outcome.json"


@dataclass(frozen=True)
class JobFiles:
    jobs_dir: Path
    job_id: str

    @property
    def folder(self) -> Path:
        return self.jobs_dir / self.job_id

    @property
    def upload(self) -> Path:
        return self.folder / "upload.zip"

    @property
    def runs(self) -> Path:
        return self.folder / "runs"

    def run(self, attempt: int) -> RunFiles:
        return RunFiles(self.runs / str(attempt))
