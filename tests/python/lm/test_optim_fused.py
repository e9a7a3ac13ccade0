"""AdamW's Rust pass on CPU (fused=None/True) against its foreach ops (fused=False).

The moments are bit for bit the same; the params agree to float rounding (the foreach path's
torch.sqrt is MKL's, which is off by one ulp now and then; the Rust pass rounds sqrt exactly)."""

import copy
import io
import pickle

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastbpe import _core  # noqa: E402
from fastbpe.lm import optim  # noqa: E402
from fastbpe.lm.optim import AdamW  # noqa: E402

TIGHT = {"rtol": 1e-6, "atol": 1e-7}
STATES = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


@pytest.fixture
def rust_calls(monkeypatch):
    """The number of tensors each successful call of the Rust pass updated."""
    calls = []
    real = _core.adamw_step_f32

    def spy(params, *rest):
        real(params, *rest)
        calls.append(len(params))

    monkeypatch.setattr(optim._core, "adamw_step_f32", spy)
    return calls


def twins(shapes, seed, **kwargs):
    gen = torch.Generator().manual_seed(seed)
    a = [torch.randn(s, generator=gen) for s in shapes]
    b = [p.clone() for p in a]
    return a, b, AdamW(a, **kwargs), AdamW(b, **kwargs, fused=False)


def lockstep(pairs, steps, seed=1, lrs=None):
    """The same random grads to each (params, optimizer); the lr changes every step."""
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        grads = [torch.randn(p.shape, generator=gen) for p in pairs[0][0]]
        for params, opt in pairs:
            for p, g in zip(params, grads):
                p.grad = g.clone()
            for group in opt.param_groups:
                group["lr"] = lrs[t] if lrs else 1e-2 * (1 + t % 5)
            opt.step()


def assert_agree(a, b, opt_a, opt_b):
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, **TIGHT)
        sa, sb = opt_a.state[p], opt_b.state[q]
        assert sa["step"] == sb["step"]
        for name in STATES:
            if name in sa:
                assert torch.equal(sa[name], sb[name]), name  # bit for bit


shape = st.lists(st.integers(0, 37), min_size=0, max_size=3).map(tuple)


@settings(max_examples=25, deadline=None)
@given(shapes=st.lists(shape, min_size=1, max_size=5), amsgrad=st.booleans(),
       weight_decay=st.sampled_from([0.0, 0.1, 1.5]), betas=st.sampled_from([(0.9, 0.999), (0.3, 0.95)]),
       seed=st.integers(0, 2**16))
def test_fused_step_equals_the_foreach_step_over_20_steps(shapes, amsgrad, weight_decay, betas, seed):
    a, b, fused, plain = twins(shapes, seed, weight_decay=weight_decay, amsgrad=amsgrad, betas=betas,
                               eps=1e-6)
    lockstep([(a, fused), (b, plain)], steps=20, seed=seed)
    assert_agree(a, b, fused, plain)


def test_the_rust_pass_runs_by_default_on_cpu_float32(rust_calls):
    a, b, fused, plain = twins([(300, 7), (0,), (5,), ()], 0, weight_decay=0.1)
    lockstep([(a, fused), (b, plain)], steps=3)
    assert sum(rust_calls) == 3 * 4  # the default one; fused=False made no call
    assert a[0].sub(b[0]).abs().max() < 1e-6 and not torch.equal(a[0], torch.randn(300, 7))


def test_large_tensors_over_many_steps_stay_within_rounding():
    a, b, fused, plain = twins([(1000, 37), (4097,)], 3, weight_decay=0.1, betas=(0.9, 0.95))
    lockstep([(a, fused), (b, plain)], steps=40)
    assert_agree(a, b, fused, plain)


