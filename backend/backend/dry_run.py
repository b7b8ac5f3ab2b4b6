"""Checking a project without queueing it: the zip rules, that every .py file compiles, and that
requirements.txt resolves against the package index (nothing is installed or stored)."""
from __future__ import annotations

import logging
import os
import subprocess
import zipfile
import zlib

from nias.archive import read_requirements
from nias.errors import BadUpload
from nias.requirements import check_requirements as check_requirements_text
from nias.settings import Settings

from backend.uploads import Upload

logger = logging.getLogger(__name__)

MAX_SOURCE_BYTES = 5 * 1024 * 1024
MAX_SYNTAX_ERRORS = 10
RESOLVE_TIMEOUT_S = 120


def check_syntax(upload: Upload) -> dict:
    """Compile (never run) every .py file; report each syntax error with file, line and message."""
    errors = []
    root = upload.project.root
    with zipfile.ZipFile(upload.path) as archive:
        for info in upload.project.members:
            if not info.filename.endswith(".py") or info.file_size > MAX_SOURCE_BYTES:
                continue
            name = info.filename[len(root):]
            try:
                compile(archive.read(info), name, "exec", dont_inherit=True)
            except SyntaxError as exc:
                errors.append({"file": name, "line": exc.lineno, "column": exc.offset, "message": exc.msg,
                               "text": (exc.text or "").rstrip("\n")})
            except ValueError as exc:  # e.g. a NUL byte in the source
                errors.append({"file": name, "line": None, "column": None, "message": str(exc), "text": ""})
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError):
                errors.append({"file": name, "line": None, "column": None, "text": "",
                               "message": "This file could not be read from the zip (it is damaged)."})
            if len(errors) >= MAX_SYNTAX_ERRORS:
                break
    return {"check": "syntax", "ok": not errors, "errors": errors}


def check_requirements(upload: Upload, settings: Settings) -> dict:
    """Resolve requirements.txt with uv against the index, as the unit would, without installing."""
    if not upload.project.has_requirements:
        return {"check": "requirements", "ok": True, "message": "No requirements.txt: nothing to install."}
    try:
        text = read_requirements(upload.path, upload.project)
        check_requirements_text(text)  # what a real upload would refuse, before asking the index
    except BadUpload as exc:
        return {"check": "requirements", "ok": False, "code": exc.code, "message": exc.message}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(settings.data_dir), "NO_COLOR": "1",
           "UV_CACHE_DIR": str(settings.environments_dir / ".uv-cache"), "UV_PYTHON_DOWNLOADS": "never",
           **{k: v for k, v in os.environ.items() if k.startswith(("PIP_", "UV_INDEX", "SSL_CERT"))}}
    # As the units install: wheels only unless the admin allows builds (a build runs the package's code).
    wheels_only = [] if settings.build_sdists else ["--no-build"]
    argv = [settings.uv, "pip", "compile", "-", "--python", settings.job_python, "--no-header", "--no-annotate",
            "--quiet", *wheels_only]
    try:
        done = subprocess.run(argv, input=text, capture_output=True, text=True, env=env, timeout=RESOLVE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"check": "requirements", "ok": False,
                "message": f"Resolving the requirements took longer than {RESOLVE_TIMEOUT_S} s."}
    except OSError as exc:
        logger.error("uv could not start for a dry run: %s", exc)
        return {"check": "requirements", "ok": False, "message": "The requirements could not be checked here."}
    if done.returncode != 0:
        message = "\n".join(line.strip(" ×╰─▶│") for line in done.stderr.strip().splitlines() if line.strip())
        return {"check": "requirements", "ok": False, "message": message or "The requirements do not resolve."}
    resolved = [line for line in done.stdout.splitlines() if line and not line.startswith("#")]
    return {"check": "requirements", "ok": True, "resolved": resolved}


def check_project(upload: Upload, settings: Settings) -> dict:
    checks = [
        {"check": "zip", "ok": True, "root": upload.project.root or ".", "files": len(upload.project.members),
         "unpacked_bytes": upload.project.unpacked_bytes},
        check_syntax(upload),
        check_requirements(upload, settings),
    ]
    return {"dry_run": True, "ok": all(check["ok"] for check in checks), "checks": checks}


def zip_refused(error: BadUpload) -> dict:
    """The report for a zip the upload rules refuse: its code and message; nothing else can be checked."""
    check = {"check": "zip", "ok": False, "code": error.code, "message": error.message}
    return {"dry_run": True, "ok": False, "checks": [check]}
