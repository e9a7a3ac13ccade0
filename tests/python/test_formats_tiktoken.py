"""The merges tiktoken's rule derives from ranks: the Rust derivation (`Tokenizer.merges` of a
rank-file tokenizer) equals the readable one, `fastbpe.reference.merges_from_ranks`."""

import base64

import pytest
import tiktoken
from conftest import shared_file
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbpe
from fastbpe import reference
from fastbpe.formats.tiktoken import merges_from_ranks as _merges_from_ranks

RANK_FILES = {
    "cl100k": ("9b5ad71b2ce5302211f9c61530b329a4922fc6a4", {"<|endoftext|>": 100257, "<|endofprompt|>": 100276}),
    "o200k": ("fb374d419588a4632f3f557e76b4b70aebbca790", {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
}


@pytest.mark.parametrize("name", list(RANK_FILES))
def test_rank_files_merges_equal_the_readable_derivation(name):
    file, specials = RANK_FILES[name]
    tok = fastbpe.Tokenizer.from_tiktoken(shared_file("tiktoken_cache", file), name, specials)
    merges = tok.merges
    assert merges == reference.merges_from_ranks(tok.vocab, set(specials.values()))
    # every token but the 256 single bytes is built by a merge, in rank order
    assert len(merges) == len(tok.vocab) - 256 - len(specials)
    assert all(type(a) is bytes and type(b) is bytes for a, b in merges[:10])


def test_gpt2_ranks_merges_equal_the_readable_derivation():
    shared_file("tiktoken_cache")  # gpt2's encoder.json and vocab.bpe, read offline
    ranks = tiktoken.get_encoding("gpt2")._mergeable_ranks
    vocab = {r: t for t, r in ranks.items()}
    merges = _merges_from_ranks(vocab, set())
    assert merges == reference.merges_from_ranks(vocab, set())
    assert len(merges) == 50_000


# Tokens over a small alphabet, so that many are concatenations of others; any int ids (ranks).
VOCABS = st.dictionaries(
    st.one_of(st.integers(0, 300), st.integers(-(2**70), 2**70)),
    st.binary(min_size=1, max_size=6).map(lambda b: bytes(x % 3 + 97 for x in b)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(vocab=VOCABS, data=st.data())
def test_small_vocabularies_equal_the_readable_derivation(vocab, data):
    # ids in `skip` are not ranked; two ids with the same bytes: the later one in `vocab` counts
    skip = data.draw(st.sets(st.sampled_from(sorted(vocab)))) if vocab else set()
    assert _merges_from_ranks(vocab, skip) == reference.merges_from_ranks(vocab, skip)


@pytest.mark.parametrize(
    "ranked, merges",
    [
        ([b"a", b"b", b"c", b"bc", b"ab", b"abc"], [(b"b", b"c"), (b"a", b"b"), (b"a", b"bc")]),
        ([b"a", b"b", b"c", b"abc", b"ab", b"bc"], [(b"a", b"b"), (b"b", b"c")]),  # abc: no lower ab or bc
        ([b"a", b"aa", b"aaa"], [(b"a", b"a"), (b"aa", b"a")]),  # leftmost among equal ranks
    ],
)
def test_known_derivations(ranked, merges):
    vocab = {1000 - 7 * i: t for i, t in enumerate(reversed(ranked))}  # sparse ids, in rank order
    assert _merges_from_ranks(vocab, set()) == merges == reference.merges_from_ranks(vocab, set())


def test_the_largest_rank_merges_like_any_other(tmp_path):
    # 2**32 - 1 is an allowed id and rank; it is not taken for "no merge".
    top = 2**32 - 1
    vocab = {b: bytes([b]) for b in range(256)} | {300: b"ba", top: b"ab"}
    path = tmp_path / "top.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in vocab.items()))
    tok = fastbpe.Tokenizer.from_tiktoken(path, "gpt2", {})
    merges = reference.merges_from_ranks(vocab, set())
    for text in ["abcab", "abab", "xabx ab ba", "ab"]:
        want = reference.encode(text, vocab, merges)
        assert tok.encode(text) == want
        assert tok.encode_to_numpy(text).tolist() == want
    assert tok.encode("abcab") == [top, 99, top]
