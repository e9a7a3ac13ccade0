"""The hand-written splitters equal Python's `regex` module on the same pattern."""

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
        assert _core.split("gpt2", text) == regex.findall(patterns.GPT2, text), f"block at {start}"


def test_none_pattern_is_whole_text():
    assert _core.split(None, "a b  c") == ["a b  c"]
    assert _core.split(None, "") == []
