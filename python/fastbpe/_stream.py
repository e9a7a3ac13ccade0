"""Custom patterns in Python: the one path for the pieces of a custom regex where the Rust
splitter does not run (a regex outside its subset, or a search fancy-regex gave up on), for
encoding and training alike.

`CustomPattern` holds a custom regex, its Rust splitter (or None) and the special tokens that cut
text before it; it gives the pieces of a text, of text that arrives in parts (`CustomStream`,
whose memory does not grow with the text) and of a UTF-8 file read in blocks (`read_text`, whose
invalid UTF-8 is a ValueError naming the file and the byte offset). The named patterns have all
of this in the Rust core (safe cuts, `rust/pretok.rs`).
"""

from __future__ import annotations

import codecs
import errno
import itertools
import os
import stat
from collections.abc import Iterable, Iterator

import regex

from fastbpe import patterns
from fastbpe.special import special_regex

# Characters gathered before a split.
_FIRST_THRESHOLD = 1 << 15
# Characters of the text before a cut kept as context for lookbehind, `\b` and the like.
_CONTEXT = 256


# A stretch of text: the pieces of (a part of) a stretch of ordinary text, and the special token
# that ends it (None at the end of the text or of a part).
Stretch = tuple[list[str], "str | None"]


class CustomPattern:
    """A custom regex (`pattern`, made canonical by `fastbpe.patterns`) with the special tokens
    that cut text before it. `splitter` is its Rust splitter, None where the regex is outside the
    subset the Rust engine runs exactly; the methods here are the readable definition of the
    pieces and the fallback: the `regex` module finds them (`patterns.pieces`)."""

    def __init__(self, pattern: str, special_tokens: list[str]):
        self.rx = patterns.compile(pattern)
        self.special_tokens = list(special_tokens)
        self.special_rx = special_regex(frozenset(special_tokens)) if special_tokens else None
        self.splitter = patterns.rust_splitter(pattern)

    def stretches(self, text: str, with_specials: bool = True) -> Iterator[Stretch]:
        """The stretches of `text`: split on the special tokens (with `with_specials`; else they
        are ordinary text), each stretch between them cut into pieces."""
        if not with_specials or self.special_rx is None:
            yield patterns.pieces(self.rx, text), None
            return
        parts = self.special_rx.split(text)  # the text between special tokens at even places
        for k in range(0, len(parts), 2):
            special = parts[k + 1] if k + 1 < len(parts) else None
            yield (patterns.pieces(self.rx, parts[k]) if parts[k] else []), special

    def stream(self, parts: Iterable[str]) -> Iterator[Stretch]:
        """The stretches of the concatenation of `parts`, found as the parts come (see
        `CustomStream` for the patterns this is exact for)."""
        stream = CustomStream(self.rx, self.special_tokens)
        for text in parts:
            yield from stream.feed(text)
        yield from stream.finish()

    def file(self, path: str, block: int, progress=None) -> Iterator[Stretch]:
        """The stretches of a UTF-8 file, read in blocks of `block` bytes (`read_text`)."""
        check_readable_file(path)
        return self.stream(read_text(path, block, progress))


