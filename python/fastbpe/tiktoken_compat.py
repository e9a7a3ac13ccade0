"""tiktoken's `Encoding` over a fastbpe `Tokenizer`: the same methods, signatures and defaults,
so that code written for tiktoken runs unchanged.

    cl100k = fastbpe.Tokenizer.from_tiktoken("cl100k_base.tiktoken", "cl100k_base", {"<|endoftext|>": 100257})
    enc = cl100k.as_tiktoken("cl100k_base")
    enc.encode("hello <|endoftext|>")                          # ValueError, as in tiktoken
    enc.encode("hello <|endoftext|>", allowed_special="all")   # [15339, 220, 100257]

`Encoding(name, pat_str=..., mergeable_ranks=..., special_tokens=...)` builds one from tiktoken's
parts, as `tiktoken.Encoding` does. The ids are fastbpe's, which equal tiktoken's for tiktoken's
encodings (tested on gpt2, cl100k_base, o200k_base and o200k_harmony).

Where it differs from tiktoken, on purpose:
- Ids of special tokens that share an id decode as the first of them (tiktoken: as its hash map
  happens to order them, which for o200k_harmony is also the first).
- Bad arguments raise TypeError or ValueError naming them where tiktoken asserts or panics
  (`is_special_token` of a non-int, `explicit_n_vocab` that does not fit, a string other than
  "all" for `allowed_special` / `disallowed_special`, which tiktoken would read as a set of
  characters).
- `num_threads` is capped at the number of cores; the batch methods run in fastbpe's Rust
  threads, not a Python thread pool.
- `encode_to_numpy` returns a writable array.
"""

from __future__ import annotations

import bisect
import operator
import os
from collections.abc import Collection, Sequence
from collections.abc import Set as AbstractSet
from functools import cached_property
from typing import Literal

import numpy as np
import regex

from fastbpe import _core, patterns
from fastbpe.formats import tiktoken as rank_files
from fastbpe.special import check_special_ids, refuse_disallowed, special_regex
from fastbpe.tokenizer import Tokenizer
from fastbpe.vocab import ID_LIMIT, check_id

# tiktoken's regexes for its encodings are fastbpe's named patterns (Rust splitters).
_NAME_OF_REGEX = {source: name for name, source in patterns.NAMED.items()}
# `_pat_str` of a tokenizer without pre-tokenization: each stretch is one piece.
_WHOLE = r"[\s\S]+"
# Rust's `char::is_whitespace` (Unicode's White_Space property), which tiktoken's
# `encode_with_unstable` applies to the last character.
_WHITE_SPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    map(chr, range(0x2000, 0x200B))
)
# Bytes of the tokens that `encode_with_unstable` treats as whitespace.
_SPACE_BYTES = frozenset(b" \n\t")


