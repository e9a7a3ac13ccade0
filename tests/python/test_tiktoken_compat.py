"""tiktoken's conventions: `Tokenizer.as_tiktoken()` (`fastbpe.tiktoken_compat.Encoding`) against the
real tiktoken (the same public interface, signatures, defaults and results, on the shared corpora and
on generated text), the cases of tiktoken's own tests, and `allowed_special` / `disallowed_special` on
the Tokenizer's encode methods (whose default stays CS336's: special tokens recognized)."""

import gzip
import inspect
import os
import pickle
import re
from functools import cached_property, lru_cache

import numpy as np
import pytest
import tiktoken
from conftest import CORPORA, shared_file
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fastbpe
from fastbpe import reference
from fastbpe.tiktoken_compat import Encoding

EOT = "<|endoftext|>"
CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
O200K_FILE = "fb374d419588a4632f3f557e76b4b70aebbca790"
# Our encodings, each with the tiktoken encoding it must equal. "gpt2" is built from GPT-2's own
# files (the merge rule), "gpt2_parts" with `Encoding(...)` from tiktoken's parts (the rank rule).
TIKTOKEN_NAME = {
    "gpt2": "gpt2",
    "gpt2_parts": "gpt2",
    "cl100k_base": "cl100k_base",
    "o200k_base": "o200k_base",
    "o200k_harmony": "o200k_harmony",
}
ENCODINGS = list(TIKTOKEN_NAME)
HYP = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---- the encodings, built once per module ----------------------------------------------------


@pytest.fixture(scope="module")
def tik():
    """tiktoken's encodings, loaded offline from the shared cache (module fixtures run before the
    conftest's function-scoped TIKTOKEN_CACHE_DIR, so it is set here too)."""
    cache = shared_file("tiktoken_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        return {name: tiktoken.get_encoding(name) for name in set(TIKTOKEN_NAME.values())}


@pytest.fixture(scope="module")
def ours(tik):
    cache = shared_file("tiktoken_cache")
    gpt2 = fastbpe.Tokenizer.from_files(shared_file("gpt2", "vocab.json"), shared_file("gpt2", "merges.txt"), [EOT])
    t = tik["gpt2"]
    return {
        "gpt2": gpt2.as_tiktoken("gpt2"),
        "gpt2_parts": Encoding("gpt2", pat_str=t._pat_str, mergeable_ranks=t._mergeable_ranks, special_tokens=t._special_tokens),
        "cl100k_base": fastbpe.Tokenizer.from_tiktoken(
            cache / CL100K_FILE, "cl100k_base", tik["cl100k_base"]._special_tokens
        ).as_tiktoken("cl100k_base"),
        "o200k_base": fastbpe.Tokenizer.from_tiktoken(
            cache / O200K_FILE, "o200k_base", tik["o200k_base"]._special_tokens
        ).as_tiktoken("o200k_base"),
        # Special tokens that share an id: 200018 is both <|endofprompt|> and <|reserved_200018|>.
        "o200k_harmony": fastbpe.Tokenizer.from_tiktoken(
            cache / O200K_FILE, "o200k_base", tik["o200k_harmony"]._special_tokens
        ).as_tiktoken("o200k_harmony"),
    }


@pytest.fixture(params=ENCODINGS)
def pair(request, ours, tik):
    """(ours, tiktoken's) for one encoding."""
    return ours[request.param], tik[TIKTOKEN_NAME[request.param]]


@lru_cache(maxsize=None)
def corpus(name: str, chars: int = 150_000) -> str:
    """The start of a shared corpus, with special tokens of every kind inserted now and then."""
    path = shared_file("corpus", name)
    if name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            text = f.read(chars)
    else:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read(chars)
    specials = [EOT, "<|fim_prefix|>", "<|endofprompt|>", "<|fim_middle|>"]
    return "".join(text[i : i + 7919] + specials[k % 4] for k, i in enumerate(range(0, len(text), 7919)))


def outcome(f, *args, **kwargs):
    """What a call gives: ("value", result) or ("error", the exception's kind and, for a refused
    special token, the token). KeyError subclasses count as KeyError (fastbpe's
    UnknownTokenError is one); fastbpe's messages also say where the token was."""
    try:
        value = f(*args, **kwargs)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        kind = next(k for k in (UnicodeDecodeError, KeyError, ValueError, TypeError) if isinstance(e, k))
        refused = re.match(r"Encountered text corresponding to disallowed special token ('.*?')[ .]", str(e))
        return ("error", kind.__name__, refused and refused.group(1))
    if isinstance(value, np.ndarray):
        return ("array", str(value.dtype), value.tolist())
    return ("value", value)


def same(ours_f, theirs_f, *args, **kwargs):
    got, want = outcome(ours_f, *args, **kwargs), outcome(theirs_f, *args, **kwargs)
    if got != want:
        pytest.fail(f"{ours_f.__name__}{args!r:.200} {kwargs}: got {got!r:.300}, tiktoken gives {want!r:.300}")
    return got


# ---- 1. the same interface ---------------------------------------------------------------------


def _signature(f):
    return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]


