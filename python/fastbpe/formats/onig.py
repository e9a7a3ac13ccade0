"""Pre-tokenization regexes rewritten for Oniguruma, Hugging Face `tokenizers`' regex engine.

`tokenizers` runs a `Split` pre-tokenizer's regex with Oniguruma (Ruby syntax), which reads some
patterns differently from Python's `regex` module, the engine whose pieces fastbpe's ids follow:

- `X{1,3}+` is possessive in `regex`; Oniguruma reads it as `(?:X{1,3})+` (cl100k's digits);
- `^` and `$` are line anchors in Oniguruma, string anchors in `regex` (without `(?m)`);
- `\\p{L}`, `\\w`, `\\s`, `.` and case-insensitive letters come from each engine's own Unicode
  tables: thousands of letters of recent Unicode versions are letters for `regex` and not for
  Oniguruma, and a few characters changed category.

`translate` therefore parses the pattern and writes it back with every character class as
explicit code point ranges computed by the `regex` module itself (fastbpe's Rust splitters take
their classes from the same module), possessive repeats as atomic groups `(?>...)`, and anchors
and word boundaries as look-arounds over explicit classes: the result matches the same text at
the same places in both engines, whatever Unicode version each has. A construct it cannot rewrite
exactly (backreferences, recursion, verbose mode, `\\G`, ...) raises `UnsupportedPattern`, a
ValueError naming it; so does a pattern that can match the empty string, because `tokenizers`
cuts the text at empty matches where fastbpe skips them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import regex

MAX_CP = 0x10FFFF
SURROGATES = range(0xD800, 0xE000)
# Oniguruma's largest repeat count (ONIG_MAX_REPEAT_NUM).
MAX_REPEAT = 100_000

Ranges = tuple[tuple[int, int], ...]


class UnsupportedPattern(ValueError):
    """A pattern with no exact Oniguruma equivalent; the message names the construct."""


# ---- character classes --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _all_chars() -> str:
    """Every code point a str can hold in UTF-8 text (surrogates excluded)."""
    return "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, MAX_CP + 1)))


def _ranges(cps: np.ndarray) -> Ranges:
    """Sorted code points as (first, last) ranges."""
    if len(cps) == 0:
        return ()
    breaks = np.flatnonzero(np.diff(cps) != 1)
    starts = np.concatenate(([cps[0]], cps[breaks + 1]))
    ends = np.concatenate((cps[breaks], [cps[-1]]))
    return tuple(zip(starts.tolist(), ends.tolist()))


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def complement(ranges: Ranges) -> Ranges:
    """The code points (surrogates excluded) outside `ranges`."""
    out = []
    at = 0
    for a, b in list(ranges) + [(MAX_CP + 1, MAX_CP + 1)]:
        for lo, hi in ((at, min(a - 1, SURROGATES.start - 1)), (max(at, SURROGATES.stop), a - 1)):
            if lo <= hi:
                out.append((lo, hi))
        at = b + 1
    return tuple(out)


@lru_cache(maxsize=1024)
def char_class(source: str, flags: str = "") -> Ranges:
    """The code points that `source`, a regex matching one character (a class, an escape such as
    `\\p{L}`, `.`, a literal), matches under the inline `flags`, as the `regex` module says."""
    rx = regex.compile(f"(?{flags}){source}" if flags else source)
    everything = _all_chars()
    unmatched = rx.sub("", everything)
    if len(unmatched) * 2 >= len(everything):  # few matches: list them
        return _ranges(np.unique(_code_points("".join(rx.findall(everything)))))
    return complement(_ranges(_code_points(unmatched)))


# ---- writing Oniguruma ----------------------------------------------------------------------------


# ASCII characters that mean themselves in Oniguruma, inside a class and out (the rest are
# written as \x{...}: a readable pattern, and no syntax to get wrong).
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_ '\"<>!,;%@~/")


def _char(cp: int) -> str:
    c = chr(cp)
    return c if c in _PLAIN else f"\\x{{{cp:X}}}"


def _over_surrogates(ranges: Ranges) -> list[tuple[int, int]]:
    """`ranges` with the gap of the surrogates closed (text never holds them)."""
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if out and out[-1][1] == SURROGATES.start - 1 and a == SURROGATES.stop:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _class_body(ranges: Ranges) -> str:
    parts = []
    for a, b in _over_surrogates(ranges):
        parts.append(_char(a) if a == b else _char(a) + _char(b) if b == a + 1 else f"{_char(a)}-{_char(b)}")
    return "".join(parts)


def emit_class(ranges: Ranges) -> str:
    """A character class for Oniguruma: explicit ranges, or the complement's, whichever is shorter."""
    if not ranges:
        return "(?!)"
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return _char(ranges[0][0])
    rest = complement(ranges)
    positive = f"[{_class_body(ranges)}]"
    negative = f"[^{_class_body(rest)}]" if rest else positive
    return min(positive, negative, key=len)


