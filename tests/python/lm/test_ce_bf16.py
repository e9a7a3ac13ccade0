"""cross_entropy's Rust path for bf16 logits on CPU (rust/xent.rs) against the readable one."""

import pytest

torch = pytest.importorskip("torch")

from fastbpe import _core  # noqa: E402
from fastbpe.lm import nn  # noqa: E402
from fastbpe.lm.nn import (  # noqa: E402
    cross_entropy,
    readable_cross_entropy,
    readable_token_cross_entropy,
    token_cross_entropy,
)

BF16_GRAD = dict(rtol=1.6e-2, atol=1e-5)  # test_lm_nn.py's bf16 tolerances
LOSS = dict(rtol=1e-5, atol=1e-6)


def grads(fn, logits, targets, weights=None):
    x = logits.detach().clone().requires_grad_()
    out = fn(x, targets)
    (out if weights is None else (out * weights).sum()).backward()
    return out.detach(), x.grad


@pytest.fixture
def rust_calls(monkeypatch):
    calls = []
    for name in ("cross_entropy_bf16_lse", "cross_entropy_bf16_grad"):
        real = getattr(_core, name)
        monkeypatch.setattr(nn._core, name, lambda *a, _real=real, _name=name: (calls.append(_name), _real(*a))[1])
    return calls


@pytest.mark.parametrize("threads", [1, 2])
def test_large_vocabulary_rows_equal_the_readable_version(rust_calls, threads, monkeypatch):
    # 24 rows of 50,257: enough logits for the kernel to split the rows between two threads.
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 12, 50257, generator=g) * 4).bfloat16()
    targets = torch.randint(0, 50257, (2, 12), generator=g)
    fast, fast_grad = grads(cross_entropy, logits, targets)
    slow, slow_grad = grads(readable_cross_entropy, logits, targets)
    assert rust_calls == ["cross_entropy_bf16_lse", "cross_entropy_bf16_grad"]
    torch.testing.assert_close(fast, slow, **LOSS)
    assert fast_grad.dtype == torch.bfloat16
    torch.testing.assert_close(fast_grad, slow_grad, **BF16_GRAD)
    w = torch.rand(2, 12, generator=g)
    fast_tok, fast_tok_grad = grads(token_cross_entropy, logits, targets, w)
    slow_tok, slow_tok_grad = grads(readable_token_cross_entropy, logits, targets, w)
    torch.testing.assert_close(fast_tok, slow_tok, **LOSS)
    torch.testing.assert_close(fast_tok_grad, slow_tok_grad, **BF16_GRAD)


def test_non_contiguous_and_infinite_logits():
    g = torch.Generator().manual_seed(1)
    base = (torch.randn(37, 6, generator=g) * 3).bfloat16()
    logits = base.t()  # (6, 37), not contiguous
    logits[0, 5] = float("-inf")  # a token that can never be predicted: its gradient is 0
    targets = torch.randint(0, 37, (6,), generator=g)
    targets[0] = 4
    fast, fast_grad = grads(cross_entropy, logits, targets)
    slow, slow_grad = grads(readable_cross_entropy, logits, targets)
    torch.testing.assert_close(fast, slow, **LOSS)
    torch.testing.assert_close(fast_grad, slow_grad, **BF16_GRAD)
    assert fast_grad[0, 5] == 0
    # A row whose max is +inf: the loss is inf or nan as in the readable version.
    inf = torch.zeros(1, 5, dtype=torch.bfloat16)
    inf[0, 1] = float("inf")
    t = torch.tensor([1])
    torch.testing.assert_close(token_cross_entropy(inf, t), readable_token_cross_entropy(inf, t), equal_nan=True)


def test_nan_logits_give_nan_losses_and_grads():
    logits = torch.zeros(2, 9, dtype=torch.bfloat16)
    logits[1, 3] = float("nan")
    loss, grad = grads(token_cross_entropy, logits, torch.tensor([0, 0]), torch.ones(2))
    assert not loss[0].isnan() and loss[1].isnan()
    assert not grad[0].isnan().any() and grad[1].isnan().all()


def test_the_bindings_check_their_tensors():
    x = torch.zeros(3, 5, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="cross_entropy_bf16_lse: logits must be a contiguous CPU bfloat16"):
        _core.cross_entropy_bf16_lse(x.float(), torch.empty(3), 1)
    with pytest.raises(ValueError, match="15 logits are not 4 rows of 5"):
        _core.cross_entropy_bf16_lse(x, torch.empty(4), 1)
    lse = torch.zeros(3)
    args = dict(targets=torch.tensor([0, 1, 5]), lse=lse, grad_loss=torch.ones(3), grad=torch.empty_like(x))
    with pytest.raises(ValueError, match=r"target 5 of row 2 is not in \[0, 5\)"):
        _core.cross_entropy_bf16_grad(x, *args.values(), 1)
    args["targets"] = torch.tensor([0, 1, 2], dtype=torch.int32)
    with pytest.raises(ValueError, match="targets must be a contiguous CPU int64"):
        _core.cross_entropy_bf16_grad(x, *args.values(), 1)
    args["targets"], args["grad"] = torch.tensor([0, 1, 2]), x
    with pytest.raises(ValueError, match="grad shares memory with an input"):
        _core.cross_entropy_bf16_grad(x, *args.values(), 1)
    assert not x.any()
