"""fastbpe.token_files: the sidecar schema, the writer (data and sidecar together, checksum while
writing), the validating reader, the one-pass scan, the splitter, and the temporaries of
fastbpe._io (naming, errors that name the output, stale ones removed)."""

import errno
import json
import os
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest

from fastbpe import _io, token_files
from fastbpe.token_files import TokenWriter, read_metadata, read_tokens, scan_tokens, split_tokens, write_tokens


def temporaries(folder) -> list[str]:
    return sorted(p for p in os.listdir(folder) if p.startswith(".tmp-"))


def sidecar(path) -> dict:
    with open(f"{path}.json") as f:
        return json.load(f)


def edit_sidecar(path, **changes) -> None:
    meta = sidecar(path)
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    with open(f"{path}.json", "w") as f:
        json.dump(meta, f)


# ---- writing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_written_sidecar_records_size_and_checksum_of_the_data(tmp_path, dtype):
    ids = np.arange(0, 60_000, 7, dtype=dtype) * (3 if dtype == np.uint32 else 1)
    path = tmp_path / "t.bin"
    meta = write_tokens(path, ids, dtype, metadata={"vocab_size": 200_000, "tokenizer": "t.json"})
    raw = path.read_bytes()
    assert meta == sidecar(path)
    assert meta["format"] == "fastbpe.tokens" and meta["version"] == 1
    assert meta["dtype"] == np.dtype(dtype).name and meta["byteorder"] == "little"
    assert meta["num_tokens"] == len(ids) and meta["num_bytes"] == len(raw) == ids.nbytes
    assert meta["checksum"] == f"crc32:{zlib.crc32(raw):08x}"
    assert meta["vocab_size"] == 200_000 and meta["tokenizer"] == "t.json"
    assert raw == ids.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    data, read_meta = read_tokens(path, verify=True)
    assert isinstance(data, np.memmap) and data.tolist() == ids.tolist()
    assert read_meta == meta
    assert temporaries(tmp_path) == []


def test_writer_streams_many_pieces_with_one_checksum(tmp_path):
    rng = np.random.default_rng(0)
    pieces = [rng.integers(0, 1 << 16, size=n, dtype=np.uint16) for n in (0, 1, 1000, 77_777, 5)]
    path = tmp_path / "t.bin"
    with TokenWriter(path, np.uint16) as w:
        for p in pieces:
            w.write(p)
        w.write([1, 2, 3])  # plain ints are converted
        assert not path.exists()  # nothing under the final name before the block ends
    whole = np.concatenate(pieces + [np.array([1, 2, 3], dtype=np.uint16)])
    assert np.array_equal(read_tokens(path, verify=True)[0], whole)
    assert w.metadata["num_tokens"] == len(whole)


@pytest.mark.parametrize("given", [True, False])
def test_adopted_data_keeps_the_filler_s_checksum_or_reads_one(tmp_path, given):
    """Another writer fills `w.tmp` and reports its count, and its checksum when it computed one
    (the Rust encoders do); without one the writer checksums the file. A count that does not
    match the file is refused and nothing is left."""
    ids = np.arange(5000, dtype=np.uint16)
    raw = ids.tobytes()
    path = tmp_path / "t.bin"
    with TokenWriter(path, np.uint16) as w:
        with open(w.tmp, "wb") as f:
            f.write(raw)
        w.adopt(len(ids), zlib.crc32(raw) if given else None)
    assert sidecar(path)["checksum"] == f"crc32:{zlib.crc32(raw):08x}"
    assert np.array_equal(read_tokens(path, verify=True)[0], ids)
    with pytest.raises(ValueError, match="reported 4999 tokens but wrote 10000 bytes"):
        with TokenWriter(tmp_path / "u.bin", np.uint16) as w:
            with open(w.tmp, "wb") as f:
                f.write(raw)
            w.adopt(len(ids) - 1)
    assert not (tmp_path / "u.bin").exists() and temporaries(tmp_path) == []


def test_writer_refuses_ids_that_do_not_fit(tmp_path):
    with pytest.raises(ValueError, match="out of range for uint16"):
        with TokenWriter(tmp_path / "t.bin", np.uint16) as w:
            w.write([1, 70_000])
    assert os.listdir(tmp_path) == []


def test_an_error_in_the_block_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "t.bin"
    write_tokens(path, [1, 2, 3])
    before = (path.read_bytes(), (tmp_path / "t.bin.json").read_bytes())
    with pytest.raises(KeyboardInterrupt):
        with TokenWriter(path, np.uint16) as w:
            w.write(np.arange(100, dtype=np.uint16))
            raise KeyboardInterrupt
    assert (path.read_bytes(), (tmp_path / "t.bin.json").read_bytes()) == before
    assert temporaries(tmp_path) == []


