"""`Tokenizer`: a byte-level BPE vocabulary, its merges, special tokens and pattern."""

from __future__ import annotations

import base64
import json
import operator
import os
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from functools import cached_property, lru_cache
from typing import Literal

import numpy as np
import regex

from fastbpe import _core, _progress, _stream, corpus, patterns, token_files
from fastbpe._io import check_writable, refuse_overwrite, write_atomic

UnknownTokenError = _core.UnknownTokenError

FORMAT = "fastbpe.tokenizer"
VERSION = 1
# Files and pickles that hold a Hugging Face pipeline, a post-processor or ignore_merges (fields
# an older fastbpe would ignore, giving other ids): written only then, so others stay readable.
VERSION_HF = 2

# Ids are 32-bit: they must be below this.
ID_LIMIT = 1 << 32

BytesLike = (bytes, bytearray, memoryview)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (used for readable, lossless JSON)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_str(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def str_to_token(text: str, where: str) -> bytes:
    table = unicode_to_bytes()
    try:
        return bytes(table[c] for c in text)
    except KeyError as e:
        raise ValueError(f"{where}: {text!r} has a character outside GPT-2's byte alphabet: {e}") from None


def check_special_tokens(special_tokens: Iterable[str] | None) -> list[str]:
    """The special tokens as a list: distinct non-empty strings (`Tokenizer` and `train` both
    validate them here)."""
    if special_tokens is None:
        return []
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens must be a list of strings, not one string: use [{special_tokens!r}]")
    if not isinstance(special_tokens, Iterable):
        raise TypeError(f"special_tokens must be a list of strings, not {type(special_tokens).__name__}")
    specials = list(special_tokens)
    for s in specials:
        if not isinstance(s, str):
            raise TypeError(f"special tokens must be strings, got {s!r}")
        if not s:
            raise ValueError("special tokens must not be empty strings")
    seen = set()
    for s in specials:
        if s in seen:
            raise ValueError(f"special token {s!r} is given twice")
        seen.add(s)
    return specials


def _check_id(i, what: str) -> int:
    """`i` as an int id in [0, 2**32); `what` names it in errors."""
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"{what}: id {i!r} is not an int")
    i = int(i)
    if not 0 <= i < ID_LIMIT:
        raise ValueError(f"{what}: id {i} is out of range; ids are in [0, 2**32)")
    return i


def _check_vocab(vocab: Mapping[int, bytes]) -> dict[int, bytes]:
    if not isinstance(vocab, Mapping):
        raise TypeError(f"vocab must be a mapping of id -> token bytes, not {type(vocab).__name__}")
    # Plain ints and bytes, as every loader and trainer gives, are checked in bulk.
    if (
        all(type(i) is int for i in vocab.keys())
        and all(type(t) is bytes and t for t in vocab.values())
        and (not vocab or (min(vocab) >= 0 and max(vocab) < ID_LIMIT))
    ):
        return dict(vocab)
    out: dict[int, bytes] = {}
    for i, t in vocab.items():
        i = _check_id(i, "vocab")
        if not isinstance(t, BytesLike):
            raise TypeError(f"vocab[{i}] is {type(t).__name__} {t!r}, not bytes: give each token's bytes, e.g. 'x'.encode()")
        if len(t) == 0:
            raise ValueError(f"vocab[{i}] is empty: every token has at least one byte")
        out[i] = bytes(t)
    return out


