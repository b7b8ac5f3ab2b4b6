"""Where `make up`'s units run jobs: a place the job users can reach.

A unit started as root runs each job as a uid of its own, which must pass through every parent of
the job's work folder and of the environment cache. A data dir under a 0700 folder (`/root`, a
`mktemp -d`) cannot hold them; then, unless NIAS_WORK_DIR / NIAS_ENV_DIR are set, the work
folders and the environment cache go to `/var/tmp/nias-<hash of the data dir>/` (0711, the
launcher's user's). Uploads, results and `private/` stay in the data dir, closed to jobs.

Every unit gets a work folder of its own (`<work>/<unit>`): a unit removes the leftover work
folders in its work dir when it starts, so two units must never share one.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from nias.errors import ConfigurationError

PLACES = Path("/var/tmp")
PLACE_MODE = 0o711  # job users pass through; only its owner lists or changes it


@dataclass(frozen=True)
class WorkPlace:
    work_dir: Path  # each unit works in <work_dir>/<unit name>
    env_dir: Path  # the environment cache, shared by the units
    moved_to: Path | None = None  # the place chosen outside the data dir, if one was
    blocked_by: Path | None = None  # the data dir's parent job users cannot pass through

    def unit_work_dir(self, unit_name: str) -> Path:
        return self.work_dir / unit_name

    def describe(self) -> str:
        return f"work dirs in {self.work_dir}/<unit>, environments in {self.env_dir}"


def blocking_parent(path: Path, as_root: bool) -> Path | None:
    """The first folder on the way to `path` (itself included) that job users cannot pass through.

    Jobs run as another uid only when the units run as root; otherwise they run as the launcher's
    user, who can pass wherever it started from."""
    if not as_root:
        return None
    for folder in reversed([path, *path.parents]):
        try:
            mode = folder.stat().st_mode
        except FileNotFoundError:
            return None  # made later, with a mode job users pass through
        if not mode & stat.S_IXOTH:
            return folder
    return None


def place_for(data_dir: Path) -> Path:
    """One place per data dir, so two local deployments never share work folders."""
    return PLACES / f"nias-{hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]}"


def choose_work_place(environ: Mapping[str, str], data_dir: Path, as_root: bool) -> WorkPlace:
    """The work and environment folders: as set, in the data dir, or moved where job users reach them."""
    work, env = environ.get("NIAS_WORK_DIR", ""), environ.get("NIAS_ENV_DIR", "")
    blocked = blocking_parent(data_dir, as_root) if not (work and env) else None
    base = place_for(data_dir) if blocked else data_dir
    return WorkPlace(Path(work).resolve() if work else base / "work", Path(env).resolve() if env else base / "envs",
                     base if blocked else None, blocked)


def prepare_place(place: WorkPlace, uid: int | None = None) -> None:
    """Make the chosen place (0711) and its work folder; refuse one that another user made or that is a link."""
    if place.moved_to is None:
        return
    uid = os.geteuid() if uid is None else uid
    folders = [place.moved_to] + [place.work_dir] * (place.work_dir.parent == place.moved_to)
    for folder in folders:
        try:
            folder.mkdir(mode=PLACE_MODE)
        except FileExistsError:
            pass
        found = os.lstat(folder)
        if stat.S_ISLNK(found.st_mode) or not stat.S_ISDIR(found.st_mode) or found.st_uid != uid:
            what = "a link" if stat.S_ISLNK(found.st_mode) else f"owned by uid {found.st_uid}"
            raise ConfigurationError(
                f"{folder} exists but is not a folder of uid {uid} (it is {what}): remove it, or set NIAS_WORK_DIR "
                "and NIAS_ENV_DIR to folders job users can pass through")
        os.chmod(folder, PLACE_MODE)
