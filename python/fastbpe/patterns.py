"""Pre-tokenization patterns.

The named patterns (`NAMED`) are tiktoken's own for those encodings; fastbpe has a hand-written
Rust splitter for each of them (exactly equal to `regex.findall(pattern, text)`). Any other
pattern runs in Rust (fancy-regex, in parallel, without the GIL) when it is written in the
subset whose meaning both engines share (`rust/regex_split.rs`), and otherwise with Python's
`regex` module; both give the same pieces, which `pieces` below defines. `engine(pattern)`
says which one a pattern gets.

A pattern is a name, a regex or None:
- A string made only of ASCII letters, digits, `_` and `-` is a *name*: "gpt2", "cl100k",
  "o200k", or tiktoken's encoding names "r50k_base", "cl100k_base", "o200k_base" (aliases of
  those three). Any other string of only those characters is refused (ValueError listing the names), so a typo
  never becomes a regex that matches a literal word. A regex made only of those characters (a
  literal word, which is rarely a useful pre-tokenizer) is written as a group: "(?:abc)".
- Any other string is a regex. Its pieces are its non-empty matches (the whole match, whatever
  groups it has) and, as pieces of their own, the stretches of text between them: no text is
  ever dropped, so decoding gives back the text for every pattern (see `pieces`). The named
  patterns match all text, so for them this is exactly `regex.findall`.
- None: no pre-tokenization (each stretch between special tokens is one piece).
"""

from __future__ import annotations

from functools import lru_cache

import regex

from fastbpe import _core

# The named patterns, spelled once in the Rust core (rust/pretok.rs), whose hand-written
# splitters implement them.
# GPT-2 (tiktoken's r50k_base/gpt2). Equivalent to the original
# r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+".
GPT2 = _core.PATTERNS["gpt2"]
# cl100k_base (GPT-3.5/GPT-4).
CL100K = _core.PATTERNS["cl100k"]
# o200k_base (GPT-4o).
O200K = _core.PATTERNS["o200k"]

# Each name has a hand-written splitter in the Rust core.
NAMED = {"gpt2": GPT2, "cl100k": CL100K, "o200k": O200K}

# tiktoken's encoding names, for the pattern each of them uses.
ALIASES = {"r50k_base": "gpt2", "cl100k_base": "cl100k", "o200k_base": "o200k"}

# What a pattern name looks like; any other string is a regex.
_NAME = regex.compile(r"[A-Za-z0-9_-]+")


def canonical(pattern: str | None) -> str | None:
    """The pattern as a tokenizer keeps it: a name from `NAMED` (aliases resolved), a regex
    (checked to compile), or None. Raises ValueError for an unknown name or a bad regex."""
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str (a name or a regex) or None, not {type(pattern).__name__}")
    if _NAME.fullmatch(pattern):
        if pattern in NAMED:
            return pattern
        if pattern in ALIASES:
            return ALIASES[pattern]
        raise ValueError(_unknown_name(pattern))
    try:
        regex.compile(pattern)
    except (regex.error, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise ValueError(f"invalid pattern {pattern!r}: {e}") from None
    return pattern


def _unknown_name(pattern: str) -> str:
    names = ", ".join(repr(n) for n in [*NAMED, *ALIASES])
    lower = pattern.lower()
    guess = lower if lower in NAMED else ALIASES.get(lower)
    hint = f" (did you mean {guess!r}?)" if guess else ""
    return (
        f"unknown pattern name {pattern!r}{hint}. The names are {names}, or None for no pre-tokenization. "
        f"A pattern of only letters, digits, '_' and '-' is read as a name: to use it as a regex, "
        f"write it as a group, e.g. '(?:{pattern})'"
    )


def resolve(pattern: str | None) -> str | None:
    """The regex for a pattern name or a custom regex (None: no pre-tokenization)."""
    pattern = canonical(pattern)
    return NAMED.get(pattern, pattern) if pattern is not None else None


def compile(pattern: str | None):
    """The compiled `regex` of a pattern (None: no pre-tokenization)."""
    source = resolve(pattern)
    return None if source is None else regex.compile(source)


def pieces(rx, text: str, pos: int = 0) -> list[str]:
    """The pieces of `text[pos:]` under the compiled regex `rx` (searched from `pos`, the text
    before it context only): each non-empty match (the whole match) and each stretch of text
    before, between or after the matches, in order.

    Contract: no piece is empty and `"".join(pieces(rx, text, pos)) == text[pos:]`. For a pattern
    whose matches cover the text (the named ones) this equals `rx.findall(text, pos)`; empty
    matches (`\\w*` between words) are skipped; text the pattern does not match is kept, never
    dropped.
    """
    if rx.groups == 0 and not rx.flags & regex.REVERSE:
        # The usual case, at the speed of findall: matches that add up to the whole text are
        # the pieces (non-overlapping and in order, they can only cover it one way).
        found = rx.findall(text, pos)
        if sum(map(len, found)) == len(text) - pos:
            return [p for p in found if p]
    spans = [m.span() for m in rx.finditer(text, pos=pos)]
    if rx.flags & regex.REVERSE:
        spans.reverse()  # (?r) finds matches from the end
    return pieces_from_spans(text, pos, len(text), spans)


def pieces_from_spans(text: str, start: int, stop: int, spans) -> list[str]:
    """The pieces of `text[start:stop]` given its matches' spans, in order: the non-empty
    matches and the stretches between them."""
    out = []
    at = start
    for a, b in spans:
        if a == b:
            continue
        if a > at:
            out.append(text[at:a])
        out.append(text[a:b])
        at = b
    if at < stop:
        out.append(text[at:stop])
    return out


@lru_cache(maxsize=64)
def _rust(source: str) -> tuple[_core.RegexSplitter | None, str | None]:
    try:
        return _core.RegexSplitter(source), None
    except ValueError as e:
        return None, str(e)


def rust_splitter(pattern: str | None) -> _core.RegexSplitter | None:
    """The Rust splitter of a custom regex, or None where the pattern is a named one, None, or
    a regex outside the subset the Rust engine runs exactly (see `engine`)."""
    pattern = canonical(pattern)
    if pattern is None or pattern in NAMED:
        return None
    return _rust(pattern)[0]


def engine(pattern: str | None) -> str:
    """Which splitter a pattern gets: "builtin" (a named pattern: hand-written in Rust),
    "rust" (a custom regex run by fancy-regex in Rust, in parallel and without the GIL),
    "python" (a custom regex run by Python's `regex` module: it uses a construct whose meaning
    the Rust engine is not known to share, such as \\b, $, look-behind or back-references; see
    `python_reason`), or "none" (pattern None). The pieces, and so the ids, are the same."""
    pattern = canonical(pattern)
    if pattern is None:
        return "none"
    if pattern in NAMED:
        return "builtin"
    return "rust" if _rust(pattern)[0] is not None else "python"


def python_reason(pattern: str | None) -> str | None:
    """Why a custom regex runs in Python's `regex` module rather than in Rust (None when it
    does not)."""
    pattern = canonical(pattern)
    if pattern is None or pattern in NAMED:
        return None
    return _rust(pattern)[1]
