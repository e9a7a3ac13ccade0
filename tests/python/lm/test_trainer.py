"""The training loop: learning, exact resume, clean stops, corrupt checkpoints, DDP."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")

import fastbpe  # noqa: E402
from fastbpe.lm import TrainConfig, train_lm  # noqa: E402

TEXT = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog sat together on a mat.\n" * 400
    + "<|endoftext|>".join(f"story {i}: the {['red', 'blue', 'green'][i % 3]} bird sang {i % 7} songs.\n" for i in range(300))
)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    d = tmp_path_factory.mktemp("tokens")
    corpus = d / "corpus.txt"
    corpus.write_text(TEXT)
    tok = fastbpe.train(corpus, 320, progress=False)
    tok.save(d / "tok.json")
    tok.encode_file(corpus, d / "train.bin", metadata={"tokenizer": str(d / "tok.json")})
    tok.encode_file(corpus, d / "val.bin", metadata={"tokenizer": str(d / "tok.json")})
    return str(d / "train.bin"), str(d / "val.bin")


def config(**kw):
    base = dict(context_length=32, d_model=32, num_layers=2, num_heads=2, d_ff=64, batch_size=8, max_steps=40,
                max_lr=3e-3, min_lr=3e-4, warmup_steps=5, eval_every=10, eval_batches=4, checkpoint_every=10,
                keep_checkpoints=10, device="cpu", seed=1)
    return TrainConfig(**{**base, **kw})


def rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_learns_and_writes_a_run_folder(tokens, tmp_path):
    run = tmp_path / "run"
    result = train_lm(config(), *tokens, str(run), progress=False, log=lambda *a: None)
    assert result.steps == 40
    assert result.last_val_loss < result.first_val_loss - 1.0
    names = set(os.listdir(run))
    assert {"config.json", "tokenizer.json", "metrics.jsonl", "loss.png"} <= names
    assert sorted(n for n in names if n.startswith("ckpt_")) == [f"ckpt_{s:07d}.pt" for s in (10, 20, 30, 40)]
    steps = [r for r in rows(run) if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 41))
    assert set(steps[0]) >= {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu"}
    assert [r["step"] for r in rows(run) if "val_loss" in r] == [0, 10, 20, 30, 40]


def test_resume_is_bit_identical(tokens, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train_lm(config(max_steps=30), *tokens, str(full), progress=False, log=lambda *a: None)
    # Stop at 20 (a run of 20 steps with the same schedule length is not the same run, so the
    # partial run is made by removing its checkpoints after 20 and resuming).
    train_lm(config(max_steps=30), *tokens, str(part), progress=False, log=lambda *a: None)
    for name in os.listdir(part):
        if name.startswith("ckpt_") and name > "ckpt_0000020.pt":
            os.unlink(part / name)
    train_lm(config(max_steps=30), *tokens, str(part), resume=True, progress=False, log=lambda *a: None)
    a = [(r["step"], r.get("loss"), r.get("val_loss")) for r in rows(full)]
    b = [(r["step"], r.get("loss"), r.get("val_loss")) for r in rows(part)]
    assert a == b  # exactly equal floats, every step after 20 included


def test_resume_skips_a_corrupt_newest_checkpoint(tokens, tmp_path):
    run = tmp_path / "run"
    train_lm(config(max_steps=20), *tokens, str(run), progress=False, log=lambda *a: None)
    newest = run / "ckpt_0000020.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    logs = []
    with pytest.warns(UserWarning, match="ckpt_0000020.pt"):
        train_lm(config(max_steps=20), *tokens, str(run), resume=True, progress=False, log=logs.append)
    assert any("resumed from" in m and "ckpt_0000010.pt" in m for m in logs)


def test_sigterm_finishes_the_step_and_checkpoints(tokens, tmp_path):
    run = tmp_path / "run"
    code = (
        "import sys; from fastbpe.lm import TrainConfig, train_lm\n"
        f"cfg = TrainConfig(context_length=32, d_model=32, num_layers=2, num_heads=2, d_ff=64, batch_size=8, "
        f"max_steps=100000, eval_every=100000, checkpoint_every=100000, device='cpu')\n"
        f"r = train_lm(cfg, {tokens[0]!r}, {tokens[1]!r}, {str(run)!r}, progress=False, log=lambda *a: print(*a, flush=True))\n"
        "print('stopped', r.stopped_by, r.steps, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    # Signal once a training step has been logged (a busy machine may take a while to get there).
    deadline = time.time() + 120
    while time.time() < deadline and not (
        (run / "metrics.jsonl").exists() and '"loss"' in (run / "metrics.jsonl").read_text()
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    last = out.strip().splitlines()[-1].split()
    assert last[:2] == ["stopped", "SIGTERM"]
    steps = int(last[2])
    assert (run / f"ckpt_{steps:07d}.pt").exists()
    assert rows(run)[-1]["step"] == steps


def test_diverging_loss_stops_with_the_step(tokens, tmp_path):
    with pytest.raises(fastbpe.lm.TrainingDiverged, match=r"at step \d+"):
        train_lm(config(max_lr=1e9, min_lr=1e9, warmup_steps=0, grad_clip=1e30, max_steps=50), *tokens,
                 str(tmp_path / "run"), progress=False, log=lambda *a: None)


def test_generate_stops_at_end_of_text(tokens, tmp_path):
    from fastbpe.lm import TransformerLM, generate

    tok = fastbpe.Tokenizer.load(os.path.join(os.path.dirname(tokens[0]), "tok.json"))
    model = TransformerLM(tok.vocab_size, 32, 32, 1, 2, 64)
    g = torch.Generator().manual_seed(0)
    text = generate(model, tok, "the cat", 20, temperature=1.0, top_p=0.9, generator=g)
    assert isinstance(text, str)
    assert generate(model, tok, "the cat", 10, temperature=0) == generate(model, tok, "the cat", 10, temperature=0)


DDP_SCRIPT = """
import os, torch, torch.distributed as dist
from fastbpe.lm import TrainConfig, train_lm
dist.init_process_group("gloo")
cfg = TrainConfig(context_length=32, d_model=32, num_layers=2, num_heads=2, d_ff=64, batch_size=4, max_steps=6,
                  eval_every=3, eval_batches=2, checkpoint_every=6, device="cpu")
r = train_lm(cfg, os.environ["TRAIN"], os.environ["VAL"], os.environ["RUN"], progress=False, log=lambda *a: None)
flat = torch.cat([p.detach().flatten() for p in r.model.parameters()])
rank0 = flat.clone()
dist.broadcast(rank0, 0)
print("RANK", dist.get_rank(), "IDENTICAL", bool(torch.equal(flat, rank0)), "VAL", r.last_val_loss, flush=True)
dist.barrier()  # no rank tears down its connections while another still uses them
dist.destroy_process_group()
"""


def test_ddp_two_processes_stay_identical(tokens, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "TRAIN": tokens[0], "VAL": tokens[1], "RUN": str(tmp_path / "run"), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", str(script)]
    done = subprocess.run(torchrun, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("IDENTICAL True") == 2, done.stdout + done.stderr[-2000:]
    # Only rank 0 writes the run folder, with one row per step.
    steps = [r["step"] for r in rows(tmp_path / "run") if "loss" in r]
    assert steps == list(range(1, 7))
