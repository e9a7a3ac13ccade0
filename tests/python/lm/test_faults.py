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
from conftest import ROOT, shared_file

torch = pytest.importorskip("torch")

import fastbpe  # noqa: E402
from fastbpe import cli  # noqa: E402
from fastbpe.lm import TrainConfig, train_lm  # noqa: E402
from fastbpe.lm import checkpoint as ckpt_mod  # noqa: E402
from fastbpe.lm import trainer  # noqa: E402
from fastbpe.lm.checkpoint import read_checkpoint, save_checkpoint  # noqa: E402
from fastbpe import token_files  # noqa: E402
from fastbpe.lm.data import open_tokens  # noqa: E402
from fastbpe.lm.plot import read_metrics  # noqa: E402

README = ROOT / "README.md"

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


# ---- 1. the model's vocabulary and the tokens' tokenizer -----------------------------------


def test_the_largest_id_and_its_first_offset(tmp_path):
    ids = np.random.default_rng(0).integers(0, 1000, 3_000_000).astype(np.uint16)
    ids[[1234, 2_500_000]] = 5000  # the first occurrence is reported, across read blocks
    token_files.write_tokens(tmp_path / "t.bin", ids, np.uint16)
    scan = token_files.scan_tokens(tmp_path / "t.bin")
    assert (scan.max_id, scan.max_id_offset) == (5000, 1234)
    ids[1234] = 0
    token_files.write_tokens(tmp_path / "t.bin", ids, np.uint16)
    scan = token_files.scan_tokens(tmp_path / "t.bin")
    assert (scan.max_id, scan.max_id_offset) == (5000, 2_500_000)
    token_files.write_tokens(tmp_path / "e.bin", np.zeros(0, dtype=np.uint16), np.uint16)
    assert token_files.scan_tokens(tmp_path / "e.bin").max_id is None


def test_vocab_size_is_the_tokenizers_largest_id_plus_one(data, tmp_path, one_torch_thread):
    # 257 tokens with ids up to 300: a model of 257 rows would index out of bounds at 300.
    result = train(config(max_steps=2), data["gap"], data["gap"], tmp_path / "run")
    assert result.model.vocab_size == 301
    assert json.loads((tmp_path / "run" / "config.json").read_text())["vocab_size"] == 301
    assert fastbpe.Tokenizer.load(tmp_path / "run" / "tokenizer.json") == gap_tokenizer()


def test_cl100k_tokens_train_a_model_of_every_id(tmp_path, one_torch_thread):
    # 100,256 ordinary tokens and <|endoftext|> at 100257: 100,257 tokens, ids up to 100257.
    cl100k = shared_file("tiktoken_cache", "9b5ad71b2ce5302211f9c61530b329a4922fc6a4")
    tok = fastbpe.Tokenizer.from_tiktoken(cl100k, "cl100k", {"<|endoftext|>": 100257})
    tok.save(tmp_path / "tok.json")
    (tmp_path / "c.txt").write_text(("The quick brown fox jumps over the lazy dog. " * 20 + "<|endoftext|>") * 10)
    tok.encode_file(tmp_path / "c.txt", tmp_path / "t.bin", metadata={"tokenizer": str(tmp_path / "tok.json")})
    result = train(config(max_steps=2), tmp_path / "t.bin", tmp_path / "t.bin", tmp_path / "run")
    assert result.model.vocab_size == 100258


def test_vocab_size_without_a_tokenizer_comes_from_the_data(data, tmp_path, one_torch_thread):
    logs = []
    result = train(config(max_steps=2), data["gap_anon"], data["gap_anon"], tmp_path / "run", log=logs.append)
    assert result.model.vocab_size == 301
    assert any("vocab_size 301" in m and "no tokenizer" in m for m in logs)


def test_an_id_outside_the_model_names_file_id_and_offset(data, tmp_path, one_torch_thread):
    first = int(np.flatnonzero(open_tokens(data["gap_anon"]) == 300)[0])
    with pytest.raises(ValueError) as exc:
        train(config(vocab_size=257), data["gap_anon"], data["gap_anon"], tmp_path / "run")
    msg = str(exc.value)
    assert "gap_anon.bin" in msg and "token id 300" in msg and f"offset {first} " in msg and "vocabulary of 257" in msg
    assert "\n" not in msg
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_vocab_size_below_the_tokenizers_ids_is_refused(data, tmp_path, one_torch_thread):
    with pytest.raises(ValueError, match=r"vocab_size 257 cannot hold the ids of the tokenizer .*tok_gap.json.* 300"):
        train(config(vocab_size=257), data["gap"], data["gap"], tmp_path / "run")


