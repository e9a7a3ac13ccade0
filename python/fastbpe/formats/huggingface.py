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

import regex

from fastbpe import patterns
from fastbpe._io import write_atomic
from fastbpe.formats import onig
from fastbpe.formats._json import read_json
from fastbpe.formats.gpt2 import str_to_token, token_to_str, unicode_to_bytes
from fastbpe.formats.tiktoken import merges_from_ranks
from fastbpe.vocab import ID_LIMIT, MergeError, special_only_ids

BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}

# Special tokens that `transformers` should know by role, most usual name first.
ROLES = {
    "eos_token": ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "[EOS]"],
    "bos_token": ["<|begin_of_text|>", "<|startoftext|>", "<s>", "<bos>", "[BOS]", "<|endoftext|>"],
    "pad_token": ["<|pad|>", "<pad>", "[PAD]", "<|padding|>"],
    "unk_token": ["<unk>", "[UNK]"],
}


# A custom pattern travels in a comment before its rewritten form, so that `from_huggingface`
# gives back the pattern itself; `\`, `)` and `%` are percent-encoded (a `)` would end the comment).
COMMENT = "(?#fastbpe pattern:"
_QUOTED = {"%": "%25", ")": "%29", "\\": "%5C"}


def split_regex(pattern: str | None) -> str | None:
    """The regex of the `Split` pre-tokenizer for a tokenizer's pattern (None: no pre-tokenization)."""
    if pattern is None:
        return None
    rewritten = onig.translate(patterns.resolve(pattern))
    if pattern in patterns.NAMED:
        return rewritten
    return COMMENT + "".join(_QUOTED.get(c, c) for c in pattern) + ")" + rewritten


def pre_tokenizer(pattern: str | None) -> dict:
    """The pre-tokenizer for a tokenizer's pattern (None: no pre-tokenization)."""
    source = split_regex(pattern)
    if source is None:
        return dict(BYTE_LEVEL)
    _check_compiles(source, pattern)
    split = {"type": "Split", "pattern": {"Regex": source}, "behavior": "Isolated", "invert": False}
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
    for s, i in _added(tok).items():
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


def _added(tok) -> dict[str, int]:
    """Every added token, content -> id: the special tokens and a pipeline's other added tokens."""
    out = dict(tok.special_token_ids)
    for t in (tok._hf or {}).get("added_tokens", []):
        out.setdefault(t["content"], t["id"])
    return out


def _added_tokens_json(tok) -> list[dict]:
    """`added_tokens`: a pipeline's own entries (flags kept), else the special tokens."""
    if tok._hf is not None:
        return [dict(t) for t in tok._hf["added_tokens"]]
    return [{"id": i, **_added_token(s)} for s, i in tok.special_token_ids.items()]


def _post_processor_json(tok) -> dict | None:
    """The ids around a text (`add_special_tokens`) as TemplateProcessing's single template."""
    prefix, suffix = tok._post
    if not prefix and not suffix:
        return None
    names = {i: s for s, i in reversed(list(_added(tok).items()))}

    def name(i: int) -> str:
        return names.get(i) or token_to_str(tok.vocab[i])

    items = [{"SpecialToken": {"id": name(i), "type_id": 0}} for i in prefix]
    items.append({"Sequence": {"id": "A", "type_id": 0}})
    items += [{"SpecialToken": {"id": name(i), "type_id": 0}} for i in suffix]
    pair = items + [{"Sequence": {"id": "B", "type_id": 1}}]
    special = {name(i): {"id": name(i), "ids": [i], "tokens": [name(i)]} for i in [*prefix, *suffix]}
    return {"type": "TemplateProcessing", "single": items, "pair": pair, "special_tokens": special}


