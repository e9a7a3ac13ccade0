"""Encoding: exact against tiktoken and the pure-Python reference; batches, numpy, streaming, files,
other formats, long repetitive input, and bad input."""

import concurrent.futures
import gc
import gzip
import itertools
import json
import operator
import os
import sys
import threading
import time
import tracemalloc
import warnings
import zlib
from collections import deque
from functools import lru_cache

import numpy as np
import pytest
import tiktoken
import tokenizers
from conftest import CORPORA, shared_file
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fastbpe
from fastbpe import reference

EOT = "<|endoftext|>"
CL100K_SPECIALS = {EOT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}
O200K_SPECIALS = {EOT: 199999, "<|endofprompt|>": 200018}
CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
O200K_FILE = "fb374d419588a4632f3f557e76b4b70aebbca790"
CUSTOM = r"\w+|\s+|[^\w\s]+"
# Fixture name of the fastbpe tokenizer for each tiktoken encoding.
FASTBPE = {"gpt2": "gpt2", "cl100k_base": "cl100k", "o200k_base": "o200k"}
# tiktoken itself is the slow side for cl100k and o200k: their first ~1 MB of each corpus keeps this fast.
SLICE = {"gpt2": None, "cl100k_base": 1_000_000, "o200k_base": 1_000_000}

# The conftest's TIKTOKEN_CACHE_DIR fixture is function-scoped (and so are tmp_path, request).
HYP = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---- tokenizers, built once per module ---------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2():
    return fastbpe.Tokenizer.from_files(shared_file("gpt2", "vocab.json"), shared_file("gpt2", "merges.txt"), [EOT])


@pytest.fixture(scope="module")
def gpt2_double():
    """GPT-2 with a second special token that starts with the first."""
    return fastbpe.Tokenizer.from_files(
        shared_file("gpt2", "vocab.json"), shared_file("gpt2", "merges.txt"), [EOT, EOT + EOT]
    )


@pytest.fixture(scope="module")
def cl100k():
    return fastbpe.Tokenizer.from_tiktoken(shared_file("tiktoken_cache", CL100K_FILE), "cl100k", CL100K_SPECIALS)


@pytest.fixture(scope="module")
def o200k():
    return fastbpe.Tokenizer.from_tiktoken(shared_file("tiktoken_cache", O200K_FILE), "o200k", O200K_SPECIALS)


@pytest.fixture(scope="module")
def tik():
    """tiktoken's encodings, loaded offline from the shared cache (module fixtures are set up
    before the conftest's function-scoped TIKTOKEN_CACHE_DIR, so set it here too)."""
    cache = shared_file("tiktoken_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        return {name: tiktoken.get_encoding(name) for name in FASTBPE}


@pytest.fixture(scope="module")
def custom():
    """Trained with a custom regex: encoded through Python's `regex` (the other path)."""
    text = with_specials(corpus("ru_tinystories.txt")[:200_000] + corpus("code_go.txt")[:100_000], [EOT], every=3000)
    return fastbpe.train(iter([text]), 600, special_tokens=[EOT, EOT + EOT], pattern=CUSTOM, num_threads=2)


@lru_cache(maxsize=None)
def corpus(name: str) -> str:
    """A shared corpus as text, line endings untouched (enwiki: its first ~3 MB)."""
    path = shared_file("corpus", name)
    if name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            return f.read(3_000_000)
    return path.read_bytes().decode("utf-8")


def with_specials(text: str, specials, every: int = 4999) -> str:
    """`text` with the special tokens inserted, in turn, every `every` characters (mid-word too)."""
    out = []
    for k, i in enumerate(range(0, len(text), every)):
        out.append(text[i : i + every])
        out.append(specials[k % len(specials)])
    return "".join(out)


def assert_ids_equal(got, want, tok=None):
    """List equality without pytest's diff of million-element lists, and a readable first difference."""
    got, want = list(got), list(want)
    if got == want:
        return
    i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    around = ""
    if tok is not None:
        around = f" (want decodes to {tok.decode(want[max(0, i - 5) : i + 5])!r})"
    pytest.fail(f"{len(got)} ids vs {len(want)} expected; first difference at {i}: got {got[i : i + 8]}, want {want[i : i + 8]}{around}")


# ---- generated text --------------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        # contractions in every case, and near-contractions
        "'s", "'S", "'t", "'T", "'d", "'D", "'m", "'M", "'ll", "'LL", "'Ll", "'lL", "'ve", "'VE", "'Ve",
        "'re", "'RE", "'rE", "'", "''", "'x", "\u2019s", "I'm", "they'll've",
        # digits of several scripts and lengths
        "0", "7", "42", "123", "2024", "1234567", "\u0661\u0662\u0663", "\u0969", "\u00bd", "\u2167",
        # letters, marks, emoji
        "a", "Z", "\u00e9", "e\u0301", "\u00df", "\u01c5", "\u02b0", "\u4e2d\u6587", "\u041f\u0440\u0438\u0432\u0435\u0442", "\U0001f389",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467", "hello", " world", "HELLO",
        # whitespace of every kind
        " ", "  ", "\t", "\n", "\r", "\r\n", "\n\n", "\x0b", "\x0c", "\x85", "\xa0", "\u2028", "\u3000", "\u200d",
        "\x00", "\x1c", "\x1f", "\x7f",
        # punctuation, and pieces of special tokens
        "!", "?", "...", "//", "/*", "<|", "|>", "<|endoftext", "endoftext|>", "<<|endoftext|>|>",
        EOT, EOT + EOT, "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endofprompt|>",
    ]
)
RUNS = st.builds(
    operator.mul,
    st.sampled_from([" ", "\n", "\t", "\r\n", " \n", "\n ", "  \n", "\u3000", "a", "1", "'s"]),
    st.integers(1, 80),
)
CONTROL = st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), min_size=1, max_size=8)
DIGITS = st.text("0123456789", min_size=1, max_size=12)
# Characters that Python's own Unicode data (older than both the `regex` module's and tiktoken's
# tables) calls assigned: on those, every engine agrees on what is a letter, a digit or a space.
# Characters assigned only in the newest Unicode are split as the `regex` module sees them
# (fastbpe's definition), which tiktoken's older tables cannot; see test_recent_unicode_*.
ASSIGNED = st.characters(exclude_categories=("Cn", "Cs"))
MIXED = st.lists(st.one_of(FRAGMENTS, RUNS, CONTROL, DIGITS, st.text(ASSIGNED, max_size=6)), max_size=40).map("".join)
TEXT = st.one_of(st.text(ASSIGNED), MIXED)

