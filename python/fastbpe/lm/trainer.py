"""The training loop: AMP, gradient accumulation, clipping, cosine LR, evaluation, metrics,
loss plots, atomic checkpoints, exact resume, clean stops on SIGINT/SIGTERM, and DDP.

    from fastbpe.lm import preset, train_lm
    result = train_lm(preset("tiny"), "train.bin", "val.bin", "runs/tiny")

A run folder holds config.json, tokenizer.json (when the token files name one), metrics.jsonl
(one row per step and one per evaluation), loss.png and ckpt_XXXXXXX.pt (the newest k).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import math
import os
import random
import shutil
import signal
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from fastbpe import _progress
from fastbpe._io import write_atomic
from fastbpe.lm import accounting
from fastbpe.lm.checkpoint import CheckpointError, read_checkpoint, save_checkpoint, unwrap
from fastbpe.lm.config import TrainConfig
from fastbpe.lm.data import BatchLoader, open_tokens, sequential_batches, token_metadata
from fastbpe.lm.nn import TransformerLM, clip_grad_norm_, cross_entropy
from fastbpe.lm.optim import AdamW, cosine_lr
from fastbpe.lm.plot import plot_loss


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (without fp16 loss scaling to absorb it)."""


@dataclass
class RunResult:
    steps: int  # optimizer steps completed
    first_val_loss: float | None
    last_val_loss: float | None
    tokens_per_s: float
    stopped_by: str | None  # the signal that stopped the run early, if any
    run_dir: str
    model: torch.nn.Module  # the trained module (unwrapped)


# ---- setup helpers -------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """One seed for python, numpy, torch and every CUDA device."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def rng_state(loader: BatchLoader) -> dict:
    """Every random state a resumed run needs to continue exactly (weights_only-loadable)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batches": loader.generator_state,
    }


def set_rng_state(state: dict) -> torch.Tensor:
    """Restores the global RNGs; returns the batch generator's state."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    return state["batches"]


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def checkpoints(run_dir: str) -> list[str]:
    """Checkpoint files of a run, oldest first."""
    return sorted(glob.glob(os.path.join(run_dir, "ckpt_*.pt")))


def newest_valid_checkpoint(run_dir: str) -> tuple[str, dict] | None:
    """The newest checkpoint that loads; truncated or corrupt newer ones are skipped with a warning."""
    for path in reversed(checkpoints(run_dir)):
        try:
            return path, read_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping {path}: {e}", stacklevel=2)
    return None


def peak_flops(device: torch.device) -> tuple[str, float] | None:
    """Dense bf16 peak of a known GPU, or this CPU's measured fp32 matmul rate."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in accounting.PEAK_FLOPS.items():
            if key in name and "sparse" not in key:
                return key, value
        return None
    if device.type == "cpu":
        return "cpu (measured fp32 matmul)", accounting.measure_cpu_matmul_peak(n=1024, repeats=5)
    return None


class _Stopper:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps."""

    def __init__(self):
        self.signal: str | None = None
        self._old: dict = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ---- the loop ------------------------------------------------------------------------------