def _added_token(s: str) -> dict:
    """A special token as `tokenizers` declares it: matched as written, nothing stripped."""
    return {"content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}


def check_distinct_ids(tok) -> None:
    """ValueError where two special tokens share an id (tiktoken's o200k_harmony does): a
    tokenizer.json keeps one added token per id, so `tokenizers` would recognize only one of them
    and read the other as plain text."""
    first: dict[int, str] = {}
    for s, i in _added(tok).items():
        if first.setdefault(i, s) != s:
            raise ValueError(
                f"special tokens {first[i]!r} and {s!r} share the id {i}: a Hugging Face tokenizer.json keeps one "
                f"added token per id, so tokenizers would read {first[i]!r} or {s!r} as plain text; give each its "
                "own id (or leave one out) before writing it for Hugging Face"
            )


def to_json(tok) -> dict:
    """The `tokenizer.json` of a fastbpe Tokenizer, as a dict."""
    check_special_tokens_decode(tok)
    check_distinct_ids(tok)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added_tokens_json(tok),
        "normalizer": tok._hf["normalizer"] if tok._hf is not None else None,
        "pre_tokenizer": tok._hf["pre_tokenizer"] if tok._hf is not None else pre_tokenizer(tok.pattern),
        "post_processor": _post_processor_json(tok),
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": tok._rule == "ranks" or tok._ignore_merges,
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


# ---- reading ------------------------------------------------------------------------------------


def read(cls, source):
    """A `cls` (fastbpe Tokenizer) from a Hugging Face byte-level BPE tokenizer: a path to a
    `tokenizer.json` (or to the folder holding it), its JSON text, or a `tokenizers.Tokenizer`
    (`Tokenizer.from_huggingface`). The ids and the decoded text are those of
    `tokenizers.Tokenizer.encode(text, add_special_tokens=...)` and its `decode` (with
    `skip_special_tokens=False`).

    Read: a BPE model (vocab, merges as "a b" or [a, b], `ignore_merges`); the normalizers
    NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace and Sequence; the pre-tokenizers Split
    (every behavior, invert, a Regex or a String), Digits, Whitespace, WhitespaceSplit,
    Punctuation, Sequence, and ByteLevel (with or without its regex, `add_prefix_space`: a
    space before each piece that does not start with one), which must end them; added tokens
    with `lstrip`, `rstrip`, `single_word` and `normalized` as `tokenizers` applies them; the
    post-processors TemplateProcessing (the single template), RobertaProcessing,
    BertProcessing, ByteLevel and Sequence, whose ids `encode(..., add_special_tokens=True)`
    adds; the ByteLevel decoder. Special added tokens are fastbpe's special tokens
    (`allowed_special` applies to them); other added tokens are recognized always, by
    `encode_ordinary` too, as `tokenizers` does. Anything else (Metaspace, BertNormalizer,
    truncation, another model or decoder, ...) raises ValueError naming it.

    A file that is ByteLevel alone, or one regex Split (isolated) and ByteLevel without its
    regex, with no normalizer and plain special tokens, keeps fastbpe's own pre-tokenization
    (the named patterns in Rust). Any other is pre-tokenized by `fastbpe.pretokenize.Pipeline`
    in Python, then encoded in Rust: slower, and `encode_batch` encodes one text after the
    other; `encode_iterable` and `encode_file` hold text until an added token that cuts it
    (a special token such as `<|endoftext|>`), so memory follows the text between them.

    A Split regex that fastbpe wrote, or that is a named pattern's text, gives back that
    pattern (the named ones run in Rust). Any other regex runs through Python's `regex`
    module, and is refused where it holds a construct that module reads otherwise than
    Oniguruma, Hugging Face's engine ({n,m}+, ^ and $ outside a class, \\z, \\h, (?m),
    ...). Both engines take character classes such as \\p{L}, \\w and \\s from their own
    Unicode tables, and the normalizers come from Python's `unicodedata`: on characters that
    only recent Unicode versions assign the two can differ; on all other text the ids are
    HF's."""
    data, where = _load(source)
    return read_data(cls, data, where)


def is_tokenizer_json(data) -> bool:
    """Whether a JSON value looks like a Hugging Face tokenizer.json (a model, no fastbpe format)."""
    return isinstance(data, dict) and "format" not in data and isinstance(data.get("model"), dict)


def read_data(cls, data, where: str):
    """`read` from the JSON value of a tokenizer.json; `where` names it in errors."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not a tokenizer.json: expected a JSON object")
    _check_components(data, where)
    model = data.get("model")
    added = _added_tokens(data.get("added_tokens"), where)
    every_added = {t.content: t.id for t in added}
    specials = {t.content: t.id for t in added if t.special}
    vocab, in_model = _model_vocab(model.get("vocab"), every_added, where)
    merges = _merges(model.get("merges"), where)
    pattern, pipeline = _pre_tokenization(data, added, where)
    post = post_processor(data.get("post_processor"), where, vocab)
    added_ids = {i for i in every_added.values() if i not in in_model}
    ignore_merges = bool(model.get("ignore_merges"))
    if ignore_merges and merges_from_ranks(vocab, set(every_added.values())) == merges:
        # tiktoken's rule: the whole piece if it is a token, else merges by the rank (id) of
        # their result: the file's merges are the ones that rule derives from the ids.
        rule, special_only, ignore_merges = "ranks", set(every_added.values()), False
    else:
        rule, special_only = "merges", special_only_ids(vocab, merges, every_added, added_ids)
    if pipeline is not None:
        pipeline["added_ids"] = sorted(added_ids)
    try:
        tok = cls._from_parts(
            vocab, merges, specials, pattern, rule, special_only, ignore_merges=ignore_merges, post=post, hf=pipeline
        )
    except MergeError as e:
        raise ValueError(f"{where}: model.merges does not fit model.vocab: {e}") from None
    except ValueError as e:
        raise ValueError(f"{where}: model.vocab: {e}") from None
    if pipeline is not None:
        tok._pipeline  # built now, so that what it refuses is refused here
    return tok


def _pre_tokenization(data: dict, added, where: str) -> tuple[str | None, dict | None]:
    """(pattern, None) where fastbpe's own pre-tokenization gives Hugging Face's pieces (no
    normalizer; added tokens that are special, stripped of nothing, all matched in one pass;
    ByteLevel, or one regex Split isolated then ByteLevel without its regex); otherwise
    (None, the pipeline's spec for `fastbpe.pretokenize.Pipeline`)."""
    from fastbpe import pretokenize

    plain = (
        data.get("normalizer") is None
        and all(t.special and not (t.lstrip or t.rstrip or t.single_word) for t in added)
        and len({t.normalized for t in added}) <= 1
    )
    if plain:
        try:
            pattern = _pattern(data.get("pre_tokenizer"), where)
        except ValueError:
            pattern = ""  # the pipeline reads it, or says what it does not support
        # fastbpe's pieces skip empty matches, where Oniguruma's splits at them: a regex that
        # matches the empty string goes through the pipeline, which follows Oniguruma.
        if pattern != "" and (pattern is None or pattern in patterns.NAMED or patterns.compile(pattern).search("") is None):
            return pattern, None
    spec = {
        "normalizer": data.get("normalizer"),
        "pre_tokenizer": data.get("pre_tokenizer"),
        "added_tokens": [t.to_json() for t in added],
    }
    pretokenize.Pipeline.from_spec(spec, where)  # refuses what it cannot follow, naming it
    return None, spec


def post_processor(spec, where: str, vocab: dict[int, bytes]) -> tuple[list[int], list[int]]:
    """The ids a post-processor puts before and after a single sequence when special tokens are
    added: TemplateProcessing's single template, RobertaProcessing's and BertProcessing's cls and
    sep, a Sequence of them; ByteLevel adds none (it changes only offsets)."""
    if spec is None:
        return [], []
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "ByteLevel":
        return [], []
    if kind == "Sequence":
        prefix, suffix = [], []
        inner = spec.get("processors")
        if not isinstance(inner, list):
            raise ValueError(f"{where}: the Sequence post_processor needs a 'processors' array")
        for p in inner:
            before, after = post_processor(p, where, vocab)
            prefix, suffix = before + prefix, suffix + after
        return prefix, suffix
    if kind in ("RobertaProcessing", "BertProcessing"):
        ids = []
        for key in ("cls", "sep"):
            pair = spec.get(key)
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise ValueError(f"{where}: the {kind} post_processor's {key} is {pair!r}; expected [token, id]")
            ids.append(_known_id(pair[1], vocab, where, f"the {kind} {key}"))
        return [ids[0]], [ids[1]]
    if kind == "TemplateProcessing":
        return _template(spec, where, vocab)
    raise pretokenize_unsupported(f"{where}: the post_processor {_describe(spec)} is not supported")


def pretokenize_unsupported(message: str) -> ValueError:
    from fastbpe.pretokenize import Unsupported

    return Unsupported(message)


def _known_id(i, vocab: dict[int, bytes], where: str, what: str) -> int:
    i = _check_id(i, where, what)
    if i not in vocab:
        raise ValueError(f"{where}: {what} has the id {i}, which is not in the vocabulary")
    return i


def _template(spec: dict, where: str, vocab: dict[int, bytes]) -> tuple[list[int], list[int]]:
    """TemplateProcessing's single template: the special tokens' ids around `$A`."""
    single, tokens = spec.get("single"), spec.get("special_tokens") or {}
    if not isinstance(single, list) or not isinstance(tokens, dict):
        raise ValueError(f"{where}: the TemplateProcessing post_processor needs a 'single' array and 'special_tokens'")
    prefix: list[int] = []
    suffix: list[int] | None = None
    for item in single:
        if isinstance(item, dict) and isinstance(item.get("Sequence"), dict):
            if item["Sequence"].get("id") != "A" or suffix is not None:
                raise pretokenize_unsupported(
                    f"{where}: the TemplateProcessing single template {single!r} is not supported: it must hold $A once"
                )
            suffix = []
            continue
        name = item.get("SpecialToken", {}).get("id") if isinstance(item, dict) and isinstance(item.get("SpecialToken"), dict) else None
        entry = tokens.get(name) if isinstance(name, str) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("ids"), list):
            raise ValueError(f"{where}: the TemplateProcessing template item {item!r} names no special token with ids")
        ids = [_known_id(i, vocab, where, f"the template's special token {name!r}") for i in entry["ids"]]
        (prefix if suffix is None else suffix).extend(ids)
    if suffix is None:
        raise pretokenize_unsupported(f"{where}: the TemplateProcessing single template {single!r} has no $A")
    return prefix, suffix


def _load(source) -> tuple[object, str]:
    """The JSON value of `source` and how errors name it."""
    if type(source).__module__.split(".")[0] == "tokenizers" and hasattr(source, "to_str"):
        return json.loads(source.to_str()), "the tokenizers.Tokenizer"
    if isinstance(source, str) and source.lstrip().startswith("{"):
        try:
            return json.loads(source), "the tokenizer JSON"
        except ValueError as e:
            raise ValueError(f"the tokenizer JSON string is not valid JSON: {e}") from None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "from_huggingface takes a path to a tokenizer.json (or its folder), its JSON text, or a "
            f"tokenizers.Tokenizer, not {type(source).__name__}"
        )
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: '{path}'")
    return read_json(path, "a Hugging Face tokenizer.json"), path


