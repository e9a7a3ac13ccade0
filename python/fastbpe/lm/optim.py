"""Optimizers for the language model (SGD, AdaGrad, RMSProp, Adam, AdamW) and a cosine LR schedule.

Each optimizer reproduces its ``torch.optim`` namesake: the same defaults, the same hyperparameter
checks and the same arithmetic in the same order, so the two agree to float rounding over long
runs. The update is written with ``torch._foreach_*`` ops over lists of tensors: on CUDA the
lists hold all of a param group's tensors (a few fused kernel launches per op); on CPU, where that
is slower, one large tensor or a run of small ones (see ``_ForeachOptimizer``). AdamW on CPU
float32 runs those ops' arithmetic in one Rust pass instead (``AdamW(fused=...)``).

Conventions, and where they differ from torch.optim:

* Params of a group are bucketed by (device, dtype, step), because a foreach op wants one device
  and dtype per list, and a shared step turns Adam's bias corrections into plain scalars.
* ``state["step"]`` is a Python int, not a 0-d tensor (cheap to bump, usable as a bucket key).
  State dicts stay interchangeable: torch.optim turns int steps into tensors on load, and ours
  turns tensor steps into ints (see ``__setstate__``).
* Hyperparameters are Python numbers (no tensor ``lr``); there are no ``maximize``, ``foreach``,
  ``capturable`` or ``differentiable`` options, and ``fused`` only on AdamW (an attribute, not a
  param-group entry); complex params and sparse grads are refused.
* ``p.grad`` is never modified (torch's foreach SGD with nesterov writes into it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.graph import increment_version
from torch.optim import Optimizer

from fastbpe import _core

__all__ = ["SGD", "AdaGrad", "RMSProp", "Adam", "AdamW", "cosine_lr"]

_LABELS = {"lr": "learning rate", "eps": "epsilon value"}


def _check_nonnegative(**values: float) -> None:
    """Raise torch.optim's ValueError for a negative (or NaN) hyperparameter."""
    for name, value in values.items():
        if not 0.0 <= value:  # written so that NaN fails too
            raise ValueError(f"Invalid {_LABELS.get(name, name + ' value')}: {value}")


