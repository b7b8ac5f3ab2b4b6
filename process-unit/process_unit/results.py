"""Packing a job's `output/` folder into its result zip on the shared volume.

A job controls everything under `output/` and may still be running (a daemon it left behind)
while it is packed, so the walk trusts no path: every folder and file is opened relative to its
parent's descriptor with `O_NOFOLLOW`, so a component swapped for a symbolic link mid-walk is
refused, never followed; a file is read through the descriptor that was checked. Only regular
files are taken. FIFOs are opened non-blocking, sockets and devices are left out, names that are
not UTF-8 or are too long are left out, and sizes are counted as bytes are read, so a file that
grows while it is zipped cannot pass the limit. Everything left out is named with its reason.

The zip is written beside its final name and renamed into place, so a reader never sees half a
result; on any failure the partial file is removed.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from nias.errors import ExecutionFailed
from nias.provenance import PROVENANCE_NAME

logger = logging.getLogger(__name__)

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
ZIP_END = (2107, 12, 31, 23, 59, 58)  # and the latest
CHUNK = 1024 * 1024
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
MAX_NOTES = 100  # notes kept in full; the rest are counted


class ResultTooLarge(ExecutionFailed):
    """Raised when output/ holds more than the result's size or file-count limit."""

    code = "result_too_large"


@dataclass(frozen=True)
class ResultLimits:
    max_bytes: int
    max_files: int
    max_name_bytes: int = 1024  # a path inside output/, as stored in the zip
    max_depth: int = 64  # folders inside output/


@dataclass
class PackedResult:
    size: int = 0  # of the zip
    files: int = 0
    bytes_read: int = 0
    left_out: list[str] = field(default_factory=list)  # "name: reason", the first MAX_NOTES
    left_out_count: int = 0

    def leave_out(self, name: str, reason: str) -> None:
        self.left_out_count += 1
        if len(self.left_out) < MAX_NOTES:
            self.left_out.append(f"output/{name}: {reason}")


_KINDS = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFLNK: "a symbolic link"}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _zip_time(mtime: float) -> tuple[int, ...]:
    """A zip entry's time: zip holds 1980 to 2107; a job may set any mtime it likes."""
    try:
        moment = time.localtime(mtime)[:6]
    except (OverflowError, ValueError, OSError):
        return ZIP_EPOCH
    return min(max(moment, ZIP_EPOCH), ZIP_END)