def test_every_public_name_of_tiktoken_encoding_with_its_signature():
    """Every method and property of tiktoken.Encoding (and the private helpers code reaches for)
    exists here, methods with the same parameters, kinds (keyword-only markers) and defaults."""
    names = {n for n in vars(tiktoken.Encoding) if not n.startswith("__")} | {"__init__", "__getstate__", "__setstate__", "__repr__"}
    missing = sorted(n for n in names if not hasattr(Encoding, n))
    assert not missing, f"tiktoken.Encoding has {missing}; fastbpe's Encoding does not"
    for n in sorted(names):
        theirs, mine = inspect.getattr_static(tiktoken.Encoding, n), inspect.getattr_static(Encoding, n)
        if isinstance(theirs, (property, cached_property)):
            assert isinstance(mine, (property, cached_property)), f"{n} is an attribute in tiktoken"
        else:
            assert callable(mine), n
            assert _signature(mine) == _signature(theirs), f"{n}{inspect.signature(mine)} != tiktoken's {inspect.signature(theirs)}"


def test_instance_attributes_of_tiktoken(ours, tik):
    """The attributes tiktoken sets in __init__ (code reads `_special_tokens`, `_pat_str`,
    `_mergeable_ranks` to build an extended encoding); `_core_bpe`, tiktoken's Rust object, aside."""
    for name, enc in ours.items():
        wanted = set(vars(tik[TIKTOKEN_NAME[name]])) - {"_core_bpe"}
        assert all(hasattr(enc, a) for a in wanted), (name, sorted(a for a in wanted if not hasattr(enc, a)))


def test_attributes_equal_tiktoken(pair):
    enc, ref = pair
    for attr in ("name", "n_vocab", "max_token_value", "eot_token", "special_tokens_set", "_special_tokens", "_pat_str"):
        assert getattr(enc, attr) == getattr(ref, attr), attr
    assert repr(enc) == repr(ref)
    assert enc._mergeable_ranks == ref._mergeable_ranks
    assert enc.token_byte_values() == ref.token_byte_values()


def test_every_id_decodes_and_classifies_as_tiktoken(pair):
    enc, ref = pair
    ids = list(range(enc.n_vocab + 2))
    assert [outcome(enc.decode_single_token_bytes, i) for i in ids] == [outcome(ref.decode_single_token_bytes, i) for i in ids]
    assert [enc.is_special_token(i) for i in ids] == [ref.is_special_token(i) for i in ids]


def test_every_token_encodes_as_a_single_token_as_tiktoken(pair):
    enc, ref = pair
    tokens = [*ref._mergeable_ranks, *ref._special_tokens, b"not a token", "\u00e9\u00e9\u00e9 never", b"\xff\xfe\xfd"]
    assert [outcome(enc.encode_single_token, t) for t in tokens] == [outcome(ref.encode_single_token, t) for t in tokens]


# ---- 2. the same results on the shared corpora ---------------------------------------------------


POLICIES = [
    {},
    {"allowed_special": "all"},
    {"disallowed_special": ()},
    {"allowed_special": {EOT}, "disallowed_special": ()},
    {"allowed_special": {EOT}},
    {"allowed_special": {EOT, "<|fim_prefix|>"}, "disallowed_special": {"<|endofprompt|>"}},
    {"allowed_special": "all", "disallowed_special": "all"},
    {"allowed_special": set(), "disallowed_special": {"<|fim_middle|>"}},
]


@pytest.mark.parametrize("name", CORPORA)
def test_corpus_encodes_as_tiktoken(pair, name):
    enc, ref = pair
    text = corpus(name)
    same(enc.encode_ordinary, ref.encode_ordinary, text)
    for policy in POLICIES:
        same(enc.encode, ref.encode, text, **policy)
    same(enc.encode_to_numpy, ref.encode_to_numpy, text, allowed_special="all")
    same(enc.encode_to_numpy, ref.encode_to_numpy, text)
    lines = text.splitlines(keepends=True)[:400]
    same(enc.encode_ordinary_batch, ref.encode_ordinary_batch, lines)
    for policy in POLICIES[:4]:
        same(enc.encode_batch, ref.encode_batch, lines, **policy)