def _describe(component) -> str:
    if isinstance(component, dict):
        return repr(component.get("type", "without a type"))
    return repr(component)


def _check_components(data: dict, where: str) -> None:
    """The parts fastbpe does not model must be absent or change no id and no decoded text."""
    model = data.get("model")
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or "vocab" not in model:
        raise ValueError(f"{where}: the model is {_describe(model)}; fastbpe reads BPE models only")
    if model.get("dropout") not in (None, 0, 0.0):
        raise ValueError(f"{where}: the model has dropout {model['dropout']!r}; fastbpe encodes deterministically (dropout null)")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise ValueError(f"{where}: the model's {key} is {model[key]!r}; byte-level BPE has none")
    if model.get("byte_fallback"):
        raise ValueError(f"{where}: the model sets byte_fallback; fastbpe reads byte-level BPE, which needs none")
    for key in ("truncation", "padding"):
        if data.get(key) is not None:
            raise ValueError(f"{where}: {key} is set ({data[key]!r}); fastbpe does not truncate or pad: set it to null")
    decoder = data.get("decoder")
    if not (isinstance(decoder, dict) and decoder.get("type") == "ByteLevel"):
        raise ValueError(f"{where}: the decoder {_describe(decoder)} is not supported; byte-level BPE decodes with ByteLevel")