# ---- parsing Python `regex` patterns --------------------------------------------------------------

# Nodes: ("class", ranges), ("assert", oniguruma text), ("seq", [nodes]), ("alt", [nodes]),
# ("group", opener, node) with opener one of _OPENERS, ("repeat", node, lo, hi or None, mode).
_OPENERS = ("(?:", "(?>", "(?=", "(?!", "(?<=", "(?<!")
_LOOKAROUNDS = frozenset(_OPENERS[2:])

_FLAG_GROUP = regex.compile(r"\(\?([A-Za-z0-9]+)\)")
_SCOPED_FLAGS = regex.compile(r"\(\?([A-Za-z0-9]*)(?:-([A-Za-z0-9]+))?([:)])")
_NAMED_GROUP = regex.compile(r"\(\?P?<[A-Za-z_]\w*>|\(\?'[A-Za-z_]\w*'")
_COUNT = regex.compile(r"\{(\d*)(,?)(\d*)\}")
_OCTAL3 = regex.compile(r"[0-7]{3}")

# Flags that only change what characters match (handled by `char_class`) or what ^ and $ mean.
_FLAGS = frozenset("imsau")
_REFUSED_FLAGS = {
    "x": "verbose mode (?x)",
    "r": "reverse matching (?r)",
    "w": "word mode (?w)",
    "f": "full case folding (?f)",
    "b": "best match (?b)",
    "e": "enhanced match (?e)",
    "p": "POSIX matching (?p)",
    "L": "locale mode (?L)",
}
_GROUP_NAMES = [
    ("(?P=", "a backreference (?P=name)"),
    ("(?P>", "a subroutine call (?P>name)"),
    ("(?&", "a subroutine call (?&name)"),
    ("(?(", "a conditional group (?(...)...)"),
    ("(?|", "a branch reset group (?|...)"),
    ("(?R", "a recursive pattern (?R)"),
]
_ESCAPE_NAMES = {
    "G": "\\G (where the previous match ended)",
    "K": "\\K (keep out)",
    "m": "\\m (start of a word)",
    "M": "\\M (end of a word)",
    "X": "\\X (a grapheme cluster)",
    "L": "\\L<name> (a named list)",
    "g": "\\g<...> (a backreference or call)",
}


