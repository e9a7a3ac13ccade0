"""Training: the Rust core equals the pure-Python reference, and bad input fails clearly."""

import os
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastbpe
from fastbpe import reference

SPECIALS = ["<|endoftext|>", "<|pad|>", "<|endoftext|><|endoftext|>"]

# Corpora: any Unicode, control characters, repeated words (so merges have something to find),
# and special tokens sprinkled in.
WORDS = st.sampled_from(
    ["the", " the", "cat", " hat", "in", "aaa", "ab", "'s", "'ll", " 42", "1999", "\n", "\n\n", "  ", "\t",
     "é", "中文", "Привет", "!!", "...", "<|endoftext|>", "<|pad|>", "\x00", "\x1c", "\x85", "\r\n", "🎉"]
)
CORPUS = st.lists(st.one_of(WORDS, st.text(max_size=8)), max_size=120).map("".join)
PATTERNS = st.sampled_from(["gpt2", None, "cl100k", "o200k", r"\w+|\s+|[^\w\s]+"])


def write(tmp_path, text, name="corpus.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(CORPUS, min_size=1, max_size=4),
    pattern=PATTERNS,
    vocab_size=st.one_of(st.integers(259, 280), st.integers(280, 600)),
    specials=st.sampled_from([[], SPECIALS[:1], SPECIALS]),
)
def test_rust_equals_reference(tmp_path, texts, pattern, vocab_size, specials):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_vocab, ref_merges = reference.train_bpe_from_texts(texts, vocab_size, specials, pattern)
        # From texts...
        tok = fastbpe.train(iter(texts), vocab_size, special_tokens=specials, pattern=pattern, num_threads=2)
        # ...and from files, read in chunks.
        paths = [write(tmp_path, t, f"c{i}.txt") for i, t in enumerate(texts)]
        tok_files = fastbpe.train(paths, vocab_size, special_tokens=specials, pattern=pattern)
    assert tok.merges == ref_merges
    assert tok.vocab == ref_vocab
    assert tok_files.merges == ref_merges


def test_large_file_in_chunks_equals_reference(tmp_path):
    """A file big enough to be cut into several chunks counted on two threads."""
    lines = [f"line {i % 997}: the {'cat' if i % 3 else 'hat'} sat {i * 7 % 13} times!\n" for i in range(300_000)]
    text = "".join(line + ("<|endoftext|>" if i % 5000 == 0 else "") for i, line in enumerate(lines))
    path = write(tmp_path, text)
    assert os.path.getsize(path) > 8 << 20
    tok = fastbpe.train(path, 400, num_threads=2)
    counts = reference.count_pieces([text], ["<|endoftext|>"], "gpt2")
    assert tok.merges == reference.learn_merges(counts, 400 - 257)


def test_tie_break_prefers_greatest_pair():
    # After merging ("Z","Z") and ("B","A"), the pairs ("A","B"), ("A","C"), ("B","ZZ"), ("BA","A")
    # each occur once: ("BA","A") wins.
    texts = ["ZZ"] * 10 + ["BA"] * 10 + ["AB", "AC", "BZZ", "BAA"]
    tok = fastbpe.train(iter(texts), 256 + 3, special_tokens=[], pattern=None)
    assert tok.merges == [(b"Z", b"Z"), (b"B", b"A"), (b"BA", b"A")]


def test_lecture_example():
    # The lecture's train_bpe("the cat in the hat", 3) over raw bytes.
    tok = fastbpe.train(iter(["the cat in the hat"]), 259, special_tokens=[], pattern=None)
    assert tok.merges == [(b"t", b"h"), (b"th", b"e"), (b"the", b" ")]
    assert [tok.vocab[i] for i in (256, 257, 258)] == [b"th", b"the", b"the "]


def test_vocabulary_layout():
    tok = fastbpe.train(iter(["low lower lowest newer wider " * 20]), 270, special_tokens=["<|a|>", "<|b|>"])
    assert tok.vocab_size == 270
    assert [tok.vocab[i] for i in range(256)] == [bytes([i]) for i in range(256)]
    for k, (a, b) in enumerate(tok.merges):
        assert tok.vocab[256 + k] == a + b
    assert tok.vocab[268] == b"<|a|>" and tok.vocab[269] == b"<|b|>"
    assert tok.special_token_ids == {"<|a|>": 268, "<|b|>": 269}


def test_special_tokens_are_never_merged():
    text = "<|endoftext|>" * 50 + "ab<|endoftext|>ab" * 50
    with pytest.warns(UserWarning, match="after 2 of 43 merges: no pair"):
        tok = fastbpe.train(iter([text]), 300, special_tokens=["<|endoftext|>"])
    learned = [a + b for a, b in tok.merges]
    assert all(b"<|" not in t and b"|>" not in t for t in learned)
    assert learned == [b"ab", b"abab"]


