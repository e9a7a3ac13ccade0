"""The training loop: AMP, gradient accumulation, clipping, cosine LR, evaluation, metrics,
loss plots, atomic checkpoints, exact resume, clean stops on SIGINT/SIGTERM, and DDP.

    from fastbpe.lm import preset, train_lm
    result = train_lm(preset("tiny"), "train.bin", "val.bin", "runs/tiny")

A run folder holds config.json, tokenizer.json (when the token files name one), metrics.jsonl
(one row per step and one per evaluation), loss.png and ckpt_XXXXXXX.pt (the newest k, the
last step's always among them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import math
import os
import random
import re
import signal
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from fastbpe import _progress, token_files
from fastbpe._io import write_atomic
from fastbpe.lm import accounting
from fastbpe.lm.checkpoint import CheckpointError, read_checkpoint, save_checkpoint, unwrap
from fastbpe.lm.config import MODEL_FIELDS, TrainConfig
from fastbpe.lm.data import BatchLoader, open_tokens, token_metadata
from fastbpe.lm.evaluate import eval_totals, result_from_totals, token_byte_lengths
from fastbpe.lm.nn import TransformerLM, clip_grad_norm_, cross_entropy
from fastbpe.lm.optim import AdamW, cosine_lr
from fastbpe.lm.plot import plot_loss, read_metrics, read_rows
from fastbpe.lm.report import TENSORBOARD_DIR, Reporter, check_backend, progress_line
from fastbpe.tokenizer import Tokenizer


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
    """The device `name` stands for ("auto": cuda when available, else cpu); ValueError naming it
    when it is not a device this machine has."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {name!r}: use cpu, cuda, cuda:N or mps (or auto: cuda when available)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: PyTorch sees no CUDA GPU on this machine (no GPU or driver, or a "
                             "CPU-only build of PyTorch): use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise ValueError(f"device {name!r}: this machine has {count} CUDA device{'s' * (count != 1)} ({have}): "
                             "use one of those")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r}: PyTorch sees no Apple GPU (MPS) on this machine: use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"device {name!r}: fastbpe trains on cpu, cuda, cuda:N or mps")
    return device


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


_CHECKPOINT_NAME = re.compile(r"ckpt_(\d+)\.pt")
#: What a run writes besides its checkpoints: all that --overwrite removes.
RUN_FILES = ("config.json", "metrics.jsonl", "loss.png", "tokenizer.json")


def checkpoint_step(path: str) -> int | None:
    """The step in a checkpoint's name (ckpt_0000200.pt -> 200), or None for other files."""
    m = _CHECKPOINT_NAME.fullmatch(os.path.basename(path))
    return int(m.group(1)) if m else None


def checkpoints(run_dir: str) -> list[str]:
    """Checkpoint files of a run, oldest step first (by number: names outgrow their padding)."""
    found = [(checkpoint_step(p), p) for p in glob.glob(os.path.join(glob.escape(run_dir), "ckpt_*.pt"))]
    return [p for step, p in sorted(f for f in found if f[0] is not None)]


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


# ---- run folders, token files, resuming -----------------------------------------------------


def _check_run_dir(run_dir: str, resume: bool, overwrite: bool) -> None:
    """A fresh run needs a folder without another run in it: their checkpoints would mix, and a
    later --resume would continue the wrong one."""
    if resume and overwrite:
        raise ValueError(f"resume and overwrite exclude each other: --resume continues the run in {run_dir}, "
                         "--overwrite replaces it")
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir} is a file, not a run folder: choose another --out")
    if resume or overwrite:
        return
    held = [os.path.basename(p) for p in checkpoints(run_dir)]
    held += [n for n in ("metrics.jsonl", "config.json") if os.path.exists(os.path.join(run_dir, n))]
    if held:
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise ValueError(f"{run_dir} already holds a run ({shown}): continue it with --resume, replace it with "
                         "--overwrite, or choose another --out")