def _without_surrogates(text: str) -> str:
    """tiktoken's fix for text that is not valid Unicode: surrogate pairs become their
    character, lone surrogates U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _threads(num_threads):
    """tiktoken's `num_threads`, capped at the cores (fastbpe's threads check the rest)."""
    cores = os.cpu_count() or 1
    if isinstance(num_threads, int) and not isinstance(num_threads, bool) and num_threads > cores:
        return cores
    return num_threads


def _check_texts(texts, method: str) -> list[str]:
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"{method}() takes str texts, not {type(t).__name__}")
    return texts


def _last_char(data: bytes) -> tuple[str, int] | None:
    """The character that the last bytes of `data` encode and its length, if they are valid
    UTF-8 (bstr's `decode_last_utf8`, which tiktoken uses)."""
    start = len(data) - 1
    limit = max(len(data) - 4, 0)
    while start > limit and 0x80 <= data[start] < 0xC0:
        start -= 1
    try:
        char = data[start:].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return (char, len(data) - start) if len(char) == 1 else None


class Encoding:
    """`tiktoken.Encoding`'s interface and defaults over a fastbpe `Tokenizer` (see the module).

    Build one with `Tokenizer.as_tiktoken(name)`, or from tiktoken's parts as tiktoken does:
    `Encoding(name, pat_str=..., mergeable_ranks=..., special_tokens=...)`."""

    def __init__(
        self,
        name: str,
        *,
        pat_str: str,
        mergeable_ranks: dict[bytes, int],
        special_tokens: dict[str, int],
        explicit_n_vocab: int | None = None,
    ):
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if not isinstance(pat_str, str):
            raise TypeError(f"pat_str must be a regex string, not {type(pat_str).__name__}")
        pattern = _NAME_OF_REGEX.get(pat_str)
        if pattern is None:
            # A regex of only word characters would read as a pattern name: keep it a regex.
            pattern = patterns.canonical(f"(?:{pat_str})" if regex.fullmatch(r"[A-Za-z0-9_-]+", pat_str) else pat_str)
        specials = check_special_ids(special_tokens)
        tok = rank_files.from_ranks(Tokenizer, _ranks_by_id(mergeable_ranks), pattern, specials, "mergeable_ranks")
        if explicit_n_vocab is not None:
            n = len(mergeable_ranks) + len(specials)
            if n != explicit_n_vocab or max(tok.vocab) != explicit_n_vocab - 1:
                raise ValueError(
                    f"explicit_n_vocab is {explicit_n_vocab}, but the encoding has {n} tokens with ids up to "
                    f"{max(tok.vocab)}: give the number of tokens, one more than the largest id"
                )
        self._init(tok, name, pat_str)

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer, name: str | None = None) -> Encoding:
        """`tokenizer` behind tiktoken's interface (`Tokenizer.as_tiktoken` calls this); `name`
        defaults to "fastbpe-" and the start of the tokenizer's fingerprint."""
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"tokenizer must be a fastbpe.Tokenizer, not {type(tokenizer).__name__}")
        if tokenizer._hf is not None:
            # tiktoken's interface is one regex and special tokens; a normalizer, several steps
            # or added tokens with flags have no place in it (encode_with_unstable would be wrong).
            raise ValueError(
                "this tokenizer was read from a Hugging Face tokenizer.json whose normalizer, pre-tokenizer or "
                "added tokens go beyond one regex and special tokens: tiktoken's interface cannot describe it; "
                "use the Tokenizer itself"
            )
        if name is None:
            name = f"fastbpe-{tokenizer.fingerprint()[:16]}"
        elif not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        enc = cls.__new__(cls)
        enc._init(tokenizer, name, patterns.resolve(tokenizer.pattern) or _WHOLE)
        return enc

    def _init(self, tok: Tokenizer, name: str, pat_str: str) -> None:
        self.name = name
        self._tokenizer = tok
        self._pat_str = pat_str
        self._special_tokens = dict(tok.special_token_ids)
        self._special_token_values = set(self._special_tokens.values())
        self.max_token_value = max(tok.vocab)

    @property
    def tokenizer(self) -> Tokenizer:
        """The fastbpe tokenizer behind this encoding."""
        return self._tokenizer

    def __repr__(self) -> str:
        return f"<Encoding {self.name!r}>"

    # ---- encoding ----------------------------------------------------------------------------

    def _allowed(self, texts: Sequence[str], allowed_special, disallowed_special, name_each: bool = False) -> frozenset[str]:
        """tiktoken's check: the special tokens to recognize, after refusing disallowed ones."""
        allowed, disallowed = self._tokenizer._special_policy(allowed_special, disallowed_special)
        if disallowed:
            refuse_disallowed(texts, disallowed, "enc", name_each)
        return allowed

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, special tokens treated as plain text."""
        try:
            return self._tokenizer.encode_ordinary(text)
        except UnicodeEncodeError:
            return self._tokenizer.encode_ordinary(_without_surrogates(text))

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = set(),  # noqa: B006 (tiktoken's default)
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Token ids of `text`. As in tiktoken, text equal to a special token raises ValueError
        unless the token is in `allowed_special` (then it becomes its id) or left out of
        `disallowed_special` (then it is plain text); `disallowed_special=()` allows plain text
        for all of them."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        allowed = self._allowed([text], allowed_special, disallowed_special)
        try:
            return self._tokenizer._encode_allowed(text, allowed)
        except UnicodeEncodeError:
            return self._tokenizer._encode_allowed(_without_surrogates(text), allowed)

    def encode_to_numpy(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = set(),  # noqa: B006
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> np.ndarray:
        """`encode(text)` as a uint32 numpy array."""
        if not isinstance(text, str):
            raise TypeError(f"encode_to_numpy() takes a str, not {type(text).__name__}")
        allowed = self._allowed([text], allowed_special, disallowed_special)
        try:
            ids = self._tokenizer.encode_to_numpy(text, allowed_special=allowed, disallowed_special=())
        except UnicodeEncodeError:
            ids = self._tokenizer.encode_to_numpy(_without_surrogates(text), allowed_special=allowed, disallowed_special=())
        return ids.astype(np.uint32, copy=False)

    def encode_ordinary_batch(self, text: list[str], *, num_threads: int = 8) -> list[list[int]]:
        """`encode_ordinary` of each text, in parallel."""
        texts = _check_texts(text, "encode_ordinary_batch")
        try:
            return self._tokenizer.encode_ordinary_batch(texts, _threads(num_threads))
        except UnicodeEncodeError:
            return self._tokenizer.encode_ordinary_batch(list(map(_without_surrogates, texts)), _threads(num_threads))

    def encode_batch(
        self,
        text: list[str],
        *,
        num_threads: int = 8,
        allowed_special: Literal["all"] | AbstractSet[str] = set(),  # noqa: B006
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[list[int]]:
        """`encode` of each text, in parallel (ValueError names the first text holding a
        disallowed special token)."""
        texts = _check_texts(text, "encode_batch")
        allowed = self._allowed(texts, allowed_special, disallowed_special, name_each=True)
        threads = _threads(num_threads)
        try:
            return self._tokenizer.encode_batch(texts, threads, allowed_special=allowed, disallowed_special=())
        except UnicodeEncodeError:
            texts = list(map(_without_surrogates, texts))
            return self._tokenizer.encode_batch(texts, threads, allowed_special=allowed, disallowed_special=())

    def encode_with_unstable(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = set(),  # noqa: B006
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> tuple[list[int], list[list[int]]]:
        """The ids of `text` that more text cannot change, and every way the ids may go on
        (each completion covers at least the bytes of the ids held back). tiktoken's algorithm,
        with its heuristics; the completions come in no particular order."""
        if not isinstance(text, str):
            raise TypeError(f"encode_with_unstable() takes a str, not {type(text).__name__}")
        allowed = self._allowed([text], allowed_special, disallowed_special)
        tokens, last = self._encode_with_last_piece(text, allowed)
        if last == 0:
            return tokens, []  # the text ends with a special token (or is empty)
        last = self._widen_unstable(tokens, last)
        unstable = self._tokenizer.decode_bytes(tokens[len(tokens) - last :])
        del tokens[len(tokens) - last :]
        return tokens, [list(c) for c in self._completions(unstable)]

    def _completions(self, unstable: bytes) -> set[tuple[int, ...]]:
        tokens, ranks = self._sorted_token_bytes, self._mergeable_ranks
        vocab = self._tokenizer.vocab
        out: set[tuple[int, ...]] = set()
        # A single token that starts with all of the unstable bytes.
        for t in _starting_with(tokens, unstable):
            out.add((ranks[t],))
        # A token that starts inside them: the bytes before it, then the token, encoded again.
        for i in range(1, len(unstable)):
            prefix = unstable[:i]
            for t in _starting_with(tokens, unstable[i:]):
                possible = prefix + t
                try:
                    ids = self.encode_ordinary(possible.decode("utf-8"))
                except UnicodeDecodeError:
                    ids = self._tokenizer._core.encode_piece_bytes(possible)
                seq, covered = [], 0
                for j in ids:
                    seq.append(j)
                    covered += len(vocab[j])
                    if covered >= len(unstable):
                        break
                out.add(tuple(seq))
        # Ending in whitespace, the last character may become a piece of its own.
        if len(unstable) > 1:
            last = _last_char(unstable)
            if last is not None and last[0] in _WHITE_SPACE and len(unstable) > last[1]:
                cut = len(unstable) - last[1]
                core = self._tokenizer._core
                out.add(tuple(core.encode_piece_bytes(unstable[:cut]) + core.encode_piece_bytes(unstable[cut:])))
        return out

    def _encode_with_last_piece(self, text: str, allowed: frozenset[str]) -> tuple[list[int], int]:
        """The ids of `text` and how many of them the last piece gave (0 when the text ends
        with a special token or is empty): tiktoken's `last_piece_token_len`."""
        tok = self._tokenizer
        try:
            ids = tok._encode_allowed(text, allowed)
        except UnicodeEncodeError:
            text = _without_surrogates(text)
            ids = tok._encode_allowed(text, allowed)
        stretch = special_regex(allowed).split(text)[-1] if allowed else text
        if not stretch:
            return ids, 0
        if tok.pattern is None:
            piece = stretch
        elif tok._custom is not None:
            piece = patterns.pieces(tok._custom.rx, stretch)[-1]
        else:
            piece = _core.split(tok.pattern, stretch)[-1]
        return ids, len(tok._core.encode_piece_bytes(piece.encode("utf-8")))

    def _widen_unstable(self, tokens: list[int], last: int) -> int:
        """tiktoken's fix for regex splits that more text can undo: a last piece of whitespace
        takes the whitespace tokens before it too."""

        def all_space(i: int) -> bool:
            t = self._ordinary_bytes(i)
            return t is not None and all(b in _SPACE_BYTES for b in t)

        if last > 0 and all_space(tokens[len(tokens) - last]):
            while last < len(tokens) and all_space(tokens[len(tokens) - last - 1]):
                last += 1
        return last

    def _ordinary_bytes(self, i: int) -> bytes | None:
        return None if i in self._tokenizer._special_only else self._tokenizer.vocab.get(i)

    def encode_single_token(self, text_or_bytes: str | bytes) -> int:
        """The id of the one token whose text or bytes this is (special tokens included);
        KeyError if there is none."""
        if isinstance(text_or_bytes, str):
            text_or_bytes = text_or_bytes.encode("utf-8")
        i = self._mergeable_ranks.get(bytes(text_or_bytes))
        if i is not None:
            return i
        try:
            i = self._special_tokens.get(bytes(text_or_bytes).decode("utf-8"))
        except UnicodeDecodeError:
            i = None
        if i is None:
            raise KeyError(bytes(text_or_bytes))
        return i

    # ---- decoding ----------------------------------------------------------------------------

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        """The bytes of the tokens (UnknownTokenError, a KeyError, for an id not in the vocabulary)."""
        return self._tokenizer.decode_bytes(tokens)

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        """The text of the tokens; bytes that are not UTF-8 are handled as `errors` says
        ("replace": U+FFFD; "strict": UnicodeDecodeError)."""
        return self._tokenizer.decode_bytes(tokens).decode("utf-8", errors=errors)

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of one token, special tokens included; KeyError if there is none."""
        i = operator.index(token)
        t = self._tokenizer._core.token_bytes(i) if 0 <= i < ID_LIMIT else None
        if t is None:
            raise KeyError(str(token))
        return t

    def decode_tokens_bytes(self, tokens: Sequence[int]) -> list[bytes]:
        """The bytes of each token."""
        return [self.decode_single_token_bytes(t) for t in tokens]

    def decode_with_offsets(self, tokens: Sequence[int]) -> tuple[str, list[int]]:
        """The text of the tokens and, for each token, the index in it of the first character
        that holds bytes of the token. Raises UnicodeDecodeError if the bytes are not UTF-8."""
        parts = self.decode_tokens_bytes(tokens)
        offsets = []
        chars = 0  # characters begun so far: one per byte that is not a continuation byte
        for t in parts:
            starts_inside = 0x80 <= t[0] < 0xC0
            offsets.append(max(0, chars - starts_inside))
            chars += sum(not 0x80 <= b < 0xC0 for b in t)
        return b"".join(parts).decode("utf-8", errors="strict"), offsets

    def decode_batch(
        self, batch: Sequence[Sequence[int]], *, errors: str = "replace", num_threads: int = 8
    ) -> list[str]:
        """`decode` of each list of ids."""
        return [self.decode(tokens, errors=errors) for tokens in batch]

    def decode_bytes_batch(self, batch: Sequence[Sequence[int]], *, num_threads: int = 8) -> list[bytes]:
        """`decode_bytes` of each list of ids."""
        return [self.decode_bytes(tokens) for tokens in batch]

    # ---- the vocabulary ----------------------------------------------------------------------

    def token_byte_values(self) -> list[bytes]:
        """The bytes of every ordinary token, sorted."""
        return list(self._sorted_token_bytes)

    @property
    def eot_token(self) -> int:
        return self._special_tokens["<|endoftext|>"]

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self._special_tokens)

    def is_special_token(self, token: int) -> bool:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
            raise TypeError(f"is_special_token() takes an int id, not {type(token).__name__}")
        return int(token) in self._special_token_values

    @property
    def n_vocab(self) -> int:
        """One more than the largest id (tiktoken's name; `max_token_value + 1`)."""
        return self.max_token_value + 1

    @cached_property
    def _mergeable_ranks(self) -> dict[bytes, int]:
        """Ordinary token bytes -> id (tiktoken's ranks; for a tokenizer built from merges, its
        ids, which `Tokenizer.to_tiktoken` writes)."""
        special = self._tokenizer._special_only
        return {t: i for i, t in self._tokenizer.vocab.items() if i not in special}

    @cached_property
    def _sorted_token_bytes(self) -> list[bytes]:
        return sorted(self._mergeable_ranks)

    # ---- tiktoken's private helpers that code uses -------------------------------------------

    def _encode_single_piece(self, text_or_bytes: str | bytes) -> list[int]:
        """The ids of one piece, without pre-tokenization or special tokens."""
        if isinstance(text_or_bytes, str):
            text_or_bytes = text_or_bytes.encode("utf-8")
        return self._tokenizer._core.encode_piece_bytes(bytes(text_or_bytes))

    def _encode_only_native_bpe(self, text: str) -> list[int]:
        """`encode_ordinary` with the pattern applied by Python's `regex`."""
        out: list[int] = []
        for piece in patterns.pieces(regex.compile(self._pat_str), text):
            out.extend(self._encode_single_piece(piece))
        return out

    def _encode_bytes(self, text: bytes) -> list[int]:
        """The ids of bytes that need not be UTF-8, as tiktoken gives them: the valid start is
        encoded as text, then its last piece and everything from the first invalid byte on
        are encoded as one piece."""
        data = bytes(text)
        try:
            return self.encode_ordinary(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            valid = e.start
        tokens, last = self._encode_with_last_piece(data[:valid].decode("utf-8"), frozenset())
        last = self._widen_unstable(tokens, last)
        if tokens and last > 0:
            rest = self._tokenizer.decode_bytes(tokens[len(tokens) - last :]) + data[valid:]
            del tokens[len(tokens) - last :]
        else:
            rest = data[valid:]
        tokens.extend(self._tokenizer._core.encode_piece_bytes(rest))
        return tokens

    # ---- pickling ----------------------------------------------------------------------------

    def __getstate__(self) -> object:
        # The Tokenizer pickles as itself: its state is checked when it is unpickled.
        return {"name": self.name, "pat_str": self._pat_str, "tokenizer": self._tokenizer}

    def __setstate__(self, value: object) -> None:
        tok = value.get("tokenizer") if isinstance(value, dict) else None
        if not isinstance(tok, Tokenizer):
            raise ValueError("pickled Encoding: not the state of a fastbpe tiktoken_compat.Encoding (no Tokenizer)")
        self._init(tok, value["name"], value["pat_str"])


def _ranks_by_id(mergeable_ranks) -> dict[int, bytes]:
    """tiktoken's `mergeable_ranks` (token bytes -> rank) as rank -> token bytes, checked."""
    if not isinstance(mergeable_ranks, dict):
        raise TypeError(f"mergeable_ranks must be a dict of token bytes -> rank, not {type(mergeable_ranks).__name__}")
    vocab: dict[int, bytes] = {}
    for token, rank in mergeable_ranks.items():
        if not isinstance(token, (bytes, bytearray)):
            raise TypeError(f"mergeable_ranks has the key {token!r}, not bytes: tokens are bytes")
        if not token:
            raise ValueError("mergeable_ranks has an empty token: every token has at least one byte")
        rank = check_id(rank, f"mergeable_ranks[{bytes(token)!r}]")
        if rank in vocab:
            raise ValueError(f"mergeable_ranks gives rank {rank} to both {vocab[rank]!r} and {bytes(token)!r}; each rank is one token's")
        vocab[rank] = bytes(token)
    return vocab


def _starting_with(tokens: list[bytes], prefix: bytes):
    """The tokens of the sorted list `tokens` that start with `prefix`."""
    k = bisect.bisect_left(tokens, prefix)
    while k < len(tokens) and tokens[k].startswith(prefix):
        yield tokens[k]
        k += 1
