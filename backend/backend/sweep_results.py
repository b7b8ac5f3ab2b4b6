"""A sweep's combined results: one zip, streamed as it is made, holding `sweep.csv` (each job's
parameters, state and metrics) and one folder per job with what its result zip holds."""
from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator

from nias.job_files import JobFiles
from nias.settings import Settings
from nias.states import is_final

from backend.sweeps import point_label

CHUNK_BYTES = 1024 * 1024


class _Pipe:
    """A write-only file that hands on what was written: zipfile writes, the response reads."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data) -> int:
        self._buffer += data
        return len(data)

    def flush(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self._buffer)

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def summary_csv(body: dict) -> str:
    """One line per job: id, state, duration, its varied parameters, then its metrics."""
    varied, metrics = body["varied"], body["metric_names"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["job", "folder", "state", "duration_s", *varied, *metrics])
    for job in body["jobs"]:
        values = [json.dumps(job["params"].get(name)) if not isinstance(job["params"].get(name), str)
                  else job["params"][name] for name in varied]
        writer.writerow([job["id"], job.get("folder", ""), job["state"], job["duration_s"], *values,
                         *(job["metrics"].get(name, "") for name in metrics)])
    return out.getvalue()


def _folders(body: dict) -> dict[str, str]:
    """Each job's folder: its varied parameters; the job id is added where two would clash."""
    folders: dict[str, str] = {}
    taken: set[str] = set()
    for job in body["jobs"]:
        label = point_label(job["params"], body["varied"])
        if label in taken:
            label = f"{label}_{job['id']}"
        taken.add(label)
        folders[job["id"]] = label
        job["folder"] = label
    return folders


def _safe_member(name: str) -> bool:
    return not name.startswith("/") and ".." not in name.split("/") and "\\" not in name


def stream_results(settings: Settings, jobs: list[dict], body: dict) -> Iterator[bytes]:
    folders = _folders(body)
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("sweep.csv", summary_csv(body))
        yield pipe.take()
        for job in jobs:
            result = JobFiles(settings.jobs_dir, job["id"]).run(job["attempt"]).result if job["attempt"] else None
            if not is_final(job["state"]) or job["expired_at"] or result is None or not result.is_file():
                continue
            with zipfile.ZipFile(result) as archive:
                for info in archive.infolist():
                    if info.is_dir() or not _safe_member(info.filename):
                        continue
                    with archive.open(info) as source, \
                            out.open(f"{folders[job['id']]}/{info.filename}", "w", force_zip64=True) as target:
                        for block in iter(lambda: source.read(CHUNK_BYTES), b""):
                            target.write(block)
                            if len(pipe) >= CHUNK_BYTES:
                                yield pipe.take()
                    yield pipe.take()
    yield pipe.take()
