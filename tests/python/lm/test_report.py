"""Reporting off the terminal: plain progress lines, TensorBoard event files, a missing extra."""

import os
import re
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import fastbpe  # noqa: E402
from fastbpe.lm import TrainConfig, train_lm  # noqa: E402
from fastbpe.lm import report  # noqa: E402

TEXT = "the cat sat on the mat. the dog sat on the log.\n" * 200


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    d = tmp_path_factory.mktemp("reporttok")
    corpus = d / "corpus.txt"
    corpus.write_text(TEXT)
    tok = fastbpe.train(corpus, 270, progress=False)
    tok.save(d / "tok.json")
    for name in ("train.bin", "val.bin"):
        tok.encode_file(corpus, d / name, metadata={"tokenizer": str(d / "tok.json")})
    return str(d / "train.bin"), str(d / "val.bin")


def small(**kw):
    base = dict(context_length=16, d_model=16, num_layers=1, num_heads=2, d_ff=32, batch_size=4, max_steps=6,
                eval_every=3, eval_batches=2, checkpoint_every=6, device="cpu", warmup_steps=1)
    return TrainConfig(**{**base, **kw})


LINE = re.compile(r"step (\d+)/6 \| loss (\S+) \| val_loss (\S+) \| (\S+) tok/s \| MFU (\S+) \| ETA (\S+)")


def test_off_a_terminal_lm_train_prints_plain_lines(tokens, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "fastbpe", "lm", "train", "--train", tokens[0], "--val", tokens[1], "--out", str(run),
         "--max-steps", "6", "--log-every", "2", "--eval-every", "3", "--batch-size", "2", "--device", "cpu"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [m.groups() for m in map(LINE.search, proc.stdout.splitlines()) if m]
    # Every 2 steps, and at each evaluation (0, 3, 6): one line per step.
    assert [int(g[0]) for g in lines] == [0, 2, 3, 4, 6]
    assert lines[0][1] == "-" and lines[0][2] != "-"  # before training: the validation loss only
    for step, loss, val, tps, mfu, eta in lines[1:]:
        assert float(loss) > 0 and float(val) > 0 and float(tps.replace(",", "")) > 0
        assert mfu.endswith("%") and re.fullmatch(r"\d+:\d\d", eta)
    assert lines[-1][5] == "0:00"
    assert os.path.exists(run / "metrics.jsonl") and os.path.exists(run / "loss.png")


def test_tensorboard_writes_event_files(tokens, tmp_path):
    pytest.importorskip("tensorboard")  # in the dev extra
    run = tmp_path / "run"
    train_lm(small(report="tensorboard"), *tokens, str(run), progress=False, log=lambda *a: None)
    events = [n for n in os.listdir(run / "tb") if n.startswith("events.out.tfevents")]
    assert events and os.path.getsize(run / "tb" / events[0]) > 100
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert {"loss", "val_loss", "val_bpb"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("val_loss")] == [0, 3, 6]


def test_a_resumed_run_replaces_the_killed_runs_later_events_and_overwrite_clears_them(tokens, tmp_path):
    """A run killed after its checkpoint at step 3 logged steps 4-6 to TensorBoard; resumed from
    step 3, those steps are written again, once each. --overwrite removes the event files."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = str(tmp_path / "run")
    quiet = dict(progress=False, log=lambda *a: None)
    train_lm(small(report="tensorboard", checkpoint_every=3, keep_checkpoints=5), *tokens, run, **quiet)
    os.unlink(os.path.join(run, "ckpt_0000006.pt"))  # killed before its last checkpoint
    train_lm(small(report="tensorboard", checkpoint_every=3, keep_checkpoints=5), *tokens, run, resume=True, **quiet)
    acc = EventAccumulator(os.path.join(run, "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3, 4, 5, 6]
    train_lm(small(report="none"), *tokens, run, overwrite=True, **quiet)
    assert not os.path.exists(os.path.join(run, "tb"))


def test_wandb_offline_logs_the_metrics_rows(tokens, tmp_path):
    """--log wandb with WANDB_MODE=offline (no account, no network): the run's log in RUN/wandb
    holds the evaluation rows of metrics.jsonl, value for value."""
    pytest.importorskip("wandb")  # in the dev extra
    import json

    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, "-m", "fastbpe", "lm", "train", "--train", tokens[0], "--val", tokens[1], "--out", str(run),
         "--max-steps", "4", "--eval-every", "2", "--batch-size", "2", "--device", "cpu", "--log", "wandb"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    logs = [os.path.join(d, f) for d, _, fs in os.walk(run / "wandb") for f in fs
            if f.endswith(".wandb") and "offline-run-" in d]
    assert len(logs) == 1, logs
    data = open(logs[0], "rb").read()
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    evals = [r for r in rows if "val_bpb" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    for r in evals:  # wandb stores each value as JSON text
        assert json.dumps(r["val_loss"]).encode() in data and json.dumps(r["val_bpb"]).encode() in data


def test_a_missing_package_is_one_line_naming_the_extra_before_training(tokens, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "_installed", lambda module: False)
    run = tmp_path / "run"
    with pytest.raises(ImportError, match=r'--log wandb needs the wandb package: pip install "fastbpe-rs\[wandb\]"'):
        train_lm(small(report="wandb"), *tokens, str(run), progress=False, log=lambda *a: None)
    assert not run.exists()
    code = ("import sys, fastbpe.lm.report as r; r._installed = lambda m: False; from fastbpe.cli import main; "
            "main(sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", code, "lm", "train", "--train", tokens[0], "--val", tokens[1],
                           "--out", str(run), "--log", "tensorboard", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ('fastbpe: error: --log tensorboard needs the tensorboard package: '
                                   'pip install "fastbpe-rs[tensorboard]"')
    assert not run.exists()
