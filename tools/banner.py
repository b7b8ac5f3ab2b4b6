"""The short block `make up` ends its start-up with: where NIAS is, how to sign in, where its data is,
how many units run and whether their jobs are sandboxed."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

# What the backend logs when it makes the first admin (backend/backend/accounts.py: ensure_admin).
ADMIN_CREATED = re.compile(r"No admin existed: created (?P<email>\S+)\. Sign in at \S+ with the password "
                           r"(?P<password>\S+) ")


@dataclass(frozen=True)
class Banner:
    url: str
    sign_in: str
    data_dir: str
    work: str  # where the units' work dirs and the environment cache are
    units: int
    unsandboxed: tuple[str, ...]  # the units that run jobs without a sandbox

    def text(self) -> str:
        if self.unsandboxed:
            sandbox = f"jobs run WITHOUT A SANDBOX on {', '.join(self.unsandboxed)} (see the warning above)"
        else:
            sandbox = "jobs run in a bubblewrap sandbox"
        return "\n".join([
            f"NIAS is up: {self.url}",
            f"  sign in:  {self.sign_in}",
            f"  data dir: {self.data_dir}",
            f"  jobs:     {self.work}",
            f"  units:    {self.units}; {sandbox}",
            "  Ctrl-C stops every service.",
        ])


def sign_in_hint(admin_email: str, admin_password_set: bool, backend_lines: Iterable[str]) -> str:
    """How the first admin signs in: the password made now, the variable that holds it, or where it was."""
    for line in backend_lines:
        made = ADMIN_CREATED.search(line)
        if made:
            return (f"{made['email']} with the password {made['password']} (made now, shown once: change it "
                    "on the Account page)")
    if admin_password_set:
        return f"{admin_email} with the password in NIAS_ADMIN_PASSWORD"
    return (f"{admin_email} (or another admin), with the password printed when that admin was made; "
            f"forgotten: .venv/bin/nias-admin set-password --email {admin_email}")
