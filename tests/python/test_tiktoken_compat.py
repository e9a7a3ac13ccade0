"""tiktoken's conventions: `allowed_special` / `disallowed_special` on the Tokenizer's encode methods
(whose default stays CS336's: special tokens recognized), against the real tiktoken."""

import gzip
import os
from functools import lru_cache

import pytest
import tiktoken
from conftest import shared_file

import fastbpe
from fastbpe import reference

EOT = "<|endoftext|>"
CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
O200K_FILE = "fb374d419588a4632f3f557e76b4b70aebbca790"
TIKTOKEN_NAME = {"cl100k_base": "cl100k_base"}
CORPORA = [
    "de_eltec.txt",
    "ru_tinystories.txt",
    "zh_fortunes.txt",
    "code_go.txt",
    "code_rust.txt",
    "code_python.txt",
    "tinystories_val.txt",
    "enwiki_100M.txt.gz",
]


# ---- the encodings, built once per module ----------------------------------------------------


@pytest.fixture(scope="module")
def tik():
    """tiktoken's encodings, loaded offline from the shared cache (module fixtures run before the
    conftest's function-scoped TIKTOKEN_CACHE_DIR, so it is set here too)."""
    cache = shared_file("tiktoken_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        return {name: tiktoken.get_encoding(name) for name in set(TIKTOKEN_NAME.values())}


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
    source.write_bytes(b"x" * 20_000_000 + b"<|endofprompt|> and more")
    with pytest.raises(ValueError, match=r"disallowed special token '<\|endofprompt\|>' in '.*in\.txt' at byte offset 20000000"):
        cl100k.encode_file(source, tmp_path / "out.bin", allowed_special={EOT})
    assert sorted(os.listdir(tmp_path)) == ["in.txt"]  # no output, no sidecar, no temporary


def test_encode_iterable_refuses_disallowed_text_across_strings(cl100k):
    parts = ["some text <|endof", "text|> more"]
    with pytest.raises(ValueError, match=r"'<\|endoftext\|>' at character 10 of the stream"):
        list(cl100k.encode_iterable(iter(parts), allowed_special=set()))
    assert list(cl100k.encode_iterable(iter(parts), allowed_special=set(), disallowed_special=())) == cl100k.encode_ordinary("".join(parts))


def test_subset_encoders_are_few(cl100k):
    """Streams and files with a subset of the special tokens use an encoder of their own: one per
    subset, and only a few kept."""
    for k in range(6):
        list(cl100k.encode_iterable(["a\n" * k], allowed_special=set(list(cl100k.special_tokens)[: k % 5]), disallowed_special=()))
    assert 0 < len(cl100k._views) <= 4


def test_decode_errors(cl100k):
    broken = [next(i for i, t in cl100k.vocab.items() if t == b"\xc3"), *cl100k.encode("x")]
    assert cl100k.decode(broken) == "\ufffdx"
    assert cl100k.decode(broken, errors="ignore") == "x"
    with pytest.raises(UnicodeDecodeError):
        cl100k.decode(broken, errors="strict")
