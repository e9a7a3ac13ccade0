"""Hugging Face: a `to_huggingface` file gives fastbpe's ids and text in `tokenizers` and
`transformers`, for every kind of tokenizer (trained with each pattern, GPT-2's files, tiktoken's
rank files), on every shared corpus and on generated text; patterns rewritten for Oniguruma split
as Python's `regex` does, and the ones that cannot be rewritten exactly are refused."""

import gzip
import json
import operator
import warnings
from functools import lru_cache

import pytest
import regex
import tokenizers
from conftest import CORPORA, shared_file
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fastbpe
import fastbpe.formats.huggingface
from fastbpe import patterns
from fastbpe.formats import onig

EOT = "<|endoftext|>"
PAD = "<|pad|>"
CL100K_SPECIALS = {EOT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}
O200K_SPECIALS = {EOT: 199999, "<|endofprompt|>": 200018}
CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
O200K_FILE = "fb374d419588a4632f3f557e76b4b70aebbca790"
# Llama-3's pattern (a custom regex for fastbpe).
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# Anchors, word boundaries, a look-behind, possessive repeats.
ANCHORS = r"(?m)^[ \t]+|\b\p{L}+\b|\p{N}{1,3}+|(?<=\d)[.,]|[^\s\p{L}\p{N}]++|\s+$|\s"
TRAINED = {"trained_gpt2": "gpt2", "trained_cl100k": "cl100k", "trained_o200k": "o200k", "trained_none": None,
           "trained_words": r"\w+|\s+|[^\w\s]+", "trained_llama3": LLAMA3, "trained_anchors": ANCHORS}
KINDS = [*TRAINED, "gpt2_files", "cl100k_ranks", "o200k_ranks"]

HYP = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@lru_cache(maxsize=None)
def corpus(name: str) -> str:
    """The first 128 KB of a shared corpus (enwiki: its first 512 KB, read from the .gz)."""
    path = shared_file("corpus", name)
    if name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            return f.read(512_000)
    return path.read_bytes()[:128_000].decode("utf-8", errors="ignore")


def with_specials(text: str, specials, every: int = 4999) -> str:
    out = []
    for k, i in enumerate(range(0, len(text), every)):
        out.append(text[i : i + every])
        out.append(specials[k % len(specials)])
    return "".join(out)


