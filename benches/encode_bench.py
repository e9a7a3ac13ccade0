"""Encoding throughput: fastbpe vs gigatoken, fastokens, tiktoken and HF tokenizers on the same
text and vocabularies.

    python benches/encode_bench.py [--mb 20] [--corpus PATH] [--repeat 3] [--vocab gpt2,cl100k]
                                   [--stat median|best]

Every measurement runs in its own process (so thread settings and caches do not leak). The
rows are measured in --repeat interleaved rounds, two runs per process (cold and warm), so a
slow spell on a shared machine hits every encoder alike instead of one row; each cell is the
median of its rounds (--stat best: the fastest, which favours the encoder whose runs spread
most).
Each process returns a digest of its ids, and no time is printed unless every encoder's ids
equal fastbpe's (special tokens in the text recognized by all). Rows:
- one thread (list): the whole text, ids as a Python list (`encode`; fastokens `.ids`; HF's
  `encode_batch` of the lines). One-thread processes are pinned to one CPU, so a library that
  spreads one text over threads cannot.
- one thread (numpy): ids as a numpy array (`encode_to_numpy`; gigatoken's `encode`).
- batch: the lines, every CPU, ids as lists (gigatoken's `encode_batch_list`).
- file: fastbpe's `encode_file` (file -> token file) and gigatoken's `encode_files` of a
  `TextFileSource` split on <|endoftext|> (file -> arrays in memory), on every CPU. gigatoken
  drops the separator, so its ids are compared with fastbpe's less the <|endoftext|> ids.
- pre-tokenizer: fastbpe's splitter alone (`fastbpe._core.count_pieces`), for where time goes.
gigatoken reads GPT-2 from the tokenizer.json HF writes (it has no fast pre-tokenizer for the
pattern fastbpe's exporter writes out) and cl100k from the tiktoken file, as does fastokens for
cl100k; the others read fastbpe's exported tokenizer.json files.
The scaling line (batch and file against one thread) comes from one process that alternates the
three, so the ratio is not skewed by the machine's speed drifting between processes. Also the
corners where BPE encoders go quadratic.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
DEFAULT_CORPUS = os.path.join(SHARED, "corpus", "enwiki_100M.txt.gz")
CL100K_FILE = os.path.join(SHARED, "tiktoken_cache", "9b5ad71b2ce5302211f9c61530b329a4922fc6a4")
CACHE = os.path.join(tempfile.gettempdir(), "fastbpe-bench")
EOT = "<|endoftext|>"

# The child: times one operation of one library on the text, cold and warm, prints JSON.
CHILD = r"""
import hashlib, json, os, sys, time
import numpy as np
vocab, lib, mode, path, warm_path, hf_json = sys.argv[1:7]
if mode in ("one", "numpy", "split"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one CPU, whatever threads a library starts
SHARED = os.environ["FASTBPE_SHARED"]
EOT = "<|endoftext|>"
EOT_ID = {"gpt2": 50256, "cl100k": 100257}[vocab]
CL100K = f"{SHARED}/tiktoken_cache/9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
read = lambda p: open(p, encoding="utf-8", newline="").read()
text, warm_text = read(path), read(warm_path)
# Each mode's input for the timed text and for the warm-up text.
inputs = {"text": (text, warm_text), "lines": (text.splitlines(keepends=True), warm_text.splitlines(keepends=True)),
          "path": (path, warm_path)}
out = os.path.join(os.path.dirname(path), f"bench_tokens_{os.getpid()}.bin")
def fast():
    import fastbpe
    if vocab == "gpt2":
        return fastbpe.Tokenizer.from_files(f"{SHARED}/gpt2/vocab.json", f"{SHARED}/gpt2/merges.txt", [EOT])
    return fastbpe.Tokenizer.from_tiktoken(CL100K, "cl100k", {EOT: EOT_ID})
if mode == "scaling":
    # One process alternates the three ways, each on a new tokenizer warmed on the other text, so a
    # slow spell of the machine hits all alike.
    ways = {"one": ("text", lambda t, x: t.encode(x)), "batch": ("lines", lambda t, x: t.encode_batch(x)),
            "file": ("path", lambda t, x: t.encode_file(x, out, progress=False))}
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(int(os.environ.get("BENCH_ROUNDS", "3"))):
        for name, (kind, run) in ways.items():
            tok = fast(); run(tok, inputs[kind][1])
            t = time.perf_counter(); run(tok, inputs[kind][0]); best[name] = min(best[name], time.perf_counter() - t)
    os.remove(out); os.remove(out + ".json")
    print(json.dumps(best))
    sys.exit(0)
flat = lambda r: np.asarray(r, dtype=np.uint32)
flat_lists = lambda r: np.fromiter((i for ids in r for i in ids), dtype=np.uint32)
if lib == "fastbpe":
    import fastbpe._core
    make = fast
    kind, run = {"one": ("text", lambda t, x: t.encode(x)), "numpy": ("text", lambda t, x: t.encode_to_numpy(x)),
                 "all": ("lines", lambda t, x: t.encode_batch(x)),
                 "split": ("text", lambda t, x: fastbpe._core.count_pieces(vocab, x)),
                 "file": ("path", lambda t, x: t.encode_file(x, out, progress=False))}[mode]
    if mode == "all":
        flat = flat_lists
    if mode == "file":  # the file's ids, less the separators (gigatoken's are compared with them)
        flat = lambda r: (lambda a: a[a != EOT_ID])(np.fromfile(out, dtype=np.uint16 if vocab == "gpt2" else np.uint32).astype(np.uint32))
elif lib == "tiktoken":
    import tiktoken
    # tiktoken keeps no cache between calls, so its one (registry-cached) encoder serves both runs.
    make = lambda: tiktoken.get_encoding({"gpt2": "gpt2", "cl100k": "cl100k_base"}[vocab])
    kind, run = {"one": ("text", lambda e, x: e.encode(x, allowed_special="all")),
                 "numpy": ("text", lambda e, x: e.encode_to_numpy(x, allowed_special="all")),
                 "all": ("lines", lambda e, x: e.encode_batch(x, num_threads=os.cpu_count(), allowed_special="all"))}[mode]
    if mode == "all":
        flat = flat_lists
elif lib == "gigatoken":
    import gigatoken
    def make():
        if vocab == "gpt2":
            return gigatoken.Tokenizer(os.environ["GIGATOKEN_GPT2"])
        # gigatoken has no fast pre-tokenizer for the pattern as a tokenizer.json writes it
        return gigatoken.Tokenizer.from_tiktoken(CL100K, pretokenizer="cl100k", special_tokens={EOT: EOT_ID})
    kind, run = {"numpy": ("text", lambda g, x: g.encode(x)), "all": ("lines", lambda g, x: g.encode_batch_list(x)),
                 "file": ("path", lambda g, x: g.encode_files(gigatoken.TextFileSource([x], separator=EOT.encode())))}[mode]
    if mode == "all":
        flat = flat_lists
    if mode == "file":
        import awkward as ak
        flat = lambda r: np.asarray(ak.flatten(r), dtype=np.uint32)
elif lib == "fastokens":
    import fastokens
    def make():
        if vocab == "gpt2":
            return fastokens.Tokenizer.from_file(hf_json)
        # fastokens reads no model of the tokenizer.json fastbpe writes for cl100k
        return fastokens.Tokenizer.from_tiktoken(CL100K, encoding="cl100k_base", special_tokens={EOT: EOT_ID})
    kind, run = {"one": ("text", lambda f, x: f.encode(x).ids), "all": ("lines", lambda f, x: [e.ids for e in f.encode_batch(x)])}[mode]
    if mode == "all":
        flat = flat_lists
else:
    import tokenizers
    make = lambda: tokenizers.Tokenizer.from_file(hf_json)
    kind, run = "lines", lambda h, x: [e.ids for e in h.encode_batch(x, add_special_tokens=False)]
    flat = flat_lists
timed, warm_up = inputs[kind]
def clock(encoder):
    t = time.perf_counter(); r = run(encoder, timed); return time.perf_counter() - t, r
# cold: a new encoder's first text (after one tiny call, so lazy set-up is not timed).
# warm: a new encoder that has first encoded the other text of the same corpus: the steady state of
# encoding a corpus, with no piece cached from this text. Libraries that cache keep their caches
# between calls, so no run times a text the same encoder has seen.
encoder = make()
tiny = os.path.join(os.path.dirname(path), "warm_up.txt")
with open(tiny, "w", encoding="utf-8") as f:
    f.write("warm up")
run(encoder, {"text": "warm up", "lines": ["warm up"], "path": tiny}[kind])
cold, r_cold = clock(encoder)
digest = lambda r: None if mode == "split" else hashlib.sha256(flat(r).tobytes()).hexdigest()
d_cold = digest(r_cold); r_cold = None
encoder = make(); run(encoder, warm_up)
warm, r_warm = clock(encoder)
if mode == "split":
    print(json.dumps({"cold": cold, "warm": warm, "tokens": r_warm, "digest": None}))
    sys.exit(0)
ids = flat(r_warm)
d_warm = hashlib.sha256(ids.tobytes()).hexdigest()
if mode == "file" and lib == "fastbpe":
    os.remove(out); os.remove(out + ".json")
if d_warm != d_cold:
    sys.exit(f"{lib} {mode}: the warm run's ids differ from the cold run's")
print(json.dumps({"cold": cold, "warm": warm, "tokens": len(ids), "digest": d_warm}))
"""

# (label, library, child mode, one thread): the rows of each vocabulary, in print order.
ROWS = [
    ("one thread (list)", "fastbpe", "one", True), ("one thread (list)", "fastokens", "one", True),
    ("one thread (list)", "tiktoken", "one", True), ("one thread (list)", "hf", "all", True),
    ("one thread (numpy)", "fastbpe", "numpy", True), ("one thread (numpy)", "gigatoken", "numpy", True),
    ("one thread (numpy)", "tiktoken", "numpy", True),
    ("batch (all CPUs)", "fastbpe", "all", False), ("batch (all CPUs)", "gigatoken", "all", False),
    ("batch (all CPUs)", "fastokens", "all", False), ("batch (all CPUs)", "tiktoken", "all", False),
    ("batch (all CPUs)", "hf", "all", False),
    ("file (all CPUs)", "fastbpe", "file", False), ("file (all CPUs)", "gigatoken", "file", False),
    ("pre-tokenizer only", "fastbpe", "split", True),
]
# Rayon-based libraries (HF, fastokens, gigatoken) told to use one thread in one-thread rows.
ONE_THREAD_ENV = {"RAYON_NUM_THREADS": "1", "RAYON_RS_NUM_CPUS": "1"}


def prepare(corpus: str, mb: float) -> tuple[str, str]:
    """The first `mb` MB of the corpus (the timed text) and the `mb` MB after it (the text encoders
    warm up on), each cut at whole characters."""
    os.makedirs(CACHE, exist_ok=True)
    paths = [os.path.join(CACHE, f"encode_{int(mb * 1e6)}.txt"), os.path.join(CACHE, f"encode_{int(mb * 1e6)}_warm.txt")]
    if not all(os.path.exists(p) for p in paths):
        opener = gzip.open if corpus.endswith(".gz") else open
        with opener(corpus, "rb") as f:
            data = f.read(2 * int(mb * 1e6))
        cut = int(mb * 1e6)
        while cut < len(data) and data[cut] & 0xC0 == 0x80:  # not inside a character
            cut += 1
        for p, part in zip(paths, (data[:cut], data[cut:])):
            part = part[: len(part.decode("utf-8", errors="ignore").encode("utf-8"))]
            with open(p + ".tmp", "wb") as f:
                f.write(part)
            os.replace(p + ".tmp", p)
    return paths[0], paths[1]


def hf_files() -> dict[str, str]:
    """tokenizer.json files for HF and fastokens (and gigatoken's GPT-2), written by fastbpe's
    exporter (whose output the tests check against fastbpe's ids), anew each run: a file left
    by an older exporter may not give fastbpe's ids."""
    import fastbpe

    paths = {"gpt2": os.path.join(CACHE, "hf_gpt2.json"), "cl100k": os.path.join(CACHE, "hf_cl100k.json")}
    fastbpe.Tokenizer.from_files(f"{SHARED}/gpt2/vocab.json", f"{SHARED}/gpt2/merges.txt", [EOT]).to_huggingface(paths["gpt2"])
    fastbpe.Tokenizer.from_tiktoken(CL100K_FILE, "cl100k", {EOT: 100257}).to_huggingface(paths["cl100k"])
    return paths


def gigatoken_gpt2_file() -> str:
    """GPT-2's tokenizer.json as HF writes it (a ByteLevel pre-tokenizer, which gigatoken
    recognizes; fastbpe writes the pattern out as a Split, which it does not)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE.from_file(f"{SHARED}/gpt2/vocab.json", f"{SHARED}/gpt2/merges.txt"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOT, special=True)])
    path = os.path.join(CACHE, "gigatoken_gpt2.json")
    tok.save(path)
    return path


def run_child(vocab, lib, mode, path, warm_path, hf_json, threads_env=None, rounds=1) -> dict:
    env = {**os.environ, "FASTBPE_SHARED": SHARED, "TIKTOKEN_CACHE_DIR": os.path.join(SHARED, "tiktoken_cache"),
           "GIGATOKEN_GPT2": os.path.join(CACHE, "gigatoken_gpt2.json"), "BENCH_ROUNDS": str(rounds)}
    if threads_env:
        env.update(threads_env)
    done = subprocess.run([sys.executable, "-c", CHILD, vocab, lib, mode, path, warm_path, hf_json],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]}
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
    ap.add_argument("--only", default="", help="comma-separated libraries to run besides fastbpe (default: all)")
    ap.add_argument("--stat", choices=("median", "best"), default="median",
                    help="each cell's statistic over the rounds: the median (default: a slow or fast spell of a "
                         "shared machine moves it least) or the best")
    args = ap.parse_args()
    if not os.path.exists(args.corpus):
        sys.exit(f"corpus not found: {args.corpus} (pass --corpus PATH)")
    path, warm_path = prepare(args.corpus, args.mb)
    size = os.path.getsize(path) / 1e6
    hf = hf_files()
    gigatoken_gpt2_file()
    rows = [r for r in ROWS if not args.only or r[1] == "fastbpe" or r[1] in args.only.split(",")]
    print(f"command: python benches/{os.path.basename(__file__)} {' '.join(sys.argv[1:])}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"text: the first {size:.1f} MB of {os.path.basename(args.corpus)}; warm: a new encoder that first encoded "
          f"the {os.path.getsize(warm_path) / 1e6:.1f} MB after it; cold: a new encoder's first text; {args.stat} of "
          f"{args.repeat} interleaved rounds; every encoder's ids equal fastbpe's\n")
    print("| vocabulary | mode | encoder | warm MB/s | vs fastbpe | cold MB/s | vs fastbpe | tokens |")
    print("|---|---|---|---:|---|---:|---|---:|")
    for vocab in args.vocab.split(","):
        results: dict = {}
        times: dict = {}  # (label, lib) -> {"cold": [...], "warm": [...]}, seconds of each round
        for _ in range(args.repeat):
            for label, lib, mode, one in rows:
                r = run_child(vocab, lib, mode, path, warm_path, hf[vocab], ONE_THREAD_ENV if one else None)
                kept = results.setdefault((label, lib), r)
                if "error" in r:
                    results[(label, lib)] = r
                elif "error" not in kept:
                    for k in ("cold", "warm"):
                        times.setdefault((label, lib), {}).setdefault(k, []).append(r[k])
        pick = statistics.median if args.stat == "median" else min
        for key, seconds in times.items():
            if "error" not in results[key]:
                results[key].update({k: pick(v) for k, v in seconds.items()})
        check_ids(vocab, rows, results)
        for label, lib, mode, one in rows:
            r = results[(label, lib)]
            if "error" in r:
                print(f"| {vocab} | {label} | {lib} | - | {r['error'][:60]} | - | | |")
                continue
            base = results[(label, "fastbpe")]
            unit = "pieces" if mode == "split" else "tokens"
            cells = [f"{size / r[k]:.1f} | {versus(r[k], base.get(k), lib)}" for k in ("warm", "cold")]
            print(f"| {vocab} | {label} | {lib} | {' | '.join(cells)} | {r['tokens']:,} {unit} |")
        rounds = 3 * args.repeat
        paired = run_child(vocab, "fastbpe", "scaling", path, warm_path, hf[vocab], rounds=rounds)
        if "error" in paired:
            print(f"| {vocab} | scaling | fastbpe | {paired['error'][:60]} | | | | |")
        else:
            one = paired["one"]
            print(f"| {vocab} | scaling | fastbpe | batch {one / paired['batch']:.2f}x, file {one / paired['file']:.2f}x "
                  f"the one-thread speed (warm, best of {rounds}, alternating in one process) | | | | |")
    print("\nQuadratic corners (GPT-2, fastbpe encode):")
    for name, seconds in corners():
        print(f"  {name}: {seconds:.3f} s")


def versus(seconds: float, base: float | None, lib: str) -> str:
    if lib == "fastbpe" or base is None:
        return "1.00x" if lib == "fastbpe" else "-"
    ratio = seconds / base
    return f"{ratio:.2f}x slower" if ratio >= 1 else f"{1 / ratio:.2f}x faster"


def check_ids(vocab: str, rows: list, results: dict) -> None:
    """Exits unless every encoder's ids equal fastbpe's for the same input (the whole text, the
    lines, or the file less its separators)."""
    same_input = {"one": "one thread (list)", "numpy": "one thread (list)", "all": "batch (all CPUs)",
                  "file": "file (all CPUs)"}
    for label, lib, mode, _ in rows:
        if mode == "split":
            continue
        r, base = results[(label, lib)], results[(same_input[mode], "fastbpe")]
        if "error" in r or "error" in base:
            continue
        if r["digest"] != base["digest"]:
            sys.exit(f"{vocab}, {label}: {lib}'s ids differ from fastbpe's ({r['tokens']:,} vs {base['tokens']:,} tokens)")


if __name__ == "__main__":
    main()
