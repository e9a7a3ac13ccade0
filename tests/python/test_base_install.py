"""The base install (numpy and regex, no PyTorch): `import fastbpe`, the tokenizer commands and
`fastbpe napkin` work; the LM commands say in one line how to get PyTorch. Each test runs in a
subprocess where importing torch, einops or matplotlib fails as it does when they are absent.
Also: one version everywhere."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastbpe

ROOT = Path(__file__).resolve().parents[2]

# Installed before anything else runs: the [lm] extra's packages cannot be imported.
WITHOUT_LM = textwrap.dedent(
    """
    import importlib.abc, sys

    class _Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("torch", "einops", "matplotlib"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _Absent())
    """
)

LM_HINT = 'fastbpe: error: fastbpe.lm needs PyTorch: pip install "fastbpe-rs[lm]"'


def without_lm(code: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_LM + textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def cli_without_lm(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """`fastbpe ARGS...` with the [lm] extra absent; the exit status is the process's."""
    return without_lm("from fastbpe.cli import main\nsys.argv[0] = 'fastbpe'\nmain(sys.argv[1:])\n", *args, cwd=cwd)


def test_the_blocker_blocks_torch():
    done = without_lm("import torch")
    assert done.returncode == 1 and "ModuleNotFoundError: No module named 'torch'" in done.stderr


def test_import_and_train_without_torch(tmp_path):
    done = without_lm(
        """
        import fastbpe
        tok = fastbpe.train(iter(["the quick brown fox jumps over the lazy dog " * 50]), 270, special_tokens=["<|endoftext|>"])
        assert tok.decode(tok.encode("the dog<|endoftext|>")) == "the dog<|endoftext|>"
        print(tok.vocab_size, sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "fastbpe")))
        """
    )
    assert done.returncode == 0, done.stderr
    assert "'torch'" not in done.stdout and "fastbpe.lm" not in done.stdout
    assert done.stdout.startswith("270 ")


def test_napkin_without_torch():
    done = cli_without_lm("napkin", "--params", "7e9", "--tokens", "1e12", "--gpus", "64")
    assert done.returncode == 0, done.stderr
    assert "compute: 7B params x 1T tokens x 6 = 4.2e+22 FLOPs" in done.stdout
    assert "days" in done.stdout and done.stderr == ""
    helped = cli_without_lm("napkin", "--help")
    assert helped.returncode == 0 and "--bytes-per-param" in helped.stdout


@pytest.mark.parametrize("args", [["--help"], ["napkin", "--help"], ["train-tokenizer", "--help"]])
def test_help_without_torch(args):
    done = cli_without_lm(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: fastbpe")


@pytest.mark.parametrize(
    "args",
    [
        ["lm", "train", "--train", "t.bin", "--val", "v.bin", "--out", "run"],
        ["lm", "generate", "--run", "run"],
        ["demo", "--corpus", "corpus.txt", "--out", "demo"],
    ],
)
def test_lm_commands_without_torch_say_how_to_get_it(args, tmp_path):
    (tmp_path / "corpus.txt").write_text("some text " * 100)
    done = cli_without_lm(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == LM_HINT + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]  # nothing done before the error


def test_lm_without_einops_says_how_to_get_it():
    """PyTorch installed on its own: the rest of the [lm] extra is named too."""
    pytest.importorskip("torch")
    code = WITHOUT_LM.replace('("torch", "einops", "matplotlib")', '("einops",)')
    done = subprocess.run(
        [sys.executable, "-c", code + "from fastbpe.cli import main\nmain(['lm', 'generate', '--run', 'nowhere'])"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (2, 'fastbpe: error: fastbpe.lm needs einops: pip install "fastbpe-rs[lm]"\n')


def test_one_version_everywhere():
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    assert fastbpe.__version__ == fastbpe._core.__version__ == version
    done = subprocess.run([sys.executable, "-m", "fastbpe", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == f"fastbpe {version}\n"
