"""Zipping a project folder for upload, leaving out what its `.niasignore` names.

`.niasignore` uses `.gitignore`'s patterns (one a line, `#` comments, `!` to keep, `dir/` for
folders), read with pathspec. Version-control folders, caches and virtual environments are left
out even without one. Links are left out too (the server refuses them), and listed for the caller.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pathspec

from nias.errors import BadUpload

IGNORE_FILE = ".niasignore"
ALWAYS_IGNORED = (".git/", ".hg/", ".svn/", "__pycache__/", "*.pyc", ".venv/", "venv/", ".ipynb_checkpoints/",
                  ".DS_Store", IGNORE_FILE)


def ignore_rules(folder: Path) -> pathspec.GitIgnoreSpec:
    lines = list(ALWAYS_IGNORED)
    rules = folder / IGNORE_FILE
    if rules.is_file():
        lines += rules.read_text(encoding="utf-8", errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def project_files(folder: Path) -> tuple[list[str], list[str]]:
    """The project's files to send (paths relative to `folder`, sorted) and the links left out."""
    rules = ignore_rules(folder)
    kept, links = [], []
    for top, dirs, files in os.walk(folder):
        relative_top = Path(top).relative_to(folder)
        for name in list(dirs):
            relative = (relative_top / name).as_posix()
            if rules.match_file(relative + "/") or (Path(top) / name).is_symlink():
                if (Path(top) / name).is_symlink():
                    links.append(relative)
                dirs.remove(name)
        for name in files:
            relative = (relative_top / name).as_posix()
            if rules.match_file(relative):
                continue
            if (Path(top) / name).is_symlink():
                links.append(relative)
            else:
                kept.append(relative)
    return sorted(kept), sorted(links)


def zip_folder(folder: Path, destination: Path) -> tuple[Path, list[str]]:
    """Zip the project in `folder` into `destination`; returns it and the links left out.
    Raises BadUpload when the folder has no `code.py` at its top (the server would refuse it)."""
    files, links = project_files(folder)
    if "code.py" not in files:
        raise BadUpload(f"{folder} has no code.py at its top (or .niasignore leaves it out).", code="no_code_py")
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in files:
            archive.write(folder / relative, relative)
    return destination, links
