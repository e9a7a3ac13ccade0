"""Bad input to the tokenizer's constructors and loaders, and custom patterns: every failure is a
typed Exception naming what is wrong, and no text is ever lost."""

import base64
import json
import subprocess
import sys
import warnings
from functools import lru_cache

import numpy as np
import pytest
import regex
from conftest import shared_file
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import fastbpe
from fastbpe import patterns, reference
from fastbpe.formats.gpt2 import token_to_str
from fastbpe.tokenizer import UnknownTokenError

EOT = "<|endoftext|>"
BYTES = {i: bytes([i]) for i in range(256)}
HYP = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TEXT = "Hello, world! It's 2024: naïve café, 中文 and 🎉.\n\t  end"
CORPUS = ("the cat sat on the mat; the hat, the bat! 42 + 7 = 49. " * 30 + EOT) * 3 + TEXT * 5


def gpt2(specials=(EOT,)):
    return fastbpe.Tokenizer.from_files(shared_file("gpt2", "vocab.json"), shared_file("gpt2", "merges.txt"), list(specials))


def small(**kw):
    """A tokenizer with the 256 bytes, 'ab' and 'abc'."""
    kw.setdefault("special_tokens", [EOT])
    return fastbpe.Tokenizer({**BYTES, 256: b"ab", 257: b"abc"}, [(b"a", b"b"), (b"ab", b"c")], **kw)


def roundtrips(tok, text=TEXT):
    return tok.decode(tok.encode(text)) == text


# ---- 1. pattern names ---------------------------------------------------------------------------


@pytest.mark.parametrize("alias,name", [("r50k_base", "gpt2"), ("cl100k_base", "cl100k"), ("o200k_base", "o200k"), ("gpt2", "gpt2")])
def test_tiktoken_encoding_names_are_pattern_aliases(alias, name):
    tok = small(pattern=alias)
    assert tok.pattern == name
    assert tok.encode(TEXT) == small(pattern=name).encode(TEXT) != []
    assert roundtrips(tok)
    trained = fastbpe.train(iter([CORPUS]), 300, pattern=alias)
    assert trained.pattern == name
    assert trained.merges == fastbpe.train(iter([CORPUS]), 300, pattern=name).merges


def test_from_tiktoken_with_an_encoding_name():
    path = shared_file("tiktoken_cache", "9b5ad71b2ce5302211f9c61530b329a4922fc6a4")
    tok = fastbpe.Tokenizer.from_tiktoken(path, "cl100k_base")
    assert tok.pattern == "cl100k"
    assert tok.encode("hi there") == [6151, 1070]


@pytest.mark.parametrize("name", ["GPT2", "gpt-2", "cl100k-base", "abc", "none", "o200K_base", "_"])
def test_unknown_pattern_name_is_refused_with_the_names(tmp_path, name):
    def check(info):
        msg = str(info.value)
        assert repr(name) in msg
        for known in ["gpt2", "cl100k", "o200k", "r50k_base", "cl100k_base", "o200k_base"]:
            assert repr(known) in msg
        assert f"(?:{name})" in msg  # how to pass it as a regex

    with pytest.raises(ValueError) as info:
        small(pattern=name)
    check(info)
    with pytest.raises(ValueError) as info:
        fastbpe.train(iter(["abc"]), 300, pattern=name)
    check(info)
    path = tmp_path / "t.tiktoken"
    path.write_bytes(b"".join(base64.b64encode(bytes([i])) + b" %d\n" % i for i in range(256)))
    with pytest.raises(ValueError) as info:
        fastbpe.Tokenizer.from_tiktoken(path, name)
    check(info)


def test_a_lowercase_slip_gets_a_suggestion():
    with pytest.raises(ValueError, match=r"did you mean 'gpt2'\?"):
        small(pattern="GPT2")
    with pytest.raises(ValueError, match=r"did you mean 'cl100k'\?"):
        small(pattern="CL100K_BASE")


def test_a_word_regex_is_written_as_a_group():
    tok = small(pattern="(?:abc)")
    assert patterns.pieces(patterns.compile(tok.pattern), "xabcyabc") == ["x", "abc", "y", "abc"]
    assert tok.encode("xabcyabc") == [ord("x"), 257, ord("y"), 257]
    assert roundtrips(tok)


@pytest.mark.parametrize("pattern", [5, b"gpt2", ["gpt2"]])
def test_pattern_of_another_type_is_refused(pattern):
    with pytest.raises(TypeError, match="pattern"):
        small(pattern=pattern)
    with pytest.raises(TypeError, match="pattern"):
        fastbpe.train(iter(["abc"]), 300, pattern=pattern)


def test_invalid_regex_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"invalid pattern '\(unclosed'"):
        small(pattern="(unclosed")


