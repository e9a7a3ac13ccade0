"""The hand-written splitters equal Python's `regex` module on the same pattern."""

import itertools

import pytest
import regex
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastbpe import _core, patterns

# The pattern as GPT-2's encoder.py wrote it; tiktoken's (patterns.GPT2) is equivalent.
GPT2_ORIGINAL = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Text rich in the characters where engines disagree: spaces of every kind, contractions,
# digits, marks, letters of several scripts.
TRICKY = st.sampled_from(
    list(" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2028\u3000'sdmtlvreSDMTLVRE0123١٢३Aaé\u0301中ß!?.,-_/")
    + ["'s", "'ll", "'VE", "  ", "\r\n", "\n\n", "\u200d", "🎉", "ǅ", "ʰ"]
)
TEXT = st.one_of(st.text(), st.lists(TRICKY).map("".join), st.text(alphabet=st.characters(codec="utf-8")))


@settings(max_examples=3000, deadline=None)
@given(TEXT)
@example("a  b\n\n c \t\x1c\x85end  ")
@example("I'm they'll've 'S 'RE")
def test_gpt2_equals_regex(text):
    expected = regex.findall(patterns.GPT2, text)
    assert _core.split("gpt2", text) == expected
    assert regex.findall(GPT2_ORIGINAL, text) == expected


# Characters where cl100k and o200k are subtle: every letter category (o200k splits on case:
# Lu/Lt only start a word, Ll only continues one, Lm/Lo/marks do both), marks (letters to
# o200k, punctuation to cl100k), numbers of several scripts and kinds, every kind of space
# (\r and \n are excluded from the optional leading character, U+0085/U+00A0/U+2028 are not),
# "/" (o200k takes it after punctuation and newlines), apostrophes and contraction letters in
# both cases, ſ (case-folds to s) and the Kelvin sign (case-folds to k).
ADVERSARIAL = st.sampled_from(
    list("AZaszſKkǅǈʰ々中あ\u0301\u0903\u20dd\u200d0١٢३Ⅻ½² \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000!?./'")
    + list("sdmtlvreSDMTLVRE")
    + ["'s", "'S", "'ll", "'LL", "'lL", "'ve", "'Ve", "'re", "'RE", "'d", "'M", "'T", "'ſ", "\r\n", "  ", "\n\n", "🎉"]
)
ADVERSARIAL_TEXT = st.one_of(
    TEXT,
    st.lists(ADVERSARIAL, max_size=40).map("".join),
    st.text(
        alphabet=st.characters(
            categories=["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Zs", "Zl", "Cc", "Po"]
        )
    ),
)


@settings(max_examples=3000, deadline=None)
@given(ADVERSARIAL_TEXT)
@example("I'm they'll've 'S 'RE 'lL 'Ve")  # contractions in any case
@example("it'\u017f 'ſ '\u212a")  # ſ matches s under (?i), the Kelvin sign only k
@example("'sup 'hello '' ''s")  # a contraction wins over "'" + letters
@example("a\tb\xa0c\x85d\u2028e\u3000f")  # any space but \r, \n leads a letter run
@example("a\rb\nc\r\nd")  # \r and \n do not
@example("e\u0301x \u0301a !\u0301b")  # marks are not letters: "e", "\u0301x"
@example("12345 ١٢٣٤ Ⅻ½²3")  # numbers in threes, any script
@example(" !?\r\n\r\nx !\n/\n/x")  # [\r\n]*+ after punctuation (not "/")
@example("a  \n  ")  # \s++$ takes the whole final run of spaces
@example("a  \n  b")  # \s*[\r\n] backtracks to the last newline
@example("a \n")  # `$` before a final "\n": the possessive run already took it
@example("a\n")
@example("a  b  c \t\x1c\x85end  ")  # \s+(?!\S) leaves the last space
@example("\x1c\x1d\x1e\x1f x\x1c")  # not \s for `regex`
@example("ǅa ǅA Aǅ ʰa")  # titlecase and modifier letters
def test_cl100k_equals_regex(text):
    assert _core.split("cl100k", text) == regex.findall(patterns.CL100K, text)


@settings(max_examples=3000, deadline=None)
@given(ADVERSARIAL_TEXT)
@example("helloWorld HELLOworld HELLO World")  # case runs: [Lu..]*[Ll..]+ then [Lu..]+[Ll..]*
@example("中文ABC 中文abc abc中文 ABC中文")  # Lo is in both: the upper run backtracks to it
@example("AʰB Aʰ ʰA ǅA Aǅa")  # Lm likewise; Lt only in the upper run
@example("\u0301A! \u0301! \u0301's !\u0301a")  # a leading mark is the leading char, then a letter
@example(" \u0301a \u0301\u0301A")  # a mark after the optional leading character
@example("DON'T don't it'\u017f We'LL you'Ve i'M 'S")  # contractions end letter runs, any case
@example("x'\u212a x''s 's")  # the Kelvin sign is k, not s
@example("a\tb\xa0c\x85d\u2028e\r\nf\rg")  # the leading character: any but \r, \n
@example("12345 ١٢٣٤ Ⅻ½²3")  # numbers in threes
@example(" !?\r\n/\r\n/x !/ /")  # [\r\n/]* after punctuation
@example("a  \n  ")  # no \s++$: "  \n", "  "
@example("a  \n  b \n\n \r\n  x")  # \s*[\r\n]+ ends at the last newline of the run
@example("a  b  ")  # \s+(?!\S)
@example("\x1c\x1d\x1e\x1f x\x1c")
def test_o200k_equals_regex(text):
    assert _core.split("o200k", text) == regex.findall(patterns.O200K, text)


