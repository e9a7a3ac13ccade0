"""Token files (flat id arrays with a .json beside them): helpers that need numpy only."""

from __future__ import annotations

import json

import numpy as np

from fastbpe._io import atomic_writer, write_atomic


def copy_tokens(data: np.ndarray, start: int, stop: int, out_path: str, meta: dict, block: int = 1 << 24) -> None:
    """Write data[start:stop] to `out_path` (and `meta` to `out_path`.json) atomically, in blocks,
    so memory stays bounded; `out_path` may be the file `data` maps."""
    # The tokens are renamed into place last: a reader that finds the data finds its metadata.
    with atomic_writer(out_path, suffix=".bin") as f:
        for i in range(start, stop, block):
            f.write(np.asarray(data[i : min(stop, i + block)]).tobytes())
        write_atomic(out_path + ".json", json.dumps(meta, indent=1).encode())
