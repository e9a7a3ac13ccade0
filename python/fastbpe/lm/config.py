"""Training configuration: one dataclass, a reason beside every default, and presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class TrainConfig:
    # ---- model (CS336's TransformerLM) ----
    vocab_size: int = 0  # 0: the tokenizer's largest id + 1 (see train_lm), or the checkpoint's on resume
    context_length: int = 256  # the handout's TinyStories setting
    d_model: int = 512
    num_layers: int = 4
    num_heads: int = 16
    d_ff: int = 1344  # ~8/3 d_model rounded to a multiple of 64: SwiGLU's usual width
    rope_theta: float = 10000.0  # RoPE's standard base

    # ---- optimization ----
    batch_size: int = 32  # sequences per micro-batch
    grad_accum_steps: int = 1  # micro-batches per optimizer step (bigger effective batch, same memory)
    max_steps: int = 5000
    max_lr: float = 1e-3  # AdamW on small transformers tolerates ~1e-3
    min_lr: float = 1e-4  # cosine floor: a tenth of the peak, as in Chinchilla
    warmup_steps: int = 100  # linear warmup keeps early Adam steps (poor second moments) small
    weight_decay: float = 0.1  # on matrices only; norms and embeddings are not decayed
    beta1: float = 0.9
    beta2: float = 0.95  # lower than Adam's 0.999: LLM practice, reacts faster to loss spikes
    eps: float = 1e-8
    grad_clip: float = 1.0  # global L2 norm; guards against rare huge gradients

    # ---- hardware ----
    device: str = "auto"  # cuda when available, else cpu
    precision: str = "auto"  # bf16 on GPUs that support it, fp32 on CPU; or fp32|bf16|fp16
    compile: bool = False  # torch.compile: faster steps after a slow first one
    # Off by default because it can cost speed: kernels that are fastest when threads race
    # (the CPU embedding backward's atomic adds) make two runs of one seed differ in the last
    # bits. On, torch.use_deterministic_algorithms(True) picks the reproducible kernels (and
    # cuBLAS gets a fixed workspace), so a run and its --resume repeat bit for bit on the same
    # machine, software and thread count.
    deterministic: bool = False

    # ---- cadence ----
    eval_every: int = 200  # steps between evaluations on the validation array
    eval_batches: int = 20  # batches per evaluation (0: the whole validation array)
    checkpoint_every: int = 500  # steps between checkpoints
    keep_checkpoints: int = 3  # the newest k are kept
    log_every: int = 50  # steps between plain progress lines when stderr is not a terminal (no bar)
    report: str = "none"  # also report to "tensorboard" (RUN/tb) or "wandb"
    seed: int = 0  # one seed for python, numpy, torch, CUDA and the batch generator

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        positive = ["context_length", "d_model", "num_layers", "num_heads", "d_ff", "batch_size", "grad_accum_steps",
                    "max_steps", "eval_every", "checkpoint_every", "keep_checkpoints", "log_every"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by num_heads {self.num_heads}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {self.precision!r}")
        from fastbpe.lm.report import BACKENDS

        if self.report not in BACKENDS:
            raise ValueError(f"report must be one of {', '.join(BACKENDS)}, not {self.report!r}")
        if self.vocab_size < 0:
            raise ValueError(f"vocab_size must be positive (or 0: taken from the tokenizer), got {self.vocab_size}")
        if not 0 <= self.min_lr <= self.max_lr:
            raise ValueError(f"need 0 <= min_lr <= max_lr, got min_lr {self.min_lr} and max_lr {self.max_lr}: "
                             "the cosine schedule falls from max_lr to min_lr")


PRESETS: dict[str, dict] = {
    # A few million parameters: visibly learns within minutes on a 2-core CPU.
    "tiny": dict(context_length=128, d_model=128, num_layers=4, num_heads=4, d_ff=384, batch_size=16,
                 max_steps=600, max_lr=3e-3, min_lr=3e-4, warmup_steps=30, eval_every=100, eval_batches=8,
                 checkpoint_every=200),
    # The CS336 handout's TinyStories model.
    "small": dict(context_length=256, d_model=512, num_layers=4, num_heads=16, d_ff=1344, batch_size=32,
                  max_steps=5000),
    # GPT-2 small's shape (768 wide, 12 layers and heads, 1024 context) with SwiGLU and an untied head.
    "gpt2-small": dict(context_length=1024, d_model=768, num_layers=12, num_heads=12, d_ff=2048, batch_size=16,
                       max_steps=20000, max_lr=6e-4, min_lr=6e-5, warmup_steps=700),
}


def preset(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **overrides})


#: The fields that decide the model's parameters: a checkpoint resumes only into the same ones.
MODEL_FIELDS = ("vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff", "rope_theta")


def config_from_dict(d: dict) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in d.items() if k in known})


def decays(name: str, param) -> bool:
    """Whether weight decay applies to a parameter: matrices do; norm gains, biases (vectors) and
    the token embeddings do not (decaying an embedding shrinks rare tokens' rows for nothing)."""
    return param.dim() >= 2 and "embeddings" not in name


def param_groups(model, weight_decay: float) -> list[dict]:
    """The optimizer's two parameter groups (nanoGPT's configure_optimizers): the parameters that
    `decays` with `weight_decay`, then the others with none, each in the model's order."""
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if decays(n, p)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}]


__all__ = ["TrainConfig", "PRESETS", "MODEL_FIELDS", "preset", "config_from_dict", "param_groups"]
