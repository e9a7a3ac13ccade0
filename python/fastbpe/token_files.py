"""Token files: a flat array of token ids on disk, described by the sidecar `<file>.json` beside it.

This module owns the format: everything that writes, splits, reads or checks token files uses it.

The sidecar (a JSON object):

- `format` "fastbpe.tokens", `version` 1
- `dtype` "uint16" or "uint32", `byteorder` "little" (written; "big" is read too)
- `num_tokens`, and `num_bytes` (num_tokens * itemsize: the data file's exact size)
- `checksum` "crc32:<8 hex digits>", zlib's CRC-32 of the data file's bytes
- from `Tokenizer.encode_file`: `vocab_size`, `source`, `tokenizer_sha256`, and the caller's
  `metadata` (the CLI adds `tokenizer`); `split_tokens` adds `split` ("train" or "val")

Required on reading: `dtype` and `num_tokens`. `format` and `version` may be left out of a
hand-written sidecar, but other values are refused. `num_bytes` and `checksum` are newer than the
rest: files without them still read (their size is checked against `num_tokens`), but their data
cannot be verified.

Appearing together. A writer fills a temporary file beside the output, then commits: the old
data file is removed, the sidecar is written (atomically), and the data is renamed into place
last. So whenever a data file exists under its name, the sidecar beside it is its own; a crash
can at worst leave a sidecar without data, which readers refuse like any missing token file.

Reading costs O(1): the sidecar is validated and the data file's size compared with it. The
checksum costs a pass over the data (several GB/s); it is verified on request: `read_tokens(...,
verify=True)`, `verify_tokens`, `scan_tokens` (which also finds the largest id in the same pass)
and `fastbpe verify-tokens FILE...`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import stat
import threading
import zlib
from collections.abc import Iterator

import numpy as np

from fastbpe import _io

FORMAT = "fastbpe.tokens"
VERSION = 1
DTYPES = ("uint16", "uint32")
BYTEORDERS = ("little", "big")
# Keys this module computes: a caller's metadata cannot set them.
RESERVED = ("format", "version", "dtype", "byteorder", "num_tokens", "num_bytes", "checksum")
_BLOCK = 1 << 20  # bytes per read when checksumming
_REENCODE = "re-encode it with `fastbpe encode` (or Tokenizer.encode_file)"


def sidecar_path(path: str | os.PathLike) -> str:
    """The sidecar of token file `path`: `<path>.json`."""
    return os.fspath(path) + ".json"


def token_dtype(dtype) -> np.dtype:
    """`dtype` as a token dtype (uint16 or uint32, native order), or ValueError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ValueError(f"token files hold uint16 or uint32 ids, not {dtype!r}")
    return np.dtype(dt.name)


def _checksum(crc: int) -> str:
    return f"crc32:{crc & 0xFFFFFFFF:08x}"


def _file_crc(path: str) -> int:
    crc = 0
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
    return crc


# ---- writing ------------------------------------------------------------------------------------


