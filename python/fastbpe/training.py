"""`train()` and `train_bpe()`: learn a byte-level BPE tokenizer from files or texts."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Union

from fastbpe import _core, _progress, _stream, corpus, patterns
from fastbpe.special import check_special_tokens
from fastbpe.tokenizer import Tokenizer

PathLike = Union[str, os.PathLike]

# Texts are handed to Rust in batches of about this many characters.
_TEXT_BATCH_CHARS = 8 << 20
# Custom patterns read files in blocks of this many bytes.
_CUSTOM_BLOCK = 4 << 20


def _inputs(input) -> tuple[list[str], Iterable[str] | None]:
    """(paths, texts): a path or a list/tuple of paths, or any other iterable of texts."""
    if isinstance(input, (str, os.PathLike)):
        return [os.fspath(input)], None
    if isinstance(input, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in input):
        return [os.fspath(p) for p in input], None
    if isinstance(input, (bytes, bytearray)):
        raise TypeError("input must be a path, a list of paths, or an iterable of str (not bytes)")
    if isinstance(input, Iterable):
        return [], input
    raise TypeError(f"input must be a path, a list of paths, or an iterable of str, not {type(input).__name__}")


def _batches(texts: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"texts must be str, got {type(t).__name__}")
        batch.append(t)
        size += len(t)
        if size >= _TEXT_BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _count_custom_text(text: str, custom: _stream.CustomPattern, counts: Counter) -> None:
    """Counts the pieces of `text` under a custom regex (its matches and the text between them)."""
    _add_stretches(custom.stretches(text), counts)


def _count_custom_file(path: str, custom: _stream.CustomPattern, counts: Counter, bar) -> None:
    """Custom regex patterns: the file read in blocks, its pieces found by `CustomStream` (which
    carries the last pieces of each block over to the next)."""
    _add_stretches(custom.file(path, _CUSTOM_BLOCK, bar), counts)


def _add_stretches(stretches: Iterable[_stream.Stretch], counts: Counter) -> None:
    for pieces, _ in stretches:
        for piece, n in Counter(pieces).items():
            counts[piece.encode("utf-8")] += n


def _count_file_rust(counts: _core.WordCounts, splitter, path: str, num_threads: int, bar) -> bool:
    """Counts a file's pieces in Rust; False (nothing counted) when fancy-regex gave up on a
    search, and the `regex` module is to count it."""
    try:
        counts.add_file_regex(splitter, path, num_threads, bar)
    except _core.RegexSearchError:
        return False
    return True


def _count_texts_rust(counts: _core.WordCounts, splitter, texts: list[str], num_threads: int) -> bool:
    """As `_count_file_rust` for a batch of texts."""
    try:
        counts.add_texts_regex(splitter, texts, num_threads)
    except _core.RegexSearchError:
        return False
    return True
def _count_custom_corpus(path: str, fmt, text_field: str, custom: _stream.CustomPattern, counts: Counter, bar) -> None:
    """Custom regex patterns on a corpus file that is not plain text: each document on its own,
    a (compressed) text file's text as one stream."""
    texts = corpus.texts_for_custom_pattern(path, fmt, text_field, bar)
    if fmt.has_documents:
        for doc, _ in texts:
            _count_custom_text(doc, custom, counts)
    else:
        _add_stretches(custom.stream(text for text, _ in texts), counts)


