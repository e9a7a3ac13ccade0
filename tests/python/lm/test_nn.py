"""fastbpe.lm.nn against the CS336 handout and torch's own implementations: parameter names
and shapes, initialization, the numbers each module computes, errors and end-to-end learning."""

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
F = torch.nn.functional

from fastbpe.lm.nn import (  # noqa: E402
    Cruncher,
    Embedding,
    Linear,
    MultiHeadSelfAttention,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    TransformerBlock,
    TransformerLM,
    clip_grad_norm_,
    cross_entropy,
    readable_cross_entropy,
    readable_token_cross_entropy,
    scaled_dot_product_attention,
    silu,
    softmax,
    token_cross_entropy,
)

VOCAB, CTX, D, LAYERS, HEADS, DFF = 50, 16, 32, 2, 4, 48


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_lm(seed=0, **kwargs):
    torch.manual_seed(seed)
    return TransformerLM(VOCAB, CTX, D, LAYERS, HEADS, DFF, **kwargs)


# ---------------------------------------------------------------- names and shapes


def test_transformer_lm_state_dict_names_and_shapes_match_the_handout():
    sd = small_lm().state_dict()
    expected = {
        "token_embeddings.weight": (VOCAB, D),
        "ln_final.weight": (D,),
        "lm_head.weight": (VOCAB, D),
    }
    for i in range(LAYERS):
        p = f"layers.{i}."
        expected.update({
            p + "ln1.weight": (D,),
            p + "attn.q_proj.weight": (D, D),
            p + "attn.k_proj.weight": (D, D),
            p + "attn.v_proj.weight": (D, D),
            p + "attn.output_proj.weight": (D, D),
            p + "ln2.weight": (D,),
            p + "ffn.w1.weight": (DFF, D),
            p + "ffn.w2.weight": (D, DFF),
            p + "ffn.w3.weight": (DFF, D),
        })
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


def test_state_dict_loads_into_a_fresh_model_and_gives_the_same_logits():
    a, b = small_lm(0), small_lm(1)
    ids = torch.randint(0, VOCAB, (2, CTX))
    assert not torch.allclose(a(ids), b(ids))
    b.load_state_dict(a.state_dict())  # strict: no missing / unexpected keys (RoPE tables not saved)
    torch.testing.assert_close(a(ids), b(ids), rtol=0, atol=0)


def test_linear_and_embedding_shapes():
    lin = Linear(3, 5)
    assert lin.weight.shape == (5, 3)
    emb = Embedding(7, 4)
    assert emb.weight.shape == (7, 4)
    ids = torch.tensor([[0, 6], [3, 3]])
    torch.testing.assert_close(emb(ids), emb.weight[ids])
    assert emb(ids).shape == (2, 2, 4)


# ---------------------------------------------------------------- Linear


def test_linear_trunc_normal_init_std_and_truncation():
    torch.manual_seed(0)
    fan_in, fan_out = 384, 640
    w = Linear(fan_in, fan_out).weight.detach()
    std = math.sqrt(2.0 / (fan_in + fan_out))
    # A normal cut at +-3 sigma has std 0.9866 sigma.
    assert w.std().item() == pytest.approx(0.9866 * std, rel=0.03)
    assert w.abs().max().item() <= 3 * std + 1e-7
    # Mass really reaches out towards 3 sigma (it is not, say, cut at 2 sigma or a uniform).
    assert w.abs().max().item() > 2.8 * std
    assert abs(w.mean().item()) < 0.05 * std


def test_linear_xavier_init_std():
    torch.manual_seed(0)
    fan_in, fan_out = 256, 512
    w = Linear(fan_in, fan_out, init="xavier").weight.detach()
    assert w.std().item() == pytest.approx(1.0 / math.sqrt(fan_in), rel=0.03)


def test_linear_rejects_unknown_init():
    with pytest.raises(ValueError):
        Linear(3, 4, init="kaiming")


def test_linear_is_x_times_w_transposed_over_leading_dims():
    torch.manual_seed(0)
    lin = Linear(6, 5)
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(lin(x), x @ lin.weight.T)


def test_linear_rejects_wrong_input_dim():
    with pytest.raises(ValueError, match="6"):
        Linear(6, 5)(torch.randn(2, 5))


# ---------------------------------------------------------------- RMSNorm, silu, SwiGLU


