"""`Tokenizer`: a byte-level BPE vocabulary, its merges, special tokens and pattern."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property, lru_cache

import numpy as np
import regex

from fastbpe import _core, _progress, _stream, patterns
from fastbpe._io import temporary_path, write_atomic

UnknownTokenError = _core.UnknownTokenError

FORMAT = "fastbpe.tokenizer"
VERSION = 1


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


class Tokenizer:
    """A byte-level BPE tokenizer.

    `vocab` maps id -> token bytes, `merges` lists `(left, right)` byte pairs in priority order,
    `special_tokens` are strings that always map to their own id, and `pattern` is the
    pre-tokenization pattern (a name from `fastbpe.patterns.NAMED`, a regex, or None).
    """

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Iterable[str] | None = None,
        pattern: str | None = "gpt2",
    ):
        self.vocab: dict[int, bytes] = {int(i): bytes(t) for i, t in vocab.items()}
        self._merges: list[tuple[bytes, bytes]] | None = [(bytes(a), bytes(b)) for a, b in merges]
        self.pattern = pattern
        specials = list(special_tokens or [])
        if len(set(specials)) != len(specials):
            raise ValueError(f"special_tokens has duplicates: {specials}")
        if any(not isinstance(s, str) or not s for s in specials):
            raise ValueError("special tokens must be non-empty strings")
        # Special tokens take the id the vocab gives their bytes (the last such id, since
        # special tokens come after the merges); missing ones are appended.
        by_bytes = {t: i for i, t in sorted(self.vocab.items())}
        self.special_token_ids: dict[str, int] = {}
        for s in specials:
            b = s.encode("utf-8")
            if b not in by_bytes:
                new_id = max(self.vocab, default=-1) + 1
                self.vocab[new_id] = b
                by_bytes[b] = new_id
            self.special_token_ids[s] = by_bytes[b]
        self.special_tokens: list[str] = specials
        known = set(by_bytes)
        for n, (a, b) in enumerate(self._merges):
            if a not in known or b not in known:
                missing = a if a not in known else b
                raise ValueError(f"merge {n} {(a, b)!r}: part {missing!r} is not in the vocabulary")

        # "merges": the pairs are the merges (CS336, GPT-2 files); "ranks": tiktoken's rule,
        # any two parts whose concatenation is a token merge, by that token's rank.
        self._rule = "merges"
        self._fingerprint: str | None = None

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # ---- encoding -------------------------------------------------------------------------

    @cached_property
    def _core(self) -> _core.CoreEncoder:
        name = self.pattern if self.pattern in patterns.BUILTIN else "whole"
        specials = list(self.special_token_ids.items())
        special_ids = set(self.special_token_ids.values())
        vocab = [(i, t) for i, t in self.vocab.items() if i not in special_ids]
        if self._rule == "ranks":
            return _core.CoreEncoder.from_ranks([(t, i) for i, t in vocab], specials, name)
        return _core.CoreEncoder.from_merges(vocab, self.merges, specials, name)

    @cached_property
    def _custom(self):
        """For patterns without a Rust splitter: (piece regex, special-token regex) in Python."""
        if self.pattern is None or self.pattern in patterns.BUILTIN:
            return None
        rx = regex.compile(patterns.resolve(self.pattern))
        ordered = sorted(self.special_tokens, key=len, reverse=True)
        special_rx = regex.compile("(" + "|".join(regex.escape(s) for s in ordered) + ")") if ordered else None
        return rx, special_rx

    def _encode_custom(self, text: str, with_specials: bool) -> list[int]:
        rx, special_rx = self._custom
        parts = special_rx.split(text) if (with_specials and special_rx is not None) else [text]
        out: list[int] = []
        for i, part in enumerate(parts):
            if i % 2 == 1:
                out.append(self.special_token_ids[part])
            elif part:
                out.extend(self._core.encode_pieces(rx.findall(part)))
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special tokens in it become their ids (longest match first)."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        if self._custom is not None:
            return self._encode_custom(text, True)
        return self._core.encode(text)

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, special tokens treated as plain text."""
        if not isinstance(text, str):
            raise TypeError(f"encode_ordinary() takes a str, not {type(text).__name__}")
        if self._custom is not None:
            return self._encode_custom(text, False)
        return self._core.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """`encode` of each text, in parallel on `num_threads` threads (default: all cores).

        The calling thread turns finished results into lists while the others go on encoding.
        Like `encode`'s, the lists are left out of the cyclic garbage collector: they hold only
        ints, so collections need not walk them (a list made part of a cycle later is freed
        only once the cycle is broken)."""
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"encode_batch() takes str texts, not {type(t).__name__}")
        if self._custom is not None:
            return [self._encode_custom(t, True) for t in texts]
        return self._core.encode_batch(texts, _threads(num_threads))

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned dtype that holds every id: uint16 or uint32."""
        return np.dtype(np.uint16) if max(self.vocab) < 1 << 16 else np.dtype(np.uint32)

    def encode_to_numpy(self, text: str) -> np.ndarray:
        """`encode(text)` as a numpy array (uint16 when every id fits, else uint32)."""
        if not isinstance(text, str):
            raise TypeError(f"encode_to_numpy() takes a str, not {type(text).__name__}")
        dtype = self.dtype
        if self._custom is not None:
            return np.asarray(self._encode_custom(text, True), dtype=dtype)
        buf = self._core.encode_to_buffer(text, dtype.itemsize, True)
        return np.frombuffer(buf, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Lazily yield the ids of the concatenated strings, as `encode("".join(iterable))` would,
        with memory that does not grow with the input (pieces and special tokens may straddle
        two strings: text is held back until a place where cutting cannot change the ids).

        What is held is bounded by the longest piece: with `pattern=None` that is the text between
        two special tokens, held whole; with a custom regex see `fastbpe._stream.CustomStream`
        for the patterns it is exact for."""
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

    def encode_file(
        self,
        path: str | os.PathLike,
        out_path: str | os.PathLike,
        *,
        dtype=None,
        num_threads: int | None = None,
        progress: bool | None = None,
        metadata: dict | None = None,
    ) -> np.ndarray:
        """Encode a UTF-8 file into a flat token array on disk; returns it as an np.memmap.

        The file is cut at safe places (after special tokens, between lines), encoded in
        parallel, and streamed to disk in order with bounded memory. The data is written under a
        temporary name and renamed when complete; `<out_path>.json` records the dtype, the number
        of tokens and the tokenizer (with any `metadata` given).
        """
        path, out_path = os.fspath(path), os.fspath(out_path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such file: '{path}'")
        if os.path.isdir(path):
            raise IsADirectoryError(f"'{path}' is a directory; give a text file")
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        if dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
            raise ValueError(f"dtype must be uint16 or uint32, not {dtype}")
        if max(self.vocab) >= 1 << (8 * dtype.itemsize):
            raise ValueError(f"dtype {dtype} cannot hold id {max(self.vocab)}: use uint32")
        tmp = temporary_path(out_path, ".bin")
        bar = _progress.Bar(f"encoding {os.path.basename(path)}", os.path.getsize(path), "MB", 1e6) if _progress.wanted(progress) else None
        try:
            if self._custom is None:
                n = self._core.encode_file(path, tmp, dtype.itemsize, _threads(num_threads), bar)
            else:
                n = self._encode_file_python(path, tmp, dtype, bar)
            if bar:
                bar.close()
            meta = {
                "format": "fastbpe.tokens",
                "version": 1,
                "dtype": dtype.name,
                "byteorder": "little",
                "num_tokens": n,
                "vocab_size": self.vocab_size,
                "source": os.path.abspath(path),
                "tokenizer_sha256": self.fingerprint(),
                **(metadata or {}),
            }
            write_atomic(out_path + ".json", json.dumps(meta, indent=1).encode())
            os.replace(tmp, out_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        if n == 0:
            return np.zeros(0, dtype=dtype)  # an empty file cannot be memory-mapped
        return np.memmap(out_path, dtype=dtype.newbyteorder("<"), mode="r")

    def _encode_file_python(self, path: str, tmp: str, dtype: np.dtype, bar) -> int:
        """Custom patterns: the file read in blocks, its pieces found by `CustomStream`."""
        n = 0
        stream = _stream.CustomStream(self._custom[0], self.special_tokens)
        little = dtype.newbyteorder("<")
        with open(tmp, "wb") as out:

            def write(stretches) -> int:
                written = 0
                for stretch in stretches:  # a few ten thousand characters each
                    ids = self._encode_stretches([stretch])
                    out.write(np.asarray(ids, dtype=little).tobytes())
                    written += len(ids)
                return written

            for text in _stream.read_text(path, 1 << 20, bar):
                n += write(stream.feed(text))
            n += write(stream.finish())
        return n

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of the tokens, concatenated."""
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        elif not isinstance(ids, (list, tuple)):
            ids = list(ids)
        try:
            return self._core.decode_bytes(ids)
        except (OverflowError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or not 0 <= i < 1 << 32)
            raise UnknownTokenError(f"token id {bad!r} is not in the vocabulary") from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of the tokens; invalid UTF-8 becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def fingerprint(self) -> str:
        """SHA-256 over what decides the ids (rule, pattern, special tokens, vocabulary and, under
        the merge rule, the merges): the tokenizer's identity, recorded beside token files."""
        if self._fingerprint is None:
            import hashlib

            h = hashlib.sha256()
            h.update(json.dumps([self._rule, self.pattern, sorted(self.special_token_ids.items())]).encode())
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
        )

    # ---- other formats -----------------------------------------------------------------------

    @classmethod
    def from_files(
        cls,
        vocab_filepath: str | os.PathLike,
        merges_filepath: str | os.PathLike,
        special_tokens: Iterable[str] | None = None,
    ) -> Tokenizer:
        """GPT-2's `vocab.json` (token strings in its byte-to-unicode alphabet -> id) and
        `merges.txt` (one "left right" pair per line, a `#version` line allowed first)."""
        vocab_filepath, merges_filepath = os.fspath(vocab_filepath), os.fspath(merges_filepath)
        with open(vocab_filepath, encoding="utf-8") as f:
            try:
                raw = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{vocab_filepath}: not JSON ({e})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{vocab_filepath}: expected a JSON object of token -> id")
        vocab: dict[int, bytes] = {}
        for text, i in raw.items():
            if not isinstance(i, int):
                raise ValueError(f"{vocab_filepath}: token {text!r} has id {i!r}, not an int")
            vocab[i] = str_to_token(text, f"{vocab_filepath}: token {text!r}")
        merges: list[tuple[bytes, bytes]] = []
        with open(merges_filepath, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if (lineno == 1 and line.startswith("#version")) or not line.strip():
                    continue
                parts = line.split(" ")
                if len(parts) != 2 or not parts[0] or not parts[1]:
                    raise ValueError(f"{merges_filepath}:{lineno}: expected two tokens separated by one space, got {line!r}")
                where = f"{merges_filepath}:{lineno}"
                merges.append((str_to_token(parts[0], where), str_to_token(parts[1], where)))
        return cls(vocab, merges, special_tokens, pattern="gpt2")

    @classmethod
    def from_tiktoken(
        cls,
        path: str | os.PathLike,
        pattern: str | None,
        special_tokens: Mapping[str, int] | None = None,
    ) -> Tokenizer:
        """A `.tiktoken` rank file (`base64(token) rank` per line), with tiktoken's rule: any two
        adjacent parts whose concatenation is a token merge, the lowest rank first."""
        path = os.fspath(path)
        vocab: dict[int, bytes] = {}
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    if len(parts) != 2:
                        raise ValueError
                    token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: expected 'base64-token rank', got {line[:80]!r}") from None
                vocab[rank] = token
        specials = dict(special_tokens or {})
        for s, i in specials.items():
            if i in vocab:
                raise ValueError(f"special token {s!r} has id {i}, which {path} already gives to {vocab[i]!r}")
            vocab[i] = s.encode("utf-8")
        tok = cls.__new__(cls)
        tok.vocab, tok.pattern, tok._rule = vocab, pattern, "ranks"
        tok.special_tokens, tok.special_token_ids = list(specials), specials
        tok._merges = None  # derived from the ranks when first asked for
        tok._fingerprint = None
        return tok

    @property
    def merges(self) -> list[tuple[bytes, bytes]]:
        if self._merges is None:
            self._merges = _merges_from_ranks(self.vocab, set(self.special_token_ids.values()))
        return self._merges

    @merges.setter
    def merges(self, value: list[tuple[bytes, bytes]]) -> None:
        self._merges = value

    def to_tiktoken(self, path: str | os.PathLike) -> None:
        """Write a `.tiktoken` rank file (special tokens are not part of that format)."""
        special_ids = set(self.special_token_ids.values())
        lines = [
            base64.b64encode(t) + b" " + str(i).encode() + b"\n"
            for i, t in sorted(self.vocab.items())
            if i not in special_ids
        ]
        write_atomic(os.fspath(path), b"".join(lines))

    def to_huggingface(self, path: str | os.PathLike) -> None:
        """Write a `tokenizer.json` that `tokenizers.Tokenizer.from_file` loads, with the same ids."""
        special_ids = set(self.special_token_ids.values())
        if self.pattern == "gpt2":
            pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        elif self.pattern is None:
            pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
        else:
            pre = {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": patterns.resolve(self.pattern)}, "behavior": "Isolated", "invert": False},
                    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
                ],
            }
        data = {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
                for s, i in self.special_token_ids.items()
            ],
            "normalizer": None,
            "pre_tokenizer": pre,
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": self._rule == "ranks",
                "vocab": {token_to_str(t): i for i, t in sorted(self.vocab.items()) if i not in special_ids},
                "merges": [[token_to_str(a), token_to_str(b)] for a, b in self.merges],
            },
        }
        write_atomic(os.fspath(path), json.dumps(data, ensure_ascii=False).encode("utf-8"))

    # ---- files -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "pattern": self.pattern,
            "special_tokens": self.special_token_ids,
            # Token bytes in GPT-2's byte-to-unicode alphabet: readable and lossless.
            "vocab": {str(i): token_to_str(t) for i, t in sorted(self.vocab.items())},
            "merges": [[token_to_str(a), token_to_str(b)] for a, b in self.merges],
            "rule": self._rule,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically: a complete file or none)."""
        write_atomic(os.fspath(path), json.dumps(self.to_dict(), ensure_ascii=False, indent=1).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a file written by `save`."""
        path = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not a fastbpe tokenizer file (bad JSON: {e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a fastbpe tokenizer file (no \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise ValueError(
                f"{path} has format version {data.get('version')!r}; this fastbpe reads version {VERSION}: "
                "upgrade fastbpe"
            )
        vocab = {int(i): str_to_token(t, f"{path} vocab {i}") for i, t in data["vocab"].items()}
        merges = [
            (str_to_token(a, f"{path} merge {n}"), str_to_token(b, f"{path} merge {n}"))
            for n, (a, b) in enumerate(data["merges"])
        ]
        specials = data["special_tokens"]
        tok = cls(vocab, merges, list(specials), pattern=data["pattern"])
        tok._rule = data.get("rule", "merges")
        if tok.special_token_ids != specials:
            raise ValueError(f"{path}: special token ids {specials} do not match the vocabulary")
        return tok


def _threads(num_threads: int | None) -> int:
    if num_threads is None:
        return os.cpu_count() or 1
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int or None, not {num_threads!r}")
    return num_threads


def _merges_from_ranks(vocab: dict[int, bytes], skip: set[int]) -> list[tuple[bytes, bytes]]:
    """The merge that builds each token under tiktoken's rule: BPE on the token's bytes with only
    lower ranks allowed ends in exactly two parts."""
    ranks = {t: i for i, t in vocab.items() if i not in skip}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges
