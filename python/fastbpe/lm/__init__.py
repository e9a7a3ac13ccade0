"""fastbpe.lm: the PyTorch side — token batches, transformer modules, hand-written optimizers,
resource accounting, checkpoints and the training loop. Needs torch: pip install "fastbpe-rs[lm]".
"""

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError('fastbpe.lm needs PyTorch: pip install "fastbpe-rs[lm]"') from e
try:
    import einops  # noqa: F401
except ImportError as e:  # PyTorch installed on its own, without the rest of the extra
    raise ImportError('fastbpe.lm needs einops: pip install "fastbpe-rs[lm]"') from e

from fastbpe.lm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fastbpe.lm.data import BatchLoader, get_batch, open_tokens, sequential_batches
from fastbpe.lm.nn import (
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
    scaled_dot_product_attention,
    silu,
    softmax,
)
from fastbpe.lm.optim import SGD, AdaGrad, Adam, AdamW, RMSProp, cosine_lr

__all__ = [
    "BatchLoader", "CheckpointError", "Cruncher", "Embedding", "Linear", "MultiHeadSelfAttention", "RMSNorm",
    "RotaryEmbedding", "SwiGLU", "TransformerBlock", "TransformerLM", "clip_grad_norm_", "cross_entropy",
    "get_batch", "load_checkpoint", "open_tokens", "save_checkpoint", "scaled_dot_product_attention",
    "sequential_batches", "silu", "softmax", "SGD", "AdaGrad", "Adam", "AdamW", "RMSProp", "cosine_lr",
]

from fastbpe.lm.config import PRESETS, TrainConfig, preset  # noqa: E402
from fastbpe.lm.sample import generate  # noqa: E402
from fastbpe.lm.trainer import RunResult, TrainingDiverged, train_lm  # noqa: E402

__all__ += ["PRESETS", "TrainConfig", "preset", "generate", "RunResult", "TrainingDiverged", "train_lm"]
from fastbpe.lm.huggingface import export_huggingface, import_huggingface  # noqa: E402
from fastbpe.lm.run import load_run  # noqa: E402

__all__ += ["export_huggingface", "import_huggingface", "load_run"]