def test_unicode_tables_match_installed_regex():
    """Every code point is classified as the installed `regex` does (else regenerate the tables:
    python scripts/gen_unicode_tables.py)."""
    assert _core.UNICODE_TABLES_REGEX_VERSION == regex.__version__, (
        f"tables from regex {_core.UNICODE_TABLES_REGEX_VERSION}, installed {regex.__version__}: "
        "run python scripts/gen_unicode_tables.py"
    )
    # One piece per class boundary: the splitter must agree with regex on every code point.
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(chars), 4096):
        block = chars[start : start + 4096]
        text = "a".join(block)  # interleave a letter so every character is tested in context
        for name in ("gpt2", "cl100k", "o200k"):
            rx = patterns.NAMED[name]
            assert _core.split(name, text) == regex.findall(rx, text), f"{name}: block at {start}"


# Every code point between copies of a character that each pattern treats specially: an upper
# and a lower case letter (o200k's case runs), a space (the optional leading character), an
# apostrophe (contractions: "'ſ" is "'s" case-insensitively), a newline, a digit, punctuation.
@pytest.mark.parametrize("name", ["cl100k", "o200k"])
@pytest.mark.parametrize("sep", ["A", " ", "'", "\n", "1", "!", "\u0301"])
def test_every_code_point_in_context(name, sep):
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    rx = regex.compile(patterns.NAMED[name])
    for start in range(0, len(chars), 4096):
        text = sep.join(chars[start : start + 4096])
        assert _core.split(name, text) == rx.findall(text), f"{name}: block at {start}"


# One character of each kind the patterns tell apart: Lu, Ll, Lt, Lm, Lo, a mark, a number,
# spaces, \r, \n, punctuation, "/" (o200k), and the apostrophe with contraction letters.
SHORT_ALPHABET = "Aaǅʰ中\u03011 \t\r\n!/'sL"


@pytest.mark.parametrize("name", ["gpt2", "cl100k", "o200k"])
def test_all_short_strings(name):
    """Every string of up to 4 characters from SHORT_ALPHABET."""
    rx = regex.compile(patterns.NAMED[name])
    for n in range(5):
        for chars in itertools.product(SHORT_ALPHABET, repeat=n):
            text = "".join(chars)
            assert _core.split(name, text) == rx.findall(text), repr(text)


def test_none_pattern_is_whole_text():
    assert _core.split(None, "a b  c") == ["a b  c"]
    assert _core.split(None, "") == []


def test_builtin_names():
    assert set(patterns.NAMED) == {"gpt2", "cl100k", "o200k"}  # each has a Rust splitter
    for name in patterns.NAMED:
        assert _core.split(name, "Hi there") == ["Hi", " there"]
    with pytest.raises(ValueError, match="built-in"):
        _core.split("p50k", "x")