def test_cli_refuses_an_unknown_pattern_name(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text " * 50)
    out = tmp_path / "tok.json"
    cmd = [sys.executable, "-m", "fastbpe", "train-tokenizer", str(corpus), "--vocab-size", "300", "--out", str(out), "--pattern", "GPT2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("fastbpe: error: unknown pattern name 'GPT2'")
    assert "Traceback" not in proc.stderr
    assert not out.exists()


# ---- 1. custom patterns keep all text -----------------------------------------------------------

CUSTOM_PATTERNS = [r"\w+", r"\w*", r"[a-z]+", r"\d", r" ?\p{L}+", r"(\w)+", r"(?r)\w+", r"\s+", r"(?:x)", ""]


@pytest.mark.parametrize("pattern", CUSTOM_PATTERNS)
def test_custom_pattern_keeps_unmatched_text(pattern):
    tok = small(pattern=pattern)
    text = "Hello, world" + EOT + TEXT
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode_ordinary(text)) == text
    assert [tok.decode(ids) for ids in tok.encode_batch([text, "", "!!"])] == [text, "", "!!"]
    assert tok.decode(tok.encode_to_numpy(text)) == text
    assert tok.encode(text) == reference.encode(text, tok.vocab, tok.merges, tok.special_tokens, pattern)


def test_hello_world_with_a_word_pattern():
    tok = small(pattern=r"\w+")
    assert tok.decode(tok.encode("Hello, world")) == "Hello, world"


@pytest.mark.parametrize("pattern", CUSTOM_PATTERNS)
def test_pieces_contract(pattern):
    rx = patterns.compile(pattern)
    for text in ["", "Hello, world", TEXT, "  \n", "abc123abc"]:
        got = patterns.pieces(rx, text)
        assert "".join(got) == text
        assert all(got)
        assert got == reference.pretokenize(text, pattern)


def test_pieces_are_findall_for_the_named_patterns():
    for name in patterns.NAMED:
        assert patterns.pieces(patterns.compile(name), TEXT) == regex.findall(patterns.NAMED[name], TEXT)


def test_training_counts_the_text_between_matches(tmp_path):
    # Single letters: the letter pieces alone hold no pair; the ", " between them is the only one.
    text = "a, b, c, d, e, f, g, h, " * 20
    for source in (iter([text]), [tmp_path / "c.txt"]):
        (tmp_path / "c.txt").write_text(text)
        tok = fastbpe.train(source, 257, special_tokens=[], pattern=r"[a-z]+")
        assert tok.merges == [(b",", b" ")]
    assert reference.train_bpe_from_texts([text], 257, [], r"[a-z]+")[1] == [(b",", b" ")]


def test_empty_matches_make_no_empty_pieces():
    tok = fastbpe.train(iter([CORPUS]), 300, pattern=r"\w*")
    assert roundtrips(tok)
    assert b"" not in tok.vocab.values()


@pytest.mark.parametrize("pattern", [r"\w+", r"[a-z]+", r" ?\p{L}+", r"\d"])
def test_custom_pattern_pieces_equal_hugging_face_isolated_split(tmp_path, pattern):
    """`to_huggingface` writes a custom pattern as Split(pattern, "Isolated"), which keeps the
    text between matches as pieces too: the ids agree."""
    import tokenizers

    tok = trained(pattern)
    tok.to_huggingface(tmp_path / "tok.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tok.json"))
    text = "Hello, world!! 12 naïve 中文 cats" + EOT + "sat."
    assert tok.encode(text) == hf.encode(text).ids


@lru_cache(maxsize=None)
def trained(pattern):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fastbpe.train(iter([CORPUS]), 320, special_tokens=[EOT], pattern=pattern, num_threads=1)


PIECES_TEXT = st.lists(
    st.one_of(st.sampled_from(["the", " cat", ", ", "42", "  ", "\n", "é", "中文", "🎉", EOT, "'s", "-", "x1_"]), st.text(max_size=5)),
    max_size=20,
).map("".join)


@HYP
@given(pattern=st.sampled_from(CUSTOM_PATTERNS[:6]), text=PIECES_TEXT)
@example(pattern=r"\w+", text="Hello, world")
def test_custom_patterns_roundtrip_and_equal_the_reference(pattern, text):
    tok = trained(pattern)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids == reference.encode(text, tok.vocab, tok.merges, tok.special_tokens, pattern)
    assert tok.encode_ordinary(text) == reference.encode(text, tok.vocab, tok.merges, [], pattern)
    assert tok.encode_batch([text, text]) == [ids, ids]
    assert tok.encode_to_numpy(text).tolist() == ids


