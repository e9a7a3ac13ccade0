"""Pre-tokenization patterns.

The named patterns are tiktoken's own for those encodings; fastbpe has hand-written splitters
for the ones listed in `BUILTIN` (exactly equal to `regex.findall(pattern, text)`), and applies
any other pattern with Python's `regex` module.
"""

from __future__ import annotations

# GPT-2 (tiktoken's r50k_base/gpt2). Equivalent to the original
# r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+".
GPT2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# cl100k_base (GPT-3.5/GPT-4).
CL100K = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# o200k_base (GPT-4o).
O200K = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

NAMED = {"gpt2": GPT2, "cl100k": CL100K, "o200k": O200K}

# Names with a hand-written splitter in the Rust core.
BUILTIN = frozenset({"gpt2", "cl100k", "o200k"})


def resolve(pattern: str | None) -> str | None:
    """The regex for a pattern name or a custom regex (None: no pre-tokenization)."""
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str (a name or a regex) or None, not {type(pattern).__name__}")
    return NAMED.get(pattern, pattern)
