"""Custom regex patterns in Rust (rust/regex_split.rs, rust/regex_encode.rs): the same pieces and
ids as the `regex` module (`fastbpe.patterns.pieces`, the definition), in every mode; patterns
outside the subset the Rust engine runs exactly fall back to `regex`, and say so."""

from __future__ import annotations

import gzip
import unicodedata
import warnings
from functools import lru_cache

import numpy as np
import pytest
import regex
from conftest import CORPORA, shared_file
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastbpe
from fastbpe import _core, patterns, reference, token_files

LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
# DeepSeek-V3's pre-tokenizer: three Split regexes (tokenizer.json), each a pattern here.
DEEPSEEK = [
    r"\p{N}{1,3}",
    "[一-龥\u3040-ゟ゠-ヿ]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"""
    r"""| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
]
# CS336-style patterns: GPT-2's original regex (the handout's) and a few hand-written ones.
CS336 = [
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    r"\w+|[^\w\s]+|\s+",
    r" ?[A-Za-z]+| ?\d+| ?[^\sA-Za-z\d]+|\s+",
    r"[a-z]+",  # text it does not match is kept as pieces of its own
]
RUST_PATTERNS = {
    "llama3": LLAMA3,
    "qwen2": QWEN2,
    **{f"deepseek{i}": p for i, p in enumerate(DEEPSEEK)},
    "o200k": patterns.O200K,
    "cl100k": patterns.CL100K.replace(r"\s++$|", ""),  # without `$`, which stays in Python
    **{f"cs336_{i}": p for i, p in enumerate(CS336)},
}
PYTHON_PATTERNS = [r"\b\w+\b|\W+", r"(?<=a)b|.", r"\s++$|\S+|\s", r"(\w)\1|\w|\W", r"(?i)abc|.", r"(?i:é)|."]
EOT = "<|endoftext|>"

# Characters that trip engines up: long s, dotted I and Kelvin sign under (?i); the controls and
# separators whose whitespace-ness differs between engines; combining marks; digits of other
# scripts; surrogate-free astral letters and emoji.
TRICKY = "ſİKk\x1c\x1d\x1e\x1f\x85\xa0\u2028\u2029\u200b\u3000\t\r\n \u0301\u0345٣𝟙ⅻ𐍈😀🇺🇸'’"


@lru_cache(maxsize=1)
def newest_characters() -> str:
    """Characters `regex` knows as assigned that Python's own (older) Unicode tables do not: the
    ones a Unicode-version mismatch would get wrong."""
    out = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        if unicodedata.category(c) == "Cn" and regex.match(r"\P{Cn}", c):
            out.append(c)
    return "".join(out)


def texts(max_size: int = 80):
    alphabet = st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(TRICKY),
        st.sampled_from(newest_characters() or "a"),
        st.sampled_from("ab 1'\n"),
    )
    return st.text(alphabet, max_size=max_size)


def split_both(pattern: str, text: str) -> tuple[list[str], list[str]]:
    return _core.RegexSplitter(pattern).split(text), patterns.pieces(regex.compile(pattern), text)


@lru_cache(maxsize=None)
def corpus(name: str) -> str:
    path = shared_file("corpus", name)
    if name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            return f.read(300_000)
    return path.read_bytes().decode("utf-8")[:300_000]


# ---- which engine ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RUST_PATTERNS))
def test_usual_patterns_run_in_rust(name):
    pattern = RUST_PATTERNS[name]
    assert patterns.engine(pattern) == "rust", patterns.python_reason(pattern)
    assert patterns.python_reason(pattern) is None


@pytest.mark.parametrize("pattern", PYTHON_PATTERNS)
def test_other_constructs_fall_back_to_regex(pattern):
    """\\b, look-behind, `$`, back-references, global or non-ASCII (?i): the `regex` module."""
    assert patterns.engine(pattern) == "python"
    assert "not supported" in patterns.python_reason(pattern)
    tok = fastbpe.Tokenizer({i: bytes([i]) for i in range(256)}, [], pattern=pattern)
    assert tok.regex_engine == "python"
    text = "aab abc ÉÉ  x\n"
    assert tok.decode(tok.encode(text)) == text


def test_engine_names():
    assert patterns.engine(None) == "none"
    assert patterns.engine("cl100k_base") == "builtin"
    assert fastbpe.Tokenizer({i: bytes([i]) for i in range(256)}, [], pattern=LLAMA3).regex_engine == "rust"
    assert fastbpe.Tokenizer({i: bytes([i]) for i in range(256)}, [], pattern="gpt2").regex_engine == "builtin"
    # Matching the empty string: the engines skip empty matches differently.
    assert patterns.engine(r"\w*") == "python"
    assert "empty string" in patterns.python_reason(r"\w*|\s")


# ---- the character classes, every code point ----------------------------------------------------

ALL_CHARS = ["".join(map(chr, range(0, 0xD800))), "".join(map(chr, range(0xE000, 0x110000)))]
CLASS_NAMES = "L Lu Ll Lt Lm Lo M Mn Mc Me N Nd Nl No P Pc Pd Ps Pe Pi Pf Po S Sm Sc Sk So Z Zs Zl Zp".split()


@pytest.mark.parametrize(
    "pattern",
    [r"\s+", r"\S+", r"\w+", r"\W+", r"\d+", r"\D+", r".+", r"[^\r\n\p{L}\p{N}]+", r"[\p{L}\p{M}]+"]
    + [rf"\p{{{n}}}+" for n in CLASS_NAMES]
    + [rf"\P{{{n}}}+" for n in ("L", "N", "P")]
    + ["(?i:[abcdefghijklmnopqrstuvwxyz])+", "(?i:a|b|c|i|k|s|t)+", "[\u3040-ゟ]+"],
)
def test_classes_match_every_code_point_as_regex_does(pattern):
    """Every code point (Unicode as the pinned `regex` release sees it, newest ones included):
    the Rust engine's classes are generated from `regex` (scripts/gen_regex_classes.py)."""
    assert _core.REGEX_CLASSES_REGEX_VERSION == regex.__version__
    splitter = _core.RegexSplitter(pattern)
    for text in ALL_CHARS:
        assert splitter.split(text) == patterns.pieces(regex.compile(pattern), text)


# ---- pieces and ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RUST_PATTERNS))
@pytest.mark.parametrize("corpus_name", CORPORA)
def test_pieces_equal_regex_on_the_corpora(name, corpus_name):
    rust, python = split_both(RUST_PATTERNS[name], corpus(corpus_name))
    assert rust == python


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts(), name=st.sampled_from(sorted(RUST_PATTERNS)))
def test_pieces_equal_regex_on_generated_text(text, name):
    rust, python = split_both(RUST_PATTERNS[name], text)
    assert rust == python


