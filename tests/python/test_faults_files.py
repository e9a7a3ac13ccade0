"""Faults around the files the tokenizer CLI reads and writes: outputs that would replace inputs,
token files whose sidecar does not fit, outputs half-written by a killed process, and errors
that must be one line (exit 2) naming the right file."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastbpe
from fastbpe import _io, cli, token_files
from fastbpe.token_files import read_tokens, write_tokens

TEXT = (
    "The quick brown fox jumps over the lazy dog. <|endoftext|>\n"
    "Once upon a time there was a little robot who loved to read books.\n"
) * 200


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A corpus and a tokenizer trained on it (in their own folder)."""
    d = tmp_path_factory.mktemp("inputs")
    corpus = d / "c.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    tok = fastbpe.train(iter([TEXT]), 300)
    tok.save(d / "t.json")
    return corpus, d / "t.json", tok


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory, files):
    """~24 MB: at one thread, encoding and splitting take long enough to be interrupted."""
    d = tmp_path_factory.mktemp("big")
    path = d / "big.txt"
    line = "".join(f"word{i % 97} and {i % 89} more words, then <|endoftext|>\n" for i in range(1000))
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(500):
            f.write(line)
    return path


def snapshot(*paths) -> dict:
    return {str(p): p.read_bytes() for p in paths}


def run_main(argv, capsys) -> tuple[int, str, str]:
    """cli.main in this process: (exit status, stdout, stderr)."""
    try:
        cli.main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("fastbpe: error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def fastbpe_cmd(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastbpe", *map(str, args)], capture_output=True, text=True, **kw)


def temporaries(folder) -> list[str]:
    return sorted(p for p in os.listdir(folder) if p.startswith(".tmp-"))


# ---- 1. outputs that would overwrite inputs ----------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["out=corpus", "out=tokenizer", "sidecar=tokenizer", "val=corpus", "val=out", "out=hardlink", "out=symlink", "val=symlink-to-out"],
)
def test_encode_refuses_outputs_that_are_inputs(files, tmp_path, capsys, case):
    corpus, tok_path, _ = files
    before = snapshot(corpus, tok_path)
    out, val = tmp_path / "a.bin", None
    if case == "out=corpus":
        out = corpus
    elif case == "out=tokenizer":
        out = tok_path
    elif case == "sidecar=tokenizer":
        out = tok_path.with_suffix("")  # its sidecar, OUT.json, is the tokenizer
    elif case == "val=corpus":
        val = corpus
    elif case == "val=out":
        val = out
    elif case == "out=hardlink":
        out = tmp_path / "link.txt"
        os.link(corpus, out)
    elif case == "out=symlink":
        out = tmp_path / "link.txt"
        os.symlink(corpus, out)
    elif case == "val=symlink-to-out":
        val = tmp_path / "v.bin"
        os.symlink(out, val)  # dangling until a.bin exists
    listing = sorted(os.listdir(tmp_path))
    argv = ["encode", corpus, "--tokenizer", tok_path, "--out", out] + (["--val-out", val] if val else [])
    code, _, err = run_main(argv, capsys)
    one_line_error(code, err, "same file", "choose another path")
    assert snapshot(corpus, tok_path) == before
    assert sorted(os.listdir(tmp_path)) == listing
    assert not any(p.endswith(".json") and p != "t.json" for p in os.listdir(corpus.parent))


def test_encode_file_refuses_its_input_as_output(files, tmp_path):
    corpus, _, tok = files
    before = snapshot(corpus)
    with pytest.raises(ValueError, match="same file"):
        tok.encode_file(corpus, corpus, progress=False)
    os.link(corpus, tmp_path / "hard.txt")
    with pytest.raises(ValueError, match="same file"):
        tok.encode_file(corpus, tmp_path / "hard.txt", progress=False)
    assert snapshot(corpus) == before
    assert sorted(os.listdir(tmp_path)) == ["hard.txt"]
    assert temporaries(corpus.parent) == []


