"""The training loop: AMP, gradient accumulation, clipping, cosine LR, evaluation, metrics,
loss plots, atomic checkpoints, exact resume, clean stops on SIGINT/SIGTERM, and DDP.

    from fastbpe.lm import preset, train_lm
    result = train_lm(preset("tiny"), "train.bin", "val.bin", "runs/tiny")

A run folder holds config.json, tokenizer.json (when the token files name one), metrics.jsonl
(one row per step and one per evaluation), loss.png and ckpt_XXXXXXX.pt (the newest k, the
last step's always among them).

The pieces, each usable alone: `check_inputs` (everything checked before the folder changes),
`setup` (seeded model, AdamW over `param_groups`, loss scaler, batch generator), `restore` (a
checkpoint into that state), `train_step`, `validation_row` and `Checkpointer`; `_Loop` ties them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import math
import os
import random
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
from fastbpe.lm.checkpoint import (  # noqa: F401 - checkpoints, newest_valid_checkpoint: also read from here
    checkpoint_path,
    checkpoint_step,
    checkpoints,
    newest_valid_checkpoint,
    save_checkpoint,
)
from fastbpe.lm.config import MODEL_FIELDS, TrainConfig, param_groups
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


#: What a run writes besides its checkpoints: all that --overwrite removes.
RUN_FILES = ("config.json", "metrics.jsonl", "loss.png", "tokenizer.json")


def peak_flops(device: torch.device) -> tuple[str, float] | None:
    """Dense bf16 peak of a known GPU, or this CPU's measured fp32 matmul rate."""
    if device.type == "cuda":
        return accounting.gpu_peak(torch.cuda.get_device_name(device))
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


# ---- the pieces of a run -------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    """This process's place in a run: rank 0 of 1 without torchrun."""

    ddp: bool = False
    rank: int = 0
    world: int = 1
    owns_group: bool = False  # a process group made by the caller is left to the caller

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the DDP process group under torchrun (WORLD_SIZE > 1); on CUDA each rank takes the
    GPU LOCAL_RANK names. Elsewhere a single process and `device` unchanged."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed(), device
    owns_group = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns_group = True
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Distributed(True, dist.get_rank(), dist.get_world_size(), owns_group), device


@dataclass
class RunInputs:
    """A run's token files and what was found about them, all checked before the folder changes."""

    config: TrainConfig  # vocab_size settled: the tokenizer's, the data's or the resumed checkpoint's
    train_data: np.ndarray
    meta: dict  # the training file's sidecar
    val_data: np.ndarray
    source: tuple[str, Tokenizer] | None  # the tokenizer the token files name
    found: tuple[str, dict] | None  # (path, contents) of the checkpoint to resume from
    tokenizer_update: tuple[bytes, bool] | None  # see _run_tokenizer_update


def check_inputs(config: TrainConfig, train_path: str, val_path: str, run_dir: str, resume: bool, overwrite: bool,
                 log=print) -> RunInputs:
    """Every check a run makes before it changes anything in `run_dir`: the folder, both token
    files (length, tokenizer, every id against the vocabulary) and, with `resume`, the checkpoint."""
    _check_run_dir(run_dir, resume, overwrite)
    train_data, meta = _open_split(train_path, "training", config.context_length)
    val_data, val_meta = _open_split(val_path, "validation", config.context_length)
    _check_same_tokenizer(train_path, meta, val_path, val_meta)
    found = newest_valid_checkpoint(run_dir) if resume else None
    if found is not None:
        config = _check_resume(*found, config, meta, train_path, run_dir)
    source = _data_tokenizer(train_path, meta)
    config = _with_vocab_size(config, source, [(train_path, train_data, meta), (val_path, val_data, val_meta)],
                              found is not None, log)
    update = _run_tokenizer_update(run_dir, source, meta.get("tokenizer_sha256"), overwrite)
    return RunInputs(config, train_data, meta, val_data, source, found, update)


