"""tiktoken's `.tiktoken` rank files, and the merges that tiktoken's rule implies.

A rank file holds one `base64(token) rank` pair per line. A tokenizer read from one keeps
tiktoken's rule: any two adjacent parts whose concatenation is a token merge, the lowest rank
first (`Tokenizer`'s rule "ranks"). `from_ranks` builds such a tokenizer from checked parts (also
for `tiktoken_compat.Encoding`), `read` from a file, `write` writes one; `merges_from_ranks` gives
the merges that build each token under the rule (for `Tokenizer.merges` and `to_huggingface`).
"""

from __future__ import annotations

import base64
import os

from fastbpe import _core, patterns
from fastbpe._io import write_atomic
from fastbpe.special import check_special_ids
from fastbpe.vocab import ID_LIMIT


def read(cls, path: str | os.PathLike, pattern: str | None, special_tokens):
    """A `cls` (fastbpe Tokenizer) from a rank file; see `Tokenizer.from_tiktoken`."""
    path = os.fspath(path)
    pattern = patterns.canonical(pattern)
    specials = check_special_ids(special_tokens)
    return from_ranks(cls, read_ranks(path), pattern, specials, path)


def from_ranks(cls, vocab: dict[int, bytes], pattern: str | None, specials: dict[str, int], where: str):
    """A `cls` (fastbpe Tokenizer) under tiktoken's rule from checked parts: rank -> token bytes,
    a canonical pattern, special tokens with their ids (`where` names the ranks' source in
    errors). Special tokens may share an id among themselves (the id decodes as the first of
    them), never with a ranked token."""
    ranked = set(vocab)
    for s, i in specials.items():
        if i in ranked:
            raise ValueError(
                f"special token {s!r} has id {i}, which {where} already gives to {vocab[i]!r}: "
                "give it an id the ranks do not use"
            )
        vocab.setdefault(i, s.encode("utf-8"))  # the first special token with the id names it
    try:
        return cls._from_parts(vocab, None, specials, pattern, "ranks", set(specials.values()))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def write(tok, path: str | os.PathLike) -> None:
    """Write `tok`'s ranks as a rank file (special tokens are not part of that format, except
    those that are ordinary tokens too)."""
    lines = [
        base64.b64encode(t) + b" " + str(i).encode() + b"\n"
        for i, t in sorted(tok.vocab.items())
        if i not in tok._special_only
    ]
    write_atomic(os.fspath(path), b"".join(lines))


def read_ranks(path: str) -> dict[int, bytes]:
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


def merges_from_ranks(vocab: dict[int, bytes], skip: set[int]) -> list[tuple[bytes, bytes]]:
    """The merge that builds each token under tiktoken's rule, in rank order: the Rust core's
    derivation of `fastbpe.reference.merges_from_ranks` (which defines it). Only the ranks' order
    reaches the core."""
    ranks = {t: i for i, t in vocab.items() if i not in skip}  # a token given twice: the last id
    return _core.merges_from_ranks(sorted(ranks, key=ranks.__getitem__))