# ASCII-heavy text for the splitters' fast paths: runs of letters of every length around the
# 16-byte blocks the letter scan reads, ended by every kind of character (non-ASCII letters that
# continue the run, marks, digits, punctuation, apostrophes, spaces), with and without a space
# before them.
RUN_ENDS = st.sampled_from(list(" .,'!?-\n\t\r0123é中\u0301١ß'") + ["'s", "'LL", "  ", "\r\n", "🎉", "ǅ", "ʰ"])
ASCII_RUN = st.builds(
    lambda lead, n, word, end: lead + (word * n)[: n] + end,
    st.sampled_from(["", " ", "  ", "\t", "'", "(", "\u00a0"]),
    st.sampled_from([1, 2, 3, 5, 8, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 100]),
    st.sampled_from(["abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "aZ", "hello", "Wörld"]),
    RUN_ENDS,
)
FAST_PATH_TEXT = st.one_of(
    st.lists(ASCII_RUN, max_size=20).map("".join),
    st.lists(st.one_of(ASCII_RUN, TRICKY), max_size=30).map("".join),
    st.text(alphabet=st.characters(max_codepoint=0x7F)),
)


@settings(max_examples=3000, deadline=None)
@given(FAST_PATH_TEXT)
@example("a" * 16 + "é" + "b" * 31 + " " + "C" * 33 + "'s" + " " + "x" * 64 + "\u0301")
@example("@[`{" + "Az" * 40)  # the bytes next to the letters in ASCII order end a run
def test_fast_paths_equal_general_splitters(text):
    for name in ("gpt2", "cl100k"):
        assert _core.split(name, text) == _core.split_reference(name, text), name
    assert _core.split("gpt2", text) == regex.findall(patterns.GPT2, text)
    assert _core.split("cl100k", text) == regex.findall(patterns.CL100K, text)


# ASCII-heavy text for o200k's fast path, which splits words on case: words in every mix of
# case (capitals then lower case, all capitals, camelCase, lower then capitals), around the
# 16-byte blocks, before every kind of character that can end or continue them: contractions in
# both cases, digits, punctuation, spaces, newlines, and non-ASCII letters of each case class (é
# lower, Σ upper, ǅ titlecase, ʰ modifier, 中 other), a combining mark.
O200K_WORD = st.builds(
    lambda caps, low, n: (caps * 20)[:n[0]] + (low * 40)[:n[1]],
    st.sampled_from(["A", "QZ", "Hello", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]),
    st.sampled_from(["a", "z", "hello", "abcdefghijklmnopqrstuvwxyz"]),
    st.tuples(st.sampled_from([0, 1, 2, 5, 15, 16, 17]), st.sampled_from([0, 1, 3, 15, 16, 17, 33])),
)
O200K_AROUND = st.sampled_from(
    list(" .,'!?-(\"/\n\t\r0123éÉΣσǅʰ中́ ſ")
    + ["'s", "'S", "'ll", "'LL", "'Re", "'ve", "'d", "'x", "  ", "\r\n", " \n", "🎉", "12345"]
)
O200K_FAST_TEXT = st.one_of(
    st.lists(st.one_of(O200K_WORD, O200K_AROUND), max_size=40).map("".join),
    st.lists(st.one_of(O200K_WORD, O200K_WORD, O200K_AROUND, TRICKY), max_size=40).map("".join),
    st.text(alphabet=st.characters(max_codepoint=0x7F)),
)


@settings(max_examples=1000, deadline=None)
@given(O200K_FAST_TEXT)
@example("Hello WORLD's camelCase HTTPServer don'T ABCé ABCΣx Abcé́ xǅy 'LL " + "Q" * 17 + "x" * 33)
@example("(Ab\tCD/ \x1cab7ABC'reé" + "a" * 16 + "É" + "b" * 16 + "Σ")
def test_o200k_fast_path_equals_general_splitter_and_regex(text):
    assert _core.split("o200k", text) == _core.split_reference("o200k", text)
    assert _core.split("o200k", text) == regex.findall(patterns.O200K, text)


def test_count_pieces_counts_the_pieces():
    text = "Hello world's 12345 !! \n\n  ünï 中文 "
    for name in ("gpt2", "cl100k", "o200k", None):
        assert _core.count_pieces(name, text) == len(_core.split(name, text))


# ASCII-heavy text for the splitters' 64-byte windows, which find piece starts with bit masks:
# the tricky cases of each pattern (spaces before words, numbers and punctuation; tabs, \r and
# \n mixed with spaces; contractions in both cases and apostrophes that are none; digits of
# every run length; punctuation before \r, \n and /; capitals after lower case letters) in
# long texts, after a prefix of every length so that each falls on the windows' edges, with a
# few non-ASCII characters (which send part of a window to the per-piece code) and texts that
# end in whitespace.
WINDOW_PARTS = st.one_of(
    st.sampled_from(
        [" ", "  ", "   ", "\t", " \t", "\t ", "\n", " \n", "\n ", " \n  ", "\r\n", "\n\n", "\r", "\x0b", "\x0c"]
        + ["'", "''", "'s", "'S", "'t", "'ll", "'LL", "'lL", "'l", "'re", "'Re", "'ve", "'vE", "'v", "'d", "'m", "'x"]
        + [".", ",", "!", "?!", "(", ")", "-", "/", "//", "!\n/", ".\n", "!\r\n/\n", "\x1c", "\x00", "@[`{"]
        + ["a", "Z", "the", "The", "THE", "camelCase", "HTTPServer", "don't", "I'M", "x'sy", "A'S'SA"]
        + ["é", "中", "\u00a0", "\u0085", "\u2028", "ſ", "\u0301", "ǅ", "١"]
    ),
    st.integers(1, 70).map(lambda n: ("1234567890" * 7)[:n]),
    st.text(alphabet="aZ09 '\t\n\r.!/", min_size=1, max_size=8),
)
WINDOW_TEXT = st.builds(
    lambda k, parts, tail: "x" * k + "".join(parts) + tail,
    st.integers(0, 70),
    st.lists(WINDOW_PARTS, max_size=80),
    st.sampled_from(["", " ", "  ", "\n", " \n", "\n  ", "\t", "'", "'s", "1234", "a"]),
)


@settings(max_examples=4000, deadline=None)
@given(WINDOW_TEXT)
@example("x" * 61 + "  \n  abc" + " " * 70 + "'s 1234567 don't")
@example(("word " * 12)[:63] + "'ll" + "a" * 64 + " \n\n " * 20)
def test_windows_equal_general_splitters_and_regex(text):
    for name in ("gpt2", "cl100k", "o200k"):
        pieces = _core.split(name, text)
        assert pieces == _core.split_reference(name, text), name
        assert pieces == regex.findall(patterns.NAMED[name], text), name