class TokenWriter:
    """Writes the token file `path` and its sidecar so that they appear together and complete,
    or not at all.

        with TokenWriter("train.bin", np.uint16, {"vocab_size": 4096}) as w:
            w.write(ids)          # any number of times; the checksum is computed as it goes
        w.metadata                # the sidecar written

    The data goes to a temporary file beside `path` (`w.tmp`); leaving the block commits (see
    the module docstring), an exception in it removes the temporary. Another writer may fill
    `w.tmp` instead (the Rust encoder does); it then calls `w.adopt(num_tokens[, crc32])`. The output's
    folder must exist; errors name `path`, never the temporary."""

    def __init__(self, path: str | os.PathLike, dtype, metadata: dict | None = None):
        self.path = os.fspath(path)
        self.dtype = token_dtype(dtype)
        extra = dict(metadata or {})
        clash = sorted(set(extra) & set(RESERVED))
        if clash:
            raise ValueError(f"metadata cannot set {clash}: the token file's writer computes them")
        if os.path.isdir(self.path):
            raise IsADirectoryError(errno.EISDIR, f"'{self.path}' is a folder; give a file path for the tokens")
        self.extra = extra
        self.metadata: dict | None = None
        self.num_tokens = 0
        self._crc = 0
        self._adopted = False
        self._file = None
        self.tmp = _io.temporary_path(self.path, ".bin")
        try:
            self._file = open(self.tmp, "wb")
        except BaseException:
            os.unlink(self.tmp)
            raise

    def write(self, ids) -> None:
        """Append ids (an array or a sequence of ints); they must fit the dtype."""
        arr = np.asarray(ids)
        if arr.dtype != self.dtype:
            if arr.size and (arr.min() < 0 or arr.max() >= 1 << (8 * self.dtype.itemsize)):
                raise ValueError(f"ids out of range for {self.dtype.name} in '{self.path}'")
            arr = arr.astype(self.dtype)
        data = np.ascontiguousarray(arr.reshape(-1), dtype=self.dtype.newbyteorder("<"))
        try:
            self._file.write(memoryview(data).cast("B"))
        except OSError as e:
            raise _io.write_error(e, self.path) from None
        self._crc = zlib.crc32(memoryview(data).cast("B"), self._crc)
        self.num_tokens += data.size

    def adopt(self, num_tokens: int, crc32: int | None = None) -> None:
        """Take what another writer put in `self.tmp`: `num_tokens` ids whose bytes have the
        CRC-32 `crc32` (zlib's) when that writer computed it as it wrote them (the Rust
        encoders do), else checksummed from the file (just written, so read back from the page
        cache)."""
        self._close()
        size = os.path.getsize(self.tmp)
        if size != num_tokens * self.dtype.itemsize:
            raise ValueError(
                f"'{self.path}': the encoder reported {num_tokens} tokens but wrote {size} bytes; "
                "the output was not kept"
            )
        if crc32 is None:
            crc32 = _file_crc(self.tmp)
        self.num_tokens, self._crc, self._adopted = num_tokens, crc32, True

    def filler_error(self, e: OSError) -> OSError:
        """`e`, raised by another writer filling `self.tmp` (the Rust encoder), as an error that
        names `path`, the output, where it named the temporary; its errno is the one the Rust
        error text carries ("(os error N)"). Other errors (reading the input) are `e` itself."""
        if self.tmp not in str(e):
            return e
        m = re.search(r"\(os error (\d+)\)$", str(e))
        code = int(m.group(1)) if m else e.errno
        reason = os.strerror(code) if code else str(e).replace(self.tmp, self.path)
        return OSError(code, f"cannot write '{self.path}': {reason}")

    def _close(self) -> None:
        if self._file is not None and not self._file.closed:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as e:
                raise _io.write_error(e, self.path) from None
            finally:
                self._file.close()

    def _sidecar(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "dtype": self.dtype.name,
            "byteorder": "little",
            "num_tokens": self.num_tokens,
            "num_bytes": self.num_tokens * self.dtype.itemsize,
            "checksum": _checksum(self._crc),
            **self.extra,
        }

    def commit(self) -> dict:
        """Put the data and its sidecar in place; returns the sidecar."""
        if self.metadata is not None:
            return self.metadata
        if not self._adopted:
            self._close()
        meta = self._sidecar()
        side = sidecar_path(self.path)
        # The sidecar is complete on disk before anything in the output's place changes, so a
        # failure to write it leaves the old token file as it was.
        side_tmp = _io.temporary_path(side, ".json")
        try:
            with open(side_tmp, "wb") as f:
                f.write(json.dumps(meta, indent=1).encode())
                f.flush()
                os.fsync(f.fileno())
        except BaseException as e:
            os.unlink(side_tmp)
            if isinstance(e, OSError):
                raise _io.write_error(e, side) from None
            raise
        # Then three steps with nothing to wait for: no moment shows an old data file beside
        # the new sidecar, or new data beside the old sidecar.
        try:
            remove_data(self.path)
            os.replace(side_tmp, side)
            side_tmp = None
            os.replace(self.tmp, self.path)
        except OSError as e:
            # Whatever step failed, no data file is left with a sidecar that is not its own.
            with contextlib.suppress(OSError):
                os.unlink(side_tmp if side_tmp is not None else side)
            raise _io.write_error(e, self.path) from None
        self.metadata = meta
        return meta

    def discard(self) -> None:
        """Remove the temporary (nothing is left in the output's place); a no-op after commit."""
        if self._file is not None:
            with contextlib.suppress(OSError):  # a failed flush: the data is dropped anyway
                self._file.close()
        if self.metadata is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()