# ---- 1. exactly tiktoken ----------------------------------------------------------------------


def test_named_patterns_are_spelled_once_as_tiktoken_spells_them(tik):
    """The Rust core owns the named patterns; `fastbpe.patterns` reads them from it, and each is
    tiktoken's own string for that encoding."""
    from fastbpe import _core, patterns

    assert patterns.NAMED == _core.PATTERNS
    for encoding, name in FASTBPE.items():
        assert _core.PATTERNS[name] == tik[encoding]._pat_str, name


@pytest.mark.parametrize("name", CORPORA)
@pytest.mark.parametrize("encoding", list(FASTBPE))
def test_corpus_equals_tiktoken(request, tik, encoding, name):
    tok = request.getfixturevalue(FASTBPE[encoding])
    text = corpus(name)[: SLICE[encoding]]
    assert_ids_equal(tok.encode_ordinary(text), tik[encoding].encode_ordinary(text), tok)


@pytest.mark.parametrize("name", CORPORA)
@pytest.mark.parametrize("encoding", list(FASTBPE))
def test_corpus_with_special_tokens_equals_tiktoken(request, tik, encoding, name):
    tok = request.getfixturevalue(FASTBPE[encoding])
    text = with_specials(corpus(name)[:300_000], tok.special_tokens)
    want = tik[encoding].encode(text, allowed_special="all")
    assert_ids_equal(tok.encode(text), want, tok)
    assert set(tok.special_token_ids.values()) <= set(want)  # the test did exercise every special token


def check_tiktoken(tok, enc, text):
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)
    assert tok.encode(text) == enc.encode(text, allowed_special="all")


@settings(HYP, max_examples=500)
@given(text=TEXT)
@example("I'm they'll've 'S 'RE 'Ll\n\n\n  x  \t\n" + EOT + "  " + EOT + EOT + "<|endoftext")
@example("\r\n\r\n  \r\n\x0b\x0c\x85\u2028 \u3000a  1234567890 'VE")
def test_gpt2_text_equals_tiktoken(gpt2, tik, text):
    check_tiktoken(gpt2, tik["gpt2"], text)


@settings(HYP, max_examples=200)
@given(text=TEXT)
@example("I'm they'll've 'S 'RE 'Ll\n\n\n  x  \t\n" + EOT + "<|fim_prefix|><|endofprompt|>1234567 ab/\n\n")
def test_cl100k_text_equals_tiktoken(cl100k, tik, text):
    check_tiktoken(cl100k, tik["cl100k_base"], text)


@settings(HYP, max_examples=200)
@given(text=TEXT)
@example("HELLOworld'S HelloWORLD'll \u01c5a\u02b0b 1234567 //\n\n/ " + EOT + "<|endofprompt|>")
def test_o200k_text_equals_tiktoken(o200k, tik, text):
    check_tiktoken(o200k, tik["o200k_base"], text)


# Letters and digits from recent Unicode versions (17): the installed `regex` module knows them,
# tiktoken's tables do not (to tiktoken they are neither \p{L} nor \p{N}). One from several blocks.
RECENT_CHARS = ["\u0558", "\U00011de0", "\U0001e6c0", "\U000323b0", "\U0003d000"]


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k", "o200k"])
def test_recent_unicode_characters_split_as_regex_does(pattern):
    """fastbpe's pieces are defined as Python's `regex` module's, including on characters newer
    than tiktoken's Unicode tables (where tiktoken's ids differ, by its tables' age)."""
    import regex

    from fastbpe import _core, patterns

    for char in RECENT_CHARS:
        text = f"{char}'s a{char}b {char}1 !{char}"
        assert _core.split(pattern, text) == regex.findall(patterns.NAMED[pattern], text), f"U+{ord(char):04X}"


# ---- 2. Rust encoder == reference on freshly trained vocabularies -------------------------------

