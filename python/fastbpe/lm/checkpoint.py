"""Checkpoints: model, optimizer and iteration (and whatever else the caller adds) in one file.

Writes to a path are atomic (temporary file in the same folder, fsync, rename), so a crash
or a full disk leaves the previous checkpoint intact; loading uses `weights_only=True` (no code runs from the
file) and checks the format version.
"""

from __future__ import annotations

import errno
import os
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
