"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Temporary files are named `.tmp-fastbpe-<host>-<pid>-<random><suffix>` and live beside the file
they will replace (so the rename cannot cross file systems); temporary folders (a model export
built beside its destination) are named the same way. A process killed outright (SIGKILL, power
loss) cannot remove its own; the next write into the same folder removes those whose process is
gone: same host, and no process with that pid runs there. Nothing else is deleted:
other files starting with `.tmp-` (an older fastbpe named its temporaries `.tmp-<random>`) are
only reported, in a warning, once per folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from typing import BinaryIO


def _default_mode() -> int:
    mask = os.umask(0)  # reading the umask means setting it; done once, at import
    os.umask(mask)
    return 0o666 & ~mask


# Temporary files are created 0600; the finished file gets the mode an open() would give it.
FILE_MODE = _default_mode()

TEMP_PREFIX = ".tmp-fastbpe-"
# The host goes into the name so that a folder shared between machines (NFS) is only cleaned of
# the temporaries of this machine's dead processes; '-' is replaced so the pid after it parses.
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:40] or "host"
_OURS = re.compile(re.escape(f"{TEMP_PREFIX}{_HOST}-") + r"(\d+)-")
_OLD_STYLE = re.compile(r"\.tmp-[a-z0-9_]{8}(\.bin|\.json|\.pt)?$")  # tempfile names of an older fastbpe
_reported: set[str] = set()


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe way to ask: never delete
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but belongs to someone else
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete the temporaries that fastbpe processes of this host left in `folder` when they were
    killed (their pid no longer runs) and return their paths; warn about them, and (once per
    folder) about old-style `.tmp-xxxxxxxx` files, which are reported but left alone."""
    folder = os.fspath(folder) or "."
    try:
        names = os.listdir(folder)
    except OSError:
        return []  # the write that follows reports the folder's problem
    removed, old = [], []
    for name in names:
        m = _OURS.match(name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):  # another process cleaned it first
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                removed.append(path)
        elif _OLD_STYLE.match(name):
            old.append(name)
    if removed:
        warnings.warn(
            f"removed {len(removed)} temporary file(s) that killed fastbpe runs left in {folder}: "
            + ", ".join(os.path.basename(p) for p in removed),
            stacklevel=3,
        )
    key = os.path.abspath(folder)
    if old and key not in _reported:
        _reported.add(key)
        mb = sum(_size(os.path.join(folder, n)) for n in old) / 1e6
        warnings.warn(
            f"{folder} holds {len(old)} file(s) named like an older fastbpe's temporaries ({', '.join(sorted(old)[:3])}"
            f"{', ...' if len(old) > 3 else ''}; {mb:.1f} MB): delete them if no fastbpe is writing there",
            stacklevel=3,
        )
    return removed


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def write_error(e: OSError, path: str) -> OSError:
    """`e` (raised while writing a temporary file) as an error that names `path`, the output."""
    return OSError(e.errno, f"cannot write '{path}': {e.strerror or e}")


def temporary_path(path: str | os.PathLike, suffix: str = "") -> str:
    """A new empty file beside `path`, with the usual permissions, to be renamed over it. Errors
    name `path`, not the temporary; stale temporaries in the folder are removed first."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-", suffix=suffix, dir=folder)
    except FileNotFoundError:
        if os.path.isdir(folder):  # e.g. /proc, whose files cannot be created
            raise OSError(errno.ENOENT, f"cannot write '{path}': files cannot be created in '{folder}'") from None
        raise FileNotFoundError(errno.ENOENT, f"cannot write '{path}': no such folder '{folder}'") from None
    except OSError as e:
        raise write_error(e, path) from None
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return tmp


def temporary_folder(path: str | os.PathLike) -> str:
    """A new empty folder beside `path`, to be renamed onto it; removed by a later write into the
    same folder if this process is killed before it can remove it itself. Errors name `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-", dir=folder)
    except OSError as e:
        raise OSError(e.errno, f"cannot write the folder {path}: {e.strerror or e}") from None


def check_writable(path: str | os.PathLike, create_folder: bool = False) -> None:
    """Raise, before any long work, if `path` cannot be written: it is a folder, its folder is
    missing (created when `create_folder`), or nothing can be created there."""
    path = os.fspath(path)
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        raise IsADirectoryError(errno.EISDIR, f"'{path}' is a folder; give a file path inside it")
    folder = os.path.dirname(os.path.abspath(path))
    if create_folder and not os.path.isdir(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise OSError(e.errno, f"cannot create the folder '{folder}' for '{path}': {e.strerror}") from None
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(errno.ENOTDIR, f"cannot write '{path}': '{folder}' is a file, not a folder")
    os.unlink(temporary_path(path))  # the real test: permissions, read-only file systems, ACLs


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether paths `a` and `b` name one file: the same inode when both exist (hard links and
    symlinks included), else the same normalized absolute path after resolving symlinks."""
    a, b = os.fspath(a), os.fspath(b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        pass
    norm = lambda p: os.path.normcase(os.path.realpath(os.path.abspath(p)))  # noqa: E731
    return norm(a) == norm(b)


def refuse_overwrite(outputs: Iterable[tuple[str, str | os.PathLike]], inputs: Iterable[tuple[str, str | os.PathLike]]) -> None:
    """ValueError if an output would replace an input or another output. Each item is
    (what, path), e.g. ("--out", "train.bin")."""
    outputs, inputs = [(w, os.fspath(p)) for w, p in outputs], [(w, os.fspath(p)) for w, p in inputs]
    for i, (what, out) in enumerate(outputs):
        for other_what, other in inputs + outputs[:i]:
            if same_file(out, other):
                raise ValueError(
                    f"{what} '{out}' is the same file as {other_what} '{other}': writing it would destroy "
                    f"{'that input' if (other_what, other) in inputs else 'the other output'}; choose another path"
                )


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, suffix: str = "") -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new contents into: it is a temporary file in the same
    folder (so the rename cannot cross file systems), fsynced and renamed over `path` when the
    block ends, and deleted if the block raises (Ctrl-C included)."""
    path = os.fspath(path)
    tmp = temporary_path(path, suffix)
    try:
        with open(tmp, "wb") as f:
            try:
                yield f
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                if e.filename == tmp or e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise write_error(e, path) from None
                raise
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise write_error(e, path) from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)
