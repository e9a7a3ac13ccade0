"""Sampling text from a trained model."""

from __future__ import annotations

import torch

from fastbpe.lm.checkpoint import unwrap


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
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
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
    x = torch.tensor([ids], device=device)
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(x[:, -model.context_length :])[0, -1].float()
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
