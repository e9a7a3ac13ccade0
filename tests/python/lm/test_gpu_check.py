"""benches/gpu_check.sh --dry-run: the GPU machine's script, rehearsed on CPU with the tiny preset,
runs every step (tokens, bf16 training, fp16 with GradScaler, save and --resume, export and
reload with transformers) and succeeds."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = str(ROOT / "benches" / "gpu_check.sh")


def test_gpu_check_dry_run_passes_every_step(tmp_path):
    env = {**os.environ, "WORK": str(tmp_path / "work"), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", SCRIPT, "--dry-run"], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "bf16 steady state:" in out and "tokens/s" in out
    assert "resumed run reached step 4" in out
    assert "transformers reloaded LlamaForCausalLM" in out
    assert "all checks passed" in out
    assert (tmp_path / "work" / "hf" / "model.safetensors").exists()


def test_gpu_check_refuses_unknown_arguments():
    done = subprocess.run(["bash", SCRIPT, "--fast"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "unknown argument --fast" in done.stderr
