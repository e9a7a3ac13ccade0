"""Napkin math without PyTorch: CS336 lecture 2's FLOPs, parameter counts, peaks, MFU and the
two motivating questions, with the `fastbpe napkin` command. Plain arithmetic on numbers, so it
works with the base install; `fastbpe.lm.accounting` re-exports all of it and adds what needs
torch (float formats, memory per dtype, activations, a measured CPU peak).

Conventions: a FLOP is one floating-point add or multiply (a multiply-add is 2 FLOPs);
GB means 10**9 bytes, as on accelerator spec sheets and in the lecture (80e9 for an 80 GB H100).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Sequence


# --------------------------------------------------------------------------------------------
# Optimizer state
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


# --------------------------------------------------------------------------------------------
# The CS336 assignment-1 TransformerLM: parameters
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


def gpu_peak(device_name: str) -> tuple[str, float] | None:
    """(name, FLOP/s) of the dense peak in `PEAK_FLOPS` of the GPU that `device_name` (as
    torch.cuda.get_device_name says it: "NVIDIA H100 80GB HBM3") names; None for another GPU."""
    for name, flops in PEAK_FLOPS.items():
        if name in device_name and "sparse" not in name:
            return name, flops
    return None


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
