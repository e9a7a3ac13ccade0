"""Evaluation on a token file: mean loss, perplexity and bits per byte.

Bits per byte does not depend on the tokenizer's vocabulary size, so models with different
tokenizers compare on it:

    bpb = (sum over predicted tokens of the loss in nats) / (ln 2 * bytes of those tokens)

The bytes of a token are its bytes in the tokenizer (`Tokenizer.vocab`); special tokens such as
<|endoftext|> count 0 bytes (nanochat does the same), ids the tokenizer does not know count 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fastbpe.lm.data import sequential_batches
from fastbpe.lm.nn import token_cross_entropy


def token_byte_lengths(tokenizer, vocab_size: int, device=None) -> torch.Tensor:
    """int64 (vocab_size,): the byte length of each id's token; 0 for special tokens and for ids
    the tokenizer has no token for."""
    lengths = torch.zeros(vocab_size, dtype=torch.int64)
    specials = set(tokenizer.special_token_ids.values())
    for i, token in tokenizer.vocab.items():
        if 0 <= i < vocab_size and i not in specials:
            lengths[i] = len(token)
    return lengths.to(device) if device is not None else lengths


def bits_per_byte(nats: float, n_bytes: int) -> float | None:
    """The formula above; None when the predicted tokens hold no bytes (all special)."""
    return nats / (math.log(2) * n_bytes) if n_bytes else None


@dataclass
class EvalResult:
    loss: float  # mean nats per predicted token
    tokens: int  # predicted tokens
    nats: float  # summed loss
    bytes: int | None  # bytes of the predicted tokens (None without a tokenizer)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50))  # exp of a diverged loss would overflow

    @property
    def bpb(self) -> float | None:
        return None if self.bytes is None else bits_per_byte(self.nats, self.bytes)


def eval_totals(model, data: np.ndarray, batch_size: int, context_length: int, device, byte_lengths=None,
                max_batches: int | None = None, amp=None) -> torch.Tensor:
    """float64 (3,) on `device`: summed nats, predicted tokens, their bytes (0 without
    `byte_lengths`), over consecutive windows of `data`; summable across DDP ranks."""
    import contextlib

    total = torch.zeros(3, device=device, dtype=torch.float64)
    with torch.no_grad(), (amp or contextlib.nullcontext()):
        for x, y in sequential_batches(data, batch_size, context_length, device, max_batches=max_batches):
            total[0] += token_cross_entropy(model(x), y).double().sum()
            total[1] += y.numel()
            if byte_lengths is not None:
                total[2] += byte_lengths[y].sum().double()
    return total


def result_from_totals(total: torch.Tensor, with_bytes: bool) -> EvalResult:
    nats, tokens, n_bytes = (float(v) for v in total.cpu())
    return EvalResult(nats / tokens, int(tokens), nats, int(n_bytes) if with_bytes else None)


def evaluate(model, data: np.ndarray, batch_size: int, context_length: int, device="cpu", tokenizer=None,
             max_batches: int | None = None) -> EvalResult:
    """Loss, perplexity and (with `tokenizer`) bits per byte of `model` on `data`."""
    was_training = model.training
    model.eval()
    lengths = token_byte_lengths(tokenizer, model.vocab_size, device) if tokenizer is not None else None
    try:
        total = eval_totals(model, data, batch_size, context_length, device, lengths, max_batches)
    finally:
        model.train(was_training)
    return result_from_totals(total, lengths is not None)


__all__ = ["EvalResult", "bits_per_byte", "eval_totals", "evaluate", "result_from_totals", "token_byte_lengths"]