def test_train_tokenizer_refuses_a_corpus_as_out(files, tmp_path, capsys):
    corpus, _, _ = files
    other = tmp_path / "other.txt"
    other.write_text("more text\n")
    before = snapshot(corpus, other)
    code, _, err = run_main(["train-tokenizer", corpus, other, "--vocab-size", 260, "--out", other], capsys)
    one_line_error(code, err, "same file", str(other))
    assert snapshot(corpus, other) == before


# ---- 2. sidecars and token files checked on read -------------------------------------------------


def _bad_sidecar(tmp_path, case):
    path = tmp_path / "t.bin"
    write_tokens(path, np.array([5, 70_000, 3, 299], dtype=np.uint32))
    meta = json.loads((tmp_path / "t.bin.json").read_text())
    if case == "uint16 for uint32":
        meta["dtype"] = "uint16"
    elif case == "num_tokens":
        meta["num_tokens"] = 3
    elif case == "no dtype":
        del meta["dtype"]
    elif case == "int8":
        meta["dtype"] = "int8"
    (tmp_path / "t.bin.json").write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("case", ["uint16 for uint32", "num_tokens", "no dtype", "int8"])
def test_open_tokens_checks_the_sidecar_against_the_file(tmp_path, case):
    pytest.importorskip("torch")
    from fastbpe.lm.data import open_tokens

    path = _bad_sidecar(tmp_path, case)
    with pytest.raises(ValueError, match="re-encode") as e:
        open_tokens(path)
    assert str(path) in str(e.value)


def test_lm_train_refuses_a_sidecar_that_says_uint16_for_uint32_data(tmp_path):
    pytest.importorskip("torch")
    train = _bad_sidecar(tmp_path, "uint16 for uint32")
    val = tmp_path / "v.bin"
    write_tokens(val, np.arange(300, dtype=np.uint32))
    r = fastbpe_cmd("lm", "train", "--train", train, "--val", val, "--out", tmp_path / "run", "--max-steps", 1,
                    "--device", "cpu", timeout=300)
    one_line_error(r.returncode, r.stderr, str(train), "uint32", "re-encode")


def test_verify_tokens_command(files, tmp_path):
    corpus, tok_path, tok = files
    out = tmp_path / "a.bin"
    tok.encode_file(corpus, out, progress=False)
    r = fastbpe_cmd("verify-tokens", out)
    assert r.returncode == 0, r.stderr
    n = len(tok.encode(TEXT))
    assert f"{n:,} uint16 tokens, largest id {max(tok.encode(TEXT)):,}" in r.stdout and "checksum ok" in r.stdout
    raw = bytearray(out.read_bytes())
    raw[-1] ^= 0x40
    out.write_bytes(bytes(raw))
    r = fastbpe_cmd("verify-tokens", out)
    one_line_error(r.returncode, r.stderr, str(out), "checksum")


# ---- 3. half-written outputs ---------------------------------------------------------------------


def check_outputs(folder, total: int) -> None:
    """What a killed `encode --out a.bin --val-out v.bin` may leave: a data file only with its
    own valid sidecar, and a training file only beside its validation file from the same split."""
    a, v = folder / "a.bin", folder / "v.bin"
    for p in (a, v):
        if p.exists():
            read_tokens(p, verify=True)
    if a.exists():
        assert v.exists(), "a training file without its validation file"
        ma, mv = read_tokens(a)[1], read_tokens(v)[1]
        assert (ma.get("split"), mv.get("split")) == ("train", "val")
        assert ma["num_tokens"] + mv["num_tokens"] == total, "the training file holds validation tokens"


def _encode_args(corpus, tok_path, out_dir):
    return ["encode", corpus, "--tokenizer", tok_path, "--out", out_dir / "a.bin", "--val-out", out_dir / "v.bin",
            "--threads", "1"]


