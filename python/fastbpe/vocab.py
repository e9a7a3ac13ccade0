"""The parts of a byte-level BPE tokenizer and the checks that make them fit together.

A vocabulary maps ids (ints in [0, 2**32)) to token bytes; merges are `(left, right)` byte pairs
in priority order; special tokens get ids here (an existing token's, or new ones after the
largest). `check_vocab` and `check_merges` check arguments as given (TypeError for wrong types,
ValueError for wrong values); `check_ordinary_tokens` checks that the parts fit together (every
byte a token, each merge's parts and result tokens, no two ordinary ids with the same bytes).
`Tokenizer` and every file reader in `fastbpe.formats` build their parts with these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

# Ids are 32-bit: they must be below this.
ID_LIMIT = 1 << 32

BytesLike = (bytes, bytearray, memoryview)


def check_id(i, what: str) -> int:
    """`i` as an int id in [0, 2**32); `what` names it in errors."""
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"{what}: id {i!r} is not an int")
    i = int(i)
    if not 0 <= i < ID_LIMIT:
        raise ValueError(f"{what}: id {i} is out of range; ids are in [0, 2**32)")
    return i


def check_vocab(vocab: Mapping[int, bytes]) -> dict[int, bytes]:
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
        i = check_id(i, "vocab")
        if not isinstance(t, BytesLike):
            raise TypeError(f"vocab[{i}] is {type(t).__name__} {t!r}, not bytes: give each token's bytes, e.g. 'x'.encode()")
        if len(t) == 0:
            raise ValueError(f"vocab[{i}] is empty: every token has at least one byte")
        out[i] = bytes(t)
    return out


def check_merges(merges: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
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


class MergeError(ValueError):
    """A merge that does not fit the vocabulary; `index` is its position in the merges."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def special_ids(vocab: dict[int, bytes], specials: list[str]) -> tuple[dict[str, int], set[int]]:
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


def special_only_ids(
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


def check_ordinary_tokens(vocab: dict[int, bytes], merges, special_only) -> None:
    """Ordinary tokens (the ids not in `special_only`) are distinct, include the 256 bytes, and
    hold each merge's parts and result (what the encoder needs; checked so that errors come at
    construction). A merge that does not fit raises `MergeError`."""
    ordinary = dict(vocab)
    for i in special_only:
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
    merges = merges or ()
    if all(a in tokens and b in tokens and a + b in tokens for a, b in merges):
        return
    for n, (a, b) in enumerate(merges):
        for part in (a, b):
            if part not in tokens:
                raise MergeError(n, f"merge {n} {(a, b)!r}: part {part!r} is not in the vocabulary")
        if a + b not in tokens:
            raise MergeError(n, f"merge {n} {(a, b)!r}: its result {a + b!r} is not in the vocabulary")
