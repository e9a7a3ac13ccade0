"""The loss curve of a run, drawn from its metrics.jsonl."""

from __future__ import annotations

import json
import os
import warnings


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics.jsonl in order. A last line that is not JSON (a run killed while
    writing it) is left out with a warning; a bad line before it is an error."""
    path = os.fspath(path)
    with open(path) as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    rows = []
    for i, (n, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: ignoring its last line {n}, which is cut short (the run was killed while "
                              "writing it)", stacklevel=2)
                break
            raise ValueError(f"{path} line {n} is not JSON: a metrics.jsonl holds one JSON object per line") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise ValueError(f"{path} line {n} is not a metrics row (a JSON object with an integer \"step\")")
        rows.append(row)
    return rows


def read_metrics(path: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(training rows, evaluation rows) of a metrics.jsonl."""
    train, evals = [], []
    for row in read_rows(path):
        (evals if "val_loss" in row else train).append(row)
    return train, evals


def plot_loss(metrics_path: str | os.PathLike, out_png: str | os.PathLike, title: str = "") -> None:
    """Train loss (raw and smoothed) and validation loss against step, written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    train, evals = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        steps = [r["step"] for r in train if r.get("loss") is not None]
        losses = [r["loss"] for r in train if r.get("loss") is not None]
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per step)")
        smooth, ema = [], None
        for v in losses:
            ema = v if ema is None else 0.95 * ema + 0.05 * v
            smooth.append(ema)
        ax.plot(steps, smooth, color="tab:blue", linewidth=1.6, label="train (smoothed)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = os.fspath(out_png) + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out_png)
