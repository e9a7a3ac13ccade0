"""Corpus formats (`fastbpe.corpus`): JSON lines, Parquet and compressed text or JSON lines, read by
`train`, `encode_file` and the CLI exactly as the same documents given as texts, and every bad
file refused with an error that names it."""

import bz2
import gzip
import io
import json
import lzma
import os
import sys
import threading
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fastbpe
from fastbpe import cli, corpus, reference, token_files

DOCS = [
    "Once upon a time there was a little robot who loved to read books.",
    "",
    "The quick brown fox <|endoftext|> jumps over the lazy dog.\n\nTwo lines.",
    "  leading spaces and trailing ones   ",
    "Ünïcödé: 日本語のテキスト, русский текст, emoji 🙂🙂.",
    "ab",
    "ab",
    "line one\r\nline two\r\n",
] * 5
LINES = "".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(DOCS))


def compress(data: bytes, how: str | None) -> bytes:
    if how == "gz":
        return gzip.compress(data)
    if how == "xz":
        return lzma.compress(data)
    if how == "zst":
        return zstandard.ZstdCompressor().compress(data)
    return data


def write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def write_jsonl(folder, docs, how=None, field="text", name="c") -> str:
    data = "".join(json.dumps({field: d}) + "\n" for d in docs).encode("utf-8")
    return write(folder / (f"{name}.jsonl" + (f".{how}" if how else "")), compress(data, how))


def write_parquet(folder, docs, field="text", row_group_size=3, name="c") -> str:
    path = str(folder / f"{name}.parquet")
    pq.write_table(pa.table({"id": list(range(len(docs))), field: docs}), path, row_group_size=row_group_size)
    return path


@pytest.fixture(scope="module")
def tok():
    return fastbpe.train(iter(DOCS * 3), 400, progress=False)


def expected(tok, docs) -> list[int]:
    eot = tok.special_token_ids["<|endoftext|>"]
    return [i for d in docs for i in tok.encode(d) + [eot]]


def leftovers(folder) -> list[str]:
    return sorted(p for p in os.listdir(folder) if p.startswith(".tmp-"))


@pytest.fixture
def small_batches(monkeypatch):
    """Batches and text chunks of a few characters, so that small files cross many of them."""
    monkeypatch.setattr(corpus, "BATCH_CHARS", 40)
    monkeypatch.setattr(corpus, "_CHUNK_CHARS", 16)


# ---- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, data, want",
    [
        ("a.txt", b"hello", corpus.Format("text")),
        ("a", b"hello", corpus.Format("text")),
        ("a.md", b"", corpus.Format("text")),
        ("a.jsonl", b"{}", corpus.Format("jsonl")),
        ("a.JSONL", b"{}", corpus.Format("jsonl")),
        ("a.json", b"{}", corpus.Format("jsonl")),
        ("a.ndjson", b"{}", corpus.Format("jsonl")),
        ("a.jsonl.gz", gzip.compress(b"{}"), corpus.Format("jsonl", "gzip")),
        ("a.jsonl.xz", lzma.compress(b"{}"), corpus.Format("jsonl", "xz")),
        ("a.jsonl.zst", zstandard.ZstdCompressor().compress(b"{}"), corpus.Format("jsonl", "zstd")),
        ("a.txt.gz", gzip.compress(b"hi"), corpus.Format("text", "gzip")),
        ("a.gz", gzip.compress(b"hi"), corpus.Format("text", "gzip")),
        ("a.txt.zstd", zstandard.ZstdCompressor().compress(b"hi"), corpus.Format("text", "zstd")),
    ],
)
def test_the_format_comes_from_the_name(tmp_path, name, data, want):
    assert corpus.detect_format(write(tmp_path / name, data)) == want


