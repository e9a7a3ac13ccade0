"""fastbpe's own tokenizer file (`Tokenizer.save` / `Tokenizer.load`) and the pickled state.

The file is a JSON object: `format` "fastbpe.tokenizer", `version`, `pattern`, `special_tokens`
(token -> id), `vocab` (id -> token in GPT-2's byte alphabet), `merges` (pairs of such tokens),
`rule` ("merges", or tiktoken's "ranks"), and, for a tokenizer read from Hugging Face, the
fields of `hf_fields` (`ignore_merges`, `post_processor`, `huggingface`: the pipeline's spec),
which make the file version 2 so that an older fastbpe refuses it rather than giving other ids.
A pickle holds the same fields with bytes for tokens. Reading either checks every field and
that the parts fit together: a malformed one is a ValueError naming the file (or the pickle)
and the field. `load` also reads a Hugging Face `tokenizer.json`, told apart by its content.
"""

from __future__ import annotations

import json
import os

import regex

from fastbpe import patterns
from fastbpe._io import write_atomic
from fastbpe.formats._json import json_type, read_json
from fastbpe.formats.gpt2 import str_to_token, token_to_str
from fastbpe.special import check_special_tokens
from fastbpe.vocab import ID_LIMIT, MergeError, check_merges, check_ordinary_tokens, check_vocab, special_only_ids

FORMAT = "fastbpe.tokenizer"
VERSION = 1
# Files and pickles that hold a Hugging Face pipeline, a post-processor or ignore_merges (fields
# an older fastbpe would ignore, giving other ids): written only then, so others stay readable.
VERSION_HF = 2

# ---- writing ------------------------------------------------------------------------------------


def to_dict(tok) -> dict:
    """The file's JSON object for `tok`."""
    out = {
        "format": FORMAT,
        "version": VERSION,
        "pattern": tok.pattern,
        "special_tokens": tok.special_token_ids,
        # Token bytes in GPT-2's byte-to-unicode alphabet: readable and lossless.
        "vocab": {str(i): token_to_str(t) for i, t in sorted(tok.vocab.items())},
        "merges": [[token_to_str(a), token_to_str(b)] for a, b in tok.merges],
        "rule": tok._rule,
    }
    hf = hf_fields(tok)
    if hf:
        out["version"] = VERSION_HF
        out.update(hf)
    return out


def save(tok, path: str | os.PathLike) -> None:
    """Write `tok` as JSON (atomically: a complete file or none)."""
    write_atomic(os.fspath(path), json.dumps(to_dict(tok), ensure_ascii=False, indent=1).encode("utf-8"))


def hf_fields(tok) -> dict:
    """What a tokenizer read from Hugging Face keeps beyond fastbpe's own fields (none for
    other tokenizers): `ignore_merges`, `post_processor` (the ids before and after a text),
    `huggingface` (the pipeline's spec)."""
    out: dict = {}
    if tok._ignore_merges:
        out["ignore_merges"] = True
    if tok._post[0] or tok._post[1]:
        out["post_processor"] = {"prefix": list(tok._post[0]), "suffix": list(tok._post[1])}
    if tok._hf is not None:
        out["huggingface"] = tok._hf
    return out


def state(tok) -> dict:
    """The pickled state: what decides the ids. The Rust encoder and the other caches are left
    out (they cannot be pickled, and are rebuilt on first use); so are merges derived from
    tiktoken ranks."""
    hf = hf_fields(tok)
    return {
        "format": FORMAT,
        "version": VERSION_HF if hf else VERSION,
        "vocab": tok.vocab,
        "merges": tok._merges if tok._rule == "merges" else None,
        "special_tokens": tok.special_token_ids,
        "pattern": tok.pattern,
        "rule": tok._rule,
        **hf,
    }


# ---- reading ------------------------------------------------------------------------------------


