"""Corpus formats: MB/s of `encode_file` and `train` on the same documents stored as plain text,
JSON lines, and JSON lines compressed with gzip and zstd (and Parquet when pyarrow is there).

    python benches/corpus_bench.py [--mb 50] [--vocab-size 2000]

The documents are the first `--mb` MB of the shared English Wikipedia (its articles, split at
`<|endoftext|>`); the text file holds them joined by `<|endoftext|>`, so every format carries
the same documents. MB/s are of the documents' text (UTF-8), whatever the file's size on disk.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import tempfile
import time

import fastbpe
from fastbpe import corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
DEFAULT_CORPUS = os.path.join(SHARED, "corpus", "enwiki_100M.txt.gz")
EOT = "<|endoftext|>"


def documents(path: str, mb: float) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        text = f.read(int(mb * 1e6))
    docs = text.split(EOT)
    return docs[:-1] if len(docs) > 1 else docs  # the last one is cut short


def write_files(folder: str, docs: list[str]) -> dict[str, str]:
    files = {"text": os.path.join(folder, "c.txt"), "jsonl": os.path.join(folder, "c.jsonl")}
    with open(files["text"], "w", encoding="utf-8", newline="") as f:
        f.write(EOT.join(docs))
    lines = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode("utf-8")
    with open(files["jsonl"], "wb") as f:
        f.write(lines)
    files["jsonl.gz"] = files["jsonl"] + ".gz"
    with open(files["jsonl.gz"], "wb") as f:
        f.write(gzip.compress(lines, compresslevel=6))
    try:
        import zstandard

        files["jsonl.zst"] = files["jsonl"] + ".zst"
        with open(files["jsonl.zst"], "wb") as f:
            f.write(zstandard.ZstdCompressor(level=3).compress(lines))
    except ImportError:
        pass
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        files["parquet"] = os.path.join(folder, "c.parquet")
        pq.write_table(pa.table({"text": docs}), files["parquet"], row_group_size=2000)
    except ImportError:
        pass
    return files


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--mb", type=float, default=50)
    ap.add_argument("--vocab-size", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    docs = documents(args.corpus, args.mb)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    tok = fastbpe.Tokenizer.from_files(
        os.path.join(SHARED, "gpt2", "vocab.json"), os.path.join(SHARED, "gpt2", "merges.txt"), [EOT]
    )
    print(f"{len(docs):,} documents, {mb:.1f} MB of text; {os.cpu_count()} cores")
    print("| file | size on disk (MB) | read only (MB/s) | encode_file, GPT-2 (MB/s) | train, vocab "
          f"{args.vocab_size:,} (MB/s) |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        files = write_files(folder, docs)
        out = os.path.join(folder, "out.bin")
        # Rounds over every format, each the best of its rounds: drift on a shared machine hits
        # the formats alike.
        times: dict[tuple[str, str], float] = {}
        for _ in range(args.repeat):
            for name, path in files.items():
                if name == "text":
                    read = lambda: sum(map(len, corpus.text_parts(path)))  # noqa: E731
                else:
                    read = lambda: sum(map(len, corpus.documents(path)))  # noqa: E731
                for what, fn in (("read", read), ("encode", lambda: tok.encode_file(path, out, progress=False)),
                                 ("train", lambda: fastbpe.train(path, args.vocab_size, progress=False))):
                    t = timed(fn)
                    times[name, what] = min(t, times.get((name, what), t))
        for name, path in files.items():
            size = os.path.getsize(path) / 1e6
            read, enc, train = (mb / times[name, what] for what in ("read", "encode", "train"))
            print(f"| {name} | {size:.1f} | {read:.0f} | {enc:.1f} | {train:.1f} |")


if __name__ == "__main__":
    main()