@pytest.mark.parametrize("name", CORPORA)
def test_corpus_decodes_as_tiktoken(pair, name):
    enc, ref = pair
    ids = ref.encode(corpus(name), allowed_special="all")
    same(enc.decode, ref.decode, ids)
    same(enc.decode_bytes, ref.decode_bytes, ids)
    same(enc.decode_tokens_bytes, ref.decode_tokens_bytes, ids)
    same(enc.decode_with_offsets, ref.decode_with_offsets, ids)
    batch = [ids[i : i + 997] for i in range(0, len(ids), 997)]  # cut inside characters too
    for errors in ("replace", "ignore", "strict", "backslashreplace"):
        same(enc.decode, ref.decode, ids[1:-1], errors=errors)
        assert outcome(enc.decode_batch, batch, errors=errors) == outcome(ref.decode_batch, batch, errors=errors)
    same(enc.decode_bytes_batch, ref.decode_bytes_batch, batch)


# encode_with_unstable is slow on both sides where the text ends in whitespace (some 100,000
# completions); these encodings cover both rules and the three patterns.
UNSTABLE = ["gpt2", "cl100k_base", "o200k_base"]


@pytest.mark.parametrize("encoding", UNSTABLE)
@pytest.mark.parametrize("name", ["tinystories_val.txt", "code_python.txt", "zh_fortunes.txt"])
def test_corpus_with_unstable_ends_as_tiktoken(ours, tik, encoding, name):
    """encode_with_unstable on texts cut at places through the corpus: the same stable ids
    and the same set of completions."""
    enc, ref = ours[encoding], tik[encoding]
    text = corpus(name)
    for end in range(101, 4000, 797):
        got, want = enc.encode_with_unstable(text[:end], disallowed_special=()), ref.encode_with_unstable(text[:end], disallowed_special=())
        assert got[0] == want[0], end
        assert sorted(map(tuple, got[1])) == sorted(map(tuple, want[1])), end


@pytest.mark.parametrize("name", ["ru_tinystories.txt", "code_go.txt", "zh_fortunes.txt"])
def test_corpus_bytes_with_invalid_utf8_encode_as_tiktoken(pair, name):
    """`_encode_bytes` of the corpus cut inside characters and with stray bytes put in."""
    enc, ref = pair
    data = corpus(name).encode("utf-8")[:20_000]
    for end in range(1, 400, 7):
        same(enc._encode_bytes, ref._encode_bytes, data[:end])
    for at in range(0, len(data), 1999):
        broken = data[:at] + b"\xff\x80" + data[at : at + 50] + b"\xc3"
        same(enc._encode_bytes, ref._encode_bytes, broken)


# ---- 3. the same results on generated text ----------------------------------------------------------

SPECIALS = [EOT, "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endofprompt|>", "<|reserved_200018|>", "<|return|>"]
FRAGMENTS = st.sampled_from(
    [*SPECIALS, "<|", "|>", "<|endoftext", EOT + EOT, "hello", " world", "'s", "'LL", "123", "12345", " ", "  ", "\n", "\r\n",
     "\n\n", "\t", "\u00e9", "e\u0301", "\u4e2d\u6587", "\U0001f389", "!", "...", "\x00", "\xa0", "\u3000", "\u2028"]
)
# Characters every engine's Unicode tables agree on (see test_encode.py).
ASSIGNED = st.characters(exclude_categories=("Cn", "Cs"))
TEXT = st.one_of(st.text(ASSIGNED), st.lists(st.one_of(FRAGMENTS, st.text(ASSIGNED, max_size=5)), max_size=30).map("".join))
POLICY = st.one_of(
    st.sampled_from(POLICIES),
    st.fixed_dictionaries(
        {},
        optional={
            "allowed_special": st.one_of(st.just("all"), st.sets(st.sampled_from(SPECIALS + ["<|not_special|>"]))),
            "disallowed_special": st.one_of(st.just("all"), st.sets(st.sampled_from(SPECIALS + ["<|not_special|>", "ab"]))),
        },
    ),
)


