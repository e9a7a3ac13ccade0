"""`Tokenizer`: a byte-level BPE vocabulary, its merges, special tokens and pattern, and encoding
with it (in Rust: `fastbpe._core`).

Its parts and their checks are in `fastbpe.vocab`, special tokens in `fastbpe.special`, custom
patterns' Python path in `fastbpe._stream`, the file formats in `fastbpe.formats` (GPT-2's files,
`.tiktoken` rank files, Hugging Face's `tokenizer.json`, fastbpe's own file and pickles) and token
files in `fastbpe.token_files`: the classmethods and methods here call them.
"""

from __future__ import annotations

import json
import operator
import os
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from functools import cached_property
from typing import Literal

import numpy as np

from fastbpe import _core, _progress, _stream, corpus, patterns, special, token_files
from fastbpe._io import check_writable, refuse_overwrite
from fastbpe.formats import gpt2, native, tiktoken
from fastbpe.special import ALL
from fastbpe.vocab import ID_LIMIT, check_merges, check_ordinary_tokens, check_vocab, special_ids, special_only_ids

UnknownTokenError = _core.UnknownTokenError


class Tokenizer:
    """A byte-level BPE tokenizer.

    `vocab` maps id -> token bytes (ids are ints in [0, 2**32); tokens are bytes, bytearray or
    memoryview, never empty, and no two ordinary tokens have the same bytes); `merges` lists
    `(left, right)` byte pairs in priority order, each part and each result a token; the 256
    single bytes must all be tokens. `special_tokens` are strings that always map to their own
    id: a special token whose bytes are already in `vocab` takes that id (the largest, when a
    CS336 vocabulary also lists it after the merges; if that id is an ordinary token too, such as
    GPT-2's "Hello", it keeps its role in the merges and plain text that BPE builds into those
    bytes gives the same id); the others get new ids after the largest. `pattern` is the
    pre-tokenization pattern: a name ("gpt2", "cl100k", "o200k" or tiktoken's "r50k_base",
    "cl100k_base", "o200k_base"), a regex (text it does not match is kept as pieces of its own),
    or None; see `fastbpe.patterns`.

    Bad arguments raise TypeError (wrong types) or ValueError (wrong values) naming the entry.
    """

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Iterable[str] | None = None,
        pattern: str | None = "gpt2",
    ):
        vocab = check_vocab(vocab)
        merges = check_merges(merges)
        specials = special.check_special_tokens(special_tokens)
        pattern = patterns.canonical(pattern)
        ids, added = special_ids(vocab, specials)
        self._setup(vocab, merges, ids, pattern, "merges", special_only_ids(vocab, merges, ids, added))

    @classmethod
    def _from_parts(cls, *args, **kwargs) -> Tokenizer:
        """A tokenizer from checked parts, as `_setup` takes them: how every reader in
        `fastbpe.formats` builds one."""
        tok = cls.__new__(cls)
        tok._setup(*args, **kwargs)
        return tok

    def _setup(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[bytes, bytes]] | None,
        special_token_ids: dict[str, int],
        pattern: str | None,
        rule: str,
        special_only: set[int],
        *,
        ignore_merges: bool = False,
        post: tuple[list[int], list[int]] = ([], []),
        hf: dict | None = None,
        check: bool = True,
    ) -> None:
        """Set the fields from checked parts (`pattern` made canonical), after checking that they
        fit together (`check` False: the caller did). Every constructor ends here: `__init__`,
        `_from_parts` (the file readers), unpickling and the views of `_recognizing`."""
        if check:
            check_ordinary_tokens(vocab, merges, special_only)
        self.vocab: dict[int, bytes] = vocab
        self._merges: list[tuple[bytes, bytes]] | None = merges
        self.pattern = pattern
        self.special_tokens: list[str] = list(special_token_ids)
        self.special_token_ids: dict[str, int] = dict(special_token_ids)
        # Ids that are special tokens only (not ordinary tokens the encoder builds from bytes).
        self._special_only = frozenset(special_only)
        # "merges": the pairs are the merges (CS336, GPT-2 files); "ranks": tiktoken's rule,
        # any two parts whose concatenation is a token merge, by that token's rank.
        self._rule = rule
        # Read from Hugging Face files (`from_huggingface`), kept by save/load and pickling:
        # its `ignore_merges` (a piece that is a token is that token, merges or not), the ids
        # its post-processor puts before and after a text (`add_special_tokens=True`), and the
        # spec of the `fastbpe.pretokenize.Pipeline` that replaces `pattern` where fastbpe's
        # own pre-tokenization cannot give its pieces (None otherwise).
        self._ignore_merges = ignore_merges
        self._post: tuple[list[int], list[int]] = post
        self._hf: dict | None = hf
        self._fingerprint: str | None = None

    def _parts(self) -> dict:
        """The arguments of `_setup` that rebuild this tokenizer."""
        return dict(
            vocab=self.vocab, merges=self._merges, special_token_ids=self.special_token_ids, pattern=self.pattern,
            rule=self._rule, special_only=self._special_only, ignore_merges=self._ignore_merges, post=self._post,
            hf=self._hf,
        )

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # ---- encoding -------------------------------------------------------------------------

    @cached_property
    def _core(self) -> _core.CoreEncoder:
        name = self.pattern if self.pattern in patterns.NAMED else "whole"
        # Special tokens that share an id decode as the one `vocab` holds: the encoder decodes an
        # id as the first special token given for it, so that one goes first.
        holder = self.vocab
        specials = sorted(self.special_token_ids.items(), key=lambda si: holder[si[1]] != si[0].encode("utf-8"))
        vocab = [(i, t) for i, t in self.vocab.items() if i not in self._special_only]
        if self._hf is not None:
            # The pipeline finds added tokens itself; the core only decodes the non-special ones.
            known = {s for s, _ in specials}
            specials += [(t["content"], t["id"]) for t in self._hf["added_tokens"] if t["content"] not in known]
        if self._rule == "ranks":
            return _core.CoreEncoder.from_ranks([(t, i) for i, t in vocab], specials, name)
        return _core.CoreEncoder.from_merges(vocab, self.merges, specials, name, self._ignore_merges)

    @cached_property
    def _pipeline(self):
        """The Hugging Face pipeline (`fastbpe.pretokenize.Pipeline`), or None."""
        if self._hf is None:
            return None
        from fastbpe.pretokenize import Pipeline

        return Pipeline.from_spec(self._hf, "the tokenizer's Hugging Face pipeline")

    def _encode_hf(self, text: str, allowed: frozenset[str]) -> list[int]:
        """Ids of `text` through the Hugging Face pipeline, the special tokens in `allowed`
        recognized (non-special added tokens always are, as in `tokenizers`)."""
        return self._pipeline.encode(text, allowed, self._core.encode_pieces)

    def _add_special(self, ids: list[int]) -> list[int]:
        """`ids` with the post-processor's ids around them."""
        prefix, suffix = self._post
        if not prefix and not suffix:
            return ids
        return [*prefix, *ids, *suffix]

    @cached_property
    def _custom(self) -> _stream.CustomPattern | None:
        """For custom regexes: the pattern with its Rust splitter (None where it has none) and
        the Python path (`fastbpe._stream.CustomPattern`), the readable definition and the
        fallback. None for the named patterns and None."""
        if self.pattern is None or self.pattern in patterns.NAMED:
            return None
        return _stream.CustomPattern(self.pattern, self.special_tokens)

    @property
    def regex_engine(self) -> str:
        """What splits text into pieces: "builtin" (a named pattern's hand-written Rust
        splitter), "rust" (a custom regex run in Rust by fancy-regex), "python" (a custom regex
        run by the `regex` module) or "none" (pattern None); see `fastbpe.patterns.engine`.
        The ids do not depend on it."""
        return patterns.engine(self.pattern)

    def _encode_custom(self, text: str, with_specials: bool) -> list[int]:
        splitter = self._custom.splitter
        if splitter is not None:
            try:
                return self._core.encode_regex(splitter, text, with_specials)
            except _core.RegexSearchError:
                pass  # fancy-regex gave up (backtracking): the `regex` module splits it
        return self._encode_custom_python(text, with_specials)

    def _encode_custom_batch(self, texts: list[str], with_specials: bool, num_threads: int | None) -> list[list[int]]:
        splitter = self._custom.splitter
        if splitter is not None:
            try:
                return self._core.encode_regex_batch(splitter, texts, _threads(num_threads), with_specials)
            except _core.RegexSearchError:
                pass
        return [self._encode_custom_python(t, with_specials) for t in texts]

    def _encode_custom_python(self, text: str, with_specials: bool) -> list[int]:
        """The readable path: pieces from the `regex` module (`patterns.pieces`), BPE in Rust."""
        return self._encode_stretches(self._custom.stretches(text, with_specials))

    def encode(
        self,
        text: str,
        # Not keyword-only: CPython fills those from a dict, ~20 ns a call on this hot path.
        allowed_special: Literal["all"] | AbstractSet[str] = ALL,
        disallowed_special: Literal["all"] | Collection[str] = ALL,
        add_special_tokens: bool = False,
    ) -> list[int]:
        """Token ids of `text`; special tokens in it become their ids (longest match first).

        `allowed_special` and `disallowed_special` mean what they mean in tiktoken:
        `allowed_special` is the set of special tokens to recognize ("all": every one; by default,
        as in CS336, all of them), the others are plain text; text equal to a special token in
        `disallowed_special` raises ValueError ("all": every special token not allowed). For
        text from users, `encode(text, allowed_special=set())` refuses special-token text and
        `encode(text, allowed_special=set(), disallowed_special=())` encodes it as plain text
        (as `encode_ordinary` does).

        `add_special_tokens=True` adds what the post-processor of a tokenizer read with
        `from_huggingface` puts around a text (Llama-3's `<|begin_of_text|>`, RoBERTa's `<s>` and
        `</s>`); fastbpe's default is False, Hugging Face's is True."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        if allowed_special is disallowed_special is ALL and not add_special_tokens and self._hf is None:
            if self._custom is not None:
                return self._encode_custom(text, True)
            return self._core.encode(text)
        if self._hf is not None:
            ids = self._encode_hf(text, self._allowed_in([text], allowed_special, disallowed_special))
        elif allowed_special is disallowed_special is ALL:
            ids = self._encode_custom(text, True) if self._custom is not None else self._core.encode(text)
        else:
            ids = self._encode_allowed(text, self._allowed_in([text], allowed_special, disallowed_special))
        return self._add_special(ids) if add_special_tokens else ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, special tokens treated as plain text."""
        if not isinstance(text, str):
            raise TypeError(f"encode_ordinary() takes a str, not {type(text).__name__}")
        if self._hf is not None:
            return self._encode_hf(text, frozenset())
        if self._custom is not None:
            return self._encode_custom(text, False)
        return self._core.encode_ordinary(text)

    @property
    def special_tokens_set(self) -> set[str]:
        """The special tokens as a set (tiktoken's name)."""
        return set(self.special_token_ids)

    @cached_property
    def _special_frozenset(self) -> frozenset[str]:
        return frozenset(self.special_token_ids)

    def _special_policy(self, allowed_special, disallowed_special) -> tuple[frozenset[str], frozenset[str]]:
        """(the special tokens to recognize, the texts to refuse): see `fastbpe.special.policy`."""
        return special.policy(self._special_frozenset, allowed_special, disallowed_special)

    def _allowed_in(
        self, texts: Sequence[str], allowed_special, disallowed_special, name_each: bool = False
    ) -> frozenset[str]:
        """The special tokens to recognize in `texts`, after refusing any disallowed one."""
        allowed, disallowed = self._special_policy(allowed_special, disallowed_special)
        if disallowed:
            special.refuse_disallowed(texts, disallowed, "tok", name_each)
        return allowed

    def _encode_allowed(self, text: str, allowed: frozenset[str]) -> list[int]:
        """Ids of `text` with only the special tokens in `allowed` recognized."""
        if not allowed:
            return self.encode_ordinary(text)
        view = self._recognizing(allowed, build=False)
        return view.encode(text) if view is not None else self._encode_split([text], allowed, None)[0]

    def _encode_split(self, texts: list[str], allowed: frozenset[str], num_threads: int | None) -> list[list[int]]:
        """Ids of each text with only the special tokens in `allowed` recognized, without an
        encoder of their own: the texts split on them in Python, the stretches between them, of
        every text, encoded as plain text in one parallel batch and put back together."""
        split = special.special_regex(allowed).split
        parts = [split(t) for t in texts]
        stretches = iter(self.encode_ordinary_batch([p for ps in parts for p in ps[::2]], num_threads))
        ids = self.special_token_ids
        out = []
        for ps in parts:
            row = next(stretches)
            for k in range(1, len(ps), 2):
                row.append(ids[ps[k]])
                row.extend(next(stretches))
            out.append(row)
        return out

    def encode_batch(
        self,
        texts: Sequence[str],
        num_threads: int | None = None,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = ALL,
        disallowed_special: Literal["all"] | Collection[str] = ALL,
        add_special_tokens: bool = False,
    ) -> list[list[int]]:
        """`encode` of each text, in parallel on `num_threads` threads (default: all cores);
        `allowed_special`, `disallowed_special` and `add_special_tokens` as in `encode` (a
        disallowed special token raises ValueError naming the text). Tokenizers read with a
        Hugging Face pipeline encode the texts one after the other.

        The calling thread turns finished results into lists while the others go on encoding.
        Like `encode`'s, the lists are left out of the cyclic garbage collector: they hold only
        ints, so collections need not walk them (a list made part of a cycle later is freed
        only once the cycle is broken)."""
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"encode_batch() takes str texts, not {type(t).__name__}")
        if add_special_tokens:
            rows = self.encode_batch(texts, num_threads, allowed_special=allowed_special, disallowed_special=disallowed_special)
            return [self._add_special(row) for row in rows]
        if self._hf is not None:
            allowed = self._allowed_in(texts, allowed_special, disallowed_special, name_each=True)
            return [self._encode_hf(t, allowed) for t in texts]
        if not (allowed_special is disallowed_special is ALL):
            allowed = self._allowed_in(texts, allowed_special, disallowed_special, name_each=True)
            if not allowed:
                return self.encode_ordinary_batch(texts, num_threads)
            if len(allowed) < len(self.special_token_ids):
                view = self._recognizing(allowed, build=False)
                if view is None:
                    return self._encode_split(texts, allowed, num_threads)
                return view.encode_batch(texts, num_threads)
        if self._custom is not None:
            return self._encode_custom_batch(texts, True, num_threads)
        return self._core.encode_batch(texts, _threads(num_threads))

    def encode_ordinary_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """`encode_ordinary` of each text (special tokens are plain text), in parallel as
        `encode_batch`."""
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"encode_ordinary_batch() takes str texts, not {type(t).__name__}")
        if self._hf is not None:
            return [self._encode_hf(t, frozenset()) for t in texts]
        if self._custom is not None:
            return self._encode_custom_batch(texts, False, num_threads)
        return self._core.encode_batch(texts, _threads(num_threads), False)

    @cached_property
    def dtype(self) -> np.dtype:
        """The smallest unsigned dtype that holds every id: uint16 or uint32 (found once: the
        scan of the vocabulary cost more than encoding a short text)."""
        return np.dtype(np.uint16) if max(self.vocab) < 1 << 16 else np.dtype(np.uint32)

    def encode_to_numpy(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = ALL,
        disallowed_special: Literal["all"] | Collection[str] = ALL,
        add_special_tokens: bool = False,
    ) -> np.ndarray:
        """`encode(text)` as a numpy array (uint16 when every id fits, else uint32);
        `allowed_special`, `disallowed_special` and `add_special_tokens` as in `encode`."""
        if not isinstance(text, str):
            raise TypeError(f"encode_to_numpy() takes a str, not {type(text).__name__}")
        dtype = self.dtype
        if add_special_tokens or self._hf is not None:
            return np.asarray(self.encode(text, allowed_special, disallowed_special, add_special_tokens), dtype=dtype)
        with_specials = True
        if not (allowed_special is disallowed_special is ALL):
            allowed = self._allowed_in([text], allowed_special, disallowed_special)
            if not allowed:
                with_specials = False
            elif len(allowed) < len(self.special_token_ids):
                view = self._recognizing(allowed, build=False)
                if view is None:
                    return np.asarray(self._encode_split([text], allowed, None)[0], dtype=dtype)
                return view.encode_to_numpy(text)
        if self._custom is not None and self._custom.splitter is not None:
            try:
                buf = self._core.encode_regex_to_buffer(self._custom.splitter, text, dtype.itemsize, with_specials)
                return np.frombuffer(buf, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
            except _core.RegexSearchError:
                pass
        if self._custom is not None:
            return np.asarray(self._encode_custom_python(text, with_specials), dtype=dtype)
        buf = self._core.encode_to_buffer(text, dtype.itemsize, with_specials)
        return np.frombuffer(buf, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)

    def encode_ordinary_to_numpy(self, text: str) -> np.ndarray:
        """`encode_ordinary(text)` as a numpy array, as `encode_to_numpy`."""
        if not isinstance(text, str):
            raise TypeError(f"encode_ordinary_to_numpy() takes a str, not {type(text).__name__}")
        return self.encode_to_numpy(text, allowed_special=(), disallowed_special=())

    def encode_iterable(
        self,
        iterable: Iterable[str],
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = ALL,
        disallowed_special: Literal["all"] | Collection[str] = ALL,
    ) -> Iterator[int]:
        """Lazily yield the ids of the concatenated strings, as `encode("".join(iterable))` would,
        with memory that does not grow with the input (pieces and special tokens may straddle
        two strings: text is held back until a place where cutting cannot change the ids).

        What is held is bounded by the longest piece: with `pattern=None` that is the text between
        two special tokens, held whole; with a custom regex see `fastbpe._stream.CustomStream`
        for the patterns it is exact for.

        `allowed_special` and `disallowed_special` as in `encode`; a disallowed special token
        raises ValueError when the stream reaches it, after the ids of the text before it."""
        if not (allowed_special is disallowed_special is ALL):
            yield from self._encode_iterable_special(iterable, allowed_special, disallowed_special)
            return
        if self._hf is not None:
            yield from self._encode_iterable_hf(iterable)
            return
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

    def _encode_iterable_hf(self, iterable: Iterable[str]) -> Iterator[int]:
        """`encode_iterable` through the Hugging Face pipeline: text is held until a place where
        the ids of the rest do not depend on the text before (`Pipeline.safe_cut`: right after an
        added token such as a document's end), so memory follows the longest text between such
        tokens."""
        stream = self._pipeline.stream(self._special_frozenset, self._encode_hf)
        for s in _str_items(iterable):
            yield from stream.feed(s)
        yield from stream.finish()

    def _encode_iterable_custom(self, iterable: Iterable[str]) -> Iterator[int]:
        """`encode_iterable` for a custom regex: the pieces come from `CustomPattern.stream`."""
        for stretch in self._custom.stream(_str_items(iterable)):
            yield from self._encode_stretches([stretch])

    def _encode_stretches(self, stretches) -> list[int]:
        """The ids of `CustomPattern`'s (pieces, special token) stretches."""
        ids: list[int] = []
        for pieces, special in stretches:
            if pieces:
                ids += self._core.encode_pieces(pieces)
            if special is not None:
                ids.append(self.special_token_ids[special])
        return ids

    def _encode_iterable_special(self, iterable: Iterable[str], allowed_special, disallowed_special) -> Iterator[int]:
        """`encode_iterable` under a special-token policy: the stream checked as it passes, then
        encoded by a tokenizer that recognizes only the allowed special tokens."""
        allowed, disallowed = self._special_policy(allowed_special, disallowed_special)
        if disallowed:
            iterable = special.refuse_disallowed_in_stream(iterable, disallowed)
        yield from self._recognizing(allowed).encode_iterable(iterable)

    def _recognizing(self, allowed: frozenset[str], build: bool = True) -> Tokenizer | None:
        """This tokenizer with only the special tokens in `allowed` recognized, the others
        plain text: itself, or a view with an encoder of its own, kept for the last few sets.
        Building one takes a few tenths of a second for 100,000 tokens, after which it encodes
        1.4-1.6x as fast as splitting on the special tokens in Python: with `build` False, a set
        seen for the first time gets None (the caller splits), the next time its view."""
        if len(allowed) == len(self.special_token_ids):
            return self
        with _VIEWS_LOCK:
            views, seen = self._views
            view = views.pop(allowed, None)
            if view is None:
                if not build and allowed not in seen:
                    if len(seen) >= 64:
                        seen.clear()
                    seen.add(allowed)
                    return None
                view = _SpecialSubset(self, allowed)
            views[allowed] = view  # most recently used last
            while len(views) > 3:
                del views[next(iter(views))]
        return view

    @cached_property
    def _views(self) -> tuple[dict[frozenset[str], Tokenizer], set[frozenset[str]]]:
        """(the views by special-token set, the sets seen once)."""
        return {}, set()

    def encode_file(
        self,
        path: str | os.PathLike,
        out_path: str | os.PathLike,
        *,
        dtype=None,
        num_threads: int | None = None,
        progress: bool | None = None,
        metadata: dict | None = None,
        allowed_special: Literal["all"] | AbstractSet[str] = ALL,
        disallowed_special: Literal["all"] | Collection[str] = ALL,
        text_field: str = "text",
        eot_token: str | None = None,
    ) -> np.ndarray:
        """Encode a corpus file into a flat token array on disk; returns it as an np.memmap.

        The file is UTF-8 text, JSON lines or Parquet, text and JSON lines possibly compressed
        (.gz, .xz, .zst); see `fastbpe.corpus`. A text file gives the ids of its text, nothing
        added. A JSON lines or Parquet file gives, for each document (the field or column
        `text_field`), `encode(document)` followed by the id of `eot_token` (one of this
        tokenizer's special tokens; by default `<|endoftext|>`, when declared: a warning says
        when it is not, and the documents then follow each other with nothing between them).
        A tokenizer.json names its end of text otherwise (DeepSeek's `<｜end▁of▁sentence｜>`):
        pass that.

        The text is cut at safe places (after special tokens, between lines), encoded in
        parallel, and streamed to disk in order with bounded memory. `out_path` and its sidecar
        `<out_path>.json` (dtype, number of tokens, size, checksum, the tokenizer, any `metadata`
        given) appear together and complete, or not at all: see `fastbpe.token_files`. An output
        that is the input file (or a link to it) is refused with ValueError. A plain text file
        that changes while it is read (truncated or written to) raises OSError, and nothing is
        written.

        `allowed_special` and `disallowed_special` as in `encode`; with either given a plain text
        file is first searched for disallowed special tokens (ValueError naming the byte offset,
        before anything is written), the documents of other formats as they are read (ValueError
        naming the line or row; nothing is written).
        """
        fmt = corpus.check_readable(path)
        corpus.check_text_field(text_field)
        corpus.eot_id(self, eot_token)  # a wrong name is refused before any work
        if not fmt.plain_text:
            # The formats read in Python: the policy applies to each document as it is read.
            allowed, disallowed = self._special_policy(allowed_special, disallowed_special)
        elif not (allowed_special is disallowed_special is ALL):
            allowed, disallowed = self._special_policy(allowed_special, disallowed_special)
            if disallowed and os.path.isfile(path):
                # The outputs are checked before the search, as before the encoding.
                outputs = [("out_path", out_path), ("its sidecar", token_files.sidecar_path(out_path))]
                refuse_overwrite(outputs, [("the input", path)])
                check_writable(out_path)
                special.refuse_disallowed_in_file(os.fspath(path), disallowed)
            return self._recognizing(allowed).encode_file(
                path, out_path, dtype=dtype, num_threads=num_threads, progress=progress, metadata=metadata
            )
        path, out_path = os.fspath(path), os.fspath(out_path)
        refuse_overwrite([("out_path", out_path), ("its sidecar", token_files.sidecar_path(out_path))], [("the input", path)])
        if dtype is None:
            dtype = self.dtype  # fits every id
        else:
            dtype = np.dtype(dtype)
            if dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
                raise ValueError(f"dtype must be uint16 or uint32, not {dtype}")
            if max(self.vocab) >= 1 << (8 * dtype.itemsize):
                raise ValueError(f"dtype {dtype} cannot hold id {max(self.vocab)}: use uint32")
        meta = {
            "vocab_size": self.vocab_size,
            "source": os.path.abspath(path),
            "tokenizer_sha256": self.fingerprint(),
            **(metadata or {}),
        }
        bar = _progress.Bar(f"encoding {os.path.basename(path)}", os.path.getsize(path), "MB", 1e6) if _progress.wanted(progress) else None
        with token_files.TokenWriter(out_path, dtype, meta) as writer:
            if not fmt.plain_text:
                n = corpus.encode_into(self, path, fmt, writer, text_field=text_field, eot_token=eot_token,
                                       num_threads=_threads(num_threads),
                                       allowed=allowed, disallowed=disallowed, progress=bar)
            elif self._hf is not None:
                n = self._encode_file_hf(path, writer, bar)
            elif self._custom is None:
                try:
                    n, crc = self._core.encode_file(path, writer.tmp, dtype.itemsize, _threads(num_threads), bar)
                except OSError as e:
                    raise writer.filler_error(e) from None
                writer.adopt(n, crc)
            else:
                n = self._encode_file_custom(path, writer, num_threads, bar)
            if bar:
                bar.close()
        return token_files.map_data(out_path, writer.metadata)

    def _encode_file_custom(self, path: str, writer: token_files.TokenWriter, num_threads: int | None, bar) -> int:
        """Custom patterns: in Rust where the pattern has a Rust splitter (chunks split in
        parallel and stitched exactly, `rust/regex_encode.rs`), else `_encode_file_python`."""
        splitter = self._custom.splitter
        if splitter is not None:
            itemsize = writer.dtype.itemsize
            try:
                n, crc = self._core.encode_regex_file(splitter, path, writer.tmp, itemsize, _threads(num_threads), bar)
            except _core.RegexSearchError:
                os.truncate(writer.tmp, 0)  # what the Rust encoder wrote; the `regex` module starts over
            except OSError as e:
                raise writer.filler_error(e) from None
            else:
                writer.adopt(n, crc)
                return n
        return self._encode_file_python(path, writer, bar)

    def _encode_file_python(self, path: str, writer: token_files.TokenWriter, bar) -> int:
        """Custom patterns: the file read in blocks, its pieces found by `CustomPattern.file`."""
        for stretch in self._custom.file(path, 1 << 20, bar):  # a few ten thousand characters each
            writer.write(np.asarray(self._encode_stretches([stretch]), dtype=writer.dtype))
        return writer.num_tokens

    def _encode_file_hf(self, path: str, writer: token_files.TokenWriter, bar) -> int:
        """Through the Hugging Face pipeline: the file read in blocks, cut as `encode_iterable`."""
        stream = self._pipeline.stream(self._special_frozenset, self._encode_hf)
        for text in _stream.read_text(path, 1 << 20, bar):
            writer.write(np.asarray(stream.feed(text), dtype=writer.dtype))
        writer.write(np.asarray(stream.finish(), dtype=writer.dtype))
        return writer.num_tokens

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of the tokens, concatenated. Ids are ints (numpy integers too); an id not in
        the vocabulary raises UnknownTokenError naming it, a non-integer TypeError."""
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        elif not isinstance(ids, (list, tuple)):
            ids = list(ids)
        if self._hf is not None and self._decoded_as:
            return self._decode_bytes_as_hf(ids)
        try:
            return self._core.decode_bytes(ids)
        except (OverflowError, TypeError, UnknownTokenError):
            bad = self._bad_id(ids)
            if bad is None:
                raise
            raise bad from None

    @cached_property
    def _decoded_as(self) -> dict[int, bytes]:
        """Ids that Hugging Face decodes otherwise than as their bytes (`Pipeline.decoded_as`)."""
        return self._pipeline.decoded_as() if self._pipeline is not None else {}

    def _decode_bytes_as_hf(self, ids: list) -> bytes:
        """`decode_bytes` with the ids of `_decoded_as` decoded as Hugging Face does."""
        table = self._decoded_as
        out, run = [], []
        for i in ids:
            if isinstance(i, int) and i in table:
                out.append(self._decode_run(run))
                out.append(table[i])
                run = []
            else:
                run.append(i)
        out.append(self._decode_run(run))
        return b"".join(out)

    def _decode_run(self, ids: list) -> bytes:
        try:
            return self._core.decode_bytes(ids)
        except (OverflowError, TypeError, UnknownTokenError):
            bad = self._bad_id(ids)
            if bad is None:
                raise
            raise bad from None

    def _bad_id(self, ids: Sequence) -> Exception | None:
        """The error for the first id in `ids` that is not a token (the core's errors name the
        id only when every item was a 32-bit unsigned int)."""
        for k, x in enumerate(ids):
            try:
                i = operator.index(x)
            except TypeError:
                return TypeError(f"token ids must be ints: item {k} is {type(x).__name__} {x!r}")
            if not 0 <= i < ID_LIMIT or self._core.token_bytes(i) is None:
                return UnknownTokenError(
                    f"token id {i} is not in the vocabulary (ids go up to {max(self.vocab)})"
                )
        return None

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """The text of the tokens; invalid UTF-8 becomes U+FFFD (`errors` as in `bytes.decode`:
        "strict" raises UnicodeDecodeError instead)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def as_tiktoken(self, name: str | None = None):
        """This tokenizer behind `tiktoken.Encoding`'s interface and defaults (special-token text
        refused unless allowed), so that code written for tiktoken runs on it unchanged: see
        `fastbpe.tiktoken_compat.Encoding`. `name` defaults to one made from `fingerprint()`."""
        from fastbpe.tiktoken_compat import Encoding

        return Encoding.from_tokenizer(self, name)

    def fingerprint(self) -> str:
        """SHA-256 over what decides the ids (rule, pattern, special tokens, vocabulary and, under
        the merge rule, the merges): the tokenizer's identity, recorded beside token files."""
        if self._fingerprint is None:
            import hashlib

            h = hashlib.sha256()
            head = [self._rule, self.pattern, sorted(self.special_token_ids.items())]
            hf = native.hf_fields(self)
            if hf:
                head.append(hf)  # absent for fastbpe's own tokenizers: their fingerprints stay
            h.update(json.dumps(head, sort_keys=True).encode())
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
            and native.hf_fields(self) == native.hf_fields(other)
        )

    # ---- pickling ------------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        """What decides the ids (`fastbpe.formats.native.state`); caches are rebuilt on first use."""
        return native.state(self)

    def __setstate__(self, state) -> None:
        """Unpickling checks the state as construction and `load` check their input
        (`fastbpe.formats.native.parts_from_state`)."""
        self._setup(**native.parts_from_state(state))

    # ---- other formats -----------------------------------------------------------------------

    @classmethod
    def from_files(
        cls,
        vocab_filepath: str | os.PathLike,
        merges_filepath: str | os.PathLike,
        special_tokens: Iterable[str] | None = None,
    ) -> Tokenizer:
        """GPT-2's `vocab.json` (token strings in its byte-to-unicode alphabet -> id) and
        `merges.txt` (one "left right" pair per line, a `#version` line allowed first). A special
        token already in `vocab.json` takes its id there (see `Tokenizer`); see
        `fastbpe.formats.gpt2`."""
        return gpt2.read(cls, vocab_filepath, merges_filepath, special_tokens)

    @classmethod
    def from_tiktoken(
        cls,
        path: str | os.PathLike,
        pattern: str | None,
        special_tokens: Mapping[str, int] | None = None,
    ) -> Tokenizer:
        """A `.tiktoken` rank file (`base64(token) rank` per line), with tiktoken's rule: any two
        adjacent parts whose concatenation is a token merge, the lowest rank first.

        `pattern` is a pattern name such as "cl100k_base" (see `fastbpe.patterns`); special
        tokens come with their ids (`{"<|endoftext|>": 100257}`), which the file must not use.
        A rank or a token that the file gives twice is refused; see `fastbpe.formats.tiktoken`."""
        return tiktoken.read(cls, path, pattern, special_tokens)

    @property
    def merges(self) -> list[tuple[bytes, bytes]]:
        if self._merges is None:
            self._merges = tiktoken.merges_from_ranks(self.vocab, self._special_only)
        return self._merges

    def to_tiktoken(self, path: str | os.PathLike) -> None:
        """Write a `.tiktoken` rank file (special tokens are not part of that format, except those
        that are ordinary tokens too)."""
        tiktoken.write(self, path)

    def to_huggingface(self, path: str | os.PathLike) -> str:
        """Write the tokenizer for Hugging Face: `tokenizers.Tokenizer.from_file` and
        `transformers.PreTrainedTokenizerFast(tokenizer_file=...)` give the same ids as `encode`
        (special tokens recognized), and decode the same text.

        `path` is a `tokenizer.json` file, or a folder (one that exists, or a str ending with a
        separator, which is created): then `tokenizer.json` and `tokenizer_config.json` are
        written in it, for `transformers.AutoTokenizer.from_pretrained(folder)`, with eos/bos/pad
        named where a special token has the usual name (`<|endoftext|>` is eos). Returns the path
        of the `tokenizer.json`. A pattern that Hugging Face's regex engine cannot follow exactly
        (a backreference, `(?x)`, one that can match the empty string, ...) raises ValueError
        naming it; see `fastbpe.formats.huggingface`."""
        from fastbpe.formats import huggingface

        return huggingface.write(self, path)

    @classmethod
    def from_huggingface(cls, source) -> Tokenizer:
        """A Hugging Face byte-level BPE tokenizer: a path to a `tokenizer.json` (or to the folder
        holding it), its JSON text, or a `tokenizers.Tokenizer`. The ids and the decoded text are
        those of `tokenizers.Tokenizer.encode(text, add_special_tokens=...)` and its `decode`
        (with `skip_special_tokens=False`). What is read, what is refused (a ValueError naming
        it) and which files are pre-tokenized in Python: see `fastbpe.formats.huggingface.read`."""
        from fastbpe.formats import huggingface

        return huggingface.read(cls, source)

    # ---- files -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The JSON object that `save` writes (`fastbpe.formats.native`)."""
        return native.to_dict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically: a complete file or none)."""
        native.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a file written by `save`, or a Hugging Face `tokenizer.json` (told apart by its
        content: a "model" and no "format"; read as `from_huggingface` reads it). A malformed
        file raises ValueError naming the file and the field."""
        return native.load(cls, path)


_VIEWS_LOCK = threading.Lock()


class _SpecialSubset(Tokenizer):
    """A tokenizer that recognizes only some of another's special tokens (the others are plain
    text): the same vocabulary, merges and pattern, its own encoder (whose safe cuts for
    streams and files follow those special tokens). Token files it writes name the full
    tokenizer, whose ids they hold."""

    def __init__(self, full: Tokenizer, allowed: frozenset[str]):
        parts = full._parts()
        parts["special_token_ids"] = {s: i for s, i in full.special_token_ids.items() if s in allowed}
        self._setup(**parts, check=False)  # the full tokenizer's parts, checked
        self._full = full

    def fingerprint(self) -> str:
        return self._full.fingerprint()


def _threads(num_threads: int | None) -> int:
    if num_threads is None:
        return os.cpu_count() or 1
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int or None, not {num_threads!r}")
    return num_threads


def _str_items(iterable: Iterable[str]) -> Iterator[str]:
    """The items of `encode_iterable`'s argument, each checked to be a str as it comes."""
    for s in iterable:
        if not isinstance(s, str):
            raise TypeError(f"encode_iterable() takes str items, not {type(s).__name__}")
        yield s