def _clear_run(run_dir: str) -> list[str]:
    """Delete what a run writes (its checkpoints and RUN_FILES) and nothing else; their names."""
    removed = []
    for path in checkpoints(run_dir) + [os.path.join(run_dir, n) for n in RUN_FILES]:
        if os.path.isfile(path):
            os.unlink(path)
            removed.append(os.path.basename(path))
    # TensorBoard's event files (nothing else in that folder, which goes when it is left empty)
    tb = os.path.join(run_dir, TENSORBOARD_DIR)
    for path in glob.glob(os.path.join(glob.escape(tb), "events.out.tfevents.*")):
        os.unlink(path)
        removed.append(os.path.relpath(path, run_dir))
    if os.path.isdir(tb) and not os.listdir(tb):
        os.rmdir(tb)
    return removed


def _open_split(path: str, what: str, context_length: int) -> tuple[np.ndarray, dict]:
    """A token file and its metadata; ValueError unless it holds one window of context_length + 1."""
    meta = token_metadata(path)
    # An empty file cannot be memory-mapped; it is simply too short.
    empty = os.path.isfile(path) and os.path.getsize(path) == 0
    data = np.zeros(0, dtype=np.uint16) if empty else open_tokens(path)
    if len(data) < context_length + 1:
        raise ValueError(f"the {what} file {path} holds {len(data)} tokens; windows of context_length {context_length} "
                         f"need at least {context_length + 1}: encode more text into it (for validation, a larger "
                         "fastbpe encode --val-fraction)")
    return data, meta


def _check_same_tokenizer(train_path: str, meta: dict, val_path: str, val_meta: dict) -> None:
    a, b = meta.get("tokenizer_sha256"), val_meta.get("tokenizer_sha256")
    if a and b and a != b:
        raise ValueError(f"{train_path} and {val_path} were encoded by different tokenizers (sha256 {a} and {b}): "
                         "encode both with one tokenizer (fastbpe encode --val-out splits one file into both)")


def _data_tokenizer(train_path: str, meta: dict) -> tuple[str, Tokenizer] | None:
    """(path, tokenizer) of the tokenizer the token files' metadata names, checked against the
    fingerprint recorded there; None when it names none or the file is gone."""
    path = meta.get("tokenizer")
    if not path:
        return None
    if not os.path.isfile(path):
        warnings.warn(f"{train_path}.json names the tokenizer {path}, which is gone: the run gets no tokenizer.json "
                      "(lm generate needs one)", stacklevel=3)
        return None
    tok = Tokenizer.load(path)
    want = meta.get("tokenizer_sha256")
    if want and tok.fingerprint() != want:
        raise ValueError(f"{path} is no longer the tokenizer that encoded {train_path} (its sha256 is "
                         f"{tok.fingerprint()}, the tokens' is {want}): put that tokenizer back, or encode the text "
                         "again with this one")
    return path, tok


def _fingerprint(path: str) -> str | None:
    try:
        return Tokenizer.load(path).fingerprint()
    except Exception:  # unreadable: certainly not the tokenizer wanted
        return None


def _run_tokenizer_update(run_dir: str, source: tuple[str, Tokenizer] | None, want: str | None,
                          fresh: bool) -> tuple[bytes, bool] | None:
    """(contents, whether it replaces a stale one) for the run's tokenizer.json when it is missing
    or is not the tokens' tokenizer; None to leave it. `fresh`: the folder is about to be cleared."""
    dst = os.path.join(run_dir, "tokenizer.json")
    exists = os.path.exists(dst) and not fresh
    if source is not None:
        with open(source[0], "rb") as f:
            new = f.read()
        if not exists:
            return new, False
        with open(dst, "rb") as f:
            if f.read() == new:
                return None
        return None if _fingerprint(dst) == source[1].fingerprint() else (new, True)
    if exists and want and _fingerprint(dst) != want:
        raise ValueError(f"{dst} is not the tokenizer of the tokens (sha256 {want}), and their metadata names no "
                         "tokenizer file to replace it with: copy the right tokenizer there, or encode the text with "
                         "fastbpe encode, which records it")
    return None


