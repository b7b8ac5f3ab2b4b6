"""Result zips opened once: the central directory of a result is parsed on its first request and
kept for the next ones (a file listing, then each preview, reads it again and again otherwise).

An entry is keyed by the file's identity (device, inode, size, mtime), so a result replaced on
disk is read anew. A bounded number of zips stays open; the least recently used is closed, which
does not cut a download in progress (zipfile keeps the file open until its readers are done).
"""
from __future__ import annotations

import os
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

CAPACITY = 32


@dataclass(frozen=True)
class IndexedResult:
    archive: zipfile.ZipFile  # opened for reading; `open(info)` is safe from several threads
    files: tuple[zipfile.ZipInfo, ...]  # regular members, sorted by name

    def find(self, name: str) -> zipfile.ZipInfo | None:
        info = self.archive.NameToInfo.get(name)
        return None if info is None or info.is_dir() else info


class ResultIndex:
    def __init__(self, capacity: int = CAPACITY):
        self._capacity = capacity
        self._lock = threading.Lock()
        self._open: OrderedDict[tuple, IndexedResult] = OrderedDict()

    def open(self, path: Path) -> IndexedResult:
        """The parsed result at `path`; raises OSError or zipfile.BadZipFile as zipfile does."""
        info = os.stat(path)
        key = (str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            found = self._open.get(key)
            if found is not None:
                self._open.move_to_end(key)
                return found
        archive = zipfile.ZipFile(path)
        indexed = IndexedResult(archive, tuple(sorted((m for m in archive.infolist() if not m.is_dir()),
                                                      key=lambda m: m.filename)))
        with self._lock:
            for stale in [k for k in self._open if k[0] == key[0] and k != key]:
                self._open.pop(stale).archive.close()
            self._open[key] = indexed
            while len(self._open) > self._capacity:
                self._open.popitem(last=False)[1].archive.close()
        return indexed

    def close(self) -> None:
        with self._lock:
            while self._open:
                self._open.popitem()[1].archive.close()