def _start(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fastbpe", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_when(proc, folder, ready, sig=signal.SIGKILL, timeout=60.0) -> str:
    """Send `sig` as soon as `ready(names in folder)` holds (polled every millisecond); returns
    the process's stderr."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            names = []
        if ready(folder, names):
            proc.send_signal(sig)
            break
        time.sleep(0.001)
    return proc.communicate(timeout=60)[1]


def _big_temporary(folder, names) -> bool:
    sizes = []
    for n in names:
        if n.startswith(".tmp-"):
            try:
                sizes.append(os.path.getsize(os.path.join(folder, n)))
            except FileNotFoundError:
                pass
    return any(s > 1_000_000 for s in sizes)


def _whole_stream_written(folder, names) -> bool:
    """The complete token stream has its sidecar (before the fix: the training file, unsplit)."""
    return any(n.endswith(".bin.json") for n in names)


@pytest.fixture(scope="module")
def big_total(big_corpus, files):
    return len(files[2].encode_to_numpy(big_corpus.read_text(encoding="utf-8")))


@pytest.mark.parametrize("when", [_big_temporary, _whole_stream_written], ids=["encoding", "splitting"])
def test_sigkill_leaves_no_output_without_its_sidecar_and_a_rerun_cleans_up(files, big_corpus, big_total, tmp_path, when):
    _, tok_path, _ = files
    out_dir = tmp_path / "out"
    proc = _start(_encode_args(big_corpus, tok_path, out_dir))
    _kill_when(proc, out_dir, when)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    check_outputs(out_dir, big_total)
    left = temporaries(out_dir)
    assert left and all(n.startswith(_io.TEMP_PREFIX) for n in left)
    # The next write to the same place removes what the killed run left, and says so.
    small = tmp_path / "small.txt"
    small.write_text(TEXT, encoding="utf-8")
    r = fastbpe_cmd(*_encode_args(small, tok_path, out_dir))
    assert r.returncode == 0, r.stderr
    assert "fastbpe: warning: removed" in r.stderr and left[0] in r.stderr
    assert temporaries(out_dir) == []
    check_outputs(out_dir, len(files[2].encode(TEXT)))


def test_killed_between_the_two_commits_leaves_no_stale_training_file(files, tmp_path):
    """Killed after the validation file is in place and before the training file is: the
    training file of the previous run must already be gone."""
    corpus, tok_path, tok = files
    out_dir = tmp_path / "out"
    r = fastbpe_cmd(*_encode_args(corpus, tok_path, out_dir))  # a previous, complete run
    assert r.returncode == 0, r.stderr
    other = tmp_path / "other.txt"
    other.write_text(TEXT[: len(TEXT) // 2], encoding="utf-8")
    script = textwrap.dedent(f"""
        import os, signal
        from fastbpe import cli, token_files
        commit = token_files.TokenWriter.commit
        def dying_commit(self):
            if os.path.basename(self.path) == "a.bin":  # not a scratch file whose random name ends so
                os.kill(os.getpid(), signal.SIGKILL)
            return commit(self)
        token_files.TokenWriter.commit = dying_commit
        cli.main({[str(a) for a in _encode_args(other, tok_path, out_dir)]!r})
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert not (out_dir / "a.bin").exists()
    assert read_tokens(out_dir / "v.bin", verify=True)[1]["source"] == str(other)
    check_outputs(out_dir, 0)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_remove_temporaries_and_keep_previous_outputs(files, big_corpus, tmp_path, sig, code):
    corpus, tok_path, _ = files
    out_dir = tmp_path / "out"
    r = fastbpe_cmd(*_encode_args(corpus, tok_path, out_dir))
    assert r.returncode == 0, r.stderr
    before = snapshot(*(out_dir / n for n in ("a.bin", "a.bin.json", "v.bin", "v.bin.json")))
    proc = _start(_encode_args(big_corpus, tok_path, out_dir))
    err = _kill_when(proc, out_dir, _big_temporary, sig)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "unfinished outputs were removed" in lines[0], err
    assert temporaries(out_dir) == []
    assert snapshot(*(out_dir / n for n in ("a.bin", "a.bin.json", "v.bin", "v.bin.json"))) == before


@pytest.mark.parametrize("trailing_slash", [False, True])
def test_encode_file_to_a_folder_leaves_nothing_behind(files, tmp_path, trailing_slash):
    corpus, _, tok = files
    folder = tmp_path / "some_dir"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="some_dir"):
        tok.encode_file(corpus, str(folder) + ("/" if trailing_slash else ""), progress=False)
    assert os.listdir(folder) == [] and sorted(os.listdir(tmp_path)) == ["some_dir"]


