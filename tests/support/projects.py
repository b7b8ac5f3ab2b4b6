"""Sample research projects (tests/fixtures/projects/<name>/) zipped for upload."""
from __future__ import annotations

import zipfile
from pathlib import Path

PROJECTS = Path(__file__).resolve().parents[1] / "fixtures" / "projects"
# A command's declaration with a parameter of every type (docs/api.md's example, and more).
WELCH = (PROJECTS.parent / "commands" / "welch-psd.toml").read_text()

# A job that writes output/partial.txt at once, then counts for about two minutes: cancelled or
# paused mid-run, it has a result to keep.
WRITER_CODE = (
    "import time\n"
    "open('output/partial.txt', 'w').write('half of the work')\n"
    "for i in range(600):\n"
    "    print('step', i, flush=True)\n"
    "    time.sleep(0.2)\n"
)


def zip_project(name: str, destination: Path, *, top_folder: str | None = None) -> Path:
    """Zip the fixture project `name` into `destination`, optionally under one top folder."""
    source = PROJECTS / name
    destination.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                relative = path.relative_to(source).as_posix()
                archive.write(path, f"{top_folder}/{relative}" if top_folder else relative)
    return destination


def zip_entries(destination: Path, entries: dict[str, bytes | str]) -> Path:
    """A zip holding exactly these entries (for uploads the server must refuse or accept)."""
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return destination


PROVENANCE = ".nias/provenance.json"  # NIAS's record of the run, in every result zip


def own_files(members: dict[str, bytes]) -> dict[str, bytes]:
    """A result zip's members as the job wrote them: without NIAS's provenance record."""
    return {name: data for name, data in members.items() if name != PROVENANCE}
