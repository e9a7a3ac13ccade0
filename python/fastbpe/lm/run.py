"""Reading a run folder back: the trained model and the tokenizer it was trained with.

A run folder (see `fastbpe.lm.trainer`) holds ckpt_XXXXXXX.pt files, config.json and
tokenizer.json; the model's shape is the config stored in the checkpoint itself, so a checkpoint
is read with the model it was saved from even when config.json was edited since.
"""

from __future__ import annotations

import errno
import os

import fastbpe
from fastbpe.lm.checkpoint import CheckpointError, checkpoints, newest_valid_checkpoint
from fastbpe.lm.config import config_from_dict
from fastbpe.lm.nn import TransformerLM


def _missing(msg: str) -> FileNotFoundError:
    # errno and message only (no filename): str() and strerror are the whole sentence.
    return FileNotFoundError(errno.ENOENT, msg)


def newest_checkpoint(run_dir: str | os.PathLike) -> tuple[str, dict]:
    """(path, contents) of the run's newest valid checkpoint; FileNotFoundError when `run_dir` is
    not a folder or holds none, CheckpointError when every one is truncated or corrupt."""
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise _missing(f"no such run folder: {run_dir} (fastbpe lm train --out writes one)")
    if not checkpoints(run_dir):
        raise _missing(f"no checkpoint in {run_dir}: it is not a run folder, or its run has not written one yet "
                       "(fastbpe lm train --out writes them)")
    found = newest_valid_checkpoint(run_dir)
    if found is None:
        raise CheckpointError(f"no valid checkpoint in {run_dir}: every ckpt_*.pt there is truncated or corrupt "
                              "(see the warnings)")
    return found


def run_tokenizer(run_dir: str | os.PathLike, ckpt_path: str, ckpt: dict) -> fastbpe.Tokenizer:
    """The run's tokenizer.json, checked to be the one the checkpoint was trained with."""
    tok_path = os.path.join(os.fspath(run_dir), "tokenizer.json")
    if not os.path.isfile(tok_path):
        raise _missing(f"{tok_path} is missing: the run's token files did not name their tokenizer; "
                       "copy the tokenizer there")
    tok = fastbpe.Tokenizer.load(tok_path)
    want = (ckpt.get("tokenizer") or {}).get("sha256")
    if want and tok.fingerprint() != want:
        raise ValueError(f"{tok_path} is not the tokenizer {ckpt_path} was trained with (sha256 {tok.fingerprint()}, "
                         f"not {want}): copy that tokenizer there")
    return tok


def model_from_checkpoint(ckpt_path: str, ckpt: dict) -> TransformerLM:
    """The TransformerLM a checkpoint's config describes, with the checkpoint's weights, on the CPU."""
    config = config_from_dict(ckpt.get("config") or {})
    model = TransformerLM.from_config(config)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt_path} does not match the model its config describes "
                              f"({str(e).splitlines()[0]})") from None
    return model


def load_run(run_dir: str | os.PathLike) -> tuple[TransformerLM, fastbpe.Tokenizer]:
    """(model, tokenizer) from a run folder's newest valid checkpoint and its tokenizer.json.

    FileNotFoundError: no such folder, no checkpoint, no tokenizer.json; CheckpointError (a
    ValueError): every checkpoint corrupt, or one that does not fit its config; ValueError: a
    tokenizer.json that is not the one the run was trained with."""
    path, ckpt = newest_checkpoint(run_dir)
    tok = run_tokenizer(run_dir, path, ckpt)
    return model_from_checkpoint(path, ckpt), tok


__all__ = ["load_run", "newest_checkpoint", "model_from_checkpoint", "run_tokenizer"]
