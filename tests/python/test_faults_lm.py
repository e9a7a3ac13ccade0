"""fastbpe.lm and its CLI under wrong input: foreign tokens, crowded run folders, full disks,
killed runs, bad flags. Each failure is one clear line, and nothing is trained on the wrong data."""

import contextlib
import errno
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastbpe  # noqa: E402
from fastbpe import cli  # noqa: E402
from fastbpe.lm import TrainConfig, train_lm  # noqa: E402
from fastbpe.lm import checkpoint as ckpt_mod  # noqa: E402
from fastbpe.lm import trainer  # noqa: E402
from fastbpe.lm.checkpoint import read_checkpoint, save_checkpoint  # noqa: E402
from fastbpe.lm.data import open_tokens  # noqa: E402
from fastbpe.lm.plot import read_metrics  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"

TEXT_A = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog sat together on a mat.\n" * 200
    + "<|endoftext|>".join(f"story {i}: the {['red', 'blue', 'green'][i % 3]} bird sang {i % 7} songs.\n" for i in range(150))
)
TEXT_B = "".join(f"line {i}: wind over water, {i % 11} boats and {i % 5} gulls.\n<|endoftext|>" for i in range(600))
GAP_TEXT = ("hello world. " * 30 + "<|endoftext|>") * 40


def gap_tokenizer():
    """Bytes 0-255 and <|endoftext|> at 300: 257 tokens, largest id 300 (cl100k's shape in small)."""
    vocab = {i: bytes([i]) for i in range(256)}
    vocab[300] = b"<|endoftext|>"
    return fastbpe.Tokenizer(vocab, [], ["<|endoftext|>"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Token files of two tokenizers of equal size (A, B) and of the gap tokenizer."""
    d = tmp_path_factory.mktemp("faults_lm")
    files = {}
    for name, text in (("a", TEXT_A), ("b", TEXT_B)):
        corpus = d / f"{name}.txt"
        corpus.write_text(text)
        tok = fastbpe.train(corpus, 300, progress=False)
        tok.save(d / f"tok_{name}.json")
        for split in ("train", "val"):
            tok.encode_file(corpus, d / f"{split}_{name}.bin", metadata={"tokenizer": str(d / f"tok_{name}.json")})
        files[name] = (str(d / f"train_{name}.bin"), str(d / f"val_{name}.bin"))
        files[f"tok_{name}"] = str(d / f"tok_{name}.json")
    gap = gap_tokenizer()
    gap.save(d / "tok_gap.json")
    (d / "gap.txt").write_text(GAP_TEXT)
    gap.encode_file(d / "gap.txt", d / "gap.bin", metadata={"tokenizer": str(d / "tok_gap.json")})
    gap.encode_file(d / "gap.txt", d / "gap_anon.bin")  # its metadata names no tokenizer file
    files["gap"] = str(d / "gap.bin")
    files["gap_anon"] = str(d / "gap_anon.bin")
    files["tok_gap"] = str(d / "tok_gap.json")
    return files


@pytest.fixture(autouse=True)
def _no_peak_measurement(monkeypatch):
    """The CPU peak (for MFU) takes a second of matmuls per run; these tests do not read MFU."""
    monkeypatch.setattr(trainer, "peak_flops", lambda device: None)


def config(**kw):
    base = dict(context_length=16, d_model=16, num_layers=1, num_heads=2, d_ff=32, batch_size=4, max_steps=6,
                max_lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_every=3, eval_batches=2, checkpoint_every=3,
                keep_checkpoints=10, device="cpu", seed=1)
    return TrainConfig(**{**base, **kw})


def train(cfg, train_path, val_path, run, **kw):
    return train_lm(cfg, train_path, val_path, str(run), progress=False, log=kw.pop("log", lambda *a: None), **kw)


def names(run) -> list[str]:
    return sorted(os.listdir(run))


def cli_error(capsys, argv) -> str:
    """The one line the CLI prints for a refused command (exit status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastbpe: error: "), err
    return err[0]


# ---- 3. messages ---------------------------------------------------------------------------


class _DiskFillsUp:
    """A file whose writes fail with ENOSPC once `room` bytes are written (a partial write first)."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data):
        data = bytes(data)
        if len(data) > self.room:
            self.f.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def fill_disk(monkeypatch, room: int, after_writes: int = 0):
    """Checkpoint writes after the first `after_writes` find only `room` bytes of free disk."""
    real = ckpt_mod.atomic_writer
    calls = []

    @contextlib.contextmanager
    def writer(path, suffix=""):
        calls.append(path)
        with real(path, suffix) as f:
            yield f if len(calls) <= after_writes else _DiskFillsUp(f, room)

    monkeypatch.setattr(ckpt_mod, "atomic_writer", writer)


def test_a_full_disk_during_a_checkpoint_says_so(tmp_path, monkeypatch, one_torch_thread):
    from fastbpe.lm import AdamW, TransformerLM

    model = TransformerLM(50, 8, 16, 1, 2, 32)
    opt = AdamW(model.parameters())
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model, opt, 1, path)
    good = path.read_bytes()
    fill_disk(monkeypatch, room=len(good) // 3)
    with pytest.raises(OSError) as exc:
        save_checkpoint(model, opt, 2, path)
    assert exc.value.errno == errno.ENOSPC
    assert str(path) in str(exc.value) and "disk is full" in str(exc.value) and "intact" in str(exc.value)
    assert names(tmp_path) == ["ckpt.pt"]  # the temporary file is gone
    assert path.read_bytes() == good and read_checkpoint(path)["iteration"] == 1


# ---- 4. napkin and determinism -------------------------------------------------------------

NAPKIN_OPTIONS = {
    "--params": ("7e9", "7B params"),
    "--tokens": ("1e12", "1T tokens"),
    "--gpus": ("64", "64 GPUs"),
    "--mfu": ("0.4", "MFU 0.4"),
    "--peak": ("A100", "peak used: 312 TFLOP/s"),
    "--gpu-memory-gb": ("40", "8 x 40 GB"),
    "--num-gpus-memory": ("4", "4 x 80 GB"),
    "--bytes-per-param": ("8", "at 8 bytes/param"),
}


@pytest.mark.parametrize("option", sorted(NAPKIN_OPTIONS))
def test_every_napkin_option_works(capsys, option):
    value, expected = NAPKIN_OPTIONS[option]
    cli.main(["napkin", option, value])
    assert expected in capsys.readouterr().out


def test_napkin_help_lists_exactly_the_tested_options(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["napkin", "--help"])
    assert exc.value.code == 0
    listed = set(re.findall(r"(--[a-z][a-z-]+)", capsys.readouterr().out)) - {"--help"}
    assert listed == set(NAPKIN_OPTIONS)


def test_the_readmes_napkin_commands_run(capsys):
    lines = [line.strip() for line in README.read_text().splitlines() if line.strip().startswith("fastbpe napkin")]
    assert lines
    for line in lines:
        for command in (re.sub(r"\[.*?\]", "", line), line.replace("[", "").replace("]", "")):
            cli.main(shlex.split(command)[1:])
            assert "days" in capsys.readouterr().out, command
