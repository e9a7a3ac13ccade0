"""Custom regex patterns: the Rust engine (fancy-regex, rust/regex_split.rs) against the `regex`
module's path, on the same tokenizer and text, each checked to give the same ids.

    python benches/custom_regex_bench.py [--mb 10] [--pattern llama3] [--threads 2]

Encodes the first `--mb` MB of English Wikipedia (../shared/data/corpus/enwiki_100M.txt.gz) with
a 4,096-token tokenizer trained on it: `encode` on one thread, `encode_batch` of its lines and
`encode_file` on `--threads` threads; then times `train` on the same text both ways.
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time
import warnings
from pathlib import Path

import fastbpe
from fastbpe import patterns

PATTERNS = {
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+",
}
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus" / "enwiki_100M.txt.gz"


def python_path(tok: fastbpe.Tokenizer) -> fastbpe.Tokenizer:
    """The same tokenizer with the Rust splitter taken away: pieces from the `regex` module."""
    slow = fastbpe.Tokenizer(tok.vocab, tok.merges, tok.special_tokens, tok.pattern)
    slow._custom.splitter = None
    return slow


def best(f, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=10)
    ap.add_argument("--pattern", default="llama3", choices=sorted(PATTERNS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    pattern = PATTERNS[args.pattern]
    with gzip.open(DATA, "rt", encoding="utf-8", newline="") as f:
        text = f.read(int(args.mb * 1e6))
    mb = len(text.encode("utf-8")) / 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = fastbpe.train(iter([text[:2_000_000]]), 4096, special_tokens=["<|endoftext|>"], pattern=pattern)
    assert tok.regex_engine == "rust", patterns.python_reason(pattern)
    slow = python_path(tok)
    lines = text.splitlines(keepends=True)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "text.txt")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        cases = [
            ("encode, one thread", lambda t: t.encode(text)),
            (f"encode_batch of the lines, {args.threads} threads", lambda t: t.encode_batch(lines, num_threads=args.threads)),
            (
                f"encode_file, {args.threads} threads",
                lambda t: t.encode_file(path, os.path.join(d, "o.bin"), num_threads=args.threads, progress=False).tolist(),
            ),
        ]
        for name, f in cases:
            t_rust, ids_rust = best(lambda: f(tok), args.repeat)
            t_py, ids_py = best(lambda: f(slow), 1)
            assert ids_rust == ids_py, name
            rows.append((name, mb / t_py, mb / t_rust))
        t_train_rust, fast_tok = best(
            lambda: fastbpe.train(path, 4096, special_tokens=["<|endoftext|>"], pattern=pattern, num_threads=args.threads),
            1,
        )
        real = patterns.rust_splitter
        patterns.rust_splitter = lambda p: None  # training as before: pieces counted in Python
        try:
            t_train_py, slow_tok = best(
                lambda: fastbpe.train(path, 4096, special_tokens=["<|endoftext|>"], pattern=pattern, num_threads=args.threads),
                1,
            )
        finally:
            patterns.rust_splitter = real
        assert fast_tok.merges == slow_tok.merges
    print(f"{args.pattern} pattern as a custom regex, {mb:.1f} MB of enwiki, {os.cpu_count()} CPUs")
    print("| mode | regex module path MB/s | Rust engine MB/s | speed-up |")
    print("|---|---:|---:|---:|")
    for name, py, rust in rows:
        print(f"| {name} | {py:.2f} | {rust:.2f} | {rust / py:.1f}x |")
    print(f"| train vocab 4096, {args.threads} threads (s) | {t_train_py:.2f} s | {t_train_rust:.2f} s | {t_train_py / t_train_rust:.1f}x |")


if __name__ == "__main__":
    main()