def train(
    input: PathLike | list[PathLike] | Iterable[str],
    vocab_size: int,
    *,
    special_tokens: Iterable[str] | None = ("<|endoftext|>",),
    pattern: str | None = "gpt2",
    num_threads: int | None = None,
    progress: bool | None = None,
    text_field: str = "text",
) -> Tokenizer:
    """Learn a byte-level BPE tokenizer.

    input: a path, a list/tuple of paths, or any other iterable of texts (a generator, say);
        each file and each text is pre-tokenized on its own. A file may be text, JSON lines or
        Parquet, and text or JSON lines may be compressed (.gz, .xz, .zst): see `fastbpe.corpus`.
        Each document of a JSON lines or Parquet file is pre-tokenized on its own, as each text
        of an iterator is: no piece spans two documents.
    vocab_size: 256 byte tokens + the merges + the special tokens.
    special_tokens: split the text and never merged; they take the last ids (validated as
        `Tokenizer` validates them).
    pattern: "gpt2", "cl100k", "o200k" (or tiktoken's "r50k_base", "cl100k_base",
        "o200k_base"), a custom regex (text it does not match is counted as pieces of its own),
        or None (BPE over the raw bytes of each stretch between special tokens); an unknown name
        is a ValueError (see `fastbpe.patterns`).
    num_threads: threads for counting (default: all cores).
    progress: a bar on stderr (default: when stderr is a terminal).
    text_field: the JSON field or Parquet column that holds the text of each document.
    """
    specials = check_special_tokens(special_tokens)
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size must be an int, not {type(vocab_size).__name__}")
    minimum = 256 + len(specials)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the minimum is {minimum} "
            f"(256 byte tokens + {len(specials)} special tokens)"
        )
    if num_threads is None:
        num_threads = os.cpu_count() or 1
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int or None, not {num_threads!r}")
    pattern = patterns.canonical(pattern)
    builtin = pattern is None or pattern in patterns.NAMED
    custom = None if builtin else _stream.CustomPattern(pattern, specials)
    # A custom regex the Rust engine runs is counted in Rust, in parallel (else in Python).
    splitter = None if builtin else custom.splitter
    show = _progress.wanted(progress)
    paths, texts = _inputs(input)

    corpus.check_text_field(text_field)
    # Every file is checked (there, readable, its format) before the first is counted.
    formats = []
    for path in paths:
        if not os.path.exists(path):
            hint = ""
            if isinstance(input, (list, tuple)):
                hint = " (a list is read as file paths: to train on in-memory texts, pass iter(texts))"
            raise FileNotFoundError(f"no such file: '{path}'{hint}")
        formats.append(corpus.check_readable(path))

    counts = _core.WordCounts(pattern if builtin else None, specials)
    custom_counts: Counter = Counter()
    for path, fmt in zip(paths, formats):
        bar = _progress.Bar(f"counting {os.path.basename(path)}", os.path.getsize(path), "MB", 1e6) if show else None
        if not fmt.plain_text:
            if builtin:
                cutter = _core.WordCounts(pattern, specials)
                corpus.count_into(counts, cutter, path, fmt, text_field, num_threads, bar)
            else:
                _count_custom_corpus(path, fmt, text_field, custom, custom_counts, bar)
        elif builtin:
            counts.add_file(path, num_threads, bar)
        elif not (splitter is not None and _count_file_rust(counts, splitter, path, num_threads, bar)):
            _count_custom_file(path, custom, custom_counts, bar)
        if bar:
            bar.close()
    if texts is not None:
        for batch in _batches(texts):
            if builtin:
                counts.add_texts(batch, num_threads)
            elif splitter is not None and _count_texts_rust(counts, splitter, batch, num_threads):
                pass
            else:
                for t in batch:
                    _count_custom_text(t, custom, custom_counts)
    if custom_counts:
        counts.add_pieces(dict(custom_counts))

    num_merges = vocab_size - minimum
    bar = _progress.Bar("merging", num_merges, "merges") if show else None
    merges = _core.train_merges(counts, _possible_merges(counts, num_merges), bar)
    if bar:
        bar.close()
    if len(merges) < num_merges:
        what = "the corpus is empty" if len(counts) == 0 else "no pair of tokens is left to merge"
        warnings.warn(
            f"training stopped after {len(merges)} of {num_merges} merges: {what}; "
            f"the vocabulary has {256 + len(merges) + len(specials)} tokens, not {vocab_size}",
            stacklevel=2,
        )
    vocab = {i: bytes([i]) for i in range(256)}
    for a, b in merges:
        vocab[len(vocab)] = a + b
    for s in specials:
        vocab[len(vocab)] = s.encode("utf-8")
    return Tokenizer(vocab, merges, specials, pattern)


def _possible_merges(counts: _core.WordCounts, num_merges: int) -> int:
    """`num_merges`, or fewer when the pieces cannot make that many (each merge joins two parts
    of some piece, and a piece of n bytes has n - 1 joins), so that a huge vocab_size does not
    make the core reserve room for merges that cannot exist."""
    if num_merges <= 1 << 20:
        return num_merges
    return min(num_merges, sum(len(piece) - 1 for piece in counts.to_dict()))


def train_bpe(
    input_path: PathLike, vocab_size: int, special_tokens: list[str], **kwargs
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """CS336 assignment 1's `train_bpe`: returns `(vocab, merges)`; kwargs go to `train`."""
    tok = train(input_path, vocab_size, special_tokens=special_tokens, **kwargs)
    return tok.vocab, tok.merges