class CustomStream:
    """Splits a stream of text on special tokens (the longest first) and each stretch between them
    with the regex `rx`, giving what `patterns.pieces(rx, stretch)` gives on each stretch of the
    whole text: the non-empty matches and the text between them.

    `feed(text)` takes the next part and yields what is now final, `finish()` the rest:
    `(pieces, special token or None)`, the pieces of (a part of) a stretch of ordinary text and the
    special token that ends it. Each is consumed before the next call. `threshold`: characters
    gathered before a split.

    What makes it exact: a special token is final once no longer one could reach past the text
    held (it starts at least the longest special token's length before the end), and no special
    token starts before that place. The stretch after the last final special token is split up to
    that place, every non-empty match is kept but the last two (with the text between them), the
    text from the end of the last kept match on is carried into the next read, and the search
    resumes there with the text before it as context (`pos`), as the search over the whole stretch
    resumes after that match.

    The limit is lookahead: this is exact for patterns whose choice of a match depends on at most
    the text of the two matches after it (the named patterns and the usual custom ones: runs of
    one class of characters, a character of lookahead such as `\\s+(?!\\S)`, `$`). A pattern that
    looks further ahead (`\\w+(?=.*END)`), or behind by more than 256 characters, can split
    differently where the text was carried. A single match longer than the text held (`.+` on a
    line without end, say) is held whole: memory follows the longest piece.
    """

    def __init__(
        self,
        rx: regex.Pattern,
        special_tokens: list[str],
        threshold: int = _FIRST_THRESHOLD,
    ):
        self.rx = rx
        self.special_rx = special_regex(frozenset(special_tokens)) if special_tokens else None
        self.longest = max(map(len, special_tokens), default=0)
        self.parts: list[str] = []
        self.size = 0
        self.first_threshold = self.threshold = max(1, threshold)
        # The text of the current stretch just before the held text ("" at a stretch's start).
        self.context = ""

    def feed(self, text: str) -> Iterator[tuple[list, str | None]]:
        # In slices, so that one split (and what it lists) stays small.
        for i in range(0, len(text), self.first_threshold):
            part = text[i : i + self.first_threshold]
            self.parts.append(part)
            self.size += len(part)
            if self.size < self.threshold:
                continue
            held = "".join(self.parts)
            out, used = self._split(held)
            yield from out
            rest = held[used:]
            self.parts, self.size = [rest], len(rest)
            # Split again once as much new text as is held has come: a long piece (nothing
            # kept) is then split a logarithmic number of times, and splitting stays linear.
            self.threshold = max(self.first_threshold, 2 * len(rest))

    def finish(self) -> Iterator[tuple[list, str | None]]:
        held = "".join(self.parts)
        self.parts, self.size = [], 0
        out, start = self._final_specials(held, len(held))
        yield from out
        yield self._pieces(self.context + held[start:], len(self.context)), None

    def _split(self, text: str) -> tuple[list[tuple[list, str | None]], int]:
        """What is final in `text`, and how many characters of it that uses."""
        end = len(text) - self.longest  # no special token starts after this
        out, start = self._final_specials(text, end)
        # The stretch after the last final special token, as far as it surely goes.
        stop = max(start, min(len(text), end + 1))
        buf = self.context + text[start:stop]
        base = len(self.context)
        kept = self._kept(buf, base)
        if kept is None:
            return out, start  # nothing to keep: carry it all
        pieces, cut = kept
        out.append((pieces, None))
        self.context = buf[max(0, cut - _CONTEXT) : cut]
        return out, start + cut - base

    def _kept(self, buf: str, base: int) -> tuple[list[str], int] | None:
        """The pieces of `buf` (from `base`) up to the end of its last non-empty match but two,
        and where that match ends; None when there is nothing to keep."""
        if self.rx.flags & regex.REVERSE:
            return None  # (?r) searches from the end: only the whole stretch tells
        if self.rx.groups == 0:
            found = self.rx.findall(buf, base)
            if sum(map(len, found)) == len(buf) - base:
                # The matches cover the text: the pieces are the non-empty ones, and they end
                # where their lengths add up.
                found = [p for p in found if p]
                if len(found) < 3:
                    return None
                del found[-2:]
                return found, base + sum(map(len, found))
        spans = [m.span() for m in self.rx.finditer(buf, pos=base) if m.end() > m.start()]
        if len(spans) < 3:
            return None
        cut = spans[-3][1]
        return patterns.pieces_from_spans(buf, base, cut, spans[:-2]), cut

    def _final_specials(self, text: str, end: int) -> tuple[list[tuple[list, str | None]], int]:
        """The stretches ended by the special tokens in `text` that start at most at `end`, and
        where the text after the last of them starts."""
        out: list[tuple[list, str | None]] = []
        start = 0
        if self.special_rx is not None:
            for m in self.special_rx.finditer(text):
                if m.start() > end:
                    break
                out.append((self._pieces(self.context + text[start : m.start()], len(self.context)), m.group()))
                start = m.end()
                self.context = ""
        return out, start

    def _pieces(self, buf: str, pos: int) -> list:
        """The pieces of `buf` from `pos` on (what comes before is context only)."""
        return patterns.pieces(self.rx, buf, pos)


def read_text(path: str, block: int, progress=None) -> Iterator[str]:
    """The text of a UTF-8 file in parts of about `block` bytes; `progress(bytes_read)` after each.
    Invalid UTF-8 raises ValueError naming the file and the byte offset; a file that changed while
    it was read, OSError (`check_read_whole`)."""
    with open(path, "rb") as f:
        opened = file_length(f)
        yield from decode_utf8(read_blocks(f, block, progress), f"'{path}'")
        check_read_whole(path, opened, f.tell())


def file_length(f) -> int:
    """The length of the open binary file `f` when it is a regular file, else 0 (a pipe)."""
    st = os.fstat(f.fileno())
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def check_read_whole(path: str, opened: int, read: int) -> None:
    """OSError unless a file whose length was `opened` when it was opened gave `read` bytes by its
    end: truncated or written to meanwhile, its text would be that of no version of it. An
    `opened` of 0 says nothing (an empty file, a pipe, files in /proc). The Rust readers check the
    same (`input::check_read_whole`)."""
    if opened and read != opened:
        raise OSError(
            errno.EIO,
            f"'{path}': the file changed while it was read ({opened} bytes when opened, {read} at its end); "
            "encode a copy that nothing writes to",
        )


def read_blocks(f, block: int, progress=None) -> Iterator[bytes]:
    """The bytes of the binary file object `f` in blocks of up to `block` bytes;
    `progress(bytes_read)` after each read."""
    done = 0
    while True:
        data = f.read(block)
        done += len(data)
        if progress:
            progress(done)
        if not data:
            return
        yield data


def decode_utf8(blocks: Iterable[bytes], name: str, where: str = "") -> Iterator[str]:
    """The text of UTF-8 `blocks` (a character may be cut between two), in parts. Invalid UTF-8
    raises ValueError naming `name` (the file) and the byte offset (`where` says of what)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    done = 0
    for data in itertools.chain(blocks, [b""]):
        held = len(decoder.getstate()[0])  # bytes of a character cut by the last read
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{name} is not valid UTF-8: invalid byte sequence at byte offset {done - held + e.start}{where}; "
                "re-encode the file as UTF-8 (for example with iconv)"
            ) from None
        done += len(data)
        if text:
            yield text
        if not data:
            return


def check_readable_file(path: str) -> None:
    """Refuse a directory as a text file, as the Rust reader does."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"'{path}' is a directory; give the text files inside it")