def train_lm(
    config: TrainConfig,
    train_path: str,
    val_path: str,
    run_dir: str,
    *,
    resume: bool = False,
    progress: bool | None = None,
    log=print,
) -> RunResult:
    """Train a TransformerLM on token files; see the module docstring."""
    config.validate()
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    device = resolve_device(config.device)
    owns_group = False  # a process group made by the caller is left to the caller
    if ddp:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            owns_group = True
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    main = rank == 0
    precision = resolve_precision(config.precision, device)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16: use --precision fp16 or fp32")

    train_data, val_data = open_tokens(train_path), open_tokens(val_path)
    meta = token_metadata(train_path)
    if config.vocab_size == 0:
        config = config.replace(vocab_size=int(meta["vocab_size"]))
    if int(meta.get("vocab_size", config.vocab_size)) > config.vocab_size:
        raise ValueError(f"the tokens need vocab_size >= {meta['vocab_size']}, config has {config.vocab_size}")
    os.makedirs(run_dir, exist_ok=True)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")

    seed_everything(config.seed)
    model = TransformerLM(config.vocab_size, config.context_length, config.d_model, config.num_layers,
                          config.num_heads, config.d_ff, config.rope_theta, device=device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embeddings" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embeddings" not in n)]
    optimizer = AdamW([{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                      lr=config.max_lr, betas=(config.beta1, config.beta2), eps=config.eps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    # Each rank draws its own batches.
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + rank)

    start = 0
    first_val = last_val = None
    if resume:
        found = newest_valid_checkpoint(run_dir)
        if found is None:
            log(f"no checkpoint in {run_dir}: starting from scratch")
        else:
            path, ckpt = found
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            generator.set_state(set_rng_state(ckpt["rng"][rank] if isinstance(ckpt["rng"], list) else ckpt["rng"]))
            start = ckpt["iteration"]
            if main:
                log(f"resumed from {path} at step {start}")
                _truncate_metrics(metrics_path, start)
                if os.path.exists(metrics_path):
                    from fastbpe.lm.plot import read_metrics

                    evals = read_metrics(metrics_path)[1]
                    first_val = evals[0]["val_loss"] if evals else None
                    last_val = evals[-1]["val_loss"] if evals else None
    elif main and os.path.exists(metrics_path):
        os.unlink(metrics_path)  # a fresh run in an old folder starts a fresh log

    if main:
        _write_json(os.path.join(run_dir, "config.json"), dataclasses.asdict(config))
        tok_path = meta.get("tokenizer")
        if tok_path and os.path.exists(tok_path) and not os.path.exists(os.path.join(run_dir, "tokenizer.json")):
            shutil.copyfile(tok_path, os.path.join(run_dir, "tokenizer.json"))

    train_model = model
    if config.compile:
        train_model = torch.compile(model)
    if ddp:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )

    tokens_per_step = config.batch_size * config.context_length * config.grad_accum_steps * world
    flops_per_step = 3 * accounting.transformer_forward_flops(
        config.batch_size * config.grad_accum_steps * world, config.context_length, config.d_model,
        config.num_layers, config.num_heads, config.d_ff, config.vocab_size)
    peak = peak_flops(device) if main else None
    if main:
        n_params = sum(p.numel() for p in model.parameters())
        log(f"model: {n_params / 1e6:.2f}M parameters, {config.num_layers} layers, d_model {config.d_model}; "
            f"{device.type} {precision}; {tokens_per_step:,} tokens/step; {len(train_data):,} training tokens")

    def evaluate() -> float:
        train_model.eval()
        total = torch.zeros(2, device=device, dtype=torch.float64)
        with torch.no_grad(), autocast(device, precision):
            for x, y in sequential_batches(val_data, config.batch_size, config.context_length, device,
                                           max_batches=config.eval_batches or None):
                logits = model(x)
                total[0] += cross_entropy(logits, y).double() * y.numel()
                total[1] += y.numel()
        if ddp:
            dist.all_reduce(total)
        train_model.train()
        return float(total[0] / total[1])

    def checkpoint(step: int) -> None:
        states = rng_state(loader)
        if ddp:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, states)
            states = gathered
        if main:
            path = os.path.join(run_dir, f"ckpt_{step:07d}.pt")
            save_checkpoint(model, optimizer, step, path, scaler=scaler.state_dict(), config=dataclasses.asdict(config),
                            rng=states, tokenizer={"sha256": meta.get("tokenizer_sha256"), "path": meta.get("tokenizer")},
                            precision=precision)
            for old in checkpoints(run_dir)[: -config.keep_checkpoints]:
                os.unlink(old)
        if ddp:
            dist.barrier()

    def log_row(row: dict) -> None:
        if main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    bar = _progress.Bar("training", config.max_steps, "steps") if (main and _progress.wanted(progress)) else None
    loader = BatchLoader(train_data, config.batch_size, config.context_length, device, generator)
    step = start
    tokens_seen, train_time = 0, 0.0
    stopped_by = None
    try:
        with _Stopper() as stopper:
            if start == 0:
                first_val = last_val = evaluate()
                log_row({"step": 0, "val_loss": first_val, "val_ppl": math.exp(first_val)})
            while step < config.max_steps:
                t0 = time.perf_counter()
                # A run shorter than the warmup warms up over the whole run.
                lr = cosine_lr(step, config.max_lr, config.min_lr, min(config.warmup_steps, config.max_steps), config.max_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=device)
                for micro in range(config.grad_accum_steps):
                    x, y = next(loader)
                    sync = contextlib.nullcontext()
                    if ddp and micro < config.grad_accum_steps - 1:
                        sync = train_model.no_sync()  # all-reduce gradients once per step
                    with sync:
                        with autocast(device, precision):
                            loss = cross_entropy(train_model(x), y) / config.grad_accum_steps
                        scaler.scale(loss).backward()
                    loss_sum += loss.detach()
                scaler.unscale_(optimizer)
                grad_norm = clip_grad_norm_(model.parameters(), config.grad_clip)
                loss_value = float(loss_sum)
                if ddp:
                    t = torch.tensor([loss_value], device=device)
                    dist.all_reduce(t)
                    loss_value = float(t) / world
                skipped = False
                if not math.isfinite(loss_value):
                    if precision != "fp16":
                        newest = checkpoints(run_dir)
                        raise TrainingDiverged(
                            f"loss is {loss_value} at step {step + 1}; stopping. The last good checkpoint is "
                            f"{newest[-1] if newest else '(none yet)'}: lower max_lr or use fp32."
                        )
                    skipped = True  # GradScaler skips this step and lowers the scale
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                dt = time.perf_counter() - t0
                step += 1
                tokens_seen += tokens_per_step
                train_time += dt
                tps = tokens_per_step / dt
                mfu = flops_per_step / dt / peak[1] if peak else None
                row = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                       "tokens_per_s": tps, "mfu": mfu}
                if skipped:
                    row["skipped"] = True
                log_row(row)
                if bar:
                    bar.postfix = f"loss {loss_value:.3f} | {tps:,.0f} tok/s" + (f" | MFU {mfu:.1%}" if mfu else "")
                    bar(step)
                if step % config.eval_every == 0 or step == config.max_steps:
                    last_val = evaluate()
                    log_row({"step": step, "val_loss": last_val, "val_ppl": math.exp(min(last_val, 50))})
                    if main:
                        plot_loss(metrics_path, os.path.join(run_dir, "loss.png"), title=os.path.basename(os.path.abspath(run_dir)))
                if step % config.checkpoint_every == 0 or step == config.max_steps:
                    checkpoint(step)
                if stopper.signal:
                    stopped_by = stopper.signal
                    if step % config.checkpoint_every:
                        checkpoint(step)
                    if main:
                        log(f"\n{stopped_by}: stopped after step {step}; checkpoint written, resume with --resume")
                    break
    finally:
        loader.close()
        if bar:
            bar.close()
        if main and os.path.exists(metrics_path):
            plot_loss(metrics_path, os.path.join(run_dir, "loss.png"), title=os.path.basename(os.path.abspath(run_dir)))
        if owns_group:
            dist.barrier()  # no rank tears down its connections while another still uses them
            dist.destroy_process_group()
    tps = tokens_seen / train_time if train_time else 0.0
    return RunResult(step, first_val, last_val, tps, stopped_by, run_dir, model)


def _truncate_metrics(path: str, step: int) -> None:
    """Drop rows logged after `step` by the run being resumed (they will be logged again)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    _write_text(path, "".join(rows))


def _write_json(path: str, obj) -> None:
    _write_text(path, json.dumps(obj, indent=1))


def _write_text(path: str, text: str) -> None:
    write_atomic(path, text.encode())
