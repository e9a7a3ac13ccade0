"""Hugging Face's text pipeline, readably: added tokens, normalizers and pre-tokenizers.

`Pipeline` turns text into what a `tokenizers.Tokenizer` hands its BPE model: the ids of added
tokens and, between them, the pieces to encode. It follows `tokenizers`' Rust source step for
step (tokenizer/added_vocabulary.rs, normalizers/, pre_tokenizers/, tokenizer/normalizer.rs):

1. Added tokens with `normalized` false are cut out of the raw text: the leftmost-longest
   matches, left to right; a match of a `single_word` token with a word character
   (Rust regex's `\\w`) just before or after it is dropped (its text is not searched again);
   `lstrip` / `rstrip` widen a match over the white space before / after it (never into the
   previous match). Special tokens take part only when allowed (fastbpe's `allowed_special`).
2. Each stretch between them is normalized; then the `normalized` added tokens (their content
   normalized too) are cut out of it the same way.
3. Each remaining stretch goes through the pre-tokenizer's steps; a step splits every piece of
   the previous one on its own (so an added token is a hard boundary for all of them). Empty
   pieces are dropped. `ByteLevel` ends the steps (its byte-to-character map is the model's
   alphabet: fastbpe's pieces are the bytes themselves).

Regexes run in Python's `regex` module, checked for constructs that Oniguruma (Hugging Face's
engine) reads otherwise (`fastbpe.formats.huggingface.pattern_of_regex`); empty matches are
handled as the `onig` crate's iterator does. Components or options not modelled here raise
ValueError naming them: there is no silent difference.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import regex

from fastbpe import _core, patterns

# Rust's `regex` crate: `\w` and `\s` in Unicode mode; `char::is_whitespace`; `char::is_numeric`.
WORD_CHAR = r"[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]"
SPACE_CHAR = r"\p{White_Space}"
_WORD = regex.compile(WORD_CHAR)
_SPACE = regex.compile(SPACE_CHAR)
_LEADING_SPACE = regex.compile(SPACE_CHAR + "*")

BEHAVIORS = ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous")

# ByteLevel's own regex (GPT-2's), which fastbpe's "gpt2" splitter follows in Rust.
BYTE_LEVEL_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


class Unsupported(ValueError):
    """A component or option of a tokenizer.json that fastbpe does not model."""


def _describe(component) -> str:
    if isinstance(component, dict):
        return repr(component.get("type", "without a type"))
    return repr(component)


# ---- matches and splits --------------------------------------------------------------------------


def onig_spans(rx: regex.Pattern, text: str) -> list[tuple[int, int]]:
    """The matches of `rx` in `text` as the `onig` crate's `find_iter` gives them: left to right,
    each search from the end of the last match; an empty match right where the last match ended
    is skipped by moving one character on (Python's own iterator keeps some of those)."""
    spans = []
    for m in rx.finditer(text):
        if m.start() == m.end():
            return _onig_spans_slowly(rx, text)
        spans.append(m.span())
    return spans


def _onig_spans_slowly(rx: regex.Pattern, text: str) -> list[tuple[int, int]]:
    spans = []
    pos, last_end = 0, None
    while pos <= len(text):
        m = rx.search(text, pos)
        if m is None:
            break
        s, e = m.span()
        if s == e and last_end == e:
            pos += 1
            continue
        pos = last_end = e
        spans.append((s, e))
    return spans


def flagged(text: str, spans: list[tuple[int, int]], invert: bool) -> list[tuple[int, int, bool]]:
    """`Pattern::find_matches`: the text covered by (start, end, is_match), the matches and the
    stretches between them, `is_match` flipped by `invert`."""
    if not text:
        return [(0, 0, invert)]
    out = []
    prev = 0
    for s, e in spans:
        if prev != s:
            out.append((prev, s, invert))
        out.append((s, e, not invert))
        prev = e
    if prev != len(text):
        out.append((prev, len(text), invert))
    return out


def split_by_behavior(matches: list[tuple[int, int, bool]], behavior: str) -> list[tuple[int, int]]:
    """`NormalizedString::split`: the spans kept, as each `SplitDelimiterBehavior` makes them."""
    if behavior == "Isolated":
        return [(s, e) for s, e, _ in matches]
    if behavior == "Removed":
        return [(s, e) for s, e, m in matches if not m]
    out: list[list[int]] = []
    previous = False
    if behavior == "Contiguous":
        for s, e, m in matches:
            if m == previous and out:
                out[-1][1] = e
            else:
                out.append([s, e])
            previous = m
    elif behavior == "MergedWithPrevious":
        for s, e, m in matches:
            if m and not previous and out:
                out[-1][1] = e
            else:
                out.append([s, e])
            previous = m
    else:  # MergedWithNext: the same from the right
        for s, e, m in reversed(matches):
            if m and not previous and out:
                out[-1][0] = s
            else:
                out.append([s, e])
            previous = m
        out.reverse()
    return [(s, e) for s, e in out]


# ---- pre-tokenizer steps ---------------------------------------------------------------------------


class Step:
    """One pre-tokenizer: splits one piece into pieces (empty ones dropped)."""

    def __call__(self, piece: str) -> list[str]:
        raise NotImplementedError


class SplitStep(Step):
    """`Split`, and the pre-tokenizers built on it (`Digits`, `Whitespace`, `WhitespaceSplit`,
    `Punctuation`): the matches of `rx`, flagged (inverted), kept by `behavior`."""

    def __init__(self, rx: regex.Pattern, behavior: str, invert: bool, builtin: str | None = None):
        self.rx, self.behavior, self.invert = rx, behavior, invert
        # A named pattern whose matches cover all text, isolated: the Rust splitter gives them.
        self.builtin = builtin if behavior == "Isolated" and not invert else None

    def __call__(self, piece: str) -> list[str]:
        if self.builtin is not None:
            return _core.split(self.builtin, piece)
        spans = split_by_behavior(flagged(piece, onig_spans(self.rx, piece), self.invert), self.behavior)
        return [piece[s:e] for s, e in spans if e > s]


class ByteLevelStep(Step):
    """`ByteLevel`: a space before a piece that does not start with one (`add_prefix_space`),
    then GPT-2's regex (`use_regex`)."""

    def __init__(self, add_prefix_space: bool, use_regex: bool):
        self.add_prefix_space, self.use_regex = add_prefix_space, use_regex

    def __call__(self, piece: str) -> list[str]:
        if self.add_prefix_space and not piece.startswith(" "):
            piece = " " + piece
        if self.use_regex:
            return _core.split("gpt2", piece)
        return [piece] if piece else []


def _flag(spec: dict, key: str, default, where: str, kinds=(bool,)):
    value = spec.get(key, default)
    if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
        raise ValueError(f"{where}: the {spec.get('type')} {key} is {value!r}")
    return value


def _regex_of(pattern, where: str, what: str) -> tuple[regex.Pattern, str | None]:
    """A `{"Regex": ...}` / `{"String": ...}` pattern compiled for Python's `regex`, and the
    name of the Rust splitter that gives its matches where it is a named pattern."""
    from fastbpe.formats.huggingface import pattern_of_regex

    if isinstance(pattern, dict) and len(pattern) == 1 and isinstance(pattern.get("String"), str):
        return regex.compile(regex.escape(pattern["String"])), None
    if not (isinstance(pattern, dict) and len(pattern) == 1 and isinstance(pattern.get("Regex"), str)):
        raise ValueError(f"{where}: the {what}'s pattern is {pattern!r}; expected {{\"Regex\": ...}} or {{\"String\": ...}}")
    name = pattern_of_regex(pattern["Regex"], where)
    return patterns.compile(name), name if name in patterns.NAMED else None


def _char_class(cls: str) -> regex.Pattern:
    return regex.compile(cls)


def steps_of(pre, where: str) -> list[Step]:
    """The steps of a pre-tokenizer (a Sequence flattened), ByteLevel last and only there."""
    if not isinstance(pre, dict):
        raise Unsupported(f"{where}: the pre_tokenizer {_describe(pre)} is not supported")
    kind = pre.get("type")
    if kind == "Sequence":
        inner = pre.get("pretokenizers")
        if not isinstance(inner, list):
            raise ValueError(f"{where}: the Sequence pre_tokenizer needs a 'pretokenizers' array")
        steps = [s for p in inner for s in steps_of(p, where)]
    elif kind == "Split":
        behavior = pre.get("behavior")
        if behavior not in BEHAVIORS:
            raise Unsupported(f"{where}: the Split behavior {behavior!r} is not one of {', '.join(BEHAVIORS)}")
        rx, builtin = _regex_of(pre.get("pattern"), where, "Split")
        steps = [SplitStep(rx, behavior, _flag(pre, "invert", False, where), builtin)]
    elif kind == "Digits":
        individual = _flag(pre, "individual_digits", False, where)
        steps = [SplitStep(_char_class(r"\p{N}"), "Isolated" if individual else "Contiguous", False)]
    elif kind == "Whitespace":
        rx = regex.compile(f"{WORD_CHAR}+|[^{WORD_CHAR[1:-1]}{SPACE_CHAR}]+")
        steps = [SplitStep(rx, "Removed", True)]
    elif kind == "WhitespaceSplit":
        steps = [SplitStep(_char_class(SPACE_CHAR), "Removed", False)]
    elif kind == "Punctuation":
        behavior = pre.get("behavior", "Isolated")
        if behavior not in BEHAVIORS:
            raise Unsupported(f"{where}: the Punctuation behavior {behavior!r} is not one of {', '.join(BEHAVIORS)}")
        # `char::is_ascii_punctuation || is_punctuation` (the Unicode P* categories).
        steps = [SplitStep(_char_class(r"[\p{P}!-/:-@\[-`{-~]"), behavior, False)]
    elif kind == "ByteLevel":
        return [ByteLevelStep(_flag(pre, "add_prefix_space", True, where), _flag(pre, "use_regex", True, where))]
    else:
        raise Unsupported(f"{where}: the pre_tokenizer {_describe(pre)} is not supported")
    return steps


def check_byte_level_last(steps: list[Step], where: str) -> None:
    """Byte-level BPE: the last step, and only it, maps the text to the model's alphabet."""
    if any(isinstance(s, ByteLevelStep) for s in steps[:-1]):
        raise Unsupported(f"{where}: a pre_tokenizer step after ByteLevel is not supported (it would split mapped bytes)")
    if not steps or not isinstance(steps[-1], ByteLevelStep):
        raise Unsupported(
            f"{where}: the pre_tokenizer does not end with ByteLevel; fastbpe reads byte-level BPE, whose "
            "pre-tokenizer ends with ByteLevel"
        )


# ---- normalizers -----------------------------------------------------------------------------------


def _lowercase(text: str) -> str:
    # Character by character, as Rust's `char::to_lowercase`: Python's `str.lower` makes a final
    # capital sigma "ς", which Hugging Face does not.
    if "Σ" not in text:
        return text.lower()
    return "".join(c.lower() for c in text)


def _replace(rx: regex.Pattern, content: str):
    def run(text: str) -> str:
        spans = onig_spans(rx, text)
        if not spans:
            return text
        out, at = [], 0
        for s, e in spans:
            out.append(text[at:s])
            out.append(content)
            at = e
        out.append(text[at:])
        return "".join(out)

    return run


def normalizer_of(spec, where: str):
    """A function str -> str for a normalizer (None for none); Unsupported for one fastbpe
    does not model."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise Unsupported(f"{where}: the normalizer {_describe(spec)} is not supported")
    kind = spec.get("type")
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        return lambda text, form=kind: unicodedata.normalize(form, text)
    if kind == "Lowercase":
        return _lowercase
    if kind == "Prepend":
        prefix = spec.get("prepend")
        if not isinstance(prefix, str):
            raise ValueError(f"{where}: the Prepend normalizer needs a string 'prepend'")
        return lambda text: prefix + text if text else text
    if kind == "Replace":
        content = spec.get("content")
        if not isinstance(content, str):
            raise ValueError(f"{where}: the Replace normalizer needs a string 'content'")
        rx, _ = _regex_of(spec.get("pattern"), where, "Replace normalizer")
        return _replace(rx, content)
    if kind == "Sequence":
        inner = spec.get("normalizers")
        if not isinstance(inner, list):
            raise ValueError(f"{where}: the Sequence normalizer needs a 'normalizers' array")
        parts = [f for f in (normalizer_of(n, where) for n in inner) if f is not None]

        def run(text: str) -> str:
            for f in parts:
                text = f(text)
            return text

        return run
    raise Unsupported(f"{where}: the normalizer {_describe(spec)} is not supported")


# ---- added tokens ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddedToken:
    content: str
    id: int
    special: bool
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = False

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "content": self.content,
            "single_word": self.single_word,
            "lstrip": self.lstrip,
            "rstrip": self.rstrip,
            "normalized": self.normalized,
            "special": self.special,
        }


def added_token_of(entry, where: str, n: int) -> AddedToken:
    from fastbpe.vocab import ID_LIMIT

    if not isinstance(entry, dict) or not isinstance(entry.get("content"), str) or not entry["content"]:
        raise ValueError(f"{where}: added_tokens[{n}] needs a non-empty string 'content'")
    i = entry.get("id")
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < ID_LIMIT:
        raise ValueError(f"{where}: added token {entry['content']!r} has the id {i!r}; ids are integers in [0, 2**32)")
    flags = {}
    for key, default in (("special", False), ("single_word", False), ("lstrip", False), ("rstrip", False), ("normalized", True)):
        value = entry.get(key, default)
        if not isinstance(value, bool):
            raise ValueError(f"{where}: added token {entry['content']!r} has {key} {value!r}; expected true or false")
        flags[key] = value
    return AddedToken(entry["content"], i, **flags)


class _Matcher:
    """Finds added tokens in a stretch as `AddedVocabulary::find_matches` does."""

    def __init__(self, tokens: list[tuple[str, AddedToken]]):
        # (text matched, token); leftmost-longest: at one place the longest alternative first.
        self.by_text = dict(tokens)
        ordered = sorted(self.by_text, key=lambda t: (-len(t), t))
        self.rx = regex.compile("|".join(regex.escape(t) for t in ordered)) if ordered else None

    def split(self, sentence: str) -> list[str | int]:
        """The stretch as text and added-token ids, in order (empty text left out)."""
        if self.rx is None or not sentence:
            return [sentence] if sentence else []
        out: list[str | int] = []
        at = 0
        for m in self.rx.finditer(sentence):
            start, stop = m.span()
            token = self.by_text[m.group()]
            if token.single_word and (
                (start > 0 and _WORD.match(sentence, start - 1))
                or (stop < len(sentence) and _WORD.match(sentence, stop))
            ):
                continue
            if token.lstrip:
                # The white space before it, back to the previous match at most.
                while start > at and _SPACE.match(sentence, start - 1):
                    start -= 1
                start = max(start, at)
            if token.rstrip:
                stop = _LEADING_SPACE.match(sentence, stop).end()
            if at < start:
                out.append(sentence[at:start])
            if start < stop:  # stripped down to nothing (its text taken by the last match's rstrip): dropped
                out.append(token.id)
            at = stop
        if at < len(sentence):
            out.append(sentence[at:])
        return out


class Pipeline:
    """A `tokenizer.json`'s normalizer, pre-tokenizer and added tokens (see the module)."""

    def __init__(self, normalizer, pre_tokenizer, added_tokens: list[AddedToken], where: str):
        self.normalize = normalizer_of(normalizer, where)
        self.steps = steps_of(pre_tokenizer, where)
        check_byte_level_last(self.steps, where)
        self.added = list(added_tokens)
        self._normalized_text: dict[int, str] = {}
        seen: dict[tuple[bool, str], str] = {}
        for t in self.added:
            text = self.normalize(t.content) if (t.normalized and self.normalize) else t.content
            if not text:
                raise ValueError(f"{where}: added token {t.content!r} normalizes to the empty string")
            key = (t.normalized, text)
            if key in seen:
                raise ValueError(f"{where}: added tokens {seen[key]!r} and {t.content!r} are matched as the same text {text!r}")
            seen[key] = t.content
            self._normalized_text[t.id] = text

    def decoded_as(self) -> dict[int, bytes]:
        """What `tokenizers` decodes an added token's id to where that is not its content: a
        `normalized` token decodes as its normalized text (even where the model gave the id),
        through the ByteLevel decoder (characters of GPT-2's byte alphabet only: those bytes)."""
        from fastbpe.formats.gpt2 import unicode_to_bytes

        table = unicode_to_bytes()
        out = {}
        for t in self.added:
            text = self._normalized_text[t.id]
            if text != t.content:
                out[t.id] = bytes(table[c] for c in text) if all(c in table for c in text) else text.encode("utf-8")
        return out

    @classmethod
    def from_spec(cls, spec: dict, where: str) -> Pipeline:
        """From the spec a tokenizer keeps: {"normalizer", "pre_tokenizer", "added_tokens"}
        as in a tokenizer.json."""
        if not isinstance(spec, dict) or not isinstance(spec.get("added_tokens"), list):
            raise ValueError(f"{where}: the Hugging Face pipeline must be an object with 'added_tokens'")
        added = [added_token_of(e, where, n) for n, e in enumerate(spec["added_tokens"])]
        return cls(spec.get("normalizer"), spec.get("pre_tokenizer"), added, where)

    @lru_cache(maxsize=8)
    def _matchers(self, allowed: frozenset[str]) -> tuple[_Matcher, _Matcher]:
        """(raw-text matcher, normalized-text matcher) for the special tokens in `allowed` and
        every non-special added token."""
        use = [t for t in self.added if not t.special or t.content in allowed]
        raw = _Matcher([(t.content, t) for t in use if not t.normalized])
        normed = _Matcher([(self._normalized_text[t.id], t) for t in use if t.normalized])
        return raw, normed

    def segments(self, text: str, allowed: frozenset[str]) -> list[str | int]:
        """The text as added-token ids and, between them, normalized stretches (before
        pre-tokenization)."""
        raw, normed = self._matchers(allowed)
        out: list[str | int] = []
        for part in raw.split(text):
            if isinstance(part, int):
                out.append(part)
                continue
            if self.normalize is not None:
                part = self.normalize(part)
            out.extend(normed.split(part))
        return out

    def pieces(self, stretch: str) -> list[str]:
        """The pre-tokenizer's pieces of one stretch."""
        pieces = [stretch] if stretch else []
        for step in self.steps:
            pieces = [q for p in pieces for q in step(p)]
        return pieces

    def encode(self, text: str, allowed: frozenset[str], encode_pieces) -> list[int]:
        """Ids of `text`: added-token ids and `encode_pieces` of the pieces between them."""
        out: list[int] = []
        for part in self.segments(text, allowed):
            if isinstance(part, int):
                out.append(part)
            else:
                out += encode_pieces(self.pieces(part))
        return out

    # ---- streams --------------------------------------------------------------------------------

    def stream(self, allowed: frozenset[str], encode) -> PipelineStream:
        """A `PipelineStream` over this pipeline: `encode(text, allowed)` gives a text's ids."""
        return PipelineStream(self, allowed, encode)

    def safe_cut(self, text: str, allowed: frozenset[str]) -> int:
        """The last place in `text` after which encoding the rest on its own gives the ids of
        the whole, whatever text follows (0 if none).

        Cuts are made right after an added token cut out of the raw text (step 1), which is a
        hard boundary for everything after it: the normalizer, the normalized added tokens and
        every pre-tokenizer step work on the stretch after it alone. The match must be final:
        it ends at least the longest raw added token's length before the end of `text`, so no
        match of the whole text starts before it and reaches past `text` (then the matches up to
        it are the whole text's, left to right, and the search after it starts afresh, as after
        a cut). Not after an `rstrip` token (its white space may go on past `text`), nor, where a
        `single_word` token is in play, after one ending in a word character (the next match's
        check looks at that character)."""
        raw, _ = self._matchers(allowed)
        if raw.rx is None:
            return 0
        longest = max(map(len, raw.by_text))
        single_word = any(t.single_word for t in raw.by_text.values())
        single_word = single_word or any(t.single_word for t in self._matchers(allowed)[1].by_text.values())
        cut = 0
        limit = len(text) - longest
        for m in raw.rx.finditer(text):
            if m.end() > limit:
                break
            token = raw.by_text[m.group()]
            if token.single_word and (
                (m.start() > 0 and _WORD.match(text, m.start() - 1)) or _WORD.match(text, m.end())
            ):
                continue
            if token.rstrip or (single_word and _WORD.match(token.content[-1])):
                continue
            cut = m.end()
        return cut


class PipelineStream:
    """Text that arrives in parts, through a Hugging Face pipeline: the ids of the whole text
    (`encode(text, allowed)`), held back until `Pipeline.safe_cut` finds a place where cutting
    changes none."""

    def __init__(self, pipeline: Pipeline, allowed: frozenset[str], encode):
        self.pipeline = pipeline
        self.allowed = allowed
        self.encode = encode
        self.parts: list[str] = []
        self.size = 0
        self.threshold = 1 << 16

    def feed(self, s: str) -> list[int]:
        self.parts.append(s)
        self.size += len(s)
        if self.size < self.threshold:
            return []
        text = "".join(self.parts)
        n = self.pipeline.safe_cut(text, self.allowed)
        if n == 0:
            # No safe place yet: keep reading, in larger steps so joining stays linear.
            self.parts, self.threshold = [text], self.threshold * 2
            return []
        rest = text[n:]
        self.parts, self.size, self.threshold = [rest], len(rest), max(1 << 16, 2 * len(rest))
        return self.encode(text[:n], self.allowed)

    def finish(self) -> list[int]:
        text = "".join(self.parts)
        self.parts, self.size = [], 0
        return self.encode(text, self.allowed)
