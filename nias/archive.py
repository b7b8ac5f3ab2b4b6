"""Inspecting and unpacking uploaded project zips safely.

`inspect_zip` applies every upload rule without extracting; the backend calls it before
a job is accepted and the processing unit calls it again before `extract_project`, so a
zip that changed on disk is never trusted.
"""
from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nias.errors import BadUpload

IGNORED_FOLDERS = ("__MACOSX",)
IGNORED_NAMES = (".DS_Store", "Thumbs.db")
# Small files compress far beyond any sane ratio (a 10 KiB file of zeros: ~1000:1); only
# members large enough to matter are held to the ratio limit.
RATIO_FLOOR_BYTES = 1024 * 1024
# Many small members can make a bomb too; the whole zip is held to the ratio past this size.
AGGREGATE_RATIO_FLOOR_BYTES = 64 * 1024 * 1024
MAX_NAME_PART_BYTES = 255  # what Linux filesystems allow for one name
MAX_PATH_BYTES = 1024
MAX_REQUIREMENTS_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ZipLimits:
    max_files: int
    max_unpacked_bytes: int
    max_ratio: int


@dataclass(frozen=True)
class ProjectZip:
    root: str  # "" or "top-folder/": where code.py lives
    members: tuple[zipfile.ZipInfo, ...]
    unpacked_bytes: int
    requirements: zipfile.ZipInfo | None = None  # the project's requirements.txt, as the zip names it

    @property
    def has_requirements(self) -> bool:
        return self.requirements is not None


def _is_ignored(parts: tuple[str, ...]) -> bool:
    return parts[0] in IGNORED_FOLDERS or parts[-1] in IGNORED_NAMES or parts[-1].startswith("._")


def _check_name(info: zipfile.ZipInfo) -> tuple[str, ...]:
    name = info.filename
    if "\x00" in info.orig_filename:  # zipfile cuts the name at a NUL; the original keeps it
        raise BadUpload(f"The entry {name!r} has a NUL byte in its name.", code="unsafe_path")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise BadUpload(f"The entry {name!r} has an absolute path; paths must be relative.", code="unsafe_path")
    parts = tuple(p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", "."))
    if ".." in parts:
        raise BadUpload(f"The entry {name!r} points outside the project ('..').", code="unsafe_path")
    if not parts:
        raise BadUpload(f"The entry {name!r} has an empty name.", code="unsafe_path")
    if len(name.encode()) > MAX_PATH_BYTES or any(len(p.encode()) > MAX_NAME_PART_BYTES for p in parts):
        raise BadUpload(f"The entry {name[:80]!r}... has a name too long to unpack "
                        f"(at most {MAX_NAME_PART_BYTES} bytes a part, {MAX_PATH_BYTES} in all).",
                        code="name_too_long")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise BadUpload(f"The entry {name!r} is a symbolic link; links are not allowed.", code="symlink_entry")
    if info.flag_bits & 0x1:
        raise BadUpload(f"The entry {name!r} is encrypted; upload an unencrypted zip.", code="encrypted_entry")
    return parts


FOUND_LISTED = 12  # names a refusal for a missing code.py lists, so a wrong folder shows at once


def _find_root(files: list[tuple[str, ...]]) -> str:
    names = {"/".join(parts) for parts in files}
    if "code.py" in names:
        return ""
    tops = {parts[0] for parts in files}
    if len(tops) == 1 and all(len(parts) > 1 for parts in files):
        top = next(iter(tops))
        if f"{top}/code.py" in names:
            return f"{top}/"
    found = sorted(names)
    listed = ", ".join(found[:FOUND_LISTED]) + (f" and {len(found) - FOUND_LISTED} more" if len(found) > FOUND_LISTED else "")
    raise BadUpload(
        f"The zip has no code.py. Put code.py at the top of the zip, or inside one top folder (found: {listed or 'no files'}).",
        code="no_code_py", found=found[:FOUND_LISTED],
    )


def inspect_zip(path: Path, limits: ZipLimits) -> ProjectZip:
    """Check an uploaded zip against every rule; raise BadUpload naming the first broken one."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        # NotImplementedError: an entry needs a newer zip version than Python reads.
        raise BadUpload("The upload is not a zip file (or one this server cannot read).", code="not_a_zip") from None
    with archive:
        infos = archive.infolist()
    files: list[tuple[str, ...]] = []
    members: list[zipfile.ZipInfo] = []
    seen: dict[str, zipfile.ZipInfo] = {}
    unpacked = packed = 0
    for info in infos:
        parts = _check_name(info)
        if _is_ignored(parts) or info.is_dir():
            continue
        key = "/".join(parts)
        if key in seen:
            raise BadUpload(f"The entry {key!r} appears twice in the zip.", code="duplicate_entry")
        seen[key] = info
        files.append(parts)
        members.append(info)
        unpacked += info.file_size
        packed += info.compress_size
        if len(members) > limits.max_files:
            raise BadUpload(f"The zip holds more than {limits.max_files} files.", code="too_many_files")
        if unpacked > limits.max_unpacked_bytes:
            raise BadUpload(
                f"The zip unpacks to more than {limits.max_unpacked_bytes // (1024 * 1024)} MB.",
                code="too_large_unpacked",
            )
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise BadUpload(
                f"The entry {key!r} is compressed more than {limits.max_ratio}:1, which looks like a zip bomb.",
                code="compression_ratio",
            )
    if not members:
        raise BadUpload("The zip is empty.", code="empty_zip")
    if unpacked > AGGREGATE_RATIO_FLOOR_BYTES and unpacked > limits.max_ratio * max(packed, 1):
        raise BadUpload(
            f"The zip is compressed more than {limits.max_ratio}:1, which looks like a zip bomb.",
            code="compression_ratio",
        )
    root = _find_root(files)
    return ProjectZip(root=root, members=tuple(members), unpacked_bytes=unpacked,
                      requirements=seen.get(f"{root}requirements.txt"))


def read_requirements(path: Path, project: ProjectZip) -> str:
    """The text of the project's requirements.txt ("" without one); BadUpload if it cannot be read."""
    if project.requirements is None:
        return ""
    if project.requirements.file_size > MAX_REQUIREMENTS_BYTES:
        raise BadUpload(f"requirements.txt is larger than {MAX_REQUIREMENTS_BYTES // 1024} KiB.",
                        code="unsafe_requirements")
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read(project.requirements)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError, zlib.error):
        raise BadUpload("requirements.txt could not be read from the zip (it is damaged).", code="not_a_zip") from None
    return data.decode(errors="replace")


def extract_project(path: Path, dest: Path, limits: ZipLimits) -> Path:
    """Unpack a checked zip into `dest` (which must not exist) and return the project folder.

    Only regular files are written, each below `dest`; `output/` is created when missing.
    """
    project = inspect_zip(path, limits)
    dest.mkdir(parents=True)
    base = dest.resolve()
    with zipfile.ZipFile(path) as archive:
        for info in project.members:
            target = (base / info.filename.replace("\\", "/")).resolve()
            if base not in target.parents:
                raise BadUpload(f"The entry {info.filename!r} points outside the project.", code="unsafe_path")
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "xb") as sink:
                shutil.copyfileobj(source, sink, 1024 * 1024)
            os.chmod(target, 0o644 | (0o111 if (info.external_attr >> 16) & 0o100 else 0))
    folder = base / project.root if project.root else base
    (folder / "output").mkdir(exist_ok=True)
    return folder
