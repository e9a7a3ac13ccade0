"""fastbpe.special: one check of special tokens for every entry point (TypeError for a wrong type,
ValueError for a wrong value, the same messages), one regex that finds them, tiktoken's policy."""

import base64
import json

import pytest

import fastbpe
from fastbpe import special
from fastbpe.formats.gpt2 import token_to_str
from fastbpe.tiktoken_compat import Encoding

BYTES = {i: bytes([i]) for i in range(256)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    (folder / "vocab.json").write_text(json.dumps({token_to_str(t): i for i, t in BYTES.items()}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "r.tiktoken").write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % i for i, t in BYTES.items()))
    return folder


def list_takers(files):
    """Every entry point that takes special tokens as a list."""
    return {
        "Tokenizer": lambda s: fastbpe.Tokenizer(BYTES, [], s),
        "train": lambda s: fastbpe.train(iter(["ab ab"]), 300, special_tokens=s),
        "from_files": lambda s: fastbpe.Tokenizer.from_files(files / "vocab.json", files / "merges.txt", s),
    }


def dict_takers(files):
    """Every entry point that takes special tokens with their ids."""
    return {
        "from_tiktoken": lambda s: fastbpe.Tokenizer.from_tiktoken(files / "r.tiktoken", "gpt2", s),
        "Encoding": lambda s: Encoding("e", pat_str=r"\w+|\W", mergeable_ranks={t: i for i, t in BYTES.items()}, special_tokens=s),
    }


LIST_CASES = [
    ("<|e|>", TypeError, "not one string: use"),
    (7, TypeError, "must be a list of strings, not int"),
    (["<|e|>", 3], TypeError, "special tokens must be strings, got 3"),
    ([""], ValueError, "must not be empty strings"),
    (["<|e|>", "<|e|>"], ValueError, "'<|e|>' is given twice"),
]


@pytest.mark.filterwarnings("ignore:training stopped")
@pytest.mark.parametrize("value, error, message", LIST_CASES)
def test_every_list_taker_refuses_alike(files, value, error, message):
    for name, make in list_takers(files).items():
        with pytest.raises(error, match=message):
            make(value)


DICT_CASES = [
    (["<|e|>"], TypeError, "must be a dict of special token -> id"),
    ({3: 300}, TypeError, "special tokens must be strings, got 3"),
    ({"": 300}, ValueError, "must not be empty strings"),
    ({"<|e|>": "300"}, TypeError, "id '300' is not an int"),
    ({"<|e|>": True}, TypeError, "id True is not an int"),
    ({"<|e|>": -1}, ValueError, "id -1 is out of range"),
    ({"<|e|>": 2**32}, ValueError, "out of range"),
]


@pytest.mark.parametrize("value, error, message", DICT_CASES)
def test_every_dict_taker_refuses_alike(files, value, error, message):
    for name, make in dict_takers(files).items():
        with pytest.raises(error, match=message):
            make(value)


def test_the_takers_agree_on_valid_special_tokens(files):
    ids = {name: make(["<|a|>", "<|ab|>"]).encode("x<|ab|><|a|>") for name, make in list_takers(files).items() if name != "train"}
    assert ids["Tokenizer"] == ids["from_files"] == [ord("x"), 257, 256]
    for name, make in dict_takers(files).items():
        enc = make({"<|a|>": 300, "<|ab|>": 301})
        assert enc.encode("x<|ab|><|a|>", allowed_special="all") == [ord("x"), 301, 300], name


def test_special_regex_takes_the_longest_token_first():
    rx = special.special_regex(frozenset({"<|a", "<|a|>", "|>", ""}))
    assert rx.split("x<|a|>y<|a|>|>") == ["x", "<|a|>", "y", "<|a|>", "", "|>", ""]


def test_policy_is_tiktokens():
    every = frozenset({"<|a|>", "<|b|>"})
    assert special.policy(every, "all", "all") == (every, frozenset())
    assert special.policy(every, {"<|a|>", "<|zzz|>"}, "all") == ({"<|a|>"}, {"<|b|>"})
    assert special.policy(every, set(), ()) == (frozenset(), frozenset())
    assert special.policy(every, set(), {"", "<|zzz|>"}) == (frozenset(), {"<|zzz|>"})
    with pytest.raises(TypeError, match='must be "all" or a set'):
        special.policy(every, "none", "all")
    with pytest.raises(TypeError, match="which is not a str"):
        special.policy(every, {1}, "all")