def test_rmsnorm_matches_formula_and_torch():
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16))
    x = torch.randn(2, 3, 16) * 4
    manual = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), manual)
    if hasattr(F, "rms_norm"):
        torch.testing.assert_close(norm(x), F.rms_norm(x, (16,), norm.weight, eps=1e-5))


def test_rmsnorm_rejects_wrong_dim():
    with pytest.raises(ValueError):
        RMSNorm(16)(torch.randn(2, 8))


def test_rmsnorm_computes_in_fp32_and_returns_input_dtype():
    torch.manual_seed(0)
    d = 1024
    norm = RMSNorm(d)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(d) + 0.5)
    # Widely spread magnitudes in one row: the bf16 squares lose the small ones' contribution.
    x = (torch.randn(4, d) * torch.logspace(-2, 2, d)).to(torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16
    xf = x.float()
    ref = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    # Within bf16 rounding of the fp32 result (one bf16 ulp is 2^-7 relative).
    torch.testing.assert_close(out.float(), ref, rtol=2**-8 + 1e-6, atol=1e-6)
    # bf16 weights too.
    norm16 = RMSNorm(d, dtype=torch.bfloat16)
    assert norm16.weight.dtype == torch.bfloat16
    out16 = norm16(x)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5),
                               rtol=2**-8 + 1e-6, atol=1e-6)


def test_silu_matches_torch():
    x = torch.linspace(-20, 20, 1001)
    torch.testing.assert_close(silu(x), F.silu(x))


def test_swiglu_formula():
    torch.manual_seed(0)
    ffn = SwiGLU(8, 12)
    assert ffn.w1.weight.shape == (12, 8) and ffn.w3.weight.shape == (12, 8) and ffn.w2.weight.shape == (8, 12)
    x = torch.randn(2, 5, 8)
    a, b = x @ ffn.w1.weight.T, x @ ffn.w3.weight.T
    expected = (a * torch.sigmoid(a) * b) @ ffn.w2.weight.T
    torch.testing.assert_close(ffn(x), expected)


# ---------------------------------------------------------------- RoPE