def _check_merges(merges: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    if isinstance(merges, (str, *BytesLike)) or not isinstance(merges, Iterable):
        raise TypeError(f"merges must be a list of (left bytes, right bytes) pairs, not {type(merges).__name__}")
    merges = list(merges)
    if all(type(m) is tuple and len(m) == 2 and type(m[0]) is bytes and type(m[1]) is bytes for m in merges):
        return merges
    out = []
    for n, m in enumerate(merges):
        try:
            a, b = m
        except (TypeError, ValueError):
            raise TypeError(f"merge {n} is {m!r}: each merge is a pair (left bytes, right bytes)") from None
        if not isinstance(a, BytesLike) or not isinstance(b, BytesLike):
            raise TypeError(f"merge {n} is {m!r}: each merge is a pair (left bytes, right bytes)")
        out.append((bytes(a), bytes(b)))
    return out


class _MergeError(ValueError):
    """A merge that does not fit the vocabulary; `index` is its position in the merges."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def _special_ids(vocab: dict[int, bytes], specials: list[str]) -> tuple[dict[str, int], set[int]]:
    """Each special token's id, and the ids added for them. A special token whose bytes are in
    `vocab` takes that id (the largest, if several: a CS336 vocabulary lists the special tokens
    after the merges); the others get new ids after the largest, in order (added to `vocab`)."""
    holder: dict[bytes, int] = {}
    for i, t in vocab.items():
        if i > holder.get(t, -1):
            holder[t] = i
    ids: dict[str, int] = {}
    added: set[int] = set()
    for s in specials:
        b = s.encode("utf-8")
        if b not in holder:
            new_id = max(vocab, default=-1) + 1
            if new_id >= ID_LIMIT:
                raise ValueError(f"no id left for special token {s!r}: ids are in [0, 2**32)")
            vocab[new_id] = b
            holder[b] = new_id
            added.add(new_id)
        ids[s] = holder[b]
    return ids, added


def _special_only(
    vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], ids: dict[str, int], added: set[int]
) -> set[int]:
    """The ids of special tokens that are not also ordinary tokens. A special token whose id the
    vocabulary already had, whose bytes no other ordinary id holds, and which BPE builds (a
    single byte or a merge's result) stays an ordinary token too: plain text that BPE builds
    into its bytes gives that same id."""
    special = set(ids.values())
    ordinary_bytes = {t for i, t in vocab.items() if i not in special}
    pairs: set[tuple[bytes, bytes]] | None = None
    out = set()
    for i in special:
        t = vocab[i]
        if i in added or t in ordinary_bytes:
            out.add(i)
        elif len(t) > 1:
            if pairs is None:
                pairs = set(merges)
            if not any((t[:k], t[k:]) in pairs for k in range(1, len(t))):
                out.add(i)
    return out


# ---- special tokens in text: tiktoken's `allowed_special` / `disallowed_special` ---------------

# The defaults: every special token allowed (CS336's), none refused. Compared by identity on the
# hot path; an equal string that is another object takes the general path, to the same ids.
ALL = "all"


def special_set(value, name: str) -> frozenset[str] | None:
    """`allowed_special` or `disallowed_special` (`name`) as a frozenset of strings; None for "all"."""
    if isinstance(value, str):
        if value == "all":
            return None
        raise TypeError(
            f'{name} must be "all" or a set of special-token strings, not the string {value!r}: '
            f"write {{{value!r}}} for that one token, or set() for none"
        )
    if isinstance(value, frozenset):
        tokens = value
    else:
        try:
            tokens = frozenset(value)
        except TypeError:
            raise TypeError(
                f'{name} must be "all" or a set of special-token strings, not {type(value).__name__}'
            ) from None
    for t in tokens:
        if not isinstance(t, str):
            raise TypeError(f"{name} holds {t!r}, which is not a str: special tokens are strings")
    return tokens


@lru_cache(maxsize=128)
def special_regex(tokens: frozenset[str]) -> regex.Pattern:
    """One group matching any of `tokens` (the longest first where several start at one place)."""
    ordered = sorted((t for t in tokens if t), key=lambda t: (-len(t), t))
    return regex.compile("(" + "|".join(regex.escape(t) for t in ordered) + ")")


def disallowed_error(token: str, where: str, tokenizer: str) -> ValueError:
    """tiktoken's error for special-token text it was told to refuse, with the three fixes;
    `where` says where it was ("" or " in text 3"), `tokenizer` names the object in the fixes."""
    return ValueError(
        f"Encountered text corresponding to disallowed special token {token!r}{where}.\n"
        f"If you want this text to be encoded as a special token, pass it to `allowed_special`, "
        f"e.g. `allowed_special={{{token!r}, ...}}`.\n"
        f"If you want this text to be encoded as normal text, disable the check for this token by passing "
        f"`disallowed_special=({tokenizer}.special_tokens_set - {{{token!r}}})`.\n"
        f"To disable this check for all special tokens, pass `disallowed_special=()`.\n"
    )


def refuse_disallowed(texts: Iterable[str], disallowed: frozenset[str], tokenizer: str, name_each: bool) -> None:
    """Raise `disallowed_error` for the first text holding one of `disallowed` (the leftmost
    one in it); `name_each` says which text in the message."""
    rx = special_regex(disallowed)
    for k, text in enumerate(texts):
        m = rx.search(text)
        if m is not None:
            raise disallowed_error(m.group(), f" in text {k}" if name_each else "", tokenizer)


def _refuse_disallowed_in_stream(texts: Iterable[str], disallowed: frozenset[str]) -> Iterator[str]:
    """The strings of `texts`, unchanged, after checking that their concatenation holds none
    of `disallowed` (one may straddle two strings)."""
    rx = special_regex(disallowed)
    keep = max(map(len, disallowed)) - 1
    tail, done = "", 0
    for s in texts:
        if isinstance(s, str):
            window = tail + s
            m = rx.search(window)
            if m is not None:
                where = f" at character {done - len(tail) + m.start()} of the stream"
                raise disallowed_error(m.group(), where, "tok")
            tail = window[max(0, len(window) - keep) :]
            done += len(s)
        yield s


def _refuse_disallowed_in_file(path: str, disallowed: frozenset[str]) -> None:
    """Raise `disallowed_error` if the file holds one of `disallowed` (searched as UTF-8 bytes,
    in blocks that overlap by less than the longest token)."""
    tokens = sorted((t.encode("utf-8") for t in disallowed if t), key=lambda t: (-len(t), t))
    rx = regex.compile(b"|".join(regex.escape(t) for t in tokens))
    keep = max(map(len, tokens)) - 1
    tail, done = b"", 0
    with open(path, "rb") as f:
        while block := f.read(1 << 23):
            window = tail + block
            m = rx.search(window)
            if m is not None:
                where = f" in '{path}' at byte offset {done - len(tail) + m.start()}"
                raise disallowed_error(m.group().decode("utf-8"), where, "tok")
            tail = window[max(0, len(window) - keep) :]
            done += len(block)


class Tokenizer:
    """A byte-level BPE tokenizer.

    `vocab` maps id -> token bytes (ids are ints in [0, 2**32); tokens are bytes, bytearray or
    memoryview, never empty, and no two ordinary tokens have the same bytes); `merges` lists
    `(left, right)` byte pairs in priority order, each part and each result a token; the 256
    single bytes must all be tokens. `special_tokens` are strings that always map to their own
    id: a special token whose bytes are already in `vocab` takes that id (the largest, when a
    CS336 vocabulary also lists it after the merges; if that id is an ordinary token too, such as
    GPT-2's "Hello", it keeps its role in the merges and plain text that BPE builds into those
    bytes gives the same id); the others get new ids after the largest. `pattern` is the
    pre-tokenization pattern: a name ("gpt2", "cl100k", "o200k" or tiktoken's "r50k_base",
    "cl100k_base", "o200k_base"), a regex (text it does not match is kept as pieces of its own),
    or None; see `fastbpe.patterns`.

    Bad arguments raise TypeError (wrong types) or ValueError (wrong values) naming the entry.
    """

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Iterable[str] | None = None,
        pattern: str | None = "gpt2",
    ):
        vocab = _check_vocab(vocab)
        merges = _check_merges(merges)
        specials = check_special_tokens(special_tokens)
        pattern = patterns.canonical(pattern)
        ids, added = _special_ids(vocab, specials)
        self._setup(vocab, merges, ids, pattern, "merges", _special_only(vocab, merges, ids, added))

    def _setup(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[bytes, bytes]] | None,
        special_token_ids: dict[str, int],
        pattern: str | None,
        rule: str,
        special_only: set[int],
    ) -> None:
        """Set the fields from checked parts (`pattern` made canonical) and check that they fit
        together."""
        self.vocab: dict[int, bytes] = vocab
        self._merges: list[tuple[bytes, bytes]] | None = merges
        self.pattern = pattern
        self.special_tokens: list[str] = list(special_token_ids)
        self.special_token_ids: dict[str, int] = dict(special_token_ids)
        # Ids that are special tokens only (not ordinary tokens the encoder builds from bytes).
        self._special_only = frozenset(special_only)
        # "merges": the pairs are the merges (CS336, GPT-2 files); "ranks": tiktoken's rule,
        # any two parts whose concatenation is a token merge, by that token's rank.
        self._rule = rule
        # Read from Hugging Face files (`from_huggingface`), kept by save/load and pickling:
        # its `ignore_merges` (a piece that is a token is that token, merges or not), the ids
        # its post-processor puts before and after a text (`add_special_tokens=True`), and the
        # spec of the `fastbpe.pretokenize.Pipeline` that replaces `pattern` where fastbpe's
        # own pre-tokenization cannot give its pieces (None otherwise).
        self._ignore_merges = False
        self._post: tuple[list[int], list[int]] = ([], [])
        self._hf: dict | None = None
        self._fingerprint: str | None = None
        self._check_ordinary_tokens()

    def _check_ordinary_tokens(self) -> None:
        """Ordinary tokens are distinct, include the 256 bytes, and hold each merge's parts and
        result (what the encoder needs; checked here so that errors come at construction)."""
        ordinary = dict(self.vocab)
        for i in self._special_only:
            del ordinary[i]
        tokens = set(ordinary.values())
        if len(tokens) < len(ordinary):
            first: dict[bytes, int] = {}
            for i, t in sorted(ordinary.items()):
                if t in first:
                    raise ValueError(
                        f"ids {first[t]} and {i} both have the token {t!r}: each token has one id "
                        "(only a special token may share its bytes with another token)"
                    )
                first[t] = i
        for b in range(256):
            if bytes([b]) not in tokens:
                raise ValueError(
                    f"the vocabulary has no token for the single byte {b:#04x}; byte-level BPE needs all 256"
                )
        merges = self._merges or ()
        if all(a in tokens and b in tokens and a + b in tokens for a, b in merges):
            return
        for n, (a, b) in enumerate(merges):
            for part in (a, b):
                if part not in tokens:
                    raise _MergeError(n, f"merge {n} {(a, b)!r}: part {part!r} is not in the vocabulary")
            if a + b not in tokens:
                raise _MergeError(n, f"merge {n} {(a, b)!r}: its result {a + b!r} is not in the vocabulary")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # ---- encoding -------------------------------------------------------------------------

    @cached_property
    def _core(self) -> _core.CoreEncoder:
        name = self.pattern if self.pattern in patterns.BUILTIN else "whole"
        # Special tokens that share an id decode as the one `vocab` holds: the encoder decodes an
        # id as the first special token given for it, so that one goes first.
        holder = self.vocab
        specials = sorted(self.special_token_ids.items(), key=lambda si: holder[si[1]] != si[0].encode("utf-8"))
        vocab = [(i, t) for i, t in self.vocab.items() if i not in self._special_only]
        if self._hf is not None:
            # The pipeline finds added tokens itself; the core only decodes the non-special ones.
            known = {s for s, _ in specials}
            specials += [(t["content"], t["id"]) for t in self._hf["added_tokens"] if t["content"] not in known]
        if self._rule == "ranks":
            return _core.CoreEncoder.from_ranks([(t, i) for i, t in vocab], specials, name)
        return _core.CoreEncoder.from_merges(vocab, self.merges, specials, name, self._ignore_merges)

    @cached_property
    def _pipeline(self):
        """The Hugging Face pipeline (`fastbpe.pretokenize.Pipeline`), or None."""
        if self._hf is None:
            return None
        from fastbpe.pretokenize import Pipeline

        return Pipeline.from_spec(self._hf, "the tokenizer's Hugging Face pipeline")

    def _encode_hf(self, text: str, allowed: frozenset[str]) -> list[int]:
        """Ids of `text` through the Hugging Face pipeline, the special tokens in `allowed`
        recognized (non-special added tokens always are, as in `tokenizers`)."""
        return self._pipeline.encode(text, allowed, self._core.encode_pieces)

    def _add_special(self, ids: list[int]) -> list[int]:
        """`ids` with the post-processor's ids around them."""
        prefix, suffix = self._post
        if not prefix and not suffix:
            return ids
        return [*prefix, *ids, *suffix]

    @cached_property
    def _custom(self):
        """For custom regexes: (piece regex, special-token regex, Rust splitter or None). The
        Rust splitter, where the pattern has one, finds the pieces; the `regex` module is the
        readable definition and the fallback."""
        if self.pattern is None or self.pattern in patterns.BUILTIN:
            return None
        rx = patterns.compile(self.pattern)
        ordered = sorted(self.special_tokens, key=len, reverse=True)
        special_rx = regex.compile("(" + "|".join(regex.escape(s) for s in ordered) + ")") if ordered else None
        return rx, special_rx, patterns.rust_splitter(self.pattern)

    @property
    def regex_engine(self) -> str:
        """What splits text into pieces: "builtin" (a named pattern's hand-written Rust
        splitter), "rust" (a custom regex run in Rust by fancy-regex), "python" (a custom regex
        run by the `regex` module) or "none" (pattern None); see `fastbpe.patterns.engine`.
        The ids do not depend on it."""
        return patterns.engine(self.pattern)

    def _encode_custom(self, text: str, with_specials: bool) -> list[int]:
        splitter = self._custom[2]
        if splitter is not None:
            try:
                return self._core.encode_regex(splitter, text, with_specials)
            except _core.RegexSearchError:
                pass  # fancy-regex gave up (backtracking): the `regex` module splits it
        return self._encode_custom_python(text, with_specials)

    def _encode_custom_batch(self, texts: list[str], with_specials: bool, num_threads: int | None) -> list[list[int]]:
        splitter = self._custom[2]
        if splitter is not None:
            try:
                return self._core.encode_regex_batch(splitter, texts, _threads(num_threads), with_specials)
            except _core.RegexSearchError:
                pass
        return [self._encode_custom_python(t, with_specials) for t in texts]

    def _encode_custom_python(self, text: str, with_specials: bool) -> list[int]:
        """The readable path: pieces from the `regex` module (`patterns.pieces`), BPE in Rust."""
        rx, special_rx, _ = self._custom
        parts = special_rx.split(text) if (with_specials and special_rx is not None) else [text]
        out: list[int] = []
        for i, part in enumerate(parts):
            if i % 2 == 1:
                out.append(self.special_token_ids[part])
            elif part:
                out.extend(self._core.encode_pieces(patterns.pieces(rx, part)))
        return out

    def encode(
        self,
        text: str,
        # Not keyword-only: CPython fills those from a dict, ~20 ns a call on this hot path.
        allowed_special: Literal["all"] | AbstractSet[str] = ALL,
        disallowed_special: Literal["all"] | Collection[str] = ALL,
        add_special_tokens: bool = False,
    ) -> list[int]:
        """Token ids of `text`; special tokens in it become their ids (longest match first).

        `allowed_special` and `disallowed_special` mean what they mean in tiktoken:
        `allowed_special` is the set of special tokens to recognize ("all": every one; by default,
        as in CS336, all of them), the others are plain text; text equal to a special token in
        `disallowed_special` raises ValueError ("all": every special token not allowed). For
        text from users, `encode(text, allowed_special=set())` refuses special-token text and
        `encode(text, allowed_special=set(), disallowed_special=())` encodes it as plain text
        (as `encode_ordinary` does).

        `add_special_tokens=True` adds what the post-processor of a tokenizer read with
        `from_huggingface` puts around a text (Llama-3's `<|begin_of_text|>`, RoBERTa's `<s>` and
        `</s>`); fastbpe's default is False, Hugging Face's is True."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        if allowed_special is disallowed_special is ALL and not add_special_tokens and self._hf is None:
            if self._custom is not None:
                return self._encode_custom(text, True)
            return self._core.encode(text)
        if self._hf is not None:
            ids = self._encode_hf(text, self._allowed_in([text], allowed_special, disallowed_special))
        elif allowed_special is disallowed_special is ALL:
            ids = self._encode_custom(text, True) if self._custom is not None else self._core.encode(text)
        else:
            ids = self._encode_allowed(text, self._allowed_in([text], allowed_special, disallowed_special))
        return self._add_special(ids) if add_special_tokens else ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, special tokens treated as plain text."""
        if not isinstance(text, str):
            raise TypeError(f"encode_ordinary() takes a str, not {type(text).__name__}")
        if self._hf is not None:
            return self._encode_hf(text, frozenset())
        if self._custom is not None:
            return self._encode_custom(text, False)
        return self._core.encode_ordinary(text)

    @property
    def special_tokens_set(self) -> set[str]:
        """The special tokens as a set (tiktoken's name)."""
        return set(self.special_token_ids)

    @cached_property
    def _special_frozenset(self) -> frozenset[str]:
        return frozenset(self.special_token_ids)

    def _special_policy(self, allowed_special, disallowed_special) -> tuple[frozenset[str], frozenset[str]]:
        """tiktoken's reading of `allowed_special` and `disallowed_special`: (the special tokens
        to recognize, the texts to refuse). Strings that are not special tokens of this tokenizer
        are ignored in `allowed_special` and refused in `disallowed_special`, as in tiktoken."""
        every = self._special_frozenset
        allowed = special_set(allowed_special, "allowed_special")
        allowed = every if allowed is None else allowed & every
        disallowed = special_set(disallowed_special, "disallowed_special")
        if disallowed is None:
            disallowed = every - allowed
        elif "" in disallowed:
            disallowed = disallowed - {""}
        return allowed, disallowed

    def _allowed_in(
        self, texts: Sequence[str], allowed_special, disallowed_special, name_each: bool = False
    ) -> frozenset[str]:
        """The special tokens to recognize in `texts`, after refusing any disallowed one."""
        allowed, disallowed = self._special_policy(allowed_special, disallowed_special)
        if disallowed:
            refuse_disallowed(texts, disallowed, "tok", name_each)
        return allowed

    def _encode_allowed(self, text: str, allowed: frozenset[str]) -> list[int]:
        """Ids of `text` with only the special tokens in `allowed` recognized."""
        if not allowed:
            return self.encode_ordinary(text)
        view = self._recognizing(allowed, build=False)
        return view.encode(text) if view is not None else self._encode_split([text], allowed, None)[0]

    def _encode_split(self, texts: list[str], allowed: frozenset[str], num_threads: int | None) -> list[list[int]]:
        """Ids of each text with only the special tokens in `allowed` recognized, without an
        encoder of their own: the texts split on them in Python, the stretches between them, of
        every text, encoded as plain text in one parallel batch and put back together."""
        split = special_regex(allowed).split
        parts = [split(t) for t in texts]
        stretches = iter(self.encode_ordinary_batch([p for ps in parts for p in ps[::2]], num_threads))
        ids = self.special_token_ids
        out = []
        for ps in parts:
            row = next(stretches)
            for k in range(1, len(ps), 2):
                row.append(ids[ps[k]])
                row.extend(next(stretches))
            out.append(row)
        return out

    def encode_batch(
        self,
        texts: Sequence[str],
        num_threads: int | None = None,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = ALL,
        disallowed_special: Literal["all"] | Collection[str] = ALL,
        add_special_tokens: bool = False,
    ) -> list[list[int]]:
        """`encode` of each text, in parallel on `num_threads` threads (default: all cores);
        `allowed_special`, `disallowed_special` and `add_special_tokens` as in `encode` (a
        disallowed special token raises ValueError naming the text). Tokenizers read with a
        Hugging Face pipeline encode the texts one after the other.

        The calling thread turns finished results into lists while the others go on encoding.
        Like `encode`'s, the lists are left out of the cyclic garbage collector: they hold only
        ints, so collections need not walk them (a list made part of a cycle later is freed
        only once the cycle is broken)."""
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"encode_batch() takes str texts, not {type(t).__name__}")
        if add_special_tokens:
            rows = self.encode_batch(texts, num_threads, allowed_special=allowed_special, disallowed_special=disallowed_special)
            return [self._add_special(row) for row in rows]
        if self._hf is not None:
            allowed = self._allowed_in(texts, allowed_special, disallowed_special, name_each=True)
            return [self._encode_hf(t, allowed) for t in texts]
        if not (allowed_special is disallowed_special is ALL):
            allowed = self._allowed_in(texts, allowed_special, disallowed_special, name_each=True)
            if not allowed:
                return self.encode_ordinary_batch(texts, num_threads)
            if len(allowed) < len(self.special_token_ids):
                view = self._recognizing(allowed, build=False)
                if view is None:
                    return self._encode_split(texts, allowed, num_threads)
                return view.encode_batch(texts, num_threads)
        if self._custom is not None:
            return self._encode_custom_batch(texts, True, num_threads)
        return self._core.encode_batch(texts, _threads(num_threads))

    def encode_ordinary_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """`encode_ordinary` of each text (special tokens are plain text), in parallel as
        `encode_batch`."""
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"encode_ordinary_batch() takes str texts, not {type(t).__name__}")
        if self._hf is not None:
            return [self._encode_hf(t, frozenset()) for t in texts]
        if self._custom is not None:
            return self._encode_custom_batch(texts, False, num_threads)
        return self._core.encode_batch(texts, _threads(num_threads), False)

    @cached_property
    def dtype(self) -> np.dtype:
        """The smallest unsigned dtype that holds every id: uint16 or uint32 (found once: the
        scan of the vocabulary cost more than encoding a short text)."""
        return np.dtype(np.uint16) if max(self.vocab) < 1 << 16 else np.dtype(np.uint32)

    def encode_to_numpy(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = ALL,
        disallowed_special: Literal["all"] | Collection[str] = ALL,
        add_special_tokens: bool = False,
    ) -> np.ndarray:
        """`encode(text)` as a numpy array (uint16 when every id fits, else uint32);
        `allowed_special`, `disallowed_special` and `add_special_tokens` as in `encode`."""
        if not isinstance(text, str):
            raise TypeError(f"encode_to_numpy() takes a str, not {type(text).__name__}")
        dtype = self.dtype
        if add_special_tokens or self._hf is not None:
            return np.asarray(self.encode(text, allowed_special, disallowed_special, add_special_tokens), dtype=dtype)
        with_specials = True
        if not (allowed_special is disallowed_special is ALL):
            allowed = self._allowed_in([text], allowed_special, disallowed_special)
            if not allowed:
                with_specials = False
            elif len(allowed) < len(self.special_token_ids):
                view = self._recognizing(allowed, build=False)
                if view is None:
                    return np.asarray(self._encode_split([text], allowed, None)[0], dtype=dtype)
                return view.encode_to_numpy(text)
        if self._custom is not None and self._custom[2] is not None:
            try:
                buf = self._core.encode_regex_to_buffer(self._custom[2], text, dtype.itemsize, with_specials)
                return np.frombuffer(buf, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
            except _core.RegexSearchError:
                pass
        if self._custom is not None:
            return np.asarray(self._encode_custom_python(text, with_specials), dtype=dtype)
        buf = self._core.encode_to_buffer(text, dtype.itemsize, with_specials)
        return np.frombuffer(buf, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)

    def encode_ordinary_to_numpy(self, text: str) -> np.ndarray:
        """`encode_ordinary(text)` as a numpy array, as `encode_to_numpy`."""
        if not isinstance(text, str):
            raise TypeError(f"encode_ordinary_to_numpy() takes a str, not {type(text).__name__}")
        return self.encode_to_numpy(text, allowed_special=(), disallowed_special=())

    def encode_iterable(
        self,
        iterable: Iterable[str],
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = ALL,
        disallowed_special: Literal["all"] | Collection[str] = ALL,
    ) -> Iterator[int]:
        """Lazily yield the ids of the concatenated strings, as `encode("".join(iterable))` would,
        with memory that does not grow with the input (pieces and special tokens may straddle
        two strings: text is held back until a place where cutting cannot change the ids).

        What is held is bounded by the longest piece: with `pattern=None` that is the text between
        two special tokens, held whole; with a custom regex see `fastbpe._stream.CustomStream`
        for the patterns it is exact for.

        `allowed_special` and `disallowed_special` as in `encode`; a disallowed special token
        raises ValueError when the stream reaches it, after the ids of the text before it."""
        if not (allowed_special is disallowed_special is ALL):
            yield from self._encode_iterable_special(iterable, allowed_special, disallowed_special)
            return
        if self._hf is not None:
            yield from self._encode_iterable_hf(iterable)
            return
        if self._custom is not None:
            yield from self._encode_iterable_custom(iterable)
            return
        pending: list[str] = []
        size = 0
        threshold = 1 << 16
        for s in iterable:
            if not isinstance(s, str):
                raise TypeError(f"encode_iterable() takes str items, not {type(s).__name__}")
            pending.append(s)
            size += len(s)
            if size < threshold:
                continue
            text = "".join(pending)
            n = self._core.safe_prefix_chars(text)
            if n == 0:
                # No safe place yet: keep reading, in larger steps so joining stays linear.
                pending, threshold = [text], threshold * 2
                continue
            yield from self.encode(text[:n])
            rest = text[n:]
            pending, size, threshold = [rest], len(rest), max(1 << 16, 2 * len(rest))
        yield from self.encode("".join(pending))

    def _encode_iterable_hf(self, iterable: Iterable[str]) -> Iterator[int]:
        """`encode_iterable` through the Hugging Face pipeline: text is held until a place where
        the ids of the rest do not depend on the text before (`Pipeline.safe_cut`: right after an
        added token such as a document's end), so memory follows the longest text between such
        tokens."""
        stream = _HFStream(self)
        for s in iterable:
            if not isinstance(s, str):
                raise TypeError(f"encode_iterable() takes str items, not {type(s).__name__}")
            yield from stream.feed(s)
        yield from stream.finish()

    def _encode_iterable_custom(self, iterable: Iterable[str]) -> Iterator[int]:
        """`encode_iterable` for a custom regex: the pieces come from `CustomStream`."""
        stream = _stream.CustomStream(self._custom[0], self.special_tokens)
        for s in iterable:
            if not isinstance(s, str):
                raise TypeError(f"encode_iterable() takes str items, not {type(s).__name__}")
            yield from self._encode_stretches(stream.feed(s))
        yield from self._encode_stretches(stream.finish())

    def _encode_stretches(self, stretches) -> list[int]:
        """The ids of `CustomStream`'s (pieces, special token) stretches."""
        ids: list[int] = []
        for pieces, special in stretches:
            if pieces:
                ids += self._core.encode_pieces(pieces)
            if special is not None:
                ids.append(self.special_token_ids[special])
        return ids

    def _encode_iterable_special(self, iterable: Iterable[str], allowed_special, disallowed_special) -> Iterator[int]:
        """`encode_iterable` under a special-token policy: the stream checked as it passes, then
        encoded by a tokenizer that recognizes only the allowed special tokens."""
        allowed, disallowed = self._special_policy(allowed_special, disallowed_special)
        if disallowed:
            iterable = _refuse_disallowed_in_stream(iterable, disallowed)
        yield from self._recognizing(allowed).encode_iterable(iterable)

    def _recognizing(self, allowed: frozenset[str], build: bool = True) -> Tokenizer | None:
        """This tokenizer with only the special tokens in `allowed` recognized, the others
        plain text: itself, or a view with an encoder of its own, kept for the last few sets.
        Building one takes a few tenths of a second for 100,000 tokens, after which it encodes
        1.4-1.6x as fast as splitting on the special tokens in Python: with `build` False, a set
        seen for the first time gets None (the caller splits), the next time its view."""
        if len(allowed) == len(self.special_token_ids):
            return self
        with _VIEWS_LOCK:
            views, seen = self._views
            view = views.pop(allowed, None)
            if view is None:
                if not build and allowed not in seen:
                    if len(seen) >= 64:
                        seen.clear()
                    seen.add(allowed)
                    return None
                view = _SpecialSubset(self, allowed)
            views[allowed] = view  # most recently used last
            while len(views) > 3:
                del views[next(iter(views))]
        return view

    @cached_property
    def _views(self) -> tuple[dict[frozenset[str], Tokenizer], set[frozenset[str]]]:
        """(the views by special-token set, the sets seen once)."""
        return {}, set()

    def encode_file(
        self,
        path: str | os.PathLike,
        out_path: str | os.PathLike,
        *,
        dtype=None,
        num_threads: int | None = None,
        progress: bool | None = None,
        metadata: dict | None = None,
        allowed_special: Literal["all"] | AbstractSet[str] = ALL,
        disallowed_special: Literal["all"] | Collection[str] = ALL,
        text_field: str = "text",
        eot_token: str | None = None,
    ) -> np.ndarray:
        """Encode a corpus file into a flat token array on disk; returns it as an np.memmap.

        The file is UTF-8 text, JSON lines or Parquet, text and JSON lines possibly compressed
        (.gz, .xz, .zst); see `fastbpe.corpus`. A text file gives the ids of its text, nothing
        added. A JSON lines or Parquet file gives, for each document (the field or column
        `text_field`), `encode(document)` followed by the id of `eot_token` (one of this
        tokenizer's special tokens; by default `<|endoftext|>`, when declared: a warning says
        when it is not, and the documents then follow each other with nothing between them).
        A tokenizer.json names its end of text otherwise (DeepSeek's `<｜end▁of▁sentence｜>`):
        pass that.

        The text is cut at safe places (after special tokens, between lines), encoded in
        parallel, and streamed to disk in order with bounded memory. `out_path` and its sidecar
        `<out_path>.json` (dtype, number of tokens, size, checksum, the tokenizer, any `metadata`
        given) appear together and complete, or not at all: see `fastbpe.token_files`. An output
        that is the input file (or a link to it) is refused with ValueError.

        `allowed_special` and `disallowed_special` as in `encode`; with either given a plain text
        file is first searched for disallowed special tokens (ValueError naming the byte offset,
        before anything is written), the documents of other formats as they are read (ValueError
        naming the line or row; nothing is written).
        """
        fmt = corpus.check_readable(path)
        corpus.check_text_field(text_field)
        corpus.eot_id(self, eot_token)  # a wrong name is refused before any work
        if not fmt.plain_text:
            # The formats read in Python: the policy applies to each document as it is read.
            allowed, disallowed = self._special_policy(allowed_special, disallowed_special)
        elif not (allowed_special is disallowed_special is ALL):
            allowed, disallowed = self._special_policy(allowed_special, disallowed_special)
            if disallowed and os.path.isfile(path):
                # The outputs are checked before the search, as before the encoding.
                outputs = [("out_path", out_path), ("its sidecar", token_files.sidecar_path(out_path))]
                refuse_overwrite(outputs, [("the input", path)])
                check_writable(out_path)
                _refuse_disallowed_in_file(os.fspath(path), disallowed)
            return self._recognizing(allowed).encode_file(
                path, out_path, dtype=dtype, num_threads=num_threads, progress=progress, metadata=metadata
            )
        path, out_path = os.fspath(path), os.fspath(out_path)
        refuse_overwrite([("out_path", out_path), ("its sidecar", token_files.sidecar_path(out_path))], [("the input", path)])
        if dtype is None:
            dtype = self.dtype  # fits every id
        else:
            dtype = np.dtype(dtype)
            if dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
                raise ValueError(f"dtype must be uint16 or uint32, not {dtype}")
            if max(self.vocab) >= 1 << (8 * dtype.itemsize):
                raise ValueError(f"dtype {dtype} cannot hold id {max(self.vocab)}: use uint32")
        meta = {
            "vocab_size": self.vocab_size,
            "source": os.path.abspath(path),
            "tokenizer_sha256": self.fingerprint(),
            **(metadata or {}),
        }
        bar = _progress.Bar(f"encoding {os.path.basename(path)}", os.path.getsize(path), "MB", 1e6) if _progress.wanted(progress) else None
        with token_files.TokenWriter(out_path, dtype, meta) as writer:
            if not fmt.plain_text:
                n = corpus.encode_into(self, path, fmt, writer, text_field=text_field, eot_token=eot_token,
                                       num_threads=_threads(num_threads),
                                       allowed=allowed, disallowed=disallowed, progress=bar)
            elif self._hf is not None:
                n = self._encode_file_hf(path, writer, bar)
            elif self._custom is None:
                try:
                    n = self._core.encode_file(path, writer.tmp, dtype.itemsize, _threads(num_threads), bar)
                except OSError as e:
                    raise writer.filler_error(e) from None
                writer.adopt(n)
            else:
                n = self._encode_file_custom(path, writer, num_threads, bar)
            if bar:
                bar.close()
        return token_files.map_data(out_path, writer.metadata)

    def _encode_file_custom(self, path: str, writer: token_files.TokenWriter, num_threads: int | None, bar) -> int:
        """Custom patterns: in Rust where the pattern has a Rust splitter (chunks split in
        parallel and stitched exactly, `rust/regex_encode.rs`), else `_encode_file_python`."""
        splitter = self._custom[2]
        if splitter is not None:
            itemsize = writer.dtype.itemsize
            try:
                n = self._core.encode_regex_file(splitter, path, writer.tmp, itemsize, _threads(num_threads), bar)
            except _core.RegexSearchError:
                os.truncate(writer.tmp, 0)  # what the Rust encoder wrote; the `regex` module starts over
            except OSError as e:
                raise writer.filler_error(e) from None
            else:
                writer.adopt(n)
                return n
        return self._encode_file_python(path, writer, bar)

    def _encode_file_python(self, path: str, writer: token_files.TokenWriter, bar) -> int:
        """Custom patterns: the file read in blocks, its pieces found by `CustomStream`."""
        stream = _stream.CustomStream(self._custom[0], self.special_tokens)

        def write(stretches) -> None:
            for stretch in stretches:  # a few ten thousand characters each
                writer.write(np.asarray(self._encode_stretches([stretch]), dtype=writer.dtype))

        for text in _stream.read_text(path, 1 << 20, bar):
            write(stream.feed(text))
        write(stream.finish())
        return writer.num_tokens

    def _encode_file_hf(self, path: str, writer: token_files.TokenWriter, bar) -> int:
        """Through the Hugging Face pipeline: the file read in blocks, cut as `encode_iterable`."""
        stream = _HFStream(self)
        for text in _stream.read_text(path, 1 << 20, bar):
            writer.write(np.asarray(stream.feed(text), dtype=writer.dtype))
        writer.write(np.asarray(stream.finish(), dtype=writer.dtype))
        return writer.num_tokens

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of the tokens, concatenated. Ids are ints (numpy integers too); an id not in
        the vocabulary raises UnknownTokenError naming it, a non-integer TypeError."""
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        elif not isinstance(ids, (list, tuple)):
            ids = list(ids)
        if self._hf is not None and self._decoded_as:
            return self._decode_bytes_as_hf(ids)
        try:
            return self._core.decode_bytes(ids)
        except (OverflowError, TypeError, UnknownTokenError):
            bad = self._bad_id(ids)
            if bad is None:
                raise
            raise bad from None

    @cached_property
    def _decoded_as(self) -> dict[int, bytes]:
        """Ids that Hugging Face decodes otherwise than as their bytes (`Pipeline.decoded_as`)."""
        return self._pipeline.decoded_as() if self._pipeline is not None else {}

    def _decode_bytes_as_hf(self, ids: list) -> bytes:
        """`decode_bytes` with the ids of `_decoded_as` decoded as Hugging Face does."""
        table = self._decoded_as
        out, run = [], []
        for i in ids:
            if isinstance(i, int) and i in table:
                out.append(self._decode_run(run))
                out.append(table[i])
                run = []
            else:
                run.append(i)
        out.append(self._decode_run(run))
        return b"".join(out)

    def _decode_run(self, ids: list) -> bytes:
        try:
            return self._core.decode_bytes(ids)
        except (OverflowError, TypeError, UnknownTokenError):
            bad = self._bad_id(ids)
            if bad is None:
                raise
            raise bad from None

    def _bad_id(self, ids: Sequence) -> Exception | None:
        """The error for the first id in `ids` that is not a token (the core's errors name the
        id only when every item was a 32-bit unsigned int)."""
        for k, x in enumerate(ids):
            try:
                i = operator.index(x)
            except TypeError:
                return TypeError(f"token ids must be ints: item {k} is {type(x).__name__} {x!r}")
            if not 0 <= i < ID_LIMIT or self._core.token_bytes(i) is None:
                return UnknownTokenError(
                    f"token id {i} is not in the vocabulary (ids go up to {max(self.vocab)})"
                )
        return None

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """The text of the tokens; invalid UTF-8 becomes U+FFFD (`errors` as in `bytes.decode`:
        "strict" raises UnicodeDecodeError instead)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def as_tiktoken(self, name: str | None = None):
        """This tokenizer behind `tiktoken.Encoding`'s interface and defaults (special-token text
        refused unless allowed), so that code written for tiktoken runs on it unchanged: see
        `fastbpe.tiktoken_compat.Encoding`. `name` defaults to one made from `fingerprint()`."""
        from fastbpe.tiktoken_compat import Encoding

        return Encoding.from_tokenizer(self, name)

    def fingerprint(self) -> str:
        """SHA-256 over what decides the ids (rule, pattern, special tokens, vocabulary and, under
        the merge rule, the merges): the tokenizer's identity, recorded beside token files."""
        if self._fingerprint is None:
            import hashlib

            h = hashlib.sha256()
            head = [self._rule, self.pattern, sorted(self.special_token_ids.items())]
            hf = self._hf_fields()
            if hf:
                head.append(hf)  # absent for fastbpe's own tokenizers: their fingerprints stay
            h.update(json.dumps(head, sort_keys=True).encode())
            for i, t in sorted(self.vocab.items()):
                h.update(b"%d:%d:" % (i, len(t)) + t)
            if self._rule == "merges":
                for a, b in self.merges:
                    h.update(b"%d:%d:" % (len(a), len(b)) + a + b)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={self.special_tokens!r}, pattern={self.pattern!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tokenizer):
            return NotImplemented
        return (
            self.vocab == other.vocab
            and self.merges == other.merges
            and self.special_token_ids == other.special_token_ids
            and self.pattern == other.pattern
            and self._hf_fields() == other._hf_fields()
        )

    # ---- pickling ------------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        """What decides the ids. The Rust encoder and the other caches are left out (they cannot be
        pickled, and are rebuilt on first use); so are merges derived from tiktoken ranks."""
        hf = self._hf_fields()
        return {
            "format": FORMAT,
            "version": VERSION_HF if hf else VERSION,
            "vocab": self.vocab,
            "merges": self._merges if self._rule == "merges" else None,
            "special_tokens": self.special_token_ids,
            "pattern": self.pattern,
            "rule": self._rule,
            **hf,
        }

    def __setstate__(self, state) -> None:
        """Unpickling checks the state as construction and `load` check their input: a pickle
        is not trusted to hold a valid tokenizer."""
        where = "pickled Tokenizer"
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{where}: not the state of a fastbpe Tokenizer (no format {FORMAT!r})")
        if state.get("version") not in (VERSION, VERSION_HF):
            raise ValueError(
                f"{where}: state version {state.get('version')!r}; this fastbpe reads versions {VERSION} and "
                f"{VERSION_HF}: pickle it with this version of fastbpe"
            )
        rule = state.get("rule")
        if rule not in ("merges", "ranks"):
            raise ValueError(f"{where}: rule {rule!r}; expected 'merges' or 'ranks'")
        try:
            vocab = _check_vocab(state.get("vocab"))
            merges = None if rule == "ranks" and state.get("merges") is None else _check_merges(state.get("merges"))
            if isinstance(state.get("special_tokens"), dict):
                check_special_tokens(list(state["special_tokens"]))
            pattern = patterns.canonical(state.get("pattern"))
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}: {e}") from None
        specials = _special_tokens_field(where, state.get("special_tokens"), vocab)
        special_only = _special_only_of(rule, vocab, merges, specials, state.get("huggingface"), where)
        try:
            self._setup(vocab, merges, specials, pattern, rule, special_only)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        self._set_hf_fields(state, where)

    # ---- other formats -----------------------------------------------------------------------

    @classmethod
    def from_files(
        cls,
        vocab_filepath: str | os.PathLike,
        merges_filepath: str | os.PathLike,
        special_tokens: Iterable[str] | None = None,
    ) -> Tokenizer:
        """GPT-2's `vocab.json` (token strings in its byte-to-unicode alphabet -> id) and
        `merges.txt` (one "left right" pair per line, a `#version` line allowed first). A special
        token already in `vocab.json` takes its id there (see `Tokenizer`)."""
        specials = check_special_tokens(special_tokens)
        vocab_filepath, merges_filepath = os.fspath(vocab_filepath), os.fspath(merges_filepath)
        vocab = _read_vocab_json(vocab_filepath)
        merges, lines = _read_merges_txt(merges_filepath)
        try:
            return cls(vocab, merges, specials, pattern="gpt2")
        except _MergeError as e:
            raise ValueError(f"{merges_filepath}:{lines[e.index]}: {e} of {vocab_filepath}") from None
        except ValueError as e:
            raise ValueError(f"{vocab_filepath}: {e}") from None

    @classmethod
    def from_tiktoken(
        cls,
        path: str | os.PathLike,
        pattern: str | None,
        special_tokens: Mapping[str, int] | None = None,
    ) -> Tokenizer:
        """A `.tiktoken` rank file (`base64(token) rank` per line), with tiktoken's rule: any two
        adjacent parts whose concatenation is a token merge, the lowest rank first.

        `pattern` is a pattern name such as "cl100k_base" (see `fastbpe.patterns`); special
        tokens come with their ids (`{"<|endoftext|>": 100257}`), which the file must not use.
        A rank or a token that the file gives twice is refused."""
        path = os.fspath(path)
        pattern = patterns.canonical(pattern)
        specials = _check_special_ids(special_tokens)
        return cls._from_ranks(_read_tiktoken(path), pattern, specials, path)

    @classmethod
    def _from_ranks(cls, vocab: dict[int, bytes], pattern: str | None, specials: dict[str, int], where: str) -> Tokenizer:
        """A tokenizer under tiktoken's rule from checked parts: rank -> token bytes, a canonical
        pattern, special tokens with their ids (`where` names the ranks' source in errors).
        Special tokens may share an id among themselves (the id decodes as the first of them),
        never with a ranked token."""
        ranked = set(vocab)
        for s, i in specials.items():
            if i in ranked:
                raise ValueError(
                    f"special token {s!r} has id {i}, which {where} already gives to {vocab[i]!r}: "
                    "give it an id the ranks do not use"
                )
            vocab.setdefault(i, s.encode("utf-8"))  # the first special token with the id names it
        tok = cls.__new__(cls)
        try:
            tok._setup(vocab, None, specials, pattern, "ranks", set(specials.values()))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        return tok

    @property
    def merges(self) -> list[tuple[bytes, bytes]]:
        if self._merges is None:
            self._merges = _merges_from_ranks(self.vocab, self._special_only)
        return self._merges

    @merges.setter
    def merges(self, value: list[tuple[bytes, bytes]]) -> None:
        self._merges = value

    def to_tiktoken(self, path: str | os.PathLike) -> None:
        """Write a `.tiktoken` rank file (special tokens are not part of that format, except those
        that are ordinary tokens too)."""
        lines = [
            base64.b64encode(t) + b" " + str(i).encode() + b"\n"
            for i, t in sorted(self.vocab.items())
            if i not in self._special_only
        ]
        write_atomic(os.fspath(path), b"".join(lines))

    def to_huggingface(self, path: str | os.PathLike) -> str:
        """Write the tokenizer for Hugging Face: `tokenizers.Tokenizer.from_file` and
        `transformers.PreTrainedTokenizerFast(tokenizer_file=...)` give the same ids as `encode`
        (special tokens recognized), and decode the same text.

        `path` is a `tokenizer.json` file, or a folder (one that exists, or a str ending with a
        separator, which is created): then `tokenizer.json` and `tokenizer_config.json` are
        written in it, for `transformers.AutoTokenizer.from_pretrained(folder)`, with eos/bos/pad
        named where a special token has the usual name (`<|endoftext|>` is eos). Returns the path
        of the `tokenizer.json`. A pattern that Hugging Face's regex engine cannot follow exactly
        (a backreference, `(?x)`, one that can match the empty string, ...) raises ValueError
        naming it; see `fastbpe.formats.huggingface`."""
        from fastbpe.formats import huggingface

        return huggingface.write(self, path)

    @classmethod
    def from_huggingface(cls, source) -> Tokenizer:
        """A Hugging Face byte-level BPE tokenizer: a path to a `tokenizer.json` (or to the folder
        holding it), its JSON text, or a `tokenizers.Tokenizer`. The ids and the decoded text are
        those of `tokenizers.Tokenizer.encode(text, add_special_tokens=...)` and its `decode`
        (with `skip_special_tokens=False`).

        Read: a BPE model (vocab, merges as "a b" or [a, b], `ignore_merges`); the normalizers
        NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace and Sequence; the pre-tokenizers Split
        (every behavior, invert, a Regex or a String), Digits, Whitespace, WhitespaceSplit,
        Punctuation, Sequence, and ByteLevel (with or without its regex, `add_prefix_space`: a
        space before each piece that does not start with one), which must end them; added tokens
        with `lstrip`, `rstrip`, `single_word` and `normalized` as `tokenizers` applies them; the
        post-processors TemplateProcessing (the single template), RobertaProcessing,
        BertProcessing, ByteLevel and Sequence, whose ids `encode(..., add_special_tokens=True)`
        adds; the ByteLevel decoder. Special added tokens are fastbpe's special tokens
        (`allowed_special` applies to them); other added tokens are recognized always, by
        `encode_ordinary` too, as `tokenizers` does. Anything else (Metaspace, BertNormalizer,
        truncation, another model or decoder, ...) raises ValueError naming it.

        A file that is ByteLevel alone, or one regex Split (isolated) and ByteLevel without its
        regex, with no normalizer and plain special tokens, keeps fastbpe's own pre-tokenization
        (the named patterns in Rust). Any other is pre-tokenized by `fastbpe.pretokenize.Pipeline`
        in Python, then encoded in Rust: slower, and `encode_batch` encodes one text after the
        other; `encode_iterable` and `encode_file` hold text until an added token that cuts it
        (a special token such as `<|endoftext|>`), so memory follows the text between them.

        A Split regex that fastbpe wrote, or that is a named pattern's text, gives back that
        pattern (the named ones run in Rust). Any other regex runs through Python's `regex`
        module, and is refused where it holds a construct that module reads otherwise than
        Oniguruma, Hugging Face's engine ({n,m}+, ^ and $ outside a class, \\z, \\h, (?m),
        ...). Both engines take character classes such as \\p{L}, \\w and \\s from their own
        Unicode tables, and the normalizers come from Python's `unicodedata`: on characters that
        only recent Unicode versions assign the two can differ; on all other text the ids are
        HF's."""
        from fastbpe.formats import huggingface

        return huggingface.read(cls, source)

    # ---- files -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        out = {
            "format": FORMAT,
            "version": VERSION,
            "pattern": self.pattern,
            "special_tokens": self.special_token_ids,
            # Token bytes in GPT-2's byte-to-unicode alphabet: readable and lossless.
            "vocab": {str(i): token_to_str(t) for i, t in sorted(self.vocab.items())},
            "merges": [[token_to_str(a), token_to_str(b)] for a, b in self.merges],
            "rule": self._rule,
        }
        hf = self._hf_fields()
        if hf:
            out["version"] = VERSION_HF
            out.update(hf)
        return out

    def _hf_fields(self) -> dict:
        """What a tokenizer read from Hugging Face keeps beyond fastbpe's own fields (none for
        other tokenizers): `ignore_merges`, `post_processor` (the ids before and after a text),
        `huggingface` (the pipeline's spec)."""
        out: dict = {}
        if self._ignore_merges:
            out["ignore_merges"] = True
        if self._post[0] or self._post[1]:
            out["post_processor"] = {"prefix": list(self._post[0]), "suffix": list(self._post[1])}
        if self._hf is not None:
            out["huggingface"] = self._hf
        return out

    def _set_hf_fields(self, data: dict, where: str) -> None:
        """Set what `_hf_fields` wrote (absent fields: a tokenizer of fastbpe's own)."""
        ignore = data.get("ignore_merges", False)
        if not isinstance(ignore, bool) or (ignore and self._rule != "merges"):
            raise ValueError(f"{where}: the field 'ignore_merges' is {ignore!r}; expected true or false, and only with rule 'merges'")
        self._ignore_merges = ignore
        post = data.get("post_processor")
        if post is not None:
            ok = isinstance(post, dict) and all(
                isinstance(post.get(k), list) and all(type(i) is int and i in self.vocab for i in post[k])
                for k in ("prefix", "suffix")
            )
            if not ok:
                raise ValueError(f"{where}: the field 'post_processor' must be {{\"prefix\": [ids], \"suffix\": [ids]}} of ids in the vocabulary")
            self._post = (list(post["prefix"]), list(post["suffix"]))
        hf = data.get("huggingface")
        if hf is not None:
            if self.pattern is not None:
                raise ValueError(f"{where}: the field 'huggingface' needs the pattern null")
            from fastbpe.pretokenize import Pipeline

            Pipeline.from_spec(hf, f"{where}: the field 'huggingface'")
            self._hf = hf

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically: a complete file or none)."""
        write_atomic(os.fspath(path), json.dumps(self.to_dict(), ensure_ascii=False, indent=1).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a file written by `save`, or a Hugging Face `tokenizer.json` (told apart by its
        content: a "model" and no "format"; read as `from_huggingface` reads it). A malformed
        file raises ValueError naming the file and the field."""
        from fastbpe.formats import huggingface

        path = os.fspath(path)
        data = _read_json(path, "a fastbpe tokenizer file or a Hugging Face tokenizer.json")
        if huggingface.is_tokenizer_json(data):
            return huggingface.read_data(cls, data, path)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a fastbpe tokenizer file (no \"format\": \"{FORMAT}\") nor a Hugging Face "
                "tokenizer.json (no \"model\")"
            )
        if data.get("version") not in (VERSION, VERSION_HF):
            raise ValueError(
                f"{path} has format version {data.get('version')!r}; this fastbpe reads versions {VERSION} and "
                f"{VERSION_HF}: upgrade fastbpe"
            )
        for key in ("pattern", "special_tokens", "vocab", "merges"):
            if key not in data:
                raise ValueError(f"{path}: the field {key!r} is missing")
        rule = data.get("rule", "merges")
        if rule not in ("merges", "ranks"):
            raise ValueError(f"{path}: the field 'rule' is {rule!r}; expected 'merges' or 'ranks'")
        try:
            pattern = patterns.canonical(data["pattern"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: the field 'pattern': {e}") from None
        vocab = _vocab_field(path, data["vocab"])
        merges = _merges_field(path, data["merges"])
        specials = _special_tokens_field(path, data["special_tokens"], vocab)
        special_only = _special_only_of(rule, vocab, merges, specials, data.get("huggingface"), path)
        tok = cls.__new__(cls)
        try:
            tok._setup(vocab, merges, specials, pattern, rule, special_only)
        except _MergeError as e:
            raise ValueError(f"{path}: the field 'merges' does not fit the field 'vocab': {e}") from None
        except ValueError as e:
            raise ValueError(f"{path}: the field 'vocab': {e}") from None
        tok._set_hf_fields(data, path)
        return tok


def uncached_state(tok: Tokenizer) -> dict:
    """The tokenizer's fields without what it caches (encoders, regexes, views), which are built
    again on first use: enough to rebuild it with `Tokenizer.__new__` and `__dict__.update`."""
    cls = type(tok)
    return {k: v for k, v in vars(tok).items() if not isinstance(getattr(cls, k, None), cached_property)}


_VIEWS_LOCK = threading.Lock()


class _SpecialSubset(Tokenizer):
    """A tokenizer that recognizes only some of another's special tokens (the others are plain
    text): the same vocabulary, merges and pattern, its own encoder (whose safe cuts for
    streams and files follow those special tokens). Token files it writes name the full
    tokenizer, whose ids they hold."""

    def __init__(self, full: Tokenizer, allowed: frozenset[str]):
        self.__dict__.update(uncached_state(full))
        self.special_token_ids = {s: i for s, i in full.special_token_ids.items() if s in allowed}
        self.special_tokens = list(self.special_token_ids)
        self._full = full

    def fingerprint(self) -> str:
        return self._full.fingerprint()


class _HFStream:
    """Text that arrives in parts, through a tokenizer's Hugging Face pipeline: the ids of the
    whole text, held back until `Pipeline.safe_cut` finds a place where cutting changes none."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self.allowed = tok._special_frozenset
        self.parts: list[str] = []
        self.size = 0
        self.threshold = 1 << 16

    def feed(self, s: str) -> list[int]:
        self.parts.append(s)
        self.size += len(s)
        if self.size < self.threshold:
            return []
        text = "".join(self.parts)
        n = self.tok._pipeline.safe_cut(text, self.allowed)
        if n == 0:
            # No safe place yet: keep reading, in larger steps so joining stays linear.
            self.parts, self.threshold = [text], self.threshold * 2
            return []
        rest = text[n:]
        self.parts, self.size, self.threshold = [rest], len(rest), max(1 << 16, 2 * len(rest))
        return self.tok._encode_hf(text[:n], self.allowed)

    def finish(self) -> list[int]:
        text = "".join(self.parts)
        self.parts, self.size = [], 0
        return self.tok._encode_hf(text, self.allowed)


# ---- reading files ------------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _read_json(path: str, what: str):
    """The JSON value in `path`; ValueError naming the file if it is not UTF-8 JSON, or if an
    object has a key twice (JSON parsers differ on which one wins)."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not {what}: not UTF-8 (invalid byte at offset {e.start})") from None
    except _DuplicateKey as e:
        raise ValueError(f"{path}: the key {e.args[0]!r} appears twice in one JSON object") from None
    except RecursionError:
        raise ValueError(f"{path} is not {what} (bad JSON: nested too deeply)") from None
    except ValueError as e:
        raise ValueError(f"{path} is not {what} (bad JSON: {e})") from None


def _json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _read_vocab_json(path: str) -> dict[int, bytes]:
    """GPT-2's `vocab.json`: token string -> id."""
    raw = _read_json(path, "a vocab.json of token -> id")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of token -> id, not an {_json_type(raw)}")
    vocab: dict[int, bytes] = {}
    names: dict[int, str] = {}
    for text, i in raw.items():
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"{path}: token {text!r} has id {i!r}, not an int")
        if not 0 <= i < ID_LIMIT:
            raise ValueError(f"{path}: token {text!r} has id {i}, out of range; ids are in [0, 2**32)")
        if i in names:
            raise ValueError(f"{path}: id {i} is given to two tokens, {names[i]!r} and {text!r}; each id names one token")
        if not text:
            raise ValueError(f"{path}: id {i} has the empty string as its token; every token has at least one byte")
        vocab[i] = str_to_token(text, f"{path}: token {text!r}")
        names[i] = text
    return vocab