# ---- 4. messages ---------------------------------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    def train(*a, **k):
        raise AssertionError("training started before the output was checked")

    monkeypatch.setattr(fastbpe, "train", train)


@pytest.mark.parametrize("where", ["parent is a file", "a folder"])
def test_train_tokenizer_checks_out_before_training(files, tmp_path, capsys, no_training, where):
    corpus, _, _ = files
    out = tmp_path / "file.txt" / "t.json" if where == "parent is a file" else tmp_path
    (tmp_path / "file.txt").write_text("x")
    code, _, err = run_main(["train-tokenizer", corpus, "--vocab-size", 300, "--out", out], capsys)
    one_line_error(code, err, str(out) if where == "a folder" else "file.txt")


def test_train_tokenizer_creates_a_missing_folder_for_out(files, tmp_path, capsys):
    corpus, _, _ = files
    out = tmp_path / "missing" / "t.json"
    code, stdout, err = run_main(["train-tokenizer", corpus, "--vocab-size", 300, "--out", out], capsys)
    assert code == 0, err
    assert fastbpe.Tokenizer.load(out).vocab_size == 300


def test_empty_corpus_with_val_out(files, tmp_path, capsys):
    _, tok_path, _ = files
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    code, _, err = run_main(["encode", empty, "--tokenizer", tok_path, "--out", tmp_path / "a.bin",
                             "--val-out", tmp_path / "v.bin"], capsys)
    one_line_error(code, err, "empty.txt", "too few")
    assert os.listdir(tmp_path) == ["empty.txt"]


@pytest.mark.parametrize("case", ["missing", "folder", "not a tokenizer"])
def test_compare_with_a_bad_tokenizer(files, tmp_path, capsys, case):
    corpus, _, _ = files
    tok = {"missing": tmp_path / "nope.json", "folder": tmp_path, "not a tokenizer": corpus}[case]
    code, _, err = run_main(["compare", corpus, "--tokenizer", tok], capsys)
    one_line_error(code, err, str(tok))


