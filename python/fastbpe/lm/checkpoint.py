"""Checkpoints: model, optimizer and iteration (and whatever else the caller adds) in one file,
and how a run folder names them (ckpt_0000200.pt) and finds its newest valid one.

Writes to a path are atomic (temporary file in the same folder, fsync, rename), so a crash
or a full disk leaves the previous checkpoint intact; loading uses `weights_only=True` (no code runs from the
file) and checks the format version.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import warnings
from typing import IO, BinaryIO

import torch

from fastbpe._io import atomic_writer

FORMAT = "fastbpe.checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is truncated, corrupt, or not one of ours."""


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under torch.compile / DDP wrappers, whose state dict has the plain names."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_checkpoint(model, optimizer, iteration: int, out: str | os.PathLike | BinaryIO | IO[bytes], **extra) -> None:
    """Save model and optimizer state and the iteration; `extra` entries are stored alongside
    (tensors, numbers, strings, lists and dicts of them)."""
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "iteration": int(iteration),
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        **extra,
    }
    if not isinstance(out, (str, os.PathLike)):
        torch.save(obj, out)
        return
    sink = None
    try:
        with atomic_writer(out, suffix=".pt") as f:
            sink = _ErrorKeepingFile(f)
            torch.save(obj, sink)
    except Exception as e:
        cause = e if isinstance(e, OSError) else (sink.error if sink is not None else None)
        if cause is None:
            raise
        raise _write_error(os.fspath(out), cause) from e


class _ErrorKeepingFile:
    """A file whose failed write is remembered: torch's writer reports an OSError from the file
    it writes to as a bare "unexpected pos" RuntimeError, losing the reason (a full disk)."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self._f.flush()


def _write_error(path: str, cause: OSError) -> OSError:
    """An OSError that names the checkpoint, says why it was not written, and that the file it
    would have replaced is untouched (the write went to a temporary file, now removed)."""
    if cause.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"the disk is full ({errno.errorcode[cause.errno]})"
        fix = "free some space"
    else:
        why = cause.strerror or str(cause)
        fix = "fix that"
    msg = (f"could not write checkpoint {path}: {why}; nothing was replaced, so the previous checkpoint is "
           f"intact: {fix} and try again")
    return OSError(cause.errno, msg) if cause.errno is not None else OSError(msg)


def read_checkpoint(src: str | os.PathLike | BinaryIO | IO[bytes], map_location="cpu") -> dict:
    """The checkpoint's contents, validated; CheckpointError names the file when it is not a
    complete checkpoint of this format."""
    name = os.fspath(src) if isinstance(src, (str, os.PathLike)) else getattr(src, "name", "<file object>")
    try:
        obj = torch.load(src, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise CheckpointError(f"{name} is not a readable checkpoint (truncated or corrupt?): {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{name} is not a fastbpe checkpoint")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{name} has checkpoint version {obj.get('version')!r}; this fastbpe reads version {VERSION}")
    return obj


def load_checkpoint(src, model, optimizer) -> int:
    """Restore model and optimizer state from `src`; returns the saved iteration."""
    obj = read_checkpoint(src)
    unwrap(model).load_state_dict(obj["model"])
    if optimizer is not None and obj.get("optimizer") is not None:
        optimizer.load_state_dict(obj["optimizer"])
    return obj["iteration"]


# ---- checkpoints in a run folder -----------------------------------------------------------

_CHECKPOINT_NAME = re.compile(r"ckpt_(\d+)\.pt")


def checkpoint_path(run_dir: str, step: int) -> str:
    """Where a run writes its checkpoint of `step` (ckpt_0000200.pt)."""
    return os.path.join(run_dir, f"ckpt_{step:07d}.pt")


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