def rope_complex(x, positions, theta):
    """Pair (x[2k], x[2k+1]) as the complex number x[2k] + i x[2k+1], times exp(i pos theta^(-2k/d))."""
    d = x.shape[-1]
    xd = x.double()
    z = torch.complex(xd[..., 0::2], xd[..., 1::2])
    k = torch.arange(d // 2, dtype=torch.float64)
    angle = positions.double()[..., None] * theta ** (-2 * k / d)
    r = z * torch.polar(torch.ones_like(angle), angle)
    return torch.stack((r.real, r.imag), dim=-1).flatten(-2).to(x.dtype)


def test_rope_matches_complex_rotation_of_adjacent_pairs():
    torch.manual_seed(0)
    theta, d, max_len, seq = 10000.0, 16, 64, 7
    rope = RotaryEmbedding(theta, d, max_len)
    x = torch.randn(2, 3, seq, d)
    pos = torch.arange(seq)
    torch.testing.assert_close(rope(x, pos), rope_complex(x, pos.expand(2, 3, seq), theta), rtol=1e-5, atol=2e-5)


def test_rope_with_arbitrary_positions_and_batch_dims():
    torch.manual_seed(1)
    theta, d, max_len, seq = 500.0, 8, 100, 5
    rope = RotaryEmbedding(theta, d, max_len)
    x = torch.randn(4, 2, seq, d)
    pos = torch.randint(0, max_len, (4, 2, seq))
    out = rope(x, pos)
    torch.testing.assert_close(out, rope_complex(x, pos, theta), rtol=1e-5, atol=5e-5)
    # Positions shared across the batch broadcast: (seq,) positions over (4, 2, seq, d).
    shared = torch.tensor([3, 99, 0, 50, 7])
    torch.testing.assert_close(rope(x, shared), rope_complex(x, shared.expand(4, 2, seq), theta), rtol=1e-5, atol=5e-5)
    # Not the identity for nonzero positions, and each pair's norm is kept.
    assert not torch.allclose(out, x)
    pair_norm = lambda t: t.unflatten(-1, (d // 2, 2)).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norm(out), pair_norm(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-5)


def test_rope_position_zero_is_identity():
    torch.manual_seed(0)
    rope = RotaryEmbedding(10000.0, 8, 10)
    x = torch.randn(3, 4, 8)
    torch.testing.assert_close(rope(x, torch.zeros(4, dtype=torch.long)), x)


def test_rope_relative_property():
    """<R_m q, R_n k> depends only on m - n."""
    torch.manual_seed(0)
    rope = RotaryEmbedding(10000.0, 16, 64)
    q, k = torch.randn(1, 16), torch.randn(1, 16)
    def dot(m, n):  # noqa: E306
        return (rope(q, torch.tensor([m])) * rope(k, torch.tensor([n]))).sum().item()
    assert dot(10, 3) == pytest.approx(dot(27, 20), abs=1e-4)
    assert dot(10, 3) != pytest.approx(dot(10, 4), abs=1e-3)


def test_rope_rejects_odd_dim_and_wrong_sizes():
    with pytest.raises(ValueError):
        RotaryEmbedding(10000.0, 7, 10)
    rope = RotaryEmbedding(10000.0, 8, 10)
    with pytest.raises(ValueError):
        rope(torch.randn(3, 6), torch.arange(3))
    with pytest.raises(ValueError):
        rope(torch.randn(3, 8), torch.arange(4))


# ---------------------------------------------------------------- softmax and attention


def test_softmax_matches_torch_on_any_dim():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5) * 5
    for dim in (0, 1, 2, -1):
        torch.testing.assert_close(softmax(x, dim=dim), torch.softmax(x, dim=dim))


def test_softmax_is_stable_for_huge_inputs():
    x = torch.tensor([[1e4, 1e4 - 1.0, 0.0, -1e4], [1e4, 1e4, 1e4, 1e4]])
    out = softmax(x, dim=-1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.softmax(x, dim=-1))
    torch.testing.assert_close(out.sum(-1), torch.ones(2))


def random_mask(*shape, generator=None):
    mask = torch.rand(*shape, generator=generator) > 0.5
    mask[..., 0] = True  # every query sees at least one key (else both sides give nan)
    return mask


def test_sdpa_matches_torch_with_boolean_mask_and_extra_leading_dims():
    torch.manual_seed(0)
    Q = torch.randn(2, 3, 4, 5, 8)
    K = torch.randn(2, 3, 4, 6, 8)
    V = torch.randn(2, 3, 4, 6, 7)
    mask = random_mask(5, 6)
    ours = scaled_dot_product_attention(Q, K, V, mask)
    assert ours.shape == (2, 3, 4, 5, 7)
    theirs = F.scaled_dot_product_attention(Q.flatten(0, 1), K.flatten(0, 1), V.flatten(0, 1), attn_mask=mask)
    torch.testing.assert_close(ours, theirs.unflatten(0, (2, 3)), rtol=1e-5, atol=1e-5)
    # A full-shape mask, different per batch element.
    full = random_mask(2, 3, 4, 5, 6)
    theirs = F.scaled_dot_product_attention(Q.flatten(0, 1), K.flatten(0, 1), V.flatten(0, 1), attn_mask=full.flatten(0, 1))
    torch.testing.assert_close(scaled_dot_product_attention(Q, K, V, full), theirs.unflatten(0, (2, 3)), rtol=1e-5, atol=1e-5)
    # No mask.
    theirs = F.scaled_dot_product_attention(Q.flatten(0, 1), K.flatten(0, 1), V.flatten(0, 1))
    torch.testing.assert_close(scaled_dot_product_attention(Q, K, V), theirs.unflatten(0, (2, 3)), rtol=1e-5, atol=1e-5)


def test_sdpa_with_causal_mask_matches_is_causal():
    torch.manual_seed(0)
    Q, K, V = torch.randn(3, 2, 6, 8), torch.randn(3, 2, 6, 8), torch.randn(3, 2, 6, 8)
    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    torch.testing.assert_close(
        scaled_dot_product_attention(Q, K, V, causal),
        F.scaled_dot_product_attention(Q, K, V, is_causal=True), rtol=1e-5, atol=1e-5)


def test_sdpa_masked_keys_have_no_influence():
    torch.manual_seed(0)
    Q, K, V = torch.randn(4, 8), torch.randn(5, 8), torch.randn(5, 3)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[:, 2] = False
    V2 = V.clone()
    V2[2] += 1000
    torch.testing.assert_close(scaled_dot_product_attention(Q, K, V, mask), scaled_dot_product_attention(Q, K, V2, mask))


def test_sdpa_rejects_wrong_shapes():
    Q, K, V = torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="mask"):
        scaled_dot_product_attention(Q, K, V, torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        scaled_dot_product_attention(Q, K, V, torch.ones(5, 4, dtype=torch.bool))
    with pytest.raises(ValueError):
        scaled_dot_product_attention(Q, torch.randn(2, 5, 7), V)
    with pytest.raises(ValueError):
        scaled_dot_product_attention(Q, K, torch.randn(2, 6, 3))


def manual_mhsa(attn, x, positions, num_heads):
    """The readable computation: project, split heads as (h d) on the last dim, RoPE per head,
    our scaled_dot_product_attention with a causal mask, merge heads, output projection."""
    seq, d_model = x.shape[-2], x.shape[-1]
    dh = d_model // num_heads

    def split(t):  # (..., s, h*d) -> (..., h, s, d)
        return t.unflatten(-1, (num_heads, dh)).transpose(-3, -2)

    q, k, v = (split(x @ p.weight.T) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    if attn.rope is not None:
        q, k = attn.rope(q, positions), attn.rope(k, positions)
    causal = torch.tril(torch.ones(seq, seq, dtype=torch.bool))
    out = scaled_dot_product_attention(q, k, v, causal)
    out = out.transpose(-3, -2).flatten(-2)
    return out @ attn.output_proj.weight.T


@pytest.mark.parametrize("theta", [None, 10000.0])
def test_multihead_self_attention_matches_manual_computation(theta):
    torch.manual_seed(0)
    d_model, heads, seq = 32, 4, 9
    attn = MultiHeadSelfAttention(d_model, heads, max_seq_len=20, theta=theta)
    x = torch.randn(2, seq, d_model)
    pos = torch.arange(seq)
    torch.testing.assert_close(attn(x), manual_mhsa(attn, x, pos, heads), rtol=1e-5, atol=1e-5)
    if theta is not None:
        custom = torch.tensor([4, 5, 6, 10, 11, 12, 13, 17, 19])
        torch.testing.assert_close(attn(x, custom), manual_mhsa(attn, x, custom, heads), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(attn(x, custom), attn(x))
    # Extra leading dims.
    x3 = torch.randn(2, 3, seq, d_model)
    torch.testing.assert_close(attn(x3), manual_mhsa(attn, x3, pos, heads), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("heads", [2, 4])
def test_multihead_self_attention_per_example_positions(heads):
    """token_positions (batch, seq) apply to each example, for all of its heads (not lined up
    with the head dimension, which would fail for batch != heads and be silently wrong for
    batch == heads)."""
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(16, heads, max_seq_len=32, theta=10000.0)
    x = torch.randn(2, 5, 16)
    pos = torch.stack([torch.arange(5), torch.arange(5) * 3])  # not a uniform shift
    out = attn(x, pos)
    for b in range(2):
        torch.testing.assert_close(out[b], attn(x[b : b + 1], pos[b])[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[b], manual_mhsa(attn, x[b], pos[b], heads), rtol=1e-5, atol=1e-5)
    # The handout's adapters pass (1, seq) positions.
    torch.testing.assert_close(attn(x, torch.arange(5)[None]), attn(x), rtol=0, atol=0)


def test_multihead_self_attention_rejects_bad_config():
    with pytest.raises(ValueError):
        MultiHeadSelfAttention(30, 4)
    with pytest.raises(ValueError):
        MultiHeadSelfAttention(32, 4, max_seq_len=None, theta=10000.0)


def test_transformer_block_is_pre_norm_residual():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, 24, max_seq_len=8, theta=10000.0)
    x = torch.randn(2, 8, 16)
    pos = torch.arange(8)
    h = x + block.attn(block.ln1(x), pos)
    expected = h + block.ffn(block.ln2(h))
    torch.testing.assert_close(block(x, pos), expected)


# ---------------------------------------------------------------- TransformerLM


def test_transformer_lm_output_shape_and_context_limit():
    lm = small_lm()
    ids = torch.randint(0, VOCAB, (3, 10))
    assert lm(ids).shape == (3, 10, VOCAB)
    with pytest.raises(ValueError, match="context_length"):
        lm(torch.randint(0, VOCAB, (1, CTX + 1)))


def test_transformer_lm_is_causal():
    lm = small_lm()
    torch.manual_seed(3)
    ids = torch.randint(0, VOCAB, (2, CTX))
    out = lm(ids)
    for t in (0, 5, CTX - 1):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1) % VOCAB
        out2 = lm(changed)
        torch.testing.assert_close(out2[:, :t], out[:, :t], rtol=0, atol=1e-5)
        assert not torch.allclose(out2[:, t], out[:, t])  # the changed position itself does change


def test_transformer_lm_without_rope_still_works():
    lm = small_lm(rope_theta=None)
    assert all(layer.attn.rope is None for layer in lm.layers)
    assert lm(torch.randint(0, VOCAB, (2, 5))).shape == (2, 5, VOCAB)


def test_sgd_on_transformer_lm_reduces_loss_on_a_fixed_batch():
    lm = small_lm()
    torch.manual_seed(0)
    data = torch.randint(0, VOCAB, (4, CTX + 1))
    x, y = data[:, :-1], data[:, 1:]
    opt = torch.optim.SGD(lm.parameters(), lr=0.5)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = cross_entropy(lm(x), y)
        loss.backward()
        clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[0] == pytest.approx(math.log(VOCAB), rel=0.3)  # starts near uniform
    assert losses[-1] < 0.8 * losses[0], losses


def test_every_parameter_gets_a_gradient():
    lm = small_lm()
    ids = torch.randint(0, VOCAB, (2, 8))
    cross_entropy(lm(ids[:, :-1]), ids[:, 1:]).backward()
    for name, p in lm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- Cruncher


def test_cruncher_forward_shape():
    torch.manual_seed(0)
    model = Cruncher(dim=16, num_layers=3)
    assert len(model.layers) == 3 and model.final.weight.shape == (1, 16)
    assert model(torch.randn(5, 16)).shape == (5,)
    x = torch.randn(5, 16)
    expected = x
    for layer in model.layers:
        expected = expected @ layer.weight.T
    torch.testing.assert_close(model(x), (expected @ model.final.weight.T).squeeze(-1))


# ---------------------------------------------------------------- cross_entropy


def test_cross_entropy_matches_torch_over_leading_dims():
    torch.manual_seed(0)
    B, T, V = 3, 5, 11
    logits = torch.randn(B, T, V) * 3
    targets = torch.randint(0, V, (B, T))
    torch.testing.assert_close(cross_entropy(logits, targets), F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)))
    # 2-d too.
    torch.testing.assert_close(cross_entropy(logits[0], targets[0]), F.cross_entropy(logits[0], targets[0]))


def test_cross_entropy_gradient_matches_torch():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7, requires_grad=True)
    targets = torch.randint(0, 7, (2, 4))
    cross_entropy(logits, targets).backward()
    g = logits.grad.clone()
    logits.grad = None
    F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1)).backward()
    torch.testing.assert_close(g, logits.grad)


