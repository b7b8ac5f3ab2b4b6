"""Hypothesis strategies for hostile project zips, the writer that builds them byte for byte,
and an oracle for entries that must never be accepted (independent of `nias.archive`).

Names are kept as raw bytes so a zip can hold what no well-behaved writer produces: names that
are not UTF-8 (the UTF-8 flag, bit 0x800, off, so readers decode them as cp437), NUL and control
characters, backslash and drive-letter paths. A name may contain CANARY, which the writer
replaces with the absolute path of a folder the test watches (and CANARY_NAME with its name,
for `..` paths that climb to it), so hostile names aim where a careless extraction would land.
"""
from __future__ import annotations

import io
import os
import re
import stat
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

from hypothesis import strategies as st

CANARY = "<canary>"
CANARY_NAME = "<canary-name>"
UTF8_FLAG = 0x800
ENCRYPTED_FLAG = 0x1
FILE, DIRECTORY, SYMLINK = "file", "directory", "symlink"
MIB = 1024 * 1024
# Python's zipfile reads entries up to version 6.3 and raises NotImplementedError beyond it.
EXTRACT_VERSIONS = (20,) * 12 + (45, 63, 64, 99, 255)
ZERO_RUNS = (0,) * 12 + (1, 10_000, 600_000, 1_100_000, 3 * MIB, 61 * MIB)


@dataclass(frozen=True)
class Entry:
    name: bytes
    utf8: bool = False  # sets bit 0x800: the name is UTF-8, else readers decode it as cp437
    kind: str = FILE
    data: bytes = b""
    zeros: int = 0  # a run of zero bytes appended to `data`: a cheap way to extreme ratios
    deflate: bool = True
    encrypted: bool = False
    extract_version: int = 20
    inner: tuple["Entry", ...] | None = None  # a zip inside the zip, built from these entries

    def text_name(self) -> str:
        """The name as a zip reader decodes it (before any NUL truncation)."""
        return self.name.decode("utf-8" if self.utf8 else "cp437", errors="replace")


@dataclass(frozen=True)
class HostileZip:
    entries: tuple[Entry, ...]
    mangle: tuple = ()  # ("truncate", n) | ("prefix", b) | ("append", b) | ("flip", from_end, byte)
    upload_filename: str = "project.zip"
    job_name: str | None = None
    comment: bytes = b""


# -- names ------------------------------------------------------------------------------------

def _named(name: str, **fields) -> Entry:
    raw = name.encode("utf-8")
    return Entry(raw, utf8=not name.isascii(), **fields)


TRAVERSALS = (
    "..", "../", "../x", "../../x", "a/../../x", "a/../x", "./../x", "a/b/../../../x", "x/..",
    "..\\x", "a\\..\\..\\x", "..\\..\\x", "a/..\\..\\x", "../code.py",
)
ABSOLUTES = (
    "/etc/x", "/", "//x", "/code.py", "C:\\x", "c:/x", "C:x", "\\\\server\\share\\x", "\\x",
    f"{CANARY}/pwned", f"{CANARY}\\pwned", f"{CANARY}/../{CANARY_NAME}/pwned",
)
NEAR_MISSES = (
    "...", "....", ".../x", "..x", "x..", "a/./b", "a//b", "./code.py", ".hidden", "x:y",
    "\uff0e\uff0e/x", "\u2024\u2024/x", "..\u2215x", "a\u202e/b", "con", "aux.txt", "CODE.PY",
)
ORDINARY = (
    "code.py", "requirements.txt", "data.csv", "output/", "output/keep.txt", "src/util.py",
    "a b.txt", "dir/", "__MACOSX/._code.py", ".DS_Store", "Thumbs.db", "._x", "code.py/",
)
CONTROL = ("\x00", "\x01", "\x07", "\x1b[31m", "\x1f", "\x7f", "\n", "\r", "\t")
SEGMENT = st.text(alphabet="abcxyz_-.0189", min_size=1, max_size=8)


def _canary_traversal(depth: int, backslash: bool) -> str:
    name = "../" * depth + f"{CANARY_NAME}/pwned"
    return name.replace("/", "\\") if backslash else name