def test_parquet_is_known_by_name_and_bytes(tmp_path):
    path = write_parquet(tmp_path, ["x"])
    assert corpus.detect_format(path) == corpus.Format("parquet")
    os.rename(path, tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match=r"c\.jsonl' is a Parquet file: name it \.parquet"):
        corpus.detect_format(tmp_path / "c.jsonl")


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("a.jsonl", gzip.compress(b"{}"), r"a\.jsonl' holds gzip-compressed data .* rename it to a\.jsonl\.gz"),
        ("a.txt", zstandard.ZstdCompressor().compress(b"x"), r"a\.txt' holds zstd-compressed data .*a\.txt\.zst"),
        ("a.jsonl", lzma.compress(b"{}"), r"a\.jsonl' holds xz-compressed data"),
        ("a.jsonl.gz", b'{"text": "plain"}\n', r"a\.jsonl\.gz' is not gzip-compressed data .*without \.gz"),
        ("a.jsonl.zst", gzip.compress(b"{}"), r"a\.jsonl\.zst' is named as zstd-compressed \(\.zst\) but holds gzip"),
        ("a.jsonl.gz", b"", r"a\.jsonl\.gz' is empty"),
        ("a.parquet", b"", r"a\.parquet' is empty"),
        ("a.parquet", b'{"text": "x"}\n', r"a\.parquet' is not a Parquet file"),
        ("a.parquet", b"PAR1 cut short", r"a\.parquet' is not a Parquet file .*truncated"),
        ("a.parquet.gz", gzip.compress(b"x"), r"Parquet files compress their columns themselves"),
        ("a.txt", bz2.compress(b"x" * 100), r"a bzip2 archive, which fastbpe does not read"),
        ("a.jsonl", b"PK\x03\x04 zip", r"a zip archive, which fastbpe does not read"),
        ("a.tar.gz", gzip.compress(b"x"), r"a tar archive: unpack it"),
    ],
)
def test_a_name_the_bytes_contradict_is_refused(tmp_path, name, data, message):
    path = write(tmp_path / name, data)
    with pytest.raises(ValueError, match=message):
        corpus.detect_format(path)


def test_missing_file_and_folder(tmp_path, tok):
    missing = str(tmp_path / "nope.jsonl.gz")
    for call in (
        lambda: corpus.detect_format(missing),
        lambda: corpus.documents(missing),  # at the call, not at the first document
        lambda: tok.encode_file(missing, tmp_path / "o.bin", progress=False),
        lambda: fastbpe.train(missing, 300, progress=False),
    ):
        with pytest.raises(FileNotFoundError, match="no such file: '.*nope.jsonl.gz'"):
            call()
    folder = tmp_path / "shards.jsonl"
    folder.mkdir()
    for call in (
        lambda: list(corpus.documents(folder)),
        lambda: tok.encode_file(folder, tmp_path / "o.bin", progress=False),
        lambda: fastbpe.train(str(folder), 300, progress=False),
    ):
        with pytest.raises(IsADirectoryError, match="shards.jsonl' is a directory; give the files inside it"):
            call()
    assert sorted(os.listdir(tmp_path)) == ["shards.jsonl"]


def test_text_field_is_checked(tmp_path, tok):
    path = write_jsonl(tmp_path, ["x"])
    with pytest.raises(TypeError, match="text_field must be a str"):
        tok.encode_file(path, tmp_path / "o.bin", text_field=3)
    with pytest.raises(ValueError, match="text_field must not be empty"):
        fastbpe.train(path, 300, text_field="")


# ---- exactness -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", [None, "gz", "xz", "zst", "parquet"])
def test_encode_file_is_each_document_then_eot(tmp_path, tok, how, small_batches):
    if how == "parquet":
        path = write_parquet(tmp_path, DOCS)
    else:
        path = write_jsonl(tmp_path, DOCS, how)
    assert list(corpus.documents(path)) == DOCS
    arr = tok.encode_file(path, tmp_path / "o.bin", progress=False)
    assert arr.tolist() == expected(tok, DOCS)
    ids, meta = token_files.read_tokens(tmp_path / "o.bin", verify=True)
    assert ids.tolist() == expected(tok, DOCS) and meta["source"] == os.path.abspath(path)
    assert leftovers(tmp_path) == []


def test_uint32_token_files(tmp_path, tok, small_batches):
    for path in (write_jsonl(tmp_path, DOCS, "gz"), write(tmp_path / "t.txt.gz", gzip.compress(text_corpus().encode()))):
        arr = tok.encode_file(path, tmp_path / "o.bin", dtype=np.uint32, progress=False)
        assert arr.dtype == np.uint32
        want = expected(tok, DOCS) if "jsonl" in path else tok.encode(text_corpus())
        assert arr.tolist() == want


@pytest.mark.parametrize("how", [None, "gz", "zst"])
def test_the_batches_do_not_change_the_ids(tmp_path, tok, how):
    """Default batch sizes: thousands of documents in one batch, and one document per batch."""
    docs = [f"document {i}: " + "word " * (i % 50) for i in range(3000)]
    path = write_jsonl(tmp_path, docs, how)
    want = expected(tok, docs)
    assert tok.encode_file(path, tmp_path / "a.bin", progress=False).tolist() == want
    assert tok.encode_file(path, tmp_path / "b.bin", num_threads=1, progress=False).tolist() == want


def test_a_custom_pattern_encodes_each_document(tmp_path, small_batches):
    tok = fastbpe.train(iter(DOCS), 320, pattern=r"\w+|\s+", progress=False)
    path = write_jsonl(tmp_path, DOCS, "gz")
    assert tok.encode_file(path, tmp_path / "o.bin", progress=False).tolist() == expected(tok, DOCS)


