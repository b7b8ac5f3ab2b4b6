"""The batch jobs a Slurm unit has submitted and not yet finished, in one JSON file in its work dir.

A restarted unit reads it to adopt its batch jobs again (follow them to their end and report
them), so none is forgotten or orphaned. The file is rewritten whole (write beside, rename) on
each change: a unit holds a few jobs, and a crash leaves either the old list or the new one.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

JOURNAL_FILE = "batch-jobs.json"


@dataclass(frozen=True)
class BatchRecord:
    job_id: str
    attempt: int
    batch_id: str
    message: str  # the encoded JobMessage the attempt runs
    timeout_s: int

    @property
    def folder(self) -> str:
        return f"{self.job_id}-{self.attempt}"


class BatchJournal:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def records(self) -> list[BatchRecord]:
        try:
            entries = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            logger.error("Batch journal %s cannot be read (%s); no batch job is adopted", self.path, exc)
            return []
        records = []
        for entry in entries if isinstance(entries, list) else []:
            try:
                records.append(BatchRecord(**entry))
            except TypeError:
                logger.error("Batch journal %s: an entry is not a batch job: %.200r", self.path, entry)
        return records

    def _write(self, records: list[BatchRecord]) -> None:
        partial = self.path.with_name(self.path.name + ".part")
        partial.write_text(json.dumps([asdict(record) for record in records]))
        os.replace(partial, self.path)

    def add(self, record: BatchRecord) -> None:
        with self._lock:
            records = [kept for kept in self.records() if kept.folder != record.folder]
            self._write([*records, record])

    def remove(self, job_id: str, attempt: int) -> None:
        with self._lock:
            records = self.records()
            kept = [record for record in records if (record.job_id, record.attempt) != (job_id, attempt)]
            if len(kept) != len(records):
                self._write(kept)
