"""What does `train_lm` cost on top of the bare training step? Tokens/s of the full loop against
a plain loop over the same model, optimizer, hyperparameters and batches.

    python benches/lm_bench.py [--preset tiny] [--steps 150] [--warmup 5] [--repeat 2]
                               [--device cpu|cuda] [--threads N] [--corpus PATH]

Variants (each in its own fresh interpreter, `torch.set_num_threads` alike, the order
alternating between repeats, best of --repeat kept):

* bare: seed, TransformerLM, AdamW with train_lm's parameter groups and hyperparameters (fixed
  lr = max_lr), a torch.Generator seeded as train_lm seeds rank 0, then a plain for loop:
  get_batch, forward (bf16 autocast on CUDA), cross_entropy, backward, clip_grad_norm_, step,
  zero_grad. Nothing else: no syncs, no logging, no prefetch.
* train_lm: the real loop with the preset's cadence (eval_every, checkpoint_every), the progress
  bar on, metrics.jsonl, loss.png, checkpoints and the background BatchLoader.

Both run --warmup untimed steps and then --steps timed ones. train_lm's step boundaries are
taken from its own per-step call of `cosine_lr` (patched to record a timestamp), so the time of
step k runs from the start of step k to the start of step k+1 and includes everything the loop
does after the optimizer step (metrics row, progress bar, evaluation, plot, checkpoint). Its run
is one step longer than the window, so the forced end-of-run evaluation and checkpoint of the
last step fall outside it.

A default-length window (150 steps) need not contain an evaluation or a checkpoint at the
default cadence (tiny: every 100 and 200 steps), so the headline row is amortized: the mean of
train_lm's ordinary steps (no evaluation, no checkpoint) plus the cost of one evaluation divided
by eval_every plus the cost of one checkpoint divided by checkpoint_every. Those two costs come
from a probe run in the same train_lm child (eval every 5, checkpoint every 7 steps, 30 steps):
the median time of an evaluation step (or checkpoint step) minus the median ordinary step. The
directly measured window is shown as well. As a check that does not depend on the two
variants running under the same load, train_lm's logged per-step dt (its own timing of the
update) is subtracted from each ordinary step's interval: what remains is the loop's work after
the update, and with the eval/checkpoint costs in units of steps it gives a drift-free estimate
of the extras. Costs paid once per run (set-up and the step-0
evaluation, matplotlib's import, the final step's forced evaluation and checkpoint) are listed
separately and not spread over the steps.

`--device cuda` runs both variants under bf16 autocast (train_lm's `precision="auto"` on a GPU
that supports it) and gives MFU as 3 x `accounting.transformer_forward_flops` per step over the
dense bf16 peak `accounting.gpu_peak` finds for the GPU's name (H100, H200, A100); on CPU the MFU
column is against this machine's measured fp32 matmul rate. The bare loop does not synchronize
per step (only around the window); train_lm does, as it must to log per-step times.
`--preset gpt2-small --device cuda` is the intended GPU check.

Data: a BPE tokenizer (vocab 4096) trained on TinyStories' validation text, the text encoded
and split 90/10 into train/val token files, cached in a temp folder and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CORPUS = os.path.join(ROOT, "..", "shared", "data", "corpus", "tinystories_val.txt")
MARK = "@@RESULT "
VAL_FRACTION = 0.1
# The probe run that prices one evaluation and one checkpoint: no step is both.
PROBE = dict(max_steps=30, eval_every=5, checkpoint_every=7)


# ---------------------------------------------------------------- data


def prepare_data(corpus: str, vocab_size: int, cache: str) -> tuple[str, str, dict]:
    """Tokenizer + train/val token files in `cache`, rebuilt only when the corpus or vocab changes."""
    import fastbpe
    from fastbpe import token_files

    corpus = os.path.abspath(corpus)
    st = os.stat(corpus)
    stamp = {"corpus": corpus, "size": st.st_size, "mtime": st.st_mtime, "vocab_size": vocab_size,
             "val_fraction": VAL_FRACTION}
    tok_path, train_bin, val_bin = (os.path.join(cache, n) for n in ("tokenizer.json", "train.bin", "val.bin"))
    stamp_path = os.path.join(cache, "stamp.json")
    paths = [tok_path, train_bin, train_bin + ".json", val_bin, val_bin + ".json"]
    if all(os.path.exists(p) for p in paths) and os.path.exists(stamp_path):
        with open(stamp_path) as f:
            if json.load(f) == stamp:
                return train_bin, val_bin, {"reused": True}
    os.makedirs(cache, exist_ok=True)
    if os.path.exists(stamp_path):
        os.unlink(stamp_path)
    t0 = time.perf_counter()
    tok = fastbpe.train(corpus, vocab_size, progress=False)
    tok.save(tok_path)
    with token_files.scratch_path(train_bin) as whole:
        tok.encode_file(corpus, whole, metadata={"tokenizer": tok_path}, progress=False)
        token_files.split_tokens(whole, train_bin, val_bin, VAL_FRACTION)
    with open(stamp_path, "w") as f:
        json.dump(stamp, f)
    return train_bin, val_bin, {"reused": False, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------- child side


def make_config(spec: dict, **overrides):
    from fastbpe.lm import preset
    from fastbpe.lm.data import token_metadata

    vocab = int(token_metadata(spec["train"])["vocab_size"])
    return preset(spec["preset"], device=spec["device"], vocab_size=vocab, **overrides)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Bare:
    """The bare loop's state: train_lm's model, parameter groups, AdamW and batch generator."""

    def __init__(self, spec: dict):
        import torch

        from fastbpe.lm.data import open_tokens
        from fastbpe.lm.trainer import resolve_device, resolve_precision, setup

        config = self.config = make_config(spec)
        assert config.grad_accum_steps == 1, "the bare loop has no gradient accumulation"
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.train_data = open_tokens(spec["train"])
        # train_lm's own set-up: the same initial weights, AdamW groups and rank-0 batch generator
        state = setup(config, self.device, self.precision)
        self.model, self.optimizer, self.generator = state.model, state.optimizer, state.generator
        self.loss = None

    def run(self, warmup: int, steps: int) -> list[float]:
        """warmup + steps plain steps; the start time of each timed step and the end of the last."""
        from fastbpe.lm.data import get_batch
        from fastbpe.lm.nn import clip_grad_norm_, cross_entropy
        from fastbpe.lm.trainer import autocast

        c, model, optimizer, device = self.config, self.model, self.optimizer, self.device
        stamps = []
        for i in range(warmup + steps):
            if i == warmup:
                _sync(device)
            if i >= warmup:
                stamps.append(time.perf_counter())
            x, y = get_batch(self.train_data, c.batch_size, c.context_length, device, self.generator)
            with autocast(device, self.precision):
                loss = cross_entropy(model(x), y)
            loss.backward()
            clip_grad_norm_(model.parameters(), c.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        _sync(device)
        stamps.append(time.perf_counter())
        self.loss = loss
        return stamps


def child_bare(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    bare = _Bare(spec)
    device, model = bare.device, bare.model
    stamps = bare.run(spec["warmup"], spec["steps"])
    out = {"window_s": stamps[-1] - stamps[0], "final_loss": float(bare.loss), "precision": bare.precision,
           "params": sum(p.numel() for p in model.parameters()),
           "embedding_params": model.token_embeddings.weight.numel() + model.lm_head.weight.numel()}
    if device.type == "cpu":  # per-step times only mean something where each step ends on the host
        steps_s = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
        out["median_step_s"] = statistics.median(steps_s)
        out["p90_step_s"] = statistics.quantiles(steps_s, n=10)[-1]
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    return out


def _timed_train_lm(trainer, config, spec, run_dir):
    """Run train_lm, recording when each step starts (its per-step cosine_lr call)."""
    stamps: list[float] = []
    original = trainer.cosine_lr

    def stamped(*args, **kw):
        stamps.append(time.perf_counter())
        return original(*args, **kw)

    trainer.cosine_lr = stamped
    try:
        t_call = time.perf_counter()
        result = trainer.train_lm(config, spec["train"], spec["val"], run_dir, progress=True, log=lambda *a, **k: None)
        t_return = time.perf_counter()
    finally:
        trainer.cosine_lr = original
    assert len(stamps) == config.max_steps == result.steps, (len(stamps), config.max_steps, result.steps)
    return stamps, t_call, t_return, result


def _classify(step: int, config) -> str:
    """What step `step` (1-based) does after its optimizer step, at this config's cadence."""
    ev, ck = step % config.eval_every == 0, step % config.checkpoint_every == 0
    return "both" if ev and ck else "eval" if ev else "ckpt" if ck else "plain"