def write_tokens(path: str | os.PathLike, ids, dtype=None, metadata: dict | None = None) -> dict:
    """Write `ids` as token file `path` with its sidecar (dtype: uint16 when every id fits,
    else uint32, unless given); returns the sidecar."""
    arr = np.asarray(ids)
    if dtype is None:
        dtype = np.uint16 if arr.size == 0 or int(arr.max()) < 1 << 16 else np.uint32
    with TokenWriter(path, dtype, metadata) as w:
        w.write(arr)
    return w.metadata


def remove_data(path: str | os.PathLike) -> None:
    """Remove the data file `path` if it exists (its sidecar stays).

    The file system frees a file's blocks when its name is gone and its last descriptor
    closes, a few milliseconds per hundred megabytes; here that last close happens on a thread
    of its own, so a call that replaces a token file does not wait for it (the name is gone
    when this returns, and the blocks are freed by the process's exit at the latest)."""
    path = os.fspath(path)
    held = _hold(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        if held is not None:
            threading.Thread(target=os.close, args=(held,), name="fastbpe-free", daemon=True).start()


def _hold(path: str) -> int | None:
    """A descriptor of regular file `path` for `remove_data`, else None (no such file, not a
    regular file, or where an open file cannot be removed: Windows)."""
    if os.name != "posix":
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO does not block
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def remove(path: str | os.PathLike) -> None:
    """Remove token file `path` and its sidecar, whichever exist."""
    remove_data(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sidecar_path(path))


@contextlib.contextmanager
def scratch_path(near: str | os.PathLike) -> Iterator[str]:
    """A temporary token-file path beside `near` (its folder must exist): the block may write a
    token file there; it and its sidecar are removed when the block ends, however it ends."""
    path = _io.temporary_path(near, ".bin")
    try:
        yield path
    finally:
        remove(path)


# ---- reading -------------------------------------------------------------------------------------


def _fail(path: str, what: str) -> ValueError:
    return ValueError(f"token file '{path}': {what}; {_REENCODE}")


def read_metadata(path: str | os.PathLike) -> dict:
    """The sidecar of token file `path`, validated on its own (the data file is not looked at):
    FileNotFoundError when missing, ValueError naming the file and the bad entry otherwise."""
    path = os.fspath(path)
    side = sidecar_path(path)
    if not os.path.exists(side):
        raise FileNotFoundError(
            errno.ENOENT,
            f"{side} is missing: token files carry their dtype there; write them with "
            "`fastbpe encode` or Tokenizer.encode_file, or pass dtype= explicitly",
        )
    try:
        with open(side, "rb") as f:
            meta = json.loads(f.read())
    except (ValueError, UnicodeDecodeError) as e:
        raise _fail(path, f"its sidecar {side} is not JSON ({e})") from None
    except IsADirectoryError:
        raise _fail(path, f"its sidecar {side} is a folder") from None
    if not isinstance(meta, dict):
        raise _fail(path, f"its sidecar {side} is not a JSON object")
    # A hand-written sidecar may leave out format and version; any other value is not ours.
    if meta.get("format", FORMAT) != FORMAT:
        raise _fail(path, f"{side} says format {meta.get('format')!r}, not {FORMAT!r}")
    if meta.get("version", VERSION) != VERSION or isinstance(meta.get("version"), bool):
        raise ValueError(
            f"token file '{path}': {side} says version {meta.get('version')!r}; this fastbpe reads version "
            f"{VERSION}: upgrade fastbpe, or {_REENCODE}"
        )
    if meta.get("dtype") not in DTYPES:
        raise _fail(path, f"{side} says dtype {meta.get('dtype')!r}; token files hold {' or '.join(DTYPES)} ids")
    if meta.setdefault("byteorder", "little") not in BYTEORDERS:
        raise _fail(path, f"{side} says byteorder {meta.get('byteorder')!r}, not 'little' or 'big'")
    n = meta.get("num_tokens")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise _fail(path, f"{side} says num_tokens {n!r}, not a count")
    nb = meta.get("num_bytes", 0)
    if not isinstance(nb, int) or isinstance(nb, bool) or nb < 0:
        raise _fail(path, f"{side} says num_bytes {nb!r}, not a size")
    if "checksum" in meta:
        c = meta["checksum"]
        if not (isinstance(c, str) and c.startswith("crc32:") and len(c) == 14 and _is_hex(c[6:])):
            raise _fail(path, f"{side} says checksum {c!r}, not 'crc32:<8 hex digits>'")
    return meta


def _is_hex(s: str) -> bool:
    return all(ch in "0123456789abcdef" for ch in s)


def array_dtype(meta: dict) -> np.dtype:
    """The numpy dtype, byte order included, that reads the data of a validated sidecar."""
    return np.dtype(meta["dtype"]).newbyteorder("<" if meta.get("byteorder", "little") == "little" else ">")


def _check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, f"no such token file: '{path}'")
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"'{path}' is a folder, not a token file")