def test_resuming_on_another_tokenizers_tokens_is_refused(data, tmp_path, one_torch_thread):
    run = tmp_path / "run"
    train(config(max_steps=3), *data["a"], run)
    before = names(run)
    sha_a = fastbpe.Tokenizer.load(data["tok_a"]).fingerprint()
    sha_b = fastbpe.Tokenizer.load(data["tok_b"]).fingerprint()
    assert sha_a != sha_b
    with pytest.raises(ValueError) as exc:
        train(config(max_steps=6), *data["b"], run, resume=True)
    assert sha_a in str(exc.value) and sha_b in str(exc.value) and "train_b.bin" in str(exc.value)
    assert names(run) == before


def test_train_and_val_of_different_tokenizers_are_refused(data, tmp_path, one_torch_thread):
    with pytest.raises(ValueError, match=r"train_a.bin and .*val_b.bin were encoded by different tokenizers"):
        train(config(), data["a"][0], data["b"][1], tmp_path / "run")


def test_a_stale_run_tokenizer_is_replaced(data, tmp_path, one_torch_thread):
    run = tmp_path / "run"
    run.mkdir()
    (run / "tokenizer.json").write_bytes(Path(data["tok_b"]).read_bytes())  # left from elsewhere
    logs = []
    train(config(max_steps=2), *data["a"], run, log=logs.append)
    assert (run / "tokenizer.json").read_bytes() == Path(data["tok_a"]).read_bytes()
    assert any(m.startswith("replaced") and "tokenizer.json" in m for m in logs)


def test_a_tokenizer_changed_since_encoding_is_refused(data, tmp_path, one_torch_thread):
    tok_path = tmp_path / "tok.json"
    tok_path.write_bytes(Path(data["tok_a"]).read_bytes())
    corpus = tmp_path / "a.txt"
    corpus.write_text(TEXT_A)
    fastbpe.Tokenizer.load(tok_path).encode_file(corpus, tmp_path / "t.bin", metadata={"tokenizer": str(tok_path)})
    tok_path.write_bytes(Path(data["tok_b"]).read_bytes())  # the file now holds another tokenizer
    with pytest.raises(ValueError, match=r"tok.json is no longer the tokenizer that encoded"):
        train(config(), tmp_path / "t.bin", tmp_path / "t.bin", tmp_path / "run")


# ---- 2. run folders ------------------------------------------------------------------------


def test_a_fresh_run_into_a_run_folder_is_refused(data, tmp_path, one_torch_thread):
    run = tmp_path / "run"
    train(config(max_steps=3), *data["a"], run)
    before = {n: (run / n).read_bytes() for n in names(run)}
    with pytest.raises(ValueError, match=r"already holds a run \(ckpt_0000003.pt.*--resume.*--overwrite"):
        train(config(max_steps=6), *data["a"], run)
    assert {n: (run / n).read_bytes() for n in names(run)} == before


def test_overwrite_removes_only_the_files_a_run_writes(data, tmp_path, one_torch_thread):
    run = tmp_path / "run"
    train(config(max_steps=6), *data["a"], run)
    (run / "notes.txt").write_text("mine")
    (run / "ckpt_best.pt").write_text("mine too")
    logs = []
    train(config(max_steps=2, checkpoint_every=1, keep_checkpoints=1), *data["a"], run, overwrite=True, log=logs.append)
    assert names(run) == ["ckpt_0000002.pt", "ckpt_best.pt", "config.json", "loss.png", "metrics.jsonl", "notes.txt",
                          "tokenizer.json"]
    assert (run / "notes.txt").read_text() == "mine"
    removed = next(m for m in logs if m.startswith("--overwrite"))
    assert "ckpt_0000006.pt" in removed and "metrics.jsonl" in removed and "nothing else" in removed
    assert max(r["step"] for r in trainer.read_rows(run / "metrics.jsonl")) == 2


def test_resume_and_overwrite_exclude_each_other(data, tmp_path):
    with pytest.raises(ValueError, match="exclude each other"):
        train(config(), *data["a"], tmp_path / "run", resume=True, overwrite=True)


