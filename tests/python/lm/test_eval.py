"""Evaluation: loss, perplexity and bits per byte, in the library, the training loop and the CLI."""

import json
import math
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import fastbpe  # noqa: E402
from fastbpe.lm import TransformerLM  # noqa: E402
from fastbpe.lm.data import open_tokens  # noqa: E402
from fastbpe.lm.evaluate import evaluate, token_byte_lengths  # noqa: E402

TEXT = "<|endoftext|>".join(f"the {['red', 'blue'][i % 2]} bird sang {i % 5} songs, ünïcode ok.\n" for i in range(60))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaltok")
    corpus = d / "corpus.txt"
    corpus.write_text(TEXT)
    tok = fastbpe.train(corpus, 290, progress=False)
    tok.save(d / "tok.json")
    tok.encode_file(corpus, d / "data.bin", metadata={"tokenizer": str(d / "tok.json")})
    return tok, str(d / "data.bin")


def tiny_model(tok, ctx=16):
    torch.manual_seed(0)
    return TransformerLM(max(tok.vocab) + 1, ctx, 16, 1, 2, 32)


def test_bpb_equals_a_hand_computation(files):
    tok, path = files
    data = open_tokens(path)
    model = tiny_model(tok)
    got = evaluate(model, data, batch_size=3, context_length=16, tokenizer=tok)
    # By hand: every window of 16 predicted tokens, torch's own log-softmax, bytes from the vocab.
    nats, n_tokens, n_bytes = 0.0, 0, 0
    specials = set(tok.special_token_ids.values())
    with torch.no_grad():
        for w in range((len(data) - 1) // 16):
            chunk = torch.tensor(data[w * 16 : w * 16 + 17].astype("int64"))
            logp = torch.log_softmax(model(chunk[None, :-1])[0].double(), -1)
            for pos, target in enumerate(chunk[1:].tolist()):
                nats -= float(logp[pos, target])
                n_tokens += 1
                n_bytes += 0 if target in specials else len(tok.vocab[target])
    assert got.tokens == n_tokens
    assert got.bytes == n_bytes
    assert got.loss == pytest.approx(nats / n_tokens, rel=1e-5)
    assert got.bpb == pytest.approx(nats / (math.log(2) * n_bytes), rel=1e-5)
    assert got.perplexity == pytest.approx(math.exp(nats / n_tokens), rel=1e-5)


def test_special_tokens_count_zero_bytes(files):
    tok, _ = files
    lengths = token_byte_lengths(tok, max(tok.vocab) + 1)
    eot = tok.special_token_ids["<|endoftext|>"]
    assert int(lengths[eot]) == 0
    assert int(lengths[ord("a")]) == 1
    assert all(int(lengths[i]) == len(t) for i, t in tok.vocab.items() if i != eot)


def test_uniform_model_gives_log2_v_times_tokens_per_byte(files):
    tok, path = files
    model = tiny_model(tok)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: uniform over the vocabulary
    got = evaluate(model, open_tokens(path), batch_size=4, context_length=16, tokenizer=tok)
    v = model.vocab_size
    assert got.loss == pytest.approx(math.log(v), rel=1e-6)
    assert got.bpb == pytest.approx(math.log2(v) * got.tokens / got.bytes, rel=1e-6)


def test_training_logs_val_bpb(files, tmp_path):
    from fastbpe.lm import TrainConfig, train_lm

    _, path = files
    cfg = TrainConfig(context_length=16, d_model=16, num_layers=1, num_heads=2, d_ff=32, batch_size=4, max_steps=4,
                      eval_every=2, eval_batches=2, checkpoint_every=4, device="cpu", warmup_steps=1)
    train_lm(cfg, path, path, str(tmp_path / "run"), progress=False, log=lambda *a: None)
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        evals = [r for r in map(json.loads, f) if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert all(r["val_bpb"] > 0 and math.isfinite(r["val_bpb"]) for r in evals)


def test_cli_lm_eval_prints_loss_perplexity_bpb_and_generate_streams(files, tmp_path):
    from fastbpe.lm import TrainConfig, train_lm

    tok, path = files
    cfg = TrainConfig(context_length=16, d_model=16, num_layers=1, num_heads=2, d_ff=32, batch_size=4, max_steps=2,
                      eval_every=2, eval_batches=2, checkpoint_every=2, device="cpu", warmup_steps=1)
    run = tmp_path / "run"
    result = train_lm(cfg, path, path, str(run), progress=False, log=lambda *a: None)
    proc = subprocess.run([sys.executable, "-m", "fastbpe", "lm", "eval", "--run", str(run), "--data", path],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    want = evaluate(result.model, open_tokens(path), 32, 16, tokenizer=tok)
    out = proc.stdout
    assert f"loss {want.loss:.4f}" in out and f"perplexity {want.perplexity:.2f}" in out
    assert f"bits per byte {want.bpb:.4f}" in out
    streamed = subprocess.run([sys.executable, "-m", "fastbpe", "lm", "generate", "--run", str(run), "--prompt",
                               "the", "--max-new-tokens", "20", "--top-k", "5", "--seed", "4", "--stream"],
                              capture_output=True, text=True, timeout=120)
    plain = subprocess.run([sys.executable, "-m", "fastbpe", "lm", "generate", "--run", str(run), "--prompt",
                            "the", "--max-new-tokens", "20", "--top-k", "5", "--seed", "4"],
                           capture_output=True, text=True, timeout=120)
    assert streamed.returncode == plain.returncode == 0, streamed.stderr + plain.stderr
    assert streamed.stdout == plain.stdout and plain.stdout.startswith("--- sample 1\nthe")
    bad = subprocess.run([sys.executable, "-m", "fastbpe", "lm", "eval", "--run", str(run), "--data",
                          str(tmp_path / "nope.bin")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("fastbpe: error:") and "nope.bin" in bad.stderr
    assert "Traceback" not in bad.stderr
