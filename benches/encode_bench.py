"""Encoding throughput: fastbpe vs tiktoken vs HF tokenizers on the same text and vocabularies.

    python benches/encode_bench.py [--mb 20] [--corpus PATH] [--repeat 3]

Every measurement runs in its own process (so thread settings and caches do not leak). The
rows are measured in --repeat interleaved rounds, two runs per process, and each row keeps
its best: a slow spell on a shared machine then hits every encoder alike instead of one row.
fastbpe's one-thread ids are checked equal to tiktoken's (a digest of the whole array). The
scaling line (batch and file against one thread) comes from one process that alternates the
three, so the ratio is not skewed by the machine's speed drifting between processes. Rows: one thread
(`encode_ordinary` of the whole text; HF's `encode_batch` of the lines with one Rayon thread),
all threads (batch encoding of the lines), and fastbpe's file -> token file (`encode_file`).
Also the corners where BPE encoders go quadratic.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
DEFAULT_CORPUS = os.path.join(SHARED, "corpus", "enwiki_100M.txt.gz")
CL100K_FILE = os.path.join(SHARED, "tiktoken_cache", "9b5ad71b2ce5302211f9c61530b329a4922fc6a4")
CACHE = os.path.join(tempfile.gettempdir(), "fastbpe-bench")

# The child: builds one encoder, times one operation, prints JSON.
CHILD = r"""
import json, os, sys, time
vocab, lib, mode, path, repeat, hf_json = sys.argv[1:7]
repeat = int(repeat)
text = open(path, encoding="utf-8", newline="").read()
lines = text.splitlines(keepends=True)
SHARED = os.environ["FASTBPE_SHARED"]
def fast():
    import fastbpe
    if vocab == "gpt2":
        return fastbpe.Tokenizer.from_files(f"{SHARED}/gpt2/vocab.json", f"{SHARED}/gpt2/merges.txt", ["<|endoftext|>"])
    return fastbpe.Tokenizer.from_tiktoken(f"{SHARED}/tiktoken_cache/9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
                                           "cl100k", {"<|endoftext|>": 100257})
if mode == "scaling":
    # One process alternates the three ways, so a slow spell of the machine hits all alike.
    tok = fast(); tok.encode_ordinary("warm up")
    out = os.path.join(os.path.dirname(path), "bench_tokens.bin")
    ways = {"one": lambda: tok.encode_ordinary(text), "batch": lambda: tok.encode_batch(lines),
            "file": lambda: tok.encode_file(path, out, progress=False)}
    best = dict.fromkeys(ways, float("inf"))
    result = None
    for _ in range(repeat):
        for name, run in ways.items():
            result = None
            t = time.perf_counter(); result = run(); best[name] = min(best[name], time.perf_counter() - t)
    print(json.dumps(best))
    sys.exit(0)
if lib == "fastbpe":
    tok = fast(); tok.encode_ordinary("warm up")
    if mode == "one":
        run = lambda: tok.encode_ordinary(text)
    elif mode == "all":
        run = lambda: tok.encode_batch(lines)
    else:
        out = os.path.join(os.path.dirname(path), "bench_tokens.bin")
        run = lambda: tok.encode_file(path, out, progress=False)
elif lib == "tiktoken":
    import tiktoken
    enc = tiktoken.get_encoding({"gpt2": "gpt2", "cl100k": "cl100k_base"}[vocab])
    run = (lambda: enc.encode_ordinary(text)) if mode == "one" else (lambda: enc.encode_ordinary_batch(lines, num_threads=os.cpu_count()))
else:
    import tokenizers
    hf = tokenizers.Tokenizer.from_file(hf_json)
    run = lambda: hf.encode_batch(lines, add_special_tokens=False)
best = float("inf")
result = None
for _ in range(repeat):
    result = None  # the last run's result is freed before the clock starts, not inside the timing
    t = time.perf_counter(); result = run(); best = min(best, time.perf_counter() - t)
digest = None
if mode == "file":
    n = len(result)
elif mode == "one" and lib != "hf":
    import hashlib, numpy as np
    n = len(result)
    digest = hashlib.sha256(np.asarray(result, dtype=np.uint32).tobytes()).hexdigest()
else:
    n = sum(len(r.ids) if hasattr(r, "ids") else len(r) for r in result)
print(json.dumps({"seconds": best, "tokens": n, "digest": digest}))
"""


def prepare(corpus: str, mb: float) -> str:
    os.makedirs(CACHE, exist_ok=True)
    out = os.path.join(CACHE, f"encode_{int(mb * 1e6)}.txt")
    if not os.path.exists(out):
        opener = gzip.open if corpus.endswith(".gz") else open
        with opener(corpus, "rb") as f:
            data = f.read(int(mb * 1e6))
        data = data[: len(data.decode("utf-8", errors="ignore").encode("utf-8"))]
        with open(out + ".tmp", "wb") as f:
            f.write(data)
        os.replace(out + ".tmp", out)
    return out


def hf_files() -> dict[str, str]:
    """tokenizer.json files for HF, written by fastbpe's exporter (whose output the tests check
    against fastbpe's ids)."""
    import fastbpe

    paths = {"gpt2": os.path.join(CACHE, "hf_gpt2.json"), "cl100k": os.path.join(CACHE, "hf_cl100k.json")}
    if not os.path.exists(paths["gpt2"]):
        fastbpe.Tokenizer.from_files(f"{SHARED}/gpt2/vocab.json", f"{SHARED}/gpt2/merges.txt", ["<|endoftext|>"]).to_huggingface(paths["gpt2"])
    if not os.path.exists(paths["cl100k"]):
        fastbpe.Tokenizer.from_tiktoken(CL100K_FILE, "cl100k", {"<|endoftext|>": 100257}).to_huggingface(paths["cl100k"])
    return paths