def test_writer_refuses_reserved_metadata_and_folders(tmp_path):
    with pytest.raises(ValueError, match="num_tokens"):
        TokenWriter(tmp_path / "t.bin", np.uint16, {"num_tokens": 5})
    with pytest.raises(IsADirectoryError, match="folder"):
        TokenWriter(tmp_path, np.uint16)
    with pytest.raises(ValueError, match="uint16 or uint32"):
        TokenWriter(tmp_path / "t.bin", np.int8)
    assert os.listdir(tmp_path) == []


def test_writer_into_a_missing_folder_names_the_output(tmp_path):
    out = tmp_path / "nope" / "t.bin"
    with pytest.raises(FileNotFoundError, match=r"t\.bin.*no such folder") as e:
        TokenWriter(out, np.uint16)
    assert ".tmp-" not in str(e.value)


def test_disk_full_while_writing_names_the_output(tmp_path):
    """The temporary is a link to /dev/full, where every write fails with ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this platform")
    out = tmp_path / "t.bin"
    w = TokenWriter(out, np.uint16)
    os.unlink(w.tmp)
    os.symlink("/dev/full", w.tmp)
    w._file = open(w.tmp, "wb", buffering=0)
    with pytest.raises(OSError) as e:
        with w:
            w.write(np.arange(1000, dtype=np.uint16))
    assert e.value.errno == errno.ENOSPC
    assert str(out) in str(e.value) and ".tmp-" not in str(e.value)
    assert os.listdir(tmp_path) == []


def test_disk_full_while_writing_the_sidecar_keeps_the_old_token_file(tmp_path, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this platform")
    path = tmp_path / "t.bin"
    write_tokens(path, [1, 2, 3])
    before = (path.read_bytes(), (tmp_path / "t.bin.json").read_bytes())
    real = _io.temporary_path

    def temporary_path(p, suffix=""):
        tmp = real(p, suffix)
        if suffix == ".json":
            os.unlink(tmp)
            os.symlink("/dev/full", tmp)
        return tmp

    monkeypatch.setattr(token_files._io, "temporary_path", temporary_path)
    with pytest.raises(OSError) as e:
        write_tokens(path, np.arange(50))
    assert e.value.errno == errno.ENOSPC and "t.bin.json" in str(e.value) and ".tmp-" not in str(e.value)
    assert (path.read_bytes(), (tmp_path / "t.bin.json").read_bytes()) == before
    assert temporaries(tmp_path) == []


def test_commit_puts_the_data_last_and_removes_the_old_data_first(tmp_path, monkeypatch):
    """A crash between the two renames leaves a sidecar without data, never old data beside a
    new sidecar or new data beside an old one."""
    path = tmp_path / "t.bin"
    write_tokens(path, np.arange(10))
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        if os.fspath(dst) == str(path):  # the data's rename: the sidecar must already be new
            seen.append((path.exists(), sidecar(path)["num_tokens"]))
            raise OSError(errno.EIO, "simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(token_files.os, "replace", replace)
    with pytest.raises(OSError, match="t.bin"):
        write_tokens(path, np.arange(25))
    assert seen == [(False, 25)]
    # The failed commit takes its sidecar away again: nothing is left that describes no data.
    assert not path.exists() and not (tmp_path / "t.bin.json").exists()
    assert temporaries(tmp_path) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
def test_replaced_data_is_freed_on_a_thread_of_its_own(tmp_path, monkeypatch):
    """The old data's name is gone when the call returns while its last descriptor is closed by
    a thread of its own (where the file system frees its blocks), leaving no descriptor open;
    what stands at the path but is not a regular file (a FIFO, which an open would block on) is
    removed without waiting."""
    fds = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    started = []

    class Thread:  # runs its target only when the test says
        def __init__(self, target, args, name, daemon):
            started.append((target, args, name, daemon))

        def start(self):
            pass

    monkeypatch.setattr(token_files.threading, "Thread", Thread)
    path = tmp_path / "t.bin"
    write_tokens(path, np.arange(1000))
    before = fds()
    write_tokens(path, np.arange(7))
    assert read_tokens(path)[0].tolist() == list(range(7))
    assert fds() == before + 1 and [s[2:] for s in started] == [("fastbpe-free", True)]
    target, args = started[0][:2]
    target(*args)
    assert fds() == before
    fifo = tmp_path / "fifo.bin"
    os.mkfifo(fifo)
    token_files.remove_data(fifo)
    assert not fifo.exists() and len(started) == 1
    token_files.remove_data(tmp_path / "missing.bin")  # nothing there: nothing to do


# ---- reading ------------------------------------------------------------------------------------


@pytest.fixture
def u32(tmp_path):
    path = tmp_path / "u32.bin"
    write_tokens(path, np.array([5, 70_000, 3, 2**32 - 1], dtype=np.uint32))
    return path


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"dtype": "uint16"}, r"16 bytes, but .*says 4 uint16 ids \(8 bytes\) \(exactly 4 uint32 ids: the sidecar's dtype is wrong\).*re-encode"),
        ({"num_tokens": 5}, r"16 bytes, but .*says 5 uint32 ids \(20 bytes\)"),
        ({"num_tokens": 5, "num_bytes": 20}, r"16 bytes, but .*says 5 uint32 ids"),
        ({"num_bytes": 17}, r"holds 16 bytes, but .*says num_bytes 17"),
        ({"num_bytes": "16"}, r"num_bytes '16'"),
        ({"dtype": None}, r"dtype None"),
        ({"dtype": "int8"}, r"dtype 'int8'.*uint16 or uint32"),
        ({"dtype": "float32"}, r"dtype 'float32'"),
        ({"byteorder": "middle"}, r"byteorder 'middle'"),
        ({"num_tokens": None}, r"num_tokens None"),
        ({"num_tokens": -1}, r"num_tokens -1"),
        ({"num_tokens": "4"}, r"num_tokens '4'"),
        ({"format": "other"}, r"format 'other'"),
        ({"version": 2}, r"version 2.*upgrade fastbpe"),
        ({"checksum": "md5:abc"}, r"checksum 'md5:abc'"),
    ],
)
def test_reader_refuses_a_sidecar_that_does_not_fit(u32, changes, match):
    edit_sidecar(u32, **changes)
    with pytest.raises(ValueError, match=match) as e:
        read_tokens(u32)
    assert str(u32) in str(e.value)


def test_a_uint32_file_read_as_twice_as_many_uint16_ids_is_caught_by_the_largest_id_only(u32):
    """Same bytes, so size and checksum agree: what tells is the largest id (65535 here, from
    the high half of 2**32 - 1), which the trainer compares with the model's vocabulary."""
    edit_sidecar(u32, dtype="uint16", num_tokens=8, num_bytes=16)
    assert scan_tokens(u32).max_id == 65535


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_reader_refuses_a_sidecar_that_is_not_a_json_object(u32, content):
    (u32.parent / "u32.bin.json").write_bytes(content)
    with pytest.raises(ValueError, match=r"u32\.bin"):
        read_metadata(u32)