@settings(max_examples=60, deadline=None)
@given(pattern=st.sampled_from(CUSTOM_PATTERNS[:6]), texts=st.lists(PIECES_TEXT, min_size=1, max_size=3), vocab_size=st.integers(258, 300))
def test_custom_pattern_training_equals_the_reference(pattern, texts, vocab_size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = fastbpe.train(iter(texts), vocab_size, special_tokens=[EOT], pattern=pattern, num_threads=1)
        vocab, merges = reference.train_bpe_from_texts(texts, vocab_size, [EOT], pattern)
    assert (tok.vocab, tok.merges) == (vocab, merges)


# ---- 2. constructor arguments -------------------------------------------------------------------


def test_empty_token_is_refused():
    with pytest.raises(ValueError, match=r"vocab\[256\] is empty"):
        fastbpe.Tokenizer({**BYTES, 256: b""}, [])


@pytest.mark.parametrize("value", [5, "ab", [97, 98], None, 1.5])
def test_token_that_is_not_bytes_is_refused(value):
    with pytest.raises(TypeError, match=r"vocab\[256\]"):
        fastbpe.Tokenizer({**BYTES, 256: value}, [])


def test_bytes_like_tokens_are_accepted():
    tok = fastbpe.Tokenizer({**BYTES, 256: bytearray(b"ab"), 257: memoryview(b"abc")}, [(b"a", b"b"), (bytearray(b"ab"), memoryview(b"c"))])
    assert tok.vocab[256] == b"ab" and type(tok.vocab[257]) is bytes
    assert tok.encode("abc") == [257]


@pytest.mark.parametrize(
    "key,error",
    [("256", TypeError), (256.0, TypeError), (True, TypeError), (None, TypeError), (-1, ValueError), (2**32, ValueError), (2**70, ValueError)],
)
def test_ids_are_ints_in_range(key, error):
    vocab = {i: t for i, t in BYTES.items() if i != 1}
    vocab[key] = b"\x01"
    with pytest.raises(error, match="id"):
        fastbpe.Tokenizer(vocab, [])


def test_numpy_int_ids_are_accepted():
    tok = fastbpe.Tokenizer({np.int64(i): t for i, t in BYTES.items()}, [])
    assert all(type(i) is int for i in tok.vocab)
    assert roundtrips(tok)


def test_a_token_under_two_ids_is_refused():
    with pytest.raises(ValueError, match=r"ids 97 and 300 both have the token b'a'"):
        fastbpe.Tokenizer({**BYTES, 300: b"a"}, [])


@pytest.mark.parametrize("merges", [[("a", "b")], [(b"a",)], [b"ab"], [(b"a", b"b", b"c")], [(b"a", 98)], [None]])
def test_merges_are_pairs_of_bytes(merges):
    with pytest.raises(TypeError, match="merge 0"):
        fastbpe.Tokenizer({**BYTES, 256: b"ab"}, merges)


@pytest.mark.parametrize("merges", ["ab", b"ab", 5])
def test_merges_is_a_list(merges):
    with pytest.raises(TypeError, match="merges"):
        fastbpe.Tokenizer(BYTES, merges)


def test_a_missing_byte_is_refused_at_construction():
    with pytest.raises(ValueError, match="single byte 0x07"):
        fastbpe.Tokenizer({i: t for i, t in BYTES.items() if i != 7}, [])


def test_a_missing_merge_result_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"merge 0 .*result b'ab' is not in the vocabulary"):
        fastbpe.Tokenizer(BYTES, [(b"a", b"b")])


def test_vocab_that_is_not_a_mapping_is_refused():
    with pytest.raises(TypeError, match="vocab must be a mapping"):
        fastbpe.Tokenizer(list(BYTES.values()), [])


BAD_SPECIALS = ["abc", [1], [""], ["a", "a"], 5, [b"ab"], [None]]


@pytest.mark.parametrize("specials", BAD_SPECIALS)
def test_special_tokens_are_checked_alike_everywhere(specials):
    """One validation: the Tokenizer, from_files and train raise the same error."""
    errors = []
    for make in (
        lambda: fastbpe.Tokenizer(BYTES, [], specials),
        lambda: fastbpe.train(iter(["abc"]), 300, special_tokens=specials),
        lambda: fastbpe.Tokenizer.from_files(shared_file("gpt2", "vocab.json"), shared_file("gpt2", "merges.txt"), specials),
    ):
        with pytest.raises((TypeError, ValueError)) as info:
            make()
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1] == errors[2]


def test_one_string_of_special_tokens_gets_the_hint():
    with pytest.raises(TypeError, match=r"\['abc'\]"):
        fastbpe.Tokenizer(BYTES, [], special_tokens="abc")


# ---- 2. a special token equal to an existing token ----------------------------------------------


def test_special_token_equal_to_a_merge_result_reuses_its_id():
    tok = small(special_tokens=["ab"])
    assert tok.special_token_ids == {"ab": 256} and tok.vocab_size == 258
    assert tok.encode_ordinary("abc") == [257]  # "ab" keeps its role in the merges
    assert tok.encode("abc") == [256, ord("c")]  # the special token is split off first
    assert tok.encode("xab") == [ord("x"), 256]
    assert tok.decode(tok.encode("abcab")) == "abcab"


def test_special_token_equal_to_a_byte_reuses_its_id():
    tok = fastbpe.Tokenizer(BYTES, [], special_tokens=["a"])
    assert tok.special_token_ids == {"a": 97} and tok.vocab_size == 256
    assert tok.encode("banana") == [98, 97, 110, 97, 110, 97]