def _read_merges_txt(path: str) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """GPT-2's `merges.txt`: the merges and the line number of each."""
    merges: list[tuple[bytes, bytes]] = []
    lines: list[int] = []
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a merges.txt: not UTF-8 (invalid byte at offset {e.start})") from None
    # Lines end as in a file opened in text mode (\n, \r\n or \r).
    for lineno, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        if (lineno == 1 and line.startswith("#version")) or not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{path}:{lineno}: expected two tokens separated by one space, got {line!r}")
        where = f"{path}:{lineno}"
        merges.append((str_to_token(parts[0], where), str_to_token(parts[1], where)))
        lines.append(lineno)
    return merges, lines


def _read_tiktoken(path: str) -> dict[int, bytes]:
    """A `.tiktoken` rank file: rank -> token bytes."""
    vocab: dict[int, bytes] = {}
    rank_of: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            token = b""
            if len(parts) == 2 and parts[1].isdigit():
                try:
                    token = base64.b64decode(parts[0], validate=True)
                except ValueError:
                    pass
            if not token:
                raise ValueError(f"{path}:{lineno}: expected 'base64-token rank', got {line[:80]!r}")
            rank = int(parts[1])
            if rank >= ID_LIMIT:
                raise ValueError(f"{path}:{lineno}: rank {rank} is out of range; ranks are in [0, 2**32)")
            if rank in vocab:
                first = _line_of_rank(path, rank)
                raise ValueError(f"{path}:{lineno}: rank {rank} is given twice (line {first} and line {lineno})")
            if token in rank_of:
                first = rank_of[token]
                raise ValueError(
                    f"{path}:{lineno}: token {token!r} is given twice (rank {first} on line "
                    f"{_line_of_rank(path, first)}, rank {rank} on line {lineno})"
                )
            vocab[rank] = token
            rank_of[token] = rank
    return vocab