def test_unsupported_tensors_take_the_foreach_path_with_fused_none(rust_calls):
    def build(fused):
        gen = torch.Generator().manual_seed(0)
        params = [torch.randn(6, 5, generator=gen), torch.randn(7, generator=gen).bfloat16(),
                  torch.randn(5, 6, generator=gen).t(), torch.randn(9, generator=gen)]
        return params, AdamW(params, weight_decay=0.1, fused=fused)

    (a, fused), (b, plain) = build(None), build(False)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=gen).to(p.dtype) for p in a]
        grads[3] = torch.randn(2, 9, generator=gen)[1]  # contiguous, but at an offset
        grads[0] = torch.randn(5, 6, generator=gen).t()  # non-contiguous grad of a contiguous param
        for params in (a, b):
            for p, g in zip(params, grads):
                p.grad = g.clone() if g.is_contiguous() else g.clone().t().contiguous().t()
        fused.step()
        plain.step()
    assert rust_calls and max(rust_calls) == 1  # only param 3 went through Rust
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, **TIGHT)
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) and torch.equal(a[0], b[0])


def test_fused_true_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match="fused must be None, True or False"):
        AdamW([torch.zeros(2)], fused="yes")
    with pytest.raises(ValueError, match=r"param 0 of group 0: the param is torch.bfloat16"):
        AdamW([torch.zeros(2, dtype=torch.bfloat16)], fused=True)
    with pytest.raises(ValueError, match="the param is on meta, not the CPU"):
        AdamW([torch.zeros(2), torch.empty(3, device="meta")], fused=True)
    with pytest.raises(ValueError, match="param 1 of group 0: the param is not contiguous"):
        AdamW([torch.zeros(2), torch.zeros(3, 4).t()], fused=True)
    opt = AdamW([torch.zeros(2)], fused=True)
    with pytest.raises(ValueError, match="the param is torch.float64"):
        opt.add_param_group({"params": [torch.zeros(3, dtype=torch.float64)]})
    assert len(opt.param_groups) == 1
    # A grad that is not contiguous is only seen at the step: refused, nothing written.
    p = torch.ones(4, 3)
    opt = AdamW([p], fused=True)
    p.grad = torch.ones(3, 4).t()
    with pytest.raises(ValueError, match=r"AdamW\(fused=True\): the grad is not contiguous .*shape \(4, 3\)"):
        opt.step()
    assert torch.equal(p, torch.ones(4, 3))
    assert not opt.state[p]["exp_avg"].any()
    # A negated view (torch._neg_view) reads as its negation but holds the values before it.
    p = torch.ones(3)
    opt = AdamW([p], fused=True)
    p.grad = torch.ones(3)._neg_view()
    with pytest.raises(ValueError, match="the grad is a negated view"):
        opt.step()
    # A param whose data moved to another dtype after construction.
    q = torch.nn.Parameter(torch.ones(3))
    opt = AdamW([q], fused=True)
    q.data = q.data.double()
    q.grad = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="AdamW\\(fused=True\\): the param is torch.float64"):
        opt.step()


@pytest.mark.parametrize(("save_fused", "load_fused"), [(None, False), (False, None), (True, None)])
def test_state_dicts_load_across_fused_and_unfused(save_fused, load_fused):
    kwargs = dict(lr=3e-3, weight_decay=0.1, amsgrad=True)
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(s, generator=gen) for s in [(9, 4), (5,)]]
    first = AdamW(a, **kwargs, fused=save_fused)
    lockstep([(a, first)], steps=4)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    b = [p.clone() for p in a]
    second = AdamW(b, **kwargs, fused=load_fused)
    buf.seek(0)
    second.load_state_dict(torch.load(buf))
    assert second.fused is load_fused and first.fused is save_fused
    assert_agree(a, b, first, second)
    lockstep([(a, first), (b, second)], steps=6, seed=2)
    assert_agree(a, b, first, second)


def test_torch_adamw_state_dict_loads_into_the_fused_path():
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(6, 3, generator=gen)]
    b = [a[0].clone()]
    ref, ours = torch.optim.AdamW(a, weight_decay=0.1), AdamW(b, weight_decay=0.1, fused=True)
    lockstep([(a, ref)], steps=3)
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))  # not ref's own state tensors
    b[0].copy_(a[0])
    lockstep([(a, ref), (b, ours)], steps=5, seed=3)
    torch.testing.assert_close(a[0], b[0], **TIGHT)