def _check_resume(path: str, ckpt: dict, config: TrainConfig, meta: dict, train_path: str, run_dir: str) -> TrainConfig:
    """The config to resume `ckpt` with (its vocab_size when the config leaves it at 0); ValueError
    when the tokens come from another tokenizer or the model's shape differs."""
    theirs, ours = (ckpt.get("tokenizer") or {}).get("sha256"), meta.get("tokenizer_sha256")
    if theirs and ours and theirs != ours:
        raise ValueError(f"{train_path} was encoded by tokenizer sha256 {ours}, but {path} was trained on tokens of "
                         f"tokenizer sha256 {theirs}: resume on token files of that tokenizer, or start a fresh run "
                         "(--overwrite or another --out)")
    saved = ckpt.get("config") or {}
    if config.vocab_size == 0 and saved.get("vocab_size"):
        config = config.replace(vocab_size=int(saved["vocab_size"]))
    differ = [f for f in MODEL_FIELDS if f in saved and saved[f] != getattr(config, f)]
    if differ:
        was = ", ".join(f"{f} {saved[f]}" for f in differ)
        now = ", ".join(f"{f} {getattr(config, f)}" for f in differ)
        raise ValueError(f"{path} holds a model with {was}, but this run asks for {now}: resume with the settings "
                         f"it was trained with (see {os.path.join(run_dir, 'config.json')}), or start a fresh run "
                         "(--overwrite or another --out)")
    return config


def _with_vocab_size(config: TrainConfig, source: tuple[str, Tokenizer] | None, splits: list, resumed: bool,
                     log) -> TrainConfig:
    """The config with the model's vocabulary size settled, every token id checked against it.

    The size is the largest id + 1, not the number of tokens: ids can have gaps (cl100k has no id
    100256 and puts <|endoftext|> at 100257). Unless the config or the resumed checkpoint sets it,
    it comes from the tokenizer the metadata names, so that the model covers every id the
    tokenizer can produce (special tokens the text never uses too); without one, from the
    metadata's vocab_size and the data's largest id, whichever is larger."""
    # One pass per file: the largest id, and the checksum checked on the way.
    scans = [(path, data.dtype.itemsize, token_files.scan_tokens(path)) for path, data, _ in splits]
    largest = [(path, size, (scan.max_id, scan.max_id_offset)) for path, size, scan in scans if scan.max_id is not None]
    if config.vocab_size == 0:
        if source is not None:
            size = max(source[1].vocab) + 1
        else:
            size = max([int(meta.get("vocab_size", 0)) for _, _, meta in splits] + [top[0] + 1 for *_, top in largest])
            log(f"vocab_size {size}: the token files name no tokenizer, so the model covers the ids in the data")
        config = config.replace(vocab_size=size)
    elif source is not None and not resumed and max(source[1].vocab) >= config.vocab_size:
        top = max(source[1].vocab)
        raise ValueError(f"vocab_size {config.vocab_size} cannot hold the ids of the tokenizer {source[0]}, which go up "
                         f"to {top}: set vocab_size 0 (taken from the tokenizer) or at least {top + 1}")
    for path, itemsize, (top, offset) in largest:
        if top >= config.vocab_size:
            raise ValueError(f"{path}: token id {top} at offset {offset} (byte {offset * itemsize}) is outside the "
                             f"model's vocabulary of {config.vocab_size} (ids 0 to {config.vocab_size - 1}): encode "
                             "the text with the model's tokenizer, or train a fresh model on these tokens")
    return config


def _prune(run_dir: str, resumed_at: int, written: list[str], keep: int) -> None:
    """Keep the newest `keep` of the run's checkpoints: those it wrote and those up to the one it
    resumed from. Others are not this run's (corrupt ones a resume skipped) and are left alone."""
    mine = [p for p in checkpoints(run_dir) if checkpoint_step(p) <= resumed_at or p in written]
    for old in mine[:-keep]:
        os.unlink(old)


@contextlib.contextmanager
def _determinism(enabled: bool, device: torch.device):
    """torch.use_deterministic_algorithms for the run (on CUDA with the fixed cuBLAS workspace it
    requires), put back as it was afterwards."""
    if not enabled:
        yield
        return
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if device.type == "cuda" and env is None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
        if env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


# ---- the loop ------------------------------------------------------------------------------


def train_lm(
    config: TrainConfig,
    train_path: str,
    val_path: str,
    run_dir: str,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    log=print,
) -> RunResult:
    """Train a TransformerLM on token files; see the module docstring.

    A fresh run needs a `run_dir` without another run's checkpoints, metrics.jsonl or
    config.json; `resume` continues the run there from its newest valid checkpoint (on tokens of
    the same tokenizer, with the same model shape), `overwrite` first deletes the files a run
    writes (and only those). With `config.vocab_size` 0 the model's vocabulary is the
    tokenizer's largest id + 1 (see _with_vocab_size); every id in the token files is checked
    against it before training."""
    config.validate()
    check_backend(config.report)  # a missing package is said before any work
    device = resolve_device(config.device)
    with _determinism(config.deterministic, device):
        return _train(config, device, os.fspath(train_path), os.fspath(val_path), os.fspath(run_dir),
                      resume, overwrite, progress, log)