def test_checkpoints_sort_by_step_not_by_name(tmp_path):
    for step in (9_999_999, 10_000_000, 5):
        (tmp_path / f"ckpt_{step:07d}.pt").write_bytes(b"")
    (tmp_path / "ckpt_best.pt").write_bytes(b"")
    assert [os.path.basename(p) for p in ckpt_mod.checkpoints(str(tmp_path))] == [
        "ckpt_0000005.pt", "ckpt_9999999.pt", "ckpt_10000000.pt"]


def test_a_resume_past_corrupt_checkpoints_keeps_its_own(data, tmp_path, one_torch_thread):
    run = tmp_path / "run"
    train(config(max_steps=9), *data["a"], run)
    for p in ckpt_mod.checkpoints(str(run)):
        Path(p).write_bytes(b"torn")
    with pytest.warns(UserWarning, match="skipping"):
        train(config(max_steps=4, checkpoint_every=2, keep_checkpoints=2), *data["a"], run, resume=True)
    with pytest.warns(UserWarning, match="skipping"):  # the old run's corrupt 6 and 9 stay, skipped
        path, ckpt = ckpt_mod.newest_valid_checkpoint(str(run))
    assert os.path.basename(path) == "ckpt_0000004.pt" and ckpt["iteration"] == 4
    assert "ckpt_0000002.pt" in names(run)  # keep_checkpoints counts this run's checkpoints


def test_a_run_ends_with_a_checkpoint_of_its_last_step(data, tmp_path, one_torch_thread):
    run = tmp_path / "run"
    train(config(max_steps=5, checkpoint_every=100, eval_every=100), *data["a"], run)
    assert [os.path.basename(p) for p in ckpt_mod.checkpoints(str(run))] == ["ckpt_0000005.pt"]


def test_resuming_into_another_shape_is_one_line(data, tmp_path, one_torch_thread):
    run = tmp_path / "run"
    train(config(max_steps=3), *data["a"], run)
    with pytest.raises(ValueError) as exc:
        train(config(max_steps=6, d_model=32, d_ff=64), *data["a"], run, resume=True)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "d_model 16, d_ff 32" in msg and "d_model 32, d_ff 64" in msg and "num_layers" not in msg