def test_without_the_special_token_it_is_plain_text():
    text = "<|endoftext|>" * 50
    with pytest.warns(UserWarning, match="no pair of tokens is left"):
        tok = fastbpe.train(iter([text]), 300, special_tokens=[])
    assert any(b"endoftext" in a + b for a, b in tok.merges)


def test_train_bpe_signature(tmp_path):
    path = write(tmp_path, "hello world<|endoftext|>hello there " * 30)
    # The text runs out of pairs after 14 merges; both say so.
    with pytest.warns(UserWarning, match="after 14 of 23 merges"):
        vocab, merges = fastbpe.train_bpe(str(path), 280, ["<|endoftext|>"])
    with pytest.warns(UserWarning, match="after 14 merges"):
        ref_vocab, ref_merges = reference.train_bpe(path, 280, ["<|endoftext|>"])
    assert (vocab, merges) == (ref_vocab, ref_merges)


def test_save_load_roundtrip(tmp_path):
    with pytest.warns(UserWarning, match="no pair of tokens is left"):
        tok = fastbpe.train(iter(["héllo wörld 🎉 \x00\xff " * 40]), 300, special_tokens=["<|endoftext|>", "<|x|>"])
    tok.save(tmp_path / "tok.json")
    again = fastbpe.Tokenizer.load(tmp_path / "tok.json")
    assert again == tok
    assert again.special_tokens == tok.special_tokens
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a fastbpe tokenizer"):
        fastbpe.Tokenizer.load(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad JSON"):
        fastbpe.Tokenizer.load(bad)


# ---- bad input -------------------------------------------------------------------------------


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="minimum is 258"):
        fastbpe.train(iter(["abc"]), 257, special_tokens=["<|a|>", "<|b|>"])


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        fastbpe.train(tmp_path / "nope.txt", 300)
    with pytest.raises(IsADirectoryError):
        fastbpe.train(tmp_path, 300)
    with pytest.raises(IsADirectoryError):
        fastbpe.train(tmp_path, 300, pattern=r"\w+")


@pytest.mark.parametrize("pattern", ["gpt2", r"\S+|\s+", None])
def test_invalid_utf8_names_file_and_offset(tmp_path, pattern):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good text\n" * 3 + b"bad \xc3\x28 here")
    with pytest.raises(ValueError, match=r"bad\.txt.*byte offset 34"):
        fastbpe.train(path, 300, pattern=pattern)


def test_empty_corpus_warns(tmp_path):
    path = write(tmp_path, "")
    with pytest.warns(UserWarning, match="corpus is empty"):
        tok = fastbpe.train(path, 300)
    assert tok.merges == [] and tok.vocab_size == 257


def test_running_out_of_pairs_warns():
    with pytest.warns(UserWarning, match="no pair of tokens is left"):
        tok = fastbpe.train(iter(["ab"]), 300, special_tokens=[])
    assert tok.merges == [(b"a", b"b")]


def test_invalid_regex():
    with pytest.raises(ValueError, match="invalid pattern"):
        fastbpe.train(iter(["abc"]), 300, pattern="(unclosed")


@pytest.mark.parametrize("specials", [["<|a|>", "<|a|>"], ["<|a|>", ""]])
def test_bad_special_tokens(specials):
    with pytest.raises(ValueError):
        fastbpe.train(iter(["abc"]), 300, special_tokens=specials)


def test_a_list_is_paths_with_a_hint():
    with pytest.raises(FileNotFoundError, match=r"iter\(texts\)"):
        fastbpe.train(["just some text"], 300)


def test_ctrl_c_stops_training_promptly(tmp_path):
    """SIGINT during a long training raises KeyboardInterrupt within a second."""
    import signal
    import subprocess
    import sys
    import time

    # Many distinct words, so counting and merging both take a while: one training takes
    # about 2 s here, so a core that ignored the signal sent 0.3 s in would miss the bound.
    import random

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(3, 12))) for _ in range(800_000)]
    path = tmp_path / "big.txt"
    with open(path, "w") as f:
        for i in range(10):
            rng.shuffle(words)
            f.write(" ".join(words) + "\n")
    # Trained again and again until interrupted: however fast the machine, the signal finds
    # it training.
    code = (
        "import sys, fastbpe\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    while True:\n"
        f"        fastbpe.train({str(path)!r}, 200000, num_threads=2, progress=False)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True); sys.exit(3)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    assert proc.poll() is None, "the child ended before it was interrupted"
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    waited = time.perf_counter() - sent
    assert proc.returncode == 3 and "interrupted" in out, out
    # The core checks for signals every few MB read and every 64 merges: well under a second.
    assert waited < 1.0, f"took {waited:.2f}s to stop"
