"""The markdown of benchmarks/text.py's section: setup, the arm table (accuracy, retention,
parameters, paired differences vs the student alone), the ingredient ablations, the targets,
and the latency tables of benchmarks/_text_latency.py."""
from __future__ import annotations

import statistics

from _results import machine_line, mean_std
from _stats import compare, holm
from _text_arms import ALONE, DEFAULT, FULL, KD, SHIPPED, STUDENTS

from kdforge.config import TEXT_AUTO, AugmentConfig
from kdforge.control import TEACHER_MARGIN
from kdforge.models.small import count_parameters

TARGET_RETENTION, TARGET_PARAMS, TARGET_SPEEDUP = 0.97, 4.0, 5.0
INT8 = "student ONNX optimized INT8 (dynamic)"


def _shown(xs: list[float]) -> str:
    return mean_std(xs, 100) if len(xs) > 1 else f"{100 * xs[0]:.2f}"


def _about(spec: dict, data) -> str:
    """The dataset's line, its counts read from the loaded splits."""
    n_train, n_val, n_test = len(data.train), len(data.val), len(data.test)
    d = spec["data"]
    return spec["about"].format(n=n_train + n_val + n_test, n_train_file=n_train + n_val, n_test=n_test, classes=data.num_classes,
                                val_pct=100 * d.get("val_fraction", 0), max_length=d["max_length"])


def _cut(part, pad_id: int) -> str:
    """Share of rows whose last position holds a token: they reached max_length (and were cut there)."""
    return f"{100 * (part.x[:, -1] != pad_id).float().mean():.1f}%"


def _student_line(key: str) -> str:
    s = STUDENTS[key]
    layers = ", ".join(map(str, s["layers"]))
    return f"teacher layers {layers} (copied), width {s['hidden_size']} / {s['num_heads']} heads / FFN {s['intermediate_size']}"


def _control_claims(r: dict) -> list[str]:
    """The two claims of "never silently worse than training alone", each with its paired test, and the teacher's
    diagnostics (kdforge.control) that explain a miss."""
    acc, recs, d = r["acc"], r["records"], r["teacher_info"]["diagnostics"]
    out = [f"Teacher diagnostics (kdforge.control): accuracy {100 * d['train_accuracy']:.2f}% on training data, "
           f"{100 * d['val_accuracy']:.2f}% on val; ECE {d['val_ece']:.3f} (val); mean top probability {d['train_mean_top_prob']:.3f}, "
           f"entropy {d['train_entropy']:.2f} of at most {d['max_entropy']:.2f} nats (training data)."
           + "".join(f" **Warning**: {w}." for w in d["warnings"])]
    if ALONE not in acc or len(acc[ALONE]) < 2:
        return out
    if SHIPPED in acc:
        c = compare(acc[SHIPPED], acc[ALONE], 100)
        kept = sum(k != ALONE for k in r["shipped"])
        ok = c.verdict != "harm"
        out += ["", f"Claim 1 — what the shipped recipe gives (the default arm, or the control when it validates better: the "
                    f"default was kept on {kept} of {len(r['shipped'])} seeds) is not worse than the student alone: "
                    f"{c.text()} — **{'met' if ok else 'not met'}**."]
    kd = [a.name for a in r["arms"] if a.name != ALONE and (a.losses or a.auto) and a.name in recs]
    if kd:
        pick = max(kd, key=lambda n: statistics.mean(x["val"] for x in recs[n]))
        margin = d["val_accuracy"] - statistics.mean(x["val"] for x in recs[ALONE])
        c = compare(acc[pick], acc[ALONE], 100)
        applies = margin >= TEACHER_MARGIN
        met = c.mean >= 0.5 and c.verdict == "gain"
        out += ["", f"Claim 2 — where the teacher beats the control on val by ≥ {100 * TEACHER_MARGIN:g} points (here "
                    f"{100 * margin:+.2f}: {'it does' if applies else 'it does not, so the claim does not apply'}), the KD "
                    f"arm chosen on val (\"{pick}\") beats the student alone by ≥ 0.5 points with p < 0.05: {c.text()} — "
                    + (f"**{'met' if met else 'not met'}**." if applies else "reported, not claimed.")]
    return out


