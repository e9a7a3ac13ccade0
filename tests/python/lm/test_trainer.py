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
# Each rank reports in a file of its own: lines that two ranks print to one pipe can interleave.
with open(os.path.join(os.environ["REPORTS"], f"rank{dist.get_rank()}.txt"), "w") as f:
    f.write(f"IDENTICAL {torch.equal(flat, rank0)} VAL {r.last_val_loss}")
dist.barrier()  # no rank leaves while another still uses their connections
# Both ranks have reported: leave without tearing the group down. gloo's teardown at times
# aborts a rank after everything is done ("terminate called without an active exception"),
# which would fail this test for a reason outside the trainer.
os._exit(0)
"""


def test_ddp_two_processes_stay_identical(tokens, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    reports = tmp_path / "reports"
    reports.mkdir()
    env = {**os.environ, "TRAIN": tokens[0], "VAL": tokens[1], "RUN": str(tmp_path / "run"), "OMP_NUM_THREADS": "1",
           "REPORTS": str(reports)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", str(script)]
    done = subprocess.run(torchrun, env=env, capture_output=True, text=True, timeout=300)
    # stdout too: it says whether both ranks finished training before a rank failed
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    said = [(reports / f"rank{r}.txt").read_text() for r in range(2)]
    assert all(s.startswith("IDENTICAL True ") for s in said), said
    # Only rank 0 writes the run folder, with one row per step.
    steps = [r["step"] for r in rows(tmp_path / "run") if "loss" in r]
    assert steps == list(range(1, 7))


# ---- the pieces train_lm is made of ----------------------------------------------------------

from fastbpe.lm import trainer  # noqa: E402
from fastbpe.lm.config import param_groups  # noqa: E402
from fastbpe.lm.data import BatchLoader, open_tokens  # noqa: E402
from fastbpe.lm.nn import TransformerLM  # noqa: E402
from fastbpe.lm.optim import cosine_lr  # noqa: E402

CPU = torch.device("cpu")


def test_from_config_is_the_constructor_with_the_configs_shape():
    c = config(vocab_size=300, rope_theta=500.0)
    torch.manual_seed(0)
    a = TransformerLM.from_config(c)
    torch.manual_seed(0)
    b = TransformerLM(300, 32, 32, 2, 2, 64, 500.0)
    assert (a.vocab_size, a.context_length, len(a.layers)) == (300, 32, 2)
    assert a.layers[0].ffn.w1.weight.shape == (64, 32)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert TransformerLM.from_config(c, dtype=torch.bfloat16).lm_head.weight.dtype == torch.bfloat16


def test_param_groups_decay_matrices_but_not_norms_or_embeddings():
    model = TransformerLM.from_config(config(vocab_size=300))
    decay, no_decay = param_groups(model, 0.25)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.25, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = [names[id(p)] for p in decay["params"]]
    kept = [names[id(p)] for p in no_decay["params"]]
    assert "lm_head.weight" in decayed and "layers.0.attn.q_proj.weight" in decayed
    assert "token_embeddings.weight" in kept and "ln_final.weight" in kept and "layers.1.ln2.weight" in kept
    assert all(n.endswith(("ln1.weight", "ln2.weight")) or n in ("token_embeddings.weight", "ln_final.weight")
               for n in kept)
    # every parameter once, each group in the model's order (the optimizer state's order)
    order = [n for n, _ in model.named_parameters()]
    assert sorted(decayed + kept) == sorted(order)
    assert decayed == [n for n in order if n in decayed] and kept == [n for n in order if n in kept]


def test_setup_is_seeded_and_each_rank_draws_its_own_batches():
    c = config(vocab_size=300)
    a, b = trainer.setup(c, CPU, "fp32"), trainer.setup(c, CPU, "fp32")
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert not a.scaler.is_enabled() and trainer.setup(c, CPU, "fp16").scaler.is_enabled()
    assert [g["weight_decay"] for g in a.optimizer.param_groups] == [c.weight_decay, 0.0]
    other = trainer.setup(c, CPU, "fp32", rank=1)
    assert not torch.equal(a.generator.get_state(), other.generator.get_state())
    changed = trainer.setup(c.replace(seed=2), CPU, "fp32")
    assert not torch.equal(a.model.lm_head.weight, changed.model.lm_head.weight)


def _steps(state, loader, c, start, n):
    losses = []
    for step in range(start, start + n):
        trainer.set_lr(state.optimizer, cosine_lr(step, c.max_lr, c.min_lr, c.warmup_steps, c.max_steps))
        out = trainer.train_step(state, state.model, loader, c, CPU, "fp32", step=step)
        losses.append((out.loss, out.grad_norm))
    return losses


def test_setup_and_train_step_are_train_lms_steps(tokens, tmp_path):
    c = config(max_steps=6, eval_every=100, checkpoint_every=100, deterministic=True, grad_accum_steps=2)
    train_lm(c, *tokens, str(tmp_path / "run"), progress=False, log=lambda *a: None)
    logged = [(r["loss"], r["grad_norm"]) for r in rows(tmp_path / "run") if "loss" in r]
    c = c.replace(vocab_size=json.loads((tmp_path / "run" / "config.json").read_text())["vocab_size"])
    with trainer._determinism(True, CPU):
        state = trainer.setup(c, CPU, "fp32")
        loader = BatchLoader(open_tokens(tokens[0]), c.batch_size, c.context_length, CPU, state.generator)
        try:
            assert _steps(state, loader, c, 0, 6) == logged  # bit for bit
        finally:
            loader.close()


def test_restore_continues_exactly_where_the_checkpoint_was_written(tokens, tmp_path):
    c = config(vocab_size=320, max_steps=8)
    data = open_tokens(tokens[0])

    def run(state, start, n, write_at=None):
        loader = BatchLoader(data, c.batch_size, c.context_length, CPU, state.generator)
        try:
            if write_at is None:
                return _steps(state, loader, c, start, n)
            # The checkpoint is written between two steps of one loader, as the loop writes it
            # (the loader draws batches ahead: its generator_state is that of the batches used).
            _steps(state, loader, c, start, write_at - start)
            ckpt = trainer.Checkpointer(str(tmp_path), c, state, {}, "fp32", trainer.Distributed(), None)
            ckpt.write(write_at, loader)
            assert ckpt.saved == (write_at, str(tmp_path / f"ckpt_{write_at:07d}.pt"))
            return _steps(state, loader, c, write_at, start + n - write_at)
        finally:
            loader.close()

    with trainer._determinism(True, CPU):
        later = run(trainer.setup(c, CPU, "fp32"), 0, 6, write_at=3)
        path, ckpt = trainer.newest_valid_checkpoint(str(tmp_path))
        fresh = trainer.setup(c.replace(seed=9), CPU, "fp32")  # other weights and generator: all replaced
        assert trainer.restore(fresh, path, ckpt) == 3
        assert run(fresh, 3, 3) == later
        assert len(later) == 3


def test_restore_refuses_another_models_checkpoint(tokens, tmp_path):
    c = config(vocab_size=320)
    state = trainer.setup(c, CPU, "fp32")
    loader = BatchLoader(open_tokens(tokens[0]), c.batch_size, c.context_length, CPU, state.generator)
    try:
        trainer.Checkpointer(str(tmp_path), c, state, {}, "fp32", trainer.Distributed(), None).write(1, loader)
    finally:
        loader.close()
    path, ckpt = trainer.newest_valid_checkpoint(str(tmp_path))
    with pytest.raises(ValueError, match="does not fit this model"):
        trainer.restore(trainer.setup(config(vocab_size=320, d_model=64), CPU, "fp32"), path, ckpt)


def test_train_step_stops_on_a_non_finite_loss_naming_the_step(tokens):
    c = config(vocab_size=320)
    state = trainer.setup(c, CPU, "fp32")
    with torch.no_grad():
        state.model.lm_head.weight.fill_(float("nan"))
    loader = BatchLoader(open_tokens(tokens[0]), c.batch_size, c.context_length, CPU, state.generator)
    try:
        with pytest.raises(trainer.TrainingDiverged, match=r"at step 8; .* is runs/x/ckpt_0000005.pt"):
            trainer.train_step(state, state.model, loader, c, CPU, "fp32", step=7,
                               last_checkpoint="runs/x/ckpt_0000005.pt")
    finally:
        loader.close()


def test_validation_row_has_loss_perplexity_and_bits_per_byte(tokens):
    c = config(vocab_size=320, eval_batches=2)
    tok = fastbpe.Tokenizer.load(os.path.join(os.path.dirname(tokens[0]), "tok.json"))
    model = TransformerLM.from_config(c)
    model.train()
    val = open_tokens(tokens[1])
    lengths = trainer.token_byte_lengths(tok, c.vocab_size, CPU)
    row = trainer.validation_row(model, model, val, c, CPU, "fp32", lengths)
    assert set(row) == {"val_loss", "val_ppl", "val_bpb"} and model.training
    assert row["val_ppl"] == pytest.approx(torch.tensor(row["val_loss"]).exp().item())
    assert set(trainer.validation_row(model, model, val, c, CPU, "fp32", None)) == {"val_loss", "val_ppl"}
