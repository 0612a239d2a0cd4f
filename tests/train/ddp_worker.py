"""Run under `torchrun --nproc_per_node 2` by test_engine.py: fit a small MLP on digits with the
parallel mode given, optionally crashing mid-epoch (every rank) and resuming, and write what the
test checks: the wrapped module's type, and each rank's final weights."""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as tdist
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel

from kdforge.config import DataConfig, DistillConfig
from kdforge.data import load_data
from kdforge.methods.supervised import Supervised
from kdforge.models import MLP
from kdforge.train.engine import Engine
from kdforge.train.loop import fit


class Crash(Exception):
    pass


class CrashingSupervised(Supervised):
    """Raises on its `at`-th forward call (every rank alike), as a killed job would stop."""

    def __init__(self, model, at: int):
        super().__init__(model)
        self.calls, self.at = 0, at

    def forward(self, batch):
        self.calls += 1
        if self.calls == self.at:
            raise Crash
        return super().forward(batch)


def main(parallel: str, out: Path, crash_at: int) -> None:
    cfg = DistillConfig(epochs=3, batch_size=16, lr=3e-3, parallel=parallel, precision="fp32",
                        checkpoint_every=2, tracker="none")
    data = load_data(DataConfig(name="digits", train_limit=192), seed=0)
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=[32])
    eng = Engine.from_config(cfg)  # cpu under the tests (KDFORGE_DEVICE=cpu); a GPU per rank in gpu_check.sh
    wrapped = eng.prepare(Supervised(MLP((1, 8, 8), 10, hidden=[32])))
    kind = "ddp" if isinstance(wrapped, DistributedDataParallel) else "fsdp" if isinstance(wrapped, FSDPModule) else "none"
    if crash_at:
        try:
            fit(CrashingSupervised(model, crash_at), data.train, data.val, cfg, out / "run", seed=1, quiet=True)
            raise SystemExit("the crash did not happen")
        except Crash:  # as if the job died: every rank restarts after rank 0's last checkpoint write ended
            tdist.barrier()
        model = MLP((1, 8, 8), 10, hidden=[32])  # a fresh process would rebuild it: the checkpoint must restore it
    fit(Supervised(model), data.train, data.val, cfg, out / "run", seed=1, quiet=True)
    rank = tdist.get_rank()
    weights = {k: v.tolist() for k, v in model.state_dict().items()}
    (out / f"rank{rank}.json").write_text(json.dumps({"kind": kind, "world": tdist.get_world_size(), "weights": weights}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