def test_cross_entropy_is_finite_for_huge_logits():
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 9) * 1e4
    logits[0, 0, 0] = 1e4
    targets = torch.randint(0, 9, (4, 6))
    ours = cross_entropy(logits, targets)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, F.cross_entropy(logits.reshape(-1, 9), targets.reshape(-1)))
    # bf16 logits: computed in fp32.
    ours16 = cross_entropy(logits.bfloat16(), targets)
    assert torch.isfinite(ours16)


def test_cross_entropy_rejects_wrong_target_shape():
    with pytest.raises(ValueError, match="targets"):
        cross_entropy(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError):
        cross_entropy(torch.randn(2, 3, 5), torch.zeros(6, dtype=torch.long))


def _ce_grads(fn, logits, targets, weights=None):
    """(loss, d loss / d logits) of `fn`, or of the weighted sum of its per-token losses."""
    x = logits.detach().clone().requires_grad_()
    out = fn(x, targets)
    (out if weights is None else (out * weights).sum()).backward()
    return out.detach(), x.grad


@settings(max_examples=30, deadline=None)
@given(lead=st.lists(st.integers(1, 5), min_size=1, max_size=3), vocab=st.integers(1, 70),
       scale=st.sampled_from([0.1, 3.0, 30.0]), dtype=st.sampled_from(["float32", "bfloat16"]),
       seed=st.integers(0, 2**16))