@pytest.fixture(scope="module")
def llama3_tok():
    text = corpus("tinystories_val.txt")[:150_000] + corpus("zh_fortunes.txt")[:50_000] + TRICKY * 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fastbpe.train(iter([text]), 700, special_tokens=[EOT, "<|x|>"], pattern=LLAMA3)


def python_ids(tok, text: str, with_specials: bool = True) -> list[int]:
    return tok._encode_custom_python(text, with_specials)


@pytest.mark.parametrize("corpus_name", CORPORA)
def test_ids_equal_the_python_path_on_the_corpora(llama3_tok, corpus_name):
    tok = llama3_tok
    assert tok.regex_engine == "rust"
    text = corpus(corpus_name)[:100_000]
    text = EOT.join(text[i : i + 9_999] for i in range(0, len(text), 9_999))
    expected = python_ids(tok, text)
    assert tok.encode(text) == expected
    assert tok.encode_ordinary(text) == python_ids(tok, text, False)
    assert tok.encode_to_numpy(text).tolist() == expected
    parts = [text[i : i + 7_000] for i in range(0, len(text), 7_000)]
    assert tok.encode_batch(parts, num_threads=2) == [python_ids(tok, p) for p in parts]
    assert tok.encode_ordinary_batch(parts, num_threads=2) == [python_ids(tok, p, False) for p in parts]


@settings(max_examples=100, deadline=None)
@given(text=texts(120), specials=st.lists(st.sampled_from([EOT, "<|x|>"]), max_size=3))
def test_ids_equal_the_python_path_on_generated_text(llama3_tok, text, specials):
    tok = llama3_tok
    text = "".join(s + text[i::3] for i, s in enumerate(specials)) + text
    assert tok.encode(text) == python_ids(tok, text)
    assert tok.encode_batch([text, text[:5]], num_threads=2) == [python_ids(tok, text), python_ids(tok, text[:5])]
    assert tok.decode(tok.encode(text)) == text


