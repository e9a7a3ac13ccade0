"""Sampling: the KV cache against the full forward pass, argument checks, end of text, streaming."""

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import fastbpe  # noqa: E402
from fastbpe.lm import TransformerLM  # noqa: E402
from fastbpe.lm.sample import check_sampling, generate, next_logits, pick, sample_ids, window_start  # noqa: E402

TEXT = "<|endoftext|>".join(f"the {['red', 'blue'][i % 2]} bird sang {i % 5} songs, ünïcode ok.\n" for i in range(60))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("sampletok")
    corpus = d / "corpus.txt"
    corpus.write_text(TEXT)
    return fastbpe.train(corpus, 290, progress=False)


def model_for(tok, ctx=16, seed=0):
    torch.manual_seed(seed)
    m = TransformerLM(max(tok.vocab) + 1, ctx, 32, 2, 4, 64)
    return m.eval()


@torch.no_grad()
def test_cached_logits_equal_the_full_forward_at_every_step(tok):
    model = model_for(tok, ctx=16)
    g = torch.Generator().manual_seed(1)
    # 40 steps with a 16-token window: the window slides (and the cache is refilled) several times.
    cont = torch.randint(0, model.vocab_size, (40,), generator=g).tolist()
    a, b = [5, 7, 9], [5, 7, 9]
    cached, full = next_logits(model, a, True), next_logits(model, b, False)
    start, starts = 0, set()
    for t in cont:
        la, lb = next(cached), next(full)
        torch.testing.assert_close(la, lb, atol=1e-5, rtol=0)
        # The uncached step is the plain forward pass over the window.
        start = window_start(len(b), start, 16)
        starts.add(start)
        assert len(b) - start <= 16
        torch.testing.assert_close(lb, model(torch.tensor([b[start:]]))[0, -1], atol=0, rtol=0)
        a.append(t)
        b.append(t)
    assert len(starts) >= 4  # the window moved (and the cache was refilled) several times


@torch.no_grad()
def test_cache_prefill_equals_the_full_forward(tok):
    model = model_for(tok)
    x = torch.randint(0, model.vocab_size, (2, 12))
    cache = model.new_cache()
    first = model(x[:, :5], cache=cache)
    rest = torch.cat([model(x[:, i : i + 1], cache=cache) for i in range(5, 9)] + [model(x[:, 9:], cache=cache)], 1)
    torch.testing.assert_close(torch.cat([first, rest], 1), model(x), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="exceeds context_length 16"):
        model(x[:, :5], cache=cache)  # 12 cached + 5 new


def test_sampled_ids_equal_with_and_without_cache(tok):
    model = model_for(tok)
    for kw in (dict(temperature=1.0), dict(temperature=0.7, top_k=5), dict(temperature=1.0, top_p=0.8),
               dict(temperature=0)):
        runs = [sample_ids(model, [3, 4], 50, generator=torch.Generator().manual_seed(3), use_cache=c, **kw)
                for c in (True, False)]
        assert runs[0] == runs[1] and len(runs[0]) == 50


def test_top_k_one_is_greedy_and_top_k_restricts_the_draw():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0])
    g = torch.Generator().manual_seed(0)
    assert {pick(logits, 5.0, top_k=1, generator=g) for _ in range(20)} == {1}
    assert {pick(logits, 100.0, top_k=2, generator=g) for _ in range(200)} == {1, 3}
    assert pick(logits, 0) == 1


@pytest.mark.parametrize("kw, msg", [
    (dict(temperature=-1.0, top_p=None), "temperature must be a finite number >= 0"),
    (dict(temperature=float("nan"), top_p=None), "temperature must be a finite number >= 0"),
    (dict(temperature=1.0, top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(temperature=1.0, top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(temperature=1.0, top_p=None, top_k=0), "top_k must be an integer >= 1"),
    (dict(temperature=1.0, top_p=None, top_k=2.5), "top_k must be an integer >= 1"),
])
def test_bad_sampling_arguments_are_value_errors(kw, msg, tok):
    with pytest.raises(ValueError, match=msg):
        check_sampling(**kw)
    with pytest.raises(ValueError, match=msg):
        generate(model_for(tok), tok, "the", 3, **kw)


class _Favours(torch.nn.Module):
    """An LM head whose logits favour one token by 20 nats, whatever the input."""

    def __init__(self, vocab_size, favoured):
        super().__init__()
        self.logits = torch.zeros(vocab_size)
        self.logits[favoured] = 20.0

    def forward(self, x):
        return self.logits.expand(*x.shape[:-1], -1)


def test_stops_at_end_of_text(tok):
    model = model_for(tok)
    eot = tok.special_token_ids["<|endoftext|>"]
    model.lm_head = _Favours(model.vocab_size, eot)
    assert sample_ids(model, [3], 10, temperature=1.0, eos=eot, generator=torch.Generator().manual_seed(0)) == []
    assert generate(model, tok, "the", 10, temperature=0) == ""
    # Without that token as the end, the same model runs to max_new_tokens.
    assert sample_ids(model, [3], 10, temperature=0, eos=None) == [eot] * 10


def test_stream_pieces_add_up_to_the_text(tok):
    model = model_for(tok)
    pieces = []
    text = generate(model, tok, "the", 60, temperature=1.0, generator=torch.Generator().manual_seed(2),
                    stream=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == text


def test_cli_generate_rejects_bad_arguments_in_one_line(tmp_path):
    for flags, msg in ((["--top-k", "0"], "--top-k must be an integer >= 1"),
                       (["--temperature", "-0.5"], "--temperature must be a finite number >= 0"),
                       (["--top-p", "0"], "--top-p must be in (0, 1]")):
        proc = subprocess.run([sys.executable, "-m", "fastbpe", "lm", "generate", "--run", str(tmp_path), *flags],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert proc.stderr.strip().count("\n") == 0 and msg in proc.stderr, proc.stderr