TRAIN_WORDS = st.sampled_from(
    ["the", " the", "cat", " hat", "in", "aaa", "ab", "'s", "'ll", "'S", " 42", "1999", "\n", "\n\n", "  ", "\t",
     "\u00e9", "\u4e2d\u6587", "\u041f\u0440\u0438\u0432\u0435\u0442", "!!", "...", "\x00", "\r\n", "\U0001f389", EOT, EOT + EOT, "<|endoftext"]
)
TRAIN_TEXT = st.lists(st.one_of(TRAIN_WORDS, st.text(max_size=6)), max_size=60).map("".join)


@settings(HYP, max_examples=300)
@given(
    corpus_text=TRAIN_TEXT,
    text=st.one_of(TRAIN_TEXT, TEXT),
    pattern=st.sampled_from(["gpt2", None, CUSTOM, "cl100k", "o200k"]),
    vocab_size=st.integers(256, 500),
    specials=st.sampled_from([[], [EOT], [EOT, EOT + EOT], [EOT + EOT, EOT], ["ab", "b", "abc", "\n"]]),
)
def test_trained_encoder_equals_reference(corpus_text, text, pattern, vocab_size, specials):
    vocab_size = max(vocab_size, 256 + len(specials))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = fastbpe.train(iter([corpus_text]), vocab_size, special_tokens=specials, pattern=pattern, num_threads=1)
    for t in (text, corpus_text):
        ids = tok.encode(t)
        assert ids == reference.encode(t, tok.vocab, tok.merges, tok.special_tokens, tok.pattern)
        assert tok.encode_ordinary(t) == reference.encode(t, tok.vocab, tok.merges, [], tok.pattern)
        assert tok.decode(ids) == t


@settings(HYP, max_examples=100)
@given(
    corpora=st.lists(TRAIN_TEXT, min_size=2, max_size=2),
    texts=st.lists(st.one_of(TRAIN_TEXT, TEXT), min_size=1, max_size=6),
    pattern=st.sampled_from(["gpt2", "cl100k", "o200k"]),
)
def test_encoders_used_in_turn_keep_their_own_pieces(corpora, texts, pattern):
    """`encode` keeps the pieces it has encoded from call to call, per thread and encoder: two
    tokenizers that split the same words differently, called in turn, each give the reference's ids."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        toks = [fastbpe.train(iter([c * 3]), 300, special_tokens=[], pattern=pattern, num_threads=1) for c in corpora]
    for _ in range(2):
        for t in texts:
            for tok in toks:
                assert tok.encode(t) == reference.encode(t, tok.vocab, tok.merges, [], tok.pattern)


def test_threads_encoding_at_once_give_the_ids_of_one(gpt2, tik):
    texts = [f"word{i % 97} Zürich{i % 13} the cat {i}" * (1 + i % 5) for i in range(400)]
    want = [tik["gpt2"].encode_ordinary(t) for t in texts]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(gpt2.encode, texts))
    assert got == want


def test_batch_and_file_calls_at_once_give_the_ids_of_one(tik, tmp_path):
    """Batch and file calls from several threads at once on a new tokenizer fill the table of
    pieces its workers share all together, each piece put in by whichever worker meets it
    first; every call still gets tiktoken's ids."""
    tok = fastbpe.Tokenizer.from_files(shared_file("gpt2", "vocab.json"), shared_file("gpt2", "merges.txt"), [EOT])
    text = corpus("enwiki_100M.txt.gz")[:1_500_000]
    lines = text.splitlines(keepends=True)
    enc = tik["gpt2"]
    want_lines = [enc.encode(line, allowed_special="all") for line in lines]
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    want_file = enc.encode(text, allowed_special="all")  # the text holds <|endoftext|>

    def call(i):
        if i % 2:
            return tok.encode_file(path, tmp_path / f"out{i}.bin", num_threads=2, progress=False).tolist()
        order = lines if i % 4 == 0 else lines[::-1]  # other threads meet the pieces in another order
        return tok.encode_batch(order, num_threads=2)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, range(8)))
    for i, got in enumerate(results):
        if i % 2:
            assert got == want_file, i
        else:
            assert got == (want_lines if i % 4 == 0 else want_lines[::-1]), i


# ---- 3. decode ---------------------------------------------------------------------------------


@settings(HYP, max_examples=500)
@given(text=TEXT, data=st.data())
def test_gpt2_decode_roundtrip(gpt2, tik, text, data):
    ids = gpt2.encode(text)
    assert gpt2.decode(ids) == text
    assert gpt2.decode_bytes(ids) == text.encode("utf-8")
    assert gpt2.decode(np.asarray(ids, dtype=np.uint16)) == text
    # Any stretch of the ids (multi-byte characters cut in two) decodes as tiktoken decodes it.
    i = data.draw(st.integers(0, len(ids)))
    j = data.draw(st.integers(i, len(ids)))
    assert gpt2.decode(ids[i:j]) == tik["gpt2"].decode(ids[i:j])


