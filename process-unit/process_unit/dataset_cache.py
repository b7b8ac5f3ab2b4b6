"""The unit's cache of data sets, one file per sha256 digest, fetched once and kept within a size limit.

`<cache>/<sha256>` is a complete, checked file; `<cache>/<sha256>.part` one being fetched. A data set
in use by a running job is never evicted; beyond the limit, the least recently used others go.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

Fetch = Callable[[Path], None]  # writes the data set, complete and checked, to the path it is given


class DatasetCache:
    def __init__(self, folder: Path, limit_bytes: int):
        self.folder = folder
        self.limit_bytes = limit_bytes
        self._lock = threading.Lock()
        self._in_use: dict[str, int] = {}
        self.fetches = 0  # how many data sets were fetched, not found here

    def path_of(self, sha256: str) -> Path:
        return self.folder / sha256

    @contextmanager
    def using(self, sha256: str, fetch: Fetch) -> Iterator[Path]:
        """The data set's file, fetched first unless cached; not evicted until the block ends."""
        with self._lock:
            self._in_use[sha256] = self._in_use.get(sha256, 0) + 1
        try:
            yield self._present(sha256, fetch)
        finally:
            with self._lock:
                self._in_use[sha256] -= 1
                if not self._in_use[sha256]:
                    del self._in_use[sha256]
            self.evict()

    def _present(self, sha256: str, fetch: Fetch) -> Path:
        target = self.path_of(sha256)
        with self._lock:  # one fetch per digest at a time
            if target.exists():
                os.utime(target)  # its last use, for the eviction order
                return target
            self.folder.mkdir(parents=True, exist_ok=True)
            part = target.with_name(f"{sha256}.part")
            fetch(part)
            os.replace(part, target)
            self.fetches += 1
            logger.info("Data set %s fetched into the cache (%d bytes)", sha256, target.stat().st_size)
        self.evict()
        return target

    def evict(self) -> list[str]:
        """Remove the least recently used data sets not in use until the cache fits its limit."""
        removed: list[str] = []
        with self._lock:
            if not self.folder.exists():
                return removed
            entries = [(entry.stat().st_mtime, entry) for entry in self.folder.iterdir()
                       if entry.is_file() and not entry.name.endswith(".part")]
            total = sum(entry.stat().st_size for _mtime, entry in entries)
            for _mtime, entry in sorted(entries, key=lambda pair: pair[0]):
                if total <= self.limit_bytes:
                    break
                if entry.name in self._in_use:
                    continue
                total -= entry.stat().st_size
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
                logger.info("Data set %s evicted from the cache", entry.name)
        return removed
