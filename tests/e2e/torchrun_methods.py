"""Run under `torchrun --nproc_per_node N`: every recipe given, through the real CLI, first on a
fresh run_dir and then again with --force over a stale file; rank 0 writes what each run left
(metrics.json, env.json's world size, whether the stale file survived) as JSON to OUT.

    torchrun --nproc_per_node 2 tests/e2e/torchrun_methods.py OUT RECIPE.yaml...
    torchrun --nproc_per_node 2 tests/e2e/torchrun_methods.py --once OUT RECIPE.yaml...   # fresh runs only
"""
import json
import sys
from pathlib import Path

import yaml

from kdforge.cli import main
from kdforge.train import distributed as dist


def run_twice(recipe: Path, attempts: tuple[str, ...] = ("fresh", "force")) -> dict:
    run_dir = Path(yaml.safe_load(recipe.read_text())["run_dir"])
    out = {}
    for attempt in attempts:
        args = ["run", str(recipe), "--quiet"]
        if attempt == "force":
            if dist.context().is_main:
                (run_dir / "stale.txt").write_text("from an earlier run")  # before this rank starts the second run
            args.append("--force")
        code = main(args)
        row = {"code": code}
        if dist.context().is_main and code == 0:
            row.update(metrics=json.loads((run_dir / "metrics.json").read_text()),
                       world=json.loads((run_dir / "env.json").read_text())["world_size"],
                       stale=(run_dir / "stale.txt").exists(), files=sorted(p.name for p in run_dir.iterdir()))
        out[attempt] = row
    return out


if __name__ == "__main__":
    once = sys.argv[1] == "--once"
    out_file, recipes = sys.argv[1 + once], sys.argv[2 + once:]
    results = {Path(r).stem: run_twice(Path(r), ("fresh",) if once else ("fresh", "force")) for r in recipes}
    if dist.context().is_main:
        Path(out_file).write_text(json.dumps(results))