def _with_control(head: str, mark: str, tail: str) -> str:
    return f"{head}{mark}{tail}"


dangerous_names = st.one_of(
    st.sampled_from(TRAVERSALS),
    st.sampled_from(ABSOLUTES),
    st.builds(_canary_traversal, st.integers(1, 7), st.booleans()),
)
odd_names = st.one_of(
    st.sampled_from(NEAR_MISSES),
    st.builds(_with_control, SEGMENT, st.sampled_from(CONTROL), st.sampled_from(("", "x", "code.py"))),
    st.builds(lambda n, c: c * n, st.sampled_from((255, 256, 1024, 4096, 16384)), st.sampled_from("ax")),
    st.builds(lambda n: "a/" * n + "x.txt", st.sampled_from((100, 2000))),
    st.text(min_size=1, max_size=30),
)
text_names = st.one_of(
    st.sampled_from(ORDINARY),
    dangerous_names,
    st.builds(_with_control, SEGMENT, st.just("\x00"), st.sampled_from(("/../../x", "/etc/x"))),
    st.builds(lambda n: "a/" * n + "code.py", st.sampled_from((100, 2000))),
    odd_names,
)


@st.composite
def raw_names(draw, *, tame: bool = False) -> tuple[bytes, bool]:
    """(name bytes, UTF-8 flag): UTF-8 text, cp437 bytes, or bytes under a false UTF-8 flag.
    Tame names break no rule on purpose: odd, but neither `..`, absolute nor mislabelled."""
    ways = ("text",) * 6 + (("binary",) if tame else ("binary", "binary_traversal", "mislabelled"))
    how = draw(st.sampled_from(ways))
    if how == "text":
        name = draw(odd_names if tame else text_names)
        return name.encode("utf-8"), not name.isascii()
    raw = draw(st.binary(min_size=1, max_size=40))
    if how == "binary_traversal":
        return draw(st.sampled_from((b"../", b"..\\", b"/", b"a/../../"))) + raw, False
    return raw, how == "mislabelled"


# -- entries and zips -------------------------------------------------------------------------

@st.composite
def entries(draw, *, nested: bool = True, tame: bool = False) -> Entry:
    raw, utf8 = draw(raw_names(tame=tame))
    kind = draw(st.sampled_from((FILE,) * 6 + (DIRECTORY,) + (() if tame else (SYMLINK,))))
    zeros = draw(st.sampled_from(ZERO_RUNS))
    inner = None
    if nested and kind == FILE and draw(st.integers(0, 9)) == 0:
        inner = tuple(draw(st.lists(entries(nested=False), min_size=1, max_size=4)))
    data = draw(st.sampled_from((b"", b"print('hi')\n", b"/etc/passwd", b"../../..", CANARY.encode())))
    return Entry(
        raw, utf8=utf8, kind=kind, data=data, zeros=zeros,
        deflate=zeros > 4 * MIB or draw(st.booleans()),
        encrypted=not tame and draw(st.integers(0, 19)) == 0,
        extract_version=draw(st.sampled_from(EXTRACT_VERSIONS[:-3] if tame else EXTRACT_VERSIONS)),
        inner=inner,
    )


CODE = (b"print('hello')\n", b"", b"\xff\xfe not python", b"import sys; sys.exit(3)\n")
TOP_FOLDERS = ("proj", "my analysis", "\u00fcn\u00ef", "x" * 300, "..", ".", "a/b")


def _under(top: str, entry: Entry) -> Entry:
    return replace(entry, name=f"{top}/".encode("utf-8") + entry.name, utf8=entry.utf8 or not top.isascii())


