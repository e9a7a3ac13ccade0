"""The `fastbpe` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings


def _die(msg: str) -> None:
    print(f"fastbpe: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _summary(tok, corpus: str, seconds: float, num_merges: int) -> None:
    """Vocabulary size, merges per second, compression ratio and some learned tokens."""
    with open(corpus, encoding="utf-8", errors="replace") as f:
        sample = f.read(1 << 20)
    print(f"corpus            {corpus} ({os.path.getsize(corpus) / 1e6:.1f} MB)")
    print(f"vocabulary        {tok.vocab_size} tokens ({len(tok.merges)} merges, {len(tok.special_tokens)} special)")
    print(f"training time     {seconds:.2f} s ({num_merges / max(seconds, 1e-9):,.0f} merges/s end to end)")
    from fastbpe.simple import compression_ratio

    print(f"compression       {compression_ratio(tok, sample):.2f} bytes/token (on the first MB of the corpus)")
    words = [t for t in tok.vocab.values() if t.strip() and t.decode("utf-8", "replace").strip().isalpha()]
    longest = sorted(words, key=len, reverse=True)[:8]
    last = [tok.vocab[256 + i] for i in range(max(0, len(tok.merges) - 8), len(tok.merges))]
    print("longest words     " + "  ".join(repr(t.decode("utf-8", errors="replace")) for t in longest))
    print("last merges       " + "  ".join(repr(t.decode("utf-8", errors="replace")) for t in last))


def cmd_train_tokenizer(args) -> None:
    import fastbpe

    for p in args.corpus:
        if not os.path.isfile(p):
            _die(f"no such file: {p}")
    t0 = time.perf_counter()
    try:
        tok = fastbpe.train(
            args.corpus,
            args.vocab_size,
            special_tokens=args.special_token,
            pattern=None if args.pattern == "none" else args.pattern,
            num_threads=args.threads,
        )
    except (ValueError, OSError) as e:
        _die(str(e))
    seconds = time.perf_counter() - t0
    tok.save(args.out)
    _summary(tok, args.corpus[0], seconds, len(tok.merges))
    print(f"saved             {args.out}")


def cmd_compare(args) -> None:
    """The lecture's table: character, byte, word and BPE tokenizers on one file."""
    import fastbpe
    from fastbpe.simple import ByteTokenizer, CharacterTokenizer, WordTokenizer, compression_ratio

    if not os.path.isfile(args.file):
        _die(f"no such file: {args.file}")
    with open(args.file, encoding="utf-8", errors="replace", newline="") as f:
        text = f.read(args.max_bytes)
    # Word vocabulary and BPE are learned on the first 90% and measured on the whole text, so
    # the word tokenizer meets unseen words as it would in use.
    cut = int(len(text) * 0.9)
    train_part = text[:cut]
    if args.tokenizer:
        bpe = fastbpe.Tokenizer.load(args.tokenizer)
    else:
        bpe = fastbpe.train(iter([train_part]), args.vocab_size, progress=False)
    tokenizers = [
        ("character", CharacterTokenizer()),
        ("byte", ByteTokenizer()),
        ("word", WordTokenizer(train_part)),
        (f"bpe ({bpe.vocab_size})", bpe),
    ]
    print(f"{args.file}: {len(text.encode('utf-8')) / 1e6:.2f} MB measured (word and BPE vocabularies from the first 90%)")
    print(f"| tokenizer | vocabulary | bytes/token | unknown tokens | encode time (s) |")
    print(f"|---|---:|---:|---:|---:|")
    for name, tok in tokenizers:
        t0 = time.perf_counter()
        ids = tok.encode(text)
        seconds = time.perf_counter() - t0
        ratio = compression_ratio(tok, text) if ids else 0.0
        unk = getattr(tok, "unk_id", None)
        unk_rate = (sum(1 for i in ids if i == unk) / len(ids)) if (unk is not None and ids) else 0.0
        print(f"| {name} | {tok.vocab_size:,} | {ratio:.2f} | {unk_rate:.2%} | {seconds:.3f} |")


def cmd_demo(args) -> None:
    from fastbpe import corpus as corpus_mod

    path = args.corpus or str(corpus_mod.shakespeare())
    out = args.out
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    ns = argparse.Namespace(
        corpus=[path], vocab_size=args.vocab_size, out=out, special_token=["<|endoftext|>"], pattern="gpt2", threads=None
    )
    cmd_train_tokenizer(ns)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fastbpe", description="Byte-level BPE tokenizers and the LM path after them.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-tokenizer", help="learn a BPE tokenizer from text files")
    p.add_argument("corpus", nargs="+", help="UTF-8 text files")
    p.add_argument("--vocab-size", type=int, required=True, help="256 bytes + merges + special tokens")
    p.add_argument("--out", required=True, help="where to write the tokenizer (JSON)")
    p.add_argument(
        "--special-token", action="append", default=None, help="repeatable; default: <|endoftext|>"
    )
    p.add_argument("--pattern", default="gpt2", help="gpt2, cl100k, o200k, none, or a regex (default gpt2)")
    p.add_argument("--threads", type=int, default=None, help="default: all cores")
    p.set_defaults(func=cmd_train_tokenizer)

    p = sub.add_parser("compare", help="the lecture's table: character, byte, word and BPE tokenizers on a file")
    p.add_argument("file", help="a UTF-8 text file")
    p.add_argument("--tokenizer", help="a saved BPE tokenizer (default: train one on the file)")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary when training one")
    p.add_argument("--max-bytes", type=int, default=5_000_000, help="read at most this many characters")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("demo", help="the main job: train a tokenizer on the default corpus and summarize it")
    p.add_argument("--corpus", help="a text file instead of the default Shakespeare corpus")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--out", default="runs/demo/tokenizer.json")
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    if getattr(args, "special_token", "unset") is None:
        args.special_token = ["<|endoftext|>"]
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        args.func(args)


if __name__ == "__main__":
    main()
