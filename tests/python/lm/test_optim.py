"""fastbpe.lm.optim against torch.optim: same numbers, defaults, errors and state dicts."""

import copy
import io
import math

import pytest

torch = pytest.importorskip("torch")

from fastbpe.lm.optim import SGD, AdaGrad, Adam, AdamW, RMSProp, cosine_lr  # noqa: E402

PAIRS = {
    "SGD": (SGD, torch.optim.SGD),
    "AdaGrad": (AdaGrad, torch.optim.Adagrad),
    "RMSProp": (RMSProp, torch.optim.RMSprop),
    "Adam": (Adam, torch.optim.Adam),
    "AdamW": (AdamW, torch.optim.AdamW),
}

CONFIGS = [
    ("SGD", {}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("AdaGrad", {}),
    ("AdaGrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.01,
                 "initial_accumulator_value": 0.1, "eps": 1e-8}),
    ("RMSProp", {}),
    ("RMSProp", {"momentum": 0.9, "weight_decay": 0.01}),
    ("RMSProp", {"centered": True}),
    ("RMSProp", {"centered": True, "momentum": 0.5, "alpha": 0.9, "eps": 1e-6}),
    ("Adam", {}),
    ("Adam", {"weight_decay": 0.01}),
    ("Adam", {"amsgrad": True}),
    ("Adam", {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1,
              "amsgrad": True}),
    ("AdamW", {}),
    ("AdamW", {"weight_decay": 0.1}),
    ("AdamW", {"lr": 3e-3, "betas": (0.85, 0.95), "weight_decay": 0.1, "amsgrad": True}),
]
CONFIG_IDS = [f"{name}-{kw}" for name, kw in CONFIGS]

SHAPES = [(17, 9), (9,), (33,), (4, 4, 3), (), (5, 7)]
TIGHT = {"rtol": 1e-6, "atol": 1e-7}


def make_params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) for s in SHAPES]


def two_groups(params, lr_scale=0.5):
    """Two param groups; the caller scales the second group's lr after construction."""
    return [{"params": params[:3]}, {"params": params[3:]}]


def build(cls, params, kwargs, **extra):
    opt = cls(two_groups(params), **kwargs, **extra)
    opt.param_groups[1]["lr"] *= 0.5  # groups with different lrs
    return opt


def feed_grads(step, gen, *param_lists):
    """The same random grads to every list; param 2 has no grad every third step (skipped, so
    its step count falls behind the others')."""
    for i, shape in enumerate(SHAPES):
        g = None if (i == 2 and step % 3 == 0) else torch.randn(shape, generator=gen)
        for params in param_lists:
            params[i].grad = None if g is None else g.clone()