def test_decode_invalid_utf8_like_tiktoken(gpt2, tik):
    enc = tik["gpt2"]
    id_of = {t: i for i, t in gpt2.vocab.items()}
    ff, a, b = id_of[b"\xff"], id_of[b"a"], id_of[b"b"]
    assert gpt2.decode_bytes([ff]) == b"\xff"
    assert gpt2.decode([ff]) == "\ufffd" == enc.decode([ff])
    emoji = gpt2.encode("\U0001f389\u4e2d")
    assert len(emoji) > 2  # byte-level pieces: cutting the list cuts characters
    for ids in ([ff, ff], [a, ff, b], [id_of[b"\xe4"], id_of[b"\xb8"]], emoji[:1], emoji[1:], emoji[:-1], [id_of[b"\xc3"], a]):
        assert gpt2.decode(ids) == enc.decode(ids), ids


# ---- 4. special tokens -------------------------------------------------------------------------


def test_longest_special_token_wins(gpt2_double, gpt2, tik):
    tok = gpt2_double
    single, double = tok.special_token_ids[EOT], tok.special_token_ids[EOT + EOT]
    assert single == 50256 and double == 50257  # GPT-2's own id; the new one appended
    a, b = tok.encode("a"), tok.encode("b")
    assert tok.encode(EOT + EOT) == [double]
    assert tok.encode(EOT * 3) == [double, single]
    assert tok.encode("a" + EOT * 4 + "b") == a + [double, double] + b
    assert tok.encode(EOT[:-1] + EOT + EOT[1:]) == tok.encode_ordinary(EOT[:-1]) + [single] + tok.encode_ordinary(EOT[1:])
    text = "x" + EOT + EOT + "y " + EOT + "<|endoftext|<|endoftext|>>\n" + EOT * 5
    assert tok.encode(text) == reference.encode(text, tok.vocab, tok.merges, tok.special_tokens, "gpt2")
    assert tok.decode(tok.encode(text)) == text
    # encode_ordinary: special tokens are plain text.
    ordinary = tok.encode_ordinary(text)
    assert ordinary == tik["gpt2"].encode_ordinary(text) == gpt2.encode_ordinary(text)
    assert single not in ordinary and double not in ordinary
    assert tok.decode(ordinary) == text
    assert gpt2.encode(text) == tik["gpt2"].encode(text, allowed_special="all")


# ---- 5. batches and numpy ----------------------------------------------------------------------


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("name", ["gpt2", "gpt2_double", "cl100k", "custom"])
def test_encode_batch_equals_encode(request, name, num_threads):
    tok = request.getfixturevalue(name)
    lines = corpus("code_rust.txt")[:150_000].splitlines(keepends=True)
    texts = lines + ["", EOT, "a" + EOT + EOT + "b", "x" * 5000, " " * 3000 + "\n" * 100, corpus("zh_fortunes.txt")[:20_000]]
    assert len(texts) > 2 * 8 * 256  # several groups of texts per thread
    assert tok.encode_batch(texts, num_threads=num_threads) == [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts[::-1], num_threads=num_threads + 1) == [tok.encode(t) for t in texts[::-1]]
    assert tok.encode_batch(tuple(texts[:50]), num_threads=num_threads) == [tok.encode(t) for t in texts[:50]]
    assert tok.encode_batch([], num_threads=num_threads) == []


@pytest.mark.parametrize("name", ["gpt2", "cl100k"])
def test_id_lists_are_plain_lists_the_collector_skips(request, name):
    # Lists of ints cannot form cycles; untracked, they cost the collector nothing (the named
    # patterns encode in Rust; a custom regex's lists are made in Python).
    tok = request.getfixturevalue(name)
    results = [tok.encode("hello world"), tok.encode_ordinary("hello world"), *tok.encode_batch(["a b", "c"] * 300, num_threads=2)]
    for ids in results:
        assert type(ids) is list and not gc.is_tracked(ids)
    ids = results[0]
    ids.append(7)
    ids.append([1])  # still an ordinary, mutable list
    assert ids[-2:] == [7, [1]] and ids[:-2] == tok.encode("hello world")


