"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO


def _default_mode() -> int:
    mask = os.umask(0)  # reading the umask means setting it; done once, at import
    os.umask(mask)
    return 0o666 & ~mask


# Temporary files are created 0600; the finished file gets the mode an open() would give it.
FILE_MODE = _default_mode()


def temporary_path(path: str | os.PathLike, suffix: str = "") -> str:
    """A new empty file beside `path`, with the usual permissions, to be renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=os.path.dirname(os.path.abspath(os.fspath(path))))
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, suffix: str = "") -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new contents into: it is a temporary file in the same
    folder (so the rename cannot cross file systems), fsynced and renamed over `path` when the
    block ends, and deleted if the block raises (Ctrl-C included)."""
    path = os.fspath(path)
    tmp = temporary_path(path, suffix)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)