def run_child(vocab, lib, mode, path, repeat, hf_json, threads_env=None) -> dict:
    env = {**os.environ, "FASTBPE_SHARED": SHARED, "TIKTOKEN_CACHE_DIR": os.path.join(SHARED, "tiktoken_cache")}
    if threads_env:
        env.update(threads_env)
    done = subprocess.run([sys.executable, "-c", CHILD, vocab, lib, mode, path, str(repeat), hf_json],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def corners() -> list[tuple[str, float]]:
    import fastbpe

    tok = fastbpe.Tokenizer.from_files(f"{SHARED}/gpt2/vocab.json", f"{SHARED}/gpt2/merges.txt", ["<|endoftext|>"])
    out = []
    for name, text in [("a million 'a'", "a" * 1_000_000), ("a million spaces", " " * 1_000_000),
                       ("'ab' x 500,000", "ab" * 500_000)]:
        t = time.perf_counter()
        ids = tok.encode(text)
        out.append((name, time.perf_counter() - t))
        assert tok.decode(ids) == text
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--vocab", default="gpt2,cl100k")
    args = ap.parse_args()
    if not os.path.exists(args.corpus):
        sys.exit(f"corpus not found: {args.corpus} (pass --corpus PATH)")
    path = prepare(args.corpus, args.mb)
    size = os.path.getsize(path) / 1e6
    hf = hf_files()
    print(f"command: python benches/{os.path.basename(__file__)} {' '.join(sys.argv[1:])}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}")
    print(f"text: the first {size:.1f} MB of {os.path.basename(args.corpus)}; best of {2 * args.repeat} runs "
          f"in {args.repeat} interleaved rounds; one-thread ids equal tiktoken's\n")
    print("| vocabulary | mode | encoder | MB/s | tokens | vs fastbpe |")
    print("|---|---|---|---:|---:|---|")
    one_thread_hf = {"RAYON_NUM_THREADS": "1", "RAYON_RS_NUM_CPUS": "1"}
    for vocab in args.vocab.split(","):
        rows = [
            ("one thread", "fastbpe", "one", None), ("one thread", "tiktoken", "one", None),
            ("one thread", "hf", "all", one_thread_hf),
            ("all threads", "fastbpe", "all", None), ("all threads", "tiktoken", "all", None),
            ("all threads", "hf", "all", None),
            ("file -> tokens", "fastbpe", "file", None),
        ]
        results: dict = {}
        for _ in range(args.repeat):
            for label, lib, mode, env in rows:
                r = run_child(vocab, lib, mode, path, 2, hf[vocab], env)
                best = results.get((label, lib))
                if best is None or "error" in r or ("error" not in best and r["seconds"] < best["seconds"]):
                    results[(label, lib)] = r
        fast, tik = results[("one thread", "fastbpe")], results[("one thread", "tiktoken")]
        if "error" not in fast and "error" not in tik and fast["digest"] != tik["digest"]:
            sys.exit(f"{vocab}: fastbpe's ids differ from tiktoken's on this text")
        for label, lib, mode, env in rows:
            r = results[(label, lib)]
            if "error" in r:
                print(f"| {vocab} | {label} | {lib} | - | - | {r['error'][:60]} |")
                continue
            base = results.get((label, "fastbpe")) or results[("one thread", "fastbpe")]
            ratio = r["seconds"] / base["seconds"]
            vs = "1.00x" if lib == "fastbpe" else f"{ratio:.1f}x slower" if ratio >= 1 else f"{1 / ratio:.1f}x faster"
            print(f"| {vocab} | {label} | {lib} | {size / r['seconds']:.1f} | {r['tokens']:,} | {vs} |")
        paired = run_child(vocab, "fastbpe", "scaling", path, 3 * args.repeat, hf[vocab])
        if "error" in paired:
            print(f"| {vocab} | scaling | fastbpe | {paired['error'][:60]} | | |")
        else:
            one = paired["one"]
            print(f"| {vocab} | scaling | fastbpe | batch {one / paired['batch']:.2f}x, file {one / paired['file']:.2f}x "
                  f"the one-thread speed (best of {3 * args.repeat}, alternating in one process) | | |")
    print("\nQuadratic corners (GPT-2, fastbpe encode):")
    for name, seconds in corners():
        print(f"  {name}: {seconds:.3f} s")


if __name__ == "__main__":
    main()