def test_gpt2_with_an_existing_word_as_special_token(tmp_path):
    tok = gpt2([EOT, "Hello"])
    plain = gpt2()
    assert tok.special_token_ids == {EOT: 50256, "Hello": 15496}
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode_ordinary(TEXT) == plain.encode_ordinary(TEXT)
    assert roundtrips(tok)
    tok.save(tmp_path / "tok.json")
    again = fastbpe.Tokenizer.load(tmp_path / "tok.json")
    assert again == tok
    assert again.encode("Hello world" + EOT) == tok.encode("Hello world" + EOT)


def test_cs336_vocab_that_lists_a_special_token_after_the_merges():
    """A special token appended after the merges although a merge builds the same bytes: the
    special token takes the appended id, the merge keeps the other."""
    vocab = {**BYTES, 256: b"ab", 257: b"ab"}
    tok = fastbpe.Tokenizer(vocab, [(b"a", b"b")], ["ab"])
    assert tok.special_token_ids == {"ab": 257}
    assert tok.encode_ordinary("abab") == [256, 256]
    assert tok.encode("abab") == [257, 257]
    assert tok.decode([256, 257]) == "abab"


def test_training_with_a_special_token_that_is_a_byte():
    text = "the quick brown fox jumps over a lazy dog: banana " * 20
    tok = fastbpe.train(iter([text]), 270, special_tokens=["a"], pattern="gpt2")
    last = tok.vocab_size - 1
    assert tok.special_token_ids == {"a": last} and tok.vocab[last] == b"a"
    assert all(b"a" not in x + y for x, y in tok.merges)  # never merged
    assert tok.encode("banana").count(last) == 3
    assert roundtrips(tok, text)
    vocab, merges = reference.train_bpe_from_texts([text], 270, ["a"], "gpt2")
    assert (tok.vocab, tok.merges) == (vocab, merges)
    # The CS336 constructor on train_bpe's output gives the same tokenizer.
    assert fastbpe.Tokenizer(vocab, merges, ["a"]) == tok


# ---- 3. loaders ---------------------------------------------------------------------------------


def saved_dict():
    return small(special_tokens=[EOT]).to_dict()


LOAD_CASES = [
    ("pattern", lambda d: d.pop("pattern")),
    ("vocab", lambda d: d.pop("vocab")),
    ("merges", lambda d: d.pop("merges")),
    ("special_tokens", lambda d: d.pop("special_tokens")),
    ("vocab", lambda d: d.update(vocab=list(d["vocab"].values()))),
    ("vocab", lambda d: d["vocab"].update({"x": "a"})),
    ("vocab", lambda d: d["vocab"].update({"-1": "a"})),
    ("vocab", lambda d: d["vocab"].update({"4294967296": "a"})),
    ("vocab", lambda d: d["vocab"].update({"300": 5})),
    ("vocab", lambda d: d["vocab"].update({"300": ""})),
    ("vocab", lambda d: d["vocab"].update({"300": "a b"})),
    ("vocab", lambda d: d["vocab"].update({"300": "a"})),
    ("vocab", lambda d: d["vocab"].pop("7")),
    ("merges", lambda d: d.update(merges={"a": "b"})),
    ("merges", lambda d: d["merges"].append(["a"])),
    ("merges", lambda d: d["merges"].append("ab")),
    ("merges", lambda d: d["merges"].append([1, 2])),
    ("merges", lambda d: d["merges"].append(["x", "y"])),
    ("special_tokens", lambda d: d.update(special_tokens=[EOT])),
    ("special_tokens", lambda d: d.update(special_tokens={EOT: "258"})),
    ("special_tokens", lambda d: d.update(special_tokens={EOT: 5})),
    ("special_tokens", lambda d: d.update(special_tokens={"": 258})),
    ("pattern", lambda d: d.update(pattern=5)),
    ("pattern", lambda d: d.update(pattern="GPT2")),
    ("pattern", lambda d: d.update(pattern="(unclosed")),
    ("rule", lambda d: d.update(rule="bytes")),
]


@pytest.mark.parametrize("field,mutate", LOAD_CASES)
def test_load_names_the_file_and_the_field(tmp_path, field, mutate):
    data = saved_dict()
    mutate(data)
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        fastbpe.Tokenizer.load(path)
    msg = str(info.value)
    assert str(path) in msg and f"'{field}'" in msg, msg


@pytest.mark.parametrize("content", [b"[]", b"5", b"null", b'"x"', b"\xff\xfe", b"[" * 100_000, b'{"a": 1, "a": 2}'])
def test_load_of_other_json(tmp_path, content):
    path = tmp_path / "tok.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="tok.json"):
        fastbpe.Tokenizer.load(path)


def test_load_with_a_key_twice(tmp_path):
    text = json.dumps(saved_dict()).replace('"256": ', '"256": "a", "256": ', 1)
    path = tmp_path / "tok.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="'256' appears twice"):
        fastbpe.Tokenizer.load(path)


