"""Pickling: a used Tokenizer pickles to an equal one, without its Rust encoder; unpickling checks
the state as construction does; multiprocessing pools (fork and spawn) encode with it."""

import multiprocessing
import pickle
import warnings

import pytest
from conftest import shared_file

import fastbpe

EOT = "<|endoftext|>"
CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
CL100K_SPECIALS = {EOT: 100257, "<|fim_prefix|>": 100258, "<|endofprompt|>": 100276}
KINDS = ["trained", "trained_none", "custom", "gpt2_files", "cl100k_ranks"]
TEXTS = ["Hello, world!" + EOT + " Once upon a time", "naïve café 12345 中文 🎉\n\n  x", "", "'s 've  \t\r\n" + EOT]


def _train(pattern):
    text = shared_file("corpus", "tinystories_val.txt").read_text(encoding="utf-8")[:100_000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fastbpe.train(iter([text]), 400, special_tokens=[EOT, "<|pad|>"], pattern=pattern, num_threads=1)


def _make(kind):
    if kind == "trained":
        return _train("gpt2")
    if kind == "trained_none":
        return _train(None)
    if kind == "custom":
        return _train(r"\w+|\s+|[^\w\s]+")
    if kind == "gpt2_files":
        return fastbpe.Tokenizer.from_files(shared_file("gpt2", "vocab.json"), shared_file("gpt2", "merges.txt"), [EOT])
    return fastbpe.Tokenizer.from_tiktoken(shared_file("tiktoken_cache", CL100K_FILE), "cl100k", CL100K_SPECIALS)


@pytest.fixture(scope="module", params=KINDS)
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def tok(kind):
    return _make(kind)


def _use(tok):
    """Every cache a tokenizer builds: the encoder, the custom-pattern regexes, the fingerprint,
    the merges derived from ranks."""
    for text in TEXTS:
        tok.encode(text)
        tok.encode_ordinary(text)
    tok.encode_batch(TEXTS, num_threads=2)
    tok.encode_to_numpy(TEXTS[0])
    tok.decode([1, 2, 3])
    tok.fingerprint()
    tok.merges


def test_used_tokenizer_pickles_to_an_equal_one(tok):
    _use(tok)
    again = pickle.loads(pickle.dumps(tok))
    assert again == tok
    assert again.fingerprint() == tok.fingerprint()
    assert again.special_token_ids == tok.special_token_ids
    assert again.pattern == tok.pattern
    for text in TEXTS:
        assert again.encode(text) == tok.encode(text)
        assert again.encode_ordinary(text) == tok.encode_ordinary(text)
    assert again.decode(tok.encode(TEXTS[1])) == TEXTS[1]


def test_pickle_holds_no_cache(tok):
    """A used tokenizer pickles to the size of a fresh one (an unpickled copy, which has built
    nothing yet): the Rust encoder, the caches and merges derived from ranks stay out, and are
    rebuilt on first use."""
    _use(tok)
    fresh = pickle.loads(pickle.dumps(tok))
    assert not {"_core", "_custom"} & set(fresh.__dict__)
    assert fresh._merges is None or tok._rule == "merges"
    assert len(pickle.dumps(tok)) <= len(pickle.dumps(fresh)) + 64  # the memo may share differently


@pytest.fixture(scope="module")
def trained():
    return _make("trained")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol(trained, protocol):
    _use(trained)
    again = pickle.loads(pickle.dumps(trained, protocol=protocol))
    assert again == trained
    assert again.encode(TEXTS[0]) == trained.encode(TEXTS[0])


def test_copy_and_deepcopy(trained):
    import copy

    _use(trained)
    for again in (copy.copy(trained), copy.deepcopy(trained)):
        assert again == trained
        assert again.encode(TEXTS[0]) == trained.encode(TEXTS[0])


# ---- unpickling checks the state -------------------------------------------------------------------


class _Forged:
    """Pickles as a Tokenizer with the given state."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return (object.__new__, (fastbpe.Tokenizer,), self.state)


@pytest.fixture(scope="module")
def small():
    return fastbpe.Tokenizer({i: bytes([i]) for i in range(256)} | {256: b"ab"}, [(b"a", b"b")], [EOT])


def _forge(tok, **changes):
    state = {**tok.__getstate__(), **changes}
    return pickle.dumps(_Forged(state))


@pytest.mark.parametrize(
    "change,error,match",
    [
        ({"vocab": {i: bytes([i]) for i in range(255)} | {256: b"ab", 257: EOT.encode()}}, ValueError, "single byte 0xff"),
        ({"vocab": {0: "a"}}, TypeError, "not bytes"),
        ({"merges": [(b"a", b"c")]}, ValueError, "not in the vocabulary"),
        ({"merges": [("a", "b")]}, TypeError, "merge 0"),
        ({"special_tokens": {EOT: 65}}, ValueError, "special_tokens"),
        ({"special_tokens": {7: 257}}, TypeError, "special tokens must be strings"),
        ({"pattern": "gtp2"}, ValueError, "did you mean|unknown pattern"),
        ({"pattern": "(unclosed"}, ValueError, "invalid pattern"),
        ({"rule": "magic"}, ValueError, "rule 'magic'"),
        ({"version": 99}, ValueError, "version 99"),
        ({"format": "something.else"}, ValueError, "not the state of a fastbpe Tokenizer"),
    ],
)
def test_unpickling_checks_the_state(small, change, error, match):
    with pytest.raises(error, match=match) as info:
        pickle.loads(_forge(small, **change))
    assert "pickled Tokenizer" in str(info.value)


def test_unpickling_refuses_a_state_that_is_not_a_dict():
    with pytest.raises(ValueError, match="pickled Tokenizer"):
        pickle.loads(pickle.dumps(_Forged(("vocab", "merges"))))


# ---- multiprocessing ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["fork", "spawn"])
def pool(request):
    if request.param not in multiprocessing.get_all_start_methods():
        pytest.skip(f"the {request.param} start method does not exist on this platform")
    with multiprocessing.get_context(request.param).Pool(2) as p:
        yield p


def test_pool_encodes_with_a_used_tokenizer(pool, tok):
    _use(tok)
    assert pool.map(tok.encode, TEXTS, chunksize=2) == [tok.encode(t) for t in TEXTS]
    assert pool.map(tok.encode_batch, [TEXTS]) == [tok.encode_batch(TEXTS)]


class _ForgedEncoding:
    """Pickles as a tiktoken_compat.Encoding whose tokenizer has the given state."""

    def __init__(self, name, pat_str, tokenizer_state):
        self.value = {"name": name, "pat_str": pat_str, "tokenizer": _Forged(tokenizer_state)}

    def __reduce__(self):
        return (object.__new__, (fastbpe.tiktoken_compat.Encoding,), self.value)


def test_an_encoding_pickles_its_tokenizer_which_unpickling_checks(small):
    """An Encoding unpickles as equal, and its tokenizer's state is checked as a Tokenizer's is
    (before, the tokenizer's fields were copied in unchecked)."""
    enc = small.as_tiktoken("small")
    again = pickle.loads(pickle.dumps(enc))
    assert again._tokenizer == small and again.name == "small"
    assert again.encode("ab" + EOT, allowed_special="all") == enc.encode("ab" + EOT, allowed_special="all")
    bad = {**small.__getstate__(), "merges": [(b"a", b"c")]}
    with pytest.raises(ValueError, match="pickled Tokenizer.*not in the vocabulary"):
        pickle.loads(pickle.dumps(_ForgedEncoding("small", enc._pat_str, bad)))
    # A tokenizer given as its raw fields, which nothing would check, is refused.
    fields = _ForgedEncoding("small", enc._pat_str, bad)
    fields.value["tokenizer"] = {"vocab": {0: b"a"}, "_merges": [(b"a", b"c")], "special_token_ids": {}}
    with pytest.raises(ValueError, match="pickled Encoding"):
        pickle.loads(pickle.dumps(fields))