# ---- files: chunks split in parallel, stitched exactly ----------------------------------------

AWKWARD = [
    "x" * 300,  # a piece longer than the overlap: the chunks' splittings never meet
    " " * 250 + "a",  # whitespace whose last character depends on what follows
    "\n\n \n" * 40,
    "héllo wörld 中文🎉 it's 42  \n",
    EOT + EOT + "<|x|>" + "<|" + EOT[2:],
    "12345678901234567890",
    "a" * 17 + " " * 3 + "b",
]


def encode_file_rust(tok, path, out, chunk_bytes, threads=2) -> list[int]:
    with token_files.TokenWriter(out, tok.dtype, {}) as w:
        n, crc = tok._core.encode_regex_file(tok._custom.splitter, str(path), w.tmp, tok.dtype.itemsize, threads, None, chunk_bytes)
        w.adopt(n, crc)
    return token_files.read_tokens(out)[0].tolist()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(st.one_of(st.sampled_from(AWKWARD), texts(40)), min_size=1, max_size=12),
    chunk=st.integers(16, 400),
)
def test_encode_file_equals_encode_with_cuts_anywhere(llama3_tok, tmp_path, parts, chunk):
    tok = llama3_tok
    text = "".join(parts)
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8", newline="")
    expected = tok.encode(text)
    assert encode_file_rust(tok, path, tmp_path / "t.bin", chunk) == expected
    counts = _core.WordCounts(None, [EOT, "<|x|>"])
    counts.add_file_regex(tok._custom.splitter, str(path), 2, None, chunk)
    whole = _core.WordCounts(None, [EOT, "<|x|>"])
    whole.add_texts_regex(tok._custom.splitter, [text], 1)
    assert counts.to_dict() == whole.to_dict()


@pytest.mark.parametrize("corpus_name", ["code_python.txt", "zh_fortunes.txt", "ru_tinystories.txt"])
def test_encode_file_equals_encode_on_corpora(llama3_tok, tmp_path, corpus_name):
    """The public path (1 MB chunks, several of them) and small chunks, on real text."""
    tok = llama3_tok
    text = shared_file("corpus", corpus_name).read_bytes().decode("utf-8")[:2_500_000]
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    expected = tok.encode(text)
    assert tok.encode_file(path, tmp_path / "a.bin", num_threads=2, progress=False).tolist() == expected
    assert encode_file_rust(tok, path, tmp_path / "b.bin", 5_000) == expected