def _dev_full_temporary(monkeypatch):
    """Every token file's temporary becomes a link to /dev/full: its writes fail with ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this platform")
    real = _io.temporary_path

    def temporary_path(path, suffix=""):
        tmp = real(path, suffix)
        if suffix == ".bin":
            os.unlink(tmp)
            os.symlink("/dev/full", tmp)
        return tmp

    monkeypatch.setattr(token_files._io, "temporary_path", temporary_path)


@pytest.mark.parametrize("pattern", ["gpt2", r"\w+|\s+|[^\w\s]+"], ids=["rust writer", "python writer"])
def test_disk_full_in_encode_file_names_the_output(files, tmp_path, monkeypatch, pattern):
    corpus, _, tok = files
    if pattern != "gpt2":
        tok = fastbpe.Tokenizer(tok.vocab, tok.merges, tok.special_tokens, pattern=pattern)
    _dev_full_temporary(monkeypatch)
    out = tmp_path / "a.bin"
    with pytest.raises(OSError) as e:
        tok.encode_file(corpus, out, progress=False)
    msg = str(e.value)
    assert e.value.errno == errno.ENOSPC and str(out) in msg
    assert str(corpus) not in msg and ".tmp-" not in msg
    assert os.listdir(tmp_path) == []


def test_cli_errors_name_the_output_not_the_hidden_temporary(files, tmp_path, monkeypatch, capsys):
    corpus, tok_path, _ = files
    _dev_full_temporary(monkeypatch)
    out = tmp_path / "a.bin"
    code, _, err = run_main(["encode", corpus, "--tokenizer", tok_path, "--out", out, "--val-out", tmp_path / "v.bin"], capsys)
    one_line_error(code, err, str(out), "No space left")
    assert ".tmp-" not in err
    assert os.listdir(tmp_path) == []


def _unreadable(monkeypatch, path):
    """Root reads any file, so a permission error is simulated where the CLI opens `path`."""
    import builtins

    real_open = builtins.open

    def fake_open(file, *a, **k):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)


BAD_INPUTS = ["missing", "folder", "unreadable"]


def _bad_input(tmp_path, monkeypatch, kind, good):
    if kind == "missing":
        return tmp_path / "nope.txt"
    if kind == "folder":
        return tmp_path
    path = tmp_path / "locked.txt"
    path.write_bytes(good.read_bytes())
    _unreadable(monkeypatch, path)
    return path


@pytest.mark.parametrize("kind", BAD_INPUTS)
@pytest.mark.parametrize("command", ["train-tokenizer", "encode corpus", "encode tokenizer", "compare", "verify-tokens"])
def test_bad_input_files_give_one_line(files, tmp_path, monkeypatch, capsys, command, kind):
    corpus, tok_path, tok = files
    tokens = tmp_path / "ok.bin"
    tok.encode_file(corpus, tokens, progress=False)
    good = tok_path if command == "encode tokenizer" else tokens if command == "verify-tokens" else corpus
    bad = _bad_input(tmp_path, monkeypatch, kind, good)
    argv = {
        "train-tokenizer": ["train-tokenizer", bad, "--vocab-size", 300, "--out", tmp_path / "t.json"],
        "encode corpus": ["encode", bad, "--tokenizer", tok_path, "--out", tmp_path / "a.bin"],
        "encode tokenizer": ["encode", corpus, "--tokenizer", bad, "--out", tmp_path / "a.bin"],
        "compare": ["compare", bad],
        "verify-tokens": ["verify-tokens", bad],
    }[command]
    code, _, err = run_main(argv, capsys)
    one_line_error(code, err, os.path.basename(bad))
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "a.bin").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["train-tokenizer", "{c}", "--vocab-size", "ten", "--out", "{d}/t.json"],
        ["train-tokenizer", "{c}", "--vocab-size", "300", "--out", "{d}/t.json", "--pattern", "gtp2"],
        ["train-tokenizer", "{c}", "--vocab-size", "300", "--out", "{d}/t.json", "--threads", "0"],
        ["train-tokenizer", "{c}", "--vocab-size", "0", "--out", "{d}/t.json"],
        ["encode", "{c}", "--tokenizer", "{t}", "--out", "{d}/a.bin", "--val-out", "{d}/v.bin", "--val-fraction", "1.5"],
        ["encode", "{c}", "--tokenizer", "{t}", "--out", "{d}/a.bin", "--val-fraction", "x"],
        ["encode", "{c}", "--tokenizer", "{t}", "--out", "{d}/a.bin", "--threads", "0"],
        ["encode", "{c}", "--tokenizer", "{t}"],
        ["compare", "{c}", "--max-bytes", "0"],
        ["compare", "{c}", "--vocab-size", "10"],
        ["verify-tokens"],
    ],
)
def test_bad_flag_values_give_one_line(files, tmp_path, capsys, argv):
    corpus, tok_path, _ = files
    argv = [a.format(c=corpus, t=tok_path, d=tmp_path) for a in argv]
    code, _, err = run_main(argv, capsys)
    one_line_error(code, err)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_existing_folder_where_files_cannot_be_created_is_not_called_missing():
    with pytest.raises(OSError, match="files cannot be created in '/proc'"):
        _io.check_writable("/proc/t.json")
