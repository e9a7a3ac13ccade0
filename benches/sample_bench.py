"""Sampling speed: tokens/s of `fastbpe.lm.sample.sample_ids` with and without the KV cache.

    python benches/sample_bench.py [--preset tiny] [--new-tokens 256] [--vocab-size 4096] [--device cpu]

The model is the preset's shape with random weights (speed does not depend on what it learned);
greedy decoding from a one-token prompt, so both runs produce the same ids (checked).
"""

from __future__ import annotations

import argparse
import time

import torch

from fastbpe.lm import TransformerLM, preset
from fastbpe.lm.sample import sample_ids


def rate(model, n: int, use_cache: bool) -> tuple[float, list[int]]:
    sample_ids(model, [1], 8, temperature=0, use_cache=use_cache)  # warm-up
    t0 = time.perf_counter()
    ids = sample_ids(model, [1], n, temperature=0, use_cache=use_cache)
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()
    return len(ids) / (time.perf_counter() - t0), ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    c = preset(args.preset)
    torch.manual_seed(0)
    model = TransformerLM.from_config(c.replace(vocab_size=args.vocab_size), device=args.device).eval()
    cached, a = rate(model, args.new_tokens, True)
    full, b = rate(model, args.new_tokens, False)
    same = "same ids" if a == b else "DIFFERENT ids"
    print(f"{args.preset} (context {c.context_length}), {args.new_tokens} new tokens on {args.device}, "
          f"{torch.get_num_threads()} threads:")
    print(f"  with KV cache    {cached:9,.0f} tokens/s")
    print(f"  without (full)   {full:9,.0f} tokens/s")
    print(f"  ratio            {cached / full:9.1f}x   ({same})")


if __name__ == "__main__":
    main()