def _seeds_flag(seeds: list[int]) -> str:
    """The command-line flag that reproduces these seeds: --seeds N for 0..N-1, else the list."""
    return f" --seeds {len(seeds)}" if seeds == list(range(len(seeds))) else f" --eval-seeds {','.join(map(str, seeds))}"


def render(r: dict) -> str:
    args, spec, data, acc, arms, t_acc = r["args"], r["spec"], r["data"], r["acc"], r["arms"], r["t_acc"]
    p_t, pad = count_parameters(r["teacher"]), r["teacher"].pad_id
    tuned = ("(weights from an earlier run of this script)" if args.teacher_checkpoint
             else f"up to {spec['teacher_epochs']} epochs"
                  + (f" (stopped when validation had not improved for {spec['teacher_patience']})" if spec.get("teacher_patience") else "")
                  + f", lr {spec['teacher_lr']:g}, batch {spec['teacher_batch']}, linear decay, best epoch on val (cached outside "
                    f"the repository; reruns load it)")
    if spec.get("teacher_epochs_run"):
        ep, val = spec["teacher_best_epoch"]
        tuned += f"; it ran {spec['teacher_epochs_run']} epochs, best on val after epoch {ep} ({100 * val:.2f}%)"
    if spec.get("teacher_stopped_after"):
        tuned += (f" — **stopped after {spec['teacher_stopped_after']} of the {spec['teacher_epochs']} scheduled epochs** "
                  f"(learning rate not yet decayed to 0)")
    keys = sorted({a.student for a in arms})
    trims = r["trims"]
    trim_text = "".join(
        f" Trimming the {key} student's vocabulary to the special tokens and the tokens of the augmented training corpus keeps "
        f"{t['vocab_after']:,} of {t['vocab_before']:,} rows, freeing {t['params_freed'] / 1e6:.2f}M parameters "
        f"({t['bytes_freed'] / 2**20:.1f} MiB in fp32); out-of-vocabulary ids read [UNK], the model takes the original "
        f"tokenizer's ids (the remap is one Gather inside the model and its ONNX graph)." for key, t in trims.items())
    aug = r["augmented"]
    n_var = len(aug) - len(data.train)
    aug_cfg = AugmentConfig(n=args.augment_n)
    lines = [
        f"## Text classification: MiniLM-L6 → small BERT students ({spec['title']}; "
        f"`benchmarks/text.py --dataset {args.dataset}{f' --threads {args.threads}' if args.threads else ''}{_seeds_flag(r['seeds'])}{f' --arms {args.arms}' if args.arms else ''}`"
        + ("; run here as `--reuse DIR --train-seeds …` processes, then one `--reuse DIR` report: the same students)"
           if args.reuse else ")"),
        "",
        machine_line(),
        "",
        f"{_about(spec, data)} ({_cut(data.train, pad)} of training and {_cut(data.test, pad)} of test texts reach the limit and are "
        f"truncated); train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}. "
        f"Teacher: all-MiniLM-L6-v2 + classification head, fine-tuned {tuned}, {p_t / 1e6:.1f}M parameters. "
        + " ".join(f"Student \"{k}\": {_student_line(k)}." for k in keys) + trim_text
        + (f" Augmentation (`kdforge.data.augment`, TinyBERT-style, no masked LM: all-MiniLM-L6-v2 has no MLM head): "
           f"{args.augment_n} variants per training text by nearest-neighbour word replacement in the teacher's embedding "
           f"space (p {aug_cfg.replace:g}, {aug_cfg.neighbours} neighbours), word dropout ({aug_cfg.drop:g}) and adjacent swaps "
           f"({aug_cfg.swap:g}), none equal to a val/test query: "
           f"{n_var:,} variants, labelled only by the teacher's logits." if n_var else "")
        + f" Every arm: lr {args.lr:g}, batch 16, linear decay, best epoch on val, "
        f"{r['visits'][arms[0].name]:,} sample visits ({args.epochs} epoch(s) over the original texts; augmented arms draw as "
        f"many samples from the pool of originals and variants, each once — augmentation compared at equal compute"
        f"{_originals(r)}). KD: T = {KD['temperature']:g}, α = {KD['alpha']:g} (cross-entropy on the labelled originals only). "
        f"{_default_text(r)} Layer-wise "
        f"phase (TinyBERT's intermediate-layer distillation, `kind: layerwise`, `layer_map: uniform`): {args.phase1_epochs} "
        f"epoch(s) on the original texts with the live teacher before the prediction phase; hidden-state MSE through a learned "
        f"projection on every student layer and the embedding output, MiniLM attention KL on every layer (teacher heads "
        f"averaged), weights 1. Teacher logits are read from a teacher-output store written in one pass over the "
        f"{len(aug):,} training texts ({r['cached'].store.nbytes() / 2**20:.0f} MiB). {args.seeds} seed(s): {', '.join(map(str, r['seeds']))} (student head "
        f"initialisation, batch order); the teacher and the augmented set are made once."
        + (" **--quick smoke run: not results.**" if args.quick else ""),
        "",
        "| model | what it has | params | × fewer | val accuracy % | test accuracy % | retention (÷ teacher) | student epochs "
        "| vs student alone, test (points, paired; Holm over the arms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
        f"| teacher | | {p_t / 1e6:.2f}M | 1.0 | {100 * r['teacher_info']['diagnostics']['val_accuracy']:.2f} | {100 * t_acc:.2f} | "
        f"1.000 | | |",
    ]
    family = holm({n: compare(acc[n], acc[ALONE], 100) for n in acc if n != ALONE}) if ALONE in acc and len(acc[ALONE]) > 1 else {}
    for name in acc:
        xs, p_s, recs = acc[name], r["params"][name], r["records"][name]
        kept = statistics.mean(xs) / t_acc if t_acc else float("nan")  # nan: a --quick teacher scores 0
        what = next((a.ingredients for a in arms if a.name == name), "per seed: the default arm or the student alone")
        epochs = statistics.mean(x["student_epochs"] for x in recs)
        vs = family[name].text() if name in family else ""
        lines.append(f"| student: {name} | {what} | {p_s / 1e6:.2f}M | {p_t / p_s:.1f} | {_shown([x['val'] for x in recs])} | "
                     f"{_shown(xs)} | {kept:.3f} | {epochs:.1f} | {vs} |")
    lines += ["", "Student epochs: passes over the original training texts per seed, the layer-wise phase and the default "
                  "arm's search trials (each on its share of train) included. The teacher ran once over the transfer set "
                  "for the store; the search trials and every arm read the store."]
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