def child_lm(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (paid once per run; timed here, not inside a step)

    mpl_import_s = time.perf_counter() - t0
    from fastbpe.lm import trainer
    from fastbpe.lm.checkpoint import checkpoints

    warmup, steps = spec["warmup"], spec["steps"]
    # One step more than the window: the last step's forced evaluation and checkpoint fall outside.
    config = make_config(spec, max_steps=warmup + steps + 1)
    run_dir = os.path.join(spec["run_dir"], "main")
    stamps, t_call, t_return, result = _timed_train_lm(trainer, config, spec, run_dir)
    # interval s -> step s+1 (1-based), from the start of its update to the start of the next one
    iv = {s + 1: stamps[s + 1] - stamps[s] for s in range(warmup, warmup + steps)}
    kinds = {k: _classify(k, config) for k in iv}
    plain = [v for k, v in iv.items() if kinds[k] == "plain"]
    ckpt_bytes = [os.path.getsize(p) for p in checkpoints(run_dir)]
    # train_lm times each step itself (t0 just before cosine_lr, dt after the optimizer step and
    # the device sync) and logs tokens_per_s = tokens/dt: interval - dt is what the loop spends
    # after the update (metrics row, progress bar, eval/checkpoint on their steps), measured
    # within the same step, so load that drifts between runs does not enter it.
    tokens_per_step = config.batch_size * config.context_length * config.grad_accum_steps
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        dts = {r["step"]: tokens_per_step / r["tokens_per_s"] for r in map(json.loads, f) if "tokens_per_s" in r}
    after = [iv[k] - dts[k] for k in iv if kinds[k] == "plain"]
    out = {
        "window_s": stamps[warmup + steps] - stamps[warmup],
        "plain_mean_s": statistics.fmean(plain),
        "plain_median_s": statistics.median(plain),
        "plain_p90_s": statistics.quantiles(plain, n=10)[-1],
        "after_update_mean_s": statistics.fmean(after),
        "after_update_ratio": statistics.fmean(after) / statistics.fmean(dts[k] for k in iv if kinds[k] == "plain"),
        "window_evals": sum(kinds[k] in ("eval", "both") for k in iv),
        "window_ckpts": sum(kinds[k] in ("ckpt", "both") for k in iv),
        "first_step": warmup + 1,
        "last_step": warmup + steps,
        "setup_s": stamps[0] - t_call,  # model, CPU peak measurement, step-0 evaluation, loader start
        "final_step_s": t_return - stamps[warmup + steps],  # last step + forced eval/ckpt + close + plot
        "mpl_import_s": mpl_import_s,
        "ckpt_mb": (max(ckpt_bytes) / 1e6) if ckpt_bytes else None,
        "reported_tokens_per_s": result.tokens_per_s,  # train_lm's own (step compute only) figure
        "eval_every": config.eval_every,
        "checkpoint_every": config.checkpoint_every,
    }
    # Probe: price one evaluation and one checkpoint at this model size.
    probe = make_config(spec, **PROBE)
    stamps, *_ = _timed_train_lm(trainer, probe, spec, os.path.join(spec["run_dir"], "probe"))
    piv = {s + 1: stamps[s + 1] - stamps[s] for s in range(1, probe.max_steps - 1)}  # steps 2..max-1
    by_kind: dict[str, list[float]] = {}
    for k, v in piv.items():
        by_kind.setdefault(_classify(k, probe), []).append(v)
    base = statistics.median(by_kind["plain"])
    out["probe_eval_s"] = statistics.median(by_kind["eval"]) - base
    out["probe_ckpt_s"] = statistics.median(by_kind["ckpt"]) - base
    # In units of the probe's own ordinary step, so that load drifting between the main run and
    # the probe does not leak in; the parent converts with the main run's ordinary step.
    out["eval_steps"] = out["probe_eval_s"] / base
    out["ckpt_steps"] = out["probe_ckpt_s"] / base
    out["probe_plain_median_s"] = base
    out["probe_counts"] = {k: len(v) for k, v in by_kind.items()}
    return out


def child_interleave(spec: dict) -> dict:
    """One process, blocks alternating: `block` bare steps, then a train_lm run of `block` steps
    with no eval or checkpoint in it. Host speed that drifts over minutes hits both alike."""
    import torch

    torch.set_num_threads(spec["threads"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401

    from fastbpe.lm import trainer

    bare = _Bare(spec)
    warmup, block = spec["warmup"], spec["block"]
    rounds: list[dict] = []
    for r in range(spec["rounds"]):
        res = {}
        for variant in (("bare", "lm") if r % 2 == 0 else ("lm", "bare")):
            if variant == "bare":
                stamps = bare.run(warmup, block)
                res["bare"] = (stamps[-1] - stamps[0]) / block
            else:
                config = make_config(spec, max_steps=warmup + block + 1, eval_every=10**9, checkpoint_every=10**9)
                with tempfile.TemporaryDirectory(dir=spec["run_dir"]) as run_dir:
                    stamps, *_ = _timed_train_lm(trainer, config, spec, run_dir)
                res["lm"] = (stamps[warmup + block] - stamps[warmup]) / block
        rounds.append(res)
    return {"rounds": rounds}


# ---------------------------------------------------------------- parent side


def run_child(variant: str, spec: dict) -> tuple[dict, tuple[float, float]]:
    run_dir = tempfile.mkdtemp(prefix=f"lm-bench-{variant}-")
    spec = {**spec, "run_dir": run_dir}
    load_before = os.getloadavg()[0]
    try:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, "--spec", json.dumps(spec)]
        p = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    lines = [line for line in p.stdout.splitlines() if line.startswith(MARK)]
    if p.returncode != 0 or not lines:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        raise SystemExit(f"{variant} child failed (exit {p.returncode})")
    return json.loads(lines[-1][len(MARK):]), (load_before, os.getloadavg()[0])


def peak_for(device: str, device_name: str | None, threads: int) -> tuple[str, float] | None:
    import torch

    from fastbpe.lm import accounting

    if device.startswith("cuda"):
        found = accounting.gpu_peak(device_name) if device_name else None
        return (f"{found[0]} dense bf16 {found[1] / 1e12:.0f} TFLOP/s", found[1]) if found else None
    torch.set_num_threads(threads)
    value = accounting.measure_cpu_matmul_peak(n=1024, repeats=5)
    return f"measured fp32 1024^3 matmul, {value / 1e9:.0f} GFLOP/s", value


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=150, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each variant; the best is kept")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast there)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--data-dir", default=None, help="token cache (default: a folder in the temp dir)")
    ap.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                    help="also run the in-process check: ROUNDS rounds of --block bare steps and --block train_lm "
                         "steps alternating in one interpreter (for hosts whose speed drifts between processes)")
    ap.add_argument("--block", type=int, default=25, help="steps per block of --interleave")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        spec = json.loads(args.spec)
        fn = {"bare": child_bare, "lm": child_lm, "interleave": child_interleave}[args.child]
        print(MARK + json.dumps(fn(spec)), flush=True)
        return

    load_at_start = os.getloadavg()[0]
    import torch

    from fastbpe.lm import accounting, preset

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    threads = args.threads or torch.get_num_threads()
    cache = args.data_dir or os.path.join(tempfile.gettempdir(), f"fastbpe-lm-bench-v{args.vocab_size}")
    train_bin, val_bin, data_info = prepare_data(args.corpus, args.vocab_size, cache)
    config = preset(args.preset)  # the cadence and shape (vocab comes from the token files)
    spec = {"preset": args.preset, "device": args.device, "threads": threads, "steps": args.steps,
            "warmup": args.warmup, "train": train_bin, "val": val_bin}

    # The CPU peak first, while nothing of ours runs (the GPU peak is a table lookup, done later).
    peak = None if args.device.startswith("cuda") else peak_for(args.device, None, threads)

    best: dict[str, dict] = {}
    loads: list[float] = []
    raw: list[str] = []
    pairs: dict[int, dict[str, float]] = {}
    for r in range(args.repeat):
        for variant in (("bare", "lm") if r % 2 == 0 else ("lm", "bare")):
            res, (l0, l1) = run_child(variant, spec)
            loads += [l0, l1]
            per = res["window_s"] / args.steps
            med = res.get("median_step_s", res.get("plain_median_s"))
            raw.append(f"repeat {r + 1} {variant}: window mean {per * 1e3:.1f} ms/step"
                       + (f", ordinary-step mean {res['plain_mean_s'] * 1e3:.1f}" if variant == "lm" else "")
                       + (f", median {med * 1e3:.1f}" if med else "")
                       + (f", eval {res['eval_steps']:.2f} steps, ckpt {res['ckpt_steps']:.2f} steps" if variant == "lm" else "")
                       + f" (load {l0:.2f} -> {l1:.2f})")
            pairs.setdefault(r, {})[variant] = per
            prev = best.get(variant)
            if prev is None:
                best[variant] = res
            else:  # least disturbed run of each quantity
                for key in ("window_s", "plain_mean_s", "plain_median_s", "eval_steps", "ckpt_steps", "setup_s", "final_step_s", "mpl_import_s",
                            "median_step_s", "plain_p90_s", "p90_step_s", "after_update_mean_s",
                            "after_update_ratio"):
                    if key in res:
                        prev[key] = min(prev[key], res[key])

    bare, lm = best["bare"], best["lm"]
    from fastbpe.lm.data import token_metadata

    vocab = int(token_metadata(train_bin)["vocab_size"])
    B, T = config.batch_size, config.context_length
    tokens_per_step = B * T * config.grad_accum_steps
    flops_per_step = 3 * accounting.transformer_forward_flops(B * config.grad_accum_steps, T, config.d_model,
                                                              config.num_layers, config.num_heads, config.d_ff, vocab)
    if args.device.startswith("cuda"):
        peak = peak_for(args.device, bare.get("device_name"), threads)

    bare_step = bare["window_s"] / args.steps
    plain_step = lm["plain_mean_s"]
    window_step = lm["window_s"] / args.steps
    eval_s, ckpt_s = lm["eval_steps"] * plain_step, lm["ckpt_steps"] * plain_step
    eval_amort = eval_s / lm["eval_every"]
    ckpt_amort = ckpt_s / lm["checkpoint_every"]
    amort_step = plain_step + eval_amort + ckpt_amort

    def row(name, sec):
        over = "—" if sec is bare_step else f"{(sec / bare_step - 1) * 100:+.1f}%"
        mfu = f"{flops_per_step / sec / peak[1] * 100:.1f}%" if peak else "n/a"
        return f"| {name} | {tokens_per_step / sec:,.0f} | {sec * 1e3:.1f} | {over} | {mfu} |"

    a, b = lm["first_step"], lm["last_step"]
    print("| variant | tokens/s | ms/step | overhead vs bare | MFU |")
    print("|---|---:|---:|---:|---:|")
    print(row("bare loop", bare_step))
    print(row("train_lm, ordinary steps (no eval/checkpoint)", plain_step))
    print(row(f"train_lm, measured window (steps {a}-{b}: {lm['window_evals']} eval, {lm['window_ckpts']} checkpoint)",
              window_step))
    print(row(f"**train_lm, amortized at default cadence** (eval every {lm['eval_every']}, checkpoint every "
              f"{lm['checkpoint_every']})", amort_step))
    print()
    print(f"command: {shlex.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"machine: {cpu_model()}; os.cpu_count() {os.cpu_count()}, usable CPUs {len(os.sched_getaffinity(0))}; "
          f"torch {torch.__version__}, {threads} thread(s); device {args.device}"
          + (f" ({bare.get('device_name')})" if bare.get("device_name") else "") + f", {bare['precision']}")
    print(f"load average (1 min): {load_at_start:.2f} before the benchmark; around the child runs min {min(loads):.2f}, "
          f"max {max(loads):.2f} (this includes the benchmark's own child, about {threads} when it runs alone)")
    print(f"model: preset {args.preset}: {bare['params'] / 1e6:.2f}M parameters "
          f"({(bare['params'] - bare['embedding_params']) / 1e6:.2f}M without embedding and LM head), "
          f"{config.num_layers} layers, d_model {config.d_model}, d_ff {config.d_ff}, {config.num_heads} heads, "
          f"vocab {vocab}; batch {B} x {T} = {tokens_per_step:,} tokens/step; "
          f"{flops_per_step / 1e9:.1f} GFLOP/step (3 x forward matmul FLOPs)")
    print(f"MFU against: {peak[0] if peak else 'no known peak for this device'}")
    print(f"data: {train_bin} and {val_bin} ({'reused' if data_info['reused'] else 'built'}; "
          f"vocab {args.vocab_size} BPE on {os.path.basename(args.corpus)})")
    print()
    print("method:")
    print(f"- each variant in a fresh interpreter, order alternating, best of {args.repeat} (per quantity); "
          f"{args.warmup} untimed warm-up steps, then {args.steps} timed steps; bare = get_batch, forward, "
          "cross_entropy, backward, clip_grad_norm_, AdamW step, zero_grad, same init/optimizer/batch seed.")
    print("- train_lm's step k is timed from the start of step k to the start of step k+1 (its per-step cosine_lr "
          "call is patched to record the time), so everything the loop does after the update counts; its run has "
          "one extra step so the forced end-of-run eval/checkpoint fall outside the window.")
    print(f"- amortized = mean ordinary step + one eval / eval_every + one checkpoint / checkpoint_every; an eval "
          f"and a checkpoint are priced by a probe run in the same child (eval every {PROBE['eval_every']}, "
          f"checkpoint every {PROBE['checkpoint_every']}, {PROBE['max_steps']} steps): median eval step (or "
          f"checkpoint step) minus its median ordinary step, as a multiple of that ordinary step (load that drifts "
          f"between runs cancels), times train_lm's mean ordinary step from the main window.")
    print(f"- extras: one eval ({config.eval_batches} batches + loss.png) = {lm['eval_steps']:.2f} ordinary steps = "
          f"{eval_s * 1e3:.0f} ms -> "
          f"{eval_amort * 1e3:.2f} ms/step ({eval_amort / bare_step * 100:.1f}%); one checkpoint "
          f"({lm['ckpt_mb']:.1f} MB, fsync) = {lm['ckpt_steps']:.2f} ordinary steps = {ckpt_s * 1e3:.0f} ms -> {ckpt_amort * 1e3:.2f} ms/step "
          f"({ckpt_amort / bare_step * 100:.1f}%); per-step bookkeeping (loss/grad-norm reads, metrics row, progress "
          f"bar, BatchLoader) ordinary - bare = {(plain_step - bare_step) * 1e3:+.2f} ms/step "
          f"({(plain_step / bare_step - 1) * 100:+.1f}%).")
    print(f"- of that, the time an ordinary train_lm step spends after its own timed update (metrics row, progress "
          f"bar, grad-norm read; interval minus the dt train_lm logs, so drift between runs cancels): "
          f"{lm['after_update_mean_s'] * 1e3:.2f} ms/step = {lm['after_update_ratio'] * 100:.2f}% of the update.")
    drift_free = lm["after_update_ratio"] + lm["eval_steps"] / lm["eval_every"] + lm["ckpt_steps"] / lm["checkpoint_every"]
    print(f"- drift-free estimate of the extras, each measured against train_lm's own steps in the same run "
          f"(after-update time + eval steps / eval_every + checkpoint steps / checkpoint_every; leaves out what sits "
          f"inside the update, mainly BatchLoader instead of get_batch): {drift_free * 100:.1f}% of a step. "
          f"Compare it with the amortized row, which also carries the between-process noise of this machine.")
    full = config.max_steps * bare_step
    once = lm["setup_s"] + lm["final_step_s"] + lm["mpl_import_s"]
    print(f"- once per run, not in the rows: set-up incl. step-0 eval and CPU peak measurement "
          f"{lm['setup_s']:.2f} s, matplotlib import {lm['mpl_import_s']:.2f} s, last step with forced "
          f"eval+checkpoint+plot {lm['final_step_s']:.2f} s; together {once / full * 100:.1f}% of a full "
          f"{config.max_steps}-step {args.preset} run at the bare rate.")
    if "median_step_s" in bare:
        print(f"- medians (less load-sensitive): bare {bare['median_step_s'] * 1e3:.1f} ms/step, train_lm ordinary "
              f"{lm['plain_median_s'] * 1e3:.1f} ms/step ({(lm['plain_median_s'] / bare['median_step_s'] - 1) * 100:+.1f}%); "
              f"90th percentile: bare {bare['p90_step_s'] * 1e3:.1f}, train_lm ordinary {lm['plain_p90_s'] * 1e3:.1f} ms/step.")
    ratios = [p["lm"] / p["bare"] for p in pairs.values()]
    print(f"- order-balanced check: train_lm window / bare window within each repeat (the two run back to back, "
          f"the order alternating): {', '.join(f'{(x - 1) * 100:+.1f}%' for x in ratios)}; geometric mean "
          f"{(statistics.geometric_mean(ratios) - 1) * 100:+.1f}% (the window holds {lm['window_evals']} eval and "
          f"{lm['window_ckpts']} checkpoint).")
    if args.interleave:
        res, (l0, l1) = run_child("interleave", {**spec, "rounds": args.interleave, "block": args.block})
        ratios = [r["lm"] / r["bare"] for r in res["rounds"]]
        print(f"- in-process check ({args.interleave} rounds of {args.block} bare steps and {args.block} train_lm steps "
              f"without eval/checkpoint, alternating in one interpreter; load {l0:.2f} -> {l1:.2f}): per-round train_lm / "
              f"bare {', '.join(f'{(x - 1) * 100:+.1f}%' for x in ratios)}; median {(statistics.median(ratios) - 1) * 100:+.1f}%"
              f" per ordinary step; with the eval and checkpoint amortized as above: "
              f"{(statistics.median(ratios) * (1 + lm['eval_steps'] / lm['eval_every'] + lm['ckpt_steps'] / lm['checkpoint_every']) - 1) * 100:+.1f}%.")
    print("- runs: " + "; ".join(raw))


if __name__ == "__main__":
    main()