@lru_cache(maxsize=None)
def make(kind: str) -> fastbpe.Tokenizer:
    if kind in TRAINED:
        text = "".join(corpus(n)[:60_000] for n in ("tinystories_val.txt", "de_eltec.txt", "code_python.txt", "ru_tinystories.txt", "zh_fortunes.txt"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fastbpe.train(iter([with_specials(text, [EOT], 3000)]), 1200, special_tokens=[EOT, PAD], pattern=TRAINED[kind], num_threads=2)
    if kind == "gpt2_files":
        return fastbpe.Tokenizer.from_files(shared_file("gpt2", "vocab.json"), shared_file("gpt2", "merges.txt"), [EOT])
    if kind == "cl100k_ranks":
        return fastbpe.Tokenizer.from_tiktoken(shared_file("tiktoken_cache", CL100K_FILE), "cl100k", CL100K_SPECIALS)
    return fastbpe.Tokenizer.from_tiktoken(shared_file("tiktoken_cache", O200K_FILE), "o200k", O200K_SPECIALS)


_exported: dict = {}


def exported(kind: str, tmp_path_factory) -> tuple[fastbpe.Tokenizer, str]:
    """The tokenizer of `kind` and the path of its tokenizer.json (written once per session)."""
    if kind not in _exported:
        tok = make(kind)
        path = str(tmp_path_factory.mktemp(kind) / "tokenizer.json")
        assert tok.to_huggingface(path) == path
        _exported[kind] = tok, path
    return _exported[kind]


@pytest.fixture(scope="module", params=KINDS)
def pair(request, tmp_path_factory):
    """(fastbpe tokenizer, tokenizers.Tokenizer loaded from its export)."""
    tok, path = exported(request.param, tmp_path_factory)
    return tok, tokenizers.Tokenizer.from_file(path)


def assert_ids_equal(got, want, tok):
    got, want = list(got), list(want)
    if got == want:
        return
    i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    pytest.fail(
        f"{len(got)} ids vs {len(want)}; first difference at {i}: got {got[i : i + 6]}, want {want[i : i + 6]} "
        f"(want decodes to {tok.decode(want[max(0, i - 4) : i + 6])!r})"
    )


def chunks(text: str, size: int = 16_384) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# ---- ids and text on the corpora ------------------------------------------------------------------


@pytest.mark.parametrize("name", CORPORA)
def test_corpus_ids_equal_tokenizers(pair, name):
    tok, hf = pair
    parts = chunks(with_specials(corpus(name), tok.special_tokens))
    got = [e.ids for e in hf.encode_batch(parts)]
    want = tok.encode_batch(parts)
    for g, w in zip(got, want):
        assert_ids_equal(g, w, tok)
    assert tok.special_token_ids[EOT] in want[0]
    assert hf.decode(want[0], skip_special_tokens=False) == parts[0]


# ---- generated text -------------------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        "'s", "'S", "'t", "'LL", "'Ve", "'re", "'", "\u2019s", "I'm", "they'll've", "'\u017f",  # ſ folds to s
        "0", "42", "123", "1234567", "\u0661\u0662\u0663", "\u00bd", "\u2167", "3.14", "1,000",
        "a", "Z", "\u0130", "\u212a", "\u00e9", "e\u0301", "\u0308", "\u00df", "\u01c5", "\u02b0", "\u0295",
        "\u4e2d\u6587", "\ud55c\uad6d\uc5b4", "\u041f\u0440\u0438\u0432\u0435\u0442", "\U0001f389", "\U0001f468\u200d\U0001f469",
        # letters and digits that only recent Unicode has (Oniguruma's tables lack them)
        "\U00010940", "\U00016ea0", "\U00011de0", "\U000107bb",
        " ", "  ", "\t", "\n", "\r", "\r\n", "\n\n", "\x0b", "\x0c", "\x85", "\xa0", "\u2028", "\u3000", "\x1c", "\x00",
        "!", "...", "//", "<|", "|>", "<|endoftext", EOT, EOT + EOT, PAD, "<|fim_prefix|>", "<|endofprompt|>",
    ]
)
RUNS = st.builds(operator.mul, st.sampled_from([" ", "\n", "\t", "\r\n", " \n", "a", "1", "'s", "\u00e9"]), st.integers(1, 40))
ANY = st.characters(exclude_categories=("Cs",))
TEXT = st.lists(st.one_of(FRAGMENTS, RUNS, st.text(ANY, max_size=8)), max_size=40).map("".join)


@settings(HYP, max_examples=300)
@given(text=TEXT)
@example("I'm they'll've 'S 'RE 'Ll\n\n\n  x  \t\n" + EOT + "  12345678 ab/\n\n" + PAD)
@example("'\u017f \U00010940x\u0295 \u0661\u0662\u0663\u0664 \r\n  ")
def test_text_ids_equal_tokenizers(pair, text):
    tok, hf = pair
    ids = tok.encode(text)
    assert_ids_equal(hf.encode(text).ids, ids, tok)
    assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids)


@HYP
@given(data=st.data())
def test_decode_of_any_ids_equals_tokenizers(pair, data):
    """Ids that cut characters in the middle: both replace the broken bytes alike."""
    tok, hf = pair
    ids = data.draw(st.lists(st.sampled_from(sorted(tok.vocab)[:300] + sorted(tok.vocab)[-50:]), max_size=12))
    assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids)