@dataclass
class TrainState:
    """What a step changes, and what a checkpoint holds besides the global RNGs."""

    model: TransformerLM
    optimizer: AdamW
    scaler: torch.amp.GradScaler  # enabled for fp16 only
    generator: torch.Generator  # this rank's batches


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> AdamW:
    """AdamW over `param_groups` with the config's peak rate, betas and eps."""
    return AdamW(param_groups(model, config.weight_decay), lr=config.max_lr, betas=(config.beta1, config.beta2),
                 eps=config.eps)


def setup(config: TrainConfig, device: torch.device, precision: str, rank: int = 0) -> TrainState:
    """A fresh run's state: every RNG seeded, then the model's initial weights drawn, the
    optimizer, the fp16 loss scaler, and the batch generator (each rank draws its own batches)."""
    seed_everything(config.seed)
    model = TransformerLM.from_config(config, device=device)
    optimizer = build_optimizer(model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + rank)
    return TrainState(model, optimizer, scaler, generator)


def restore(state: TrainState, path: str, ckpt: dict, rank: int = 0) -> int:
    """Load a checkpoint into `state`, the global RNGs included; returns the step it was written at."""
    try:
        state.model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit this model ({str(e).splitlines()[0]}): resume with the settings it "
                         "was trained with, or start a fresh run (--overwrite or another --out)") from None
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    state.generator.set_state(set_rng_state(ckpt["rng"][rank] if isinstance(ckpt["rng"], list) else ckpt["rng"]))
    return ckpt["iteration"]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class StepOutcome:
    loss: float  # the step's mean loss (over micro-batches and ranks)
    grad_norm: float  # before clipping
    skipped: bool  # fp16: a non-finite loss, so GradScaler skipped the update and lowered the scale


def train_step(state: TrainState, train_model: torch.nn.Module, batches, config: TrainConfig, device: torch.device,
               precision: str, dist_: Distributed = Distributed(), step: int = 0,
               last_checkpoint: str | None = None) -> StepOutcome:
    """One optimizer step at the rate set in the optimizer: `grad_accum_steps` micro-batches from
    `batches` forward and backward through `train_model` (the model, or its compiled or DDP
    wrapper) under autocast, gradients unscaled and clipped, the update, gradients cleared.
    TrainingDiverged on a non-finite loss without fp16's scaler; `step` (steps done before) and
    `last_checkpoint` go into its message."""
    optimizer, scaler = state.optimizer, state.scaler
    loss_sum = torch.zeros((), device=device)
    for micro in range(config.grad_accum_steps):
        x, y = next(batches)
        sync = contextlib.nullcontext()
        if dist_.ddp and micro < config.grad_accum_steps - 1:
            sync = train_model.no_sync()  # all-reduce gradients once per step
        with sync:
            with autocast(device, precision):
                loss = cross_entropy(train_model(x), y) / config.grad_accum_steps
            scaler.scale(loss).backward()
        loss_sum += loss.detach()
    scaler.unscale_(optimizer)
    grad_norm = clip_grad_norm_(state.model.parameters(), config.grad_clip)
    loss_value = float(loss_sum)
    if dist_.ddp:
        t = torch.tensor([loss_value], device=device)
        dist.all_reduce(t)
        loss_value = float(t) / dist_.world
    skipped = False
    if not math.isfinite(loss_value):
        if precision != "fp16":
            raise TrainingDiverged(
                f"loss is {loss_value} at step {step + 1}; stopping. The last good checkpoint is "
                f"{last_checkpoint or '(none yet)'}: lower max_lr or use fp32."
            )
        skipped = True  # GradScaler skips this step and lowers the scale
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return StepOutcome(loss_value, float(grad_norm), skipped)