@st.composite
def project_skeletons(draw) -> tuple[str | None, tuple[Entry, ...]]:
    """code.py at the root, under one top folder, in two places, too deep, or missing."""
    layout = draw(st.sampled_from(("root", "root", "top", "top", "none", "both", "deep")))
    code = draw(st.sampled_from(CODE))
    top = draw(st.sampled_from(TOP_FOLDERS))
    files = [_named("code.py", data=code)] if layout != "none" else [_named("main.py", data=code)]
    if draw(st.booleans()):
        files.append(_named("requirements.txt", data=b""))
    if layout in ("top", "both"):
        files = [_under(top, f) for f in files]
    if layout == "both":
        files.append(_named("code.py", data=code))
    if layout == "deep":
        files = [_under(f"{top}/inner", f) for f in files]
    return (top if layout in ("top", "deep") else None), tuple(files)


def _fillers(count: int) -> list[Entry]:
    return [_named(f"data/{i}.txt", data=str(i).encode()) for i in range(count)]


@st.composite
def hostile_zips(draw) -> HostileZip:
    """Everything at once: a project skeleton, hostile entries, duplicates, bombs, corruption.
    Half of them are tame (odd names, bombs and nesting, but nothing that breaks a rule on
    purpose), so accepted uploads and the later rules are reached as often as the first ones."""
    tame = draw(st.booleans())
    top, skeleton = draw(project_skeletons())
    extra = draw(st.lists(entries(tame=tame), max_size=6))
    if top is not None:
        extra = [_under(top, e) if tame or draw(st.booleans()) else e for e in extra]
    listed = list(skeleton) + extra + _fillers(draw(st.sampled_from((0,) * 8 + (45, 49, 50, 60))))
    if not tame and draw(st.integers(0, 5)) == 0:
        listed.append(draw(st.sampled_from(listed)))  # the same name twice
    order = draw(st.permutations(range(len(listed))))
    mangle = () if tame else draw(st.sampled_from(((),) * 6 + ("truncate", "prefix", "append", "flip")))
    if mangle == "truncate":
        mangle = ("truncate", draw(st.integers(0, 400)))
    elif mangle in ("prefix", "append"):
        mangle = (mangle, draw(st.binary(min_size=1, max_size=64)))
    elif mangle == "flip":
        mangle = ("flip", draw(st.integers(1, 300)), draw(st.integers(0, 255)))
    return HostileZip(
        entries=tuple(listed[i] for i in order),
        mangle=mangle,
        upload_filename=draw(st.sampled_from(
            ("project.zip", "../../etc/passwd.zip", "..\\..\\x.zip", "/abs/x.zip", "\u00fcn\u00ef.zip", "a\tb", "x"))),
        job_name=draw(st.none() | st.text(max_size=300)),
        comment=draw(st.sampled_from((b"", b"\x00\xff", CANARY.encode() * 3))),
    )


@st.composite
def otherwise_valid_projects_with_one_dangerous_entry(draw) -> HostileZip:
    """A project the rules accept, plus one `..`, absolute or symlink entry somewhere in it."""
    top = draw(st.none() | st.just("proj"))
    listed = [_named("code.py", data=b"print('hello')\n"), _named("data.csv", data=b"a,b\n1,2\n")]
    if draw(st.booleans()):
        listed.append(_named("output/", kind=DIRECTORY))
    if top:
        listed = [_under(top, e) for e in listed]
    if draw(st.booleans()):
        name = draw(dangerous_names)
        bad = _named(name, kind=draw(st.sampled_from((FILE, DIRECTORY))), data=b"x",
                     deflate=draw(st.booleans()))
        if top and draw(st.booleans()) and not name.startswith(("/", "\\", CANARY)) and name[1:2] != ":":
            bad = _under(top, bad)
    else:
        name = draw(st.sampled_from(("output/passwd", "link", "output/", "data", "__MACOSX/l")))
        bad = _named(f"{top}/{name}" if top else name, kind=SYMLINK,
                     data=draw(st.sampled_from((b"/etc/passwd", b"../../..", CANARY.encode()))))
    listed.insert(draw(st.integers(0, len(listed))), bad)
    return HostileZip(entries=tuple(listed))


# -- writing ------------------------------------------------------------------------------------

