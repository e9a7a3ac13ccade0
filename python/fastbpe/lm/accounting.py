"""Resource accounting: the napkin math of CS336 lecture 2 ("PyTorch, resource accounting").

Everything here answers "how many bytes?" or "how many FLOPs?" before anything is run:

* float formats: how many bits go to range (exponent) and to precision (mantissa);
* memory: parameters, gradients, optimizer state and activations of a training step;
* compute: FLOPs of matmuls, of a Transformer forward pass, of a whole training run (6ND),
  and model FLOPs utilization (MFU);
* `napkin`: the lecture's two motivating questions (how long does a 70B / 15T-token run take on
  1024 H100s; how large a model fits in 8 x 80 GB with AdamW), with a CLI `fastbpe napkin`.

Conventions: a FLOP is one floating-point add or multiply (a multiply-add is 2 FLOPs);
GB means 10**9 bytes, as on accelerator spec sheets and in the lecture (80e9 for an 80 GB H100).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

# --------------------------------------------------------------------------------------------
# Float formats
# --------------------------------------------------------------------------------------------

#: The formats the lecture walks through, widest first.
FLOAT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class FloatFormat:
    """Layout and range of one floating-point dtype (1 sign bit + exponent + mantissa bits)."""

    name: str
    dtype: torch.dtype
    bits: int
    exponent_bits: int
    mantissa_bits: int
    max: float  # largest finite value
    smallest_normal: float  # below this, values lose precision (subnormals) and then flush to 0
    eps: float  # gap between 1.0 and the next representable value = 2**-mantissa_bits


def float_format(dtype: torch.dtype) -> FloatFormat:
    """Describe `dtype` from `torch.finfo`.

    finfo exposes bits, eps, max and smallest_normal but not the field widths, so they are
    derived: the spacing just above 1.0 is eps = 2**-mantissa_bits, and whatever is left after the
    sign bit and the mantissa is exponent.
    """
    fi = torch.finfo(dtype)
    mantissa = round(-math.log2(fi.eps))
    name = str(dtype).removeprefix("torch.")
    return FloatFormat(
        name=name,
        dtype=dtype,
        bits=fi.bits,
        exponent_bits=fi.bits - 1 - mantissa,
        mantissa_bits=mantissa,
        max=float(fi.max),
        smallest_normal=float(fi.smallest_normal),
        eps=float(fi.eps),
    )


def float_formats() -> dict[str, FloatFormat]:
    """float32, float16, bfloat16, float8_e4m3fn and float8_e5m2, keyed by name."""
    return {name: float_format(dtype) for name, dtype in FLOAT_DTYPES.items()}


@dataclass(frozen=True)
class UnderflowDemo:
    """One small number stored in three formats, read back as Python floats."""

    value: float
    float32: float
    float16: float
    bfloat16: float


def underflow_demo(value: float = 1e-8) -> UnderflowDemo:
    """Store `value` (default 1e-8) as float32, float16 and bfloat16.

    float16 has only 5 exponent bits: its smallest subnormal is 2**-24 ~ 6e-8, so 1e-8 rounds to
    0 -- small gradients silently vanish, which is why fp16 training needs loss scaling.
    bfloat16 keeps float32's 8 exponent bits (same range) and gives up mantissa bits instead, so
    1e-8 survives, just coarsely rounded.
    """

    def roundtrip(dtype: torch.dtype) -> float:
        return torch.tensor(value, dtype=dtype).item()

    return UnderflowDemo(value, roundtrip(torch.float32), roundtrip(torch.float16), roundtrip(torch.bfloat16))


def dtype_bytes(dtype: torch.dtype) -> int:
    """Bytes per element of `dtype` (4 for float32, 2 for bfloat16, 1 for float8)."""
    return dtype.itemsize


# --------------------------------------------------------------------------------------------
# Memory: parameters, gradients, optimizer state
# --------------------------------------------------------------------------------------------

#: Per-parameter state tensors each optimizer keeps between steps.
OPTIMIZER_STATE_BUFFERS: dict[str, int] = {
    "sgd": 0,  # the update uses only the gradient
    "sgd_momentum": 1,  # velocity
    "adagrad": 1,  # running sum of squared gradients
    "rmsprop": 1,  # running average of squared gradients
    "adam": 2,  # first and second moments
    "adamw": 2,  # same state as Adam; weight decay is applied to the parameters directly
}


def _state_buffers(optimizer: str) -> int:
    key = optimizer.lower().replace("-", "_")
    if key not in OPTIMIZER_STATE_BUFFERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZER_STATE_BUFFERS)}")
    return OPTIMIZER_STATE_BUFFERS[key]


def param_count(model: nn.Module) -> int:
    """Number of scalar parameters of `model` (shared tensors counted once, as in .parameters())."""
    return sum(p.numel() for p in model.parameters())


def parameter_bytes(num_params: int, dtype: torch.dtype = torch.float32) -> int:
    return num_params * dtype_bytes(dtype)


def gradient_bytes(num_params: int, dtype: torch.dtype = torch.float32) -> int:
    """One gradient per parameter, usually in the parameters' dtype."""
    return num_params * dtype_bytes(dtype)


