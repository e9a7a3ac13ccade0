"""Compare BPE *training* speed and memory: fastbpe against rustbpe, HF tokenizers, bpeasy,
gigatoken and the pure-Python reference.

    python benches/train_bench.py [--corpus PATH] [--vocab-size 10000] [--reference-mb 1.0]
                                  [--only NAME,...] [--repeat 1] [--scaling]

Every trainer runs in its own child process (`--child NAME`), so the peak RSS it reports is
that trainer's alone, and the time is taken inside the child around the training call only
(interpreter start-up and imports excluded). Peers that take an iterator get documents read
and split inside the timed region, because fastbpe reads its file inside it too.
"""

from __future__ import annotations

import argparse, gzip, importlib.metadata, json, os, platform, resource, shlex, shutil
import subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CORPUS = os.path.join(ROOT, "..", "shared", "data", "corpus", "enwiki_100M.txt.gz")
CACHE = os.path.join(tempfile.gettempdir(), "fastbpe-bench")
EOT = "<|endoftext|>"
GPT2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PEERS = ["fastbpe", "rustbpe", "tokenizers", "bpeasy", "gigatoken", "reference"]
MODULE = {"fastbpe": "fastbpe", "rustbpe": "rustbpe", "tokenizers": "tokenizers",
          "bpeasy": "bpeasy", "gigatoken": "gigatoken", "reference": "fastbpe.reference"}
DIST = {"fastbpe": "fastbpe-rs", "rustbpe": "rustbpe", "tokenizers": "tokenizers", "bpeasy": "bpeasy",
        "gigatoken": "gigatoken"}
MARK = "@@RESULT "  # the child's result line; libraries may print to stdout themselves


# ---------------------------------------------------------------- child side

def documents(path):
    """Stream the file's documents (split on <|endoftext|>) without holding a second copy."""
    tail = ""
    with open(path, encoding="utf-8", newline="") as f:  # newline="": the same bytes fastbpe sees
        while chunk := f.read(1 << 20):
            *done, tail = (tail + chunk).split(EOT)
            yield from done
    yield tail


def train(name, path, vocab_size):
    """Run one trainer; return (seconds, tokens in its vocab, note). Only the training is timed."""
    note = ""
    if name == "fastbpe":
        import fastbpe
        t0 = time.perf_counter()
        tok = fastbpe.train(path, vocab_size, special_tokens=[EOT], pattern="gpt2", progress=False)
        secs, vocab = time.perf_counter() - t0, tok.vocab_size
    elif name == "fastbpe-stages":
        # The same work as fastbpe.train in its two stages, each timed: reading and counting the
        # pieces (both cores), then the merge loop (one).
        from fastbpe import _core
        t0 = time.perf_counter()
        counts = _core.WordCounts("gpt2", [EOT])
        counts.add_file(path, os.cpu_count(), None)
        t1 = time.perf_counter()
        merges = _core.train_merges(counts, vocab_size - 257, None)
        t2 = time.perf_counter()
        secs, vocab = t2 - t0, 257 + len(merges)
        note = json.dumps({"counting": t1 - t0, "merging": t2 - t1})
    elif name == "rustbpe":
        import rustbpe
        # rustbpe has no special tokens: vocab_size-1 learns as many merges as the others.
        try:
            tok, t0 = rustbpe.Tokenizer(), time.perf_counter()
            tok.train_from_iterator(documents(path), vocab_size - 1, buffer_size=8192, pattern=GPT2)
        except (TypeError, ValueError) as e:  # a rustbpe that refuses a custom pattern
            note = f"GPT-2 pattern rejected ({type(e).__name__}), GPT-4 default used; "
            tok, t0 = rustbpe.Tokenizer(), time.perf_counter()
            tok.train_from_iterator(documents(path), vocab_size - 1, buffer_size=8192)
        secs, vocab = time.perf_counter() - t0, f"{tok.vocab_size} +1 special"
    elif name == "tokenizers":
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
        tok = Tokenizer(models.BPE())
        # ByteLevel with use_regex=True applies GPT-2's pattern; the alphabet seeds all 256 bytes.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], min_frequency=0,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        t0 = time.perf_counter()
        tok.train([path], trainer)  # it reads and splits the file in parallel itself
        secs, vocab = time.perf_counter() - t0, tok.get_vocab_size()
    elif name == "bpeasy":
        import bpeasy
        t0 = time.perf_counter()
        ranks = bpeasy.train_bpe(documents(path), GPT2, 128, vocab_size - 1, batch_size=1000)
        secs, vocab = time.perf_counter() - t0, f"{len(ranks)} +1 special"
    elif name == "gigatoken":
        import pathlib
        import gigatoken
        # gigatoken reads the file itself, documents split on the separator; its pre-tokenizer
        # is GPT-2's (train_bpe takes no pattern).
        t0 = time.perf_counter()
        vocab_map, _ = gigatoken.train_bpe(pathlib.Path(path), vocab_size, [EOT], separator=EOT.encode())
        secs, vocab = time.perf_counter() - t0, len(vocab_map)
    elif name == "reference":
        from fastbpe import reference
        t0 = time.perf_counter()
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        vocab_map, _ = reference.train_bpe_from_texts([text], vocab_size, [EOT], "gpt2")
        secs, vocab = time.perf_counter() - t0, len(vocab_map)
    else:
        raise SystemExit(f"unknown trainer {name!r}")
    return secs, vocab, note


