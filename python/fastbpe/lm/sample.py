"""Sampling text from a trained model.

Generation keeps a KV cache (see `nn.KVCache`): each step feeds only the new token, so a step
costs one token's forward pass instead of the whole window's. The model sees at most
context_length tokens: when the window is full it drops its older half and the cache is refilled
from the newer half (one forward pass over context_length / 2 tokens), which keeps the cost
linear in the new tokens. Without the cache (`use_cache=False`) every step runs the full forward
pass over the same window: the readable definition, which the tests check the cache against.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Callable, Iterator

import torch

from fastbpe.lm.checkpoint import unwrap


def check_sampling(temperature: float, top_p: float | None, top_k: int | None = None,
                   names: tuple[str, ...] = ("temperature", "top_p", "top_k")) -> None:
    """ValueError unless temperature is a finite number >= 0, top_p is None or in (0, 1] and top_k
    is None or an integer >= 1; `names` are what the message calls them (the CLI's flags)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"{names[0]} must be a finite number >= 0 (0 samples greedily), got {temperature}")
    if top_p is not None and not (0 < top_p <= 1):
        raise ValueError(f"{names[1]} must be in (0, 1] (1 keeps every token), got {top_p}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"{names[2]} must be an integer >= 1 (the number of most likely tokens kept), got {top_k}")


def _unknown_ids(vocab_size: int, tokenizer, device) -> torch.Tensor | None:
    """A mask of the model's ids that the tokenizer has no token for (gaps in its ids, or a
    model larger than the tokenizer), or None when there are none."""
    known = torch.zeros(vocab_size, dtype=torch.bool)
    known[[i for i in tokenizer.vocab if 0 <= i < vocab_size]] = True
    return None if bool(known.all()) else (~known).to(device)


def window_start(n: int, start: int, context_length: int) -> int:
    """Where the model's window over `n` tokens begins, given where it began last step: it stays
    put until it would exceed context_length, then keeps only the newer half."""
    if n - start <= context_length:
        return start
    return n - max(1, context_length // 2)


def next_logits(model, ids: list[int], use_cache: bool = True) -> Iterator[torch.Tensor]:
    """Yields the logits (float32, (vocab,)) for the token after `ids`, each time the caller has
    appended one token to `ids` (and once at first). Cached and uncached steps see the same window."""
    device = next(model.parameters()).device
    ctx = model.context_length
    start = max(0, len(ids) - ctx)
    cache, cache_start = None, None
    while True:
        start = window_start(len(ids), start, ctx)
        if not use_cache:
            logits = model(torch.tensor([ids[start:]], device=device))
        elif cache is None or cache_start != start:
            cache, cache_start = model.new_cache(), start
            logits = model(torch.tensor([ids[start:]], device=device), cache=cache)
        else:
            logits = model(torch.tensor([ids[-1:]], device=device), cache=cache)
        yield logits[0, -1].float()


def pick(logits: torch.Tensor, temperature: float, top_k: int | None = None, top_p: float | None = None,
         generator: torch.Generator | None = None) -> int:
    """One token from `logits`: the argmax at temperature 0; else a draw from softmax(logits / T)
    restricted to the top_k most likely tokens, then to the nucleus of probability top_p."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        # Drop a token when the tokens more likely than it already reach top_p.
        drop = sorted_p.cumsum(0) - sorted_p >= top_p
        sorted_p[drop] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


@torch.no_grad()
def sample_ids(model, ids: list[int], max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, eos: int | None = None, generator: torch.Generator | None = None,
               banned: torch.Tensor | None = None, use_cache: bool = True,
               on_token: Callable[[int], None] | None = None) -> list[int]:
    """Up to `max_new_tokens` ids after `ids` (which must be non-empty), stopping before `eos`;
    `banned` (a bool mask over the vocabulary) are never drawn; `on_token` sees each new id."""
    check_sampling(temperature, top_p, top_k)
    model = unwrap(model)
    was_training = model.training
    model.eval()
    ids = list(ids)
    new: list[int] = []
    try:
        steps = next_logits(model, ids, use_cache)
        for _ in range(max_new_tokens):
            logits = next(steps)
            if banned is not None:
                logits = logits.masked_fill(banned, -math.inf)
            nxt = pick(logits, temperature, top_k, top_p, generator)
            if nxt == eos:
                break
            new.append(nxt)
            ids.append(nxt)
            if on_token is not None:
                on_token(nxt)
    finally:
        model.train(was_training)
    return new


def generate(
    model,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_p: float | None = None,
    eos_token: str = "<|endoftext|>",
    generator: torch.Generator | None = None,
    top_k: int | None = None,
    use_cache: bool = True,
    stream: Callable[[str], None] | None = None,
) -> str:
    """Continue `prompt` by up to `max_new_tokens` tokens; stops at `eos_token`.

    temperature 0 is greedy; `top_k` keeps the k most likely tokens; `top_p` keeps the smallest
    set of most likely tokens whose probabilities add up to at least p (nucleus sampling).
    `stream` receives the text as it comes (a character split across tokens comes whole, once its
    last byte has); the pieces add up to the returned text."""
    check_sampling(temperature, top_p, top_k)
    model = unwrap(model)
    device = next(model.parameters()).device
    eos = tokenizer.special_token_ids.get(eos_token)
    ids = tokenizer.encode(prompt)
    if not ids:
        if eos is None:
            raise ValueError("an empty prompt needs an end-of-text token to start from")
        ids = [eos]
    if max(ids) >= model.vocab_size:
        raise ValueError(f"the prompt has token id {max(ids)}, outside the model's vocabulary of {model.vocab_size}: "
                         "the tokenizer is not the one the model was trained with")
    on_token = None
    if stream is not None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def on_token(i: int) -> None:
            piece = decoder.decode(tokenizer.decode_bytes([i]))
            if piece:
                stream(piece)

    new = sample_ids(model, ids, max_new_tokens, temperature, top_k, top_p, eos, generator,
                     banned=_unknown_ids(model.vocab_size, tokenizer, device), use_cache=use_cache, on_token=on_token)
    if stream is not None:
        rest = decoder.decode(b"", final=True)
        if rest:
            stream(rest)
    return tokenizer.decode(new)