def test_reader_missing_files(tmp_path, u32):
    with pytest.raises(FileNotFoundError, match="no such token file"):
        read_tokens(tmp_path / "nope.bin")
    os.unlink(f"{u32}.json")
    with pytest.raises(FileNotFoundError, match=r"u32\.bin\.json is missing"):
        read_tokens(u32)


def test_truncated_data_is_refused(u32):
    with open(u32, "r+b") as f:
        f.truncate(12)
    with pytest.raises(ValueError, match=r"12 bytes, but .*says 4 uint32 ids \(16 bytes\)"):
        read_tokens(u32)


def test_checksum_is_verified_on_request(u32):
    raw = bytearray(u32.read_bytes())
    raw[5] ^= 1  # same size, other data
    u32.write_bytes(bytes(raw))
    data, _ = read_tokens(u32)  # O(1) checks: the size still fits
    assert len(data) == 4
    with pytest.raises(ValueError, match=r"u32\.bin.*checksum crc32:.*says crc32:.*changed after it was written"):
        read_tokens(u32, verify=True)
    with pytest.raises(ValueError, match="checksum"):
        scan_tokens(u32)
    with pytest.raises(ValueError, match="checksum"):
        token_files.verify_tokens(u32)


def test_scan_finds_the_largest_id_in_the_checksum_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(token_files, "_BLOCK", 4096)  # several blocks
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50_000, size=10_001).astype(np.uint16)
    ids[7777] = 65_000
    path = tmp_path / "t.bin"
    write_tokens(path, ids)
    scan = scan_tokens(path)
    assert scan.max_id == 65_000 and scan.checksum_verified
    assert scan.metadata["num_tokens"] == len(ids)
    empty = tmp_path / "e.bin"
    write_tokens(empty, np.zeros(0, dtype=np.uint16))
    assert scan_tokens(empty).max_id is None
    assert len(read_tokens(empty)[0]) == 0


