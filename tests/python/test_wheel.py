"""The wheel people install: built by `maturin build --release` as a release would be, then read
(tags, files, metadata, a stripped extension) and installed into a fresh virtual environment
that has numpy and regex but no PyTorch, where the package and its command must work.

The build reuses the repository's cargo target folder, which `make setup-dev` has filled, so it
takes seconds to about half a minute rather than a full fat-LTO build."""

import email.parser
import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
URL = "https://github.com/fastbpe/fastbpe"
LINUX = sys.platform.startswith("linux")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "maturin", "build", "--release", "--interpreter", sys.executable, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    (path,) = out.glob("*.whl")
    return path


def wheel_text(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as z:
        return z.read(f"fastbpe_rs-{VERSION}.dist-info/{name}").decode()


def test_name_and_tags(wheel):
    name, version, python, abi, platform = wheel.name.removesuffix(".whl").split("-")
    assert (name, version, python, abi) == ("fastbpe_rs", VERSION, "cp310", "abi3")  # one wheel for CPython >= 3.10
    tags = [line.split(": ", 1)[1] for line in wheel_text(wheel, "WHEEL").splitlines() if line.startswith("Tag: ")]
    assert tags == [f"cp310-abi3-{platform}"]
    if LINUX:
        assert re.fullmatch(r"manylinux_2_\d+_" + re.escape(os.uname().machine), platform), platform


@pytest.mark.skipif(not LINUX, reason="manylinux tags and auditwheel are Linux's")
def test_auditwheel_agrees_with_the_manylinux_tag(wheel):
    """maturin audits the extension's glibc symbols itself; auditwheel, the reference tool, must
    find the same tag (and no library that the wheel would need to bundle)."""
    platform = wheel.name.removesuffix(".whl").split("-")[-1]
    done = subprocess.run([sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = " ".join(done.stdout.split())  # auditwheel wraps its lines
    assert f'is consistent with the following platform tag: "{platform}"' in shown
    assert "need to be grafted" not in shown and "external shared libraries" not in shown


def test_files_inside(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        license_text = z.read(f"fastbpe_rs-{VERSION}.dist-info/licenses/LICENSE").decode()
        (so,) = [n for n in names if n.startswith("fastbpe/_core.") and n.endswith((".so", ".pyd"))]
        extension = z.read(so)
    assert {"fastbpe/py.typed", "fastbpe/_core.pyi", "fastbpe/napkin.py", "fastbpe/lm/accounting.py"} <= names
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "MIT License" in license_text and "Copyright (c) 2026 the fastbpe authors" in license_text
    if LINUX:
        assert so == "fastbpe/_core.abi3.so"
        assert not elf_has_symbol_table(extension), "the extension is not stripped"


def elf_has_symbol_table(data: bytes) -> bool:
    from io import BytesIO

    from elftools.elf.elffile import ELFFile  # auditwheel's dependency

    return ELFFile(BytesIO(data)).get_section_by_name(".symtab") is not None


def test_metadata(wheel):
    meta = email.parser.Parser().parsestr(wheel_text(wheel, "METADATA"))
    assert meta["Name"] == "fastbpe-rs" and meta["Version"] == VERSION
    assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE"
    assert meta["Requires-Python"] == ">=3.10"
    base = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert base == ["numpy>=1.24", "regex>=2023.0"]  # PyTorch comes only with the [lm] extra
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    with open(ROOT / "pyproject.toml", "rb") as f:
        extras = set(tomllib.load(f)["project"]["optional-dependencies"])
    assert {"lm", "dev"} <= extras and set(meta.get_all("Provides-Extra")) == extras
    classifiers = set(meta.get_all("Classifier"))
    assert {f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 14)} <= classifiers
    assert {"Programming Language :: Rust", "Typing :: Typed", "Operating System :: POSIX :: Linux"} <= classifiers
    assert any(c.startswith("Intended Audience ::") for c in classifiers)
    assert any(c.startswith("Topic ::") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert set(urls) == {"Homepage", "Repository", "Documentation", "Issues"}
    assert all(u == URL or u.startswith(URL + "/") or u.startswith(URL + "#") for u in urls.values())


# ---- installed into a fresh environment without PyTorch ----------------------------------------


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory) -> Path:
    """A new virtual environment with the wheel and, as its only other packages, this
    environment's numpy and regex (linked, so that nothing is downloaded)."""
    root = tmp_path_factory.mktemp("fresh")
    env = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    deps = root / "deps"
    deps.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if re.match(r"(numpy|regex)([-.]|$)", entry.name):
            (deps / entry.name).symlink_to(entry)
    fresh_site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (fresh_site / "base_deps.pth").write_text(f"{deps}\n")
    return env


def run(python_or_script: Path, *args: str, cwd=None) -> subprocess.CompletedProcess:
    """A command of the fresh environment, isolated from this one (no PYTHONPATH, no user site)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONNOUSERSITE"] = "1"
    return subprocess.run([str(python_or_script), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=env)  # fmt: skip


def test_fresh_environment_has_no_torch(fresh, tmp_path):
    done = run(fresh / "bin" / "python", "-c", "import torch", cwd=tmp_path)
    assert done.returncode == 1 and "No module named 'torch'" in done.stderr


def test_installed_package_trains_and_encodes(fresh, tmp_path):
    code = """
import sys, fastbpe
tok = fastbpe.train(iter(["the quick brown fox jumps over the lazy dog " * 50]), 280, special_tokens=["<|endoftext|>"])
assert tok.decode(tok.encode("a lazy fox<|endoftext|>")) == "a lazy fox<|endoftext|>"
print(fastbpe.__file__, fastbpe.__version__, tok.vocab_size, "torch" in sys.modules)
"""
    done = run(fresh / "bin" / "python", "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, version, vocab_size, torch_loaded = done.stdout.split()
    assert Path(where).is_relative_to(fresh) and Path(where).parent.name == "fastbpe"
    assert (version, vocab_size, torch_loaded) == (VERSION, "280", "False")


def test_installed_command(fresh, tmp_path):
    fastbpe = fresh / "bin" / "fastbpe"
    done = run(fastbpe, "--version", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, f"fastbpe {VERSION}\n")
    done = run(fastbpe, "napkin", "--gpus", "8", "--mfu", "0.4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "8 GPUs x 989.5 TFLOP/s x MFU 0.4" in done.stdout
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 100)
    done = run(fastbpe, "train-tokenizer", "corpus.txt", "--vocab-size", "280", "--out", "tok.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "tok.json").is_file()
    done = run(fastbpe, "lm", "train", "--train", "t.bin", "--val", "v.bin", "--out", "run", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, 'fastbpe: error: fastbpe.lm needs PyTorch: pip install "fastbpe-rs[lm]"\n')