def test_a_hugging_face_pipeline_encodes_each_document(tmp_path, tok, small_batches):
    """A tokenizer.json with a normalizer runs through fastbpe's pipeline, never the Rust file
    readers, and still gives each document's ids and then <|endoftext|>."""
    tok.to_huggingface(tmp_path / "t.json")
    spec = json.loads((tmp_path / "t.json").read_text())
    spec["normalizer"] = {"type": "NFKC"}
    hf = fastbpe.Tokenizer.from_huggingface(json.dumps(spec))
    assert hf._hf is not None
    docs = DOCS + ["ﬁve ligatures ①②", "Ｆｕｌｌｗｉｄｔｈ"]
    assert hf.encode("ﬁ") != tok.encode("ﬁ")  # the normalizer is applied
    for how in (None, "gz"):
        path = write_jsonl(tmp_path, docs, how, name=f"p{how}")
        assert hf.encode_file(path, tmp_path / "o.bin", progress=False).tolist() == expected(hf, docs)


def test_jsonl_blank_lines_crlf_and_a_byte_order_mark(tmp_path, tok):
    data = "\ufeff" + '{"text": "a b"}\r\n\r\n   \n{"text": "c"}\n\n'
    path = write(tmp_path / "c.jsonl", data.encode("utf-8"))
    assert list(corpus.documents(path)) == ["a b", "c"]
    assert tok.encode_file(path, tmp_path / "o.bin", progress=False).tolist() == expected(tok, ["a b", "c"])


def test_text_field_picks_the_field_and_the_column(tmp_path, tok):
    for path in (write_jsonl(tmp_path, DOCS, "zst", field="content"), write_parquet(tmp_path, DOCS, field="content")):
        got = tok.encode_file(path, tmp_path / "o.bin", text_field="content", progress=False)
        assert got.tolist() == expected(tok, DOCS)


