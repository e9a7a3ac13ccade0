"""Hugging Face `tokenizer.json`, written so that `tokenizers` and `transformers` give fastbpe's ids.

What `to_huggingface` writes, and why:
- the pre-tokenizer: the pattern as `Split(Regex, "Isolated")` (the text between matches stays a
  piece, as in fastbpe) followed by `ByteLevel` without its own regex; the regex is rewritten by
  `fastbpe.formats.onig` so that Oniguruma splits exactly as Python's `regex` does (explicit
  character classes, atomic groups for possessive repeats). No pattern: `ByteLevel` alone.
- the model: BPE over GPT-2's byte alphabet with the merges in priority order; tiktoken's rule
  (`from_tiktoken`) sets `ignore_merges`, so a piece that is a token is that token, as in
  tiktoken. The special tokens are in the model's vocab too, under their own text: `tokenizers`
  gives an added token the id the model has for its text, and numbers the others after the
  model's vocab (cl100k's 100257 would become 100256).
- `added_tokens`: the special tokens (special, matched as written, nothing stripped).
- the decoder: `ByteLevel`.
In a folder, `tokenizer_config.json` beside it names the class (`PreTrainedTokenizerFast`) and the
roles of the special tokens that have a conventional name (`<|endoftext|>` is the end of text),
and turns off `transformers`' clean-up of spaces in decoded text.
"""

from __future__ import annotations

import json
import os

from fastbpe import patterns
from fastbpe._io import write_atomic
from fastbpe.formats import onig
from fastbpe.tokenizer import token_to_str, unicode_to_bytes

BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}

# Special tokens that `transformers` should know by role, most usual name first.
ROLES = {
    "eos_token": ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "[EOS]"],
    "bos_token": ["<|begin_of_text|>", "<|startoftext|>", "<s>", "<bos>", "[BOS]", "<|endoftext|>"],
    "pad_token": ["<|pad|>", "<pad>", "[PAD]", "<|padding|>"],
    "unk_token": ["<unk>", "[UNK]"],
}


def pre_tokenizer(pattern_regex: str | None) -> dict:
    """The pre-tokenizer for a pattern's regex (None: no pre-tokenization)."""
    if pattern_regex is None:
        return dict(BYTE_LEVEL)
    split = {"type": "Split", "pattern": {"Regex": onig.translate(pattern_regex)}, "behavior": "Isolated", "invert": False}
    _check_compiles(split["pattern"]["Regex"], pattern_regex)
    return {"type": "Sequence", "pretokenizers": [split, dict(BYTE_LEVEL)]}


def _check_compiles(onig_regex: str, source: str) -> None:
    """Where `tokenizers` is installed, check that its engine takes the rewritten regex."""
    try:
        import tokenizers
    except ImportError:
        return
    try:
        tokenizers.Regex(onig_regex)
    except Exception as e:
        raise ValueError(
            f"pattern {source!r}: Hugging Face tokenizers refuses its rewritten form ({e}); "
            "simplify the pattern"
        ) from None


def model_vocab(tok) -> dict[str, int]:
    """The BPE model's vocab: ordinary tokens in GPT-2's byte alphabet, special tokens as their
    text. ValueError where one string would need two ids."""
    vocab = {token_to_str(t): i for i, t in sorted(tok.vocab.items()) if i not in tok._special_only}
    for s, i in tok.special_token_ids.items():
        if vocab.setdefault(s, i) != i:
            raise ValueError(
                f"special token {s!r} (id {i}) is written {s!r} in a tokenizer.json, as the ordinary token "
                f"{tok.vocab[vocab[s]]!r} (id {vocab[s]}) is: tokenizers would give both one id; "
                "rename the special token"
            )
    return vocab


def check_special_tokens_decode(tok) -> None:
    """ValueError for a special token that `tokenizers` would decode to other text. Its ByteLevel
    decoder also runs over special tokens: one written only with characters of GPT-2's byte
    alphabet ("<|é|>", "Ġx") is read as the bytes those characters stand for."""
    table = unicode_to_bytes()
    for s in tok.special_token_ids:
        if all(c in table for c in s) and bytes(table[c] for c in s) != s.encode("utf-8"):
            raise ValueError(
                f"special token {s!r}: Hugging Face tokenizers would decode it as "
                f"{bytes(table[c] for c in s).decode('utf-8', 'replace')!r} (its ByteLevel decoder reads "
                "characters of GPT-2's byte alphabet as bytes); rename it with ASCII characters only, "
                "or with a character outside that alphabet such as a space"
            )


def _added_token(s: str) -> dict:
    """A special token as `tokenizers` declares it: matched as written, nothing stripped."""
    return {"content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}


def to_json(tok) -> dict:
    """The `tokenizer.json` of a fastbpe Tokenizer, as a dict."""
    check_special_tokens_decode(tok)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, **_added_token(s)} for s, i in tok.special_token_ids.items()],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer(patterns.resolve(tok.pattern)),
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": tok._rule == "ranks",
            "vocab": model_vocab(tok),
            "merges": [[token_to_str(a), token_to_str(b)] for a, b in tok.merges],
        },
    }


def roles(tok) -> dict[str, str]:
    """eos/bos/pad/unk: the special tokens with a conventional name for each role."""
    out = {}
    for role, names in ROLES.items():
        found = next((s for s in names if s in tok.special_token_ids), None)
        if found is not None:
            out[role] = found
    return out


def tokenizer_config(tok) -> dict:
    """`tokenizer_config.json` for `transformers`' AutoTokenizer / PreTrainedTokenizerFast."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        **roles(tok),
        "added_tokens_decoder": {str(i): _added_token(s) for s, i in tok.special_token_ids.items()},
    }


def is_folder(path: str) -> bool:
    return os.path.isdir(path) or path.endswith(("/", os.sep))


def write(tok, path: str | os.PathLike) -> str:
    """Write `tok` for Hugging Face: a `tokenizer.json` at `path`, or, where `path` is a folder (one
    that exists, or a str ending with a separator, which is created), `tokenizer.json` and
    `tokenizer_config.json` in it. Returns the path of the `tokenizer.json`."""
    path = os.fspath(path)
    data = json.dumps(to_json(tok), ensure_ascii=False).encode("utf-8")
    if not is_folder(path):
        write_atomic(path, data)
        return path
    os.makedirs(path, exist_ok=True)
    target = os.path.join(path, "tokenizer.json")
    write_atomic(target, data)
    config = json.dumps(tokenizer_config(tok), ensure_ascii=False, indent=1)
    write_atomic(os.path.join(path, "tokenizer_config.json"), config.encode("utf-8"))
    return target