def test_hand_written_minimal_and_big_endian_sidecars_read(tmp_path):
    """Sidecars without format, version, num_bytes or checksum (hand-written, or by an older
    fastbpe) still read; their data cannot be verified."""
    path = tmp_path / "be.bin"
    np.array([1, 258, 70_000], dtype=">u4").tofile(path)
    (tmp_path / "be.bin.json").write_text(json.dumps({"dtype": "uint32", "byteorder": "big", "num_tokens": 3}))
    data, meta = read_tokens(path, verify=True)
    assert data.tolist() == [1, 258, 70_000]
    scan = scan_tokens(path)
    assert scan.max_id == 70_000 and not scan.checksum_verified


def test_map_data_is_what_read_tokens_maps(tmp_path):
    """`encode_file` returns `map_data` of what it wrote: the reader's dtype, byte order included."""
    path = tmp_path / "t.bin"
    meta = write_tokens(path, np.array([1, 70_000, 3], dtype=np.uint32))
    data = token_files.map_data(path, meta)
    assert isinstance(data, np.memmap) and data.dtype == read_tokens(path)[0].dtype == np.dtype("<u4")
    assert data.tolist() == [1, 70_000, 3]
    empty = tmp_path / "e.bin"
    meta = write_tokens(empty, np.zeros(0, dtype=np.uint16))
    assert token_files.map_data(empty, meta).dtype == np.dtype("<u2") and len(token_files.map_data(empty, meta)) == 0


def test_raw_tokens_are_little_endian_whole_ids(tmp_path):
    path = tmp_path / "raw.bin"
    np.array([1, 258, 65_535], dtype="<u2").tofile(path)
    assert token_files.read_raw_tokens(path, np.uint16).tolist() == [1, 258, 65_535]
    assert token_files.read_raw_tokens(path, "uint16").dtype == np.dtype("<u2")
    with pytest.raises(ValueError, match="not a whole number of uint32 ids"):
        token_files.read_raw_tokens(path, np.uint32)
    with pytest.raises(ValueError, match="uint16 or uint32"):
        token_files.read_raw_tokens(path, np.int64)
    with pytest.raises(FileNotFoundError, match="no such token file"):
        token_files.read_raw_tokens(tmp_path / "nope.bin", np.uint16)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_an_error_of_another_writer_names_the_output_not_the_temporary(tmp_path, code):
    """The Rust encoder fills `w.tmp` and names it in its errors, "(os error N)" at the end."""
    out = tmp_path / "t.bin"
    w = TokenWriter(out, np.uint16)
    rust = OSError(f"'{w.tmp}': {os.strerror(code)} (os error {code})")
    named = w.filler_error(rust)
    reading = OSError(f"'{tmp_path / 'corpus.txt'}': Input/output error (os error 5)")
    assert w.filler_error(reading) is reading  # an error reading the input stays as it is
    w.discard()
    assert named.errno == code and str(out) in str(named) and ".tmp-" not in str(named)


# ---- splitting ----------------------------------------------------------------------------------


def test_split_writes_both_parts_with_their_own_sidecars(tmp_path):
    eot = 9
    ids = np.array(([1, 2, 3, 4, 5, 6, 7, eot]) * 100, dtype=np.uint16)
    src = tmp_path / "all.bin"
    write_tokens(src, ids, metadata={"vocab_size": 10, "tokenizer": "t.json"})
    src_before = src.read_bytes()
    n_train, n_val = split_tokens(src, tmp_path / "train.bin", tmp_path / "val.bin", 0.1, eot=eot)
    train, tmeta = read_tokens(tmp_path / "train.bin", verify=True)
    val, vmeta = read_tokens(tmp_path / "val.bin", verify=True)
    cut = int(len(ids) * 0.9)
    cut += int(np.flatnonzero(ids[cut:] == eot)[0]) + 1  # the validation part starts a document
    assert (n_train, n_val) == (cut, len(ids) - cut) == (len(train), len(val))
    assert np.array_equal(np.concatenate([train, val]), ids) and val[0] == 1
    assert tmeta["split"] == "train" and vmeta["split"] == "val"
    assert tmeta["tokenizer"] == vmeta["tokenizer"] == "t.json" and tmeta["vocab_size"] == 10
    assert src.read_bytes() == src_before
    assert temporaries(tmp_path) == []