def _train(config: TrainConfig, device: torch.device, train_path: str, val_path: str, run_dir: str, resume: bool,
           overwrite: bool, progress: bool | None, log) -> RunResult:
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
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
    say = log if main else (lambda *a: None)
    precision = resolve_precision(config.precision, device)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16: use --precision fp16 or fp32")

    # Everything is checked before anything in the run folder changes.
    _check_run_dir(run_dir, resume, overwrite)
    train_data, meta = _open_split(train_path, "training", config.context_length)
    val_data, val_meta = _open_split(val_path, "validation", config.context_length)
    _check_same_tokenizer(train_path, meta, val_path, val_meta)
    found = newest_valid_checkpoint(run_dir) if resume else None
    if found is not None:
        config = _check_resume(*found, config, meta, train_path, run_dir)
    source = _data_tokenizer(train_path, meta)
    config = _with_vocab_size(config, source, [(train_path, train_data, meta), (val_path, val_data, val_meta)],
                              found is not None, say)
    tokenizer_update = _run_tokenizer_update(run_dir, source, meta.get("tokenizer_sha256"), overwrite)
    os.makedirs(run_dir, exist_ok=True)
    if ddp:
        dist.barrier()  # every rank has looked at the folder before rank 0 changes it
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if main and overwrite:
        removed = _clear_run(run_dir)
        if removed:
            log(f"--overwrite: removed the earlier run's {', '.join(removed)} from {run_dir} (nothing else)")

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
    saved: tuple[int, str] | None = None  # (step, path) of the run's newest checkpoint
    written: list[str] = []  # the checkpoints this call wrote
    if found is not None:
        path, ckpt = found
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise ValueError(f"{path} does not fit this model ({str(e).splitlines()[0]}): resume with the settings it "
                             "was trained with, or start a fresh run (--overwrite or another --out)") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        generator.set_state(set_rng_state(ckpt["rng"][rank] if isinstance(ckpt["rng"], list) else ckpt["rng"]))
        start = ckpt["iteration"]
        saved = (start, path)
        threads = ckpt.get("num_threads")
        if config.deterministic and device.type == "cpu" and threads not in (None, torch.get_num_threads()):
            warnings.warn(f"{path} was written with {threads} CPU threads and this run has {torch.get_num_threads()}: "
                          "a deterministic run repeats bit for bit only with the same thread count", stacklevel=3)
        if main:
            log(f"resumed from {path} at step {start}")
            _truncate_metrics(metrics_path, start)
            if os.path.exists(metrics_path):
                evals = read_metrics(metrics_path)[1]
                first_val = evals[0]["val_loss"] if evals else None
                last_val = evals[-1]["val_loss"] if evals else None
    elif resume and main:
        log(f"no valid checkpoint in {run_dir}: starting from scratch")
        _truncate_metrics(metrics_path, -1)

    if main:
        _write_json(os.path.join(run_dir, "config.json"), dataclasses.asdict(config))
        if tokenizer_update is not None:
            tok_path = os.path.join(run_dir, "tokenizer.json")
            write_atomic(tok_path, tokenizer_update[0])
            if tokenizer_update[1]:
                log(f"replaced {tok_path}: it was not the tokenizer of {train_path} (now {source[0]})")

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

    byte_lengths = token_byte_lengths(source[1], config.vocab_size, device) if source is not None else None

    def evaluate() -> dict:
        """The validation row's numbers: val_loss, val_ppl and (with a tokenizer) val_bpb."""
        train_model.eval()
        total = eval_totals(model, val_data, config.batch_size, config.context_length, device, byte_lengths,
                            max_batches=config.eval_batches or None, amp=autocast(device, precision))
        if ddp:
            dist.all_reduce(total)
        train_model.train()
        result = result_from_totals(total, byte_lengths is not None)
        row = {"val_loss": result.loss, "val_ppl": result.perplexity}
        if result.bpb is not None:
            row["val_bpb"] = result.bpb
        return row

    def checkpoint(step: int) -> None:
        nonlocal saved
        states = rng_state(loader)
        if ddp:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, states)
            states = gathered
        path = os.path.join(run_dir, f"ckpt_{step:07d}.pt")
        if main:
            try:
                save_checkpoint(model, optimizer, step, path, scaler=scaler.state_dict(),
                                config=dataclasses.asdict(config), rng=states,
                                tokenizer={"sha256": meta.get("tokenizer_sha256"), "path": meta.get("tokenizer")},
                                precision=precision, num_threads=torch.get_num_threads())
            except OSError as e:
                newest = (f"the run's newest checkpoint is {saved[1]}: continue from it with --resume" if saved
                          else "the run has no earlier checkpoint")
                msg = f"{e.strerror if e.errno is not None else e}; {newest}"
                raise (OSError(e.errno, msg) if e.errno is not None else OSError(msg)) from e
            written.append(path)
            _prune(run_dir, start if found is not None else -1, written, config.keep_checkpoints)
        saved = (step, path)
        if ddp:
            dist.barrier()

    def log_row(row: dict) -> None:
        if main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            reporter.row(row)

    reporter = Reporter(config.report, run_dir, dataclasses.asdict(config), resume_step=start) if main else None
    bar = _progress.Bar("training", config.max_steps, "steps") if (main and _progress.wanted(progress)) else None
    plain = main and bar is None  # off a terminal: plain lines instead of the bar

    def say_progress(loss: float | None) -> None:
        done = step - start
        tps = tokens_seen / train_time if train_time else None
        mfu = flops_per_step * done / train_time / peak[1] if (peak and train_time) else None
        eta = (config.max_steps - step) * train_time / done if done else None
        log(progress_line(step, config.max_steps, loss, last_val, tps, mfu, eta))

    loader = BatchLoader(train_data, config.batch_size, config.context_length, device, generator)
    step = start
    tokens_seen, train_time = 0, 0.0
    stopped_by = None
    try:
        with _Stopper() as stopper:
            if start == 0:
                val_row = evaluate()
                first_val = last_val = val_row["val_loss"]
                log_row({"step": 0, **val_row})
                if plain:
                    say_progress(None)
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
                        raise TrainingDiverged(
                            f"loss is {loss_value} at step {step + 1}; stopping. The last good checkpoint is "
                            f"{saved[1] if saved else '(none yet)'}: lower max_lr or use fp32."
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
                evaluating = step % config.eval_every == 0 or step == config.max_steps
                if evaluating:
                    val_row = evaluate()
                    last_val = val_row["val_loss"]
                    log_row({"step": step, **val_row})
                    if main:
                        plot_loss(metrics_path, os.path.join(run_dir, "loss.png"), title=os.path.basename(os.path.abspath(run_dir)))
                if plain and (evaluating or step % config.log_every == 0):
                    say_progress(loss_value)
                if step % config.checkpoint_every == 0 or step == config.max_steps:
                    checkpoint(step)
                if stopper.signal:
                    stopped_by = stopper.signal
                    break
            if saved is None or saved[0] != step:
                checkpoint(step)  # a run always ends with a checkpoint of its last step
            if stopped_by and main:
                log(f"\n{stopped_by}: stopped after step {step}; checkpoint written, resume with --resume")
    finally:
        loader.close()
        if bar:
            bar.close()
        if reporter is not None:
            reporter.close()
        if main and os.path.exists(metrics_path):
            plot_loss(metrics_path, os.path.join(run_dir, "loss.png"), title=os.path.basename(os.path.abspath(run_dir)))
        if owns_group:
            dist.barrier()  # no rank tears down its connections while another still uses them
            dist.destroy_process_group()
    tps = tokens_seen / train_time if train_time else 0.0
    return RunResult(step, first_val, last_val, tps, stopped_by, run_dir, model)


def _truncate_metrics(path: str, step: int) -> None:
    """Keep the rows logged up to `step` (-1: none): the resumed run logs the later ones again."""
    if not os.path.exists(path):
        return
    rows = [row for row in read_rows(path) if row["step"] <= step]
    _write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def _write_json(path: str, obj) -> None:
    _write_text(path, json.dumps(obj, indent=1))


def _write_text(path: str, text: str) -> None:
    write_atomic(path, text.encode())