def validation_row(model: torch.nn.Module, train_model: torch.nn.Module, val_data: np.ndarray, config: TrainConfig,
                   device: torch.device, precision: str, byte_lengths: torch.Tensor | None,
                   dist_: Distributed = Distributed()) -> dict:
    """The validation row's numbers over `eval_batches` windows (summed over ranks): val_loss,
    val_ppl and, with the tokenizer's byte lengths, val_bpb. `train_model` goes back to training."""
    train_model.eval()
    total = eval_totals(model, val_data, config.batch_size, config.context_length, device, byte_lengths,
                        max_batches=config.eval_batches or None, amp=autocast(device, precision))
    if dist_.ddp:
        dist.all_reduce(total)
    train_model.train()
    result = result_from_totals(total, byte_lengths is not None)
    row = {"val_loss": result.loss, "val_ppl": result.perplexity}
    if result.bpb is not None:
        row["val_bpb"] = result.bpb
    return row


class Checkpointer:
    """Writes a run's checkpoints (rank 0 writes, with every rank's RNG states) and keeps the
    newest `keep_checkpoints` of this run's; `saved` is (step, path) of the newest one."""

    def __init__(self, run_dir: str, config: TrainConfig, state: TrainState, meta: dict, precision: str,
                 dist_: Distributed, resumed: tuple[int, str] | None):
        self.run_dir, self.config, self.state, self.meta, self.precision, self.dist = (
            run_dir, config, state, meta, precision, dist_)
        self.saved = resumed
        self.resumed_at = resumed[0] if resumed is not None else -1
        self.written: list[str] = []  # the checkpoints this call wrote

    def write(self, step: int, loader: BatchLoader) -> None:
        states = rng_state(loader)
        if self.dist.ddp:
            gathered: list = [None] * self.dist.world
            dist.all_gather_object(gathered, states)
            states = gathered
        path = checkpoint_path(self.run_dir, step)
        if self.dist.main:
            try:
                save_checkpoint(self.state.model, self.state.optimizer, step, path,
                                scaler=self.state.scaler.state_dict(), config=dataclasses.asdict(self.config),
                                rng=states, tokenizer={"sha256": self.meta.get("tokenizer_sha256"),
                                                       "path": self.meta.get("tokenizer")},
                                precision=self.precision, num_threads=torch.get_num_threads())
            except OSError as e:
                newest = (f"the run's newest checkpoint is {self.saved[1]}: continue from it with --resume"
                          if self.saved else "the run has no earlier checkpoint")
                msg = f"{e.strerror if e.errno is not None else e}; {newest}"
                raise (OSError(e.errno, msg) if e.errno is not None else OSError(msg)) from e
            self.written.append(path)
            _prune(self.run_dir, self.resumed_at, self.written, self.config.keep_checkpoints)
        self.saved = (step, path)
        if self.dist.ddp:
            dist.barrier()

    @property
    def newest_path(self) -> str | None:
        return self.saved[1] if self.saved else None


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
    """Checks, then the folder prepared, the state set up (or restored), and the loop."""
    dist_, device = init_distributed(device)
    main = dist_.main
    say = log if main else (lambda *a: None)
    precision = resolve_precision(config.precision, device)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16: use --precision fp16 or fp32")

    inputs = check_inputs(config, train_path, val_path, run_dir, resume, overwrite, say)
    config = inputs.config
    os.makedirs(run_dir, exist_ok=True)
    if dist_.ddp:
        dist.barrier()  # every rank has looked at the folder before rank 0 changes it
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if main and overwrite:
        removed = _clear_run(run_dir)
        if removed:
            log(f"--overwrite: removed the earlier run's {', '.join(removed)} from {run_dir} (nothing else)")

    state = setup(config, device, precision, dist_.rank)
    start = 0
    resumed = None
    vals: list[float] = []  # the validation losses already logged (first and last are reported)
    if inputs.found is not None:
        path, ckpt = inputs.found
        start = restore(state, path, ckpt, dist_.rank)
        resumed = (start, path)
        _warn_thread_count(path, ckpt, config, device)
        if main:
            log(f"resumed from {path} at step {start}")
            _truncate_metrics(metrics_path, start)
            if os.path.exists(metrics_path):
                vals = [row["val_loss"] for row in read_metrics(metrics_path)[1]]
    elif resume and main:
        log(f"no valid checkpoint in {run_dir}: starting from scratch")
        _truncate_metrics(metrics_path, -1)

    if main:
        _write_json(os.path.join(run_dir, "config.json"), dataclasses.asdict(config))
        if inputs.tokenizer_update is not None:
            tok_path = os.path.join(run_dir, "tokenizer.json")
            write_atomic(tok_path, inputs.tokenizer_update[0])
            if inputs.tokenizer_update[1]:
                log(f"replaced {tok_path}: it was not the tokenizer of {train_path} (now {inputs.source[0]})")

    train_model = state.model
    if config.compile:
        train_model = torch.compile(state.model)
    if dist_.ddp:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return _Loop(config, device, precision, dist_, inputs, state, train_model, run_dir, start, resumed, vals, progress,
                 log).run()