class _Parser:
    def __init__(self, pattern: str):
        self.p = pattern
        self.i = 0

    def fail(self, construct: str, at: int, fix: str = "") -> UnsupportedPattern:
        return UnsupportedPattern(
            f"pattern {self.p!r}: {construct} at position {at} has no exact equivalent in Oniguruma, "
            f"the regex engine of Hugging Face tokenizers{'; ' + fix if fix else ''}"
        )

    def flags_of(self, text: str, at: int) -> set[str]:
        out = set()
        for name, refused in _REFUSED_FLAGS.items():
            if name in text:
                raise self.fail(refused, at, "write the pattern without it")
        body = text.replace("V0", "")  # version 0 is the default
        if "V1" in body:
            raise self.fail("version 1 behaviour (?V1)", at, "write the pattern for version 0")
        for f in body:
            if f not in _FLAGS:
                raise self.fail(f"the flag {f!r}", at)
            out.add(f)
        return out

    def leading_flags(self) -> set[str]:
        """Global flags, which `regex` allows only at the start."""
        flags: set[str] = set()
        while m := _FLAG_GROUP.match(self.p, self.i):
            flags |= self.flags_of(m.group(1), self.i)
            self.i = m.end()
        return flags

    def alternation(self, flags) -> tuple:
        branches = [self.sequence(flags)]
        while self.i < len(self.p) and self.p[self.i] == "|":
            self.i += 1
            branches.append(self.sequence(flags))
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def sequence(self, flags) -> tuple:
        items = []
        while self.i < len(self.p) and self.p[self.i] not in "|)":
            at = self.i
            node = self.atom(flags)
            while (q := self.quantifier()) is not None:
                if width(node) == (0, 0):
                    raise self.fail(f"a repeat of the assertion {self.p[at:self.i]!r}", at, "remove the repeat")
                node = ("repeat", node, *q)
            items.append(node)
        return items[0] if len(items) == 1 else ("seq", items)

    def quantifier(self):
        p, i = self.p, self.i
        if i >= len(p):
            return None
        if p[i] in "*+?":
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[p[i]]
            i += 1
        elif m := _COUNT.match(p, i):
            if not m.group(1) and not m.group(3):
                return None
            lo = int(m.group(1) or 0)
            hi = None if m.group(2) and not m.group(3) else int(m.group(3) or lo)
            if max(lo, hi or 0) > MAX_REPEAT:
                raise self.fail(f"the repeat count {m.group()}", i, f"Oniguruma allows at most {MAX_REPEAT}")
            i = m.end()
        else:
            return None
        mode = "greedy"
        if i < len(p) and p[i] in "?+":
            mode = "lazy" if p[i] == "?" else "possessive"
            i += 1
        self.i = i
        return lo, hi, mode

    def atom(self, flags) -> tuple:
        p, i = self.p, self.i
        c = p[i]
        if c == "(":
            return self.group(flags)
        if c == "[":
            return self.char_class_atom(flags)
        if c == "\\":
            return self.escape(flags)
        self.i = i + 1
        if c == ".":
            return ("class", char_class(".", _class_flags(flags)))
        if c == "^":
            return ("assert", "(?<![^\\x{A}])" if "m" in flags else "\\A")
        if c == "$":
            # `regex`'s $ without (?m) also matches before a newline that ends the text.
            return ("assert", "(?![^\\x{A}])" if "m" in flags else "(?=\\x{A}?\\z)")
        if c in "*+?{":
            raise self.fail(f"{c!r} with nothing to repeat before it", i, f"write \\{c} for the character")
        return self.literal(c, flags)

    def literal(self, c: str, flags) -> tuple:
        if "i" in flags:
            return ("class", char_class(regex.escape(c), _class_flags(flags)))
        return ("class", ((ord(c), ord(c)),))

    def char_class_atom(self, flags) -> tuple:
        p, start = self.p, self.i
        j = start + 1
        if j < len(p) and p[j] == "^":
            j += 1
        if j < len(p) and p[j] == "]":  # a ] first is a character
            j += 1
        while j < len(p):
            if p[j] == "\\":
                j += 2  # no escape's tail holds a ]
            elif p.startswith("[:", j) and (k := p.find(":]", j + 2)) >= 0:
                j = k + 2
            elif p[j] == "]":
                self.i = j + 1
                return ("class", char_class(p[start : j + 1], _class_flags(flags)))
            else:
                j += 1
        raise self.fail("an unterminated character class", start)

    def escape(self, flags) -> tuple:
        p, i = self.p, self.i
        d = p[i + 1] if i + 1 < len(p) else ""
        end = i + 2
        if d == "A" or d == "Z":
            self.i = end
            return ("assert", "\\A" if d == "A" else "\\z")
        if d in ("b", "B"):
            self.i = end
            w = emit_class(char_class("\\w", _class_flags(flags)))
            if d == "b":
                return ("assert", f"(?:(?<={w})(?!{w})|(?<!{w})(?={w}))")
            return ("assert", f"(?:(?<={w})(?={w})|(?<!{w})(?!{w}))")
        if d in ("p", "P", "N", "x") and p.startswith("{", end):
            close = p.find("}", end)
            end = close + 1 if close >= 0 else len(p)
        elif d in ("p", "P"):
            end += 1
        elif d in ("x", "u", "U"):
            end += {"x": 2, "u": 4, "U": 8}[d]
        elif d == "0":
            while end < min(i + 4, len(p)) and p[end] in "01234567":
                end += 1
        elif d.isdigit():
            if not _OCTAL3.match(p, i + 1):
                raise self.fail(f"the backreference \\{d}", i, "write the pattern without it")
            end = i + 4
        elif d in _ESCAPE_NAMES:
            raise self.fail(_ESCAPE_NAMES[d], i, "write the pattern without it")
        elif d.isascii() and d.isalpha() and d not in "dDwWsSafnrtv":
            raise self.fail(f"the escape \\{d}", i)
        elif not (d.isascii() and d.isalpha()):
            self.i = end
            return self.literal(d, flags)
        self.i = end
        return ("class", char_class(p[i:end], _class_flags(flags)))

    def group(self, flags) -> tuple:
        p, start = self.p, self.i
        for opener in _OPENERS:
            if p.startswith(opener, start):
                self.i = start + len(opener)
                return self.close(("group", opener, self.alternation(flags)), start)
        if p.startswith("(?#", start):
            end = p.find(")", start)
            self.i = end + 1 if end >= 0 else len(p)
            return ("seq", [])
        if m := _NAMED_GROUP.match(p, start):
            self.i = m.end()
            return self.close(("group", "(?:", self.alternation(flags)), start)
        for prefix, name in _GROUP_NAMES:
            if p.startswith(prefix, start):
                raise self.fail(name, start, "write the pattern without it")
        if p.startswith("(*", start):
            raise self.fail(f"the verb {p[start:p.find(')', start) + 1]!r}", start, "write the pattern without it")
        if p.startswith("(?", start):
            m = _SCOPED_FLAGS.match(p, start)
            if m is None:
                raise self.fail(f"the group {p[start:start + 4]!r}", start, "write the pattern without it")
            if m.group(3) == ")":
                raise self.fail(
                    f"the flags {m.group()!r} after the start", start, "put global flags first, or scope them: (?i:...)"
                )
            on = self.flags_of(m.group(1), start)
            off = self.flags_of(m.group(2) or "", start)
            self.i = m.end()
            return self.close(("group", "(?:", self.alternation((set(flags) | on) - off)), start)
        self.i = start + 1
        return self.close(("group", "(?:", self.alternation(flags)), start)

    def close(self, node: tuple, start: int) -> tuple:
        if self.i >= len(self.p) or self.p[self.i] != ")":
            raise self.fail("an unclosed group", start)
        self.i += 1
        if node[1] in ("(?<=", "(?<!"):
            lo, hi = width(node[2])
            if hi is None or lo != hi:
                raise self.fail(
                    f"the look-behind {self.p[start:self.i]!r}, whose matches differ in length",
                    start,
                    "use a fixed-length look-behind",
                )
        return node


