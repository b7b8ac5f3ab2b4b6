"""A record of exactly what a job ran: its upload, its data sets, where its project came from (a
command or a git commit), the unit, host and executor, the Python version and the exact packages.

The backend builds it from the job (its JSON's `provenance`, `GET /api/jobs/<id>/provenance`); the
unit builds the same record and writes it into the result zip as `.nias/provenance.json`. Its
`packages` are what "re-run exactly" pins (`pins_of`: `name==version` lines).
"""
from __future__ import annotations

import json
import re
from typing import Any

from nias.ran_with import MAX_PACKAGES, PACKAGE, VERSION

PROVENANCE_NAME = ".nias/provenance.json"  # in the result zip, beside output/'s files
PIN = re.compile(rf"({PACKAGE.pattern})==({VERSION.pattern})")
ORIGIN_FIELDS = ("command", "command_digest", "git_url", "git_commit")


def origin_of(job: dict) -> dict:
    """Where a job's project came from, as the job message carries it: a command and its digest,
    or a git repository and commit; only the keys that are known."""
    git = (job.get("source") or {}).get("git") or {}
    values = {"command": job.get("command"), "command_digest": job.get("command_digest"),
              "git_url": git.get("url"), "git_commit": git.get("commit")}
    return {key: value for key, value in values.items() if value}


def provenance_record(upload_sha256: str, origin: dict, ran_with: dict | None, executor: str | None,
                      datasets: list | None = None) -> dict:
    """The record: `ran_with` (nias.ran_with) is None until the job's environment was built;
    `datasets` the job's (or its message's) data sets, of which the name and sha256 are kept."""
    ran = ran_with or {}
    command = {"name": origin["command"], "digest": origin.get("command_digest")} if origin.get("command") else None
    git = {"url": origin["git_url"], "commit": origin.get("git_commit")} if origin.get("git_url") else None
    return {
        "upload_sha256": upload_sha256,
        "datasets": [{"name": entry["name"], "sha256": entry["sha256"]} for entry in datasets or []],
        "command": command,
        "git": git,
        "unit": ran.get("unit"),
        "host": ran.get("host"),
        "executor": executor,
        "python": ran.get("python"),
        "packages": [list(pair) for pair in ran.get("packages") or []] if ran_with is not None else None,
    }


def encode_provenance(record: dict) -> bytes:
    return json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"


def pins_of(ran_with: dict | None) -> list[str]:
    """`name==version` of every package a job ran with; empty when none was recorded."""
    return [f"{name}=={version}" for name, version in (ran_with or {}).get("packages") or []]


def check_pins(value: Any) -> str | None:
    """None when `value` is a list of at most MAX_PACKAGES `name==version` texts, else what is wrong."""
    if not isinstance(value, list) or len(value) > MAX_PACKAGES:
        return f"must be a list of at most {MAX_PACKAGES} pins"
    if not all(isinstance(pin, str) and PIN.fullmatch(pin) for pin in value):
        return "must list pins as name==version"
    return None


def check_origin(value: Any) -> str | None:
    """None when `value` holds only ORIGIN_FIELDS, each a short text."""
    if not isinstance(value, dict) or not set(value) <= set(ORIGIN_FIELDS):
        return f"must be an object of {', '.join(ORIGIN_FIELDS)}"
    if not all(isinstance(item, str) and 0 < len(item) <= 500 and "\0" not in item for item in value.values()):
        return "must hold short texts"
    return None