def _default_text(r: dict) -> str:
    """What the default arm is and what its search chose per seed."""
    recs = r["records"].get(DEFAULT)
    if not recs:
        return ""
    chosen = "; ".join("seed {}: ".format(i) + ", ".join(f"{k.split('.')[1][0].upper() if k.endswith('temperature') else 'α'} = {v:.3g}"
                                                        for k, v in rec.get("chosen", {}).items()) for i, rec in enumerate(recs))
    return (f"Default arm: what a text recipe without `losses` trains, KD on standardized logits with temperature and α "
            f"searched ({TEXT_AUTO['trials']} trials of {TEXT_AUTO['epochs']} epoch each on 80% of train, scored on the "
            f"rest; trial 0 T = 4, α = 0.8, trial 1 α = 0) — chosen: {chosen}.")


def _targets(r: dict, p_t: int) -> list[str]:
    acc, t_acc, arms, best = r["acc"], r["t_acc"], r["arms"], r["best"]
    retention = statistics.mean(acc[best]) / t_acc if t_acc else float("nan")
    fewer = p_t / r["params"][best]
    rows = r["lat"]["rows"]
    fast = rows.get(INT8, {}).get("speedup")
    out = [f"Targets (the best arm on validation, \"{best}\"; test read after the choice): retention ≥ {100 * TARGET_RETENTION:g}% of "
           f"the teacher — {100 * retention:.1f}%, **{'met' if retention >= TARGET_RETENTION else 'not met'}**; ≥ {TARGET_PARAMS:g}× fewer "
           f"parameters (trimmed embeddings counted) — {fewer:.1f}×, **{'met' if fewer >= TARGET_PARAMS else 'not met'}**"]
    if fast:
        ok = min(fast.values()) >= TARGET_SPEEDUP
        out[0] += (f"; ≥ {TARGET_SPEEDUP:g}× faster than the fp32 PyTorch teacher as INT8 ONNX ({INT8[8:]}, 1 thread, "
                   f"length {r['spec']['data']['max_length']}) — {fast[1]:.1f}× at batch 1, {fast[32]:.1f}× at batch 32, "
                   f"**{'met' if ok else 'not met'}**.")
    out += ["", *_control_claims(r)]
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
