"""fastbpe: byte-level BPE tokenizers, trained and applied by a Rust core.

    import fastbpe
    tok = fastbpe.train("corpus.txt", vocab_size=10_000)
    tok.save("tokenizer.json")
"""

from fastbpe import patterns, reference
from fastbpe._core import __version__
from fastbpe.tokenizer import Tokenizer
from fastbpe.training import train, train_bpe

__all__ = ["Tokenizer", "train", "train_bpe", "patterns", "reference", "__version__"]