def _check_id(i, where: str, what: str) -> int:
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < ID_LIMIT:
        raise ValueError(f"{where}: {what} has the id {i!r}; ids are integers in [0, 2**32)")
    return i


def _added_tokens(raw, where: str) -> list:
    """The added tokens (`fastbpe.pretokenize.AddedToken`), contents and ids distinct, each
    decoding to its own text."""
    from fastbpe import pretokenize

    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{where}: added_tokens must be an array")
    out = []
    contents: dict[str, int] = {}
    owner: dict[int, str] = {}
    for n, entry in enumerate(raw):
        t = pretokenize.added_token_of(entry, where, n)
        if t.content in contents or t.id in owner:
            raise ValueError(f"{where}: added tokens {owner.get(t.id, t.content)!r} and {t.content!r} repeat a content or an id")
        contents[t.content], owner[t.id] = t.id, t.content
        _check_decodes(t.content, where)
        out.append(t)
    return out


def _check_decodes(s: str, where: str) -> None:
    """An added token written only with characters of GPT-2's byte alphabet ("é", "Ġx") decodes
    in `tokenizers` to the bytes those stand for, not to its text: refused."""
    table = unicode_to_bytes()
    if all(c in table for c in s) and bytes(table[c] for c in s) != s.encode("utf-8"):
        raise ValueError(
            f"{where}: the added token {s!r} decodes in tokenizers to "
            f"{bytes(table[c] for c in s).decode('utf-8', 'replace')!r} (its ByteLevel decoder reads characters of "
            "GPT-2's byte alphabet as bytes), not to its text; fastbpe does not read such a token"
        )