def test_load_of_a_valid_file_still_works(tmp_path):
    tok = small(special_tokens=[EOT, "ab"], pattern=r"\w+")
    tok.save(tmp_path / "tok.json")
    assert fastbpe.Tokenizer.load(tmp_path / "tok.json") == tok


@pytest.mark.parametrize(
    "ids,bad",
    [
        ([np.int64(5), -1], "-1"),
        ([5, 2**32], "4294967296"),
        ([np.int64(5), np.int64(2**32)], "4294967296"),
        ([np.uint64(2**63)], str(2**63)),
        (np.array([5, 999_999]), "999999"),
        ([1, 2**70], str(2**70)),
        ([5, 300], "300"),
    ],
)
def test_decode_names_the_bad_id(ids, bad):
    tok = small()
    for decode in (tok.decode, tok.decode_bytes):
        with pytest.raises(UnknownTokenError) as info:
            decode(ids)
        assert f"token id {bad} " in str(info.value)
        assert "integral type" not in str(info.value)


def test_decode_accepts_numpy_ints():
    tok = small()
    assert tok.decode([np.int64(257), np.uint16(97), np.int32(98)]) == "abcab"


@pytest.mark.parametrize("ids", [["a"], [1.5], [1, None], [[1, 2]]])
def test_decode_of_non_integers_is_a_type_error(ids):
    with pytest.raises(TypeError, match="token ids must be ints"):
        small().decode(ids)


def write_gpt2_files(tmp_path, vocab_text, merges_text="#version: 0.2\n"):
    (tmp_path / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges_text, encoding="utf-8")
    return tmp_path / "vocab.json", tmp_path / "merges.txt"


def gpt2_vocab(extra=()):
    """vocab.json entries for the 256 bytes (in GPT-2's alphabet) and `extra` (token, id)."""
    items = [(json.dumps(token_to_str(bytes([i]))), i) for i in range(256)] + [(json.dumps(t), i) for t, i in extra]
    return "{" + ", ".join(f"{k}: {json.dumps(i) if not isinstance(i, str) else i}" for k, i in items) + "}"


def test_vocab_json_with_an_id_twice(tmp_path):
    vocab, merges = write_gpt2_files(tmp_path, gpt2_vocab([("ab", 256), ("cd", 256)]))
    with pytest.raises(ValueError) as info:
        fastbpe.Tokenizer.from_files(vocab, merges)
    msg = str(info.value)
    assert "vocab.json" in msg and "id 256" in msg and "'ab'" in msg and "'cd'" in msg
    assert "merge" not in msg


def test_vocab_json_with_a_token_twice(tmp_path):
    vocab, merges = write_gpt2_files(tmp_path, gpt2_vocab([("ab", 256), ("ab", 257)]))
    with pytest.raises(ValueError, match=r"vocab\.json: the key 'ab' appears twice"):
        fastbpe.Tokenizer.from_files(vocab, merges)


@pytest.mark.parametrize(
    "extra,match",
    [
        ([("ab", "true")], "not an int"),
        ([("ab", '"256"')], "not an int"),
        ([("ab", "-1")], "out of range"),
        ([("ab", "4294967296")], "out of range"),
        ([("", "256")], "empty"),
        ([("a b", "256")], "outside GPT-2's byte alphabet"),
    ],
)
def test_vocab_json_bad_entries(tmp_path, extra, match):
    vocab, merges = write_gpt2_files(tmp_path, gpt2_vocab(extra))
    with pytest.raises(ValueError, match=match) as info:
        fastbpe.Tokenizer.from_files(vocab, merges)
    assert "vocab.json" in str(info.value)


def test_merges_txt_error_names_the_line(tmp_path):
    vocab, merges = write_gpt2_files(tmp_path, gpt2_vocab([("ab", 256)]), "#version: 0.2\na b\nab c\n")
    with pytest.raises(ValueError, match=r"merges\.txt:3: merge 1 .*result b'abc' is not in the vocabulary of .*vocab\.json"):
        fastbpe.Tokenizer.from_files(vocab, merges)


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b"[1, 2]", b"", b"{"])
def test_vocab_json_that_is_not_an_object(tmp_path, content):
    (tmp_path / "vocab.json").write_bytes(content)
    (tmp_path / "merges.txt").write_text("")
    with pytest.raises(ValueError, match="vocab.json"):
        fastbpe.Tokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")


def tiktoken_file(tmp_path, extra=b""):
    path = tmp_path / "t.tiktoken"
    path.write_bytes(b"".join(base64.b64encode(bytes([i])) + b" %d\n" % i for i in range(256)) + extra)
    return path


def test_tiktoken_rank_twice_is_refused(tmp_path):
    path = tiktoken_file(tmp_path, b"YWI= 256\nY2Q= 256\n")  # ab 256, cd 256
    with pytest.raises(ValueError, match=r"t\.tiktoken:258: rank 256 is given twice \(line 257 and line 258\)"):
        fastbpe.Tokenizer.from_tiktoken(path, "gpt2")


