import os
from pathlib import Path

import pytest

#: The repository's root (README.md, benches/): tests in subfolders find it here, not by counting folders.
ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


# The shared corpora (under corpus/) that parity tests run on.
CORPORA = [
    "de_eltec.txt",
    "ru_tinystories.txt",
    "zh_fortunes.txt",
    "code_go.txt",
    "code_rust.txt",
    "code_python.txt",
    "tinystories_val.txt",
    "enwiki_100M.txt.gz",
]

# Under CI the shared data must be there: a parity test that skips there checks nothing.
UNDER_CI = os.environ.get("CI", "").lower() == "true"
_missing_shared: set[str] = set()


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip: a user's clone has no shared data (a failure under CI)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if UNDER_CI:
            pytest.fail(f"{path} is absent; under CI (CI=true) the shared data set must be present")
        _missing_shared.add(str(path))
        pytest.skip(f"{path} is absent (the shared data set is only on the project's machines)")
    return path


def pytest_terminal_summary(terminalreporter):
    """One line saying what a clone without ../shared/data did not check."""
    if _missing_shared:
        skipped = len(terminalreporter.stats.get("skipped", []))
        terminalreporter.write_line(
            f"NOTE: {skipped} tests skipped because {SHARED} is absent: the parity tests against tiktoken, "
            "GPT-2's files and the real corpora did not run here",
            yellow=True,
        )


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