def run_lockstep(opts_and_params, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        feed_grads(t, gen, *(p for _, p in opts_and_params))
        for opt, _ in opts_and_params:
            opt.step()


@pytest.mark.parametrize("foreach", [False, True], ids=["torch-for-loop", "torch-foreach"])
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_matches_torch_over_300_steps(name, kwargs, foreach):
    ours_cls, torch_cls = PAIRS[name]
    ours_p, torch_p = make_params(), make_params()
    ours = build(ours_cls, ours_p, kwargs)
    ref = build(torch_cls, torch_p, kwargs, foreach=foreach)
    run_lockstep([(ours, ours_p), (ref, torch_p)], steps=300)
    for a, b in zip(ours_p, torch_p):
        torch.testing.assert_close(a, b, **TIGHT)
    assert ours_p[0].sub(make_params()[0]).abs().max() > 1e-4  # it did move
    # The step counts agree too (ours are ints, torch's 0-d tensors).
    for a, b in zip(ours_p, torch_p):
        if "step" in ref.state[b]:
            assert ours.state[a]["step"] == int(ref.state[b]["step"])


@pytest.mark.parametrize("chunk_numel", [1, 40], ids=["one-tensor-each", "runs-of-small-tensors"])
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_one_tensor_at_a_time_is_bit_identical_to_all_at_once(name, kwargs, chunk_numel):
    # CPU updates a tensor (or a run of small ones) at a time; a subclass with no such device
    # takes the foreach lists whole.
    ours_cls = PAIRS[name][0]
    assert "cpu" in ours_cls.single_tensor_devices
    one_cls = type(name, (ours_cls,), {"chunk_numel": chunk_numel})
    whole_cls = type(name, (ours_cls,), {"single_tensor_devices": frozenset()})
    one_p, whole_p = make_params(), make_params()
    one, whole = build(one_cls, one_p, kwargs), build(whole_cls, whole_p, kwargs)
    run_lockstep([(one, one_p), (whole, whole_p)], steps=300)
    for a, b in zip(one_p, whole_p):
        assert torch.equal(a, b)
    for a, b in zip(one_p, whole_p):
        for key, value in one.state[a].items():
            other = whole.state[b][key]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other


def test_cpu_updates_one_tensor_at_a_time_and_other_devices_all_at_once(monkeypatch):
    sizes = []
    real_update = AdamW._update

    def spy(self, group, step, fresh, params, grads, states):
        sizes.append(len(params))
        return real_update(self, group, step, fresh, params, grads, states)

    monkeypatch.setattr(AdamW, "_update", spy)
    monkeypatch.setattr(AdamW, "chunk_numel", 1)
    params = make_params()
    opt = build(AdamW, params, {})
    feed_grads(1, torch.Generator().manual_seed(0), params)
    opt.step()
    assert sizes and set(sizes) == {1}
    sizes.clear()
    # Runs of about chunk_numel elements: SHAPES hold 153, 9, 33, 48, 1 and 35 elements, in two
    # groups ([153, 9, 33] and [48, 1, 35]).
    monkeypatch.setattr(AdamW, "chunk_numel", 40)
    opt.step()
    assert sizes == [1, 2, 1, 2]
    sizes.clear()
    monkeypatch.setattr(AdamW, "single_tensor_devices", frozenset({"cuda"}))
    opt.step()
    assert max(sizes) > 1


@pytest.mark.parametrize("name", PAIRS)
def test_mlp_with_closure_matches_torch(name):
    ours_cls, torch_cls = PAIRS[name]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    twin = copy.deepcopy(model)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    lr = 1e-2 if name == "SGD" else 1e-3  # SGD's default 1e-3 barely moves

    def closure_for(m, opt):
        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            loss.backward()
            return loss
        return closure

    # AdamW's default Rust pass on CPU rounds sqrt exactly where torch's (MKL) is off by an ulp
    # now and then, and the closure feeds that back: its foreach ops (fused=False) are the ones
    # that match torch's to TIGHT here (test_optim_fused.py checks the Rust pass).
    unfused = {"fused": False} if name == "AdamW" else {}
    ours, ref = ours_cls(model.parameters(), lr=lr, **unfused), torch_cls(twin.parameters(), lr=lr)
    first = None
    for _ in range(300):
        loss_a = ours.step(closure_for(model, ours))
        loss_b = ref.step(closure_for(twin, ref))
        torch.testing.assert_close(loss_a, loss_b, **TIGHT)
        first = first if first is not None else loss_a.item()
    assert loss_a.item() < first  # it trained
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("name", PAIRS)
def test_defaults_equal_torch(name):
    ours_cls, torch_cls = PAIRS[name]
    p = torch.zeros(3, requires_grad=True)
    ours, theirs = ours_cls([p]).defaults, torch_cls([p]).defaults
    assert set(ours) <= set(theirs)
    assert ours == {k: theirs[k] for k in ours}


INVALID = [
    ("SGD", {"lr": -1}, "Invalid learning rate: -1"),
    ("SGD", {"momentum": -0.5}, "Invalid momentum value: -0.5"),
    ("SGD", {"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    ("SGD", {"nesterov": True}, "Nesterov momentum requires a momentum and zero dampening"),
    ("SGD", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "Nesterov momentum requires"),
    ("AdaGrad", {"lr": -1}, "Invalid learning rate: -1"),
    ("AdaGrad", {"lr_decay": -1}, "Invalid lr_decay value: -1"),
    ("AdaGrad", {"weight_decay": -1}, "Invalid weight_decay value: -1"),
    ("AdaGrad", {"initial_accumulator_value": -1},
     "Invalid initial_accumulator_value value: -1"),
    ("AdaGrad", {"eps": -1}, "Invalid epsilon value: -1"),
    ("RMSProp", {"lr": -1}, "Invalid learning rate: -1"),
    ("RMSProp", {"eps": -1}, "Invalid epsilon value: -1"),
    ("RMSProp", {"momentum": -1}, "Invalid momentum value: -1"),
    ("RMSProp", {"weight_decay": -1}, "Invalid weight_decay value: -1"),
    ("RMSProp", {"alpha": -1}, "Invalid alpha value: -1"),
]
for _adam in ("Adam", "AdamW"):
    INVALID += [
        (_adam, {"lr": -1}, "Invalid learning rate: -1"),
        (_adam, {"eps": -1}, "Invalid epsilon value: -1"),
        (_adam, {"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
        (_adam, {"betas": (-0.1, 0.999)}, "Invalid beta parameter at index 0: -0.1"),
        (_adam, {"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
        (_adam, {"weight_decay": -1}, "Invalid weight_decay value: -1"),
    ]


@pytest.mark.parametrize(("name", "kwargs", "message"), INVALID,
                         ids=[f"{n}-{kw}" for n, kw, _ in INVALID])
def test_invalid_hyperparameters_raise_like_torch(name, kwargs, message):
    ours_cls, torch_cls = PAIRS[name]
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=message) as ours:
        ours_cls([p], **kwargs)
    with pytest.raises(ValueError) as theirs:
        torch_cls([p], **kwargs)
    assert str(ours.value) == str(theirs.value)


def test_nan_learning_rate_is_rejected():
    with pytest.raises(ValueError, match="Invalid learning rate: nan"):
        AdamW([torch.zeros(1)], lr=float("nan"))


def save_load(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_state_dict_round_trip_then_continue(name, kwargs):
    cls = PAIRS[name][0]
    straight_p, resumed_p = make_params(), make_params()
    straight = build(cls, straight_p, kwargs)
    first = build(cls, resumed_p, kwargs)
    gen = torch.Generator().manual_seed(1)
    for t in range(120):
        feed_grads(t, gen, straight_p, resumed_p)
        straight.step()
        first.step()
    saved = save_load(first.state_dict())
    # A fresh optimizer (built with the constructor's lrs; the saved groups bring theirs back)
    # over fresh copies of the params.
    resumed_p = [p.detach().clone() for p in resumed_p]
    resumed = cls(two_groups(resumed_p), **kwargs)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[1]["lr"] == straight.param_groups[1]["lr"]
    for t in range(120, 300):
        feed_grads(t, gen, straight_p, resumed_p)
        straight.step()
        resumed.step()
    for a, b in zip(straight_p, resumed_p):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["SGD", "AdaGrad", "RMSProp", "Adam", "AdamW"])
def test_state_dicts_interchange_with_torch(name):
    ours_cls, torch_cls = PAIRS[name]
    kwargs = {"momentum": 0.9} if name in ("SGD", "RMSProp") else {}
    ref_p, ours_p, back_p = make_params(), make_params(), make_params()
    ref = build(torch_cls, ref_p, kwargs)
    donor = build(torch_cls, ours_p, kwargs)  # torch trains first, ours takes over
    ours_donor = build(ours_cls, back_p, kwargs)  # ours trains first, torch takes over
    gen = torch.Generator().manual_seed(1)
    for t in range(60):
        feed_grads(t, gen, ref_p, ours_p, back_p)
        ref.step()
        donor.step()
        ours_donor.step()
    ours = ours_cls(two_groups(ours_p), **kwargs)
    ours.load_state_dict(save_load(donor.state_dict()))
    back = torch_cls(two_groups(back_p), **kwargs)
    back.load_state_dict(save_load(ours_donor.state_dict()))
    for t in range(60, 200):
        feed_grads(t, gen, ref_p, ours_p, back_p)
        ref.step()
        ours.step()
        back.step()
    for a, b, c in zip(ref_p, ours_p, back_p):
        torch.testing.assert_close(b, a, **TIGHT)
        torch.testing.assert_close(c, a, **TIGHT)
    assert all(isinstance(s["step"], int) for s in ours.state.values() if "step" in s)


@pytest.mark.parametrize("name", PAIRS)
def test_params_without_grad_are_skipped(name):
    cls = PAIRS[name][0]
    a, b = torch.ones(3), torch.ones(3)
    opt = cls([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b, torch.ones(3)) and not opt.state.get(b)
    assert not torch.equal(a, torch.ones(3))


@pytest.mark.parametrize("name", PAIRS)
def test_sparse_gradients_raise(name):
    p = torch.zeros(4)
    p.grad = torch.zeros(4).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        PAIRS[name][0]([p]).step()


def test_complex_params_are_refused():
    with pytest.raises(ValueError, match="complex"):
        AdamW([torch.zeros(2, dtype=torch.complex64)])


def test_mixed_dtypes_in_one_group():
    params64 = [torch.randn(5, dtype=torch.float64), torch.randn(3)]
    ref_p = [p.clone() for p in params64]
    ours, ref = AdamW(params64, lr=0.01), torch.optim.AdamW(ref_p, lr=0.01)
    for _ in range(10):
        for p, q in zip(params64, ref_p):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        ours.step()
        ref.step()
    for a, b in zip(params64, ref_p):
        torch.testing.assert_close(a, b, **TIGHT)


# ------------------------------------------------------------------------------- cosine_lr

# CS336 assignment 1, test_get_lr_cosine_schedule: max 1, min 0.1, warmup 7, cycle 21.
CS336_EXPECTED = [
    0, 0.14285714285714285, 0.2857142857142857, 0.42857142857142855, 0.5714285714285714,
    0.7142857142857143, 0.8571428571428571, 1.0, 0.9887175604818206, 0.9554359905560885,
    0.9018241671106134, 0.8305704108364301, 0.7452476826029011, 0.6501344202803414, 0.55,
    0.44986557971965857, 0.3547523173970989, 0.26942958916356996, 0.19817583288938662,
    0.14456400944391146, 0.11128243951817937, 0.1, 0.1, 0.1, 0.1,
]


def test_cosine_lr_matches_cs336():
    actual = [cosine_lr(it, 1, 0.1, 7, 21) for it in range(25)]
    assert actual == pytest.approx(CS336_EXPECTED, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("it", "expected"), [
    (0, 0.0),  # warm-up starts from zero
    (50, 3e-4),  # half-way through warm-up: half of max
    (100, 6e-4),  # warm-up end: max
    (550, 3.3e-4),  # half-way through the cycle: (max + min) / 2
    (325, 6e-5 + 0.5 * (1 + math.cos(math.pi / 4)) * 5.4e-4),  # a quarter of the way
    (1000, 6e-5),  # cycle end: min
    (1001, 6e-5),  # after: min
    (10**9, 6e-5),
])
def test_cosine_lr_key_points(it, expected):
    assert cosine_lr(it, 6e-4, 6e-5, 100, 1000) == pytest.approx(expected, rel=1e-12)


def test_cosine_lr_edge_cases():
    assert cosine_lr(0, 1.0, 0.1, 0, 10) == 1.0  # no warm-up: start at max
    assert cosine_lr(5, 1.0, 0.1, 0, 10) == pytest.approx(0.55)
    assert cosine_lr(5, 1.0, 0.1, 5, 5) == 1.0  # warm-up straight into the floor
    assert cosine_lr(6, 1.0, 0.1, 5, 5) == 0.1
    assert cosine_lr(3, 1.0, 1.0, 2, 10) == 1.0  # constant after warm-up


@pytest.mark.parametrize("args", [
    (-1, 1.0, 0.1, 10, 100),  # negative iteration
    (0, 1.0, -0.1, 10, 100),  # negative min
    (0, 0.1, 1.0, 10, 100),  # min above max
    (0, 1.0, 0.1, -1, 100),  # negative warm-up
    (0, 1.0, 0.1, 100, 10),  # cycle ends before warm-up does
])
def test_cosine_lr_invalid_arguments(args):
    with pytest.raises(ValueError):
        cosine_lr(*args)