def load(cls, path: str | os.PathLike):
    """A `cls` (fastbpe Tokenizer) from a file written by `save`, or from a Hugging Face
    `tokenizer.json`; see `Tokenizer.load`."""
    from fastbpe.formats import huggingface

    path = os.fspath(path)
    data = read_json(path, "a fastbpe tokenizer file or a Hugging Face tokenizer.json")
    if huggingface.is_tokenizer_json(data):
        return huggingface.read_data(cls, data, path)
    return cls._from_parts(**parts_from_file(data, path))


def parts_from_file(data, path: str) -> dict:
    """The arguments of `Tokenizer._setup` from the JSON value of a file, checked."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a fastbpe tokenizer file (no \"format\": \"{FORMAT}\") nor a Hugging Face "
            "tokenizer.json (no \"model\")"
        )
    if data.get("version") not in (VERSION, VERSION_HF):
        raise ValueError(
            f"{path} has format version {data.get('version')!r}; this fastbpe reads versions {VERSION} and "
            f"{VERSION_HF}: upgrade fastbpe"
        )
    for key in ("pattern", "special_tokens", "vocab", "merges"):
        if key not in data:
            raise ValueError(f"{path}: the field {key!r} is missing")
    rule = data.get("rule", "merges")
    if rule not in ("merges", "ranks"):
        raise ValueError(f"{path}: the field 'rule' is {rule!r}; expected 'merges' or 'ranks'")
    try:
        pattern = patterns.canonical(data["pattern"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: the field 'pattern': {e}") from None
    vocab = _vocab_field(path, data["vocab"])
    merges = _merges_field(path, data["merges"])
    specials = _special_tokens_field(path, data["special_tokens"], vocab)
    special_only = _special_only_of(rule, vocab, merges, specials, data.get("huggingface"), path)
    try:
        check_ordinary_tokens(vocab, merges, special_only)
    except MergeError as e:
        raise ValueError(f"{path}: the field 'merges' does not fit the field 'vocab': {e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: the field 'vocab': {e}") from None
    return _parts(vocab, merges, specials, pattern, rule, special_only, data, path)


def parts_from_state(state) -> dict:
    """The arguments of `Tokenizer._setup` from a pickled state, checked as construction and
    `load` check their input: a pickle is not trusted to hold a valid tokenizer."""
    where = "pickled Tokenizer"
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{where}: not the state of a fastbpe Tokenizer (no format {FORMAT!r})")
    if state.get("version") not in (VERSION, VERSION_HF):
        raise ValueError(
            f"{where}: state version {state.get('version')!r}; this fastbpe reads versions {VERSION} and "
            f"{VERSION_HF}: pickle it with this version of fastbpe"
        )
    rule = state.get("rule")
    if rule not in ("merges", "ranks"):
        raise ValueError(f"{where}: rule {rule!r}; expected 'merges' or 'ranks'")
    try:
        vocab = check_vocab(state.get("vocab"))
        merges = None if rule == "ranks" and state.get("merges") is None else check_merges(state.get("merges"))
        if isinstance(state.get("special_tokens"), dict):
            check_special_tokens(list(state["special_tokens"]))
        pattern = patterns.canonical(state.get("pattern"))
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None
    specials = _special_tokens_field(where, state.get("special_tokens"), vocab)
    special_only = _special_only_of(rule, vocab, merges, specials, state.get("huggingface"), where)
    try:
        check_ordinary_tokens(vocab, merges, special_only)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return _parts(vocab, merges, specials, pattern, rule, special_only, state, where)


def _parts(vocab, merges, specials, pattern, rule, special_only, data: dict, where: str) -> dict:
    """The arguments of `Tokenizer._setup`, the parts already checked to fit together; what
    `hf_fields` wrote is read from `data` (absent fields: a tokenizer of fastbpe's own)."""
    ignore = data.get("ignore_merges", False)
    if not isinstance(ignore, bool) or (ignore and rule != "merges"):
        raise ValueError(f"{where}: the field 'ignore_merges' is {ignore!r}; expected true or false, and only with rule 'merges'")
    post = data.get("post_processor")
    if post is not None:
        ok = isinstance(post, dict) and all(
            isinstance(post.get(k), list) and all(type(i) is int and i in vocab for i in post[k])
            for k in ("prefix", "suffix")
        )
        if not ok:
            raise ValueError(f"{where}: the field 'post_processor' must be {{\"prefix\": [ids], \"suffix\": [ids]}} of ids in the vocabulary")
        post = (list(post["prefix"]), list(post["suffix"]))
    hf = data.get("huggingface")
    if hf is not None:
        if pattern is not None:
            raise ValueError(f"{where}: the field 'huggingface' needs the pattern null")
        from fastbpe.pretokenize import Pipeline

        Pipeline.from_spec(hf, f"{where}: the field 'huggingface'")
    return dict(
        vocab=vocab, merges=merges, special_token_ids=specials, pattern=pattern, rule=rule, special_only=special_only,
        ignore_merges=ignore, post=post or ([], []), hf=hf, check=False,
    )


_DECIMAL = regex.compile(r"0|[1-9][0-9]*")


def _vocab_field(path: str, raw) -> dict[int, bytes]:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the field 'vocab' must be an object of id -> token, not an {json_type(raw)}")
    vocab: dict[int, bytes] = {}
    for k, t in raw.items():
        if not _DECIMAL.fullmatch(k) or int(k) >= ID_LIMIT:
            raise ValueError(f"{path}: the field 'vocab' has the key {k!r}; keys are ids, integers in [0, 2**32)")
        if not isinstance(t, str) or not t:
            raise ValueError(f"{path}: the field 'vocab' gives id {k} {t!r}; tokens are non-empty strings")
        vocab[int(k)] = str_to_token(t, f"{path}: the field 'vocab', id {k}")
    return vocab


def _merges_field(path: str, raw) -> list[tuple[bytes, bytes]]:
    if not isinstance(raw, list):
        raise ValueError(f"{path}: the field 'merges' must be an array of pairs, not an {json_type(raw)}")
    merges = []
    for n, m in enumerate(raw):
        if not (type(m) is list and len(m) == 2 and type(m[0]) is str and type(m[1]) is str and m[0] and m[1]):
            raise ValueError(f"{path}: the field 'merges' has {m!r} at {n}; each merge is a pair of token strings")
        where = f"{path}: the field 'merges', item {n}"
        merges.append((str_to_token(m[0], where), str_to_token(m[1], where)))
    return merges


def _special_tokens_field(path: str, raw, vocab: dict[int, bytes]) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the field 'special_tokens' must be an object of token -> id, not an {json_type(raw)}")
    first: dict[int, str] = {}  # special tokens may share an id: the first one names it in 'vocab'
    for s, i in raw.items():
        if not s:
            raise ValueError(f"{path}: the field 'special_tokens' has an empty special token")
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"{path}: the field 'special_tokens' gives {s!r} the id {i!r}, not an int")
        if vocab.get(i) != first.setdefault(i, s).encode("utf-8"):
            raise ValueError(
                f"{path}: the field 'special_tokens' gives {s!r} the id {i}, "
                f"but the field 'vocab' has {vocab.get(i)!r} there"
            )
    return dict(raw)


def _special_only_of(rule: str, vocab, merges, specials: dict[str, int], hf, where: str) -> set[int]:
    """The special-only ids of a saved tokenizer: every special token under tiktoken's rule;
    under merges, as `special_only_ids` finds them, the non-special added tokens of a Hugging Face
    pipeline included, with the ids that the file's model vocab did not have (`added_ids`)."""
    if rule == "ranks":
        return set(specials.values())
    if hf is None:
        return special_only_ids(vocab, merges, specials, set())
    if not isinstance(hf, dict) or not isinstance(hf.get("added_tokens"), list) or not isinstance(hf.get("added_ids", []), list):
        raise ValueError(f"{where}: the field 'huggingface' must be an object with 'added_tokens' and 'added_ids'")
    every = dict(specials)
    for t in hf["added_tokens"]:
        if isinstance(t, dict) and isinstance(t.get("content"), str) and t.get("id") in vocab:
            every.setdefault(t["content"], t["id"])
    added = {i for i in hf.get("added_ids", []) if i in vocab}
    return special_only_ids(vocab, merges, every, added)
