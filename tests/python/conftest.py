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
