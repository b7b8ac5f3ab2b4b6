"""A multipart/form-data upload streamed from disk with its length known, reporting its progress.

requests builds a `files=` body in memory; this body is read a block at a time as it is sent, so a
large project costs one block of memory and the CLI can draw a progress bar as it goes.
"""
from __future__ import annotations

import io
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

Progress = Callable[[int], None]  # bytes sent since the last call


class MultipartUpload(io.RawIOBase):
    """`fields` as form fields, then `path` as the file field `file_field`; readable once."""

    def __init__(self, fields: dict[str, str], file_field: str, path: Path, *, filename: str | None = None,
                 media_type: str = "application/zip", on_progress: Progress | None = None):
        super().__init__()
        boundary = secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={boundary}"
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'.encode()
            + value.encode() + b"\r\n" for name, value in fields.items())
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(file_field)}"; '
                 f'filename="{_quoted(filename or path.name)}"\r\nContent-Type: {media_type}\r\n\r\n').encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        self._file: BinaryIO = open(path, "rb")
        self._parts: list[BinaryIO] = [io.BytesIO(head), self._file, io.BytesIO(tail)]
        self.len = len(head) + os.fstat(self._file.fileno()).st_size + len(tail)  # requests reads `len`
        self._on_progress = on_progress

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = b""
        while self._parts and (size < 0 or len(chunk) < size):
            piece = self._parts[0].read(-1 if size < 0 else size - len(chunk))
            if not piece:
                self._parts.pop(0)
                continue
            chunk += piece
        if chunk and self._on_progress:
            self._on_progress(len(chunk))
        return chunk

    def close(self) -> None:
        self._file.close()
        super().close()


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
