"""What a job's requirements.txt may say: named packages from the admin's index, nothing else.

Installing runs on the processing unit as the unit's user, outside the job's sandbox. So a line
that names a local path, a URL, a VCS checkout or another requirements file, or an option that
changes the index, would let a job's upload run build code or read files as the unit. Such
lines are refused at upload (by the backend) and again before an install (by the unit).
Wheels only, by default, for the same reason: building a source distribution runs its code
(`NIAS_BUILD_SDISTS=1` allows it, for servers whose users are trusted).
"""
from __future__ import annotations

import re

from packaging.requirements import InvalidRequirement, Requirement

from nias.errors import BadUpload

INLINE_COMMENT = re.compile(r"(^|\s)#.*$")
# The one per-line option kept: a hash pins the exact file, it names no other source.
HASH_OPTION = re.compile(r"\s+--hash[=\s]+\S+")
MAX_LINES = 500


def normalise_requirements(text: str) -> list[str]:
    """The requirement lines that matter: no comments or blanks, spaces folded, sorted, unique."""
    lines = set()
    for raw in text.splitlines():
        line = INLINE_COMMENT.sub("", raw).strip()  # pip's rule: '#' at the start or after whitespace
        if line:
            lines.add(" ".join(line.split()))
    return sorted(lines)


def _refuse(number: int, line: str, why: str) -> BadUpload:
    return BadUpload(f"requirements.txt line {number} ({line[:80]!r}) {why} Name packages from the package "
                     "index only, e.g. 'numpy==2.1.0' or 'scipy>=1.13'.", code="unsafe_requirements")


def check_requirements(text: str) -> list[str]:
    """The normalised requirements, or BadUpload naming the first line that is not a plain package."""
    numbered = [(n, INLINE_COMMENT.sub("", raw).strip()) for n, raw in enumerate(text.splitlines(), start=1)]
    numbered = [(n, " ".join(line.split())) for n, line in numbered if line]
    if len(numbered) > MAX_LINES:
        raise BadUpload(f"requirements.txt has {len(numbered)} requirements; at most {MAX_LINES} are allowed.",
                        code="unsafe_requirements")
    for number, line in numbered:
        if line.startswith("-"):
            raise _refuse(number, line, "is an option; the admin chooses the index and its settings.")
        try:
            requirement = Requirement(HASH_OPTION.sub("", line))
        except InvalidRequirement:
            raise _refuse(number, line, "is not a package name with an optional version.") from None
        if requirement.url:
            raise _refuse(number, line, "installs from a URL or a path.")
    return normalise_requirements(text)
