"""Writes the inputs of the Rust BPE timing (`encode::bpe_timing::bpe_throughput`): the distinct
pieces of a text that are not tokens (the pieces that go through BPE when a tokenizer first
meets them), and the vocabulary, so that BPE alone can be timed without the pre-tokenizer or
the piece cache:

    python benches/bpe_pieces.py --vocab gpt2 --out /tmp/bpe_gpt2
    FASTBPE_BPE_DIR=/tmp/bpe_gpt2 cargo test --release bpe_throughput -- --ignored --nocapture
"""

from __future__ import annotations

import argparse
import os
import sys

import regex

import fastbpe
from fastbpe.patterns import NAMED

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from encode_bench import CL100K_FILE, DEFAULT_CORPUS, EOT, SHARED, prepare  # noqa: E402

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", choices=["cl100k", "gpt2"], default="gpt2")
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--out", required=True, help="folder to write pieces.txt and the vocabulary into")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.vocab == "gpt2":
        tok = fastbpe.Tokenizer.from_files(f"{SHARED}/gpt2/vocab.json", f"{SHARED}/gpt2/merges.txt")
        with open(os.path.join(args.out, "vocab.txt"), "w") as f:
            f.writelines(f"{i} {b.hex()}\n" for i, b in tok.vocab.items())
        with open(os.path.join(args.out, "merges.txt"), "w") as f:
            f.writelines(f"{a.hex()} {b.hex()}\n" for a, b in tok.merges)
    else:
        tok = fastbpe.Tokenizer.from_tiktoken(CL100K_FILE, "cl100k_base", {EOT: 100257})
        with open(os.path.join(args.out, "ranks.txt"), "w") as f:
            f.writelines(f"{i} {b.hex()}\n" for i, b in tok.vocab.items() if i != 100257)
    path, _ = prepare(args.corpus, args.mb)
    with open(path, encoding="utf-8") as f:
        pieces = dict.fromkeys(regex.findall(NAMED[args.vocab], f.read()))
    tokens = set(tok.vocab.values())
    kept = [p.encode() for p in pieces if len(p.encode()) > 1 and p.encode() not in tokens]
    with open(os.path.join(args.out, "pieces.txt"), "w") as f:
        f.writelines(p.hex() + "\n" for p in kept)
    print(f"{len(kept):,} pieces of {len(pieces):,} distinct go through BPE; written to {args.out}")


if __name__ == "__main__":
    main()