def child(name, path, vocab_size):
    secs, vocab, note = train(name, path, vocab_size)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = rss / (1 << 20) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KB on Linux
    print(MARK + json.dumps({"seconds": secs, "vocab": vocab, "rss_mb": rss_mb, "note": note}))


# ---------------------------------------------------------------- parent side

def write_atomic(out, write):
    """Write aside, then rename: an interrupted run never leaves a half file to be reused."""
    os.makedirs(CACHE, exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, out)
    return out


def cached(name, size, write):
    """A file in the cache dir, rebuilt only when its size is not the expected one."""
    out = os.path.join(CACHE, name)
    if os.path.exists(out) and os.path.getsize(out) == size:
        return out
    return write_atomic(out, write)


def plain_corpus(path):
    """Every trainer must read the same plain text, so a .gz corpus is unpacked once."""
    if not path.endswith(".gz"):
        return path
    with open(path, "rb") as f:  # gzip's trailer holds the unpacked size mod 2**32
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    name = os.path.basename(path)[:-3]
    out = os.path.join(CACHE, name)
    ok = os.path.exists(out) and os.path.getsize(out) % (1 << 32) == isize
    if not ok:
        with gzip.open(path, "rb") as src:
            write_atomic(out, lambda f: shutil.copyfileobj(src, f, 1 << 24))
    return out


def head_slice(path, mb):
    """The first `mb` MB of the corpus, cut back to a UTF-8 character boundary."""
    with open(path, "rb") as f:
        data = f.read(int(mb * 1e6) + 4)
    end = min(int(mb * 1e6), len(data))
    while 0 < end < len(data) and (data[end] & 0xC0) == 0x80:
        end -= 1  # the cut falls inside a character: move it back to that character's start
    base = os.path.basename(path)
    return cached(f"{base}.head{mb:g}MB", end, lambda f: f.write(data[:end]))