@pytest.mark.parametrize("length", [100, 70_000, 150_000])
def test_id_lists_hold_one_reference_per_item(gpt2, length):
    """Long lists take their ints' references in bulk (counted per id, added once): each int's
    count grows by exactly its number of places, for ids below 257 (immortal from Python 3.12 on,
    and then left alone) and above, and falls back when the list goes; a sparse id beyond the
    ids kept as ints is made on the spot."""
    text = (corpus("tinystories_val.txt") * 3)[: length * 6]
    ids = gpt2.encode(text)
    assert len(ids) >= length * 0.8
    assert ids == gpt2.encode_to_numpy(text).tolist()
    values = [min(ids), 262, max(ids)]  # below 257 and above
    objs = [ids[ids.index(v)] for v in values]  # the encoder's own int objects
    refs = lambda: [sys.getrefcount(o) for o in objs]  # noqa: E731
    gc.collect()  # nothing else lets go of these ints while they are counted
    before = refs()
    again = gpt2.encode(text)
    after = refs()
    immortal = [sys.version_info >= (3, 12) and b >= 2**30 for b in before]
    assert after == [b if i else b + again.count(v) for v, b, i in zip(values, before, immortal)]
    # A long list is filled in place: it behaves as any list after (grows, shrinks, sorts).
    copy = list(again)
    again.append(-1)
    del again[:3]
    again.sort()
    assert again == sorted(copy[3:] + [-1]) and len(again) == len(copy) - 2
    del again, copy
    assert refs()[1:] == before[1:]  # the ints only the encoder makes: as many references as before

    big = 10**9
    sparse = fastbpe.Tokenizer({**{i: bytes([i]) for i in range(256)}, big: b"ab"}, [(b"a", b"b")])
    got = sparse.encode("abxab " * (length // 4))
    assert got == [big, 120, big, 32] * (length // 4)
    assert got == sparse.encode_to_numpy("abxab " * (length // 4)).tolist()


@settings(HYP, max_examples=100)
@given(texts=st.lists(TEXT, max_size=30))
def test_encode_batch_generated(gpt2_double, texts):
    want = [gpt2_double.encode(t) for t in texts]
    assert gpt2_double.encode_batch(texts, num_threads=2) == want
    assert gpt2_double.encode_batch(texts, num_threads=1) == want


@pytest.mark.parametrize("name,dtype", [("gpt2", np.uint16), ("gpt2_double", np.uint16), ("cl100k", np.uint32), ("o200k", np.uint32)])
def test_encode_to_numpy(request, name, dtype):
    tok = request.getfixturevalue(name)
    text = with_specials(corpus("ru_tinystories.txt")[:200_000], tok.special_tokens, every=997)
    arr = tok.encode_to_numpy(text)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.dtype(dtype)
    ids = tok.encode(text)
    assert_ids_equal(arr.tolist(), ids, tok)
    assert max(tok.special_token_ids.values()) in ids  # the largest id made it through the dtype
    empty = tok.encode_to_numpy("")
    assert empty.dtype == np.dtype(dtype) and empty.size == 0


@pytest.mark.parametrize("name", ["gpt2", "cl100k"])
def test_encode_to_numpy_over_many_windows(request, name):
    """The array is filled a window of text (about 1 MB) at a time: a text of several windows,
    special tokens strewn through it, gives encode's ids in order."""
    tok = request.getfixturevalue(name)
    text = with_specials(corpus("enwiki_100M.txt.gz")[:2_700_000], tok.special_tokens, every=65_537)
    assert_ids_equal(tok.encode_to_numpy(text).tolist(), tok.encode(text), tok)
    assert_ids_equal(tok.encode_ordinary_to_numpy(text).tolist(), tok.encode_ordinary(text), tok)


def test_encode_to_numpy_with_as_many_ids_as_bytes():
    """Room for one id per byte of text is what the array starts with: a vocabulary of single
    bytes fills it exactly, across windows and two-byte characters, and loses nothing."""
    tok = fastbpe.Tokenizer({i: bytes([i]) for i in range(256)}, [])
    text = "é" * 700_000 + " ab"
    assert tok.encode_to_numpy(text).tolist() == list(text.encode())


# ---- 6. encode_iterable ------------------------------------------------------------------------

STREAM_TEXT = st.lists(
    st.one_of(FRAGMENTS, RUNS, TRAIN_WORDS, st.sampled_from(["a\nb", "1\nx", "z\n", "\nq"]), st.sampled_from([EOT, EOT + EOT, EOT + "\n"])),
    min_size=1,
    max_size=40,
).map("".join)


@settings(HYP, max_examples=100)
@given(
    data=st.data(),
    tricky=STREAM_TEXT,
    filler=st.sampled_from(["hello world\n", "x", "ab cd ", "a\nb ", EOT + "a\n"]),
    name=st.sampled_from(["gpt2_double", "cl100k", "custom"]),
)
def test_encode_iterable_any_cuts(gpt2_double, cl100k, custom, data, tricky, filler, name):
    """encode_iterable holds text back from 64K characters on: put the tricky text where that
    threshold falls (often right at a special token or a newline), cut it anywhere (inside special
    tokens, runs of spaces, pieces), and the ids are those of the whole text."""
    tok = {"gpt2_double": gpt2_double, "cl100k": cl100k, "custom": custom}[name]
    # Where in `tricky` the 64K-th character falls: anywhere, or where a special token might end or
    # begin, or after a newline.
    near = [i for i in range(len(tricky) + 1) if tricky[:i].endswith(("|>", "\n")) or tricky[i:].startswith("<|")]
    k = data.draw(st.one_of(st.integers(0, len(tricky)), st.sampled_from(near or [0])), label="threshold at")
    head_len = (1 << 16) - k
    head = (filler * (head_len // len(filler) + 1))[:head_len]
    text = head + tricky + filler * data.draw(st.integers(0, 3)) + tricky
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=6), label="anywhere")
    if data.draw(st.booleans(), label="one chunk per character of tricky"):
        cuts += range(head_len, head_len + len(tricky) + 1)
    else:
        cuts += [head_len + c for c in data.draw(st.lists(st.integers(0, len(tricky)), max_size=len(tricky) + 1), label="in tricky")]
    cuts.sort()  # duplicates make empty chunks
    chunks = [text[i:j] for i, j in zip([0] + cuts, cuts + [len(text)])]
    assert "".join(chunks) == text
    assert_ids_equal(tok.encode_iterable(iter(chunks)), tok.encode(text), tok)


@settings(HYP, max_examples=200)
@given(text=TEXT, data=st.data())
def test_encode_iterable_small_cuts(gpt2_double, text, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=10)))
    chunks = [text[i:j] for i, j in zip([0] + cuts, cuts + [len(text)])]
    assert list(gpt2_double.encode_iterable(chunks)) == gpt2_double.encode(text)


def test_encode_iterable_many_chunks_around_threshold(gpt2_double):
    """Special tokens and whitespace runs cut at every offset near 64K characters."""
    unit = "ab\ncd" + EOT + EOT + "  \n\n  x" + EOT + "'ll 12345\nz"
    text = "hello world\n" * 5460 + unit * 40  # the threshold falls in the units
    want = gpt2_double.encode(text)
    for size in (1, 2, 3, 5, 7, 13, 26, 4096, 70000):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        assert_ids_equal(gpt2_double.encode_iterable(chunks), want, gpt2_double)


@pytest.mark.parametrize(
    "name,file",
    [("gpt2", "code_rust.txt"), ("gpt2_double", "zh_fortunes.txt"), ("cl100k", "code_python.txt"), ("custom", "ru_tinystories.txt")],
)
def test_encode_iterable_file_lines(request, tmp_path, name, file):
    """A text file iterated line by line (open() in text mode) encodes as its whole text."""
    tok = request.getfixturevalue(name)
    path = shared_file("corpus", file)
    if name != "gpt2":  # its first ~1 MB of lines
        small = tmp_path / file
        small.write_bytes(path.read_bytes()[:1_000_000].rsplit(b"\n", 1)[0] + b"\n")
        path = small
    with open(path, encoding="utf-8") as f:
        want = tok.encode(f.read())
    with open(path, encoding="utf-8") as f:
        got = list(tok.encode_iterable(f))
    assert_ids_equal(got, want, tok)


def _hello_lines(total_bytes: int, per_item: int):
    line = "hello world\n"
    for _ in range(total_bytes // (len(line) * per_item)):
        yield line * per_item


def _count(iterator) -> int:
    """Consume an iterator at C speed, keeping nothing."""
    counter = itertools.count()
    deque(zip(iterator, counter), maxlen=0)
    return next(counter)


def test_encode_iterable_memory_is_bounded_tracemalloc(gpt2):
    """8 MB of lines, one line per item: Python's traced peak stays far below the input size.
    (tracemalloc makes each id ~20x slower to produce, hence the size; the 200 MB run is below.)"""
    total = 8_000_000
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        n = _count(gpt2.encode_iterable(_hello_lines(total, 1)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 3 * (total // 12)  # "hello", " world", "\n"
    assert peak < 3_000_000, f"peak traced memory {peak / 1e6:.1f} MB for a {total / 1e6:.0f} MB input"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_a_small_first_batch_leaves_the_shared_table_untouched():
    """The table that the workers of batch and file calls share (16 MB of slots) is made at a
    tokenizer's first such call; a small call touches only the pages it uses, so neither its time
    nor the process's resident memory pays for the whole table."""
    tok = fastbpe.Tokenizer.from_files(shared_file("gpt2", "vocab.json"), shared_file("gpt2", "merges.txt"), [EOT])
    texts = ["hello world", "a few short texts", EOT + " in a batch"] * 4
    want = [tok.encode(t) for t in texts]
    before = _rss()
    assert tok.encode_batch(texts, num_threads=2) == want
    grown = _rss() - before
    assert grown < 8_000_000, f"a first batch of {len(texts)} short texts grew resident memory by {grown / 1e6:.1f} MB"
    # A large call on the same tokenizer (over 1 MB: the table's pages are backed at once) finds
    # the pieces the small one put in the table, and its own.
    big = [corpus("enwiki_100M.txt.gz")[:700_000]] * 2 + texts
    assert tok.encode_batch(big, num_threads=2) == [tok.encode(t) for t in big]


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_encode_iterable_memory_is_bounded_200mb(gpt2):
    """200 MB of "hello world" lines (1,000 per item): resident memory (Python and Rust), sampled
    by a thread while the ids are consumed, stays within 50 MB of where it started."""
    total = 200_000_000
    baseline = _rss()
    peak = baseline
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        n = _count(gpt2.encode_iterable(_hello_lines(total, 1000)))
    finally:
        done.set()
        sampler.join()
    assert n == 3 * (total // 12_000) * 1000
    growth = peak - baseline
    assert growth < 50_000_000, f"resident memory grew by {growth / 1e6:.0f} MB"


# ---- 7. encode_file ----------------------------------------------------------------------------


def _big_text() -> str:
    """> 10 MB: lines with special tokens, a 5 MB stretch with no newline (cut only at special
    tokens), and whitespace runs; several 4 MiB blocks."""
    a = "".join(
        f"line {i}: the quick brown fox {i * 7 % 13} jumps \u00e9\u4e2d\U0001f389 'S\n" + (EOT if i % 97 == 0 else EOT + EOT if i % 89 == 0 else "")
        for i in range(80_000)
    )
    b = "".join(f"word{i % 100} WORD, 'll 12345 " * 30 + (EOT + EOT if i % 2 else EOT) for i in range(6_000))
    c = "".join("\n\n\n    \t" + "x" * (i % 17) + "  \n" + ("\n" if i % 5 else EOT) + " " * (i % 40) for i in range(100_000))
    return a + b + c


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.txt"
    path.write_bytes(_big_text().encode("utf-8"))
    assert path.stat().st_size > 10_000_000
    return path


def _no_temporaries(folder) -> None:
    leftovers = [p for p in os.listdir(folder) if p.startswith(".tmp-")]
    assert not leftovers


@pytest.mark.parametrize("num_threads", [1, 2])
def test_encode_file_big(gpt2_double, big_file, tmp_path, num_threads):
    tok = gpt2_double
    out = tmp_path / "big.bin"
    arr = tok.encode_file(big_file, out, num_threads=num_threads, progress=False)
    want = tok.encode_to_numpy(big_file.read_bytes().decode("utf-8"))
    assert isinstance(arr, np.memmap)
    assert arr.dtype == np.uint16
    assert np.array_equal(arr, want)
    meta = json.loads((tmp_path / "big.bin.json").read_text())
    assert meta["dtype"] == "uint16" and meta["num_tokens"] == len(want)
    assert out.stat().st_size == 2 * len(want)
    assert meta["checksum"] == f"crc32:{zlib.crc32(out.read_bytes()):08x}"  # computed while writing
    _no_temporaries(tmp_path)


@pytest.mark.parametrize("name,file", [("gpt2", "code_go.txt"), ("gpt2", "zh_fortunes.txt")])
def test_encode_file_corpus(request, tmp_path, name, file):
    tok = request.getfixturevalue(name)
    path = shared_file("corpus", file)
    arr = tok.encode_file(path, tmp_path / "out.bin", progress=False)
    want = tok.encode_to_numpy(path.read_bytes().decode("utf-8"))
    assert isinstance(arr, np.memmap)
    assert np.array_equal(arr, want)
    meta = json.loads((tmp_path / "out.bin.json").read_text())
    assert meta["dtype"] == "uint16" and meta["num_tokens"] == len(want)
    # uint32 on request
    arr32 = tok.encode_file(path, tmp_path / "out32.bin", dtype=np.uint32, progress=False)
    assert arr32.dtype == np.uint32 and np.array_equal(arr32, want)
    assert json.loads((tmp_path / "out32.bin.json").read_text())["dtype"] == "uint32"
    _no_temporaries(tmp_path)


@pytest.mark.parametrize("name,dtype", [("cl100k", np.uint32), ("custom", np.uint16)])
def test_encode_file_special_tokens(request, tmp_path, name, dtype):
    """cl100k: ids past uint16; custom: a custom regex, encoded through the Python path."""
    tok = request.getfixturevalue(name)
    text = with_specials(corpus("enwiki_100M.txt.gz")[:400_000], tok.special_tokens, every=3001)
    path = tmp_path / "in.txt"
    path.write_bytes(text.encode("utf-8"))
    arr = tok.encode_file(path, tmp_path / "out.bin", progress=False)
    want = tok.encode_to_numpy(text)
    assert isinstance(arr, np.memmap) and arr.dtype == np.dtype(dtype)
    assert np.array_equal(arr, want)
    assert max(tok.special_token_ids.values()) in want
    meta = json.loads((tmp_path / "out.bin.json").read_text())
    assert meta["dtype"] == np.dtype(dtype).name and meta["num_tokens"] == len(want)
    assert meta["checksum"] == f"crc32:{zlib.crc32((tmp_path / 'out.bin').read_bytes()):08x}"
    _no_temporaries(tmp_path)


def test_encode_file_empty(gpt2, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    arr = gpt2.encode_file(path, tmp_path / "out.bin", progress=False)
    assert len(arr) == 0
    assert json.loads((tmp_path / "out.bin.json").read_text())["num_tokens"] == 0


def test_encode_file_missing_input(gpt2, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        gpt2.encode_file(tmp_path / "nope.txt", tmp_path / "out.bin", progress=False)
    assert not (tmp_path / "out.bin").exists()
    _no_temporaries(tmp_path)


@pytest.mark.parametrize("name", ["gpt2", "cl100k", "custom"])
@pytest.mark.parametrize("where", ["start", "late"])
def test_encode_file_invalid_utf8(request, tmp_path, name, where):
    tok = request.getfixturevalue(name)
    good = b"good text here\n" * (400_000 if where == "late" else 10)  # late: past the first 4 MiB block
    path = tmp_path / "bad.txt"
    path.write_bytes(good + b"bad \xc3\x28 here\n" + good)
    out = tmp_path / "out.bin"
    offset = len(good) + 4
    with pytest.raises(ValueError, match=rf"bad\.txt.*\b{offset}\b"):  # names the file and the byte offset
        tok.encode_file(path, out, progress=False)
    assert not out.exists()
    assert not (tmp_path / "out.bin.json").exists()
    _no_temporaries(tmp_path)


def test_encode_file_uint16_too_small_for_cl100k(cl100k, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="uint32"):
        cl100k.encode_file(path, tmp_path / "out.bin", dtype=np.uint16, progress=False)
    assert not (tmp_path / "out.bin").exists()
    _no_temporaries(tmp_path)


# ---- 8. long repetitive input ----------------------------------------------------------------


@pytest.mark.parametrize("text", ["a" * 1_000_000, " " * 1_000_000, "ab" * 500_000], ids=["a", "space", "ab"])
def test_long_repetitive_input_is_not_quadratic(gpt2, text):
    start = time.perf_counter()
    ids = gpt2.encode(text)
    elapsed = time.perf_counter() - start
    assert gpt2.decode(ids) == text
    assert elapsed < 2.0, f"{elapsed:.2f} s for {len(text)} characters"


# ---- 9. other formats ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    text = with_specials(corpus("tinystories_val.txt")[:300_000], [EOT], every=2000)
    return fastbpe.train(iter([text]), 1000, special_tokens=[EOT, "<|pad|>"], num_threads=2)


@pytest.mark.parametrize("name", ["gpt2", "gpt2_double", "cl100k", "trained", "custom"])
def test_save_load_roundtrip(request, tmp_path, name):
    tok = request.getfixturevalue(name)
    tok.save(tmp_path / "tok.json")
    again = fastbpe.Tokenizer.load(tmp_path / "tok.json")
    assert again.special_token_ids == tok.special_token_ids
    text = with_specials(corpus("code_go.txt")[:200_000], tok.special_tokens)
    assert_ids_equal(again.encode(text), tok.encode(text), tok)
    assert again.encode_ordinary(text) == tok.encode_ordinary(text)


def _hf_text(tok):
    return with_specials(corpus("tinystories_val.txt")[:100_000] + corpus("de_eltec.txt")[:50_000] + corpus("code_python.txt")[:50_000], tok.special_tokens, every=1999)


@pytest.mark.parametrize("name", ["gpt2", "trained", "custom"])
def test_to_huggingface(request, tmp_path, name):
    tok = request.getfixturevalue(name)
    tok.to_huggingface(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = _hf_text(tok)
    ids = tok.encode(text)
    assert tok.special_token_ids[EOT] in ids
    assert_ids_equal(hf.encode(text).ids, ids, tok)


def test_to_huggingface_trained_without_pattern(tmp_path):
    text = corpus("tinystories_val.txt")[:100_000]
    tok = fastbpe.train(iter([with_specials(text, [EOT], every=500)]), 600, special_tokens=[EOT], pattern=None)
    tok.to_huggingface(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    sample = with_specials(text[:20_000], [EOT], every=300)
    assert_ids_equal(hf.encode(sample).ids, tok.encode(sample), tok)


def test_to_tiktoken_roundtrip(gpt2, tmp_path):
    gpt2.to_tiktoken(tmp_path / "gpt2.tiktoken")
    again = fastbpe.Tokenizer.from_tiktoken(tmp_path / "gpt2.tiktoken", "gpt2", {EOT: 50256})
    for name in ("code_python.txt", "de_eltec.txt"):
        text = with_specials(corpus(name), [EOT], every=100_003)
        assert_ids_equal(again.encode(text), gpt2.encode(text), gpt2)


# ---- 10. bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,bad",
    [("gpt2", 10**7), ("gpt2", -1), ("gpt2", 2**32), ("gpt2", 50257), ("cl100k", 100256), ("cl100k", 100261), ("o200k", 199998)],
)
def test_decode_unknown_id(request, name, bad):
    tok = request.getfixturevalue(name)
    for ids in ([bad], [1, 2, bad, 3]):
        with pytest.raises(KeyError) as info:
            tok.decode(ids)
        assert isinstance(info.value, fastbpe.tokenizer.UnknownTokenError)
        assert str(bad) in str(info.value)
        with pytest.raises(KeyError, match=str(bad)):
            tok.decode_bytes(ids)


@pytest.mark.parametrize("name", ["gpt2", "cl100k"])
@pytest.mark.parametrize("value", [b"bytes", None, 42, ["a"]])
def test_encode_rejects_non_str(request, name, value):
    tok = request.getfixturevalue(name)
    with pytest.raises(TypeError):
        tok.encode(value)
    with pytest.raises(TypeError):
        tok.encode_ordinary(value)
    with pytest.raises(TypeError):
        tok.encode_to_numpy(value)
    with pytest.raises(TypeError):
        tok.encode_batch(["ok", value])
    if isinstance(value, bytes):
        with pytest.raises(TypeError):
            list(tok.encode_iterable(["ok", value]))


@pytest.mark.parametrize("line", ["h e llo", "hello", "a  b", " a", "a \u4e2d"])
def test_from_files_malformed_merges(tmp_path, line):
    vocab = shared_file("gpt2", "vocab.json")
    merges = tmp_path / "merges.txt"
    merges.write_text(f"#version: 0.2\n\u0120 t\n\u0120 a\n{line}\nh e\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"merges.txt:4"):
        fastbpe.Tokenizer.from_files(vocab, merges)


@pytest.mark.parametrize("line", [b"!!!notbase64 2", b"Yw== x", b"Yw== 2 3", b"Yw=="])
def test_from_tiktoken_malformed_line(tmp_path, line):
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(b"YQ== 0\nYg== 1\n" + line + b"\nZA== 3\n")
    with pytest.raises(ValueError, match=r"bad\.tiktoken:3"):
        fastbpe.Tokenizer.from_tiktoken(path, "gpt2")


def test_merge_part_not_in_vocab():
    vocab = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ValueError, match="not in the vocabulary"):
        fastbpe.Tokenizer(vocab, [(b"a", b"b"), (b"ab", b"cd")])
    vocab[256] = b"ab"
    tok = fastbpe.Tokenizer(vocab, [(b"a", b"b")])  # a consistent one is accepted
    assert tok.encode("abab") == [256, 256]
