"""Transformer building blocks, written out (CS336 assignment 1's names, shapes and conventions,
so its adapters and state dicts map one to one).

Every module keeps its parameters under the handout's names: `Linear.weight` is (out, in),
`Embedding.weight` (num, dim), `RMSNorm.weight` (d_model), `SwiGLU.w1/w2/w3`, attention
`q_proj/k_proj/v_proj/output_proj`, blocks `ln1/attn/ln2/ffn`, the LM `token_embeddings/layers/
ln_final/lm_head`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from fastbpe import _core


def _check_last_dim(x: Tensor, size: int, what: str) -> None:
    if x.shape[-1] != size:
        raise ValueError(f"{what} expects inputs whose last dimension is {size}, got shape {tuple(x.shape)}")


class Linear(nn.Module):
    """y = x W^T without bias. `init="trunc_normal"` (the handout: N(0, 2/(in+out)) cut at 3
    sigma) or `"xavier"` (the lecture's 1/sqrt(in) scale)."""

    def __init__(self, in_features: int, out_features: int, device=None, dtype=None, init: str = "trunc_normal"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        if init == "trunc_normal":
            std = math.sqrt(2.0 / (in_features + out_features))
            nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
        elif init == "xavier":
            with torch.no_grad():
                self.weight.normal_(0.0, 1.0 / math.sqrt(in_features))
        else:
            raise ValueError(f"init must be 'trunc_normal' or 'xavier', not {init!r}")

    def forward(self, x: Tensor) -> Tensor:
        _check_last_dim(x, self.in_features, "Linear")
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Embedding(nn.Module):
    """Rows of `weight` (num_embeddings, embedding_dim), initialized N(0, 1) cut at 3."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=1.0, a=-3.0, b=3.0)

    def forward(self, token_ids: Tensor) -> Tensor:
        if token_ids.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"Embedding expects integer token ids, got {token_ids.dtype}")
        return self.weight[token_ids]


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 (squares of bf16 activations
    overflow and lose precision), returned in the input's dtype."""

    def __init__(self, d_model: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.d_model, self.eps = d_model, eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        _check_last_dim(x, self.d_model, "RMSNorm")
        in_dtype = x.dtype
        x = x.to(torch.float32)
        rms = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (x * rms * self.weight.to(torch.float32)).to(in_dtype)


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x)."""
    return x * torch.sigmoid(x)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x): the gated feed-forward of LLaMA."""

    def __init__(self, d_model: int, d_ff: int, device=None, dtype=None):
        super().__init__()
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)
        self.w3 = Linear(d_model, d_ff, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        # F.silu is the fused kernel of the same function as `silu` above.
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class RotaryEmbedding(nn.Module):
    """RoPE: rotates each adjacent pair (x[2k], x[2k+1]) of a d_k-dim vector at position i by
    the angle i * theta^(-2k/d_k). Tables for max_seq_len positions are precomputed."""

    def __init__(self, theta: float, d_k: int, max_seq_len: int, device=None):
        super().__init__()
        if d_k % 2:
            raise ValueError(f"RoPE needs an even d_k, got {d_k}")
        self.theta, self.d_k, self.max_seq_len = theta, d_k, max_seq_len
        inv_freq = theta ** (-torch.arange(0, d_k, 2, device=device, dtype=torch.float32) / d_k)
        angles = torch.outer(torch.arange(max_seq_len, device=device, dtype=torch.float32), inv_freq)
        # Not saved in state dicts: they are a function of the constructor's arguments.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor, token_positions: Tensor) -> Tensor:
        _check_last_dim(x, self.d_k, "RotaryEmbedding")
        if token_positions.shape[-1] != x.shape[-2]:
            raise ValueError(
                f"token_positions {tuple(token_positions.shape)} must end with the sequence length {x.shape[-2]}"
            )
        cos, sin = self.cos[token_positions], self.sin[token_positions]  # (..., seq, d_k/2)
        x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.flatten(-2).to(x.dtype)


def softmax(x: Tensor, dim: int) -> Tensor:
    """exp(x - max) / sum(exp(x - max)): subtracting the max keeps exp from overflowing."""
    x = x - x.amax(dim=dim, keepdim=True)
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def scaled_dot_product_attention(Q: Tensor, K: Tensor, V: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(Q K^T / sqrt(d_k)) V over any leading dims; `mask` True where attention is allowed.

    The readable definition. The model calls torch's fused kernel (flash attention on GPUs),
    which the tests show computes the same thing."""
    if Q.shape[-1] != K.shape[-1] or K.shape[-2] != V.shape[-2]:
        raise ValueError(f"attention shapes do not fit: Q {tuple(Q.shape)}, K {tuple(K.shape)}, V {tuple(V.shape)}")
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if mask is not None:
        if mask.shape[-2:] != scores.shape[-2:]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not end with (queries, keys) = {tuple(scores.shape[-2:])}")
        scores = scores.masked_fill(~mask, float("-inf"))
    return softmax(scores, dim=-1) @ V


class MultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention; RoPE on queries and keys when `theta` is given."""

    def __init__(self, d_model: int, num_heads: int, max_seq_len: int | None = None, theta: float | None = None, device=None, dtype=None):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.d_model, self.num_heads = d_model, num_heads
        self.q_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.k_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.v_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.output_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.rope = None
        if theta is not None:
            if max_seq_len is None:
                raise ValueError("RoPE (theta) needs max_seq_len")
            self.rope = RotaryEmbedding(theta, d_model // num_heads, max_seq_len, device=device)

    def forward(self, x: Tensor, token_positions: Tensor | None = None, cache: LayerCache | None = None) -> Tensor:
        """With `cache`, `x` continues the sequence whose keys and values the cache holds: its
        own keys and values are appended, and its queries attend to all of them."""
        seq = x.shape[-2]
        q, k, v = (rearrange(p(x), "... s (h d) -> ... h s d", h=self.num_heads) for p in (self.q_proj, self.k_proj, self.v_proj))
        if self.rope is not None:
            if token_positions is None:
                token_positions = torch.arange(seq, device=x.device)
            # (..., seq) positions -> (..., 1, seq): shared by the heads, not lined up with them.
            token_positions = token_positions.unsqueeze(-2)
            q, k = self.rope(q, token_positions), self.rope(k, token_positions)
        if cache is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            past = cache.length
            k, v = cache.append(k, v)
            if seq == 1:  # one new query sees every key: no mask
                out = F.scaled_dot_product_attention(q, k, v)
            else:  # query i (position past + i) sees keys 0 .. past + i; is_causal would align them at 0
                allowed = torch.arange(k.shape[-2], device=x.device) <= past + torch.arange(seq, device=x.device)[:, None]
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.output_proj(rearrange(out, "... h s d -> ... s (h d)"))


class LayerCache:
    """One attention layer's keys and values so far, (..., heads, length, d_k), in buffers
    that double when full (appending is amortized O(new tokens))."""

    def __init__(self):
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store `k`, `v` after the cached ones; returns all keys and values."""
        end = self.length + k.shape[-2]
        if self.k is None or end > self.k.shape[-2]:
            size = max(end, 2 * (self.k.shape[-2] if self.k is not None else 16))
            grown = [t.new_empty(*t.shape[:-2], size, t.shape[-1]) for t in (k, v)]
            if self.k is not None:
                grown[0][..., : self.length, :] = self.k[..., : self.length, :]
                grown[1][..., : self.length, :] = self.v[..., : self.length, :]
            self.k, self.v = grown
        self.k[..., self.length : end, :] = k
        self.v[..., self.length : end, :] = v
        self.length = end
        return self.k[..., :end, :], self.v[..., :end, :]


class KVCache:
    """Every layer's keys and values of the tokens a TransformerLM has seen so far: generation
    feeds only the new token each step instead of the whole sequence."""

    def __init__(self, num_layers: int):
        self.layers = [LayerCache() for _ in range(num_layers)]

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(ln1(x)), then + ffn(ln2(.))."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, max_seq_len: int, theta: float | None, device=None, dtype=None):
        super().__init__()
        self.ln1 = RMSNorm(d_model, device=device, dtype=dtype)
        self.attn = MultiHeadSelfAttention(d_model, num_heads, max_seq_len, theta, device=device, dtype=dtype)
        self.ln2 = RMSNorm(d_model, device=device, dtype=dtype)
        self.ffn = SwiGLU(d_model, d_ff, device=device, dtype=dtype)

    def forward(self, x: Tensor, token_positions: Tensor | None = None, cache: LayerCache | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), token_positions, cache)
        return x + self.ffn(self.ln2(x))


class TransformerLM(nn.Module):
    """Token embeddings, `num_layers` pre-norm blocks, a final RMSNorm and an (untied) LM head."""

    def __init__(self, vocab_size: int, context_length: int, d_model: int, num_layers: int, num_heads: int, d_ff: int, rope_theta: float | None = 10000.0, device=None, dtype=None):
        super().__init__()
        self.vocab_size, self.context_length = vocab_size, context_length
        self.token_embeddings = Embedding(vocab_size, d_model, device=device, dtype=dtype)
        self.layers = nn.ModuleList(
            TransformerBlock(d_model, num_heads, d_ff, context_length, rope_theta, device=device, dtype=dtype) for _ in range(num_layers)
        )
        self.ln_final = RMSNorm(d_model, device=device, dtype=dtype)
        self.lm_head = Linear(d_model, vocab_size, device=device, dtype=dtype)

    def forward(self, token_ids: Tensor, cache: KVCache | None = None) -> Tensor:
        """Logits for every position. With `cache` (from `new_cache`), `token_ids` continue the
        tokens it holds (positions start after them) and their keys and values are added to it."""
        past = 0 if cache is None else cache.length
        if past + token_ids.shape[-1] > self.context_length:
            cached = f" ({past} cached + {token_ids.shape[-1]} new)" if past else ""
            raise ValueError(f"sequence length {past + token_ids.shape[-1]}{cached} exceeds context_length "
                             f"{self.context_length}")
        x = self.token_embeddings(token_ids)
        positions = torch.arange(past, past + token_ids.shape[-1], device=token_ids.device)
        for i, layer in enumerate(self.layers):
            x = layer(x, positions, None if cache is None else cache.layers[i])
        return self.lm_head(self.ln_final(x))

    @classmethod
    def from_config(cls, config, device=None, dtype=None) -> TransformerLM:
        """The model a `TrainConfig` (or anything with its model fields) describes: the one
        place that turns a config into a model, for training, loading a run and the benches."""
        return cls(config.vocab_size, config.context_length, config.d_model, config.num_layers, config.num_heads,
                   config.d_ff, config.rope_theta, device=device, dtype=dtype)

    @classmethod
    def from_huggingface(cls, folder) -> TransformerLM:
        """The model of a Hugging Face Llama folder; see `fastbpe.lm.huggingface.import_huggingface`."""
        from fastbpe.lm.huggingface import import_huggingface

        return import_huggingface(folder)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.layers))


class Cruncher(nn.Module):
    """The lecture's toy model: `num_layers` square linear layers, then a linear head to one
    number per example."""

    def __init__(self, dim: int, num_layers: int, device=None, dtype=None):
        super().__init__()
        self.layers = nn.ModuleList(Linear(dim, dim, device=device, dtype=dtype, init="xavier") for _ in range(num_layers))
        self.final = Linear(dim, 1, device=device, dtype=dtype, init="xavier")

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.final(x).squeeze(-1)


def _check_targets(logits: Tensor, targets: Tensor) -> None:
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} do not match: "
                         "targets must have the logits' shape without the last (vocabulary) dimension")


def readable_token_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """-log softmax(logits)[target] for each target (float32, the targets' shape), via
    log-sum-exp (stable: the max is subtracted before exp, and softmax itself is never formed).

    The handout's definition, left to autograd; `token_cross_entropy` computes the same numbers
    faster and the tests hold them equal."""
    _check_targets(logits, targets)
    logits = logits.float()
    m = logits.amax(dim=-1, keepdim=True)
    lse = (logits - m).exp().sum(dim=-1).log() + m.squeeze(-1)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return lse - picked


def readable_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over all leading dims of readable_token_cross_entropy."""
    return readable_token_cross_entropy(logits, targets).mean()


class _TokenCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy with a hand-written backward. Autograd on the readable version
    keeps the float32 copy, the shifted logits and their exp alive for backward (three
    vocabulary-sized tensors per token); this keeps only the logits and one log-sum-exp per
    token, and backward is softmax - onehot in one buffer.

    bf16 logits on CPU go to Rust (rust/xent.rs), which computes the same in float32 one row at
    a time (a vectorised exp within 2 ulp, sums in float64) and writes the gradient straight in
    bf16: no float32 copy of all the logits, nor of their gradient, goes through memory."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:
        if _in_rust(logits):
            lse = logits.new_empty(logits.shape[:-1], dtype=torch.float32)
            _core.cross_entropy_bf16_lse(logits.contiguous(), lse, torch.get_num_threads())
            picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).float()
        else:
            # log-sum-exp kept as its two parts, the row max m (a logit, exact) and log s (small):
            # backward's exp((x - m) - log s) then carries no rounding of m + log s, whose error
            # grows with |m| (logits of 30 gave softmax values 1.5e-6 off).
            x = logits.float()  # no copy for float32 logits
            m = x.amax(dim=-1, keepdim=True)
            if x.numel():
                m = m.masked_fill(m.isinf(), 0.0)  # rows of -inf (or +inf) logits: as logsumexp does
            log_s = torch.sub(x, m).exp_().sum(dim=-1).log_()
            m = m.squeeze(-1)
            picked = x.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            ctx.save_for_backward(logits, targets, m, log_s)
            return (log_s + m) - picked  # rounded as the readable version rounds it
        ctx.save_for_backward(logits, targets, lse)
        return lse - picked

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        logits, targets, *lse = ctx.saved_tensors
        if _in_rust(logits):
            (lse,) = lse
            grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
            _core.cross_entropy_bf16_grad(
                logits.contiguous(), targets.to(torch.int64).contiguous(), lse.contiguous(),
                grad_loss.to(torch.float32).contiguous(), grad, torch.get_num_threads())
            return grad, None
        # d loss_i / d logits_ij = softmax_ij - [j == target_i], scaled by the incoming grad.
        m, log_s = lse
        grad = logits.float().sub(m.unsqueeze(-1)).sub_(log_s.unsqueeze(-1)).exp_()
        grad.scatter_add_(-1, targets.unsqueeze(-1), grad.new_full((*targets.shape, 1), -1.0))
        grad.mul_(grad_loss.unsqueeze(-1))
        return grad.to(logits.dtype), None


def _in_rust(logits: Tensor) -> bool:
    """bf16 logits on CPU with rows to reduce (elsewhere torch's kernels over the whole tensor)."""
    return (logits.dtype == torch.bfloat16 and logits.device.type == "cpu" and logits.dim() > 0
            and logits.numel() > 0)


def token_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """-log softmax(logits)[target] for each target (float32, the targets' shape): the numbers
    of `readable_token_cross_entropy`, with a backward that keeps far less in memory."""
    _check_targets(logits, targets)
    return _TokenCrossEntropy.apply(logits, targets)


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over all leading dims of token_cross_entropy (the training loss)."""
    return token_cross_entropy(logits, targets).mean()


@torch.no_grad()
def clip_grad_norm_(parameters, max_norm: float, eps: float = 1e-6) -> Tensor:
    """Scale all gradients together so their global L2 norm is at most `max_norm`; returns the
    norm before clipping."""
    if max_norm < 0:
        raise ValueError(f"max_norm must be non-negative, got {max_norm}")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch._foreach_norm(grads, 2.0)
    total = torch.linalg.vector_norm(torch.stack([n.to(grads[0].device, torch.float32) for n in norms]), 2.0)
    scale = torch.clamp(max_norm / (total + eps), max=1.0)
    torch._foreach_mul_(grads, scale.to(grads[0].dtype))
    return total