def test_copies_and_pickles_keep_the_choice():
    opt = AdamW([torch.zeros(3)], fused=False)
    assert copy.deepcopy(opt).fused is False
    assert pickle.loads(pickle.dumps(opt)).fused is False


def test_the_step_counts_as_an_in_place_change_for_autograd():
    for fused in (None, False):
        w = torch.nn.Parameter(torch.ones(3))
        loss = (w * w).sum()  # saves w for backward
        w.grad = torch.ones(3)
        AdamW([w], fused=fused).step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_mlp_with_closure_trains_like_torch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    twin = copy.deepcopy(model)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    ours, ref = AdamW(model.parameters(), fused=True), torch.optim.AdamW(twin.parameters())

    def closure_for(m, opt):
        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            loss.backward()
            return loss
        return closure

    losses = [(ours.step(closure_for(model, ours)).item(), ref.step(closure_for(twin, ref)).item())
              for _ in range(300)]
    assert losses[-1][0] < losses[0][0]
    # The loss feeds each step's rounding back into the next: 300 steps drift a few ulps apart.
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def rust_args(n=4, **over):
    t = {name: torch.zeros(n) for name in ("p", "g", "m", "v")}
    t.update(over)
    return [t["p"]], [t["g"]], [t["m"]], [t["v"]]


SCALARS = (1.0, 0.1, 0.999, 0.001, 0.5, 1e-8, -1e-3)


@pytest.mark.parametrize(("over", "message"), [
    ({"m": torch.zeros(5)}, r"exp_avgs\[0\] has 5 elements but params\[0\] has 4"),
    ({"g": torch.zeros(4, dtype=torch.float64)}, r"grads\[0\] must be a contiguous CPU float32"),
    ({"v": torch.zeros(8)[::2]}, r"exp_avg_sqs\[0\] must be a contiguous"),
    ({"g": torch.zeros(4).expand(3, 4)[0]}, None),  # a contiguous row of an expanded tensor: fine
    ({"p": [0.0] * 4}, r"params\[0\] must be a contiguous CPU float32 torch.Tensor"),
    ({"g": torch.zeros(4)._neg_view()}, r"grads\[0\] must be .* \(not a negated view\)"),
])
def test_the_binding_checks_every_tensor_before_writing(over, message):
    args = rust_args(**over)
    args[0][0].add_(1.0) if isinstance(args[0][0], torch.Tensor) else None
    before = [t.clone() for t in (args[2][0], args[3][0])]
    if message is None:
        _core.adamw_step_f32(*args, None, SCALARS)
        return
    with pytest.raises(ValueError, match=message):
        _core.adamw_step_f32(*args, None, SCALARS)
    assert all(torch.equal(x, y) for x, y in zip(before, (args[2][0], args[3][0])))


def test_the_binding_refuses_shared_memory_and_ragged_lists():
    base = torch.zeros(8)
    p, m = base[:4], base[2:6]  # overlapping views
    with pytest.raises(ValueError, match=r"the tensors of params\[0\] share memory"):
        _core.adamw_step_f32([p], [torch.zeros(4)], [m], [torch.zeros(4)], None, SCALARS)
    p = torch.zeros(4)
    with pytest.raises(ValueError, match="share memory"):
        _core.adamw_step_f32([p], [p], [torch.zeros(4)], [torch.zeros(4)], None, SCALARS)
    with pytest.raises(ValueError, match="grads has 0 tensors but params has 1"):
        _core.adamw_step_f32([p], [], [torch.zeros(4)], [torch.zeros(4)], None, SCALARS)
    with pytest.raises(ValueError, match="max_exp_avg_sqs has 2 tensors"):
        _core.adamw_step_f32([p], [torch.zeros(4)], [torch.zeros(4)], [torch.zeros(4)],
                             [torch.zeros(4)] * 2, SCALARS)
    # Two empty tensors at one address do not overlap.
    e = torch.zeros(0)
    _core.adamw_step_f32([e], [e], [e], [e], None, SCALARS)
