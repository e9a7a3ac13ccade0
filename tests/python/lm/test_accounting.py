"""fastbpe.lm.accounting: the napkin math of CS336 lecture 2."""

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from fastbpe.lm import accounting as acc  # noqa: E402

# ----------------------------------------------------------------------------- float formats


def test_float_formats_layout_and_range():
    f = acc.float_formats()
    assert list(f) == ["float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]
    layout = {name: (x.bits, x.exponent_bits, x.mantissa_bits) for name, x in f.items()}
    assert layout == {
        "float32": (32, 8, 23),
        "float16": (16, 5, 10),
        "bfloat16": (16, 8, 7),
        "float8_e4m3fn": (8, 4, 3),
        "float8_e5m2": (8, 5, 2),
    }
    assert f["float16"].max == 65504
    assert f["float8_e4m3fn"].max == 448
    assert f["float8_e5m2"].max == 57344
    assert f["bfloat16"].eps == 2**-7
    assert f["float16"].eps == 2**-10
    assert f["float32"].eps == 2**-23
    assert f["float16"].smallest_normal == 2**-14
    # bfloat16 has float32's range, not its precision
    assert f["bfloat16"].smallest_normal == f["float32"].smallest_normal
    assert f["bfloat16"].max == pytest.approx(f["float32"].max, rel=1e-2)
    assert f["float16"].dtype is torch.float16


def test_underflow_demo():
    d = acc.underflow_demo()
    assert d.value == 1e-8
    assert d.float16 == 0.0
    assert d.bfloat16 != 0.0 and d.bfloat16 == pytest.approx(1e-8, rel=2**-7)
    assert d.float32 == pytest.approx(1e-8, rel=1e-7)


# ----------------------------------------------------------------------------- memory


class _Block(nn.Module):
    """Same parameter shapes as CS336 assignment 1's pre-norm block (RoPE has none)."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.ln1 = nn.RMSNorm(d_model)
        self.attn = nn.Module()
        for name in ("q_proj", "k_proj", "v_proj", "output_proj"):
            setattr(self.attn, name, nn.Linear(d_model, d_model, bias=False))
        self.ln2 = nn.RMSNorm(d_model)
        self.ffn = nn.Module()
        self.ffn.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.ffn.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.ffn.w3 = nn.Linear(d_model, d_ff, bias=False)


class _TinyLM(nn.Module):
    def __init__(self, vocab_size, d_model, num_layers, d_ff):
        super().__init__()
        self.token_embeddings = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(_Block(d_model, d_ff) for _ in range(num_layers))
        self.ln_final = nn.RMSNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)


def test_param_count_matches_model():
    shape = dict(vocab_size=97, d_model=24, num_layers=3, d_ff=64)
    model = _TinyLM(**shape)
    actual = sum(p.numel() for p in model.parameters())
    assert acc.param_count(model) == actual
    analytic = acc.transformer_param_count(context_length=16, num_heads=4, **shape)
    assert analytic == actual
    p = acc.transformer_params(context_length=16, num_heads=4, **shape)
    assert p.total == actual
    # matmul parameters: everything but the embedding table and the RMSNorm gains
    norms = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.RMSNorm))
    assert p.matmul == actual - model.token_embeddings.weight.numel() - norms


def test_param_count_ignores_context_and_heads():
    a = acc.transformer_param_count(10000, 256, 512, 4, 16, 1344)
    assert a == acc.transformer_param_count(10000, 1024, 512, 4, 8, 1344)
    with pytest.raises(ValueError):
        acc.transformer_param_count(10000, 256, 512, 4, 7, 1344)


@pytest.mark.parametrize(
    "optimizer, expected",
    [("sgd", 8), ("sgd_momentum", 12), ("adagrad", 12), ("rmsprop", 12), ("adam", 16), ("adamw", 16)],
)
def test_bytes_per_param_fp32(optimizer, expected):
    assert acc.bytes_per_param(optimizer) == expected


def test_bytes_per_param_mixed_precision():
    assert acc.bytes_per_param("adamw", param_dtype=torch.bfloat16) == 2 + 2 + 8
    # bf16 params and grads plus an fp32 master copy: no memory saved (the lecture's caveat)
    assert acc.bytes_per_param("adamw", param_dtype=torch.bfloat16, master_weights=True) == 16
    assert acc.bytes_per_param("AdamW", state_dtype=torch.bfloat16) == 4 + 4 + 4
    with pytest.raises(ValueError, match="unknown optimizer"):
        acc.bytes_per_param("lion")


def test_training_memory_breakdown():
    m = acc.training_memory(1000, "adamw")
    assert (m.parameters, m.gradients, m.optimizer_state, m.total) == (4000, 4000, 8000, 16000)
    assert acc.training_memory(1000, "sgd", param_dtype=torch.bfloat16).total == 4000
    assert acc.optimizer_state_bytes(10, "rmsprop") == 40


# ----------------------------------------------------------------------------- activations

SHAPE = dict(d_model=64, num_layers=2, num_heads=4, d_ff=172, vocab_size=500)


def test_activation_formula_by_hand():
    B, T, d, L, h, f, V = 2, 8, 64, 2, 4, 172, 500
    a = acc.transformer_activation_bytes(B, T, **SHAPE)
    per_layer = 8 * B * T * d + 4 * B * T * f + 2 * B * h * T * T
    assert a.per_layer == 4 * per_layer
    assert a.total == 4 * (L * per_layer + 2 * B * T * d + B * T * V) + 8 * B * T
    assert acc.transformer_activation_bytes(B, T, dtype=torch.bfloat16, **SHAPE).per_layer == 2 * per_layer


def test_activations_linear_in_batch():
    one = acc.transformer_activation_bytes(3, 32, **SHAPE).total
    assert acc.transformer_activation_bytes(6, 32, **SHAPE).total == 2 * one
    assert acc.transformer_activation_bytes(12, 32, flash_attention=True, **SHAPE).total == 4 * (
        acc.transformer_activation_bytes(3, 32, flash_attention=True, **SHAPE).total
    )


def test_activations_quadratic_in_context_without_flash():
    short = acc.transformer_activation_bytes(2, 256, **SHAPE)
    long = acc.transformer_activation_bytes(2, 512, **SHAPE)
    assert long.attention_scores_per_layer == 4 * short.attention_scores_per_layer
    # the quadratic term makes doubling the context more than double the total
    assert long.total > 2 * short.total
    # at long context the scores dominate, so the growth approaches 4x
    huge1 = acc.transformer_activation_bytes(1, 8192, **SHAPE).total
    huge2 = acc.transformer_activation_bytes(1, 16384, **SHAPE).total
    assert 3.5 < huge2 / huge1 <= 4
    # flash attention keeps no T x T tensor: exactly linear in the context
    f1 = acc.transformer_activation_bytes(2, 256, flash_attention=True, **SHAPE).total
    f2 = acc.transformer_activation_bytes(2, 512, flash_attention=True, **SHAPE).total
    assert f2 == 2 * f1 and f1 < short.total


# ----------------------------------------------------------------------------- FLOPs


def test_matmul_and_training_flops():
    assert acc.matmul_flops(2, 3, 4) == 48
    assert acc.training_flops(70e9, 15e12) == pytest.approx(6.3e24)
    assert acc.training_flops(2, 5) == 60


def test_transformer_forward_flops():
    B, T, d, L, h, f, V = 4, 128, 64, 2, 4, 172, 500
    got = acc.transformer_forward_flops(B, T, d, L, h, f, V)
    per_layer = (
        4 * acc.matmul_flops(B * T, d, d)  # q, k, v, output projections
        + 2 * acc.matmul_flops(T, T, d // h) * B * h  # QK^T and AV for every head
        + 3 * acc.matmul_flops(B * T, f, d)  # w1, w3, w2
    )
    assert got == L * per_layer + acc.matmul_flops(B * T, V, d)
    # short context: about 2 x matmul params x tokens
    p = acc.transformer_params(V, T, d, L, h, f)
    assert got >= 2 * p.matmul * B * T


def test_peaks_and_mfu():
    assert acc.PEAK_FLOPS["H100"] == pytest.approx(989e12, rel=1e-3)
    assert acc.PEAK_FLOPS["H200"] == acc.PEAK_FLOPS["H100"]
    assert acc.PEAK_FLOPS["A100"] == 312e12
    assert acc.PEAK_FLOPS["H100-sparse"] == 1979e12
    assert acc.mfu(494.75e12, "h100") == pytest.approx(0.5)
    assert acc.mfu(1e12, 4e12) == 0.25
    assert acc.mfu(1e12, "4e12") == 0.25
    with pytest.raises(ValueError, match="unknown peak"):
        acc.mfu(1e12, "B200x")
    with pytest.raises(ValueError):
        acc.resolve_peak(-1)


def test_measure_cpu_matmul_peak():
    flops = acc.measure_cpu_matmul_peak(n=64, repeats=3)
    assert math.isfinite(flops) and flops > 0


# ----------------------------------------------------------------------------- napkin


def test_napkin_lecture_numbers():
    r = acc.napkin()
    assert r.total_flops == pytest.approx(6.3e24)
    assert r.peak_flops_per_s == 989.5e12
    assert "H100" in r.peak_name
    # the lecture: 6 * 70e9 * 15e12 / (1979e12 / 2 * 0.5 * 1024 * 86400) ~ 144 days
    assert r.days == pytest.approx(143.9, rel=1e-3)
    assert acc.napkin(peak=989e12).days == pytest.approx(144.0, rel=1e-3)
    # the sparse headline halves it -- the mistake the lecture's "/ 2" avoids
    assert acc.napkin(peak="H100-sparse").days == pytest.approx(r.days / 2)
    # 8 x 80 GB at 16 bytes/param (fp32 AdamW)
    assert r.max_params_in_memory == pytest.approx(40e9)
    assert acc.napkin(bytes_per_param=acc.bytes_per_param("sgd")).max_params_in_memory == pytest.approx(80e9)


def test_napkin_validates():
    for bad in (dict(gpus=0), dict(params=-1), dict(mfu=0), dict(mfu=1.5), dict(bytes_per_param=0)):
        with pytest.raises(ValueError):
            acc.napkin(**bad)


def test_format_napkin_states_the_peak():
    text = acc.format_napkin(acc.napkin(peak="A100"))
    assert "peak used: 312 TFLOP/s" in text and "A100" in text
    assert "40B parameters" in text
    assert "6.3e+24 FLOPs" in text


def test_napkin_main_default(capsys):
    acc.napkin_main([])
    out = capsys.readouterr().out
    assert "peak used: 989.5 TFLOP/s" in out
    assert "143.9 days" in out
    assert "1979 TFLOP/s" in out and "72.0 days" in out  # the sparse comparison line
    assert "about 40B parameters" in out


def test_napkin_main_options(capsys):
    acc.napkin_main(["--params", "7e9", "--tokens", "1e12", "--gpus", "64", "--peak", "A100", "--mfu", "0.4"])
    out = capsys.readouterr().out
    days = 6 * 7e9 * 1e12 / (64 * 312e12 * 0.4) / 86400
    assert f"{days:.1f} days" in out
    assert "peak used: 312 TFLOP/s" in out
    assert "sparse" not in out  # an explicit --peak prints only that peak
    acc.napkin_main(["--peak", "2e15"])
    assert "peak used: 2000 TFLOP/s" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gpus", "-8"], "gpus must be positive"),
        (["--mfu", "2"], "mfu must be in"),
        (["--peak", "TPU9000"], "unknown peak"),
        (["--bytes-per-param", "0"], "bytes_per_param must be positive"),
    ],
)
def test_napkin_main_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        acc.napkin_main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.strip().splitlines()[-1].startswith("fastbpe napkin: error:")


def test_the_torch_free_part_is_reexported():
    """fastbpe.napkin (no torch) owns the arithmetic; fastbpe.lm.accounting keeps its names."""
    import types

    from fastbpe import napkin

    moved = [
        n for n, v in vars(napkin).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
        and getattr(v, "__module__", napkin.__name__) == napkin.__name__  # defined there, not imported
    ]  # fmt: skip
    assert {"napkin", "napkin_main", "mfu", "PEAK_FLOPS", "transformer_forward_flops", "OPTIMIZER_STATE_BUFFERS"} <= set(moved)
    for name in moved:
        assert getattr(acc, name) is getattr(napkin, name), name


def test_gpu_peak_reads_the_one_table_by_device_name():
    from fastbpe import napkin

    assert acc.gpu_peak is napkin.gpu_peak  # one table, one lookup: fastbpe.napkin owns both
    assert napkin.gpu_peak("NVIDIA H100 80GB HBM3") == ("H100", napkin.PEAK_FLOPS["H100"])
    assert napkin.gpu_peak("NVIDIA H200") == ("H200", 1979e12 / 2)
    assert napkin.gpu_peak("NVIDIA A100-SXM4-80GB") == ("A100", 312e12)
    assert napkin.gpu_peak("Tesla T4") is None  # not in the table: no MFU rather than a wrong one