# Logits of 30 in fp32: a gradient from exp(x - lse) carried the rounding of lse (1.5e-6 off).
@example(lead=[2, 2, 2], vocab=6, scale=30.0, dtype="float32", seed=135)
def test_fast_cross_entropy_equals_readable_and_torch(lead, vocab, scale, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(*lead, vocab, generator=g) * scale).to(getattr(torch, dtype))
    targets = torch.randint(0, vocab, tuple(lead), generator=g)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1.6e-2, atol=1e-5)
    fast, fast_grad = _ce_grads(cross_entropy, logits, targets)
    slow, slow_grad = _ce_grads(readable_cross_entropy, logits, targets)
    ref, ref_grad = _ce_grads(lambda x, t: F.cross_entropy(x.reshape(-1, vocab).float(), t.reshape(-1)), logits, targets)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    assert fast_grad.dtype == logits.dtype
    torch.testing.assert_close(fast_grad, slow_grad, **tol)
    torch.testing.assert_close(fast_grad, ref_grad, **tol)
    # Per-token losses (bits per byte sums them) under a weighted backward.
    w = torch.rand(*lead, generator=g)
    fast_tok, fast_tok_grad = _ce_grads(token_cross_entropy, logits, targets, w)
    slow_tok, slow_tok_grad = _ce_grads(readable_token_cross_entropy, logits, targets, w)
    torch.testing.assert_close(fast_tok, slow_tok, rtol=1e-5, atol=1e-6)
    assert fast_tok.dtype == torch.float32
    torch.testing.assert_close(fast_tok_grad, slow_tok_grad, **tol)