# ---- transformers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_transformers_tokenizer_file_ids_equal(kind, tmp_path_factory):
    from transformers import PreTrainedTokenizerFast

    tok, path = exported(kind, tmp_path_factory)
    hf = PreTrainedTokenizerFast(tokenizer_file=path, clean_up_tokenization_spaces=False)
    text = with_specials(corpus("tinystories_val.txt")[:20_000] + corpus("code_go.txt")[:20_000] + corpus("zh_fortunes.txt")[:5_000], tok.special_tokens, 2999)
    ids = tok.encode(text)
    assert_ids_equal(hf(text)["input_ids"], ids, tok)
    assert hf.decode(ids) == text


@pytest.mark.parametrize("kind", ["gpt2_files", "cl100k_ranks", "trained_cl100k"])
def test_transformers_folder(kind, tmp_path):
    """A folder: AutoTokenizer loads it, with the end of text as eos (and bos), the pad token where
    the tokenizer has one, and decoded text untouched."""
    from transformers import AutoTokenizer

    tok = make(kind)
    assert tok.to_huggingface(f"{tmp_path}/hf/") == f"{tmp_path}/hf/tokenizer.json"
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert (hf.eos_token, hf.eos_token_id) == (EOT, tok.special_token_ids[EOT])
    assert (hf.bos_token, hf.bos_token_id) == (EOT, tok.special_token_ids[EOT])
    if PAD in tok.special_token_ids:
        assert (hf.pad_token, hf.pad_token_id) == (PAD, tok.special_token_ids[PAD])
    else:
        assert hf.pad_token is None
    text = "Hello , world . 'tis  12345\n\n" + EOT + " x ."
    assert hf(text)["input_ids"] == tok.encode(text)
    assert hf.decode(tok.encode(text)) == text
    config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert config["clean_up_tokenization_spaces"] is False


