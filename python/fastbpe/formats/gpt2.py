"""GPT-2's tokenizer files and its byte alphabet.

`bytes_to_unicode` is GPT-2's reversible map from bytes to printable characters: token bytes
are written as strings in it by GPT-2's `vocab.json` and `merges.txt`, by Hugging Face's
`tokenizer.json` and by fastbpe's own file (`token_to_str`, `str_to_token`). `read` builds a
Tokenizer from `vocab.json` (token string -> id) and `merges.txt` (one "left right" pair per
line, a `#version` line allowed first), every malformed entry a ValueError naming the file and
the line or token.
"""

from __future__ import annotations

import os
from functools import lru_cache

from fastbpe.formats._json import json_type, read_json
from fastbpe.special import check_special_tokens
from fastbpe.vocab import ID_LIMIT, MergeError


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


def read(cls, vocab_filepath: str | os.PathLike, merges_filepath: str | os.PathLike, special_tokens):
    """A `cls` (fastbpe Tokenizer) from GPT-2's files, with GPT-2's pattern; see
    `Tokenizer.from_files`."""
    specials = check_special_tokens(special_tokens)
    vocab_filepath, merges_filepath = os.fspath(vocab_filepath), os.fspath(merges_filepath)
    vocab = read_vocab_json(vocab_filepath)
    merges, lines = read_merges_txt(merges_filepath)
    try:
        return cls(vocab, merges, specials, pattern="gpt2")
    except MergeError as e:
        raise ValueError(f"{merges_filepath}:{lines[e.index]}: {e} of {vocab_filepath}") from None
    except ValueError as e:
        raise ValueError(f"{vocab_filepath}: {e}") from None


def read_vocab_json(path: str) -> dict[int, bytes]:
    """GPT-2's `vocab.json`: token string -> id."""
    raw = read_json(path, "a vocab.json of token -> id")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of token -> id, not an {json_type(raw)}")
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


def read_merges_txt(path: str) -> tuple[list[tuple[bytes, bytes]], list[int]]:
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