def _warn_thread_count(path: str, ckpt: dict, config: TrainConfig, device: torch.device) -> None:
    threads = ckpt.get("num_threads")
    if config.deterministic and device.type == "cpu" and threads not in (None, torch.get_num_threads()):
        warnings.warn(f"{path} was written with {threads} CPU threads and this run has {torch.get_num_threads()}: "
                      "a deterministic run repeats bit for bit only with the same thread count", stacklevel=4)


class _Loop:
    """The loop that ties the pieces: steps at the cosine rate, validation, metrics rows, progress,
    checkpoints, and a clean stop on SIGINT/SIGTERM."""

    def __init__(self, config: TrainConfig, device: torch.device, precision: str, dist_: Distributed,
                 inputs: RunInputs, state: TrainState, train_model: torch.nn.Module, run_dir: str, start: int,
                 resumed: tuple[int, str] | None, vals: list[float], progress: bool | None, log):
        self.config, self.device, self.precision, self.dist = config, device, precision, dist_
        self.inputs, self.state, self.train_model, self.run_dir = inputs, state, train_model, run_dir
        self.start = self.step = start
        self.log = log
        self.main = dist_.main
        self.metrics_path = os.path.join(run_dir, "metrics.jsonl")
        self.vals = vals  # validation losses so far (a resumed run's from its metrics)
        self.tokens_seen, self.train_time = 0, 0.0
        c = config
        self.tokens_per_step = c.batch_size * c.context_length * c.grad_accum_steps * dist_.world
        self.flops_per_step = 3 * accounting.transformer_forward_flops(
            c.batch_size * c.grad_accum_steps * dist_.world, c.context_length, c.d_model, c.num_layers, c.num_heads,
            c.d_ff, c.vocab_size)
        self.peak = peak_flops(device) if self.main else None
        if self.main:
            n_params = sum(p.numel() for p in state.model.parameters())
            log(f"model: {n_params / 1e6:.2f}M parameters, {c.num_layers} layers, d_model {c.d_model}; "
                f"{device.type} {precision}; {self.tokens_per_step:,} tokens/step; "
                f"{len(inputs.train_data):,} training tokens")
        source = inputs.source
        self.byte_lengths = token_byte_lengths(source[1], c.vocab_size, device) if source is not None else None
        self.checkpointer = Checkpointer(run_dir, config, state, inputs.meta, precision, dist_, resumed)
        self.reporter = Reporter(c.report, run_dir, dataclasses.asdict(c), resume_step=start) if self.main else None
        self.bar = _progress.Bar("training", c.max_steps, "steps") if (self.main and _progress.wanted(progress)) else None
        self.plain = self.main and self.bar is None  # off a terminal: plain lines instead of the bar

    def evaluate(self) -> None:
        row = validation_row(self.state.model, self.train_model, self.inputs.val_data, self.config, self.device,
                             self.precision, self.byte_lengths, self.dist)
        self.vals.append(row["val_loss"])
        self.log_row({"step": self.step, **row})

    def log_row(self, row: dict) -> None:
        if self.main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            self.reporter.row(row)

    def say_progress(self, loss: float | None) -> None:
        done, t = self.step - self.start, self.train_time
        tps = self.tokens_seen / t if t else None
        mfu = self.flops_per_step * done / t / self.peak[1] if (self.peak and t) else None
        eta = (self.config.max_steps - self.step) * t / done if done else None
        self.log(progress_line(self.step, self.config.max_steps, loss, self.vals[-1] if self.vals else None, tps, mfu,
                               eta))

    def one_step(self, loader: BatchLoader) -> float:
        """A step at the schedule's rate, its row logged; returns its loss."""
        c = self.config
        t0 = time.perf_counter()
        # A run shorter than the warmup warms up over the whole run.
        lr = cosine_lr(self.step, c.max_lr, c.min_lr, min(c.warmup_steps, c.max_steps), c.max_steps)
        set_lr(self.state.optimizer, lr)
        out = train_step(self.state, self.train_model, loader, c, self.device, self.precision, self.dist,
                         self.step, self.checkpointer.newest_path)
        dt = time.perf_counter() - t0
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        self.train_time += dt
        tps = self.tokens_per_step / dt
        mfu = self.flops_per_step / dt / self.peak[1] if self.peak else None
        row = {"step": self.step, "loss": out.loss, "lr": lr, "grad_norm": out.grad_norm, "tokens_per_s": tps,
               "mfu": mfu}
        if out.skipped:
            row["skipped"] = True
        self.log_row(row)
        if self.bar:
            self.bar.postfix = f"loss {out.loss:.3f} | {tps:,.0f} tok/s" + (f" | MFU {mfu:.1%}" if mfu else "")
            self.bar(self.step)
        return out.loss

    def plot(self) -> None:
        plot_loss(self.metrics_path, os.path.join(self.run_dir, "loss.png"),
                  title=os.path.basename(os.path.abspath(self.run_dir)))

    def run(self) -> RunResult:
        c = self.config
        loader = BatchLoader(self.inputs.train_data, c.batch_size, c.context_length, self.device, self.state.generator)
        stopped_by = None
        try:
            with _Stopper() as stopper:
                if self.start == 0:
                    self.evaluate()
                    if self.plain:
                        self.say_progress(None)
                while self.step < c.max_steps:
                    loss = self.one_step(loader)
                    evaluating = self.step % c.eval_every == 0 or self.step == c.max_steps
                    if evaluating:
                        self.evaluate()
                        if self.main:
                            self.plot()
                    if self.plain and (evaluating or self.step % c.log_every == 0):
                        self.say_progress(loss)
                    if self.step % c.checkpoint_every == 0 or self.step == c.max_steps:
                        self.checkpointer.write(self.step, loader)
                    if stopper.signal:
                        stopped_by = stopper.signal
                        break
                saved = self.checkpointer.saved
                if saved is None or saved[0] != self.step:
                    self.checkpointer.write(self.step, loader)  # a run always ends with a checkpoint of its last step
                if stopped_by and self.main:
                    self.log(f"\n{stopped_by}: stopped after step {self.step}; checkpoint written, resume with --resume")
        finally:
            loader.close()
            if self.bar:
                self.bar.close()
            if self.reporter is not None:
                self.reporter.close()
            if self.main and os.path.exists(self.metrics_path):
                self.plot()
            if self.dist.owns_group:
                dist.barrier()  # no rank tears down its connections while another still uses them
                dist.destroy_process_group()
        tps = self.tokens_seen / self.train_time if self.train_time else 0.0
        first, last = (self.vals[0], self.vals[-1]) if self.vals else (None, None)
        return RunResult(self.step, first, last, tps, stopped_by, self.run_dir, self.state.model)


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
