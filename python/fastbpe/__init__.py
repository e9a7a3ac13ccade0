"""fastbpe: byte-level BPE tokenizers, trained and applied by a Rust core.

    import fastbpe
    tok = fastbpe.train("corpus.txt", vocab_size=10_000)
    ids = tok.encode("Hello world")
    tok.encode_file("corpus.txt", "tokens.bin")     # a flat uint16/uint32 array on disk
    tok.encode_file("shard.jsonl.zst", "tokens.bin")  # documents, each then <|endoftext|> (fastbpe.corpus)
"""

from fastbpe import corpus, patterns, reference, tiktoken_compat
from fastbpe.simple import ByteTokenizer, CharacterTokenizer, WordTokenizer, compression_ratio
from fastbpe.tokenizer import Tokenizer, UnknownTokenError
from fastbpe.training import train, train_bpe


def _distribution_version() -> str:
    """The installed distribution's version (Cargo.toml's, through maturin); the compiled core's
    own copy of it where no metadata is found (the package on sys.path without being installed)."""
    from importlib import metadata

    try:
        return metadata.version("fastbpe-rs")
    except metadata.PackageNotFoundError:
        from fastbpe._core import __version__ as core_version

        return core_version


__version__ = _distribution_version()

__all__ = [
    "Tokenizer",
    "UnknownTokenError",
    "train",
    "train_bpe",
    "CharacterTokenizer",
    "ByteTokenizer",
    "WordTokenizer",
    "compression_ratio",
    "patterns",
    "corpus",
    "tiktoken_compat",
    "reference",
    "__version__",
]
