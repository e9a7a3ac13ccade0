"""Resource accounting: the napkin math of CS336 lecture 2 ("PyTorch, resource accounting").

Everything here answers "how many bytes?" or "how many FLOPs?" before anything is run:

* float formats: how many bits go to range (exponent) and to precision (mantissa);
* memory: parameters, gradients, optimizer state and activations of a training step;
* compute: FLOPs of matmuls, of a Transformer forward pass, of a whole training run (6ND),
  and model FLOPs utilization (MFU);
* `napkin`: the lecture's two motivating questions (how long does a 70B / 15T-token run take on
  1024 H100s; how large a model fits in 8 x 80 GB with AdamW), with a CLI `fastbpe napkin`.

The parts that are plain arithmetic on numbers (FLOPs, parameter counts, peaks, MFU, `napkin`)
live in `fastbpe.napkin`, which needs no torch, so that `fastbpe napkin` runs with the base
install; they are re-exported here, and this module adds what needs torch.

Conventions: a FLOP is one floating-point add or multiply (a multiply-add is 2 FLOPs);
GB means 10**9 bytes, as on accelerator spec sheets and in the lecture (80e9 for an 80 GB H100).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from fastbpe.napkin import (  # noqa: F401 - re-exported: this module's API predates the split
    OPTIMIZER_STATE_BUFFERS,
    PEAK_DESCRIPTIONS,
    PEAK_FLOPS,
    SECONDS_PER_DAY,
    NapkinResult,
    TransformerParams,
    _check_shape,
    _count,
    _state_buffers,
    format_napkin,
    gpu_peak,
    matmul_flops,
    mfu,
    napkin,
    napkin_main,
    resolve_peak,
    training_flops,
    transformer_forward_flops,
    transformer_param_count,
    transformer_params,
)

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
# The CS336 assignment-1 TransformerLM: activations
# --------------------------------------------------------------------------------------------


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
# Compute: a measured peak
# --------------------------------------------------------------------------------------------


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
