"""A tiny pure-Python package, `niasprobe`, built as wheels of any version for a local package index
(a folder used through UV_FIND_LINKS and UV_NO_INDEX)."""
from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def probe_wheel(folder: Path, version: str) -> Path:
    """A pure-Python wheel of the package `niasprobe` at `version`, as a local index would hold it."""
    files = {"niasprobe/__init__.py": f"VERSION = {version!r}\n",
             f"niasprobe-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: niasprobe\nVersion: {version}\n",
             f"niasprobe-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                     "Tag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data.encode()).digest()).rstrip(b'=').decode()}"
                     f",{len(data.encode())}\n" for name, data in files.items())
    files[f"niasprobe-{version}.dist-info/RECORD"] = record + f"niasprobe-{version}.dist-info/RECORD,,\n"
    path = folder / f"niasprobe-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return path
