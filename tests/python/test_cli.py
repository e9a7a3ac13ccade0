"""fastbpe.cli: each command is a plain function of its options (what `demo` calls), usage errors
are one line and exit 2, --version; and fastbpe.simple, the lecture's tokenizers `compare` uses."""

import argparse
import inspect
import subprocess
import sys

import pytest

import fastbpe
from fastbpe import cli
from fastbpe.simple import ByteTokenizer, CharacterTokenizer, WordTokenizer, compression_ratio


def commands(parser, prefix=()):
    """(command words, parser) of every command that runs a function."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, prefix + (name,))
    if prefix and "func" in parser._defaults:
        yield " ".join(prefix), parser


def options(parser):
    """{dest: required} of a parser's own arguments (not --help)."""
    return {a.dest: a.required for a in parser._actions if not isinstance(a, argparse._HelpAction)}


ALL = dict(commands(cli.build_parser()))


def test_every_command_is_listed():
    assert set(ALL) == {"train-tokenizer", "compare", "encode", "verify-tokens", "lm train", "lm generate",
                        "lm export", "lm eval", "napkin", "demo"}


@pytest.mark.parametrize("name", sorted(set(ALL) - {"napkin"}))
def test_each_option_is_a_keyword_of_the_commands_function_with_its_default(name):
    # A flag added to the parser but not to the function (or without a default there) fails
    # here, not in `demo`, which calls the functions with only the options it sets.
    parser = ALL[name]
    params = inspect.signature(parser._defaults["func"]).parameters
    opts = options(parser)
    assert set(opts) == set(params)
    for dest, required in opts.items():
        has_default = params[dest].default is not inspect.Parameter.empty
        assert has_default != required, f"{name}: --{dest.replace('_', '-')}"
        assert not (required and params[dest].kind is params[dest].KEYWORD_ONLY and has_default)


def test_the_parser_passes_only_the_options_given(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "lm_generate", lambda **kw: seen.append(kw))
    cli.main(["lm", "generate", "--run", "runs/a", "--top-k", "5", "--stream"])
    assert seen == [{"run": "runs/a", "top_k": 5, "stream": True}]


def test_demo_calls_the_command_functions_with_keywords_they_take(monkeypatch, tmp_path):
    calls = []
    for name in ("train_tokenizer", "encode", "lm_train", "lm_generate"):
        real = getattr(cli, name)

        def record(*args, _name=name, _sig=inspect.signature(real), **kwargs):
            _sig.bind(*args, **kwargs)  # TypeError if demo passes what the command does not take
            calls.append((_name, kwargs))

        monkeypatch.setattr(cli, name, record)
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text")
    cli.main(["demo", "--corpus", str(corpus), "--out", str(tmp_path / "d"), "--preset", "tiny", "--max-steps", "3",
              "--prompt", "Hi"])
    assert [n for n, _ in calls] == ["train_tokenizer", "encode", "lm_train", "lm_generate"]
    kw = dict(calls)
    assert kw["lm_train"]["max_steps"] == 3 and kw["lm_train"]["overwrite"] is True
    assert kw["lm_generate"]["prompt"] == "Hi" and kw["lm_generate"]["run"] == str(tmp_path / "d" / "run")
    assert kw["encode"]["val_out"] == str(tmp_path / "d" / "val.bin")


def test_train_tokenizer_declares_endoftext_unless_told_otherwise(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world, hello there. " * 50)
    cli.main(["train-tokenizer", str(corpus), "--vocab-size", "270", "--out", str(tmp_path / "a.json")])
    assert fastbpe.Tokenizer.load(tmp_path / "a.json").special_tokens == ["<|endoftext|>"]
    cli.main(["train-tokenizer", str(corpus), "--vocab-size", "270", "--out", str(tmp_path / "b.json"),
              "--special-token", "<a>", "--special-token", "<b>"])
    assert fastbpe.Tokenizer.load(tmp_path / "b.json").special_tokens == ["<a>", "<b>"]
    assert "saved             " + str(tmp_path / "b.json") in capsys.readouterr().out


@pytest.mark.parametrize("argv, says", [
    (["lm", "train", "--train", "t.bin", "--val", "v.bin", "--out", "r", "--bogus", "1"],
     "unrecognized arguments: --bogus 1"),
    (["encode", "c.txt"], "the following arguments are required: --tokenizer, --out"),
    (["train-tokenizer", "c.txt", "--vocab-size", "many", "--out", "t.json"], "invalid int value: 'many'"),
    (["tokenize"], "invalid choice: 'tokenize'"),
    ([], "the following arguments are required: command"),
    (["lm", "train", "--precision", "fp8"], "invalid choice: 'fp8'"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith("fastbpe: error: ") and says in err and "--help" in err


def test_version_is_the_packages():
    done = subprocess.run([sys.executable, "-m", "fastbpe", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == f"fastbpe {fastbpe.__version__}\n"


# ---- fastbpe.simple --------------------------------------------------------------------------

TEXT = "héllo wörld 😀, hello world!\n"


def test_character_and_byte_tokenizers_round_trip():
    chars, raw = CharacterTokenizer(), ByteTokenizer()
    assert chars.encode("hé😀") == [104, 233, 0x1F600] and chars.decode(chars.encode(TEXT)) == TEXT
    assert raw.encode("é") == [0xC3, 0xA9] and raw.decode(raw.encode(TEXT)) == TEXT
    assert raw.decode([0xC3]) == "\ufffd"  # a cut character is replaced, not an exception
    assert compression_ratio(raw, TEXT) == 1.0
    assert compression_ratio(chars, TEXT) == len(TEXT.encode()) / len(TEXT)
    assert compression_ratio(raw, "") == 0.0


def test_word_tokenizer_vocabulary_and_unknown_words():
    tok = WordTokenizer(["the cat sat", "the cat ran, the end"])
    assert tok.id_to_word[:3] == ["<unk>", " ", "the"]  # by count (4 spaces, 3 "the"), <unk> first
    assert tok.decode(tok.encode("the cat ran")) == "the cat ran"
    assert tok.encode("the dog") == [tok.word_to_id["the"], tok.word_to_id[" "], 0]  # unseen -> <unk>
    assert tok.decode(tok.encode("the dog")) == "the <unk>"
    small = WordTokenizer("a a a b b c", max_vocab=3)  # <unk> + the two most common
    assert small.vocab_size == 3 and small.id_to_word == ["<unk>", " ", "a"]
    assert compression_ratio(tok, "the cat") == 7 / 3


def test_compare_prints_the_lectures_table(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 200)
    cli.main(["compare", str(corpus), "--vocab-size", "300"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "| tokenizer | vocabulary | bytes/token | unknown tokens | encode time (s) |"
    rows = [line.split(" | ") for line in lines[3:]]
    assert [r[0] for r in rows][:3] == ["| character", "| byte", "| word"] and rows[3][0].startswith("| bpe (")
    assert rows[1][1:3] == ["256", "1.00"] and float(rows[3][2]) > 1.5