@HYP
@given(text=TEXT, policy=POLICY)
@example(text="a<|reserved_200018|>b<|endofprompt|>", policy={"allowed_special": "all"})
@example(text="ab<|endoftext|>", policy={"allowed_special": set(), "disallowed_special": {"ab"}})
def test_generated_text_encodes_as_tiktoken(pair, text, policy):
    enc, ref = pair
    same(enc.encode, ref.encode, text, **policy)
    same(enc.encode_to_numpy, ref.encode_to_numpy, text, **policy)
    same(enc.encode_ordinary, ref.encode_ordinary, text)
    same(enc.encode_batch, ref.encode_batch, [text, text[: len(text) // 2], ""], **policy)


@pytest.mark.parametrize("encoding", UNSTABLE)
@settings(HYP, max_examples=25)
@given(text=TEXT)
@example(text=" \taa")  # the last piece starts with whitespace: the whitespace before it is unstable too
@example(text="hello fanta")
@example(text="a\n\n")
def test_generated_text_with_unstable_end_as_tiktoken(ours, tik, encoding, text):
    enc, ref = ours[encoding], tik[encoding]
    got, want = outcome(enc.encode_with_unstable, text, allowed_special="all"), outcome(ref.encode_with_unstable, text, allowed_special="all")
    if got[0] == "value":
        got = (got[0], got[1][0], sorted(map(tuple, got[1][1])))
        want = (want[0], want[1][0], sorted(map(tuple, want[1][1])))
    assert got == want


@HYP
@given(data=st.one_of(st.binary(), TEXT.map(str.encode), st.tuples(TEXT, st.binary(max_size=4), TEXT).map(lambda t: t[0].encode() + t[1] + t[2].encode())))
@example(data=b" \xec\x8b\xa4\xed")
@example(data=b"hello \xe4\xbd")
@example(data=b"  \n\n \x80")
@example(data=b" \taa\x80")  # the last piece starts with whitespace: the whitespace before it joins
def test_bytes_encode_as_tiktoken(pair, data):
    enc, ref = pair
    same(enc._encode_bytes, ref._encode_bytes, data)
    if data:  # tiktoken's Rust code panics on an empty piece
        same(enc._encode_single_piece, ref._encode_single_piece, data)
    else:
        assert enc._encode_single_piece(data) == []


@HYP
@given(data=st.data(), errors=st.sampled_from(["replace", "ignore", "strict", "surrogateescape"]))
def test_generated_ids_decode_as_tiktoken(pair, data, errors):
    enc, ref = pair
    ids = data.draw(st.lists(st.sampled_from(list(ref._special_tokens.values())) | st.integers(0, enc.n_vocab + 1), max_size=20))
    same(enc.decode, ref.decode, ids, errors=errors)
    same(enc.decode_bytes, ref.decode_bytes, ids)
    same(enc.decode_tokens_bytes, ref.decode_tokens_bytes, ids)


# ---- 4. tiktoken's own tests (tests/ of openai/tiktoken), get_encoding pointing at fastbpe ----------
# test_misc.py / test_simple_public.py's encoding_for_model and the optional blobfile import test
# tiktoken's model registry and packaging, which fastbpe does not have; r50k_base and p50k_base are
# not in the offline cache, so gpt2 (the same ranks and pattern as r50k_base) stands in.


def test_tiktoken_simple(ours, tik):
    enc = ours["gpt2"]
    assert enc.encode("hello world") == [31373, 995]
    assert enc.decode([31373, 995]) == "hello world"
    assert enc.encode("hello <|endoftext|>", allowed_special="all") == [31373, 220, 50256]
    enc = ours["cl100k_base"]
    assert enc.encode("hello world") == [15339, 1917]
    assert enc.decode([15339, 1917]) == "hello world"
    assert enc.encode("hello <|endoftext|>", allowed_special="all") == [15339, 220, 100257]
    for enc in ours.values():
        for token in range(min(10_000, enc.max_token_value - 1)):
            assert enc.encode_single_token(enc.decode_single_token_bytes(token)) == token


def test_tiktoken_simple_repeated(ours):
    enc = ours["gpt2"]
    want = [[15], [405], [830], [2388], [20483], [10535], [24598], [8269], [10535, 830], [8269, 405], [8269, 830],
            [8269, 2388], [8269, 20483], [8269, 10535], [8269, 24598], [25645], [8269, 10535, 830]]  # fmt: skip
    assert [enc.encode("0" * n) for n in range(1, 18)] == want


def test_tiktoken_large_repeated(ours, tik):
    tokens = ours["o200k_base"].encode("x" * 1_000_000)
    assert tokens == tik["o200k_base"].encode("x" * 1_000_000)


def test_tiktoken_simple_regex(ours):
    enc = ours["cl100k_base"]
    assert enc.encode("rer") == [38149]
    assert enc.encode("'rer") == [2351, 81]
    assert enc.encode("today\n ") == [31213, 198, 220]
    assert enc.encode("today\n \n") == [31213, 27907]
    assert enc.encode("today\n  \n") == [31213, 14211]


def test_tiktoken_basic_encode(ours):
    assert ours["gpt2"].encode("hello world") == [31373, 995]
    assert ours["gpt2_parts"].encode("hello world") == [31373, 995]
    assert ours["cl100k_base"].encode("hello world") == [15339, 1917]
    assert ours["cl100k_base"].encode(" \x850") == [220, 126, 227, 15]


def test_tiktoken_encode_empty(ours):
    assert all(enc.encode("") == [] for enc in ours.values())


def test_tiktoken_encode_bytes(ours):
    enc = ours["cl100k_base"]
    assert enc._encode_bytes(b" \xec\x8b\xa4\xed") == [62085]
    for i in range(10):
        assert enc.decode_bytes(enc._encode_bytes(b"\x80" * i)) == b"\x80" * i


@HYP
@given(data=st.binary())
def test_tiktoken_hyp_encode_bytes(pair, data):
    enc, _ = pair
    assert enc.decode_bytes(enc._encode_bytes(data)) == data


def test_tiktoken_encode_surrogate_pairs(ours):
    enc = ours["cl100k_base"]
    assert enc.encode("👍") == [9468, 239, 235]
    assert enc.encode("\ud83d\udc4d") == [9468, 239, 235]  # a surrogate pair becomes its character
    assert enc.encode("\ud83d") == enc.encode("�")  # a lone surrogate becomes U+FFFD
    assert enc.encode_ordinary("\ud83d") == enc.encode_batch(["\ud83d"])[0] == enc.encode_ordinary_batch(["x\ud83d"])[0][1:]


@pytest.mark.parametrize("c", ["^", "0", "a", "'s", " ", "\n"])
def test_tiktoken_catastrophically_repetitive(pair, c):
    enc, ref = pair
    for text in (c * 10_000, " " + c * 10_000, " " + c * 10_000 + "\n"):
        ids = enc.encode(text)
        assert enc.decode(ids) == text and ids == ref.encode(text)


BASIC = ["hello", "hello ", "hello  ", " hello", " hello ", " hello  ", "hello world", "请考试我的软件！12345"]


def test_tiktoken_basic_roundtrip(pair):
    enc, _ = pair
    for value in BASIC:
        assert enc.decode(enc.encode(value)) == value
        assert enc.decode(enc.encode_ordinary(value)) == value


@HYP
@given(text=st.text())
def test_tiktoken_hyp_roundtrip(pair, text):
    """Any text, also characters unassigned in some Unicode version (ids may then differ from
    tiktoken's, whose tables are older; the text still comes back)."""
    enc, _ = pair
    assert enc.decode(enc.encode(text, disallowed_special=())) == text


def test_tiktoken_single_token_roundtrip(pair):
    enc, _ = pair
    for token in range(enc.n_vocab):
        try:
            token_bytes = enc.decode_single_token_bytes(token)
        except KeyError:
            continue
        # Special tokens that share an id encode to it from either name; the id decodes as the first.
        assert enc.encode_single_token(token_bytes) == token


def test_tiktoken_special_token(ours):
    enc = ours["cl100k_base"]
    eot = enc.encode_single_token("<|endoftext|>")
    assert eot == enc.eot_token
    fip = enc.encode_single_token("<|fim_prefix|>")
    fim = enc.encode_single_token("<|fim_middle|>")

    text = "<|endoftext|> hello <|fim_prefix|>"
    assert eot not in enc.encode(text, disallowed_special=())
    for kwargs in ({}, {"disallowed_special": "all"}, {"disallowed_special": {"<|endoftext|>"}}, {"disallowed_special": {"<|fim_prefix|>"}}):
        with pytest.raises(ValueError):
            enc.encode(text, **kwargs)

    text = "<|endoftext|> hello <|fim_prefix|> there <|fim_middle|>"
    cases = [
        ({"disallowed_special": ()}, set()),
        ({"allowed_special": "all", "disallowed_special": ()}, {eot, fip, fim}),
        ({"allowed_special": "all", "disallowed_special": "all"}, {eot, fip, fim}),
        ({"allowed_special": {"<|fim_prefix|>"}, "disallowed_special": ()}, {fip}),
        ({"allowed_special": {"<|endoftext|>"}, "disallowed_special": ()}, {eot}),
        ({"allowed_special": {"<|fim_middle|>"}, "disallowed_special": ()}, {fim}),
    ]
    for kwargs, present in cases:
        assert {eot, fip, fim} & set(enc.encode(text, **kwargs)) == present, kwargs


@HYP
@given(text=st.text())
def test_tiktoken_hyp_special_ordinary(pair, text):
    enc, _ = pair
    assert enc.encode_ordinary(text) == enc.encode(text, disallowed_special=())


def test_tiktoken_batch_encode(pair):
    enc, _ = pair
    text1, text2 = "hello world", "goodbye world"
    assert enc.encode_batch([text1]) == [enc.encode(text1)]
    assert enc.encode_batch([text1, text2]) == [enc.encode(text1), enc.encode(text2)]
    assert enc.encode_ordinary_batch([text1]) == [enc.encode_ordinary(text1)]
    assert enc.encode_ordinary_batch([text1, text2]) == [enc.encode_ordinary(text1), enc.encode_ordinary(text2)]


@HYP
@given(batch=st.lists(st.text()))
def test_tiktoken_hyp_batch_roundtrip(pair, batch):
    enc, _ = pair
    encoded = enc.encode_batch(batch, allowed_special="all")
    assert encoded == [enc.encode(t, allowed_special="all") for t in batch]
    # Decoding gives the text back, but for special tokens that share an id (the first name).
    shared = [s for s, i in enc._special_tokens.items() if enc.decode_single_token_bytes(i) != s.encode()]
    if not any(s in t for s in shared for t in batch):
        assert enc.decode_batch(encoded) == batch


def _offsets_reference(enc, tokens):
    """Each token's offset: how much of the text the tokens before it decode to, in full characters."""
    text = enc.decode(tokens, errors="strict")
    out = []
    for i in range(len(tokens)):
        prefix = enc.decode(tokens[:i], errors="ignore")
        common = 0
        while common < min(len(text), len(prefix)) and text[common] == prefix[common]:
            common += 1
        out.append(common)
    return out


@HYP
@given(data=st.data())
def test_tiktoken_hyp_offsets(ours, data):
    enc = ours["cl100k_base"]
    ids = st.integers(0, enc.n_vocab - 1).filter(lambda i: i in enc._special_token_values or i in enc._mergeable_ranks.values())
    tokens = data.draw(st.lists(ids, min_size=1, max_size=20))
    tokens = enc.encode(enc.decode(tokens, errors="ignore"), allowed_special="all")  # valid UTF-8
    assert enc.decode_with_offsets(tokens)[1] == _offsets_reference(enc, tokens)


def test_tiktoken_basic_offsets(ours):
    enc = ours["cl100k_base"]
    cases = [
        ("hello world", {}, [0, 5]),
        ("hello world<|endoftext|> green cow", {"allowed_special": "all"}, [0, 5, 11, 24, 30]),
        ("我非常渴望与人工智能一起工作", {}, [0, 1, 2, 3, 3, 4, 4, 5, 6, 7, 8, 8, 9, 10, 11, 12, 13]),
        # tokens b'\xe0\xae\xbf\xe0\xae' and b'\xe0\xaf\x8d\xe0\xae': one starts a 3-byte character
        ("நடிகர் சூர்யா", {}, [0, 0, 1, 1, 2, 3, 4, 4, 5, 6, 7, 8, 8, 9, 9, 10, 11, 12, 12]),
        # token b'\xa0\xe9\x99\xa4': a continuation byte, then the start of a character
        (" Ġ除", {}, [0, 1]),
    ]
    for prompt, kwargs, offsets in cases:
        assert enc.decode_with_offsets(enc.encode(prompt, **kwargs)) == (prompt, offsets)


def test_tiktoken_pickle(ours, tik):
    for enc in ours.values():
        enc.encode("hello world")  # after first use (the Rust encoder exists)
        again = pickle.loads(pickle.dumps(enc))
        assert again.name == enc.name and again.encode("hello world") == enc.encode("hello world")
    t = tik["gpt2"]
    custom = Encoding("custom_enc", pat_str=t._pat_str, mergeable_ranks=t._mergeable_ranks, special_tokens={"<|pickle|>": 100_000})
    again = pickle.loads(pickle.dumps(custom))
    assert custom.encode("hello world") == again.encode("hello world")
    assert custom.encode("<|pickle|>", allowed_special="all") == again.encode("<|pickle|>", allowed_special="all") == [100_000]


# ---- 5. fastbpe's own checks of the compatible object ------------------------------------------


def test_special_tokens_that_share_an_id(ours, tik):
    enc, ref = ours["o200k_harmony"], tik["o200k_harmony"]
    text = "<|endofprompt|>x<|reserved_200018|>"
    assert enc.encode(text, allowed_special="all") == ref.encode(text, allowed_special="all") == [200018, 87, 200018]
    assert enc.decode([200018]) == ref.decode([200018]) == "<|endofprompt|>"


def test_disallowed_error_names_the_token_and_the_fixes(ours):
    enc = ours["cl100k_base"]
    with pytest.raises(ValueError) as info:
        enc.encode("ok <|fim_middle|> and <|endoftext|>")
    msg = str(info.value)
    assert "'<|fim_middle|>'" in msg and "allowed_special=" in msg and "disallowed_special=()" in msg
    assert "enc.special_tokens_set - {'<|fim_middle|>'}" in msg
    with pytest.raises(ValueError, match="in text 1"):
        enc.encode_batch(["fine", "<|endoftext|>"])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"allowed_special": "none"}, TypeError, r"set\(\) for none"),
        ({"disallowed_special": EOT}, TypeError, r"write \{'<\|endoftext\|>'\}"),
        ({"allowed_special": 5}, TypeError, "not int"),
        ({"disallowed_special": {5}}, TypeError, "not a str"),
    ],
)
def test_bad_special_arguments_are_refused(ours, kwargs, error, match):
    """tiktoken would read a string as a set of its characters; fastbpe says what to write."""
    with pytest.raises(error, match=match):
        ours["cl100k_base"].encode("hello", **kwargs)