def test_split_refuses_overlapping_paths_and_too_few_tokens(tmp_path):
    src = tmp_path / "all.bin"
    write_tokens(src, np.arange(100))
    with pytest.raises(ValueError, match="same file"):
        split_tokens(src, tmp_path / "t.bin", tmp_path / "t.bin", 0.1)
    with pytest.raises(ValueError, match="same file"):
        split_tokens(src, src, tmp_path / "v.bin", 0.1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_tokens(src, tmp_path / "t.bin", tmp_path / "v.bin", 1.5)
    write_tokens(src, np.arange(1))
    with pytest.raises(ValueError, match="1 tokens are too few"):
        split_tokens(src, tmp_path / "t.bin", tmp_path / "v.bin", 0.5)
    assert sorted(os.listdir(tmp_path)) == ["all.bin", "all.bin.json"]


def test_split_never_leaves_an_old_training_file_beside_a_new_validation_file(tmp_path, monkeypatch):
    train, val = tmp_path / "train.bin", tmp_path / "val.bin"
    write_tokens(train, np.arange(50))  # from an earlier run
    write_tokens(val, np.arange(5))
    src = tmp_path / "all.bin"
    write_tokens(src, np.arange(1000) % 300)
    real_commit = TokenWriter.commit

    def commit(self):
        if self.path == str(train):
            raise OSError(errno.EIO, "simulated failure")
        return real_commit(self)

    monkeypatch.setattr(TokenWriter, "commit", commit)
    with pytest.raises(OSError):
        split_tokens(src, train, val, 0.1)
    assert not train.exists()
    assert temporaries(tmp_path) == []


def test_split_of_a_big_endian_file_keeps_the_ids(tmp_path):
    """The splitter reads its source through the reader (the sidecar's byte order) and writes
    both parts little-endian."""
    src = tmp_path / "be.bin"
    ids = np.arange(1000, dtype=np.uint32) * 70 % 70_001
    ids.astype(">u4").tofile(src)
    (tmp_path / "be.bin.json").write_text(json.dumps({"dtype": "uint32", "byteorder": "big", "num_tokens": 1000}))
    split_tokens(src, tmp_path / "t.bin", tmp_path / "v.bin", 0.25)
    train, tmeta = read_tokens(tmp_path / "t.bin", verify=True)
    val, vmeta = read_tokens(tmp_path / "v.bin", verify=True)
    assert tmeta["byteorder"] == vmeta["byteorder"] == "little"
    assert train.tolist() + val.tolist() == ids.tolist() and len(val) == 250


# ---- _io: temporaries, same files -----------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(p.stdout)


def test_temporaries_are_named_for_their_process(tmp_path):
    tmp = _io.temporary_path(tmp_path / "x.bin", ".bin")
    name = os.path.basename(tmp)
    assert name.startswith(f"{_io.TEMP_PREFIX}{_io._HOST}-{os.getpid()}-") and name.endswith(".bin")
    assert oct(os.stat(tmp).st_mode & 0o777) == oct(_io.FILE_MODE)


@pytest.mark.skipif(os.name != "posix", reason="process liveness is only checked on POSIX")
def test_stale_temporaries_of_dead_processes_are_removed_at_the_next_write(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f"{_io.TEMP_PREFIX}{_io._HOST}-{dead}-abcd1234.bin"
    stale.write_bytes(b"x" * 1000)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        running = tmp_path / f"{_io.TEMP_PREFIX}{_io._HOST}-{live.pid}-abcd1234.bin"
        other_host = tmp_path / f"{_io.TEMP_PREFIX}otherhost-{dead}-abcd1234.bin"
        old_style = tmp_path / ".tmp-k3j4h5g6.bin"
        for p in (running, other_host, old_style):
            p.write_bytes(b"y")
        with pytest.warns(UserWarning) as record:
            write_tokens(tmp_path / "t.bin", [1, 2, 3])
        messages = " | ".join(str(r.message) for r in record)
        assert f"removed 1 temporary file(s)" in messages and stale.name in messages
        assert old_style.name in messages and "delete them" in messages
        assert not stale.exists()
        assert running.exists() and other_host.exists() and old_style.exists()
        # The old-style report comes once per folder; a clean folder says nothing.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            write_tokens(tmp_path / "t.bin", [1, 2, 3])
    finally:
        live.kill()
        live.wait()


def test_same_file_sees_links(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("x")
    os.link(a, tmp_path / "hard.txt")
    os.symlink(a, tmp_path / "soft.txt")
    assert _io.same_file(a, tmp_path / "hard.txt") and _io.same_file(a, tmp_path / "soft.txt")
    assert _io.same_file(tmp_path / "new.bin", tmp_path / "sub" / ".." / "new.bin")
    assert not _io.same_file(a, tmp_path / "b.txt")