def test_a_torn_metrics_line_is_tolerated_on_resume(data, tmp_path, one_torch_thread):
    full, part = tmp_path / "full", tmp_path / "part"
    train(config(max_steps=6), *data["a"], full)
    train(config(max_steps=6), *data["a"], part)
    os.unlink(part / "ckpt_0000006.pt")
    with open(part / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "loss": 3.1')  # a kill in the middle of a write
    with pytest.warns(UserWarning, match=r"metrics.jsonl: ignoring its last line"):
        train(config(max_steps=6), *data["a"], part, resume=True)
    assert losses(part) == losses(full)
    assert '"step": 7' not in (part / "metrics.jsonl").read_text()


def test_read_metrics_tolerates_only_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "val_loss": 5.0}\n{"step": 1, "loss": 4.0}\n{"step": 2, "lo')
    with pytest.warns(UserWarning, match="metrics.jsonl"):
        train_rows, evals = read_metrics(path)
    assert [r["step"] for r in train_rows] == [1] and [r["step"] for r in evals] == [0]
    path.write_text('{"step": 0, "val_loss": 5.0}\n{"step": 1, "lo\n{"step": 2, "loss": 4.0}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is not JSON"):
        read_metrics(path)


# ---- 3. messages ---------------------------------------------------------------------------


def test_cuda_without_a_gpu_is_one_line(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = cli_error(capsys, ["lm", "train", "--train", data["a"][0], "--val", data["a"][1], "--out", str(tmp_path / "r"),
                              "--device", "cuda"])
    assert "'cuda'" in line and "no CUDA GPU" in line and "--device cpu" in line


def test_a_cuda_index_the_machine_lacks_is_one_line(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    line = cli_error(capsys, ["lm", "train", "--train", data["a"][0], "--val", data["a"][1], "--out", str(tmp_path / "r"),
                              "--device", "cuda:7"])
    assert "'cuda:7'" in line and "1 CUDA device (cuda:0)" in line


def test_an_unknown_device_is_one_line(data, tmp_path, capsys):
    line = cli_error(capsys, ["lm", "train", "--train", data["a"][0], "--val", data["a"][1], "--out", str(tmp_path / "r"),
                              "--device", "gpu"])
    assert "unknown device 'gpu'" in line and "cpu, cuda" in line


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "-1"], "--temperature must be a finite number >= 0"),
    (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
    (["--top-p", "0"], r"--top-p must be in \(0, 1\]"),
    (["--top-p", "1.5"], r"--top-p must be in \(0, 1\]"),
    (["--max-new-tokens", "-3"], "--max-new-tokens must be at least 0"),
    (["--samples", "0"], "--samples must be at least 1"),
])
def test_generate_checks_its_flags_before_loading(tmp_path, capsys, flags, message):
    # --run names no folder: the flags are refused before the run is even looked at.
    line = cli_error(capsys, ["lm", "generate", "--run", str(tmp_path / "missing"), *flags])
    assert re.search(message, line)


def test_generate_from_a_missing_or_empty_run(tmp_path, capsys):
    assert "no such run folder" in cli_error(capsys, ["lm", "generate", "--run", str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "tokenizer.json").write_text("{}")
    line = cli_error(capsys, ["lm", "generate", "--run", str(tmp_path / "empty")])
    assert "no checkpoint in" in line


def test_generate_never_draws_an_id_the_tokenizer_lacks(one_torch_thread):
    from fastbpe.lm import TransformerLM, generate

    tok = gap_tokenizer()
    torch.manual_seed(0)
    model = TransformerLM(301, 32, 16, 1, 2, 32)  # untrained: ids 256-299 are as likely as any
    g = torch.Generator().manual_seed(0)
    text = generate(model, tok, "hello", 60, temperature=1.0, generator=g)
    assert isinstance(text, str)


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


def test_a_full_disk_during_training_names_the_intact_checkpoint(data, tmp_path, monkeypatch, capsys, one_torch_thread):
    run = tmp_path / "run"
    fill_disk(monkeypatch, room=1000, after_writes=1)
    line = cli_error(capsys, ["lm", "train", "--train", data["a"][0], "--val", data["a"][1], "--out", str(run),
                              "--max-steps", "2", "--checkpoint-every", "1", "--eval-every", "1", "--device", "cpu"])
    assert "ckpt_0000002.pt" in line and "disk is full" in line and "ckpt_0000001.pt" in line and "--resume" in line
    assert [n for n in names(run) if n.endswith(".pt") or n.startswith(".tmp")] == ["ckpt_0000001.pt"]
    assert read_checkpoint(run / "ckpt_0000001.pt")["iteration"] == 1


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


DET = dict(context_length=64, d_model=128, num_layers=1, num_heads=4, d_ff=256, batch_size=16, eval_every=8,
           eval_batches=2, checkpoint_every=4, warmup_steps=2, max_steps=16, device="cpu", seed=3, deterministic=True)

# Runs on two threads, in a process of their own. At this size two threads make the CPU
# embedding's backward race (atomic adds) unless the run is deterministic.
TWO_THREADS = """
import sys, torch
from fastbpe.lm import TrainConfig, train_lm
from fastbpe.lm import trainer
trainer.peak_flops = lambda device: None
torch.set_num_threads(2)
for run in sys.argv[2:]:
    train_lm(TrainConfig(**{cfg!r}), {train!r}, {val!r}, run, resume=sys.argv[1] == "resume", progress=False,
             log=lambda *a: None)
    assert not torch.are_deterministic_algorithms_enabled()  # put back after the run
"""


def losses(run):
    return [(r["step"], r.get("loss"), r.get("val_loss")) for r in trainer.read_rows(Path(run) / "metrics.jsonl")]


@pytest.fixture(scope="module")
def two_threads(data, tmp_path_factory):
    """(command line of the script, folder holding two fresh deterministic runs "one" and "two")."""
    d = tmp_path_factory.mktemp("deterministic")
    (d / "run.py").write_text(TWO_THREADS.format(cfg=DET, train=data["a"][0], val=data["a"][1]))
    # Threads that wait passively: spinning ones crawl on a busy machine (no effect on the numbers).
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    command = lambda mode, *runs: [sys.executable, str(d / "run.py"), mode, *map(str, runs)]  # noqa: E731
    subprocess.run(command("fresh", d / "one", d / "two"), check=True, timeout=300, env=env)
    return command, env, d


def test_deterministic_runs_on_two_threads_repeat_exactly(two_threads):
    _, _, d = two_threads
    assert losses(d / "one") == losses(d / "two")
    assert json.loads((d / "one" / "config.json").read_text())["deterministic"] is True


def test_a_killed_deterministic_run_resumes_to_the_same_result(two_threads, tmp_path):
    command, env, d = two_threads
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command("fresh", killed), env=env)
    deadline = time.time() + 120
    while not (killed / "ckpt_0000004.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "ckpt_0000016.pt").exists()
    subprocess.run(command("resume", killed), check=True, timeout=300, env=env)
    assert losses(killed) == losses(d / "one")
    a = read_checkpoint(d / "one" / "ckpt_0000016.pt")["model"]
    b = read_checkpoint(killed / "ckpt_0000016.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_deterministic_is_a_cli_flag_recorded_in_the_config(data, tmp_path, capsys):
    run = tmp_path / "run"
    cli.main(["lm", "train", "--train", data["a"][0], "--val", data["a"][1], "--out", str(run), "--max-steps", "1",
              "--deterministic", "--device", "cpu"])
    assert json.loads((run / "config.json").read_text())["deterministic"] is True


# ---- the lm train CLI as a stranger uses it ------------------------------------------------


@pytest.fixture(scope="module")
def odd_files(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("odd")
    meta = json.loads(Path(data["a"][1] + ".json").read_text())
    (d / "notes.txt").write_text("just text\n")
    keep = {k: v for k, v in meta.items() if k not in token_files.RESERVED}
    token_files.write_tokens(d / "empty.bin", np.zeros(0, dtype=np.uint16), np.uint16, keep)
    short = np.asarray(open_tokens(data["a"][1])[:50])
    token_files.write_tokens(d / "short.bin", short, short.dtype, keep)
    return d


@pytest.mark.parametrize("case, message", [
    ("text", r"--train .*notes.txt is not a token file: .*notes.txt.json, .* is missing"),
    ("sidecar", r"--train .*train_a.bin.json is the metadata of the token file .*train_a.bin: give the token file"),
    ("preset", r"unknown preset 'nope'; choose one of tiny, small, gpt2-small"),
    ("max_steps", r"max_steps must be at least 1, got 0"),
    ("batch_size", r"batch_size must be at least 1, got -1"),
    ("empty_val", r"the validation file .*empty.bin holds 0 tokens; windows of context_length 128 need at least 129"),
    ("short_val", r"the validation file .*short.bin holds 50 tokens; windows of context_length 128 need at least 129"),
    ("folder", r"--val .* is a folder"),
])
def test_lm_train_refuses_bad_input_in_one_line(data, odd_files, tmp_path, capsys, case, message):
    train_path, val_path = data["a"]
    extra = []
    if case == "text":
        train_path = str(odd_files / "notes.txt")
    elif case == "sidecar":
        train_path += ".json"
    elif case == "preset":
        extra = ["--preset", "nope"]
    elif case == "max_steps":
        extra = ["--max-steps", "0"]
    elif case == "batch_size":
        extra = ["--batch-size", "-1"]
    elif case == "empty_val":
        val_path = str(odd_files / "empty.bin")
    elif case == "short_val":
        val_path = str(odd_files / "short.bin")
    elif case == "folder":
        val_path = str(odd_files)
    line = cli_error(capsys, ["lm", "train", "--train", train_path, "--val", val_path, "--out", str(tmp_path / "r"), *extra])
    assert re.search(message, line), line
    assert not (tmp_path / "r").exists()


def test_lr_below_the_presets_floor_is_accepted(data, tmp_path, capsys):
    cli.main(["lm", "train", "--train", data["a"][0], "--val", data["a"][1], "--out", str(tmp_path / "r"),
              "--max-steps", "1", "--lr", "1e-5", "--device", "cpu"])
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["max_lr"] == 1e-5 and saved["min_lr"] == pytest.approx(1e-6)


def test_demo_runs_twice_into_its_folder(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT_A)
    argv = ["demo", "--corpus", str(corpus), "--out", str(tmp_path / "demo"), "--vocab-size", "300", "--max-steps", "2",
            "--preset", "tiny"]
    cli.main(argv)
    cli.main(argv)  # the demo replaces its own earlier run
    out = capsys.readouterr().out
    assert "--overwrite: removed the earlier run's" in out and out.count("--- sample 2") == 2