def optimizer_state_bytes(num_params: int, optimizer: str, dtype: torch.dtype = torch.float32) -> int:
    """State buffers the optimizer keeps per parameter; they are usually float32 even in
    mixed precision, because Adam's second moment (squared gradients) underflows in 16 bits."""
    return num_params * _state_buffers(optimizer) * dtype_bytes(dtype)


def bytes_per_param(
    optimizer: str,
    param_dtype: torch.dtype = torch.float32,
    grad_dtype: torch.dtype | None = None,
    state_dtype: torch.dtype = torch.float32,
    master_weights: bool = False,
) -> int:
    """Bytes of training state per parameter (activations excluded).

    fp32 AdamW: 4 (param) + 4 (grad) + 2 x 4 (moments) = 16.
    `master_weights=True` adds a float32 copy of the parameters, as mixed-precision training does
    when `param_dtype` is bf16: 2 + 2 + 8 + 4 = 16 again -- the lecture's point that bf16 params
    plus an fp32 copy do not save memory, they make the matmuls faster.
    """
    grad_dtype = param_dtype if grad_dtype is None else grad_dtype
    total = dtype_bytes(param_dtype) + dtype_bytes(grad_dtype) + _state_buffers(optimizer) * dtype_bytes(state_dtype)
    if master_weights:
        total += dtype_bytes(torch.float32)
    return total


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes of persistent training state, by kind."""

    parameters: int
    gradients: int
    optimizer_state: int
    master_weights: int = 0

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_state + self.master_weights


def training_memory(
    num_params: int,
    optimizer: str = "adamw",
    param_dtype: torch.dtype = torch.float32,
    grad_dtype: torch.dtype | None = None,
    state_dtype: torch.dtype = torch.float32,
    master_weights: bool = False,
) -> TrainingMemory:
    """The breakdown behind `bytes_per_param`, for a model of `num_params` parameters."""
    grad_dtype = param_dtype if grad_dtype is None else grad_dtype
    return TrainingMemory(
        parameters=parameter_bytes(num_params, param_dtype),
        gradients=gradient_bytes(num_params, grad_dtype),
        optimizer_state=optimizer_state_bytes(num_params, optimizer, state_dtype),
        master_weights=num_params * 4 if master_weights else 0,
    )


# --------------------------------------------------------------------------------------------
# The CS336 assignment-1 TransformerLM: parameters and activations
# --------------------------------------------------------------------------------------------


def _check_shape(d_model: int, num_heads: int, **positive: int) -> None:
    for name, v in {"d_model": d_model, "num_heads": num_heads, **positive}.items():
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")
    if d_model % num_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")


@dataclass(frozen=True)
class TransformerParams:
    """Parameter counts of the assignment-1 TransformerLM, by component."""

    embedding: int  # token_embeddings (vocab, d_model)
    attention_per_layer: int  # q/k/v/output_proj, d_model x d_model each, no bias
    ffn_per_layer: int  # SwiGLU w1, w3 (d_ff x d_model) and w2 (d_model x d_ff)
    norms_per_layer: int  # RMSNorm ln1 and ln2 gains (d_model each)
    num_layers: int
    final_norm: int  # ln_final gain
    lm_head: int  # (vocab, d_model), not tied to the embedding

    @property
    def per_layer(self) -> int:
        return self.attention_per_layer + self.ffn_per_layer + self.norms_per_layer

    @property
    def matmul(self) -> int:
        """Parameters used as matmul weights -- what the forward FLOPs scale with. The embedding is
        a table lookup (no FLOPs) and RMSNorm gains are elementwise."""
        return self.num_layers * (self.attention_per_layer + self.ffn_per_layer) + self.lm_head

    @property
    def total(self) -> int:
        return self.embedding + self.num_layers * self.per_layer + self.final_norm + self.lm_head


def transformer_params(
    vocab_size: int, context_length: int, d_model: int, num_layers: int, num_heads: int, d_ff: int
) -> TransformerParams:
    """Analytic parameter count. `context_length` and `num_heads` do not change it: RoPE is a fixed
    rotation with no parameters, and splitting d_model into heads only reshapes the projections."""
    _check_shape(
        d_model, num_heads, vocab_size=vocab_size, context_length=context_length, num_layers=num_layers, d_ff=d_ff
    )
    return TransformerParams(
        embedding=vocab_size * d_model,
        attention_per_layer=4 * d_model * d_model,
        ffn_per_layer=3 * d_model * d_ff,
        norms_per_layer=2 * d_model,
        num_layers=num_layers,
        final_norm=d_model,
        lm_head=vocab_size * d_model,
    )


def transformer_param_count(
    vocab_size: int, context_length: int, d_model: int, num_layers: int, num_heads: int, d_ff: int
) -> int:
    """Total parameters: 2*V*d (embedding + untied head) + L*(4d^2 + 3*d*d_ff + 2d) + d."""
    return transformer_params(vocab_size, context_length, d_model, num_layers, num_heads, d_ff).total


@dataclass(frozen=True)
class ActivationMemory:
    """Bytes of activations kept for the backward pass of one training step."""

    per_layer: int
    attention_scores_per_layer: int  # the batch*heads*ctx*ctx part of per_layer (or logsumexp with flash)
    num_layers: int
    embedding: int  # token ids kept by the embedding lookup (int64)
    head: int  # ln_final input, lm_head input and the logits

    @property
    def layers(self) -> int:
        return self.num_layers * self.per_layer

    @property
    def total(self) -> int:
        return self.embedding + self.layers + self.head


def transformer_activation_bytes(
    batch_size: int,
    context_length: int,
    d_model: int,
    num_layers: int,
    num_heads: int,
    d_ff: int,
    vocab_size: int,
    dtype: torch.dtype = torch.float32,
    flash_attention: bool = False,
) -> ActivationMemory:
    """Approximate activation memory of the assignment-1 TransformerLM, written plainly in PyTorch
    (no fusion, no activation checkpointing). With B = batch, T = context, d = d_model,
    h = heads, f = d_ff, V = vocab, every saved tensor below has `dtype`:

    per layer (what autograd must keep to run backward):
      * B*T*d  ln1 input: the residual stream; RMSNorm's backward needs its input
      * B*T*d  q/k/v_proj input: the normalised x, needed for the weight gradients
      * 3*B*T*d  Q, K, V (after RoPE): needed by the QK^T and AV matmuls' backward
      * 2*B*h*T*T  attention: the exponentiated scores (kept by the softmax's division) and the
        probabilities (kept by the AV matmul); with `flash_attention` neither is stored -- the
        kernel keeps only a B*h*T logsumexp and recomputes the scores in backward
      * B*T*d  attention output: the output_proj input
      * B*T*d  ln2 input: the residual stream after attention
      * B*T*d  FFN input: the normalised x for w1 and w3
      * 4*B*T*f  SwiGLU: w1 output (SiLU's input), SiLU output and w3 output (the product's
        factors) and their product (w2's input)
    outside the layers:
      * B*T int64 token ids for the embedding's backward (the lookup output is layer 0's ln1 input)
      * B*T*d ln_final input, B*T*d lm_head input, B*T*V logits

    Not counted: RMSNorm's per-token statistics (B*T each), dropout masks (none in this model),
    the causal mask (shared, T*T booleans), and the loss's own buffers. Everything is linear in the
    batch; without flash attention the 2*B*h*T*T term makes it quadratic in the context.
    """
    _check_shape(
        d_model, num_heads, batch_size=batch_size, context_length=context_length, num_layers=num_layers, d_ff=d_ff,
        vocab_size=vocab_size,
    )
    B, T, d, h, f, V = batch_size, context_length, d_model, num_heads, d_ff, vocab_size
    size = dtype_bytes(dtype)
    attention = (B * h * T if flash_attention else 2 * B * h * T * T) * size
    linear = (8 * B * T * d + 4 * B * T * f) * size
    return ActivationMemory(
        per_layer=linear + attention,
        attention_scores_per_layer=attention,
        num_layers=num_layers,
        embedding=B * T * dtype_bytes(torch.int64),
        head=(2 * B * T * d + B * T * V) * size,
    )


# --------------------------------------------------------------------------------------------
# Compute: FLOPs, peaks, MFU
# --------------------------------------------------------------------------------------------


def matmul_flops(m: int, n: int, k: int) -> int:
    """(m x k) @ (k x n): each of the m*n outputs takes k multiplies and k adds."""
    return 2 * m * n * k


def transformer_forward_flops(
    batch_size: int,
    context_length: int,
    d_model: int,
    num_layers: int,
    num_heads: int,
    d_ff: int,
    vocab_size: int,
) -> int:
    """Forward-pass FLOPs of the assignment-1 TransformerLM on a batch of full-length sequences.

    Only matmuls are counted -- they dominate; norms, softmax, RoPE and SwiGLU's elementwise ops
    are O(B*T*d) or O(B*h*T^2) with small constants.
      * weight matmuls: 2 FLOPs per matmul parameter per token (each weight is used in one
        multiply-add per token): 2 * (L*(4d^2 + 3*d*d_ff) + V*d) * B*T;
      * attention: QK^T and AV are each B*h matmuls of (T x d/h) by (d/h x T), i.e.
        2*B*T*T*d FLOPs apiece, so 2 * 2 * B*T^2*d per layer. The full T x T square is counted, as
        a plain implementation computes it and then masks; a causal kernel could skip half.
    The backward pass costs about twice the forward (gradients for both inputs of every matmul),
    which is where the 6 in 6ND comes from.
    """
    p = transformer_params(vocab_size, context_length, d_model, num_layers, num_heads, d_ff)
    tokens = batch_size * context_length
    weights = 2 * p.matmul * tokens
    attention = num_layers * 2 * 2 * batch_size * context_length * context_length * d_model
    return weights + attention


def training_flops(num_params: float, num_tokens: float) -> float:
    """6ND: 2 FLOPs per parameter per token forward, 4 backward (gradient w.r.t. activations and
    w.r.t. weights, each a matmul the size of the forward one)."""
    return 6 * num_params * num_tokens


#: Dense (no structured sparsity) bf16 tensor-core peaks, FLOP/s per GPU, from NVIDIA's data
#: sheets. The sheets headline the 2:4-sparse figure, twice the dense one; the lecture quotes
#: H100's 1979e12 and halves it (`1979e12 / 2`) to get the dense rate a training run can aim for.
PEAK_FLOPS: dict[str, float] = {
    "H100": 1979e12 / 2,  # 989.5 TFLOP/s, H100 SXM
    "H200": 1979e12 / 2,  # same GH100 compute as H100; only memory is larger and faster
    "A100": 312e12,
    "H100-sparse": 1979e12,  # the spec-sheet headline: needs 2:4 sparse weights, not a dense run
}

PEAK_DESCRIPTIONS: dict[str, str] = {
    "H100": "H100 dense bf16, the lecture's 1979e12 / 2",
    "H200": "H200 dense bf16 (same compute as H100)",
    "A100": "A100 dense bf16",
    "H100-sparse": "H100 bf16 with 2:4 sparsity, the spec sheet's headline number",
}


def resolve_peak(peak: str | float) -> tuple[str, float]:
    """A peak given as a `PEAK_FLOPS` name (case-insensitive) or a number in FLOP/s ("989e12")
    -> (description, FLOP/s)."""
    if isinstance(peak, str):
        for name, flops in PEAK_FLOPS.items():
            if name.lower() == peak.strip().lower():
                return PEAK_DESCRIPTIONS[name], flops
        try:
            value = float(peak)
        except ValueError:
            raise ValueError(
                f"unknown peak {peak!r}: use one of {', '.join(PEAK_FLOPS)} or a number in FLOP/s such as 989e12"
            ) from None
    else:
        value = float(peak)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"peak must be a positive number of FLOP/s, got {peak!r}")
    return f"{value / 1e12:g} TFLOP/s as given", value


def mfu(achieved_flops_per_s: float, peak: str | float) -> float:
    """Model FLOPs utilization: useful FLOP/s (counted from the model, e.g. 6ND per second, not
    counting recomputation) over the hardware peak. 0.5 is good; small models and small matmuls
    stay far below."""
    if achieved_flops_per_s < 0:
        raise ValueError(f"achieved FLOP/s must be non-negative, got {achieved_flops_per_s}")
    return achieved_flops_per_s / resolve_peak(peak)[1]


def measure_cpu_matmul_peak(n: int = 1024, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """Time n x n @ n x n matmuls on the CPU and return the best rate seen, in FLOP/s.

    The fastest of `repeats` runs (after one warm-up) is the one least disturbed by other work,
    which is the closest a timing gets to the machine's attainable peak.
    """
    if n <= 0 or repeats <= 0:
        raise ValueError("n and repeats must be positive")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    torch.matmul(a, b)  # warm-up: thread pool start-up, allocation, kernel selection
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return matmul_flops(n, n, n) / max(best, 1e-9)


# --------------------------------------------------------------------------------------------
# The lecture's two motivating questions
# --------------------------------------------------------------------------------------------

SECONDS_PER_DAY = 60 * 60 * 24


@dataclass(frozen=True)
class NapkinResult:
    params: float
    tokens: float
    gpus: int
    mfu: float
    peak_name: str
    peak_flops_per_s: float  # per GPU
    total_flops: float  # 6ND
    cluster_flops_per_s: float  # gpus * peak * mfu: what the run actually sustains
    days: float
    gpu_memory_gb: float
    num_gpus_memory: int
    bytes_per_param: float
    max_params_in_memory: float  # parameters + gradients + optimizer state only, no activations


def napkin(
    params: float = 70e9,
    tokens: float = 15e12,
    gpus: int = 1024,
    mfu: float = 0.5,
    peak: str | float = "H100",
    gpu_memory_gb: float = 80,
    num_gpus_memory: int = 8,
    bytes_per_param: float = 16,
) -> NapkinResult:
    """How long does training take, and how large a model fits?

    Days = 6ND / (gpus * peak * MFU). The default (70B params, 15T tokens, 1024 H100s at dense
    989.5 TFLOP/s, MFU 0.5) gives the lecture's ~144 days; the sparse 1979e12 headline would
    (wrongly) halve that.
    Largest model = memory / bytes_per_param: 8 x 80 GB at 16 bytes (fp32 AdamW) -> 40B
    parameters, before any activations.
    """
    for name, v in {
        "params": params, "tokens": tokens, "gpus": gpus, "gpu_memory_gb": gpu_memory_gb,
        "num_gpus_memory": num_gpus_memory, "bytes_per_param": bytes_per_param,
    }.items():  # fmt: skip
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be positive, got {v:g}")
    if not (0 < mfu <= 1):
        raise ValueError(f"mfu must be in (0, 1], got {mfu:g}")
    peak_name, peak_flops = resolve_peak(peak)
    total = training_flops(params, tokens)
    cluster = gpus * peak_flops * mfu
    return NapkinResult(
        params=params,
        tokens=tokens,
        gpus=gpus,
        mfu=mfu,
        peak_name=peak_name,
        peak_flops_per_s=peak_flops,
        total_flops=total,
        cluster_flops_per_s=cluster,
        days=total / cluster / SECONDS_PER_DAY,
        gpu_memory_gb=gpu_memory_gb,
        num_gpus_memory=num_gpus_memory,
        bytes_per_param=bytes_per_param,
        max_params_in_memory=num_gpus_memory * gpu_memory_gb * 1e9 / bytes_per_param,
    )


def _count(x: float) -> str:
    """70e9 -> '70B', 15e12 -> '15T', 40.5e9 -> '40.5B'."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.4g}{suffix}"
    return f"{x:.4g}"


def format_napkin(r: NapkinResult) -> str:
    """The lecture's two statements, with the peak used spelled out."""
    return "\n".join(
        [
            f"compute: {_count(r.params)} params x {_count(r.tokens)} tokens x 6 = {r.total_flops:.3g} FLOPs",
            f"  peak used: {r.peak_flops_per_s / 1e12:g} TFLOP/s per GPU ({r.peak_name})",
            f"  {r.gpus} GPUs x {r.peak_flops_per_s / 1e12:g} TFLOP/s x MFU {r.mfu:g}"
            f" = {r.cluster_flops_per_s:.3g} FLOP/s -> {r.days:.1f} days",
            f"memory: {r.num_gpus_memory} x {r.gpu_memory_gb:g} GB = {r.num_gpus_memory * r.gpu_memory_gb:g} GB"
            f" at {r.bytes_per_param:g} bytes/param -> about {_count(r.max_params_in_memory)} parameters"
            " (before activations)",
        ]
    )


def napkin_main(argv: Sequence[str] | None = None) -> None:
    """`fastbpe napkin`: print the napkin math for a training run."""
    parser = argparse.ArgumentParser(
        prog="fastbpe napkin",
        description="Napkin math from CS336 lecture 2: training days from 6ND and the largest model "
        "whose parameters, gradients and optimizer state fit in GPU memory.",
    )
    parser.add_argument("--params", type=float, default=70e9, help="model parameters (default 70e9)")
    parser.add_argument("--tokens", type=float, default=15e12, help="training tokens (default 15e12)")
    parser.add_argument("--gpus", type=int, default=1024, help="GPUs training (default 1024)")
    parser.add_argument("--mfu", type=float, default=0.5, help="model FLOPs utilization in (0, 1] (default 0.5)")
    parser.add_argument(
        "--peak",
        default=None,
        help=f"per-GPU peak: one of {', '.join(PEAK_FLOPS)} or FLOP/s such as 989e12 "
        "(default: H100 dense, plus the sparse headline for comparison)",
    )
    parser.add_argument("--gpu-memory-gb", type=float, default=80, help="memory per GPU in GB (default 80)")
    parser.add_argument("--num-gpus-memory", type=int, default=8, help="GPUs whose memory holds the model (default 8)")
    parser.add_argument(
        "--bytes-per-param", type=float, default=16, help="training bytes per parameter (default 16: fp32 AdamW)"
    )
    args = parser.parse_args(argv)
    common = dict(
        params=args.params, tokens=args.tokens, gpus=args.gpus, mfu=args.mfu, gpu_memory_gb=args.gpu_memory_gb,
        num_gpus_memory=args.num_gpus_memory, bytes_per_param=args.bytes_per_param,
    )  # fmt: skip
    try:
        result = napkin(peak="H100" if args.peak is None else args.peak, **common)
        sparse = napkin(peak="H100-sparse", **common) if args.peak is None else None
    except ValueError as e:
        parser.error(str(e))
    print(format_napkin(result))
    if sparse is not None:
        print(
            f"  with the spec sheet's sparse {sparse.peak_flops_per_s / 1e12:g} TFLOP/s instead it would read"
            f" {sparse.days:.1f} days -- too optimistic: dense training cannot use 2:4 sparsity,"
            " which is why the lecture halves it"
        )
