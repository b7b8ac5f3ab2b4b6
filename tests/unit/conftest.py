"""Fixtures shared by the unit tests: small zips built entry by entry, and generous limits."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable

import pytest

from nias.archive import ZipLimits

MIB = 1024 * 1024


@pytest.fixture
def limits() -> ZipLimits:
    """Limits far above what the sample zips need, so only the rule under test can trip."""
    return ZipLimits(max_files=100, max_unpacked_bytes=64 * MIB, max_ratio=200)


@pytest.fixture
def make_zip(tmp_path: Path) -> Callable[..., Path]:
    """Build `<tmp>/<name>` from entries: a name maps to its content, or to (ZipInfo, content)."""
    counter = iter(range(1_000_000))

    def build(entries: dict[str, bytes | str] | list, name: str | None = None) -> Path:
        path = tmp_path / (name or f"upload-{next(counter)}.zip")
        items = entries.items() if isinstance(entries, dict) else entries
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for key, content in items:
                if isinstance(key, zipfile.ZipInfo):
                    key.compress_type = key.compress_type or zipfile.ZIP_DEFLATED
                    archive.writestr(key, content)
                else:
                    archive.writestr(key, content)
        return path

    return build