def _check_size(path: str, meta: dict) -> int:
    size = os.path.getsize(path)
    n, dtype = meta["num_tokens"], meta["dtype"]
    want = n * np.dtype(dtype).itemsize
    if size != want:
        hint = ""
        for other in DTYPES:
            if other != dtype and n and size == n * np.dtype(other).itemsize:
                hint = f" (exactly {n} {other} ids: the sidecar's dtype is wrong)"
        raise _fail(
            path,
            f"the file holds {size:,} bytes, but {sidecar_path(path)} says {n:,} {dtype} ids ({want:,} bytes){hint}; "
            "the data and its sidecar do not belong together (an interrupted write, or a file replaced or edited)",
        )
    if meta.get("num_bytes", size) != size:
        raise _fail(path, f"the file holds {size:,} bytes, but {sidecar_path(path)} says num_bytes {meta['num_bytes']:,}")
    return size


def _check_crc(path: str, meta: dict, crc: int) -> None:
    if _checksum(crc) != meta["checksum"]:
        raise _fail(
            path,
            f"its data has checksum {_checksum(crc)}, but {sidecar_path(path)} says {meta['checksum']}: "
            "the data changed after it was written",
        )


def read_tokens(path: str | os.PathLike, *, verify: bool = False) -> tuple[np.ndarray, dict]:
    """(ids, sidecar) of token file `path`: the ids as a read-only np.memmap (an empty array for
    an empty file, which cannot be mapped), after checking the sidecar and the file's size. With
    `verify`, the checksum too, when the sidecar has one (a pass over the data)."""
    path = os.fspath(path)
    _check_exists(path)
    meta = read_metadata(path)
    _check_size(path, meta)
    if verify and "checksum" in meta:
        _check_crc(path, meta, _file_crc(path))
    return map_data(path, meta), meta


def map_data(path: str | os.PathLike, meta: dict) -> np.ndarray:
    """The ids of token file `path`, whose sidecar `meta` was checked (by `read_metadata`, or
    written by `TokenWriter`), as a read-only np.memmap (an empty array for an empty file, which
    cannot be mapped)."""
    if meta["num_tokens"] == 0:
        return np.zeros(0, dtype=array_dtype(meta))
    return np.memmap(path, dtype=array_dtype(meta), mode="r")