def test_tiktoken_token_twice_is_refused(tmp_path):
    path = tiktoken_file(tmp_path, b"YWI= 256\nYWI= 257\n")  # ab 256, ab 257
    with pytest.raises(ValueError, match=r"t\.tiktoken:258: token b'ab' is given twice \(rank 256 on line 257, rank 257 on line 258\)"):
        fastbpe.Tokenizer.from_tiktoken(path, "gpt2")


@pytest.mark.parametrize("line", [b"YWI= -1", b"YWI= 4294967296", b"YWI= +5", b"YWI= 1_0", b"==== 300"])
def test_tiktoken_bad_ranks(tmp_path, line):
    path = tiktoken_file(tmp_path, line + b"\n")
    with pytest.raises(ValueError, match=r"t\.tiktoken:257"):
        fastbpe.Tokenizer.from_tiktoken(path, "gpt2")


@pytest.mark.parametrize(
    "specials,error,match",
    [
        ("<|x|>", TypeError, "dict of special token -> id"),
        ({"<|x|>": "300"}, TypeError, "not an int"),
        ({"<|x|>": True}, TypeError, "not an int"),
        ({"<|x|>": -1}, ValueError, "out of range"),
        ({"<|x|>": 2**32}, ValueError, "out of range"),
        ({"": 300}, ValueError, "empty"),
        ({"<|x|>": 97}, ValueError, "already gives"),
    ],
)
def test_tiktoken_bad_special_tokens(tmp_path, specials, error, match):
    with pytest.raises(error, match=match):
        fastbpe.Tokenizer.from_tiktoken(tiktoken_file(tmp_path), "gpt2", specials)


def test_tiktoken_special_tokens_may_share_an_id(tmp_path):
    """As in tiktoken's o200k_harmony: both names encode to the id, which decodes as the first;
    saving and loading keeps both."""
    tok = fastbpe.Tokenizer.from_tiktoken(tiktoken_file(tmp_path), "gpt2", {"<|x|>": 300, "<|y|>": 300, EOT: 301})
    assert tok.encode("<|y|>a<|x|>") == [300, 97, 300]
    assert tok.decode([300, 301]) == "<|x|>" + EOT
    tok.save(tmp_path / "tok.json")
    again = fastbpe.Tokenizer.load(tmp_path / "tok.json")
    assert again == tok and again.encode("<|y|><|x|>") == [300, 300] and again.decode([300]) == "<|x|>"


def test_tiktoken_missing_byte_is_refused_at_construction(tmp_path):
    path = tmp_path / "t.tiktoken"
    path.write_bytes(b"".join(base64.b64encode(bytes([i])) + b" %d\n" % i for i in range(255)))
    with pytest.raises(ValueError, match=r"t\.tiktoken: the vocabulary has no token for the single byte 0xff"):
        fastbpe.Tokenizer.from_tiktoken(path, "gpt2")


def test_train_with_a_huge_vocab_size_stops_with_a_warning():
    with pytest.warns(UserWarning, match="no pair of tokens is left"):
        tok = fastbpe.train(iter(["abcabc"]), 10**9, special_tokens=[])
    assert tok.merges == [(b"b", b"c"), (b"a", b"bc"), (b"abc", b"abc")][: len(tok.merges)] and roundtrips(tok, "abcabc")
    for size in (2**32 + 1, 2**64):  # beyond any id: still only the merges the corpus allows
        with pytest.warns(UserWarning, match="no pair of tokens is left"):
            assert fastbpe.train(iter(["abc"]), size, special_tokens=[]).merges == [(b"b", b"c"), (b"a", b"bc")]


# ---- 4. fuzz ------------------------------------------------------------------------------------
# Each strategy starts from a valid input and sometimes corrupts it, so that both the refusals
# and the round trip of what is accepted get exercised.


def attempt(make):
    """`make()`, or None if it raised an Exception; anything else (a PanicException from the
    Rust core, a SystemExit) fails the test."""
    try:
        return make()
    except Exception:
        return None
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - exactly what the fuzz is after
        pytest.fail(f"{type(e).__module__}.{type(e).__name__} is not an Exception: {e}")


def check_roundtrip(tok):
    """A tokenizer that was built encodes and decodes a small text (with its special tokens)."""
    event("built")
    text = "ab" + "".join(tok.special_tokens[:3]) + " Hello, wörld 12\n" + "".join(tok.special_tokens[:1])
    ids = attempt(lambda: tok.encode(text))
    assert ids is not None, "a tokenizer that was built must encode"
    # Special tokens that share an id decode as the first of them.
    first: dict[int, str] = {}
    for s, i in tok.special_token_ids.items():
        first.setdefault(i, s)
    parts = reference.split_keeping_special_tokens(text, tok.special_tokens)
    assert tok.decode(ids) == "".join(first[tok.special_token_ids[p]] if special else p for p, special in parts)
    assert tok.decode(tok.encode_ordinary(text)) == text


