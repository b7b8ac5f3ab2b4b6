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
from nias.messages import MAX_JOB_DATASETS
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


def resolve_datasets(store: Store, user_id: str, names: object) -> list[dict]:
    """The data sets a submit names, resolved to {name, owner, sha256, size}: `name` is the user's own one
    (or, if they have none of that name, the one shared with them under it: two such is ambiguous), and
    `owner-email/name` names a shared one. A name the user cannot see is a 400 naming it."""
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(item, str) for item in names) or len(names) > MAX_JOB_DATASETS:
        raise BadRequest(f"datasets must be a JSON list of at most {MAX_JOB_DATASETS} data set names.",
                         code="bad_datasets", field="datasets")
    visible = store.visible_datasets(user_id)
    chosen: list[dict] = []
    for wanted in names:
        owner, _slash, name = wanted.strip().rpartition("/")
        matches = [row for row in visible if row["name"] == name
                   and (row["owner_email"] == owner.lower() if owner else True)]
        own = [row for row in matches if row["owner_id"] == user_id]
        if not owner and own:
            matches = own
        if len(matches) != 1:
            problem = "is shared with you by several users; name it as owner-email/name" if matches else \
                "is none of your data sets nor one shared with you"
            raise BadRequest(f"The data set {wanted!r} {problem}.", code="unknown_dataset", dataset=wanted)
        if any(entry["name"] == name for entry in chosen):
            raise BadRequest(f"Two data sets named {name!r}: a job sees each at data/<name>/.",
                             code="bad_datasets", dataset=wanted)
        row = matches[0]
        chosen.append({"name": name, "owner": row["owner_email"], "sha256": row["sha256"], "size": row["size"],
                       "filename": row["filename"]})
    return chosen