def text_corpus() -> str:
    words = ["alpha", "beta", "  gamma", "\n", "delta's", "日本", "<|endoftext|>", "\r\n", "  ", "x1", "ée"]
    return "".join(words[(i * 7 + i // 3) % len(words)] + (" " if i % 4 else "") for i in range(3000))


@pytest.mark.filterwarnings("ignore:training stopped")
@pytest.mark.parametrize("how", ["gz", "xz", "zst"])
@pytest.mark.parametrize("pattern", ["gpt2", None, r"\w+|\s+"])
def test_compressed_text_is_the_text(tmp_path, small_batches, how, pattern):
    """A compressed text file gives what the same file uncompressed gives: no end-of-text tokens
    added, and training equals training on the plain file."""
    text = text_corpus()
    plain = write(tmp_path / "c.txt", text.encode("utf-8"))
    packed = write(tmp_path / f"c.txt.{how}", compress(text.encode("utf-8"), how))
    tok = fastbpe.train(plain, 400, pattern=pattern, progress=False)
    assert fastbpe.train(packed, 400, pattern=pattern, progress=False) == tok
    want = tok.encode_file(plain, tmp_path / "a.bin", progress=False).tolist()
    assert want == tok.encode(text)
    assert tok.encode_file(packed, tmp_path / "b.bin", progress=False).tolist() == want
    assert "".join(corpus.text_parts(packed)) == text
    ordinary = tok.encode_file(packed, tmp_path / "c.bin", allowed_special=set(), disallowed_special=(), progress=False)
    assert ordinary.tolist() == tok.encode_ordinary(text)


@pytest.mark.parametrize("change", ["shorter", "empty", "longer"])
@pytest.mark.parametrize("reader", ["text_parts", "read_text"])
def test_a_text_file_that_changes_while_it_is_read_is_an_error(tmp_path, change, reader):
    """Truncated or written to between two reads, a plain text file is an OSError naming it and
    its two lengths, not the text of no version of it (the Python readers: a tokenizer.json's own
    pre-tokenizer, custom patterns without a Rust splitter, `corpus.text_parts`)."""
    from fastbpe import _stream

    path = write(tmp_path / "t.txt", b"The cat sat on the mat.\n" * 10_000)
    parts = corpus.text_parts(path, block=4096) if reader == "text_parts" else _stream.read_text(str(path), 4096)
    next(parts)
    if change == "longer":
        with open(path, "ab") as f:
            f.write(b"more\n")
    else:
        os.truncate(path, 50_000 if change == "shorter" else 0)
    with pytest.raises(OSError, match="changed while it was read") as e:
        for _ in parts:
            pass
    assert str(path) in str(e.value)
    # Unchanged, it reads to the end as before.
    write(tmp_path / "u.txt", b"abc\n" * 5000)
    assert "".join(corpus.text_parts(tmp_path / "u.txt", block=4096)) == "abc\n" * 5000


@pytest.mark.parametrize("pattern", ["gpt2", None])
def test_training_on_documents_equals_training_on_the_texts(tmp_path, pattern, small_batches):
    path = write_jsonl(tmp_path, DOCS, "gz")
    tok = fastbpe.train(path, 330, pattern=pattern, progress=False)
    assert tok == fastbpe.train(iter(DOCS), 330, pattern=pattern, progress=False)
    vocab, merges = reference.train_bpe_from_texts(DOCS, 330, ["<|endoftext|>"], pattern)
    assert (tok.vocab, tok.merges) == (vocab, merges)
    assert fastbpe.train(write_parquet(tmp_path, DOCS), 330, pattern=pattern, progress=False) == tok


def test_no_merge_spans_two_documents(tmp_path):
    """Concatenated, "ab" "ab" would count the pair (b, a); each document on its own never does."""
    path = write_jsonl(tmp_path, ["ab"] * 10 + ["cd"], "xz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # training stops early: no pair left
        tok = fastbpe.train(path, 300, pattern=None, special_tokens=[], progress=False)
    assert tok.merges == [(b"a", b"b"), (b"c", b"d")]


def test_a_tokenizer_without_eot_says_so(tmp_path):
    tok = fastbpe.train(iter(DOCS), 300, special_tokens=[], progress=False)
    path = write_jsonl(tmp_path, ["a", "b"])
    with pytest.warns(UserWarning, match=r"declares no <\|endoftext\|>.*one after another"):
        arr = tok.encode_file(path, tmp_path / "o.bin", progress=False)
    assert arr.tolist() == tok.encode("a") + tok.encode("b")


def test_disallowed_special_tokens_name_the_line(tmp_path, tok):
    path = write_jsonl(tmp_path, ["fine", "also fine", "not <|endoftext|> fine"], "gz")
    with pytest.raises(ValueError, match=r"disallowed special token '<\|endoftext\|>' in '.*c\.jsonl\.gz' line 3"):
        tok.encode_file(path, tmp_path / "o.bin", allowed_special=set(), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["c.jsonl.gz"]
    plain = tok.encode_file(path, tmp_path / "o.bin", allowed_special=set(), disallowed_special=(), progress=False)
    eot = tok.special_token_ids["<|endoftext|>"]
    docs = ["fine", "also fine", "not <|endoftext|> fine"]
    assert plain.tolist() == [i for d in docs for i in tok.encode_ordinary(d) + [eot]]


# ---- bad files -------------------------------------------------------------------------------


def assert_nothing_written(folder, *inputs) -> None:
    assert sorted(os.listdir(folder)) == sorted(os.path.basename(p) for p in inputs)


@pytest.mark.parametrize("how", ["gz", "xz", "zst"])
@pytest.mark.parametrize("kind", ["jsonl", "txt"])
def test_a_truncated_file_is_refused_and_nothing_is_written(tmp_path, tok, how, kind):
    data = "".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(2000)).encode()
    packed = compress(data, how)
    path = write(tmp_path / f"c.{kind}.{how}", packed[: len(packed) * 2 // 3])
    with pytest.raises(ValueError, match=rf"'.*c\.{kind}\.{how}' is truncated"):
        tok.encode_file(path, tmp_path / "o.bin", progress=False)
    assert_nothing_written(tmp_path, path)
    with pytest.raises(ValueError, match=rf"c\.{kind}\.{how}' is truncated"):
        fastbpe.train(path, 300, progress=False)


@pytest.mark.parametrize("how", ["gz", "zst"])
def test_corrupt_compressed_data_is_refused(tmp_path, tok, how):
    packed = bytearray(compress(LINES.encode() * 50, how))
    for k in range(20, len(packed) - 20, 7):
        packed[k] ^= 0x5A
    path = write(tmp_path / f"c.jsonl.{how}", bytes(packed))
    with pytest.raises(ValueError, match=rf"c\.jsonl\.{how}' is (corrupt|truncated)"):
        tok.encode_file(path, tmp_path / "o.bin", progress=False)
    assert_nothing_written(tmp_path, path)


@pytest.mark.parametrize("how", [None, "gz"])
def test_a_bad_line_a_million_lines_in_is_named(tmp_path, tok, how):
    data = b'{"text":"a"}\n' * 1_000_002 + b'{"text": "unterminated\n' + b'{"text":"b"}\n'
    path = write(tmp_path / ("c.jsonl" + (f".{how}" if how else "")), compress(data, how) if how else data)
    with pytest.raises(ValueError, match=r"c\.jsonl(\.gz)?' line 1000003: not valid JSON"):
        tok.encode_file(path, tmp_path / "o.bin", progress=False)
    assert_nothing_written(tmp_path, path)


@pytest.mark.parametrize(
    "line, message",
    [
        (b"not json", r"line 3: not valid JSON \(Expecting value at column 1\); each line must be one JSON object"),
        (b'[{"text": "a"}]', r"line 3: a JSON array, not an object; a JSON array is not JSON lines"),
        (b'[{"text": "a"},', r"line 3: not valid JSON .*a JSON array is not JSON lines"),
        (b'"just a string"', r"line 3: a JSON string, not an object"),
        (b'{"body": "x", "id": 1}', r"line 3: no field 'text' \(its fields: 'body', 'id'\); name the field .*--text-field"),
        (b'{"text": 42}', r"line 3: the field 'text' is a JSON number, not a string"),
        (b'{"text": null}', r"line 3: the field 'text' is a JSON null, not a string"),
        (b'{"text": "\xff\xfe"}', r"line 3: invalid UTF-8 at byte 11 of the line"),
        (b'{"text": "\\ud800"}', r"line 3: the field 'text' holds a lone UTF-16 surrogate"),
    ],
)
def test_bad_lines_are_named(tmp_path, tok, line, message):
    path = write(tmp_path / "c.jsonl", b'{"text": "ok"}\n\n' + line + b"\n")
    with pytest.raises(ValueError, match=r"'.*c\.jsonl' " + message):
        list(corpus.documents(path))
    with pytest.raises(ValueError, match=message):
        tok.encode_file(path, tmp_path / "o.bin", progress=False)
    with pytest.raises(ValueError, match=message):
        fastbpe.train(path, 300, progress=False)
    assert_nothing_written(tmp_path, path)


def test_binary_garbage_named_jsonl(tmp_path, tok):
    path = write(tmp_path / "c.jsonl", bytes(range(256)) * 40)
    with pytest.raises(ValueError, match=r"c\.jsonl' line 1: (invalid UTF-8|not valid JSON)"):
        tok.encode_file(path, tmp_path / "o.bin", progress=False)
    assert_nothing_written(tmp_path, path)


def test_parquet_without_the_column_names_the_columns(tmp_path, tok):
    path = write_parquet(tmp_path, DOCS, field="content")
    with pytest.raises(ValueError, match=r"c\.parquet' has no column 'text'; its columns are: 'id', 'content'"):
        tok.encode_file(path, tmp_path / "o.bin", progress=False)
    with pytest.raises(ValueError, match=r"has no column 'text'"):
        fastbpe.train(path, 300, progress=False)
    with pytest.raises(ValueError, match=r"the column 'id' holds int64, not strings"):
        fastbpe.train(path, 300, text_field="id", progress=False)
    assert_nothing_written(tmp_path, path)


def test_parquet_nulls_and_a_truncated_file(tmp_path, tok):
    path = str(tmp_path / "c.parquet")
    pq.write_table(pa.table({"text": ["a", "b", None, "d"]}), path, row_group_size=2)
    with pytest.raises(ValueError, match=r"c\.parquet' row 3: the column 'text' is null"):
        tok.encode_file(path, tmp_path / "o.bin", progress=False)
    data = open(path, "rb").read()
    cut = write(tmp_path / "cut.parquet", data[:-10] + b"PAR1")
    with pytest.raises(ValueError, match=r"cut\.parquet' is not a readable Parquet file"):
        tok.encode_file(cut, tmp_path / "o.bin", progress=False)
    assert_nothing_written(tmp_path, path, cut)


def test_parquet_strings_that_are_not_utf8(tmp_path, tok):
    data = pa.py_buffer(b"ok\xff\xfe")
    bad = pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(np.array([0, 2, 4], np.int32).tobytes()), data])
    path = str(tmp_path / "c.parquet")
    pq.write_table(pa.table({"text": bad}), path)
    with pytest.raises(ValueError, match=r"c\.parquet': the column 'text' of row group 0 cannot be read as text"):
        tok.encode_file(path, tmp_path / "o.bin", progress=False)
    assert_nothing_written(tmp_path, path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 20))
@example(seed=159, flips=6)  # a footer whose bytes are not UTF-8: pyarrow's UnicodeDecodeError named no file
def test_damaged_parquet_gives_only_value_errors(tmp_path_factory, seed, flips):
    import random

    folder = tmp_path_factory.mktemp("pq")
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": DOCS, "n": list(range(len(DOCS)))}), buf, row_group_size=7)
    data = bytearray(buf.getvalue())
    rng = random.Random(seed)
    for _ in range(flips):
        data[rng.randrange(4, len(data) - 4)] = rng.randrange(256)
    path = write(folder / "f.parquet", bytes(data))
    try:
        docs = list(corpus.documents(path))
    except ValueError as e:
        assert "f.parquet" in str(e)
    else:
        assert all(isinstance(d, str) for d in docs)


def test_parquet_dictionary_and_large_strings(tmp_path, tok):
    path = str(tmp_path / "c.parquet")
    table = pa.table({"text": pa.array(DOCS, pa.large_string()), "d": pa.array(DOCS).dictionary_encode()})
    pq.write_table(table, path)
    assert list(corpus.documents(path)) == DOCS
    assert list(corpus.documents(path, text_field="d")) == DOCS


def test_empty_files(tmp_path, tok):
    for name, data in [("e.jsonl", b""), ("e.jsonl.gz", gzip.compress(b"")), ("e.txt.zst", zstandard.ZstdCompressor().compress(b""))]:
        path = write(tmp_path / name, data)
        assert tok.encode_file(path, tmp_path / "o.bin", progress=False).tolist() == []
        assert token_files.read_tokens(tmp_path / "o.bin")[1]["num_tokens"] == 0
        with pytest.warns(UserWarning, match="the corpus is empty"):
            fastbpe.train(path, 300, progress=False)
    path = write(tmp_path / "empty.parquet", b"")
    with pytest.raises(ValueError, match=r"empty\.parquet' is empty"):
        tok.encode_file(path, tmp_path / "p.bin", progress=False)
    assert not os.path.exists(tmp_path / "p.bin")


@pytest.mark.parametrize("module, name, extra", [("pyarrow", "c.parquet", "parquet"), ("zstandard", "c.jsonl.zst", "zstd")])
def test_a_missing_extra_is_named(tmp_path, tok, monkeypatch, capsys, module, name, extra):
    path = write_parquet(tmp_path, DOCS) if extra == "parquet" else write_jsonl(tmp_path, DOCS, "zst")
    for m in list(sys.modules):
        if m == module or m.startswith(module + "."):
            monkeypatch.setitem(sys.modules, m, None)  # import raises ImportError
    fix = f'pip install "fastbpe-rs\\[{extra}\\]"'
    with pytest.raises(ImportError, match=fix) as e:
        tok.encode_file(path, tmp_path / "o.bin", progress=False)
    assert isinstance(e.value, corpus.MissingExtraError)
    with pytest.raises(ImportError, match=fix):
        fastbpe.train(path, 300, progress=False)
    code, err = cli_run(["train-tokenizer", path, "--vocab-size", "300", "--out", tmp_path / "t.json"], capsys)
    assert code == 2 and err.count("\n") == 1 and f'fastbpe-rs[{extra}]' in err
    assert_nothing_written(tmp_path, path)


def test_a_python_without_lzma_refuses_xz_only(tmp_path, tok, monkeypatch):
    xz, gz = write_jsonl(tmp_path, DOCS, "xz"), write_jsonl(tmp_path, DOCS, "gz")
    monkeypatch.setitem(sys.modules, "lzma", None)
    with pytest.raises(ImportError, match=r"c\.jsonl\.xz' \(xz-compressed\) needs Python's module lzma"):
        tok.encode_file(xz, tmp_path / "o.bin", progress=False)
    assert tok.encode_file(gz, tmp_path / "o.bin", progress=False).tolist() == expected(tok, DOCS)


# ---- fuzzing the readers ---------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), how=st.sampled_from(["raw", "gz-magic", "zst-magic", "xz-magic", "gz", "zst", "xz"]))
def test_arbitrary_bytes_give_only_exceptions(tmp_path_factory, tok, data, how):
    """Whatever a .jsonl(.gz/.zst/.xz) file holds, reading and encoding it ends normally or with an
    Exception (never a panic or another BaseException), and a failure leaves no output."""
    folder = tmp_path_factory.mktemp("fuzz")
    if how == "raw":
        path = write(folder / "f.jsonl", data)
    elif how.endswith("-magic"):  # a header cut anywhere, or followed by anything
        suffix, magic = {"gz": ("gz", b"\x1f\x8b"), "zst": ("zst", b"\x28\xb5\x2f\xfd"), "xz": ("xz", b"\xfd7zXZ\x00")}[how[:-6]]
        path = write(folder / f"f.jsonl.{suffix}", magic + data)
    else:
        path = write(folder / f"f.jsonl.{how}", compress(data, how))
    try:
        docs = list(corpus.documents(path))
    except Exception:
        docs = None
    try:
        arr = tok.encode_file(path, folder / "o.bin", progress=False)
    except Exception:
        assert docs is None  # what reads, encodes
        assert_nothing_written(folder, path)
    else:
        assert arr.tolist() == expected(tok, docs)


# ---- the background reader -------------------------------------------------------------------


def test_in_background_passes_errors_and_stops_early():
    def items():
        yield 1
        yield 2
        raise OSError("disk on fire")

    got = []
    with pytest.raises(OSError, match="disk on fire"):
        for x in corpus.in_background(items()):
            got.append(x)
    assert got == [1, 2]

    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                i += 1
                yield i
        finally:
            closed.set()

    reader = corpus.in_background(endless())
    assert [next(reader) for _ in range(5)] == [1, 2, 3, 4, 5]
    reader.close()
    assert closed.is_set()
    assert not any(t.name == "fastbpe-corpus-reader" for t in threading.enumerate())


# ---- the command line ------------------------------------------------------------------------


def cli_run(argv, capsys) -> tuple[int, str]:
    try:
        cli.main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_cli_end_to_end_with_text_field(tmp_path, capsys):
    docs = DOCS * 20
    path = write_jsonl(tmp_path, docs, "zst", field="body")
    tok_path = tmp_path / "tok.json"
    code, err = cli_run(["train-tokenizer", path, "--vocab-size", "350", "--out", tok_path, "--text-field", "body"], capsys)
    assert code == 0, err
    tok = fastbpe.Tokenizer.load(tok_path)
    assert tok == fastbpe.train(iter(docs), 350, progress=False)
    code, err = cli_run(["encode", path, "--tokenizer", tok_path, "--out", tmp_path / "t.bin", "--text-field", "body",
                         "--val-out", tmp_path / "v.bin", "--val-fraction", "0.1"], capsys)
    assert code == 0, err
    train_ids, _ = token_files.read_tokens(tmp_path / "t.bin", verify=True)
    val_ids, _ = token_files.read_tokens(tmp_path / "v.bin", verify=True)
    assert train_ids.tolist() + val_ids.tolist() == expected(tok, docs)
    assert train_ids[-1] == tok.special_token_ids["<|endoftext|>"]  # the split falls after a document


def test_eot_token_names_the_separator(tmp_path, capsys):
    """A tokenizer whose end of text is not <|endoftext|> (a tokenizer.json's <｜end▁of▁sentence｜>)
    separates documents with the special token named; a name it does not declare is refused
    before anything is written, in the library and in the CLI."""
    docs = [d.replace("<|endoftext|>", "") for d in DOCS]
    tok = fastbpe.train(iter(docs), 330, special_tokens=["<|doc|>"], progress=False)
    path = write_jsonl(tmp_path, docs, "gz")
    with pytest.warns(UserWarning, match="eot_token="):
        plain = tok.encode_file(path, tmp_path / "p.bin", progress=False).tolist()
    assert plain == [i for d in docs for i in tok.encode(d)]
    sep = tok.special_token_ids["<|doc|>"]
    ids = tok.encode_file(path, tmp_path / "o.bin", eot_token="<|doc|>", progress=False).tolist()
    assert ids == [i for d in docs for i in tok.encode(d) + [sep]]
    with pytest.raises(ValueError, match=r"eot_token '<\|eos\|>' is not a special token.*'<\|doc\|>'"):
        tok.encode_file(path, tmp_path / "x.bin", eot_token="<|eos|>", progress=False)
    assert not (tmp_path / "x.bin").exists() and not (tmp_path / "x.bin.json").exists()
    tok.save(tmp_path / "tok.json")
    code, err = cli_run(["encode", path, "--tokenizer", tmp_path / "tok.json", "--out", tmp_path / "c.bin",
                         "--eot-token", "<|doc|>", "--val-out", tmp_path / "v.bin", "--val-fraction", "0.2"], capsys)
    assert code == 0, err
    train_ids, _ = token_files.read_tokens(tmp_path / "c.bin", verify=True)
    val_ids, _ = token_files.read_tokens(tmp_path / "v.bin", verify=True)
    assert train_ids.tolist() + val_ids.tolist() == ids and train_ids[-1] == sep  # split after a document
    code, err = cli_run(["encode", path, "--tokenizer", tmp_path / "tok.json", "--out", tmp_path / "d.bin",
                         "--eot-token", "<|eos|>"], capsys)
    assert code == 2 and err.count("\n") == 1 and "is not a special token" in err
    assert not (tmp_path / "d.bin").exists()


@pytest.mark.parametrize("case", ["no field", "truncated", "garbage", "no column"])
def test_cli_errors_are_one_line_and_leave_nothing(tmp_path, capsys, tok, case):
    tok_path = tmp_path / "tok.json"
    tok.save(tok_path)
    if case == "no field":
        path, want = write_jsonl(tmp_path, DOCS, field="body"), "line 1: no field 'text'"
    elif case == "truncated":
        packed = gzip.compress(LINES.encode() * 20)
        path, want = write(tmp_path / "c.jsonl.gz", packed[:-100]), "is truncated"
    elif case == "garbage":
        path, want = write(tmp_path / "c.jsonl", os.urandom(3000)), "line 1"
    else:
        path, want = write_parquet(tmp_path, DOCS, field="content"), "its columns are: 'id', 'content'"
    before = sorted(os.listdir(tmp_path))
    for argv in (["encode", path, "--tokenizer", tok_path, "--out", tmp_path / "o.bin", "--val-out", tmp_path / "v.bin"],
                 ["train-tokenizer", path, "--vocab-size", "300", "--out", tmp_path / "t2.json"]):
        code, err = cli_run(argv, capsys)
        assert code == 2 and err.startswith("fastbpe: error: ") and err.count("\n") == 1, err
        assert want in err and os.path.basename(path) in err
        assert sorted(os.listdir(tmp_path)) == before


CTRL_C_CHILD = r"""
import os, sys
import fastbpe
mode, path, out = sys.argv[1:]
tok = fastbpe.train(iter(["some words to learn from"]), 300, progress=False)
print("started", flush=True)
try:
    # Again and again until interrupted: each call takes longer than the second the test
    # allows for stopping, so a call that ignored Ctrl-C would fail the test however fast the
    # machine is at the work before the signal.
    while True:
        if mode == "train":
            fastbpe.train(path, 20000, progress=False)
        else:
            tok.encode_file(path, out, progress=False)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(0)
"""


@pytest.fixture(scope="module")
def big_jsonl(tmp_path_factory):
    """~160 MB of JSON lines (and gzip-compressed) of 300,000 distinct words: over a second of
    counting, merging or encoding per call."""
    import random

    folder = tmp_path_factory.mktemp("big_jsonl")
    rng = random.Random(0)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 12))) for _ in range(300_000)]
    block = "".join(json.dumps({"text": " ".join(rng.choices(words, k=200))}) + "\n" for _ in range(8000)).encode()
    data = block * (160 * 2**20 // len(block))
    return {"jsonl": write(folder / "big.jsonl", data), "gz": write(folder / "big.jsonl.gz", gzip.compress(data, 1))}


@pytest.mark.parametrize("mode", ["train", "encode_file"])
@pytest.mark.parametrize("how", ["jsonl", "gz"])
def test_ctrl_c_stops_within_a_second_and_leaves_nothing(tmp_path, big_jsonl, mode, how):
    import signal
    import subprocess
    import time

    out = tmp_path / "o.bin"
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, mode, big_jsonl[how], str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started", proc.stderr.read()[-2000:]
        time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        line = proc.stdout.readline().strip()
        waited = time.perf_counter() - sent
        assert line == "interrupted", f"{line!r} {proc.stderr.read()[-2000:]}"
        assert waited < 1.0, f"{mode} {how}: took {waited:.2f} s to stop"
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("how", ["gz", "zst"])
def test_compressed_text_trains_while_it_is_cut(tmp_path, monkeypatch, how):
    """Many batches: the reader thread cuts the text while the core counts the previous batch."""
    monkeypatch.setattr(corpus, "BATCH_CHARS", 1 << 16)
    monkeypatch.setattr(corpus, "_CHUNK_CHARS", 1 << 14)
    text = "".join(text_corpus().replace("alpha", f"alpha{i}") for i in range(150))
    plain = write(tmp_path / "c.txt", text.encode("utf-8"))
    packed = write(tmp_path / f"c.txt.{how}", compress(text.encode("utf-8"), how))
    assert fastbpe.train(packed, 400, progress=False) == fastbpe.train(plain, 400, progress=False)


def test_cli_compare_reads_the_documents(tmp_path, capsys):
    path = write_jsonl(tmp_path, DOCS, "gz", field="body")
    try:
        cli.main(["compare", path, "--text-field", "body", "--vocab-size", "300"])
    except SystemExit as e:
        pytest.fail(f"exit {e.code}: {capsys.readouterr().err}")
    out = capsys.readouterr().out
    measured = len(corpus.sample_text(path, "body").encode("utf-8")) / 1e6
    assert f"{measured:.2f} MB measured" in out and "| bpe (300) |" in out
    assert corpus.sample_text(path, "body") == "".join(d + "\n" for d in DOCS)