ALPHABET = [b"a", b"b", b"c", b" ", b"H", b"\xc3", b"\xb6", b"\x00"]


@st.composite
def bpe_parts(draw, max_merges=6):
    """(vocab, merges): the 256 bytes and a few merges of a small alphabet, ids in order."""
    known = list(ALPHABET)
    vocab = dict(BYTES)
    merges = []
    for _ in range(draw(st.integers(0, max_merges))):
        a, b = draw(st.sampled_from(known)), draw(st.sampled_from(known))
        if a + b not in known:
            merges.append((a, b))
            known.append(a + b)
            vocab[len(vocab)] = a + b
    return vocab, merges


SMALL_TOKENS = st.sampled_from([b"a", b"b", b"ab", b"abc", b"bc", b" ", b"\x00", b"\xff", b"", b"ab\xc3", b"Hello"])
IDS = st.one_of(st.integers(0, 400), st.integers(1000, 1 << 20), st.sampled_from([-1, 2**32, 2**40, True, "5", 1.0, None]))
TOKENS = st.one_of(SMALL_TOKENS, SMALL_TOKENS.map(bytearray), st.sampled_from([5, "ab", None, [97]]))
BAD_MERGES = st.one_of(st.tuples(SMALL_TOKENS, SMALL_TOKENS), st.sampled_from([(b"a",), b"ab", ("a", "b"), None, (b"a", b"b", b"c")]))
GOOD_SPECIALS = st.lists(st.sampled_from([EOT, "ab", "a", "Hello", "<|x|>", "é", "🎉", " ", "b" + EOT]), max_size=4, unique=True)
SPECIALS = st.one_of(GOOD_SPECIALS, GOOD_SPECIALS, st.none(), st.sampled_from(["abc", 5, [1], [""], ["a", "a"], [b"x"], [None]]))
GOOD_PATTERNS = st.sampled_from(["gpt2", "cl100k", "o200k", "r50k_base", "cl100k_base", "o200k_base", None] + CUSTOM_PATTERNS)
PATTERNS = st.one_of(GOOD_PATTERNS, GOOD_PATTERNS, st.sampled_from(["GPT2", "abc", "(unclosed", "[", 5, b"gpt2", "(?P<x>a)|(?P=x)"]))


@HYP
@given(parts=bpe_parts(), data=st.data(), specials=SPECIALS, pattern=PATTERNS)
def test_fuzz_constructor(parts, data, specials, pattern):
    vocab, merges = parts
    for _ in range(data.draw(st.integers(0, 2))):
        what = data.draw(st.sampled_from(["add", "drop", "merge"]))
        if what == "add":
            vocab[data.draw(IDS)] = data.draw(TOKENS)
        elif what == "drop":
            vocab.pop(data.draw(st.sampled_from(list(vocab))))
        else:
            merges.append(data.draw(BAD_MERGES))
    what = data.draw(st.sampled_from(["keep"] * 8 + ["merges", "vocab"]))
    if what == "merges":
        merges = data.draw(st.sampled_from(["ab", b"ab", 5, None, iter([(b"a", b"b")])]))
    elif what == "vocab":
        vocab = data.draw(st.sampled_from([list(vocab.values()), None, "abc"]))
    tok = attempt(lambda: fastbpe.Tokenizer(vocab, merges, specials, pattern))
    if tok is not None:
        check_roundtrip(tok)


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 2**33), st.floats(allow_nan=False), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=12,
)
LOAD_FIELDS = ["format", "version", "pattern", "special_tokens", "vocab", "merges", "rule"]


@HYP
@given(data=st.data())
def test_fuzz_load(tmp_path, data):
    kind = data.draw(st.sampled_from(["json", "bytes", "saved", "saved", "saved"]))
    if kind == "json":
        content = json.dumps(data.draw(JSON)).encode()
    elif kind == "bytes":
        content = data.draw(st.binary(max_size=200))
    else:
        vocab, merges = data.draw(bpe_parts())
        made = attempt(lambda: fastbpe.Tokenizer(vocab, merges, data.draw(GOOD_SPECIALS), data.draw(GOOD_PATTERNS)))
        d = made.to_dict()
        for _ in range(data.draw(st.integers(0, 3))):
            field = data.draw(st.sampled_from(LOAD_FIELDS))
            value = d.get(field)
            if data.draw(st.booleans()):
                d[field] = data.draw(JSON)
            elif field == "vocab" and isinstance(value, dict):
                value[data.draw(st.sampled_from(["256", "257", "300", "7", "x", "-1", "4294967296", "01"]))] = data.draw(
                    st.one_of(st.sampled_from(["a", "ab", "abc", "", "é"]), JSON)
                )
            elif field == "merges" and isinstance(value, list):
                value.append(data.draw(st.one_of(st.lists(st.sampled_from(["a", "b", "ab", "c", "", "x"]), max_size=3), JSON)))
            elif field == "special_tokens" and isinstance(value, dict):
                value[data.draw(st.sampled_from([EOT, "ab", "a", "", "zz"]))] = data.draw(st.one_of(st.integers(-1, 300), JSON))
            else:
                d.pop(field, None)
        content = json.dumps(d).encode()
    path = tmp_path / "tok.json"
    path.write_bytes(content)
    tok = attempt(lambda: fastbpe.Tokenizer.load(path))
    if tok is not None:
        check_roundtrip(tok)