def _class_flags(flags) -> str:
    """The flags that change which characters an atom matches, as inline flags."""
    return "".join(sorted(set(flags) & set("isau")))


def width(node: tuple) -> tuple[int, int | None]:
    """The fewest and most characters `node` can match (None: no limit)."""
    kind = node[0]
    if kind == "class":
        return 1, 1
    if kind == "assert":
        return 0, 0
    if kind == "group":
        return (0, 0) if node[1] in _LOOKAROUNDS else width(node[2])
    if kind == "repeat":
        (clo, chi), lo, hi = width(node[1]), node[2], node[3]
        return clo * lo, (None if hi is None or chi is None else chi * hi)
    widths = [width(n) for n in node[1]]
    if kind == "seq":
        return sum(w[0] for w in widths), (None if any(w[1] is None for w in widths) else sum(w[1] for w in widths))
    return min(w[0] for w in widths), (None if any(w[1] is None for w in widths) else max(w[1] for w in widths))


def _quantifier(lo: int, hi: int | None) -> str:
    short = {(0, None): "*", (1, None): "+", (0, 1): "?"}
    if (lo, hi) in short:
        return short[(lo, hi)]
    if hi == lo:
        return f"{{{lo}}}"
    return f"{{{lo},}}" if hi is None else f"{{{lo},{hi}}}"


def emit(node: tuple) -> str:
    kind = node[0]
    if kind == "class":
        return emit_class(node[1])
    if kind == "assert":
        return node[1]
    if kind == "seq":
        return "".join(map(emit, node[1]))
    if kind == "alt":
        return "|".join(map(emit, node[1]))
    if kind == "group":
        return f"{node[1]}{emit(node[2])})"
    child, lo, hi, mode = node[1:]
    inner = emit(child)
    if child[0] != "class" and child[0] != "group":
        inner = f"(?:{inner})"
    q = _quantifier(lo, hi)
    if mode == "possessive":
        return f"(?>{inner}{q})"
    # Oniguruma reads X{n}? as (?:X{n})?; an exact count is the same lazy or greedy.
    return inner + q + ("?" if mode == "lazy" and lo != hi else "")


@lru_cache(maxsize=64)
def translate(pattern: str) -> str:
    """`pattern`, a Python `regex` pattern, rewritten for Oniguruma so that both engines find the
    same matches in every text. Raises UnsupportedPattern (a ValueError) naming what it cannot
    rewrite exactly, or saying that the pattern can match the empty string."""
    parser = _Parser(pattern)
    flags = parser.leading_flags()
    node = parser.alternation(flags)
    if parser.i < len(pattern):
        raise parser.fail("an unbalanced ')'", parser.i)
    if width(node)[0] == 0:
        raise UnsupportedPattern(
            f"pattern {pattern!r} can match the empty string: Hugging Face tokenizers cuts the text at "
            "empty matches, where fastbpe skips them; write it so that every match has a character "
            "(e.g. \\w+ for \\w*)"
        )
    return emit(node)
