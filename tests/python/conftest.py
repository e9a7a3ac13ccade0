import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip: a user's clone has no shared data."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data set is only on the project's machines)")
    return path


@pytest.fixture(autouse=True)
def _tiktoken_cache(monkeypatch):
    cache = SHARED / "tiktoken_cache"
    if cache.exists():
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: intra-op threads only add synchronization, which costs seconds per step
    on a small machine that other processes keep busy."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