def test_bad_encoding_arguments_are_refused(tik):
    t = tik["gpt2"]
    parts = {"pat_str": t._pat_str, "mergeable_ranks": t._mergeable_ranks, "special_tokens": t._special_tokens}
    with pytest.raises(ValueError, match="explicit_n_vocab is 5"):
        Encoding("x", **parts, explicit_n_vocab=5)
    assert Encoding("x", **parts, explicit_n_vocab=50257).n_vocab == 50257
    with pytest.raises(ValueError, match="already gives"):
        Encoding("x", **{**parts, "special_tokens": {EOT: 0}})
    with pytest.raises(ValueError, match="rank 0 to both"):
        Encoding("x", **{**parts, "mergeable_ranks": {**t._mergeable_ranks, b"\xff\xff\xff": 0}})
    with pytest.raises(TypeError, match="takes an int id"):
        Encoding("x", **parts).is_special_token("50256")


def test_as_tiktoken_names_and_keeps_the_tokenizer(ours):
    tok = ours["cl100k_base"].tokenizer
    enc = tok.as_tiktoken()
    assert enc.name == "fastbpe-" + tok.fingerprint()[:16] and enc.tokenizer is tok
    with pytest.raises(TypeError):
        Encoding.from_tokenizer("not a tokenizer")