def test_encode_file_reports_invalid_utf8_at_its_offset(llama3_tok, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello world " * 100 + b"\xff tail")
    with pytest.raises(ValueError, match="byte offset 1200"):
        llama3_tok.encode_file(path, tmp_path / "o.bin", progress=False)
    with pytest.raises(ValueError, match="byte offset 1200"):
        fastbpe.train(path, 300, pattern=LLAMA3)


# ---- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama3", "deepseek2", "cs336_1"])
def test_training_equals_the_reference(tmp_path, name):
    pattern = RUST_PATTERNS[name]
    text = corpus("tinystories_val.txt")[:30_000] + EOT + corpus("de_eltec.txt")[:15_000] + TRICKY
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8", newline="")
    ref_vocab, ref_merges = reference.train_bpe_from_texts([text], 400, [EOT], pattern)
    from_file = fastbpe.train(path, 400, special_tokens=[EOT], pattern=pattern, num_threads=2)
    from_texts = fastbpe.train(iter([text]), 400, special_tokens=[EOT], pattern=pattern, num_threads=2)
    assert from_file.merges == ref_merges
    assert from_texts.merges == ref_merges
    assert from_file.vocab == ref_vocab


# ---- any pattern string ----------------------------------------------------------------------------

REGEX_ALPHABET = list("()[]{}|?*+\\^$.-,:!=<>#&~") + ["\\p{L}", "\\s", "\\S", "(?i:", "(?:", "(?!", "(?>", "\\w", "a", "b", "é", "1", "3", " ", "\n", "\\r", "\\p{", "\\P{N}"]


@settings(max_examples=400, deadline=None)
@given(pattern=st.one_of(st.text(max_size=30), st.lists(st.sampled_from(REGEX_ALPHABET), max_size=14).map("".join)))
def test_any_pattern_string_is_refused_or_splits_as_regex(pattern):
    """No pattern string panics the engine (only ValueError: the `regex` module is used then);
    a pattern it accepts splits text as `regex` does."""
    try:
        splitter = _core.RegexSplitter(pattern)
    except ValueError:
        return
    try:
        rx = regex.compile(pattern)
    except regex.error:
        pytest.fail(f"the Rust engine accepted {pattern!r}, which `regex` refuses")
    for text in ("", "ab 1a\n\n ba  é1  b", "aaa,b13 \r\n x-y", "ſK \x85 a"):
        try:
            got = splitter.split(text)
        except _core.RegexSearchError:
            continue
        assert got == patterns.pieces(rx, text), (pattern, text)


def test_a_search_the_engine_gives_up_on_falls_back_to_regex(tmp_path):
    """A look-ahead inside a repeated group backtracks exponentially in fancy-regex, which gives
    up (RegexSearchError) after its backtracking limit: the `regex` module then splits the text,
    and the ids are the same."""
    pattern = r"(?:(?!x)a+)+b|."
    text = "a" * 26 + " ab"
    with pytest.raises(_core.RegexSearchError):
        _core.RegexSplitter(pattern).split(text)
    # "aa" is a token: wrong pieces (a run of a's as one) would show in the ids.
    tok = fastbpe.Tokenizer({i: bytes([i]) for i in range(256)} | {256: b"aa"}, [(b"a", b"a")], pattern=pattern)
    assert tok.regex_engine == "rust"
    expected = python_ids(tok, text)
    assert expected == [97] * 26 + [32, 97, 98]  # "." takes each a: no b follows the run
    assert tok.encode(text) == expected
    path = tmp_path / "t.txt"
    path.write_text(text)
    assert tok.encode_file(path, tmp_path / "t.bin", progress=False).tolist() == expected


# ---- the Python path: one for encoding and training -------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    text=st.lists(st.sampled_from(["<|e|>", "<|e|><|e|>", "ab cd ", "\n\n", "héllo", " 'll", "12345", "  \n "]), max_size=25).map("".join),
    pattern=st.sampled_from([LLAMA3, r"\b\w+\b", r"[a-z]+"]),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)
def test_custom_pattern_gives_the_same_stretches_whole_and_in_parts(text, pattern, cuts):
    """`CustomPattern.stretches` (a whole text), `.stream` (parts) and the definition: split on
    the special tokens, each stretch between them cut by `patterns.pieces`."""
    from fastbpe._stream import CustomPattern

    custom = CustomPattern(pattern, ["<|e|>", "<|e|><|e|>"])
    rx = regex.compile(pattern)
    want = []
    for k, part in enumerate(regex.split("(<\\|e\\|><\\|e\\|>|<\\|e\\|>)", text)):
        want += [("special", part)] if k % 2 else patterns.pieces(rx, part)

    def flat(stretches):
        out = []
        for pieces, special in stretches:
            out += pieces + ([("special", special)] if special is not None else [])
        return out

    cuts = sorted(c for c in cuts if c <= len(text))
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    assert flat(custom.stretches(text)) == flat(custom.stream(parts)) == want
    assert flat(custom.stretches(text, with_specials=False)) == patterns.pieces(rx, text)


@pytest.mark.filterwarnings("ignore:training stopped")
def test_encoding_and_training_count_the_same_python_pieces(tmp_path):
    """A pattern outside the Rust subset: `train` counts, and `encode` encodes, the pieces of one
    `CustomPattern`, from texts and from files alike."""
    pattern = r"\b\w+\b|\s+|[^\w\s]+"
    assert patterns.engine(pattern) == "python"
    text = "the cat sat<|e|> on the mat, the cat" * 50
    path = tmp_path / "t.txt"
    path.write_text(text)
    from_text = fastbpe.train(iter([text]), 280, special_tokens=["<|e|>"], pattern=pattern)
    from_file = fastbpe.train(str(path), 280, special_tokens=["<|e|>"], pattern=pattern)
    assert from_text == from_file
    ids = from_text.encode(text)
    assert from_text.encode_file(path, tmp_path / "t.bin", progress=False).tolist() == ids
    assert list(from_text.encode_iterable([text[:7], text[7:]])) == ids
    assert from_text.decode(ids) == text