def _model_vocab(raw, specials: dict[str, int], where: str) -> tuple[dict[int, bytes], set[int]]:
    """model.vocab as id -> token bytes, the special tokens at their ids, and the ids the model's
    vocab itself has. A special token's own entry (its text, its id) may be outside GPT-2's byte
    alphabet; every other token must be in it."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: model.vocab must be an object of token -> id")
    vocab: dict[int, bytes] = {}
    in_model: set[int] = set()
    for text, i in raw.items():
        i = _check_id(i, where, f"model.vocab token {text!r}")
        in_model.add(i)
        if specials.get(text) == i:
            continue
        if i in vocab:
            raise ValueError(f"{where}: model.vocab gives the id {i} to {token_to_str(vocab[i])!r} and {text!r}")
        if not text:
            raise ValueError(f"{where}: model.vocab has the empty string (id {i}); every token has a byte")
        vocab[i] = str_to_token(text, f"{where}: model.vocab")
    for s, i in specials.items():
        b = s.encode("utf-8")
        if vocab.setdefault(i, b) != b:
            raise ValueError(f"{where}: added token {s!r} has the id {i}, which model.vocab gives to {token_to_str(vocab[i])!r}")
    return vocab, in_model


def _merges(raw, where: str) -> list[tuple[bytes, bytes]]:
    """model.merges: "left right" strings or [left, right] pairs, in GPT-2's byte alphabet."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{where}: model.merges must be an array")
    out = []
    for n, m in enumerate(raw):
        parts = m.split(" ") if isinstance(m, str) else m
        if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) and p for p in parts)):
            raise ValueError(f"{where}: model.merges[{n}] is {m!r}; a merge is \"left right\" or [left, right]")
        at = f"{where}: model.merges[{n}]"
        out.append((str_to_token(parts[0], at), str_to_token(parts[1], at)))
    return out


def _byte_level(pre: dict, where: str) -> bool:
    """A ByteLevel pre-tokenizer's use_regex (True by default), checked to add no space."""
    if pre.get("add_prefix_space"):
        raise ValueError(f"{where}: the ByteLevel pre-tokenizer sets add_prefix_space, which fastbpe does not support")
    return pre.get("use_regex", True) is not False


