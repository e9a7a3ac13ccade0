"""Byte-level BPE in plain Python: the readable definition the Rust core is tested against.

Nothing here is fast; everything here is meant to be obviously right.

    vocab, merges = reference.train_bpe("corpus.txt", 1000, ["<|endoftext|>"])
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterable

import regex

from fastbpe import patterns


def split_on_special_tokens(text: str, special_tokens: Iterable[str]) -> list[str]:
    """The stretches of `text` between special tokens (longest special token first)."""
    specials = sorted((s for s in special_tokens if s), key=len, reverse=True)
    if not specials:
        return [text]
    return regex.split("|".join(regex.escape(s) for s in specials), text)


def pretokenize(text: str, pattern: str | None = "gpt2") -> list[str]:
    """The pieces of `text` under `pattern` (a name, a regex, or None for the whole text): the
    text cut at both ends of every non-empty match, so the matches and the text between them
    are pieces and no text is lost (for the named patterns, whose matches cover all text, this
    is `regex.findall`)."""
    rx = patterns.resolve(pattern)
    if rx is None:
        return [text] if text else []
    cuts = {0, len(text)}
    for m in regex.finditer(rx, text):
        if m.end() > m.start():
            cuts.update(m.span())
    cuts = sorted(cuts)
    return [text[a:b] for a, b in zip(cuts, cuts[1:])]


def count_pieces(texts: Iterable[str], special_tokens: Iterable[str], pattern: str | None) -> Counter:
    """How often each piece (as UTF-8 bytes) occurs."""
    specials = list(special_tokens)
    counts: Counter = Counter()
    for text in texts:
        for segment in split_on_special_tokens(text, specials):
            for piece in pretokenize(segment, pattern):
                counts[piece.encode("utf-8")] += 1
    return counts


def merge_word(word: tuple[bytes, ...], pair: tuple[bytes, bytes]) -> tuple[bytes, ...]:
    """Replace each occurrence of `pair` in `word` by its concatenation, left to right."""
    out = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def learn_merges(piece_counts: dict[bytes, int], num_merges: int) -> list[tuple[bytes, bytes]]:
    """The BPE merge loop, recounting every pair at every step."""
    words: Counter = Counter()
    for piece, count in piece_counts.items():
        words[tuple(bytes([b]) for b in piece)] += count
    merges: list[tuple[bytes, bytes]] = []
    for _ in range(num_merges):
        pair_counts: Counter = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            break
        # Highest count; ties go to the lexicographically greatest (left bytes, right bytes).
        best = max(pair_counts, key=lambda p: (pair_counts[p], p))
        merges.append(best)
        merged: Counter = Counter()
        for word, count in words.items():
            merged[merge_word(word, best)] += count
        words = merged
    return merges


def build_vocab(merges: list[tuple[bytes, bytes]], special_tokens: Iterable[str]) -> dict[int, bytes]:
    """Ids 0-255: single bytes; then one id per merge; then the special tokens."""
    vocab = {i: bytes([i]) for i in range(256)}
    for left, right in merges:
        vocab[len(vocab)] = left + right
    for s in special_tokens:
        vocab[len(vocab)] = s.encode("utf-8")
    return vocab


def train_bpe_from_texts(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: Iterable[str] = ("<|endoftext|>",),
    pattern: str | None = "gpt2",
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train on texts (each text on its own: pieces never span two texts)."""
    specials = list(special_tokens)
    num_merges = vocab_size - 256 - len(specials)
    if num_merges < 0:
        raise ValueError(f"vocab_size must be at least {256 + len(specials)}")
    merges = learn_merges(count_pieces(texts, specials, pattern), num_merges)
    if len(merges) < num_merges:
        warnings.warn(f"no pair left to merge after {len(merges)} merges", stacklevel=2)
    return build_vocab(merges, specials), merges


def train_bpe(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: Iterable[str] = ("<|endoftext|>",),
    pattern: str | None = "gpt2",
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train on one UTF-8 file; the CS336 assignment-1 signature."""
    with open(input_path, encoding="utf-8", newline="") as f:
        text = f.read()
    return train_bpe_from_texts([text], vocab_size, special_tokens, pattern)


# ---- encoding ------------------------------------------------------------------------------


def split_keeping_special_tokens(text: str, special_tokens: Iterable[str]) -> list[tuple[str, bool]]:
    """`text` cut into (stretch, is_special) parts; the longest special token wins at a position."""
    specials = sorted((s for s in special_tokens if s), key=len, reverse=True)
    if not specials:
        return [(text, False)]
    parts = regex.split("(" + "|".join(regex.escape(s) for s in specials) + ")", text)
    # regex.split with a group alternates: text, special, text, special, ..., text
    return [(p, i % 2 == 1) for i, p in enumerate(parts)]


def bpe(piece: bytes, merge_ranks: dict[tuple[bytes, bytes], int]) -> list[bytes]:
    """Start from single bytes; merge the adjacent pair of lowest rank (leftmost among equals)
    until no pair in `merge_ranks` is left."""
    parts = [bytes([b]) for b in piece]
    while len(parts) > 1:
        ranked = [(merge_ranks[pair], i) for i, pair in enumerate(zip(parts, parts[1:])) if pair in merge_ranks]
        if not ranked:
            break
        _, i = min(ranked)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def encode(
    text: str,
    vocab: dict[int, bytes],
    merges: list[tuple[bytes, bytes]],
    special_tokens: Iterable[str] = (),
    pattern: str | None = "gpt2",
) -> list[int]:
    """Token ids of `text`: special tokens become their ids, everything else goes through BPE."""
    ids_of = {}
    for i, t in sorted(vocab.items(), reverse=True):
        ids_of[t] = i  # the lowest id wins when two ids share bytes
    merge_ranks: dict[tuple[bytes, bytes], int] = {}
    for rank, pair in enumerate(merges):
        merge_ranks.setdefault(pair, rank)
    out: list[int] = []
    for stretch, is_special in split_keeping_special_tokens(text, special_tokens):
        if is_special:
            out.append(max(i for i, t in vocab.items() if t == stretch.encode("utf-8")))
            continue
        for piece in pretokenize(stretch, pattern):
            out.extend(ids_of[t] for t in bpe(piece.encode("utf-8"), merge_ranks))
    return out


def decode(ids: Iterable[int], vocab: dict[int, bytes]) -> str:
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def merges_from_ranks(vocab: dict[int, bytes], skip: set[int]) -> list[tuple[bytes, bytes]]:
    """The merge that builds each token of a rank file (id = rank; ids in `skip` are not ranked)
    under tiktoken's rule: BPE on the token's bytes with only lower ranks allowed ends in exactly
    two parts. A token that ends in more parts has no merge."""
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