class _RawNameInfo(zipfile.ZipInfo):
    """A ZipInfo written with exactly our name bytes and flag bits (zipfile re-encodes names)."""

    raw_name: bytes = b""
    utf8: bool = False
    encrypted: bool = False

    def _encodeFilenameFlags(self):
        flags = self.flag_bits & ~UTF8_FLAG
        return self.raw_name, flags | (UTF8_FLAG if self.utf8 else 0) | (ENCRYPTED_FLAG if self.encrypted else 0)


def _aimed(raw: bytes, canary: Path) -> bytes:
    return raw.replace(CANARY.encode(), str(canary).encode()).replace(CANARY_NAME.encode(), canary.name.encode())


def _mode_bits(kind: str) -> int:
    if kind == SYMLINK:
        return (stat.S_IFLNK | 0o777) << 16
    if kind == DIRECTORY:
        return (stat.S_IFDIR | 0o755) << 16 | 0x10
    return (stat.S_IFREG | 0o644) << 16


def _zip_bytes(entries: tuple[Entry, ...], canary: Path, comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # duplicate names are the point
        for entry in entries:
            raw = _aimed(entry.name, canary)
            info = _RawNameInfo(raw.decode("latin-1").replace("\x00", "_") or "_")
            info.raw_name, info.utf8, info.encrypted = raw, entry.utf8, entry.encrypted
            info.compress_type = zipfile.ZIP_DEFLATED if entry.deflate else zipfile.ZIP_STORED
            info.external_attr = _mode_bits(entry.kind)
            info.extract_version = entry.extract_version
            data = _aimed(entry.data, canary)
            if entry.inner is not None:
                data = _zip_bytes(entry.inner, canary)
            archive.writestr(info, data + bytes(entry.zeros))
        archive.comment = _aimed(comment, canary)
    return buffer.getvalue()


def _mangled(data: bytes, mangle: tuple) -> bytes:
    if not mangle:
        return data
    kind = mangle[0]
    if kind == "truncate":
        return data[: max(len(data) - mangle[1] - 1, 0)]
    if kind == "prefix":
        return mangle[1] + data
    if kind == "append":
        return data + mangle[1]
    position = max(len(data) - mangle[1], 0)
    return data[:position] + bytes([mangle[2]]) + data[position + 1:]


def write_zip(spec: HostileZip, path: Path, canary: Path) -> Path:
    """Write the zip; unmangled zips are read back to prove they hold the names we meant."""
    data = _zip_bytes(spec.entries, canary, spec.comment)
    path.write_bytes(_mangled(data, spec.mangle))
    if not spec.mangle:
        meant = [_aimed(e.name, canary) for e in spec.entries]
        written = _names_as_read(path)
        if written is not None:
            expected = [replace(e, name=m).text_name() for e, m in zip(spec.entries, meant)]
            assert [i.orig_filename for i in written] == expected, "the zip does not hold the names we meant"
    return path


# -- the oracle ---------------------------------------------------------------------------------

def _names_as_read(path: Path) -> list[zipfile.ZipInfo] | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.infolist()
    except Exception:  # an unreadable zip has no names to judge
        return None


DRIVE = re.compile(r"^[A-Za-z]:")


def dangerous_entries(path: Path) -> list[str]:
    """Entries with a `..` component, an absolute path or a symlink, as a zip reader sees them.

    Python's zipfile (what the server reads zips with) ends a name at its first NUL byte, so
    `a\\0/../x` is the entry `a`: the name is judged as it will be used.
    """
    found = []
    for info in _names_as_read(path) or []:
        name = info.filename
        parts = re.split(r"[/\\]", name)
        if ".." in parts or name.startswith(("/", "\\")) or DRIVE.match(name):
            found.append(name)
        elif stat.S_ISLNK(info.external_attr >> 16):
            found.append(name)
    return found


def landing_spots(path: Path, bases: list[Path], inside: Path) -> set[Path]:
    """Where the zip's `..` and absolute names would land outside `inside` if joined to a base,
    with backslashes read as they are and as separators."""
    spots = set()
    for name in dangerous_entries(path):
        for variant in {name, name.replace("\\", "/")}:
            for base in bases:
                spot = Path(os.path.normpath(base / variant))
                if spot != inside and inside not in spot.parents:
                    spots.add(spot)
    return spots
