"""Time one optimizer step: fastbpe.lm.optim against torch.optim's three implementations.

    python benches/optim_bench.py [--steps 10] [--warmup 3] [--cases transformer,small]
                                  [--optimizers AdamW,SGD,Adam] [--devices cpu,cuda] [--threads N]

For each case (a list of tensors shaped like a model's parameters, grads filled once and reused)
and optimizer, every implementation gets its own optimizer over the same tensors and `--warmup`
untimed steps (which also create the state); then `--steps` rounds each time one step of every
implementation in turn, so that load from other processes hits them all alike. The table gives
the median ms/step, that time divided by ours (above 1: ours is faster) and the fastest step,
which is the steadier number on a machine that other processes load: there a parallel region
waits for a descheduled thread, which hurts implementations that run many small ops the most
(try `--threads 1`). torch's
implementations are foreach=False (a Python loop over tensors), foreach=True (torch._foreach_*
ops, as ours) and fused=True (one kernel per tensor doing the whole update), where the device
supports it. "ours" is what fastbpe.lm.optim does by default on that device (for AdamW on CPU
the Rust pass of rust/optim.rs); "ours unfused" is AdamW(fused=False), its foreach ops one tensor
at a time on CPU, all of a group's tensors per op elsewhere; "ours all-at-once" forces the
latter. After each table section one line gives ours over torch fused and ours unfused over
torch's best unfused (below 1: ours is faster).
"""

from __future__ import annotations

import argparse, os, platform, shlex, statistics, sys, time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))  # runs from a checkout without installing
from fastbpe.lm import optim  # noqa: E402

HYPER = {  # what a language-model run would use
    "AdamW": dict(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1),
    "Adam": dict(lr=3e-4, betas=(0.9, 0.95)),
    "SGD": dict(lr=1e-2, momentum=0.9),
}
TORCH = {"AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam, "SGD": torch.optim.SGD}
FUSED_OPTION = {"AdamW": ("fused",)}  # ours with a fused= option (a Rust pass on CPU)
IMPLS = {"torch for-loop": dict(foreach=False), "torch foreach": dict(foreach=True),
         "torch fused": dict(fused=True)}


def transformer_shapes(vocab=10_000, d_model=512, d_ff=1344, layers=4):
    """CS336's TinyStories model (untied embeddings, SwiGLU, RMSNorm): about 22.7M params."""
    block = [(d_model,), (d_model, d_model), (d_model, d_model), (d_model, d_model),
             (d_model, d_model), (d_model,), (d_ff, d_model), (d_ff, d_model), (d_model, d_ff)]
    return [(vocab, d_model)] + block * layers + [(d_model,), (vocab, d_model)]


CASES = {
    "transformer": transformer_shapes,
    "small": lambda: [(256,)] * 2000,  # many small tensors: per-tensor overhead dominates
}


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved_medians(opts, steps, warmup, device):
    """Median ms/step of each optimizer, stepping them in turn (round-robin)."""
    for opt in opts.values():
        for _ in range(warmup):
            opt.step()
    times = {name: [] for name in opts}
    for _ in range(steps):
        for name, opt in opts.items():
            sync(device)
            t0 = time.perf_counter()
            opt.step()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t) * 1e3, min(t) * 1e3) for name, t in times.items()}


def ratio_line(device, case, name, ms):
    """Ours over torch fused, and ours unfused over torch's faster unfused implementation."""
    unfused_ours = ms.get("ours unfused", ms["ours"])[0]
    unfused_torch = min(ms[i][0] for i in ("torch for-loop", "torch foreach") if i in ms)
    fused = (f"ours / torch fused {ms['ours'][0] / ms['torch fused'][0]:.2f}x"
             if "torch fused" in ms else "no torch fused")
    return (f"{device} {case} {name}: {fused}; ours unfused / best torch unfused "
            f"{unfused_ours / unfused_torch:.2f}x")


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} CPUs (torch threads {torch.get_num_threads()}){gpu}{load}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--optimizers", default=",".join(HYPER))
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    print(f"`{shlex.join(['python'] + sys.argv)}`\n\n{machine()}\n")
    print("| device | case | params | optimizer | implementation | ms/step | vs ours | min ms |")
    print("|---|---|---|---|---|---:|---:|---:|")
    notes, ratios = [], []
    for device in args.devices.split(","):
        for case in args.cases.split(","):
            shapes = CASES[case]()
            gen = torch.Generator().manual_seed(0)
            params = [torch.randn(s, generator=gen).to(device) for s in shapes]
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen).to(device) * 1e-2
            size = f"{len(params)} tensors, {sum(p.numel() for p in params) / 1e6:.1f}M"
            for name in args.optimizers.split(","):
                ours_cls = getattr(optim, name)
                all_at_once = type(name, (ours_cls,), {"single_tensor_devices": frozenset()})
                unfused = {"fused": False} if "fused" in FUSED_OPTION.get(name, ()) else {}
                opts = {"ours": ours_cls(params, **HYPER[name])}
                if unfused:
                    opts["ours unfused"] = ours_cls(params, **HYPER[name], **unfused)
                opts["ours all-at-once"] = all_at_once(params, **HYPER[name], **unfused)
                for impl, flags in IMPLS.items():
                    try:
                        opts[impl] = TORCH[name](params, **HYPER[name], **flags)
                        opts[impl].step()  # fused checks device and dtype on the first step
                    except (RuntimeError, ValueError) as e:  # e.g. fused not built for this device
                        opts.pop(impl, None)
                        notes.append(f"{device} {name} {impl}: {str(e).splitlines()[0]}")
                ms = interleaved_medians(opts, args.steps, args.warmup, device)
                del opts  # free the states before the next optimizer
                ours_ms = ms["ours"][0]
                for impl in ["ours", "ours unfused", "ours all-at-once", *IMPLS]:
                    if impl == "ours unfused" and not unfused:
                        continue
                    med, low = ms.get(impl, (None, None))
                    cells = f"{med:.2f} | {med / ours_ms:.2f}x | {low:.2f}" if med else "n/a | | "
                    print(f"| {device} | {case} | {size} | {name} | {impl} | {cells} |", flush=True)
                ratios.append(ratio_line(device, case, name, ms))
    print()
    for line in ratios:
        print(f"- {line}")
    for note in notes:
        print(f"\n- {note}")


if __name__ == "__main__":
    main()
