"""`Tokenizer`: a byte-level BPE vocabulary, its merges, special tokens and pattern."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

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
        self.merges: list[tuple[bytes, bytes]] = [(bytes(a), bytes(b)) for a, b in merges]
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
        for n, (a, b) in enumerate(self.merges):
            if a not in known or b not in known:
                missing = a if a not in known else b
                raise ValueError(f"merge {n} {(a, b)!r}: part {missing!r} is not in the vocabulary")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

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
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically: a complete file or none)."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, ensure_ascii=False, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

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
        if tok.special_token_ids != specials:
            raise ValueError(f"{path}: special token ids {specials} do not match the vocabulary")
        return tok
