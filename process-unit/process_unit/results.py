"""Packing a job's `output/` folder into its result zip on the shared volume.

Only regular files are taken (checked with lstat, links never followed), so a job cannot
smuggle a host file into its result through a symlink. The zip is written beside its final
name and renamed into place, so a reader never sees half a result.
"""
from __future__ import annotations

import logging
import os
import shutil
import stat
import time
import zipfile
from pathlib import Path

from nias.errors import ExecutionFailed

logger = logging.getLogger(__name__)

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


class ResultTooLarge(ExecutionFailed):
    """Raised when output/ holds more than the result size limit."""

    code = "result_too_large"


def _add_regular_file(archive: zipfile.ZipFile, path: Path, relative: str) -> bool:
    """Copy one file into the zip; False if it cannot be read or is no longer a regular file.

    The source is opened without following links and checked again, so a file swapped for a
    link after the listing is not followed. Errors writing the zip (a full volume) propagate.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode):
            return False
        entry = zipfile.ZipInfo(relative, max(time.localtime(info.st_mtime)[:6], ZIP_EPOCH))
        entry.compress_type = zipfile.ZIP_DEFLATED
        entry.external_attr = (stat.S_IFREG | stat.S_IMODE(info.st_mode)) << 16
        with archive.open(entry, "w") as sink:
            shutil.copyfileobj(source, sink, 1024 * 1024)
    return True


def pack_output(output: Path, target: Path, max_bytes: int) -> tuple[int, list[str]]:
    """Zip the regular files under `output` into `target`; return its size and what was skipped."""
    skipped: list[str] = []
    files: list[tuple[Path, str]] = []
    total = 0
    if output.is_dir() and not output.is_symlink():
        for folder, dirs, names in os.walk(output, followlinks=False):
            for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                path = Path(folder) / name
                relative = str(path.relative_to(output))
                info = os.lstat(path)
                if not stat.S_ISREG(info.st_mode):
                    skipped.append(relative)
                    continue
                total += info.st_size
                if total > max_bytes:
                    raise ResultTooLarge(
                        f"output/ holds more than the result limit of {max_bytes // (1024 * 1024)} MB; "
                        "write less, or ask the admin for a higher limit.")
                files.append((path, relative))
    partial = target.with_name(target.name + ".part")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            for path, relative in files:
                if not _add_regular_file(archive, path, relative):
                    skipped.append(relative)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ExecutionFailed(f"The result could not be saved: {exc.strerror or exc}.") from None
    for name in skipped:
        logger.info("Result %s: skipped %s (not a regular file)", target, name)
    return target.stat().st_size, skipped
