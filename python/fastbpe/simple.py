"""The lecture's simpler tokenizers, with the same interface as the BPE `Tokenizer`
(`encode`, `decode`, `vocab_size`), and `compression_ratio` to compare them.

- CharacterTokenizer: one token per Unicode code point (id = the code point).
- ByteTokenizer: one token per UTF-8 byte (256 ids).
- WordTokenizer: regex `\\w+|.` pieces, a vocabulary built from a corpus, unknown words -> `<unk>`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import regex


class CharacterTokenizer:
    """Each character is its Unicode code point: a huge, sparse vocabulary."""

    vocab_size = 0x110000
    unk_id = None

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(map(chr, ids))


class ByteTokenizer:
    """Each UTF-8 byte is a token: tiny vocabulary, long sequences (compression ratio 1)."""

    vocab_size = 256
    unk_id = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


class WordTokenizer:
    """Words and single non-word characters (`\\w+|.`), the vocabulary taken from a corpus;
    anything unseen becomes `<unk>` (id 0), so decoding loses it."""

    PATTERN = regex.compile(r"\w+|.", regex.DOTALL)
    UNK = "<unk>"

    def __init__(self, corpus: str | Iterable[str], max_vocab: int | None = None):
        texts = [corpus] if isinstance(corpus, str) else corpus
        counts: Counter = Counter()
        for t in texts:
            counts.update(self.PATTERN.findall(t))
        words = [w for w, _ in counts.most_common(max_vocab and max_vocab - 1)]
        self.id_to_word = [self.UNK] + words
        self.word_to_id = {w: i for i, w in enumerate(self.id_to_word)}
        self.unk_id = 0

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_word)

    def encode(self, text: str) -> list[int]:
        return [self.word_to_id.get(w, 0) for w in self.PATTERN.findall(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.id_to_word[i] for i in ids)


def compression_ratio(tokenizer, text: str) -> float:
    """UTF-8 bytes per token of `text` (higher means fewer tokens for the same text)."""
    n = len(tokenizer.encode(text))
    return len(text.encode("utf-8")) / n if n else 0.0