def vocab_json(vocab):
    return json.dumps({token_to_str(t): i for i, t in vocab.items()})


def merges_txt(merges):
    return "#version: 0.2\n" + "".join(f"{token_to_str(a)} {token_to_str(b)}\n" for a, b in merges)


@HYP
@given(parts=bpe_parts(), data=st.data(), specials=SPECIALS)
def test_fuzz_from_files(tmp_path, parts, data, specials):
    vocab, merges = parts
    vocab_text, merges_text = vocab_json(vocab), merges_txt(merges)
    what = data.draw(st.sampled_from(["none", "none", "vocab", "entry", "merges", "line"]))
    if what == "vocab":
        vocab_text = data.draw(st.one_of(JSON.map(json.dumps), st.text(max_size=20)))
    elif what == "entry":
        key = data.draw(st.sampled_from(["ab", "abc", "Ġa", "a b", "", "é", EOT, "a"]))
        value = data.draw(st.one_of(st.integers(250, 400), st.sampled_from(["true", '"5"', "-1", "1.5", "4294967296", "null"])))
        vocab_text = vocab_text[:-1] + f", {json.dumps(key)}: {value}}}"
    elif what == "merges":
        merges_text = data.draw(st.text(max_size=30))
    elif what == "line":
        lines = merges_text.split("\n")
        lines.insert(data.draw(st.integers(0, len(lines))), data.draw(st.sampled_from(["a b", "ab c", "a  b", "Ġ a", "#version: 0.2", "x", "a b c"])))
        merges_text = "\n".join(lines)
    vocab_path, merges_path = write_gpt2_files(tmp_path, vocab_text, merges_text)
    tok = attempt(lambda: fastbpe.Tokenizer.from_files(vocab_path, merges_path, specials))
    if tok is not None:
        check_roundtrip(tok)


@HYP
@given(data=st.data(), pattern=PATTERNS)
def test_fuzz_from_tiktoken(tmp_path, data, pattern):
    path = tmp_path / "t.tiktoken"
    lines = [base64.b64encode(bytes([i])) + b" %d" % i for i in range(256)]
    extra = data.draw(st.lists(st.sampled_from([b"ab", b"abc", b"bc", b"Hello", b"\xc3\xb6", b" a", b"aa"]), unique=True, max_size=5))
    lines += [base64.b64encode(t) + b" %d" % (256 + k) for k, t in enumerate(extra)]
    what = data.draw(st.sampled_from(["none", "none", "line", "bytes"]))
    if what == "line":
        extra_line = data.draw(st.one_of(st.binary(max_size=12), st.tuples(SMALL_TOKENS, st.integers(0, 400)).map(lambda tr: base64.b64encode(tr[0]) + b" %d" % tr[1])))
        lines.insert(data.draw(st.integers(0, len(lines))), extra_line)
    content = b"\n".join(lines) if what != "bytes" else data.draw(st.binary(max_size=200))
    path.write_bytes(content)
    good = st.dictionaries(st.sampled_from([EOT, "ab", "a", "🎉", "<|x|>"]), st.integers(300, 600), max_size=3)
    specials = data.draw(
        st.one_of(
            good,
            good,
            st.none(),
            st.dictionaries(st.one_of(st.sampled_from([EOT, "ab", ""]), st.integers()), st.one_of(st.integers(-1, 600), st.sampled_from([2**32, True, "5"])), max_size=3),
            st.sampled_from(["abc", [EOT], 5]),
        )
    )
    tok = attempt(lambda: fastbpe.Tokenizer.from_tiktoken(path, pattern, specials))
    if tok is not None:
        check_roundtrip(tok)


@HYP
@given(
    texts=st.lists(PIECES_TEXT, max_size=3),
    vocab_size=st.one_of(
        st.integers(256, 320),
        st.integers(256, 320),
        st.sampled_from([10**6, 10**9, 2**32, 2**32 + 1, 2**64, -1, 0, True, 300.0, "300"]),
    ),
    specials=SPECIALS,
    pattern=PATTERNS,
)
def test_fuzz_train(texts, vocab_size, specials, pattern):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = attempt(lambda: fastbpe.train(iter(texts), vocab_size, special_tokens=specials, pattern=pattern, num_threads=1))
    if tok is not None:
        check_roundtrip(tok)
        assert tok.vocab_size <= vocab_size
