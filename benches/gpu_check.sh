#!/usr/bin/env bash
# The checks of fastbpe.lm that need a GPU, as one script for a lent machine (under 8 minutes on
# one GPU): gpt2-small in bf16 with --compile (tokens/s and MFU against the GPU's dense bf16
# peak, from fastbpe.napkin's table), fp16 with GradScaler, a save and --resume on CUDA, and
# `fastbpe lm export` reloaded with transformers.
#
#   benches/gpu_check.sh              # on the GPU machine
#   benches/gpu_check.sh --dry-run    # or DRY_RUN=1: tiny preset, a handful of steps, CPU
#
# The dry run runs the same commands in the same order on CPU (without --compile, whose CPU
# build would take most of a minute and checks nothing the GPU run does not), so that a broken
# step shows up here before device time is spent. WORK=folder keeps the outputs (default: a
# temporary folder); PYTHON picks the interpreter (default: the checkout's .venv, else python3).
set -euo pipefail

DRY_RUN=${DRY_RUN:-0}
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    *) echo "gpu_check.sh: error: unknown argument $arg (use --dry-run or nothing)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$WORK"
FASTBPE=("$PYTHON" -m fastbpe)

if [ "$DRY_RUN" = 1 ]; then
  PRESET=tiny DEVICE=cpu COMPILE=() BF16_STEPS=6 FP16_STEPS=3 RESUME_STEPS=4 VOCAB=512 BATCH=4
else
  PRESET=gpt2-small DEVICE=cuda COMPILE=(--compile) BF16_STEPS=300 FP16_STEPS=20 RESUME_STEPS=40 VOCAB=4096 BATCH=16
fi
step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }

step "environment"
"$PYTHON" - <<PY
import torch
print("torch", torch.__version__, "| cuda available:", torch.cuda.is_available())
if "$DEVICE" == "cuda":
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check.sh: error: no CUDA device; run with --dry-run for the CPU rehearsal")
    print(torch.cuda.get_device_name(0), "| bf16:", torch.cuda.is_bf16_supported())
PY

step "tokens: a tokenizer trained on the checkout's text, then fastbpe encode"
CORPUS="$WORK/corpus.txt"
find "$ROOT/python" "$ROOT/README.md" -name '*.py' -o -name '*.md' | sort | xargs cat > "$CORPUS"
"${FASTBPE[@]}" train-tokenizer "$CORPUS" --vocab-size "$VOCAB" --out "$WORK/tok.json"
"${FASTBPE[@]}" encode "$CORPUS" --tokenizer "$WORK/tok.json" --out "$WORK/train.bin" \
  --val-out "$WORK/val.bin" --val-fraction 0.1

train() {  # run folder, steps, then extra flags
  local run=$1 steps=$2; shift 2
  "${FASTBPE[@]}" lm train --train "$WORK/train.bin" --val "$WORK/val.bin" --out "$run" \
    --preset "$PRESET" --device "$DEVICE" --batch-size "$BATCH" --max-steps "$steps" --log-every 10 "$@"
}

step "bf16 ${COMPILE[*]:-}: $PRESET, $BF16_STEPS steps"
train "$WORK/bf16" "$BF16_STEPS" --precision bf16 "${COMPILE[@]}" --eval-every "$BF16_STEPS" \
  --checkpoint-every "$BF16_STEPS"
"$PYTHON" - "$WORK/bf16/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
timed = [r for r in rows if r.get("tokens_per_s")]
timed = timed[len(timed) // 2:] or timed  # the second half: compilation and warm-up are over
tps = statistics.median(r["tokens_per_s"] for r in timed)
mfus = [r["mfu"] for r in timed if r.get("mfu") is not None]
mfu = f"{statistics.median(mfus):.1%}" if mfus else "- (peak unknown)"
print(f"bf16 steady state: {tps:,.0f} tokens/s, MFU {mfu} (median of the last {len(timed)} logged steps)")
PY

step "fp16 with GradScaler: $FP16_STEPS steps"
train "$WORK/fp16" "$FP16_STEPS" --precision fp16 --eval-every "$FP16_STEPS"

step "save, then --resume on $DEVICE"
half=$((RESUME_STEPS / 2))
train "$WORK/resume" "$half" --precision bf16 --checkpoint-every "$half" --eval-every "$half"
train "$WORK/resume" "$RESUME_STEPS" --precision bf16 --checkpoint-every "$half" --eval-every "$half" --resume
"$PYTHON" - "$WORK/resume" "$RESUME_STEPS" <<'PY'
import glob, json, sys
run, want = sys.argv[1], int(sys.argv[2])
steps = [json.loads(line).get("step") for line in open(f"{run}/metrics.jsonl")]
last = max(s for s in steps if s is not None)
if last != want:
    raise SystemExit(f"gpu_check.sh: error: the resumed run ended at step {last}, not {want}")
print(f"resumed run reached step {last}; checkpoints:", sorted(p.rsplit("/", 1)[1] for p in glob.glob(f"{run}/ckpt_*.pt")))
PY

step "fastbpe lm export, reloaded with transformers"
"${FASTBPE[@]}" lm export --run "$WORK/resume" --out "$WORK/hf"
"$PYTHON" - "$WORK/hf" "$DEVICE" <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM
folder, device = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(folder).to(device).eval()
ids = torch.arange(8, device=device)[None]
with torch.no_grad():
    logits = model(ids).logits
if not torch.isfinite(logits).all():
    raise SystemExit("gpu_check.sh: error: the exported model's logits are not finite")
print(f"transformers reloaded {type(model).__name__}: logits {tuple(logits.shape)} on {logits.device}")
PY

step "all checks passed (outputs in $WORK)"