def test_custom_pattern_and_no_pattern_through_the_interface():
    """Tokenizers whose pattern runs in Python (a custom regex) or that have none."""
    text = corpus("tinystories_val.txt", 3_000) + "Hello world, hello <|endoftext|> 123 abc\n\n<|x|>"
    for pattern in (r"\w+|\s+|[^\w\s]+", None):
        tok = fastbpe.train(iter([text]), 300, special_tokens=[EOT, "<|x|>"], pattern=pattern, num_threads=1)
        enc = tok.as_tiktoken("t")
        assert enc.encode(text, allowed_special="all") == tok.encode(text)
        assert enc.encode(text, allowed_special={"<|x|>"}, disallowed_special=()) == reference.encode(
            text, tok.vocab, tok.merges, ["<|x|>"], pattern
        )
        assert enc.decode(enc._encode_bytes(text.encode() + b"\xff")) == text + "\ufffd"
        stable, completions = enc.encode_with_unstable("Hello wor")
        assert all(enc.decode_bytes(stable + c).startswith(b"Hello wor") for c in completions)
        with pytest.raises(ValueError, match="<|x|>"):
            enc.encode(text)


# ---- 6. allowed_special / disallowed_special on the Tokenizer's own methods --------------------


@pytest.fixture(scope="module")
def cl100k(tik):
    return fastbpe.Tokenizer.from_tiktoken(shared_file("tiktoken_cache", CL100K_FILE), "cl100k_base", tik["cl100k_base"]._special_tokens)


