"""Special tokens: checking them, finding them in text, and tiktoken's policy for text that holds them.

`check_special_tokens` (a list of special tokens) and `check_special_ids` (special token -> id)
check arguments for `Tokenizer`, `train`, `from_tiktoken` and `tiktoken_compat.Encoding`: a wrong
type (one string, a non-str item, a non-int id) is a TypeError, a wrong value (an empty or
repeated token, an id out of range) a ValueError. `special_regex` is the one regex that finds
special tokens in text (the longest first where several start at one place); text is split on it
before pre-tokenization. `special_set`, `disallowed_error` and the `refuse_disallowed*` functions
are tiktoken's `allowed_special` / `disallowed_special`, in strings, streams and files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache

import regex

from fastbpe.vocab import check_id


def check_special_tokens(special_tokens: Iterable[str] | None) -> list[str]:
    """The special tokens as a list: distinct non-empty strings (`Tokenizer` and `train` both
    validate them here)."""
    if special_tokens is None:
        return []
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens must be a list of strings, not one string: use [{special_tokens!r}]")
    if not isinstance(special_tokens, Iterable):
        raise TypeError(f"special_tokens must be a list of strings, not {type(special_tokens).__name__}")
    specials = list(special_tokens)
    for s in specials:
        if not isinstance(s, str):
            raise TypeError(f"special tokens must be strings, got {s!r}")
        if not s:
            raise ValueError("special tokens must not be empty strings")
    seen = set()
    for s in specials:
        if s in seen:
            raise ValueError(f"special token {s!r} is given twice")
        seen.add(s)
    return specials


def check_special_ids(special_tokens: Mapping[str, int] | None) -> dict[str, int]:
    """Special tokens with their ids (`from_tiktoken`, `tiktoken_compat.Encoding`); they may
    share an id."""
    if special_tokens is None:
        return {}
    if not isinstance(special_tokens, Mapping):
        raise TypeError(
            f"special_tokens must be a dict of special token -> id, e.g. {{'<|endoftext|>': 100257}}, "
            f"not {type(special_tokens).__name__}"
        )
    names = check_special_tokens(list(special_tokens))
    # Special tokens may share an id (tiktoken's o200k_harmony has two names for 200018).
    return {s: check_id(special_tokens[s], f"special token {s!r}") for s in names}


# ---- special tokens in text: tiktoken's `allowed_special` / `disallowed_special` ---------------

# The defaults: every special token allowed (CS336's), none refused. Compared by identity on the
# hot path; an equal string that is another object takes the general path, to the same ids.
ALL = "all"


def special_set(value, name: str) -> frozenset[str] | None:
    """`allowed_special` or `disallowed_special` (`name`) as a frozenset of strings; None for "all"."""
    if isinstance(value, str):
        if value == "all":
            return None
        raise TypeError(
            f'{name} must be "all" or a set of special-token strings, not the string {value!r}: '
            f"write {{{value!r}}} for that one token, or set() for none"
        )
    if isinstance(value, frozenset):
        tokens = value
    else:
        try:
            tokens = frozenset(value)
        except TypeError:
            raise TypeError(
                f'{name} must be "all" or a set of special-token strings, not {type(value).__name__}'
            ) from None
    for t in tokens:
        if not isinstance(t, str):
            raise TypeError(f"{name} holds {t!r}, which is not a str: special tokens are strings")
    return tokens


def _longest_first(tokens: Iterable[str]) -> list[str]:
    """The non-empty tokens, longest first: where several start at one place, the longest wins."""
    return sorted((t for t in tokens if t), key=lambda t: (-len(t), t))


@lru_cache(maxsize=128)
def special_regex(tokens: frozenset[str]) -> regex.Pattern:
    """One group matching any of `tokens` (the longest first where several start at one place):
    `split` gives the text between them at even places, the special tokens at odd ones."""
    return regex.compile("(" + "|".join(regex.escape(t) for t in _longest_first(tokens)) + ")")


def policy(every: frozenset[str], allowed_special, disallowed_special) -> tuple[frozenset[str], frozenset[str]]:
    """tiktoken's reading of `allowed_special` and `disallowed_special` for a tokenizer whose
    special tokens are `every`: (the special tokens to recognize, the texts to refuse). Strings
    that are not among `every` are ignored in `allowed_special` and refused in
    `disallowed_special`, as in tiktoken."""
    allowed = special_set(allowed_special, "allowed_special")
    allowed = every if allowed is None else allowed & every
    disallowed = special_set(disallowed_special, "disallowed_special")
    if disallowed is None:
        disallowed = every - allowed
    elif "" in disallowed:
        disallowed = disallowed - {""}
    return allowed, disallowed


def disallowed_error(token: str, where: str, tokenizer: str) -> ValueError:
    """tiktoken's error for special-token text it was told to refuse, with the three fixes;
    `where` says where it was ("" or " in text 3"), `tokenizer` names the object in the fixes."""
    return ValueError(
        f"Encountered text corresponding to disallowed special token {token!r}{where}.\n"
        f"If you want this text to be encoded as a special token, pass it to `allowed_special`, "
        f"e.g. `allowed_special={{{token!r}, ...}}`.\n"
        f"If you want this text to be encoded as normal text, disable the check for this token by passing "
        f"`disallowed_special=({tokenizer}.special_tokens_set - {{{token!r}}})`.\n"
        f"To disable this check for all special tokens, pass `disallowed_special=()`.\n"
    )


def refuse_disallowed(texts: Iterable[str], disallowed: frozenset[str], tokenizer: str, name_each: bool) -> None:
    """Raise `disallowed_error` for the first text holding one of `disallowed` (the leftmost
    one in it); `name_each` says which text in the message."""
    rx = special_regex(disallowed)
    for k, text in enumerate(texts):
        m = rx.search(text)
        if m is not None:
            raise disallowed_error(m.group(), f" in text {k}" if name_each else "", tokenizer)


def refuse_disallowed_in_stream(texts: Iterable[str], disallowed: frozenset[str]) -> Iterator[str]:
    """The strings of `texts`, unchanged, after checking that their concatenation holds none
    of `disallowed` (one may straddle two strings)."""
    rx = special_regex(disallowed)
    keep = max(map(len, disallowed)) - 1
    tail, done = "", 0
    for s in texts:
        if isinstance(s, str):
            window = tail + s
            m = rx.search(window)
            if m is not None:
                where = f" at character {done - len(tail) + m.start()} of the stream"
                raise disallowed_error(m.group(), where, "tok")
            tail = window[max(0, len(window) - keep) :]
            done += len(s)
        yield s


def refuse_disallowed_in_file(path: str, disallowed: frozenset[str]) -> None:
    """Raise `disallowed_error` if the file holds one of `disallowed` (searched as UTF-8 bytes,
    in blocks that overlap by less than the longest token)."""
    tokens = [t.encode("utf-8") for t in _longest_first(disallowed)]
    rx = regex.compile(b"|".join(regex.escape(t) for t in tokens))
    keep = max(map(len, tokens)) - 1
    tail, done = b"", 0
    with open(path, "rb") as f:
        while block := f.read(1 << 23):
            window = tail + block
            m = rx.search(window)
            if m is not None:
                where = f" in '{path}' at byte offset {done - len(tail) + m.start()}"
                raise disallowed_error(m.group().decode("utf-8"), where, "tok")
            tail = window[max(0, len(window) - keep) :]
            done += len(block)