def _pattern(pre, where: str) -> str | None:
    """The fastbpe pattern of a pre-tokenizer: ByteLevel (with its regex: "gpt2"; without: None),
    or Sequence[Split(regex, "Isolated"), ByteLevel without its regex]."""
    kind = pre.get("type") if isinstance(pre, dict) else None
    if kind == "ByteLevel":
        return "gpt2" if _byte_level(pre, where) else None
    steps = pre.get("pretokenizers") if kind == "Sequence" else None
    if isinstance(steps, list) and len(steps) == 1 and isinstance(steps[0], dict):
        return _pattern(steps[0], where)
    if (
        isinstance(steps, list)
        and len(steps) == 2
        and all(isinstance(s, dict) for s in steps)
        and steps[0].get("type") == "Split"
        and steps[1].get("type") == "ByteLevel"
    ):
        if _byte_level(steps[1], where):
            raise ValueError(f"{where}: a Split followed by ByteLevel with its own regex is not supported; set use_regex false")
        return _split_pattern(steps[0], where)
    raise ValueError(
        f"{where}: the pre_tokenizer {_describe(pre)} is not supported; fastbpe reads ByteLevel, or a Sequence "
        "of Split (Isolated) and ByteLevel"
    )


def _split_pattern(split: dict, where: str) -> str:
    if split.get("behavior") != "Isolated" or split.get("invert"):
        raise ValueError(
            f"{where}: a Split with behavior {split.get('behavior')!r} and invert {split.get('invert')!r} is not "
            "supported; fastbpe reads behavior 'Isolated', invert false"
        )
    source = split.get("pattern")
    if isinstance(source, dict) and isinstance(source.get("String"), str) and source["String"]:
        return patterns.canonical(regex.escape(source["String"]))
    if not (isinstance(source, dict) and isinstance(source.get("Regex"), str)):
        raise ValueError(f"{where}: the Split's pattern is {source!r}; expected {{\"Regex\": ...}} or {{\"String\": ...}}")
    return pattern_of_regex(source["Regex"], where)


# Oniguruma constructs that Python's `regex` reads otherwise, in a pattern fastbpe did not write.
_DIFFERENT = [
    (regex.compile(r"\{\d*,?\d*\}\+"), "a repeat {n,m}+ (possessive in Python's regex, repeated in Oniguruma)"),
    (regex.compile(r"[\^$]"), "^ or $ (line anchors in Oniguruma, text anchors in Python's regex)"),
    (regex.compile(r"\\[zZhHRXKGOx]|\\x\{"), "an escape that Oniguruma and Python's regex read differently"),
    (regex.compile(r"\(\?[a-zA-Z-]*[msx]"), "the flag m, s or x (Oniguruma's m is Python's s)"),
]


def pattern_of_regex(source: str, where: str) -> str:
    """The fastbpe pattern for a Split regex: the pattern fastbpe wrote it from, a named pattern
    (written by fastbpe or tiktoken's own text), or else the regex itself, for Python's `regex`
    module, refused where it holds a construct that module reads differently."""
    if source.startswith(COMMENT) and (end := source.find(")")) > 0:
        original = _unquote(source[len(COMMENT) : end])
        try:
            if onig.translate(patterns.resolve(original)) == source[end + 1 :]:
                return patterns.canonical(original)
        except ValueError:
            pass  # not ours after all: read it as any regex
    for name, text in patterns.NAMED.items():
        if source == text or source == onig.translate(text):
            return name
    bare = _outside_classes(source)
    for construct, what in _DIFFERENT:
        if construct.search(bare if "anchors" in what else source):
            raise ValueError(f"{where}: the Split regex {source[:200]!r} has {what}; fastbpe cannot read it exactly")
    try:
        return patterns.canonical(source)
    except ValueError as e:
        raise ValueError(f"{where}: the Split regex is not one Python's regex module reads: {e}") from None


def _outside_classes(source: str) -> str:
    """The regex without escaped characters and character classes (where ^ and $ are literal):
    what is left of it outside them."""
    out = []
    i, depth = 0, 0
    while i < len(source):
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            depth += 1
            i += 1
            # A leading ^ negates; a ] right after the opening (or the ^) is a literal.
            if source.startswith("^", i):
                i += 1
            if source.startswith("]", i):
                i += 1
            continue
        if c == "]" and depth:
            depth -= 1
        elif depth == 0:
            out.append(c)
        i += 1
    return "".join(out)


_UNQUOTED = {q: c for c, q in _QUOTED.items()}


def _unquote(text: str) -> str:
    return regex.sub("%25|%29|%5C", lambda m: _UNQUOTED[m.group()], text)