def run_child(name, path, vocab_size, repeat):
    """Best-of-`repeat` time, worst peak RSS; each run is a fresh process."""
    best = None
    for _ in range(repeat):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name,
               "--corpus", path, "--vocab-size", str(vocab_size)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        lines = [l for l in p.stdout.splitlines() if l.startswith(MARK)]
        if p.returncode or not lines:
            err = (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[-1]
            return {"error": err[:200]}
        r = json.loads(lines[-1][len(MARK):])
        if best is not None:
            rss = max(r["rss_mb"], best["rss_mb"])
            if best["seconds"] < r["seconds"]:
                r = best  # the best run's time and note (fastbpe's stages are that run's)
            r = {**r, "rss_mb": rss}
        best = r
    return best


def num(x):
    """Two decimals, or three significant digits below 1 (small runs would print 0.00)."""
    return f"{x:.2f}" if x >= 1 else f"{x:.3g}"


def ratio(secs, base):
    if base is None:
        return "n/a"
    r = secs / base
    if abs(r - 1) < 0.005:
        return "1.00x"
    x = r if r >= 1 else 1 / r
    return f"{x:.{0 if x >= 100 else 1}f}x " + ("slower" if r >= 1 else "faster")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--vocab-size", type=int, default=10000, help="total tokens, <|endoftext|> included")
    ap.add_argument("--reference-mb", type=float, default=1.0, help="slice the pure-Python reference trains on")
    ap.add_argument("--reference-vocab", type=int, default=1000)
    ap.add_argument("--only", default=",".join(PEERS), help="comma-separated: " + ",".join(PEERS))
    ap.add_argument("--repeat", type=int, default=1, help="runs per trainer; the best time is kept")
    ap.add_argument("--scaling", action="store_true", help="also time fastbpe on the corpus twice over")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.corpus, args.vocab_size)

    if not os.path.exists(args.corpus):
        sys.exit(f"corpus not found: {os.path.normpath(args.corpus)} (pass --corpus PATH)")
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    if unknown := set(only) - set(PEERS):
        sys.exit(f"unknown trainer(s) {sorted(unknown)}; choose from {','.join(PEERS)}")
    corpus = plain_corpus(args.corpus)
    size = os.path.getsize(corpus)
    exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else sys.executable
    print(f"command: cd {shlex.quote(ROOT)} && {shlex.join([exe, 'benches/train_bench.py', *sys.argv[1:]])}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")
    versions = []
    for n, d in DIST.items():
        try:
            versions.append(f"{n} {importlib.metadata.version(d)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    print("versions: " + ", ".join(versions))
    print(f"corpus: {os.path.normpath(args.corpus)} -> {corpus} ({size / 1e6:.1f} MB), "
          f"vocab {args.vocab_size} incl. {EOT}, GPT-2 pattern, best of {args.repeat}\n", flush=True)

    notes = {"fastbpe": f"reads the file itself, {os.cpu_count()} threads",
             "rustbpe": "iterator of documents, buffer_size=8192",
             "tokenizers": "train([path]), ByteLevel (GPT-2 regex)",
             "bpeasy": "iterator of documents, batch_size=1000, max_token_length=128",
             "gigatoken": "train_bpe(path, separator=<|endoftext|>), reads the file itself",
             "reference": "pure Python, one text"}
    rows = []  # (label, bytes, result, baseline label, note)
    jobs = [(n, f"{n}", corpus, args.vocab_size, "fastbpe") for n in only if n != "reference"]
    if "reference" in only:  # the reference is too slow for the corpus: compare on a slice instead
        part = head_slice(corpus, args.reference_mb)
        tag = f"({args.reference_mb:g} MB, vocab {args.reference_vocab})"
        jobs += [("fastbpe", f"fastbpe {tag}", part, args.reference_vocab, f"fastbpe {tag}"),
                 ("reference", f"reference {tag}", part, args.reference_vocab, f"fastbpe {tag}")]
    results = {}
    for name, label, path, vocab, base in jobs:
        try:
            __import__(MODULE[name])  # only a check: the child does the real import
        except ImportError as e:  # the peers come with the `dev` extra
            rows.append((label, None, {"error": f"skipped: {e} (pip install -e '.[dev]')"}, base, ""))
            continue
        except Exception as e:  # installed but broken (a stale build, say): say so, keep going
            rows.append((label, None, {"error": f"skipped: import failed: {type(e).__name__}: {e}"}, base, ""))
            continue
        print(f"  running {label} ...", file=sys.stderr, flush=True)
        results[label] = r = run_child(name, path, vocab, args.repeat)
        rows.append((label, os.path.getsize(path), r, base, notes[name]))

    print("| trainer | seconds | MB/s | peak RSS (MB) | vocab | time vs fastbpe | note |")
    print("|---|---:|---:|---:|---:|---|---|")
    for label, nbytes, r, base, note in rows:
        if "error" in r:
            print(f"| {label} | - | - | - | - | - | {r['error']} |")
            continue
        b = results.get(base, {}).get("seconds")
        print(f"| {label} | {num(r['seconds'])} | {num(nbytes / 1e6 / r['seconds'])} | {r['rss_mb']:.0f} | "
              f"{r['vocab']} | {ratio(r['seconds'], b)} | {r['note']}{note} |")

    if "fastbpe" in only:
        print("  running fastbpe's stages apart ...", file=sys.stderr, flush=True)
        r = run_child("fastbpe-stages", corpus, args.vocab_size, args.repeat)
        if "error" in r:
            print(f"\nfastbpe's stages: failed: {r['error']}")
        else:
            st = json.loads(r["note"])
            print(f"\nfastbpe's time (best of {args.repeat}, the stages run apart): reading and counting "
                  f"{num(st['counting'])} s on {os.cpu_count()} threads, the merge loop {num(st['merging'])} s "
                  f"on one ({r['vocab']} tokens)")

    # Does twice the text take about twice the time? The doubled file repeats the same pieces, so
    # only reading and counting should double; the merge loop sees the same distinct pieces.
    if args.scaling:
        one = results.get("fastbpe") or run_child("fastbpe", corpus, args.vocab_size, args.repeat)
        def twice(f):
            for _ in range(2):
                with open(corpus, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 24)
        doubled = cached(os.path.basename(corpus) + ".x2", 2 * size, twice)
        print("  running fastbpe on the doubled corpus ...", file=sys.stderr, flush=True)
        two = run_child("fastbpe", doubled, args.vocab_size, args.repeat)
        if "error" in one or "error" in two:
            print(f"\n2x corpus: failed: {one.get('error') or two.get('error')}")
        else:
            print(f"\n2x corpus: {num(two['seconds'])} s vs {num(one['seconds'])} s "
                  f"(ratio {two['seconds'] / one['seconds']:.2f}; peak RSS {two['rss_mb']:.0f} MB "
                  f"vs {one['rss_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
