"""Commands: projects the admin keeps on the server, with named, typed parameters.

    <NIAS_COMMANDS_DIR>/<folder>/command.toml   the declaration (see docs/api.md, "Commands")
    <NIAS_COMMANDS_DIR>/<folder>/code.py        the project, as in an upload, with any other files

The folder is read again whenever a file in it changes (its names, sizes and mtimes), so a
command added, changed or removed is seen without a restart. A folder whose declaration is
broken is kept aside with its reason; the others are unaffected.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nias.errors import NiasError

from backend.command_parameters import MAX_TEXT, BadDeclaration, Parameter, bad_param, parse_parameter

logger = logging.getLogger(__name__)

DECLARATION = "command.toml"
COMMAND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
COMMAND_KEYS = {"name", "title", "description"}
MAX_FILES = 2_000  # per command folder


class UnknownCommand(NiasError):
    """Raised when no usable command has the given name."""

    code = "command_not_found"
    status = 404


@dataclass(frozen=True)
class Command:
    name: str
    folder: Path
    title: str
    description: str
    parameters: tuple[Parameter, ...]
    digest: str
    files: tuple[str, ...] = field(default=())

    def to_json(self) -> dict:
        return {"name": self.name, "title": self.title, "description": self.description, "digest": self.digest,
                "parameters": [parameter.to_json() for parameter in self.parameters],
                "links": {"jobs": f"/api/commands/{self.name}/jobs"}}

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """The job's parameters: each given one checked against its declaration, defaults filled in.
        A name not declared, a wrong type, a value out of range or a missing required one is a 400."""
        declared = {parameter.name: parameter for parameter in self.parameters}
        for name in given:
            if name not in declared:
                raise bad_param(name, f"is not a parameter of {self.name} "
                                      f"(it has {', '.join(declared) or 'none'})", problem="unknown")
        resolved: dict[str, Any] = {}
        for parameter in self.parameters:
            if parameter.name in given:
                value = given[parameter.name]
                problem = parameter.problem(value)
                if problem:
                    raise bad_param(parameter.name, problem, problem="invalid")
                resolved[parameter.name] = value
            elif parameter.default is not None:
                resolved[parameter.name] = parameter.default
            elif parameter.required:
                raise bad_param(parameter.name, f"is required by {self.name}", problem="missing")
        return resolved


def parse_declaration(folder: Path, text: str) -> tuple[str, str, str, tuple[Parameter, ...]]:
    """(name, title, description, parameters) from a command.toml's text; BadDeclaration if unusable."""
    try:
        body = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadDeclaration(f"{DECLARATION} is not valid TOML: {exc}") from None
    unknown = set(body) - {"command", "parameters"}
    if unknown:
        raise BadDeclaration(f"{DECLARATION} has unknown tables: {', '.join(sorted(unknown))}")
    head, raw_parameters = body.get("command", {}), body.get("parameters", [])
    if not isinstance(head, dict) or not isinstance(raw_parameters, list):
        raise BadDeclaration("[command] must be a table and [[parameters]] a list of tables")
    if set(head) - COMMAND_KEYS:
        raise BadDeclaration(f"[command] has unknown keys: {', '.join(sorted(set(head) - COMMAND_KEYS))}")
    name = head.get("name", folder.name)
    if not isinstance(name, str) or not COMMAND_NAME.fullmatch(name):
        raise BadDeclaration(f"the command's name {name!r} is not letters, digits and _.- (at most 64)")
    title, description = head.get("title", name), head.get("description", "")
    if not isinstance(title, str) or not isinstance(description, str):
        raise BadDeclaration("title and description must be text")
    parameters = tuple(parse_parameter(raw) for raw in raw_parameters)
    names = [parameter.name for parameter in parameters]
    if len(set(names)) != len(names):
        raise BadDeclaration("two parameters have the same name")
    return name, title[:200], description[:MAX_TEXT], parameters


def project_files(folder: Path) -> list[str]:
    """The command's regular files, relative and sorted; links and special files are left out."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(top, d)) and d != "__pycache__")
        for name in files:
            path = Path(top) / name
            if path.is_file() and not path.is_symlink():
                found.append(path.relative_to(folder).as_posix())
            if len(found) > MAX_FILES:
                raise BadDeclaration(f"the folder holds more than {MAX_FILES} files")
    return sorted(found)


def files_digest(folder: Path, files: list[str]) -> str:
    """SHA-256 over every file's name and content: the same digest means the same project."""
    digest = hashlib.sha256()
    for relative in files:
        digest.update(relative.encode() + b"\0")
        with open(folder / relative, "rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def load_command(folder: Path) -> Command:
    declaration = folder / DECLARATION
    try:
        text = declaration.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadDeclaration(f"{DECLARATION} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    name, title, description, parameters = parse_declaration(folder, text)
    files = project_files(folder)
    if "code.py" not in files:
        raise BadDeclaration("the folder has no code.py")
    return Command(name, folder, title, description, parameters, files_digest(folder, files), tuple(files))


@dataclass(frozen=True)
class Broken:
    folder: str
    reason: str

    def to_json(self) -> dict:
        return {"folder": self.folder, "reason": self.reason}


class CommandBook:
    """The commands in a folder, read again when anything in it changes."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._commands: dict[str, Command] = {}
        self._broken: list[Broken] = []

    def _current_stamp(self) -> tuple:
        entries = []
        try:
            for top, dirs, files in os.walk(self.folder):
                dirs.sort()
                for name in sorted(dirs + files):
                    try:
                        info = os.lstat(os.path.join(top, name))
                    except OSError:
                        continue
                    entries.append((top, name, info.st_mtime_ns, info.st_size))
                if len(entries) > 50 * MAX_FILES:
                    break
        except OSError:
            pass
        return tuple(entries)

    def _reload(self) -> None:
        commands: dict[str, Command] = {}
        broken: list[Broken] = []
        folders = sorted(path for path in self.folder.iterdir() if path.is_dir()) if self.folder.is_dir() else []
        for folder in folders:
            try:
                command = load_command(folder)
            except BadDeclaration as exc:
                broken.append(Broken(folder.name, exc.message))
                continue
            except OSError as exc:
                broken.append(Broken(folder.name, f"the folder cannot be read: {exc.strerror or exc}"))
                continue
            if command.name in commands:
                broken.append(Broken(folder.name, f"the name {command.name!r} is taken by the folder "
                                                  f"{commands[command.name].folder.name}"))
                continue
            commands[command.name] = command
        self._commands, self._broken = commands, broken
        logger.info("Commands: %d usable, %d broken in %s", len(commands), len(broken), self.folder)

    def _fresh(self) -> None:
        with self._lock:
            stamp = self._current_stamp()
            if stamp != self._stamp:
                self._reload()
                self._stamp = stamp

    def usable(self) -> list[Command]:
        self._fresh()
        return list(self._commands.values())

    def broken(self) -> list[Broken]:
        self._fresh()
        return list(self._broken)

    def get(self, name: str) -> Command:
        self._fresh()
        command = self._commands.get(name)
        if command is None:
            raise UnknownCommand(f"No command is named {name!r}.")
        return command
