"""The core under hostile input: no abort and no panic (only exceptions), memory bounded on any text,
Ctrl-C obeyed promptly, and the cuts that bound memory never change a piece."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
import warnings
from collections import Counter

import pytest
import regex
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fastbpe
from fastbpe import _core, _stream, patterns, reference, training

HERE = os.path.dirname(os.path.abspath(__file__))
BYTES = {i: bytes([i]) for i in range(256)}
CAT = "The cat sat on the mat.\n"


def run_limited(code: str, *args: str, limit_mb: int = 2048, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter whose address space is capped: an allocation that would
    abort the process shows as a failed run here, not as a dead pytest."""
    prelude = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit_mb << 20}, {limit_mb << 20}))\n"
        f"sys.path.insert(0, {HERE!r})\n"
    )
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def assert_ran(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, f"exit status {done.returncode}\nstdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"


# ---- 1. sizes, ids and empty tokens ------------------------------------------------------------


def test_a_sparse_large_id_costs_no_table_of_its_size():
    """Ids are any u32: a tokenizer whose largest id is 10**9 (or 2**32 - 1) encodes and decodes
    within a 2 GB address space (a table per id up to the largest took 24 GB and aborted)."""
    done = run_limited(
        """
        import fastbpe
        b = {i: bytes([i]) for i in range(256)}
        for big in (10**9, 2**32 - 1):
            tok = fastbpe.Tokenizer({**b, big: b"ab"}, [(b"a", b"b")])
            assert tok.encode("abab a") == [big, big, 32, 97], tok.encode("abab a")
            assert tok.decode([big, 32]) == "ab "
            assert tok.encode_to_numpy("ab").tolist() == [big]
            assert tok.encode_batch(["ab", "xab"], num_threads=2) == [[big], [120, big]]
        print("ok")
        """
    )
    assert_ran(done)


@pytest.mark.parametrize("bad", [2**32, 2**64, -1])
def test_ids_out_of_range_name_the_id_and_the_limit(bad):
    vocab = [(i, bytes([i])) for i in range(256)]
    with pytest.raises(ValueError, match=rf"{bad}.*2\*\*32 - 1"):
        _core.CoreEncoder.from_merges(vocab + [(bad, b"ab")], [], [], "gpt2")
    with pytest.raises(ValueError, match=rf"{bad}.*2\*\*32 - 1"):
        _core.CoreEncoder.from_ranks([(t, i) for i, t in vocab] + [(b"ab", bad)], [], "gpt2")
    with pytest.raises(ValueError, match=rf"special token .<\|x\|>. has id {bad}"):
        _core.CoreEncoder.from_merges(vocab, [], [("<|x|>", bad)], "gpt2")


def test_empty_token_is_refused_not_a_panic():
    vocab = [(i, bytes([i])) for i in range(256)]
    for build in (
        lambda: _core.CoreEncoder.from_merges(vocab + [(256, b"")], [], [], "gpt2"),
        lambda: _core.CoreEncoder.from_ranks([(t, i) for i, t in vocab] + [(b"", 256)], [], "gpt2"),
        lambda: fastbpe.Tokenizer({**BYTES, 256: b""}, []).encode("a b"),
    ):
        with pytest.raises(ValueError, match="empty"):
            build()
    with pytest.raises(ValueError, match="empty"):
        _core.CoreEncoder.from_merges(vocab, [], [("", 256)], "gpt2")
    with pytest.raises(ValueError, match="empty"):
        _core.WordCounts("gpt2", [""])


def test_duplicate_and_clashing_ids_are_refused():
    vocab = [(i, bytes([i])) for i in range(256)]
    with pytest.raises(ValueError, match="id 256 is given to two tokens"):
        _core.CoreEncoder.from_merges(vocab + [(256, b"ab"), (256, b"cd")], [], [], "gpt2")
    with pytest.raises(ValueError, match="already gives"):
        _core.CoreEncoder.from_merges(vocab, [], [("<|x|>", 97)], "gpt2")
    # Special tokens may share an id (the first decodes), or take a token's id with its bytes.
    enc = _core.CoreEncoder.from_merges(vocab, [], [("<|x|>", 300), ("<|y|>", 300), ("a", 97)], "gpt2")
    assert enc.encode("<|y|>a<|x|>") == [300, 97, 300]
    assert enc.decode_bytes([300]) == b"<|x|>"


@pytest.mark.parametrize("pattern", [r"\w*", r"\s*|\w+", r"(?:)|x"])
def test_custom_pattern_matching_the_empty_string(tmp_path, pattern):
    """Empty matches are pieces with no bytes: they add no id (they used to panic the encoder)."""
    text = "hello world, hello x\n" * 50
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = fastbpe.train(iter([text]), 300, special_tokens=["<|e|>"], pattern=pattern)
        ref_vocab, ref_merges = reference.train_bpe_from_texts([text], 300, ["<|e|>"], pattern)
    assert tok.merges == ref_merges
    probe = "hello<|e|> world xx"
    ids = tok.encode(probe)
    assert ids == reference.encode(probe, tok.vocab, tok.merges, ["<|e|>"], pattern)
    assert list(tok.encode_iterable(iter(probe))) == ids
    path = tmp_path / "t.txt"
    path.write_text(probe * 1000)
    assert tok.encode_file(path, tmp_path / "t.bin", progress=False).tolist() == ids * 1000


def test_huge_vocab_size_trains_until_no_pair_is_left(tmp_path):
    """vocab_size 10**9, 2**64, 2**70: the merges the corpus allows and the early-stop warning
    (preallocating 10**9 merges aborted; 2**64 raised PanicException)."""
    path = tmp_path / "c.txt"
    path.write_text("the cat sat on the mat\n" * 100)
    done = run_limited(
        """
        import warnings, fastbpe
        path = sys.argv[1]
        for size in (10**9, 2**64, 2**70):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                tok = fastbpe.train(path, size)
            assert 256 < tok.vocab_size < 400, tok.vocab_size
            assert any("training stopped after" in str(x.message) and f"of {size - 257} merges" in str(x.message) for x in w), [str(x.message) for x in w]
        print("ok")
        """,
        str(path),
    )
    assert_ran(done)


def test_cli_huge_vocab_size(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("the cat sat on the mat\n" * 100)
    out = tmp_path / "tok.json"
    done = run_limited(
        "from fastbpe.cli import main; sys.argv = ['fastbpe'] + sys.argv[1:]; main()",
        "train-tokenizer", str(path), "--vocab-size", "1000000000", "--out", str(out),
    )
    assert_ran(done)
    assert fastbpe.Tokenizer.load(out).vocab_size < 400


def test_negative_and_huge_counts():
    counts = _core.WordCounts("gpt2", [])
    counts.add_texts(["the cat sat"], 1)
    with pytest.raises(ValueError, match="num_merges must be 0 or more"):
        _core.train_merges(counts, -1)
    assert len(_core.train_merges(counts, 2**200)) > 0
    with pytest.raises(ValueError, match="num_threads must be 0 or more"):
        counts.add_texts(["x"], -3)
    counts.add_texts(["x"], 2**64)  # as many threads as make sense
    with pytest.raises(ValueError, match="count of piece"):
        counts.add_pieces({b"ab": -1})
    with pytest.raises(ValueError, match="count of piece"):
        counts.add_pieces({b"ab": 2**64})
    counts.add_pieces({b"ab": 2**64 - 1})
    with pytest.raises(ValueError, match="exceed"):
        counts.add_pieces({b"ab": 1})
    # Counts whose pair counts would overflow the merge loop's integers.
    with pytest.raises(ValueError, match="2\\^63"):
        _core.train_merges(counts, 10)


def test_width_too_small_for_the_ids_is_refused(tmp_path):
    enc = _core.CoreEncoder.from_merges([(i, bytes([i])) for i in range(256)] + [(70000, b"ab")], [(b"a", b"b")], [], "gpt2")
    with pytest.raises(ValueError, match="do not fit in 2 bytes"):
        enc.encode_to_buffer("ab", 2, True)
    path = tmp_path / "t.txt"
    path.write_text("ab")
    with pytest.raises(ValueError, match="do not fit in 2 bytes"):
        enc.encode_file(str(path), str(tmp_path / "o.bin"), 2, 1)
    with pytest.raises(ValueError, match="width must be 2 or 4"):
        enc.encode_to_buffer("ab", 3, True)
    assert bytes(enc.encode_to_buffer("ab", 4, True)) == (70000).to_bytes(4, "little")


def test_decoding_more_than_memory_holds_raises_memory_error():
    """10,000 copies of a 1 MB token are 10 GB: MemoryError, not an abort."""
    done = run_limited(
        """
        from fastbpe import _core
        enc = _core.CoreEncoder.from_merges([(i, bytes([i])) for i in range(256)] + [(256, b"x" * 2**20)], [], [], "whole")
        try:
            enc.decode_bytes([256] * 10_000)
        except MemoryError as e:
            print("MemoryError", e)
        """,
        limit_mb=1024,
    )
    assert_ran(done)
    assert "MemoryError" in done.stdout


# ---- 1. the core under random arguments --------------------------------------------------------

SMALL_IDS = st.one_of(st.integers(0, 300), st.integers(-3, -1), st.sampled_from([2**32, 2**64, 2**64 + 7, -(2**64)]))
# Ids that made tables of their size (run in a subprocess with an address-space cap).
BIG_IDS = st.one_of(SMALL_IDS, st.sampled_from([2**16, 2**24 - 1, 2**24, 10**9, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
TOKENS = st.one_of(st.binary(max_size=3), st.sampled_from([b"", b"ab", b"abc", b" t", b"he"]))
TEXTS = st.one_of(st.text(max_size=20), st.sampled_from(["", "ab abc", "<|e|>ab", " the\n\n", "a" * 200]))
NAMES = st.one_of(st.sampled_from(["gpt2", "cl100k", "o200k", "whole", "", "GPT2", "p50k", "gpt2\x00"]), st.text(max_size=5))
SPECIALS = st.lists(st.one_of(st.sampled_from(["<|e|>", "", " ", "\n", "ab"]), st.text(max_size=4)), max_size=3)
COUNTS = st.one_of(st.integers(0, 10), st.integers(-2, -1), st.sampled_from([2**63, 2**64 - 1, 2**64, 2**100]))
THREADS = st.one_of(st.integers(0, 4), st.sampled_from([-1, 2**63, 2**64, 2**70]))
WIDTHS = st.sampled_from([2, 4, 0, 1, 3, 8, -1, 2**64])


def _encoder(data, ids):
    full = data.draw(st.booleans(), label="all 256 bytes")
    vocab = [(i, bytes([i])) for i in range(256)] if full else []
    vocab += data.draw(st.lists(st.tuples(ids, TOKENS), max_size=6), label="vocab")
    pairs = data.draw(st.lists(st.tuples(TOKENS, TOKENS), max_size=4), label="merges")
    specials = data.draw(st.lists(st.tuples(st.one_of(st.sampled_from(["<|e|>", ""]), st.text(max_size=4)), ids), max_size=3), label="specials")
    pattern = data.draw(NAMES, label="pattern")
    if data.draw(st.booleans(), label="from ranks"):
        return _core.CoreEncoder.from_ranks([(t, i) for i, t in vocab], specials, pattern)
    return _core.CoreEncoder.from_merges(vocab, pairs, specials, pattern)


def _use_encoder(data, enc, ids, tmp):
    op = data.draw(st.sampled_from(["encode", "ordinary", "pieces", "buffer", "batch", "decode", "token", "prefix", "file"]), label="op")
    if op == "encode":
        enc.encode(data.draw(TEXTS))
    elif op == "ordinary":
        enc.encode_ordinary(data.draw(TEXTS))
    elif op == "pieces":
        enc.encode_pieces(data.draw(st.lists(TEXTS, max_size=4)))
    elif op == "buffer":
        enc.encode_to_buffer(data.draw(TEXTS), data.draw(WIDTHS), data.draw(st.booleans()))
    elif op == "batch":
        enc.encode_batch(data.draw(st.lists(TEXTS, max_size=5)), data.draw(THREADS), data.draw(st.booleans()))
    elif op == "decode":
        enc.decode_bytes(data.draw(st.lists(ids, max_size=5)))
    elif op == "token":
        enc.token_bytes(data.draw(ids))
    elif op == "prefix":
        enc.safe_prefix_chars(data.draw(TEXTS))
    else:
        path = os.path.join(tmp, "in.txt")
        with open(path, "wb") as f:
            f.write(data.draw(st.binary(max_size=30)))
        enc.encode_file(path, os.path.join(tmp, "out.bin"), data.draw(WIDTHS), data.draw(THREADS))


def _use_counts(data, tmp):
    counts = _core.WordCounts(data.draw(st.one_of(st.none(), NAMES)), data.draw(SPECIALS))
    for _ in range(data.draw(st.integers(0, 3))):
        op = data.draw(st.sampled_from(["texts", "pieces", "file", "train", "dict"]))
        if op == "texts":
            counts.add_texts(data.draw(st.lists(TEXTS, max_size=4)), data.draw(THREADS))
        elif op == "pieces":
            counts.add_pieces(data.draw(st.dictionaries(TOKENS, COUNTS, max_size=3)))
        elif op == "file":
            path = os.path.join(tmp, "c.txt")
            with open(path, "wb") as f:
                f.write(data.draw(st.binary(max_size=30)))
            counts.add_file(path, data.draw(THREADS))
        elif op == "train":
            _core.train_merges(counts, data.draw(st.one_of(COUNTS, st.integers(0, 2**70))))
        else:
            counts.to_dict()


def fuzz_once(data, ids, tmp):
    """One random call into `_core`: it may raise an exception, never anything else (a Rust
    panic is PanicException, a BaseException that `except Exception` misses)."""
    try:
        what = data.draw(st.sampled_from(["encoder", "counts", "split", "cuts"]), label="target")
        if what == "encoder":
            enc = _encoder(data, ids)
            for _ in range(data.draw(st.integers(1, 3))):
                _use_encoder(data, enc, ids, tmp)
        elif what == "counts":
            _use_counts(data, tmp)
        elif what == "split":
            _core.split(data.draw(st.one_of(st.none(), NAMES)), data.draw(TEXTS))
        else:
            _core.safe_cuts(data.draw(st.one_of(st.none(), NAMES)), data.draw(SPECIALS), data.draw(TEXTS))
    except BaseException as e:  # noqa: BLE001 - the point: catch what `except Exception` misses
        if not isinstance(e, Exception):
            raise AssertionError(f"{type(e).__module__}.{type(e).__name__} is not an Exception: {e}") from e


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_core_raises_only_exceptions(tmp_path, data):
    fuzz_once(data, SMALL_IDS, str(tmp_path))


def fuzz_big(tmp: str) -> None:
    """`fuzz_once` with ids up to 2**32 - 1, for a subprocess with capped memory."""

    @settings(max_examples=150, deadline=None, database=None)
    @given(data=st.data())
    def run(data):
        fuzz_once(data, BIG_IDS, tmp)

    run()


def test_core_raises_only_exceptions_for_huge_ids(tmp_path):
    done = run_limited(f"import test_faults_core as t; t.fuzz_big({str(tmp_path)!r}); print('ok')", timeout=300)
    assert_ran(done)


# ---- 2. cuts never change a piece --------------------------------------------------------------

# Every kind of character the cut rules tell apart, in runs and alone.
ADVERSARIAL = st.sampled_from(
    list(" \t\r\n\x0b\x0c\x85\u2028\u3000\xa0'/0123456789aAzZsStTlLeEǅʰ中é\u0301\u20dd!?.,-_<|>\x1c")
    + ["'s", "'ll", "'VE", "  ", "\r\n", "\n\n", " \n", "!\n", ".\n", "/\n", "\n/", "12345", "🎉", "ſ", "ab", "Ab"]
)
CUT_TEXT = st.one_of(st.lists(ADVERSARIAL, max_size=60).map("".join), st.text(max_size=40))
CUT_SPECIALS = st.sampled_from([[], ["<|e|>"], ["<|e|>", "<|e|><|e|>"], ["a b"], ["\n\n"], ["x'", "1 2"], [" "], ["é"]])


def pieces_oracle(text: str, pattern: str | None, specials: list[str]) -> list:
    """The pieces and special tokens of `text`, by Python's `regex` (the definition)."""
    out: list = []
    ordered = sorted(specials, key=len, reverse=True)
    parts = regex.split("(" + "|".join(regex.escape(s) for s in ordered) + ")", text) if ordered else [text]
    for i, part in enumerate(parts):
        if i % 2:
            out.append(("special", part))
        elif pattern is None:
            out += [part] if part else []
        else:
            out += regex.findall(patterns.NAMED[pattern], part)
    return out


def pieces_of_parts(text, cuts, pattern, specials):
    bounds = [0, *cuts, len(text)]
    return [p for a, b in zip(bounds, bounds[1:]) for p in pieces_oracle(text[a:b], pattern, specials)]


@settings(max_examples=2000, deadline=None)
@given(text=CUT_TEXT, pattern=st.sampled_from(["gpt2", "cl100k", "o200k", None]), specials=CUT_SPECIALS)
@example(CAT * 3, "gpt2", [])
@example("it's 12 o'clock\r\n\tx/y 'S  \n\n1a!\n|b", "o200k", [])
@example("a.\n/x a\n/b !\n\n c", "o200k", [])
@example("a b<|e|> c", "cl100k", ["<|e|>", "<|e|><|e|>"])
def test_every_cut_gives_the_pieces_of_the_whole(text, pattern, specials):
    """Cutting the text at every place `safe_cuts` reports at once, and splitting the parts apart
    with `regex.findall`, gives the pieces of the whole text; so does cutting at the last cut and
    at the split cut of any prefix (what streaming does), whatever follows the prefix."""
    want = pieces_oracle(text, pattern, specials)
    cuts, _, _ = _core.safe_cuts(pattern, specials, text)
    assert pieces_of_parts(text, cuts, pattern, specials) == want, cuts
    for n in range(len(text) + 1):
        _, last, split = _core.safe_cuts(pattern, specials, text[:n])
        for cut in (last, split):
            if cut is not None:
                assert 0 < cut <= n
                assert pieces_of_parts(text, [cut], pattern, specials) == want, (n, cut)


def test_the_cat_text_has_cuts_in_every_line():
    cuts, last, _ = _core.safe_cuts("gpt2", ["<|endoftext|>"], CAT * 3)
    assert len(cuts) >= 3 * 5 and last == len(CAT * 3) - 2  # "mat|." is the last


def test_split_cut_for_text_without_cheap_cuts():
    """Lines of "|---|" with Windows line ends have no cheap cut; splitting finds one."""
    text = "|---|---|\r\n" * 100
    cuts, last, split = _core.safe_cuts("cl100k", [], text)
    assert cuts == [] and last is None
    assert split is not None and split > len(text) - 40
    assert pieces_of_parts(text, [split], "cl100k", []) == pieces_oracle(text, "cl100k", [])


# ---- 2. custom patterns: the carry-over is exact -----------------------------------------------

CUSTOM_PATTERNS = [
    r"\w+|\s+|[^\w\s]+",
    patterns.GPT2,
    patterns.CL100K,
    patterns.O200K,
    r"\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"\w*",
    r"(?<=\s)\w+|\S|\s",
    r"\b\w+\b|.",
    r"(\w)\w*|\s+|[^\w\s]",
]


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(CUT_TEXT, st.lists(st.sampled_from(["<|e|>", "ab cd ", "\n\n", "x" * 40, " 'll", "  \n "]), max_size=30).map("".join)),
    pattern=st.sampled_from(CUSTOM_PATTERNS),
    specials=st.sampled_from([[], ["<|e|>"], ["<|e|>", "<|e|><|e|>"]]),
    data=st.data(),
)
def test_custom_stream_gives_the_pieces_of_the_whole(text, pattern, specials, data):
    """Fed in any parts, with a tiny threshold so that nearly every part is split and carried."""
    from fastbpe import _stream

    threshold = data.draw(st.integers(1, 8), label="threshold")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8), label="cuts"))
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    stream = _stream.CustomStream(regex.compile(pattern), specials, threshold=threshold)
    got: list = []
    for part in parts:
        for pieces, special in stream.feed(part):
            got += pieces + ([("special", special)] if special is not None else [])
    for pieces, special in stream.finish():
        got += pieces + ([("special", special)] if special is not None else [])
    want: list = []
    ordered = sorted(specials, key=len, reverse=True)
    split = regex.split("(" + "|".join(regex.escape(s) for s in ordered) + ")", text) if ordered else [text]
    for i, part in enumerate(split):
        want += [("special", part)] if i % 2 else patterns.pieces(regex.compile(pattern), part)
    assert got == want


@pytest.mark.parametrize("pattern", [r"\w+|\s+(?!\S)|\s+|[^\w\s]+", r"(\w)\w*|\s+|[^\w\s]"])
def test_custom_file_counts_equal_the_whole(tmp_path, monkeypatch, pattern):
    """Read in blocks of 1000 bytes, which cut pieces and characters: the counts of the whole text
    (whole matches, as for texts, also where the pattern has groups)."""
    text = ("hello wörld, it's 2024!\n\n  tabs\there" * 3000) + "<|e|>" + "tail  "
    path = tmp_path / "c.txt"
    path.write_text(text)
    monkeypatch.setattr(training, "_CUSTOM_BLOCK", 1000)
    custom = _stream.CustomPattern(pattern, ["<|e|>"])
    counts: Counter = Counter()
    training._count_custom_file(str(path), custom, counts, None)
    whole: Counter = Counter()
    training._count_custom_text(text, custom, whole)
    assert counts == whole


# ---- 2. memory is bounded on text without newline cuts ------------------------------------------


@pytest.fixture(scope="module")
def cat_files(tmp_path_factory):
    """16 MB and 64 MB of one short sentence per line: no letter-newline-letter anywhere."""
    folder = tmp_path_factory.mktemp("cat")
    line = CAT.encode() * 4096
    paths = {}
    for mb in (16, 64):
        paths[mb] = folder / f"cat{mb}.txt"
        with open(paths[mb], "wb") as f:
            for _ in range(mb * 2**20 // len(line)):
                f.write(line)
    return paths


PEAK = """
import json, fastbpe
path, what, out = sys.argv[1:4]
tok = fastbpe.train(iter(["The cat sat on the mat.\\n" * 2000]), 300, num_threads=2)

def kb(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1])

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak resident memory (VmHWM) starts again from the resident memory now
before = kb("VmRSS")
if what == "train":
    fastbpe.train(path, 300, num_threads=2)
elif what == "encode_file":
    tok.encode_file(path, out, num_threads=2, progress=False)
else:
    n = 0
    with open(path) as f:
        for _ in tok.encode_iterable(f):
            n += 1
print(json.dumps({"grew_mb": (kb("VmHWM") - before) / 1024}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs")
@pytest.mark.parametrize("what", ["train", "encode_file", "encode_iterable"])
def test_memory_stays_bounded_on_text_without_newline_cuts(cat_files, tmp_path, what):
    """Training and encoding files of "The cat sat on the mat." lines: the peak resident memory,
    measured from the work's start, grows by a fixed amount (a few chunks, and the tables the
    encoder's workers share, up to 32 MB), not with the file: 48 MB more text adds almost nothing
    (the whole file was held once: 486 MB for 210 MB)."""
    grew = {}
    for mb, path in cat_files.items():
        done = run_limited(PEAK, str(path), what, str(tmp_path / "o.bin"), limit_mb=4096)
        assert_ran(done)
        grew[mb] = json.loads(done.stdout.strip().splitlines()[-1])["grew_mb"]
    assert grew[64] < 64, f"{what}: peak RSS grew by {grew[64]:.0f} MB for a 64 MB file"
    assert grew[64] - grew[16] < 12, f"{what}: peak RSS grew by {grew[16]:.0f} MB for 16 MB of text, {grew[64]:.0f} MB for 64 MB"


@pytest.mark.filterwarnings("ignore:training stopped")
def test_encode_iterable_yields_before_the_input_ends():
    tok = fastbpe.train(iter([CAT * 100]), 300, special_tokens=["<|endoftext|>"])
    custom = fastbpe.train(iter([CAT * 100]), 300, special_tokens=["<|endoftext|>"], pattern=r"\w+|\s+|[^\w\s]+")
    for t in (tok, custom):
        read = 0

        def lines():
            nonlocal read
            for _ in range(200_000):
                read += 1
                yield CAT

        first = next(iter(t.encode_iterable(lines())))
        assert first == t.encode("The")[0]
        assert read < 20_000, f"the first id came after {read} of 200,000 lines"


@pytest.mark.filterwarnings("ignore:training stopped")
def test_custom_encode_file_equals_encode(tmp_path):
    """Blocks of 1 MB cut characters of several bytes and pieces in half; the ids are those of the
    whole text all the same."""
    unit = "héllo wörld 中文🎉  it's 42<|e|>\n\n  x"
    tok = fastbpe.train(iter([unit * 50]), 330, special_tokens=["<|e|>"], pattern=r"\w+|\s+(?!\S)|\s+|[^\w\s]+")
    text = (unit + "ab" * 997) * 1200  # no block boundary falls at the same place in a unit
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    assert path.stat().st_size > 2 << 20
    got = tok.encode_file(path, tmp_path / "t.bin", progress=False)
    assert got.tolist() == tok.encode(text)


@pytest.mark.filterwarnings("ignore:training stopped")
def test_custom_file_paths_hold_a_block_not_the_file(tmp_path, monkeypatch):
    """A custom pattern's counting and encoding hold about a block of text (Python's traced
    memory), not the 2 MB file, which has no special token to cut at."""
    path = tmp_path / "cat.txt"
    path.write_text(CAT * (2 * 2**20 // len(CAT)))
    rx = regex.compile(r"\w+|\s+|[^\w\s]+")
    monkeypatch.setattr(training, "_CUSTOM_BLOCK", 1 << 14)
    tok = fastbpe.train(iter([CAT * 100]), 300, pattern=rx.pattern)
    tracemalloc.start()
    try:
        counts: Counter = Counter()
        training._count_custom_file(str(path), _stream.CustomPattern(rx.pattern, []), counts, None)
        counting = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        tok.encode_file(path, tmp_path / "o.bin", progress=False)
        encoding = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counts[b"cat"] == 2 * 2**20 // len(CAT)
    assert counting < 2_000_000, f"counting traced {counting / 1e6:.1f} MB"  # the whole: 4 MB
    assert encoding < 6_000_000, f"encoding traced {encoding / 1e6:.1f} MB"  # the whole: 50 MB


# ---- 2. Ctrl-C ---------------------------------------------------------------------------------

CTRL_C_CHILD = """
import os, sys, fastbpe
from fastbpe import _core
mode, pattern, data = sys.argv[1], sys.argv[2], sys.argv[3]
pattern = None if pattern == "none" else pattern
core_pattern = pattern if pattern in (None, "gpt2", "cl100k", "o200k") else None
started = False
def progress(n):
    global started
    if not started:
        started = True
        print("started", flush=True)
def small_tokenizer():
    text = open(data + ".sample", encoding="utf-8").read()
    return fastbpe.train(iter([text]), 400, special_tokens=[], pattern=pattern, num_threads=2)
try:
    if mode == "count":
        if core_pattern is None and pattern is not None:
            progress(0)
            fastbpe.train(data, 10**6, special_tokens=["<|e|>"], pattern=pattern, num_threads=2)
        else:
            _core.WordCounts(core_pattern, ["<|e|>"]).add_file(data, 2, progress)
    elif mode == "merge":
        counts = _core.WordCounts(None, [])
        if data.endswith(".words"):
            counts.add_pieces({w.encode(): int(n) for w, n in (line.split() for line in open(data, encoding="utf-8"))})
        else:
            counts.add_pieces({open(data, "rb").read(): 1})
        _core.train_merges(counts, 10**6, progress)
    elif mode == "train":
        tok = None
        progress(0)
        fastbpe.train(data, 10**6, special_tokens=[], pattern=pattern, num_threads=2)
    else:
        tok = small_tokenizer()
        if mode == "encode_file":
            if tok._custom is None:
                tok._core.encode_file(data, data + ".bin", 4, 2, progress)
            else:
                progress(0)
                tok.encode_file(data, data + ".bin", progress=False)
        elif mode == "encode_batch":
            texts = open(data, encoding="utf-8").read().split("\\n")
            progress(0)
            tok.encode_batch(texts, num_threads=2)
        else:
            text = open(data, encoding="utf-8").read()
            progress(0)
            tok.encode_to_numpy(text) if mode == "encode_to_numpy" else tok.encode(text)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(0)
print("finished", flush=True)
"""


def _random_text(rng, n: int, alphabet: bytes) -> str:
    """`n` characters drawn from `alphabet` (ASCII), fast."""
    table = bytes(alphabet[i % len(alphabet)] for i in range(256))
    return rng.randbytes(n).translate(table).decode()


@pytest.fixture(scope="module")
def ctrl_c_data(tmp_path_factory):
    """Inputs that keep each mode busy for a second or more: a large file of random words with a
    special token now and then (counting, encoding a file); lines that are long runs of letters
    (whose BPE is slow: batches, one text); one long piece (encoding without a pattern); distinct
    words (merging); a very long word (merging without a pattern: each merge reads all of it)."""
    import random

    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("ctrl_c")
    words = _random_text(rng, 2_400_000, b"abcdefghijklmnopqrstuvwxyz    ").split()
    big = folder / "big.txt"
    # Random words, nearly all distinct: each a new entry in the counts (counting text that
    # repeats itself runs at over 1 GB/s, done before it can be interrupted).
    with open(big, "w", encoding="utf-8") as f:
        for _ in range(128):
            f.write(_random_text(rng, 2**20, b"abcdefghijklmnopqrstuvwxyz    .\n") + "<|e|>")
    runs = folder / "runs.txt"
    runs.write_text("\n".join(_random_text(rng, 20_000, b"abcdefgh") for _ in range(1000)))
    whole = folder / "whole.txt"
    whole.write_text(_random_text(rng, 6_000_000, b"abcdefgh "))
    word = folder / "word.txt"
    word.write_text(_random_text(rng, 25_000_000, b"abcdefgh "))
    distinct = folder / "distinct.words"
    distinct.write_text("".join(f"{w * 3} {len(w)}\n" for w in set(words)))
    for p in (big, runs, whole):
        (folder / (p.name + ".sample")).write_text(p.read_text(encoding="utf-8")[:20_000].replace("<|e|>", ""))
    return {"big": big, "runs": runs, "whole": whole, "word": word, "distinct": distinct}


CTRL_C_CASES = [
    ("count", "gpt2", "big"),
    ("count", "cl100k", "big"),
    ("count", "o200k", "big"),
    ("count", r"\w+|\s+|[^\w\s]+", "big"),
    ("merge", "none", "distinct"),
    ("merge", "none", "word"),
    ("train", "none", "word"),
    ("encode_file", "gpt2", "runs"),
    ("encode_file", "o200k", "runs"),
    ("encode_file", "none", "whole"),
    ("encode_file", r"\w+|\s+|[^\w\s]+", "big"),
    ("encode_batch", "cl100k", "runs"),
    ("encode_batch", "none", "runs"),
    ("encode", "gpt2", "runs"),
    ("encode_to_numpy", "gpt2", "runs"),
    ("encode", "none", "whole"),
]


@pytest.mark.parametrize("mode,pattern,data", CTRL_C_CASES)
def test_ctrl_c_stops_every_mode_within_a_second(ctrl_c_data, mode, pattern, data):
    """SIGINT while the work runs: KeyboardInterrupt within 1 s (pattern=None training took 25 s:
    a merge over a huge word checked for signals only every 64 merges)."""
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, mode, pattern, str(ctrl_c_data[data])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line == "started", f"{line!r} {proc.stderr.read()[-2000:]}"
        time.sleep(0.1)
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.stdout.read()}"
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        line = proc.stdout.readline().strip()
        waited = time.perf_counter() - sent
        assert line == "interrupted", f"{line!r} {proc.stderr.read()[-2000:]}"
        assert waited < 1.0, f"{mode} {pattern}: took {waited:.2f} s to stop"
    finally:
        proc.kill()
        proc.wait()