class _ForeachOptimizer(Optimizer):
    """The plumbing shared by all five: closure, lazy state, bucketing, state-dict compatibility.

    On the device types in ``single_tensor_devices`` a bucket is updated one tensor at a time
    (every op on a tensor before the next tensor; tensors smaller than ``chunk_numel`` elements
    are gathered into runs of about that size, so that many small ones cost few Python calls);
    elsewhere all at once. Both run the same ops on
    each tensor, so the numbers are bit for bit the same; only the speed differs. On CPU a foreach
    op is a C++ loop of the single-tensor op anyway, and a whole bucket's temporaries (Adam's
    denominators: one float per parameter) cost more than one tensor's: torch's own for-loop AdamW
    beats its foreach one there (benches/optim_bench.py), and so does ours one tensor at a time.
    On CUDA, foreach ops launch a few kernels for many tensors, so all at once is faster.

    A subclass names the state tensors it keeps (``_state_names``), creates them
    (``_init_state``) and updates one bucket of tensors (``_update``).
    """

    single_tensor_devices: frozenset[str] = frozenset({"cpu"})
    chunk_numel: int = 1 << 16

    def _state_names(self, group: dict) -> tuple[str, ...]:
        raise NotImplementedError

    def _init_state(self, group: dict, p: Tensor, state: dict) -> None:
        raise NotImplementedError

    def _update(self, group: dict, step: int | None, fresh: bool, params: list[Tensor],
                grads: list[Tensor], states: dict[str, list[Tensor]]) -> None:
        raise NotImplementedError

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        # Refuse complex params up front: the squared-gradient math below assumes real numbers.
        if any(torch.is_complex(p) for p in self.param_groups[-1]["params"]):
            self.param_groups.pop()
            raise ValueError(f"{type(self).__name__} does not support complex parameters")

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # load_state_dict ends here too
        for s in self.state.values():  # a torch.optim state dict keeps steps as 0-d tensors
            if isinstance(s.get("step"), Tensor):
                s["step"] = int(s["step"].item())

    def _buckets(self, group: dict) -> dict:
        """Collect the params that have a grad (initialising their state on first sight and
        bumping their step) into lists keyed by (device, dtype, step, fresh)."""
        names = self._state_names(group)
        buckets: dict = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[p]
            fresh = not state
            if fresh:
                self._init_state(group, p, state)
            if "step" in state:
                state["step"] += 1
            key = (p.device, p.dtype, state.get("step"), fresh)
            if key not in buckets:
                buckets[key] = ([], [], {name: [] for name in names})
            params, grads, states = buckets[key]
            params.append(p)
            grads.append(p.grad)
            for name in names:
                states[name].append(state[name])
        return buckets

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimization step; ``closure`` (optional) re-evaluates the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for (device, _, step, fresh), (params, grads, states) in self._buckets(group).items():
                for lo, hi in self._chunks(device, params):
                    self._update(group, step, fresh, params[lo:hi], grads[lo:hi],
                                 {name: values[lo:hi] for name, values in states.items()})
        return loss

    def _chunks(self, device: torch.device, params: list[Tensor]) -> list[tuple[int, int]]:
        """(start, end) index ranges of `params` to update together: all of them, or on the
        devices in ``single_tensor_devices`` runs of consecutive tensors of about
        ``chunk_numel`` elements (a large tensor alone, small ones together)."""
        if device.type not in self.single_tensor_devices:
            return [(0, len(params))]
        chunks, lo, size = [], 0, 0
        for i, p in enumerate(params):
            size += p.numel()
            if size >= self.chunk_numel:
                chunks.append((lo, i + 1))
                lo, size = i + 1, 0
        if lo < len(params):
            chunks.append((lo, len(params)))
        return chunks


class SGD(_ForeachOptimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, like ``torch.optim.SGD``."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        _check_nonnegative(lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _state_names(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _init_state(self, group, p, state):
        if group["momentum"] != 0:
            state["momentum_buffer"] = torch.empty_like(p)  # filled with the first gradient

    def _update(self, group, step, fresh, params, grads, states):
        momentum, dampening = group["momentum"], group["dampening"]
        if group["weight_decay"] != 0:  # coupled L2: out of place, p.grad stays as autograd left it
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        if momentum != 0:
            bufs = states["momentum_buffer"]
            if fresh:  # as in torch, the buffer starts as the undampened gradient
                torch._foreach_copy_(bufs, grads)
            else:
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads, alpha=1 - dampening)
            if group["nesterov"]:
                grads = torch._foreach_add(grads, bufs, alpha=momentum)
            else:
                grads = bufs
        torch._foreach_add_(params, grads, alpha=-group["lr"])


class AdaGrad(_ForeachOptimizer):
    """AdaGrad with optional learning-rate decay, like ``torch.optim.Adagrad``."""

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10) -> None:
        _check_nonnegative(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                           initial_accumulator_value=initial_accumulator_value, eps=eps)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value))

    def _state_names(self, group):
        return ("sum",)

    def _init_state(self, group, p, state):
        # torch fills the sums eagerly in __init__ from the optimizer-wide default; lazily from the
        # group's value gives the same numbers and honours a per-group override.
        state["step"] = 0
        state["sum"] = torch.full_like(p, group["initial_accumulator_value"])

    def _update(self, group, step, fresh, params, grads, states):
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        if group["weight_decay"] != 0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        torch._foreach_addcmul_(states["sum"], grads, grads, value=1)
        std = torch._foreach_sqrt(states["sum"])
        torch._foreach_add_(std, group["eps"])
        torch._foreach_addcdiv_(params, grads, std, value=-clr)


