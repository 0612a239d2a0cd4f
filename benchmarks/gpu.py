"""The `gpu` section of RESULTS.md: the output of scripts/gpu_check.sh on a CUDA machine.

On a machine without CUDA the section says so (the checks were prepared, not run);
on a CUDA machine it runs the script and records every PASS/FAIL line with the device.

    python benchmarks/gpu.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ["kd_on_cuda (a recipe distils on CUDA; every evaluation on the model's device)", "demo_quick (the demo end to end)",
          "token_kd (one epoch on a causal LM)", "bench_cuda (timing synchronised, GPU memory reported)",
          "precision (auto / bf16 / fp16 with a gradient scaler / fp32 train on the GPU; the head's output dtype shown)",
          "torchrun_ddp / torchrun_fsdp (nccl, when 2 GPUs are present)"]


def main() -> None:
    if not torch.cuda.is_available():
        body = ["**Not run on a GPU yet**: this machine has no CUDA device. `scripts/gpu_check.sh` is prepared "
                "(run it with `PYTHONPATH=src bash scripts/gpu_check.sh`, or this script, on a CUDA machine); its checks, "
                "each asserting that it ran on the GPU:", "", *[f"- {c}" for c in CHECKS]]
    else:
        out = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        r = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh")], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "OUT": str(out), "PYTHONPATH": str(ROOT / "src")})
        lines = [x for x in r.stdout.splitlines() if x.strip()]
        body = [f"`scripts/gpu_check.sh` on {torch.cuda.get_device_name(0)} (exit code {r.returncode}):", "", "```",
                *lines, "```"]
    write_section("gpu", "\n".join(["## GPU checks (`benchmarks/gpu.py`)", "", *body, "", machine_line()]))
    print("\n".join(body))


if __name__ == "__main__":
    main()