@pytest.fixture(scope="module")
def custom():
    text = corpus("code_go.txt", 40_000)
    return fastbpe.train(iter([text]), 500, special_tokens=[EOT, "<|fim_prefix|>", "<|endofprompt|>"], pattern=r"\w+|\s+|[^\w\s]+", num_threads=1)


def test_tokenizer_default_recognizes_special_tokens(cl100k):
    """CS336's default is kept: every declared special token becomes its id."""
    text = "a<|endoftext|>b<|fim_prefix|>"
    assert cl100k.encode(text) == cl100k.encode(text, allowed_special="all") == [64, 100257, 65, 100258]
    assert cl100k.encode(text, disallowed_special=()) == cl100k.encode(text)


def test_tokenizer_safe_call_refuses_special_token_text(cl100k):
    with pytest.raises(ValueError) as info:
        cl100k.encode("user text with <|endoftext|>", allowed_special=set())
    assert "'<|endoftext|>'" in str(info.value) and "tok.special_tokens_set - {'<|endoftext|>'}" in str(info.value)
    text = "user text with <|endoftext|>"
    assert cl100k.encode(text, allowed_special=set(), disallowed_special=()) == cl100k.encode_ordinary(text)


TOKENIZER_POLICIES = [
    {"allowed_special": set(), "disallowed_special": ()},
    {"allowed_special": {EOT}, "disallowed_special": ()},
    {"allowed_special": {EOT, "<|fim_prefix|>"}, "disallowed_special": ()},
    {"allowed_special": "all", "disallowed_special": ()},
    {"allowed_special": {EOT}, "disallowed_special": {"<|fim_suffix|>"}},
]


@pytest.mark.parametrize("policy", TOKENIZER_POLICIES)
@pytest.mark.parametrize("name", ["enwiki_100M.txt.gz", "zh_fortunes.txt"])
def test_tokenizer_methods_equal_tiktoken_under_each_policy(cl100k, tik, tmp_path, policy, name):
    """encode, encode_batch, encode_to_numpy, encode_iterable and encode_file give tiktoken's ids."""
    ref = tik["cl100k_base"]
    text = corpus(name, 60_000)
    want = ref.encode(text, **policy)
    assert cl100k.encode(text, **policy) == want
    assert cl100k.encode_to_numpy(text, **policy).tolist() == want
    lines = text.splitlines(keepends=True)
    assert cl100k.encode_batch(lines, **policy) == ref.encode_batch(lines, **policy)
    assert list(cl100k.encode_iterable(iter(lines), **policy)) == want
    (tmp_path / "in.txt").write_bytes(text.encode())
    assert cl100k.encode_file(tmp_path / "in.txt", tmp_path / "out.bin", **policy).tolist() == want