class RMSProp(_ForeachOptimizer):
    """RMSProp, optionally centered and with momentum, like ``torch.optim.RMSprop``."""

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False) -> None:
        _check_nonnegative(lr=lr, eps=eps, momentum=momentum, weight_decay=weight_decay,
                           alpha=alpha)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _state_names(self, group):
        return (("square_avg",) + ("momentum_buffer",) * (group["momentum"] > 0)
                + ("grad_avg",) * bool(group["centered"]))

    def _init_state(self, group, p, state):
        state["step"] = 0  # unused by the math; kept because torch.optim's state has it
        for name in self._state_names(group):
            state[name] = torch.zeros_like(p)

    def _update(self, group, step, fresh, params, grads, states):
        alpha, eps, lr = group["alpha"], group["eps"], group["lr"]
        if group["weight_decay"] != 0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        square_avgs = states["square_avg"]
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
        if group["centered"]:  # divide by the std of the gradient rather than its RMS
            grad_avgs = states["grad_avg"]
            torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
            avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, eps)
        if group["momentum"] > 0:
            bufs = states["momentum_buffer"]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_addcdiv_(bufs, grads, avg)
            torch._foreach_add_(params, bufs, alpha=-lr)
        else:
            torch._foreach_addcdiv_(params, grads, avg, value=-lr)