def _line_of_rank(path: str, rank: int) -> int:
    """The first line of a rank file that gives `rank` (for error messages)."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and int(parts[1]) == rank:
                return lineno
    return 0


def _check_special_ids(special_tokens: Mapping[str, int] | None) -> dict[str, int]:
    """Special tokens with their ids (`from_tiktoken`)."""
    if special_tokens is None:
        return {}
    if not isinstance(special_tokens, Mapping):
        raise TypeError(
            f"special_tokens must be a dict of special token -> id, e.g. {{'<|endoftext|>': 100257}}, "
            f"not {type(special_tokens).__name__}"
        )
    names = check_special_tokens(list(special_tokens))
    # Special tokens may share an id (tiktoken's o200k_harmony has two names for 200018).
    return {s: _check_id(special_tokens[s], f"special token {s!r}") for s in names}


_DECIMAL = regex.compile(r"0|[1-9][0-9]*")


def _vocab_field(path: str, raw) -> dict[int, bytes]:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the field 'vocab' must be an object of id -> token, not an {_json_type(raw)}")
    vocab: dict[int, bytes] = {}
    for k, t in raw.items():
        if not _DECIMAL.fullmatch(k) or int(k) >= ID_LIMIT:
            raise ValueError(f"{path}: the field 'vocab' has the key {k!r}; keys are ids, integers in [0, 2**32)")
        if not isinstance(t, str) or not t:
            raise ValueError(f"{path}: the field 'vocab' gives id {k} {t!r}; tokens are non-empty strings")
        vocab[int(k)] = str_to_token(t, f"{path}: the field 'vocab', id {k}")
    return vocab


def _merges_field(path: str, raw) -> list[tuple[bytes, bytes]]:
    if not isinstance(raw, list):
        raise ValueError(f"{path}: the field 'merges' must be an array of pairs, not an {_json_type(raw)}")
    merges = []
    for n, m in enumerate(raw):
        if not (type(m) is list and len(m) == 2 and type(m[0]) is str and type(m[1]) is str and m[0] and m[1]):
            raise ValueError(f"{path}: the field 'merges' has {m!r} at {n}; each merge is a pair of token strings")
        where = f"{path}: the field 'merges', item {n}"
        merges.append((str_to_token(m[0], where), str_to_token(m[1], where)))
    return merges


def _special_tokens_field(path: str, raw, vocab: dict[int, bytes]) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the field 'special_tokens' must be an object of token -> id, not an {_json_type(raw)}")
    first: dict[int, str] = {}  # special tokens may share an id: the first one names it in 'vocab'
    for s, i in raw.items():
        if not s:
            raise ValueError(f"{path}: the field 'special_tokens' has an empty special token")
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"{path}: the field 'special_tokens' gives {s!r} the id {i!r}, not an int")
        if vocab.get(i) != first.setdefault(i, s).encode("utf-8"):
            raise ValueError(
                f"{path}: the field 'special_tokens' gives {s!r} the id {i}, "
                f"but the field 'vocab' has {vocab.get(i)!r} there"
            )
    return dict(raw)


def _special_only_of(rule: str, vocab, merges, specials: dict[str, int], hf, where: str) -> set[int]:
    """The special-only ids of a saved tokenizer: every special token under tiktoken's rule;
    under merges, as `_special_only` finds them, the non-special added tokens of a Hugging Face
    pipeline included, with the ids that the file's model vocab did not have (`added_ids`)."""
    if rule == "ranks":
        return set(specials.values())
    if hf is None:
        return _special_only(vocab, merges, specials, set())
    if not isinstance(hf, dict) or not isinstance(hf.get("added_tokens"), list) or not isinstance(hf.get("added_ids", []), list):
        raise ValueError(f"{where}: the field 'huggingface' must be an object with 'added_tokens' and 'added_ids'")
    every = dict(specials)
    for t in hf["added_tokens"]:
        if isinstance(t, dict) and isinstance(t.get("content"), str) and t.get("id") in vocab:
            every.setdefault(t["content"], t["id"])
    added = {i for i in hf.get("added_ids", []) if i in vocab}
    return _special_only(vocab, merges, every, added)


def _threads(num_threads: int | None) -> int:
    if num_threads is None:
        return os.cpu_count() or 1
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int or None, not {num_threads!r}")
    return num_threads


def _merges_from_ranks(vocab: dict[int, bytes], skip: set[int]) -> list[tuple[bytes, bytes]]:
    """The merge that builds each token under tiktoken's rule, in rank order: the Rust core's
    derivation of `fastbpe.reference.merges_from_ranks` (which defines it). Only the ranks' order
    reaches the core."""
    ranks = {t: i for i, t in vocab.items() if i not in skip}  # a token given twice: the last id
    return _core.merges_from_ranks(sorted(ranks, key=ranks.__getitem__))
