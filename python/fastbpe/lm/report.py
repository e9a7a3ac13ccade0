"""Where a training run reports besides metrics.jsonl and loss.png: plain lines for logs that
are not a terminal, TensorBoard event files, Weights & Biases.

    check_backend("tensorboard")   # before any work: ImportError naming the extra to install
"""

from __future__ import annotations

import importlib.util
import math
import os

#: backend -> (the module it needs, the extra that installs it)
BACKENDS = {"none": None, "tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


class MissingExtra(ImportError):
    """A reporting backend whose package is not installed."""


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_backend(name: str) -> None:
    """ValueError for an unknown backend; MissingExtra (one line naming the extra) when its
    package is missing."""
    if name not in BACKENDS:
        raise ValueError(f"log must be one of {', '.join(BACKENDS)}, not {name!r}")
    need = BACKENDS[name]
    if need and not _installed(need[0]):
        raise MissingExtra(f"--log {name} needs the {need[0]} package: pip install \"fastbpe-rs[{need[1]}]\"")


def _fmt_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def progress_line(step: int, max_steps: int, loss: float | None, val_loss: float | None, tokens_per_s: float | None,
                  mfu: float | None, eta_s: float | None) -> str:
    """One plain line: step, loss, validation loss, tokens/s, MFU, ETA (what is unknown is '-')."""
    def num(v, f):
        return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, f)
    return (f"step {step}/{max_steps} | loss {num(loss, '.4f')} | val_loss {num(val_loss, '.4f')} | "
            f"{num(tokens_per_s, ',.0f')} tok/s | MFU {'-' if mfu is None else f'{mfu:.1%}'} | "
            f"ETA {'-' if eta_s is None else _fmt_eta(eta_s)}")


# The folder of a run that TensorBoard event files go to (--overwrite removes them).
TENSORBOARD_DIR = "tb"


class Reporter:
    """Sends each metrics row to the chosen backend (none, tensorboard into RUN/tb, wandb)."""

    def __init__(self, backend: str, run_dir: str, config: dict, resume_step: int = 0):
        check_backend(backend)
        self.backend, self._writer, self._wandb = backend, None, None
        if backend == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            # Resumed from the checkpoint of `resume_step`: the events a killed run wrote after it
            # are dropped, since this run writes those steps again.
            purge = resume_step + 1 if resume_step else None
            self._writer = SummaryWriter(log_dir=os.path.join(run_dir, TENSORBOARD_DIR), purge_step=purge)
        elif backend == "wandb":
            import wandb

            self._wandb = wandb.init(project="fastbpe", name=os.path.basename(os.path.abspath(run_dir)),
                                     dir=run_dir, config=config)

    def row(self, row: dict) -> None:
        step = row["step"]
        values = {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float))
                  and not isinstance(v, bool)}
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()


__all__ = ["BACKENDS", "MissingExtra", "Reporter", "TENSORBOARD_DIR", "check_backend", "progress_line"]