class Adam(_ForeachOptimizer):
    """Adam with L2 weight decay added to the gradient (coupled), like ``torch.optim.Adam``."""

    decoupled_weight_decay = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False) -> None:
        _check_nonnegative(lr=lr, eps=eps)
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        _check_nonnegative(weight_decay=weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad))

    def _state_names(self, group):
        return ("exp_avg", "exp_avg_sq") + ("max_exp_avg_sq",) * bool(group["amsgrad"])

    def _init_state(self, group, p, state):
        state["step"] = 0
        for name in self._state_names(group):
            state[name] = torch.zeros_like(p)

    def _update(self, group, step, fresh, params, grads, states):
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        if wd != 0:
            if self.decoupled_weight_decay:  # AdamW: shrink the weights, leave the moments alone
                torch._foreach_mul_(params, 1 - lr * wd)
            else:  # Adam: L2 through the gradient, so the moments see it
                grads = torch._foreach_add(grads, params, alpha=wd)
        exp_avgs, exp_avg_sqs = states["exp_avg"], states["exp_avg_sq"]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m = b1*m + (1-b1)*g
        torch._foreach_mul_(exp_avg_sqs, beta2)  # v = b2*v + (1-b2)*g*g
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        if group["amsgrad"]:  # normalise by the largest v seen so far
            torch._foreach_maximum_(states["max_exp_avg_sq"], exp_avg_sqs)
            exp_avg_sqs = states["max_exp_avg_sq"]
        # p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps): the bias corrections are scalars
        # because every tensor of this bucket is at the same step.
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, math.sqrt(1 - beta2**step))
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, exp_avgs, denom, value=-lr / (1 - beta1**step))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), like ``torch.optim.AdamW``.

    ``fused`` picks how CPU float32 tensors are updated. ``None`` (the default): one pass per
    element in Rust (``fastbpe._core.adamw_step_f32``, rust/optim.rs) for every param whose
    param, grad and states are contiguous CPU float32 tensors, the ``_foreach_*`` ops of
    ``Adam`` for the rest (CUDA, bf16, non-contiguous). The Rust pass does the foreach ops'
    arithmetic in their order and rounding, about 4x faster: the moments are bit for bit the
    same, the params equal to float rounding (torch's CPU sqrt is an ulp off now and then, the
    Rust one exact, as in torch's own fused AdamW). ``True``: the Rust pass or a ValueError saying which tensor it cannot take.
    ``False``: the foreach ops everywhere. It is not saved in the state dict, so checkpoints
    load into either."""

    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 fused: bool | None = None) -> None:
        if fused not in (None, True, False):
            raise ValueError(f"fused must be None, True or False, got {fused!r}")
        self.fused = fused  # before super().__init__, which calls add_param_group
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "fused": self.fused}

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        if self.fused:
            for i, p in enumerate(self.param_groups[-1]["params"]):
                if _fused_refusal(p, "param") is not None:
                    self.param_groups.pop()
                    raise ValueError(f"AdamW(fused=True): param {i} of group "
                                     f"{len(self.param_groups)}: {_fused_refusal(p, 'param')}")

    def _update(self, group, step, fresh, params, grads, states):
        if self.fused is False or not params:
            return super()._update(group, step, fresh, params, grads, states)
        if params[0].device.type != "cpu" or params[0].dtype != torch.float32:  # bucket-wide
            if self.fused:
                raise ValueError(f"AdamW(fused=True): {_fused_refusal(params[0], 'param')}")
            return super()._update(group, step, fresh, params, grads, states)
        names = self._state_names(group)
        columns = [params, grads, *(states[name] for name in names)]
        try:
            self._fused_update(group, step, *columns)
            return
        except ValueError:  # some tensor it cannot take; nothing was written
            pass
        take = []
        for i, tensors in enumerate(zip(*columns)):
            reason = next(filter(None, map(_fused_refusal, tensors, ("param", "grad") + names)), None)
            if reason is not None and self.fused:
                raise ValueError(f"AdamW(fused=True): {reason} (param of shape "
                                 f"{tuple(params[i].shape)}); use fused=None to update such "
                                 "params with the unfused ops") from None
            take.append(reason is None)
        self._fused_update(group, step, *([t for t, ok in zip(col, take) if ok] for col in columns))
        rest = [i for i, ok in enumerate(take) if not ok]
        super()._update(group, step, fresh, [params[i] for i in rest], [grads[i] for i in rest],
                        {name: [states[name][i] for i in rest] for name in names})

    def _fused_update(self, group, step, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None):
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        # The scalars of Adam._update, computed the same way in Python floats.
        scalars = (1 - lr * wd if wd != 0 else 1.0, 1 - beta1, beta2, 1 - beta2,
                   math.sqrt(1 - beta2**step), group["eps"], -lr / (1 - beta1**step))
        _core.adamw_step_f32(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, scalars)
        # Written behind autograd's back: bump the version counters as an in-place op would, so
        # a backward through a graph that saved the old values raises instead of using new ones.
        increment_version(params)
        increment_version(exp_avgs + exp_avg_sqs + (max_exp_avg_sqs or []))


def _fused_refusal(t: Tensor, what: str) -> str | None:
    """Why the Rust AdamW pass cannot take tensor `t` (the param's `what`), or None."""
    if t.device.type != "cpu":
        return f"the {what} is on {t.device}, not the CPU"
    if t.dtype != torch.float32:
        return f"the {what} is {t.dtype}, not torch.float32"
    if t.layout != torch.strided or not t.is_contiguous():
        return f"the {what} is not contiguous"
    if t.is_neg():  # its memory holds the values before the negation
        return f"the {what} is a negated view"
    return None


def cosine_lr(it: int, max_lr: float, min_lr: float, warmup_iters: int,
              cosine_cycle_iters: int) -> float:
    """Learning rate at iteration ``it``: linear warm-up from 0 to ``max_lr`` over ``warmup_iters``,
    cosine decay to ``min_lr`` at ``cosine_cycle_iters``, then ``min_lr`` (CS336's
    ``get_lr_cosine_schedule``). Set it each step with ``group["lr"] = cosine_lr(...)``."""
    if it < 0:
        raise ValueError(f"Invalid iteration: {it}")
    if not 0.0 <= min_lr <= max_lr:
        raise ValueError(f"Need 0 <= min_lr <= max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if not 0 <= warmup_iters <= cosine_cycle_iters:
        raise ValueError("Need 0 <= warmup_iters <= cosine_cycle_iters, got "
                         f"warmup_iters={warmup_iters}, cosine_cycle_iters={cosine_cycle_iters}")
    if it < warmup_iters:
        return it / warmup_iters * max_lr
    if it > cosine_cycle_iters:
        return min_lr
    span = cosine_cycle_iters - warmup_iters
    progress = (it - warmup_iters) / span if span else 0.0  # span 0: a single max_lr step
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)
