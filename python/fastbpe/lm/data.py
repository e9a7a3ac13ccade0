"""Token arrays on disk -> training batches.

Token files are the flat arrays `Tokenizer.encode_file` writes, with their dtype recorded in
`<file>.json` beside them (never guessed: reading uint32 data as uint16 silently yields garbage);
`fastbpe.token_files` owns the format and its checks.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from fastbpe import token_files


def token_metadata(path: str | os.PathLike) -> dict:
    """The validated sidecar `<path>.json` that `encode_file` wrote beside a token file (see
    `fastbpe.token_files.read_metadata`)."""
    return token_files.read_metadata(path)


def open_tokens(path: str | os.PathLike, dtype=None, *, verify: bool = False) -> np.memmap:
    """A token file as a read-only np.memmap, its dtype from the sidecar beside it, after the
    checks of `fastbpe.token_files.read_tokens` (sidecar, file size; with `verify`, the checksum).
    With an explicit `dtype` the file is read as raw little-endian ids and no sidecar is needed."""
    if dtype is None:
        return token_files.read_tokens(path, verify=verify)[0]
    return token_files.read_raw_tokens(path, dtype)


def _fresh_view(dataset: np.ndarray) -> np.ndarray:
    """A new map of the same file: pages touched through one long-lived np.memmap stay counted
    in the process's memory, so each batch reads through a map that is dropped afterwards."""
    if not isinstance(dataset, np.memmap) or dataset.filename is None:
        return dataset
    # A slice of a memmap (data[split:]) keeps its parent's `offset`: find where it really
    # starts in the file from its distance to the array that owns the mapping.
    root = dataset
    while isinstance(root.base, np.ndarray):
        root = root.base
    start = root.offset + (dataset.ctypes.data - root.ctypes.data) if isinstance(root, np.memmap) else -1
    if dataset.ndim != 1 or dataset.strides[0] != dataset.itemsize or start < 0:
        return dataset  # strided or unusual views: read them as they are
    return np.memmap(dataset.filename, dtype=dataset.dtype, mode="r", offset=start, shape=dataset.shape)


def _to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(x.astype(np.int64, copy=False))
    if device.type == "cuda":
        # Pinned host memory lets the copy run asynchronously with the compute.
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def get_batch(
    dataset: np.ndarray,
    batch_size: int,
    context_length: int,
    device: str | torch.device,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` random windows of `context_length` tokens (x) and the same shifted by one (y),
    as int64 tensors on `device`; every valid start offset is equally likely."""
    if dataset.ndim != 1:
        raise ValueError(f"dataset must be a flat token array, got shape {dataset.shape}")
    if batch_size < 1 or context_length < 1:
        raise ValueError(f"batch_size and context_length must be positive, got {batch_size} and {context_length}")
    n = len(dataset)
    if n < context_length + 1:
        raise ValueError(f"dataset has {n} tokens; a batch of context_length {context_length} needs at least {context_length + 1}")
    device = torch.device(device)
    starts = torch.randint(0, n - context_length, (batch_size,), generator=generator).numpy()
    data = _fresh_view(dataset)
    windows = np.stack([data[s : s + context_length + 1] for s in starts])
    del data
    return _to_device(windows[:, :-1], device), _to_device(windows[:, 1:], device)


class BatchLoader:
    """Prepares the next batches in a background thread while the model computes.

    Iterating yields (x, y). `generator_state` is the batch generator's state right after the
    batches yielded so far, so a checkpoint that saves it resumes with exactly the next batch
    (batches prepared ahead are not counted as used)."""

    def __init__(self, dataset, batch_size: int, context_length: int, device, generator: torch.Generator, prefetch: int = 2):
        self.args = (dataset, batch_size, context_length, device)
        self.generator = generator
        self.generator_state = generator.get_state()
        self._queue: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                x, y = get_batch(*self.args, generator=self.generator)
                item = (x, y, self.generator.get_state())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # surfaced in the consumer
            self._queue.put(e)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        x, y, self.generator_state = item
        return x, y

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def sequential_batches(
    dataset: np.ndarray, batch_size: int, context_length: int, device, max_batches: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive non-overlapping windows over the whole array (for evaluation), in batches;
    the last batch may be smaller. `max_batches` stops early."""
    n = (len(dataset) - 1) // context_length
    if n < 1:
        raise ValueError(f"dataset has {len(dataset)} tokens; evaluation needs at least {context_length + 1}")
    device = torch.device(device)
    for b, first in enumerate(range(0, n, batch_size)):
        if max_batches is not None and b >= max_batches:
            return
        data = _fresh_view(dataset)
        rows = range(first, min(first + batch_size, n))
        windows = np.stack([data[r * context_length : r * context_length + context_length + 1] for r in rows])
        del data
        yield _to_device(windows[:, :-1], device), _to_device(windows[:, 1:], device)