@pytest.mark.parametrize("policy", TOKENIZER_POLICIES[:4])
def test_custom_pattern_tokenizer_under_each_policy_equals_the_reference(custom, tmp_path, policy):
    text = corpus("code_go.txt", 30_000)
    allowed = custom.special_tokens if policy["allowed_special"] == "all" else sorted(policy["allowed_special"])
    want = reference.encode(text, custom.vocab, custom.merges, allowed, custom.pattern)
    assert custom.encode(text, **policy) == want
    assert custom.encode_batch([text, text[:999]], **policy) == [want, custom.encode(text[:999], **policy)]
    assert custom.encode_to_numpy(text, **policy).tolist() == want
    assert list(custom.encode_iterable(iter(text.splitlines(keepends=True)), **policy)) == want
    (tmp_path / "in.txt").write_bytes(text.encode())
    assert custom.encode_file(tmp_path / "in.txt", tmp_path / "out.bin", **policy).tolist() == want


def test_ordinary_variants(cl100k, custom):
    texts = [corpus("tinystories_val.txt", 20_000), "", "<|endoftext|>"]
    for tok in (cl100k, custom):
        assert tok.encode_ordinary_batch(texts) == [tok.encode_ordinary(t) for t in texts]
        assert tok.encode_ordinary_to_numpy(texts[0]).tolist() == tok.encode_ordinary(texts[0])
        assert tok.encode_ordinary_to_numpy(texts[0]).dtype == tok.dtype


def test_encode_file_refuses_disallowed_text_before_writing(cl100k, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"x" * (2**24 - 5) + b"<|endofprompt|> and more")  # across the search's second 8 MB block
    with pytest.raises(ValueError, match=r"disallowed special token '<\|endofprompt\|>' in '.*in\.txt' at byte offset 16777211"):
        cl100k.encode_file(source, tmp_path / "out.bin", allowed_special={EOT})
    assert sorted(os.listdir(tmp_path)) == ["in.txt"]  # no output, no sidecar, no temporary


def test_encode_file_checks_the_output_before_searching(cl100k, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"text <|endoftext|>")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        cl100k.encode_file(source, tmp_path / "missing" / "out.bin", allowed_special=set())
    with pytest.raises(ValueError, match="same file as the input"):
        cl100k.encode_file(source, source, allowed_special=set())


def test_encode_iterable_refuses_disallowed_text_across_strings(cl100k):
    parts = ["some text <|endof", "text|> more"]
    with pytest.raises(ValueError, match=r"'<\|endoftext\|>' at character 10 of the stream"):
        list(cl100k.encode_iterable(iter(parts), allowed_special=set()))
    assert list(cl100k.encode_iterable(iter(parts), allowed_special=set(), disallowed_special=())) == cl100k.encode_ordinary("".join(parts))


@HYP
@given(
    data=st.data(),
    text=TEXT,
    policy=st.sampled_from([*TOKENIZER_POLICIES, {"allowed_special": set()}, {"allowed_special": {EOT}}]),
)
def test_streams_under_each_policy_equal_encode(custom, data, text, policy):
    """encode_iterable of the text in small strings (special tokens straddle them) gives what
    encode gives, or the same refusal."""
    step = data.draw(st.integers(1, 9))  # small strings: special tokens straddle them
    parts = [text[i : i + step] for i in range(0, len(text), step)]
    want = outcome(custom.encode, text, **policy)
    assert outcome(lambda: list(custom.encode_iterable(iter(parts), **policy))) == want


def test_subsets_of_the_special_tokens_split_then_get_an_encoder(cl100k, tik):
    """A subset of the special tokens seen the first time is split on in Python; seen again, it
    gets an encoder of its own (only a few kept). Both give tiktoken's ids."""
    text = corpus("code_rust.txt", 30_000)
    ref = tik["cl100k_base"]
    for k in range(12):
        specials = set(cl100k.special_tokens[: k % 4 + 1])
        want = ref.encode(text, allowed_special=specials, disallowed_special=())
        assert cl100k.encode(text, allowed_special=specials, disallowed_special=()) == want, k
        assert cl100k._encode_split([text], frozenset(specials), 1)[0] == want
        assert cl100k._recognizing(frozenset(specials)).encode(text) == want
    assert 0 < len(cl100k._views[0]) <= 3


def test_decode_errors(cl100k):
    broken = [next(i for i, t in cl100k.vocab.items() if t == b"\xc3"), *cl100k.encode("x")]
    assert cl100k.decode(broken) == "\ufffdx"
    assert cl100k.decode(broken, errors="ignore") == "x"
    with pytest.raises(UnicodeDecodeError):
        cl100k.decode(broken, errors="strict")
