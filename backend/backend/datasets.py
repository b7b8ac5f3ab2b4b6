"""Data sets: a user's data, uploaded once, stored once per sha256 digest, named by its owner.

The file lives at `<data>/datasets/<sha256>`; the store keeps who names it what and who it is shared with.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import time
from pathlib import Path

from nias.archive import inspect_zip
from nias.errors import BadRequest, BadUpload, Conflict, NiasError
from nias.settings import Settings
from nias.states import is_final

from backend.store import Store
from backend.uploads import file_digest, zip_limits

logger = logging.getLogger(__name__)

NAME_RULE = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


class DatasetNotFound(NiasError):
    code = "dataset_not_found"
    status = 404


def datasets_dir(settings: Settings) -> Path:
    return settings.data_dir / "datasets"


def checked_name(raw: str | None) -> str:
    """Lowercase letters, digits, '-', '_' and '.', starting with a letter or digit, at most 100 characters."""
    name = (raw or "").strip()
    if not NAME_RULE.fullmatch(name):
        raise BadRequest("A data set's name is 1 to 100 lowercase letters, digits, '-', '_' or '.', starting with "
                         "a letter or a digit.", code="bad_dataset_name", field="name")
    return name


def is_zip_dataset(part: Path, filename: str, settings: Settings) -> bool:
    """A `.zip` is checked under the project zip rules (no code.py needed) and unpacked for jobs."""
    if not filename.lower().endswith(".zip"):
        return False
    try:
        inspect_zip(part, zip_limits(settings))
    except BadUpload as exc:
        if exc.code != "no_code_py":  # every other rule is checked before code.py is looked for
            raise
    return True


def add_dataset(store: Store, settings: Settings, owner_id: str, name: str, part: Path, filename: str) -> dict:
    """Keep the received file as a data set: moved under its digest, or dropped if that digest is stored."""
    if store.get_dataset(owner_id, name) is not None:
        raise Conflict(f"You already have a data set named {name!r}; delete it or choose another name.",
                       code="dataset_exists")
    is_zip = is_zip_dataset(part, filename, settings)
    sha256, size = file_digest(part)
    folder = datasets_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / sha256
    if target.exists():
        part.unlink(missing_ok=True)
    else:
        os.replace(part, target)
    return store.insert_dataset(id=secrets.token_hex(8), owner_id=owner_id, name=name, sha256=sha256, size=size,
                                filename=Path(filename).name[:200] or name, is_zip=int(is_zip), created_at=time.time())


def jobs_naming(store: Store, user_id: str, dataset: dict) -> list[dict]:
    """The user's jobs that name this data set (by digest and name)."""
    rows, _total = store.list_jobs(owner=user_id, limit=100_000)
    return [row for row in rows if any(entry.get("sha256") == dataset["sha256"] and entry.get("name") == dataset["name"]
                                       for entry in row.get("datasets") or [])]


def remove_dataset(store: Store, settings: Settings, owner_id: str, name: str) -> None:
    dataset = store.get_dataset(owner_id, name)
    if dataset is None:
        raise DatasetNotFound(f"You have no data set named {name!r}.")
    busy = [job["id"] for job in jobs_naming(store, owner_id, dataset) if not is_final(job["state"])]
    if busy:
        raise Conflict(f"The data set {name!r} is used by {len(busy)} job(s) not yet ended ({', '.join(busy[:5])}); "
                       "delete it once they have ended.", code="dataset_in_use", jobs=busy)
    if store.delete_dataset(dataset["id"]) == 0:
        (datasets_dir(settings) / dataset["sha256"]).unlink(missing_ok=True)
