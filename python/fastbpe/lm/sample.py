"""Sampling text from a trained model."""

from __future__ import annotations

import math

import torch

from fastbpe.lm.checkpoint import unwrap


def check_sampling(temperature: float, top_p: float | None, names: tuple[str, str] = ("temperature", "top_p")) -> None:
    """ValueError unless temperature is a finite number >= 0 and top_p is None or in (0, 1];
    `names` are what the message calls them (the CLI's flags)."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"{names[0]} must be a finite number >= 0 (0 samples greedily), got {temperature}")
    if top_p is not None and not (0 < top_p <= 1):
        raise ValueError(f"{names[1]} must be in (0, 1] (1 keeps every token), got {top_p}")


def _unknown_ids(vocab_size: int, tokenizer, device) -> torch.Tensor | None:
    """A mask of the model's ids that the tokenizer has no token for (gaps in its ids, or a
    model larger than the tokenizer), or None when there are none."""
    known = torch.zeros(vocab_size, dtype=torch.bool)
    known[[i for i in tokenizer.vocab if 0 <= i < vocab_size]] = True
    return None if bool(known.all()) else (~known).to(device)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_p: float | None = None,
    eos_token: str = "<|endoftext|>",
    generator: torch.Generator | None = None,
) -> str:
    """Continue `prompt` by up to `max_new_tokens` tokens; stops at `eos_token`.

    temperature 0 is greedy; `top_p` keeps the smallest set of most likely tokens whose
    probabilities add up to at least p (nucleus sampling)."""
    check_sampling(temperature, top_p)
    model = unwrap(model)
    was_training = model.training
    model.eval()
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
    unknown = _unknown_ids(model.vocab_size, tokenizer, device)
    x = torch.tensor([ids], device=device)
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(x[:, -model.context_length :])[0, -1].float()
        if unknown is not None:
            logits = logits.masked_fill(unknown, -math.inf)  # ids that would not decode are never drawn
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            if top_p is not None and top_p < 1:
                sorted_p, order = probs.sort(descending=True)
                # Drop a token when the tokens more likely than it already reach top_p.
                drop = sorted_p.cumsum(0) - sorted_p >= top_p
                sorted_p[drop] = 0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
            nxt = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        if nxt == eos:
            break
        new.append(nxt)
        x = torch.cat([x, torch.tensor([[nxt]], device=device)], dim=1)
    model.train(was_training)
    return tokenizer.decode(new)