def read_raw_tokens(path: str | os.PathLike, dtype) -> np.memmap:
    """A file of raw little-endian `dtype` ids without a sidecar (an explicit dtype given by the
    caller), as a read-only np.memmap; its size must be a whole number of ids."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such token file: '{path}'")
    dtype = token_dtype(dtype).newbyteorder("<")
    if os.path.getsize(path) % dtype.itemsize:
        raise ValueError(f"'{path}' holds {os.path.getsize(path)} bytes, not a whole number of {dtype.name} ids")
    return np.memmap(path, dtype=dtype, mode="r")


def verify_tokens(path: str | os.PathLike) -> dict:
    """Check token file `path` completely (sidecar, size, checksum when recorded); returns the sidecar."""
    return scan_tokens(path).metadata


@dataclasses.dataclass(frozen=True)
class TokenScan:
    metadata: dict
    max_id: int | None  # None for an empty file
    max_id_offset: int | None  # the token offset of max_id's first occurrence
    checksum_verified: bool  # False when the sidecar records no checksum (an older fastbpe wrote it)


def scan_tokens(path: str | os.PathLike, *, verify: bool = True) -> TokenScan:
    """One pass over token file `path`: its largest id and, with `verify`, its checksum checked;
    ValueError naming the file on any mismatch. For a check before training (the largest id
    against the model's vocabulary) at the cost of reading the file once."""
    path = os.fspath(path)
    _check_exists(path)
    meta = read_metadata(path)
    _check_size(path, meta)
    dtype = array_dtype(meta)
    check = verify and "checksum" in meta
    crc, best, where, done = 0, None, None, 0
    buf = bytearray(_BLOCK - _BLOCK % dtype.itemsize)
    view = memoryview(buf)
    with open(path, "rb") as f:  # buffered: every read but the last fills the block
        while n := f.readinto(buf):
            if check:
                crc = zlib.crc32(view[:n], crc)
            ids = np.frombuffer(buf, dtype=dtype, count=n // dtype.itemsize)
            if len(ids):
                i = int(ids.argmax())  # the first occurrence of the block's largest id
                if best is None or int(ids[i]) > best:
                    best, where = int(ids[i]), done + i
            done += len(ids)
    if check:
        _check_crc(path, meta, crc)
    return TokenScan(meta, best, where, check)


# ---- splitting -----------------------------------------------------------------------------------


def split_point(data: np.ndarray, fraction: float, eot: int | None = None) -> int:
    """Where the last `fraction` of the tokens starts: just after an end-of-text token when one
    follows the plain cut within a million tokens, so no document is cut."""
    n = len(data)
    cut = int(n * (1 - fraction))
    if eot is not None:
        window = np.asarray(data[cut : min(n, cut + 1_000_000)])
        hits = np.flatnonzero(window == eot)
        if len(hits):
            cut += int(hits[0]) + 1
    return cut


def split_tokens(
    src: str | os.PathLike,
    train_path: str | os.PathLike,
    val_path: str | os.PathLike,
    fraction: float,
    eot: int | None = None,
    block: int = 1 << 24,
) -> tuple[int, int]:
    """Write the first part of token file `src` to `train_path` and the last `fraction` (from a
    document start when `eot` is given, see `split_point`) to `val_path`, each with its sidecar
    (src's metadata, its own counts and checksum, and `split`). Returns (train, val) token counts.

    Both outputs are written to temporaries first; then the old training file is removed, the
    validation file committed, and the training file last: a crash never leaves a training file
    beside a validation file of another split. `src` stays as it is (split a file in place by
    writing it to a `scratch_path` first)."""
    src, train_path, val_path = os.fspath(src), os.fspath(train_path), os.fspath(val_path)
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must be between 0 and 1, got {fraction}")
    _io.refuse_overwrite(
        [("the training file", train_path), ("the validation file", val_path)], [("the token file to split", src)]
    )
    data, meta = read_tokens(src)
    n = len(data)
    cut = split_point(data, fraction, eot)
    if not 0 < cut < n:
        raise ValueError(f"{n} tokens are too few to split off a validation fraction of {fraction}")
    extra = {k: v for k, v in meta.items() if k not in RESERVED}
    dtype = np.dtype(meta["dtype"])
    writers = []
    try:
        for path, start, stop, split in ((val_path, cut, n, "val"), (train_path, 0, cut, "train")):
            w = TokenWriter(path, dtype, {**extra, "split": split})
            writers.append(w)
            for i in range(start, stop, block):
                w.write(np.asarray(data[i : min(stop, i + block)]).astype(dtype, copy=False))
        del data
        remove_data(train_path)
        for w in writers:
            w.commit()
    except BaseException:
        for w in writers:
            w.discard()
        raise
    return cut, n - cut
