"""Token-file helpers that need numpy only (no torch)."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np


def copy_tokens(data: np.ndarray, start: int, stop: int, out_path: str, meta: dict, block: int = 1 << 24) -> None:
    """Write data[start:stop] to `out_path` (and `meta` to `out_path`.json) atomically, in blocks,
    so memory stays bounded; `out_path` may be the file `data` maps."""
    directory = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".bin", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for i in range(start, stop, block):
                f.write(np.asarray(data[i : min(stop, i + block)]).tobytes())
            f.flush()
            os.fsync(f.fileno())
        fd2, tmp_meta = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
        with os.fdopen(fd2, "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(tmp_meta, out_path + ".json")
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