def test_fast_cross_entropy_saves_only_the_logits_and_one_number_per_token():
    logits = torch.randn(6, 1000, requires_grad=True)
    targets = torch.randint(0, 1000, (6,))
    loss = token_cross_entropy(logits, targets)
    saved = loss.grad_fn.saved_tensors
    big = [t for t in saved if t.numel() >= logits.numel()]
    assert len(big) == 1 and big[0].data_ptr() == logits.data_ptr()  # the input itself, no copy


# ---------------------------------------------------------------- clip_grad_norm_


def _params_with_grads(scale):
    torch.manual_seed(0)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    ps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape) * scale
    return ps


@pytest.mark.parametrize("scale,max_norm", [(10.0, 1.0), (0.01, 1.0), (1.0, 0.0)])
def test_clip_grad_norm_matches_torch(scale, max_norm):
    ours, theirs = _params_with_grads(scale), _params_with_grads(scale)
    # A parameter without a gradient is skipped by both.
    ours.append(torch.nn.Parameter(torch.randn(3)))
    theirs.append(torch.nn.Parameter(torch.randn(3)))
    total = clip_grad_norm_(ours, max_norm)
    ref = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    torch.testing.assert_close(total, ref)
    for a, b in zip(ours[:-1], theirs[:-1]):
        torch.testing.assert_close(a.grad, b.grad)
    assert ours[-1].grad is None
    new_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in ours[:-1]))
    assert new_norm <= max(max_norm, 1e-6) + 1e-5
    if total < max_norm:
        # Below the max: gradients are left as they were.
        for a, b in zip(ours[:-1], _params_with_grads(scale)):
            torch.testing.assert_close(a.grad, b.grad)


def test_clip_grad_norm_accepts_a_generator_and_rejects_negative_max():
    lm = small_lm()
    ids = torch.randint(0, VOCAB, (2, 8))
    cross_entropy(lm(ids[:, :-1]), ids[:, 1:]).backward()
    clone = small_lm()
    clone.load_state_dict(lm.state_dict())
    for p, q in zip(lm.parameters(), clone.parameters()):
        q.grad = p.grad.clone()
    total = clip_grad_norm_(lm.parameters(), 0.1)  # a generator, consumed once
    ref = torch.nn.utils.clip_grad_norm_(clone.parameters(), 0.1)
    torch.testing.assert_close(total, ref)
    for p, q in zip(lm.parameters(), clone.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    with pytest.raises(ValueError):
        clip_grad_norm_(lm.parameters(), -1.0)