def test_an_existing_folder_is_written_into(tmp_path):
    tok = make("trained_gpt2")
    assert tok.to_huggingface(tmp_path) == str(tmp_path / "tokenizer.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]


# ---- the regex rewrite ----------------------------------------------------------------------------

# Each construct `translate` rewrites; none can match the empty string.
REWRITTEN = [
    r"\w+",
    r"\W+|\w+",
    r"(?i)hello|\d+",
    r"(?i:[a-z]+)|'(?i:s|t)",
    r"(?s).{1,3}",
    r".{2,}?x|.",
    r"a++b|a|\d{2}?|\d{1,3}?5",
    r"(?>\s+)\S|x*+y",
    r"(?m)^\w+|\w+$",
    r"^\s*\w+|\w+\Z|\A\W+",
    r"\w+$|\s+",
    r"\b\w+\b|\B\W",
    r"(?<=\d)\w+|(?<![a-z])\d{2,4}",
    r"\w+(?=[.!?])|\w+(?!\s)",
    r"(?P<word>[[:alpha:]]+)|[]x-]+|[^]a]",
    r"\x41+|\u00e9|\N{GREEK SMALL LETTER ALPHA}|\101|\U0001F389|\0",
    r"[^\s\p{L}\p{N}]++|\p{N}{1,3}+|\p{Lu}\p{Ll}*|\PL",
    r"(?#a comment)\d+|[\d\s]",
    r"\p{Han}+|\p{Script=Cyrillic}+|\p{Greek}+",
    r"(?a)\w+|\s",
    r"(?i)\u017f|(?-i:K)k",
    r"[\\\[\]^.$|?*+(){}]+",
    r"(?:a|b|)c|(a)",
    LLAMA3,
    ANCHORS,
    patterns.GPT2,
    patterns.CL100K,
    patterns.O200K,
]


def hf_pieces(onig_regex: str, text: str) -> list[str]:
    split = tokenizers.pre_tokenizers.Split(tokenizers.Regex(onig_regex), "isolated")
    return [p for p, _ in split.pre_tokenize_str(text)]


@pytest.mark.parametrize("pattern", REWRITTEN)
def test_rewritten_pattern_splits_as_regex(pattern):
    rewritten = onig.translate(pattern)
    rx = regex.compile(pattern)
    for name in ("code_python.txt", "de_eltec.txt", "zh_fortunes.txt"):
        text = corpus(name)[:30_000]
        assert hf_pieces(rewritten, text) == patterns.pieces(rx, text)


@settings(HYP, max_examples=400)
@given(pattern=st.sampled_from(REWRITTEN), text=TEXT)
@example(pattern=r"(?i)\u017f|(?-i:K)k", text="s\u017fS K\u212ak")
def test_rewritten_pattern_splits_generated_text_as_regex(pattern, text):
    assert hf_pieces(onig.translate(pattern), text) == patterns.pieces(regex.compile(pattern), text)


def test_named_patterns_leave_nothing_to_the_engines_tables():
    """No \\p{...}, \\w, \\s, \\d or case-insensitive group is left for Oniguruma to interpret."""
    for source in patterns.NAMED.values():
        rewritten = onig.translate(source)
        assert not regex.search(r"\\[pPwWsSdDbB]|\(\?i|\{\d+,\d*\}\+", rewritten), rewritten[:200]


REFUSED = [
    (r"\w*", "empty string"),
    (r"a|", "empty string"),
    (r"(?:\s+)?", "empty string"),
    (r"\b", "empty string"),
    ("", "empty string"),
    (r"(\w)\1", "backreference"),
    (r"(?P<a>x)(?P=a)", "backreference"),
    (r"(?x) a b", "verbose"),
    (r"a(?i)b", "flags '\\(\\?i\\)' after the start"),
    (r"(?<=a+)b", "look-behind"),
    (r"\G\w+", "\\\\G"),
    (r"(?r)\w+", "reverse"),
    (r"\X", "grapheme"),
    (r"(a)(?(1)b|c)", "conditional"),
    (r"a{e<=1}", "'\\{' with nothing to repeat"),
    (r"(?V1)[[a-z]--[aeiou]]", "version 1"),
    (r"\w{1,200000}", "repeat count"),
]


@pytest.mark.parametrize("pattern,match", REFUSED)
def test_to_huggingface_refuses_what_it_cannot_rewrite(tmp_path, pattern, match):
    tok = fastbpe.Tokenizer({i: bytes([i]) for i in range(256)}, [], [EOT], pattern=pattern)
    with pytest.raises(ValueError, match=match) as info:
        tok.to_huggingface(tmp_path / "tokenizer.json")
    assert repr(pattern) in str(info.value)
    assert not (tmp_path / "tokenizer.json").exists()


# ---- special tokens -------------------------------------------------------------------------------


def test_special_token_ids_are_kept_where_the_model_has_gaps(tmp_path):
    """Special ids after a gap (cl100k's 100257, o200k's 199999) and out of order survive: the
    model's vocab holds them too."""
    vocab = {i: bytes([i]) for i in range(256)}
    tok = fastbpe.Tokenizer(vocab | {300: b"<|b|>", 290: b"<|a|>"}, [], ["<|b|>", "<|a|>"])
    tok.to_huggingface(tmp_path / "t.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "t.json"))
    assert hf.encode("x<|a|>y<|b|>").ids == tok.encode("x<|a|>y<|b|>") == [120, 290, 121, 300]


def test_a_special_token_that_is_an_ordinary_token_too(tmp_path):
    """GPT-2 with " Hello" and "Hello" declared special: they keep their ordinary ids."""
    tok = fastbpe.Tokenizer.from_files(shared_file("gpt2", "vocab.json"), shared_file("gpt2", "merges.txt"), [EOT, " Hello", "Hello"])
    tok.to_huggingface(tmp_path / "t.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "t.json"))
    text = "Hello Hello  Hello" + EOT + "Hellos"
    assert hf.encode(text).ids == tok.encode(text)
    assert hf.decode(tok.encode(text), skip_special_tokens=False) == text


@pytest.mark.parametrize("special", ["<|\u00e9|>", "\u0120x", "\u00a1"])
def test_a_special_token_tokenizers_would_decode_differently_is_refused(tmp_path, special):
    tok = fastbpe.Tokenizer({i: bytes([i]) for i in range(256)}, [], [EOT, special])
    with pytest.raises(ValueError, match="would decode it as"):
        tok.to_huggingface(tmp_path / "t.json")


def test_a_special_token_with_the_text_of_another_token_is_refused(tmp_path):
    """A CS336 vocabulary may list a special token's bytes twice: as a merge's result and as the
    special token; a tokenizer.json has one id per string."""
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"ab", 257: b"ab"}
    tok = fastbpe.Tokenizer(vocab, [(b"a", b"b")], ["ab"])
    assert tok.special_token_ids == {"ab": 257}
    with pytest.raises(ValueError, match="'ab' \\(id 257\\).*id 256"):
        tok.to_huggingface(tmp_path / "t.json")


# ---- reading tokenizer.json -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_from_huggingface_gives_back_the_tokenizer(kind, tmp_path_factory):
    tok, path = exported(kind, tmp_path_factory)
    again = fastbpe.Tokenizer.from_huggingface(path)
    assert again == tok
    assert again.fingerprint() == tok.fingerprint()
    assert again.pattern == tok.pattern  # named patterns come back by name: the Rust splitter
    text = with_specials(corpus("code_rust.txt")[:30_000], tok.special_tokens, 2999)
    assert again.encode(text) == tok.encode(text)


def test_from_huggingface_takes_a_folder_a_json_string_and_a_tokenizers_object(tmp_path):
    tok = make("trained_words")
    tok.to_huggingface(str(tmp_path) + "/")
    text = (tmp_path / "tokenizer.json").read_text(encoding="utf-8")
    for source in (tmp_path, str(tmp_path / "tokenizer.json"), text, tokenizers.Tokenizer.from_str(text)):
        assert fastbpe.Tokenizer.from_huggingface(source) == tok


def _gpt2_hf(pre_tokenizer) -> tokenizers.Tokenizer:
    """GPT-2's files as `tokenizers` builds them, with the given pre-tokenizer."""
    bpe = tokenizers.models.BPE.from_file(str(shared_file("gpt2", "vocab.json")), str(shared_file("gpt2", "merges.txt")))
    hf = tokenizers.Tokenizer(bpe)
    hf.pre_tokenizer = pre_tokenizer
    hf.decoder = tokenizers.decoders.ByteLevel()
    hf.add_special_tokens([EOT])
    return hf


FOREIGN = {
    "gpt2": lambda: _gpt2_hf(tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)),
    "llama3_shaped": lambda: _gpt2_hf(
        tokenizers.pre_tokenizers.Sequence(
            [
                tokenizers.pre_tokenizers.Split(tokenizers.Regex(LLAMA3), "isolated"),
                tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    ),
}


@pytest.mark.parametrize("name", list(FOREIGN))
def test_a_file_tokenizers_built_gives_its_ids(name):
    hf = FOREIGN[name]()
    tok = fastbpe.Tokenizer.from_huggingface(hf)
    assert tok.pattern == ("gpt2" if name == "gpt2" else LLAMA3)
    assert tok.special_token_ids == {EOT: 50256}
    for corpus_name in ("de_eltec.txt", "code_python.txt", "zh_fortunes.txt", "enwiki_100M.txt.gz"):
        parts = chunks(with_specials(corpus(corpus_name)[:100_000], [EOT]))
        got = tok.encode_batch(parts)
        for g, e in zip(got, hf.encode_batch(parts)):
            assert_ids_equal(g, e.ids, tok)
        assert tok.decode(got[0]) == hf.decode(got[0], skip_special_tokens=False)


def _edited(tok, edit) -> str:
    data = json.loads(json.dumps(fastbpe.formats.huggingface.to_json(tok)))
    edit(data)
    return json.dumps(data)


def _split(regex_text):
    return lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(pattern={"Regex": regex_text})


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: d.update(normalizer={"type": "BertNormalizer"}), "normalizer 'BertNormalizer'"),
        (lambda d: d.update(normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Strip"}]}), "normalizer 'Strip'"),
        (lambda d: d.update(post_processor={"type": "TemplateProcessing"}), "TemplateProcessing post_processor needs"),
        (lambda d: d.update(post_processor={"type": "Foo"}), "post_processor 'Foo'"),
        (lambda d: d.update(truncation={"max_length": 5}), "truncation is set"),
        (lambda d: d.update(decoder=None), "decoder None"),
        (lambda d: d["model"].update(type="WordPiece"), "model is 'WordPiece'"),
        (lambda d: d["model"].update(byte_fallback=True), "byte_fallback"),
        (lambda d: d["model"].update(dropout=0.1), "dropout"),
        (lambda d: d.update(pre_tokenizer={"type": "Metaspace"}), "pre_tokenizer 'Metaspace'"),
        (lambda d: d["pre_tokenizer"]["pretokenizers"].reverse(), "step after ByteLevel"),
        (lambda d: d["pre_tokenizer"]["pretokenizers"].pop(), "does not end with ByteLevel"),
        (lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(behavior="Removes"), "behavior 'Removes'"),
        (_split(r"\p{N}{1,3}+|\w+|\s+|."), "repeat \\{n,m\\}\\+"),
        (_split(r"^\s+|\w+|."), "line anchors"),
        (_split(r"(?m)\w+|."), "flag m"),
        (_split(r"\h+|."), "escape"),
        (lambda d: d["added_tokens"][0].update(lstrip="yes"), "lstrip 'yes'"),
        (lambda d: d["added_tokens"][0].update(content="é"), "decodes in tokenizers"),
        (lambda d: d["added_tokens"][0].update(id=5), "id 5"),
        (lambda d: d["model"]["merges"].append("x y z"), "merges\\[\\d+\\]"),
        (lambda d: d["model"]["vocab"].update({"a b": 5000}), "outside GPT-2's byte alphabet"),
    ],
)
def test_from_huggingface_refuses_what_it_cannot_read_exactly(edit, match):
    tok = make("trained_words")
    with pytest.raises(ValueError, match=match):
        fastbpe.Tokenizer.from_huggingface(_edited(tok, edit))


def test_from_huggingface_names_a_missing_file_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        fastbpe.Tokenizer.from_huggingface(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        fastbpe.Tokenizer.from_huggingface(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not valid JSON"):
        fastbpe.Tokenizer.from_huggingface("{not json")
    with pytest.raises(TypeError, match="tokenizers.Tokenizer"):
        fastbpe.Tokenizer.from_huggingface(42)


def test_a_custom_pattern_comes_back_only_if_the_regex_is_its_rewrite():
    """The comment that carries a custom pattern is trusted only if the regex after it is that
    pattern's rewrite: an edited regex is read as itself."""
    tok = make("trained_words")
    data = fastbpe.formats.huggingface.to_json(tok)
    source = data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    assert source.startswith("(?#fastbpe pattern:")
    assert fastbpe.formats.huggingface.pattern_of_regex(source, "x") == tok.pattern
    edited = source.split(")", 1)[0] + r")\w+|\s+"
    assert fastbpe.formats.huggingface.pattern_of_regex(edited, "x") == edited


def test_merges_written_as_strings_are_read_too():
    tok = make("trained_gpt2")
    text = _edited(tok, lambda d: d["model"].update(merges=[" ".join(m) for m in d["model"]["merges"]]))
    assert fastbpe.Tokenizer.from_huggingface(text) == tok