def _readable_name(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _open_entry(name: str, parent_fd: int) -> int | str:
    """A descriptor for `name` in `parent_fd`, never through a link; or the reason it was not opened."""
    try:
        return os.open(name, OPEN_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link (links are not followed)"
        if exc.errno == errno.ENXIO:
            return "a socket"
        if exc.errno == errno.ENOENT:
            return "removed while the result was packed"
        return f"could not be opened ({exc.strerror})"


class _Packer:
    def __init__(self, archive: zipfile.ZipFile, limits: ResultLimits, packed: PackedResult, keeps_record: bool):
        self.archive = archive
        self.keeps_record = keeps_record  # the zip holds NIAS's provenance.json: output/ may not name it
        self.limits = limits
        self.packed = packed
        self.zip64 = limits.max_bytes >= 2**31 - CHUNK

    def walk(self, folder_fd: int, prefix: str = "", depth: int = 0) -> None:
        """Depth-first, one open folder per level: at most `max_depth` descriptors at a time."""
        for name in sorted(os.listdir(folder_fd)):
            child = self._visit(folder_fd, prefix, name, depth)
            if child is not None:
                child_fd, child_prefix = child
                try:
                    self.walk(child_fd, child_prefix, depth + 1)
                finally:
                    os.close(child_fd)

    def _visit(self, folder_fd: int, prefix: str, name: str, depth: int) -> tuple[int, str] | None:
        raw = os.fsencode(name)
        relative = f"{prefix}{name}"
        shown = _readable_name(os.fsencode(relative))
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            self.packed.leave_out(shown, "its name is not valid UTF-8")
            return None
        if len(os.fsencode(relative)) > self.limits.max_name_bytes:
            self.packed.leave_out(shown[:200] + "...", f"its path is longer than {self.limits.max_name_bytes} bytes")
            return None
        opened = _open_entry(name, folder_fd)
        if isinstance(opened, str):
            self.packed.leave_out(shown, opened)
            return None
        info = os.fstat(opened)
        if stat.S_ISDIR(info.st_mode):
            if depth + 1 > self.limits.max_depth:
                os.close(opened)
                self.packed.leave_out(shown + "/", f"nested deeper than {self.limits.max_depth} folders")
                return None
            return opened, f"{relative}/"
        try:
            if not stat.S_ISREG(info.st_mode):
                self.packed.leave_out(shown, _kind(info.st_mode))
                return None
            if self.keeps_record and relative == PROVENANCE_NAME:
                self.packed.leave_out(shown, "the name of NIAS's own record of the run; name the file otherwise")
                return None
            self._add_file(opened, info, relative)
        finally:
            os.close(opened)
        return None

    def _add_file(self, fd: int, info: os.stat_result, relative: str) -> None:
        if self.packed.files >= self.limits.max_files:
            raise ResultTooLarge(f"output/ holds more than the result limit of {self.limits.max_files} files; "
                                 "write fewer (zip them yourself), or ask the admin for a higher limit.")
        self.packed.files += 1
        entry = zipfile.ZipInfo(relative, _zip_time(info.st_mtime))
        entry.compress_type = zipfile.ZIP_DEFLATED
        entry.external_attr = (stat.S_IFREG | (stat.S_IMODE(info.st_mode) | 0o400)) << 16
        os.set_blocking(fd, True)
        with self.archive.open(entry, "w", force_zip64=self.zip64) as sink:
            while block := os.read(fd, CHUNK):
                self.packed.bytes_read += len(block)
                if self.packed.bytes_read > self.limits.max_bytes:
                    raise ResultTooLarge(
                        f"output/ holds more than the result limit of {self.limits.max_bytes // (1024 * 1024)} MB; "
                        "write less, or ask the admin for a higher limit.")
                sink.write(block)


def _is_link(name: str, folder_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_output(project: Path, packed: PackedResult) -> int | None:
    """The descriptor of `project/output`, or None (with a note) when there is no folder to take."""
    project_fd = os.open(project, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        return os.open("output", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=project_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link("output", project_fd):
            packed.leave_out("", "output is a symbolic link, which is not followed: the result is empty")
        elif exc.errno == errno.ENOTDIR:
            packed.leave_out("", "output is not a folder: the result is empty")
        elif exc.errno != errno.ENOENT:
            packed.leave_out("", f"output/ could not be opened ({exc.strerror}): the result is empty")
        return None
    finally:
        os.close(project_fd)


def pack_output(project: Path, target: Path, limits: ResultLimits, record: bytes | None = None) -> PackedResult:
    """Zip the regular files under `project/output` into `target`, with the run's provenance
    `record` as PROVENANCE_NAME beside them; say what was left out and why."""
    packed = PackedResult()
    partial = target.with_name(target.name + ".part")
    try:
        output_fd = _open_output(project, packed)
        try:
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
                if output_fd is not None:
                    _Packer(archive, limits, packed, record is not None).walk(output_fd)
                if record is not None:
                    archive.writestr(zipfile.ZipInfo(PROVENANCE_NAME, _zip_time(time.time())), record,
                                     compress_type=zipfile.ZIP_DEFLATED)
        finally:
            if output_fd is not None:
                os.close(output_fd)
        os.replace(partial, target)
    except ResultTooLarge:
        partial.unlink(missing_ok=True)
        raise
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ExecutionFailed(f"The result could not be saved: {exc.strerror or exc}.") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    packed.size = target.stat().st_size
    if packed.left_out_count:
        logger.info("Result %s: %s entries left out", target, packed.left_out_count)
    return packed
