"""The markdown of benchmarks/text.py's section: setup, the arm table (accuracy, retention,
parameters, paired differences vs the student alone), the ingredient ablations, the targets,
and the latency tables of benchmarks/_text_latency.py."""
from __future__ import annotations

import statistics

from scipy import stats

from _results import machine_line, mean_std, paired
from _text_arms import ALONE, FULL, STUDENTS

from kdforge.models.small import count_parameters

TARGET_RETENTION, TARGET_PARAMS, TARGET_SPEEDUP = 0.97, 4.0, 5.0
INT8 = "student ONNX optimized INT8 (dynamic)"


def _vs(xs: list[float], ref: list[float]) -> str:
    if len(xs) > 1:
        return paired(xs, ref)
    return f"{100 * (xs[0] - ref[0]):+.2f} (one seed)"


def _shown(xs: list[float]) -> str:
    return mean_std(xs, 100) if len(xs) > 1 else f"{100 * xs[0]:.2f}"


def _cut(part, pad_id: int) -> str:
    """Share of rows whose last position holds a token: they reached max_length (and were cut there)."""
    return f"{100 * (part.x[:, -1] != pad_id).float().mean():.1f}%"


def _student_line(key: str) -> str:
    s = STUDENTS[key]
    layers = ", ".join(map(str, s["layers"]))
    return f"teacher layers {layers} (copied), width {s['hidden_size']} / {s['num_heads']} heads / FFN {s['intermediate_size']}"


def render(r: dict) -> str:
    args, spec, data, acc, arms, t_acc = r["args"], r["spec"], r["data"], r["acc"], r["arms"], r["t_acc"]
    p_t, pad = count_parameters(r["teacher"]), r["teacher"].pad_id
    tuned = ("(weights from an earlier run of this script)" if args.teacher_checkpoint
             else f"{spec['teacher_epochs']} epochs, lr {spec['teacher_lr']:g}, batch {spec['teacher_batch']}, linear decay, "
                  f"best epoch on val (cached outside the repository; reruns load it)")
    if spec.get("teacher_stopped_after"):
        tuned += (f" — **stopped after {spec['teacher_stopped_after']} of the {spec['teacher_epochs']} scheduled epochs** to "
                  f"leave the shared cores time for the student arms (learning rate not yet decayed to 0)")
        mins = spec.get("teacher_epoch_minutes") or []
        if mins:
            left = spec["teacher_epochs"] - spec["teacher_stopped_after"]
            tuned += (f"; its epochs took {', '.join(f'{m:.1f}' for m in mins)} min on the shared cores, so the {left} left "
                      f"would take about {left * statistics.mean(mins):.0f} min")
    keys = sorted({a.student for a in arms})
    trims = r["trims"]
    trim_text = "".join(
        f" Trimming the {key} student's vocabulary to the special tokens and the tokens of the augmented training corpus keeps "
        f"{t['vocab_after']:,} of {t['vocab_before']:,} rows, freeing {t['params_freed'] / 1e6:.2f}M parameters "
        f"({t['bytes_freed'] / 2**20:.1f} MiB in fp32); out-of-vocabulary ids read [UNK], the model takes the original "
        f"tokenizer's ids (the remap is one Gather inside the model and its ONNX graph)." for key, t in trims.items())
    aug = r["augmented"]
    n_var = len(aug) - len(data.train)
    lines = [
        f"## Text classification: MiniLM-L6 → small BERT students ({spec['title']}; "
        f"`benchmarks/text.py --dataset {args.dataset}{f' --arms {args.arms}' if args.arms else ''}`)",
        "",
        machine_line(),
        "",
        f"{spec['about']} ({_cut(data.train, pad)} of training and {_cut(data.test, pad)} of test texts reach the limit and are "
        f"truncated); train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}. "
        f"Teacher: all-MiniLM-L6-v2 + classification head, fine-tuned {tuned}, {p_t / 1e6:.1f}M parameters. "
        + " ".join(f"Student \"{k}\": {_student_line(k)}." for k in keys) + trim_text
        + (f" Augmentation (`kdforge.data.augment`, TinyBERT-style, no masked LM: all-MiniLM-L6-v2 has no MLM head): "
           f"{args.augment_n} variants per training text by nearest-neighbour word replacement in the teacher's embedding "
           f"space (p 0.3, 8 neighbours), word dropout (0.1) and adjacent swaps (0.1), none equal to a val/test query: "
           f"{n_var:,} variants, labelled only by the teacher's logits." if n_var else "")
        + f" Every arm: lr {args.lr:g}, batch 16, linear decay, best epoch on val, "
        f"{r['visits'][arms[0].name]:,} sample visits ({args.epochs} epoch(s) over the original texts; augmented arms draw as "
        f"many samples from the pool of originals and variants, each once — augmentation compared at equal compute"
        f"{_originals(r)}). KD: T = 2, α = 0.7 (cross-entropy on the labelled originals only). Layer-wise "
        f"phase (TinyBERT's intermediate-layer distillation, `kind: layerwise`, `layer_map: uniform`): {args.phase1_epochs} "
        f"epoch(s) on the original texts with the live teacher before the prediction phase; hidden-state MSE through a learned "
        f"projection on every student layer and the embedding output, MiniLM attention KL on every layer (teacher heads "
        f"averaged), weights 1. Teacher logits are read from a teacher-output store written in one pass over the "
        f"{len(aug):,} training texts ({r['cached'].store.nbytes() / 2**20:.0f} MiB). {args.seeds} seed(s) (student head "
        f"initialisation, batch order); the teacher and the augmented set are made once."
        + (" **--quick smoke run: not results.**" if args.quick else ""),
        "",
        "| model | what it has | params | × fewer | test accuracy % | retention (÷ teacher) | vs student alone (points, paired) |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| teacher | | {p_t / 1e6:.2f}M | 1.0 | {100 * t_acc:.2f} | 1.000 | |",
    ]
    for arm in arms:
        xs, p_s = acc[arm.name], r["params"][arm.name]
        kept = statistics.mean(xs) / t_acc if t_acc else float("nan")  # nan: a --quick teacher scores 0
        lines.append(f"| student: {arm.name} | {arm.ingredients} | {p_s / 1e6:.2f}M | {p_t / p_s:.1f} | {_shown(xs)} | "
                     f"{kept:.3f} | {'' if arm.name == ALONE else _vs(xs, acc[ALONE])} |")
    lines += ["", *_targets(r, p_t)]
    lines += ["", *r["lat"]["lines"], "",
              "Wall time (2 shared cores): " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in r["timings"].items()) + "."]
    return "\n".join(lines)


