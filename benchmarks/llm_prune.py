"""Prune-then-distill benchmark (issue 25), part 1: how much of SmolLM2-135M-Instruct a student at
about half its non-embedding parameters keeps *before any training*, by how it is built:

  (a) sliced            today's `shrink_width`: every weight's leading slice, at the width-pruned
                        arm's sizes (MLP 1,536 -> 512 neurons per layer)
  (a') every other layer  today's `layers:` (DistilBERT-style), 15 of 30 layers copied
  (b) width-pruned      Minitron: 512 of 1,536 MLP neurons per layer by activation importance
                        (kdforge.models.prune_llm); width, heads and layers kept
  (b') heads + MLP      Minitron: 2 of the 3 query heads of each KV group and 640 MLP neurons
  (c) depth-pruned      Minitron: the 15 layers whose removal raises the calibration loss least
  (d) width + depth     20 layers (by that loss) x MLP 1,024 neurons (by activation)

Importance is measured on `--calib` training samples of the dataset being evaluated (drawn with
the calibration seed; layer scores on the first `--layer-calib` of them, one pass per layer).
Data: GSM8K as chat (SmolLM2's chat template, the test split's answers only: assistant tokens)
and tinyshakespeare (128-token windows from the held-out end of the text). Per arm: non-embedding
parameters, held-out perplexity and bits per byte, and the ratio to the sliced student's perplexity
with a paired t-test over the held-out samples (per-sample mean NLL, pruned vs sliced).

Every (dataset, arm, seed) result is kept in --cache/results.json and the section is rebuilt from
all of them, so calibration seeds can be added one invocation at a time.

    python benchmarks/llm_prune.py --threads 1 [--seeds 0,1,2] [--datasets gsm8k,shakespeare]

Writes the "llm-prune" section of benchmarks/RESULTS.md. The recovery-training arms (KD from the
packed store vs cross-entropy only at equal tokens, 3 seeds) are not part of this script yet.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, write_section  # noqa: E402

from kdforge.config import DataConfig  # noqa: E402
from kdforge.data import load_data  # noqa: E402
from kdforge.data.text import lm_windows, read_text_file  # noqa: E402
from kdforge.models.hf import load_hf, load_tokenizer, wrap  # noqa: E402
from kdforge.models.prune_llm import (PruneTarget, calibration_batches, importance, non_embedding_parameters,  # noqa: E402
                                      prune_llama)
from kdforge.models.students import shrink_depth, shrink_width  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
ARMS = {  # name -> ("slice", shrink_width kwargs) | ("layers", kept) | ("prune", PruneTarget)
    "(a) sliced": ("slice", {"hidden_size": 576, "intermediate_size": 512}),
    "(a') every other layer": ("layers", list(range(0, 30, 2))),
    "(b) width-pruned": ("prune", PruneTarget(intermediate_size=512)),
    "(b') heads + MLP pruned": ("prune", PruneTarget(num_heads=6, intermediate_size=640)),
    "(c) depth-pruned": ("prune", PruneTarget(num_layers=15)),
    "(d) width + depth": ("prune", PruneTarget(intermediate_size=1024, num_layers=20)),
}


def datasets(args) -> dict:
    """name -> (train, test) datasets of {"input_ids", "loss_mask", ...}."""
    out = {}
    if "gsm8k" in args.datasets:
        cfg = DataConfig(name="chat", path=str(SHARED / "gsm8k/train.jsonl"), test_path=str(SHARED / "gsm8k/test.jsonl"),
                         tokenizer="smollm2-135m", prompt_column="question", completion_column="answer", max_length=384,
                         val_fraction=0.02, test_limit=args.eval)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the few conversations over 384 tokens are skipped (counted in the data)
            data = load_data(cfg, 0)
        out["gsm8k"] = (data.train, data.test)
    if "shakespeare" in args.datasets:
        tok = load_tokenizer("smollm2-135m")
        data = lm_windows(read_text_file(SHARED / "tinyshakespeare/input.txt"), tok, 128, val_fraction=0.02, test_fraction=0.05)
        test = torch.utils.data.Subset(data.test, range(min(args.windows, len(data.test))))
        out["shakespeare"] = (data.train, test)
    return out


@torch.no_grad()
def per_sample(model, dataset, batch_size: int = 8) -> dict:
    """Per held-out sample: summed NLL of its scored tokens, their count and their UTF-8 bytes."""
    model.eval()
    nll, count, nbytes = [], [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        if "attention_mask" in batch:  # right padding every row shares changes no real token: cut it
            width = int(batch["attention_mask"].sum(1).max())
            batch = {k: v[:, :width] for k, v in batch.items()}
        ids, mask = batch["input_ids"], batch["loss_mask"][:, 1:].double()
        logits = model(ids)[:, :-1].float()  # (B, T-1, V) predicts ids[:, 1:]
        ce = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").double()  # (B, T-1)
        nll += (ce * mask).sum(1).tolist()
        count += mask.sum(1).tolist()
        nbytes += (batch["token_bytes"][:, 1:].double() * mask).sum(1).tolist()
    return {"nll": nll, "tokens": count, "bytes": nbytes}


def summary(s: dict) -> dict:
    loss = sum(s["nll"]) / sum(s["tokens"])
    return {"perplexity": math.exp(loss), "bpb": sum(s["nll"]) / math.log(2) / sum(s["bytes"]), "loss": loss}


def build(arm: str, teacher, train, seed: int, args, imp_cache: dict):
    kind, spec = ARMS[arm]
    if kind == "slice":
        return shrink_width(teacher, **spec).hf
    if kind == "layers":
        return shrink_depth(teacher, spec).hf
    layers = spec.num_layers is not None
    key = (seed, layers)
    if key not in imp_cache:
        t0 = time.time()
        width = importance(teacher.hf, calibration_batches(train, args.calib, 8, seed), score_layers=False)
        if layers:  # one pass per layer: on fewer samples
            width.layers = importance(teacher.hf, calibration_batches(train, args.layer_calib, 8, seed)).layers
        imp_cache[key] = (width, time.time() - t0)
    imp, seconds = imp_cache[key]
    model = prune_llama(teacher.hf, spec, imp)
    model.importance_seconds = seconds
    return model


def describe(model) -> str:
    c = model.config
    return (f"{c.num_hidden_layers} layers, width {c.hidden_size}, {c.num_attention_heads} heads / {c.num_key_value_heads} KV, "
            f"head_dim {getattr(c, 'head_dim', None) or c.hidden_size // c.num_attention_heads}, MLP {c.intermediate_size}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0", help="comma list of calibration seeds to run now (results accumulate in --cache)")
    ap.add_argument("--datasets", default="gsm8k,shakespeare")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma list of arm names (default: all)")
    ap.add_argument("--eval", type=int, default=64, help="GSM8K test conversations scored (their answers)")
    ap.add_argument("--windows", type=int, default=48, help="tinyshakespeare test windows of 128 tokens")
    ap.add_argument("--calib", type=int, default=64, help="calibration samples for head / neuron / channel importance")
    ap.add_argument("--layer-calib", type=int, default=16, help="calibration samples for layer importance")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default="runs/llm_prune")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    results_path = cache / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    settings = {"eval": args.eval, "windows": args.windows, "calib": args.calib, "layer_calib": args.layer_calib}
    teacher = load_hf("smollm2-135m", "causal_lm").eval()
    for name, (train, test) in datasets(args).items():
        tkey = f"{name}|teacher"
        if tkey not in results or results[tkey]["settings"] != settings:
            t0 = time.time()
            results[tkey] = {"settings": settings, "samples": per_sample(teacher, test), "params": non_embedding_parameters(teacher.hf),
                             "arch": describe(teacher.hf), "seconds": time.time() - t0, "test": len(test), "train": len(train)}
            results_path.write_text(json.dumps(results))
        imp_cache: dict = {}
        for seed in [int(s) for s in args.seeds.split(",")]:
            for arm in args.arms.split(","):
                key = f"{name}|{arm}|{seed if ARMS[arm][0] == 'prune' else 0}"
                if key in results and results[key]["settings"] == settings:
                    continue
                t0 = time.time()
                model = build(arm, teacher, train, seed, args, imp_cache)
                student = wrap(model, "causal_lm", pad_id=teacher.pad_id)
                results[key] = {"settings": settings, "samples": per_sample(student, test), "params": non_embedding_parameters(model),
                                "arch": describe(model), "seconds": time.time() - t0,
                                "importance_seconds": getattr(model, "importance_seconds", 0.0)}
                results_path.write_text(json.dumps(results))
                print(f"{name} {arm} seed {seed}: {summary(results[key]['samples'])} ({results[key]['seconds']:.0f} s)", flush=True)
    write_section("llm-prune", render(results, settings))


def render(results: dict, settings: dict) -> str:
    lines = ["## Prune vs slice before training: SmolLM2-135M → half its non-embedding parameters (`benchmarks/llm_prune.py`)", "",
             machine_line(), ""]
    targets = []
    for name, title in (("gsm8k", "GSM8K as chat (test answers)"), ("shakespeare", "tinyshakespeare (held-out windows)")):
        tkey = f"{name}|teacher"
        if tkey not in results or results[tkey]["settings"] != settings:
            continue
        teacher = results[tkey]
        t_sum = summary(teacher["samples"])
        lines += [f"### {title}", "",
                  f"Teacher: SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to fp32) as shipped, {describe_row(teacher)}; "
                  f"{teacher['test']} held-out samples scored, {teacher['train']} training samples to draw calibration from "
                  f"({settings['calib']} for heads / neurons / channels, {settings['layer_calib']} for layers).", "",
                  "| student | architecture | non-embedding params | ÷ teacher | perplexity before training | bits per byte | ÷ sliced perplexity (paired p) | seeds |",
                  "|---|---|---:|---:|---:|---:|---:|---:|",
                  f"| teacher | {teacher['arch']} | {teacher['params']:,} | 1 | {t_sum['perplexity']:.2f} | {t_sum['bpb']:.3f} | | |"]
        sliced = results.get(f"{name}|(a) sliced|0")
        for arm in ARMS:
            runs = [v for k, v in results.items() if k.startswith(f"{name}|{arm}|") and v["settings"] == settings]
            if not runs:
                continue
            sums = [summary(r["samples"]) for r in runs]
            ppl = [s["perplexity"] for s in sums]
            cell = lambda xs, d: f"{statistics.mean(xs):.{d}f}" + (f" ± {statistics.stdev(xs):.{d}f}" if len(xs) > 1 else "")  # noqa: E731
            ratio = ""
            if sliced is not None and arm != "(a) sliced":
                s_ppl = summary(sliced["samples"])["perplexity"]
                ps = [paired_p(r["samples"], sliced["samples"]) for r in runs]
                ratio = f"1/{s_ppl / statistics.mean(ppl):,.0f} (p ≤ {max(ps):.1g})" if statistics.mean(ppl) < s_ppl else \
                    f"{statistics.mean(ppl) / s_ppl:,.2f}× (p ≤ {max(ps):.1g})"
                if arm == "(b) width-pruned":
                    met = all(p < s_ppl / 100 for p in ppl) and max(ps) < 0.05
                    targets.append(f"{title}: width-pruned perplexity {cell(ppl, 1)} vs sliced {s_ppl:,.0f}, i.e. 1/{s_ppl / statistics.mean(ppl):,.0f} "
                                   f"of it (paired p ≤ {max(ps):.1g}): target ≤ 1/100 **{'met' if met else 'not met'}**.")
            lines.append(f"| {arm} | {runs[0]['arch']} | {runs[0]['params']:,} | {runs[0]['params'] / teacher['params']:.3f} | "
                         f"{cell(ppl, 1)} | {cell([s['bpb'] for s in sums], 3)} | {ratio} | {len(runs)} |")
        lines.append("")
    lines += ["Target 1 of issue 25 (width-pruned perplexity before training ≤ 1/100 of the sliced student's):", ""]
    lines += [f"- {t}" for t in targets] or ["- not measured yet"]
    lines += ["", "Per arm: perplexity = exp(total NLL / scored tokens), bits per byte = total NLL / ln 2 / scored UTF-8 bytes; "
              "the p-value is a paired t-test over held-out samples of per-sample mean NLL against the sliced student "
              "(for several calibration seeds, the largest). Seeds are calibration seeds (which training samples importance is "
              "measured on); sliced and layer-copied students use none. Recovery training (KD from the packed store vs "
              "cross-entropy only, at equal tokens) is not measured here yet."]
    return "\n".join(lines)


def describe_row(teacher: dict) -> str:
    return f"{teacher['params']:,} non-embedding parameters"


def paired_p(a: dict, b: dict) -> float:
    x = [n / max(c, 1) for n, c in zip(a["nll"], a["tokens"])]
    y = [n / max(c, 1) for n, c in zip(b["nll"], b["tokens"])]
    return float(stats.ttest_rel(x, y).pvalue)


if __name__ == "__main__":
    main()