def _originals(r: dict) -> str:
    """How often an augmented arm sees the original (labelled) texts, against the other arms (last seed's draw)."""
    aug = [a for a in r["arms"] if a.augment]
    if not aug:
        return ""
    v, o = r["visits"][aug[0].name], r["originals"][aug[0].name]
    return (f"; so an augmented arm's {v:,} samples hold {o:,} originals ({100 * o / v:.0f}%): it sees each labelled "
            f"text {o / len(r['data'].train):.2f}× per run, the other arms {r['visits'][r['arms'][0].name] / len(r['data'].train):.0f}×, "
            f"and its cross-entropy term has that much less to work on")


def _gain(xs: list[float], ref: list[float], name: str) -> str:
    """Whether a KD arm's gain over the student alone is measurable: positive and, with >= 3 seeds, p < 0.05."""
    d = statistics.mean(xs) - statistics.mean(ref)
    if len(xs) < 3:
        return f"\"{name}\" {100 * d:+.2f} points — too few seeds ({len(xs)}) for a test, **no gain measurable**"
    p = stats.ttest_rel(xs, ref).pvalue if any(x != y for x, y in zip(xs, ref)) else 1.0
    verdict = "a measurable gain" if d > 0 and p < 0.05 else "**no gain measurable**"
    return f"\"{name}\" {100 * d:+.2f} points (paired t-test p = {p:.2g}, {len(xs)} seeds): {verdict}"


def _targets(r: dict, p_t: int) -> list[str]:
    acc, t_acc, arms = r["acc"], r["t_acc"], r["arms"]
    best = max(acc, key=lambda n: statistics.mean(acc[n]))
    retention = statistics.mean(acc[best]) / t_acc if t_acc else float("nan")
    fewer = p_t / r["params"][best]
    rows = r["lat"]["rows"]
    fast = rows.get(INT8, {}).get("speedup")
    out = [f"Targets (the best arm, \"{best}\"): retention ≥ {100 * TARGET_RETENTION:g}% of the teacher — "
           f"{100 * retention:.1f}%, **{'met' if retention >= TARGET_RETENTION else 'not met'}**; ≥ {TARGET_PARAMS:g}× fewer "
           f"parameters (trimmed embeddings counted) — {fewer:.1f}×, **{'met' if fewer >= TARGET_PARAMS else 'not met'}**"]
    if fast:
        ok = min(fast.values()) >= TARGET_SPEEDUP
        out[0] += (f"; ≥ {TARGET_SPEEDUP:g}× faster than the fp32 PyTorch teacher as INT8 ONNX ({INT8[8:]}, 1 thread, "
                   f"length {r['spec']['data']['max_length']}) — {fast[1]:.1f}× at batch 1, {fast[32]:.1f}× at batch 32, "
                   f"**{'met' if ok else 'not met'}**.")
    kd = [a.name for a in arms if a.name.startswith("KD")]
    if kd and ALONE in acc:
        out += ["", "KD against the student alone (same student, same schedule): " + "; ".join(_gain(acc[n], acc[ALONE], n) for n in kd) + "."]
    names = {a.name for a in arms}
    if FULL in names:
        full = statistics.mean(acc[FULL])
        parts = [f"{name[len('full − '):].split(' (')[0]} {100 * (full - statistics.mean(acc[name])):+.2f} points "
                 f"({100 * full:.2f} with it, {100 * statistics.mean(acc[name]):.2f} without)"
                 for name in acc if name.startswith("full − ")]
        skipped = [a.name for a in r.get("all_arms", arms) if a.name.startswith("full − ") and a.name not in names]
        out += ["", f"What each ingredient gives (the full recipe minus the arm without it, "
                    f"{'mean over seeds' if len(acc[FULL]) > 1 else 'one seed'}): " + "; ".join(parts) + "."
                + (f" Not run with this schedule (`--arms`): {', '.join(f'“{n}”' for n in skipped)}." if skipped else "")]
    return out


__all__ = ["render"]
