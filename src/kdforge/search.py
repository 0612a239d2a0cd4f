"""KD-aware hyperparameter search with Optuna: `kdforge search RECIPE --trials N`.

What is tuned: the first kd term's temperature (log scale) and α, the weight of
every other loss term (log scale), and optionally the student's width
(`search:` section of the recipe). How it is scored: a held-out part carved
(stratified, seeded) from the TRAINING split; trials train on the rest. The
validation split selects the teacher only; the test split is read once, after
the choice is made, to report the chosen (and the default) configuration.

1. The teacher is trained once on the tuning part (or loaded from teacher.checkpoint).
2. Trial 0 is the recipe's own configuration (enqueued), then TPE proposes;
   a MedianPruner stops trials whose per-epoch held-out accuracy falls behind.
3. The top_k trials and the default are re-run over `seeds` seeds (mean ± std);
   a candidate replaces the default only if its mean held-out accuracy is higher,
   so the chosen configuration is at least as good as the default on held-out.
4. Written to the output folder: search.md (tables), search.png (plot),
   trials.csv, search.json, best-recipe.yaml.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from kdforge.config import Recipe
from kdforge.recipe_file import dump_recipe
from kdforge.data import load_data
from kdforge.data.base import DataBundle
from kdforge.errors import KDForgeError
from kdforge.models.build import build_model
from kdforge.rundir import run_dir_lock, write_json, write_text
from kdforge.stages import train_supervised
from kdforge.train.evaluate import classification_metrics
from kdforge.tuning import DEFAULTS, fit_trial, last_value, make_study, pruned_score, split_dataset
from kdforge.workflows.run import prepare_run_dir


@dataclass
class Tuning:
    """The data a search may touch: `tune` to train on, `holdout` to score (both from train), `val` for the teacher."""

    tune: torch.utils.data.Dataset
    holdout: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    input_shape: tuple[int, ...]
    num_classes: int


def split_holdout(data: DataBundle, fraction: float, seed: int) -> Tuning:
    """Stratified split of data.train into (tune, holdout); data.test is not read."""
    tune, hold = split_dataset(data.train, fraction, seed)
    return Tuning(tune, hold, data.val, data.input_shape, data.num_classes)


def kd_index(recipe: Recipe) -> int:
    for i, t in enumerate(recipe.distill.losses):
        if t.kind == "kd":
            return i
    raise KDForgeError("distill.losses: search tunes the kd term's temperature and alpha, but the recipe has no kd term")


def default_params(recipe: Recipe) -> dict:
    k = kd_index(recipe)
    kd = recipe.distill.losses[k]
    p = {f: DEFAULTS[f] if getattr(kd, f) == "auto" else getattr(kd, f) for f in ("temperature", "alpha")}  # auto: search from the default
    if recipe.search.weight is not None:
        p.update({f"weight_{i}": t.weight for i, t in enumerate(recipe.distill.losses) if i != k})
    if recipe.search.widths is not None:
        p["width"] = student_widths(recipe)[0]
    return p


def student_widths(recipe: Recipe) -> list[int]:
    s = recipe.student
    widths = s.hidden if s.name == "mlp" else s.channels
    if not widths:
        raise KDForgeError(f"search.widths: set student.{'hidden' if s.name == 'mlp' else 'channels'} explicitly to search its width")
    return list(widths)


def apply_params(recipe: Recipe, params: dict) -> Recipe:
    """A copy of `recipe` with a trial's parameters filled in."""
    raw = recipe.model_dump(mode="json")
    k = kd_index(recipe)
    raw["distill"]["losses"][k].update(temperature=float(params["temperature"]), alpha=float(params["alpha"]))
    for key, v in params.items():
        if key.startswith("weight_"):
            raw["distill"]["losses"][int(key[7:])]["weight"] = float(v)
    if "width" in params:
        field = "hidden" if recipe.student.name == "mlp" else "channels"
        raw["student"][field] = [int(params["width"])] + student_widths(recipe)[1:]
    return Recipe.model_validate(raw)


def suggest(trial, recipe: Recipe) -> dict:
    s, k = recipe.search, kd_index(recipe)
    p = {"temperature": trial.suggest_float("temperature", *s.temperature, log=True),
         "alpha": trial.suggest_float("alpha", *s.alpha)}
    if s.weight is not None:
        for i, _ in enumerate(recipe.distill.losses):
            if i != k:
                p[f"weight_{i}"] = trial.suggest_float(f"weight_{i}", *s.weight, log=True)
    if s.widths is not None:
        p["width"] = trial.suggest_categorical("width", list(s.widths))
    return p


def train_student(recipe: Recipe, teacher, tuning: Tuning, out: Path, seed: int, epochs: int | None, on_epoch_end=None):
    """Distil a fresh student with `recipe`'s settings on tuning.tune; returns (student, best held-out accuracy)."""
    cfg = recipe.distill if epochs is None else recipe.distill.model_copy(update={"epochs": epochs})
    student = build_model(recipe.student, tuning.input_shape, tuning.num_classes, "student", seed + 1)
    return student, fit_trial("standard", student, teacher, cfg, tuning.tune, tuning.holdout, out, seed, on_epoch_end)


def run_search(recipe: Recipe, trials: int, out_dir: Path, *, quiet: bool = True, report_test: bool = True,
               force: bool = False) -> dict:
    import optuna

    if trials < 1:
        raise KDForgeError(f"--trials: need at least 1 trial, got {trials}")
    if recipe.method != "standard":
        raise KDForgeError(f"method: search tunes the standard teacher -> student method, got {recipe.method!r}")
    s = recipe.search
    defaults = default_params(recipe)
    data = load_data(recipe.data, recipe.seed)
    tuning = split_holdout(data, s.holdout_fraction, recipe.seed)
    apply_params(recipe, defaults)  # validates the search against the recipe before anything is written
    out_dir = Path(out_dir)
    with run_dir_lock(out_dir):  # one live search (or run, or demo) per folder; a second one refuses
        return _search(recipe, trials, out_dir, data, tuning, defaults, quiet=quiet, report_test=report_test, force=force)


def _search(recipe: Recipe, trials: int, out_dir: Path, data: DataBundle, tuning: Tuning, defaults: dict, *,
            quiet: bool, report_test: bool, force: bool) -> dict:
    s = recipe.search
    prepare_run_dir(out_dir, resume=False, force=force)  # an existing folder is replaced only with force
    teacher = build_model(recipe.teacher, tuning.input_shape, tuning.num_classes, "teacher", recipe.seed)
    if not recipe.teacher.checkpoint:  # trained on the tuning part only: the held-out part stays unseen
        train_supervised("teacher", out_dir, teacher, tuning_bundle(tuning), recipe.teacher.train, recipe.seed, quiet=quiet)

    epochs = s.epochs or recipe.distill.epochs
    study = make_study(recipe.seed, epochs)
    study.enqueue_trial(defaults)

    def objective(trial) -> float:
        params = suggest(trial, recipe)
        score = pruned_score(trial, lambda report: train_student(
            apply_params(recipe, params), teacher, tuning, out_dir / f"trials/{trial.number}", recipe.seed, epochs, report)[1])
        if not quiet:
            print(f"trial {trial.number}: held-out {score:.4f} {params}")
        return score

    study.optimize(objective, n_trials=trials, catch=())
    rows = [{"trial": t.number, "state": t.state.name, "holdout": last_value(t), **t.params} for t in study.trials]

    done = sorted((t for t in study.trials if t.value is not None), key=lambda t: -t.value)
    candidates = [study.trials[0]] + [t for t in done[: s.top_k] if t.number != 0]
    reruns, models = [], {}
    for t in candidates:
        params = {**defaults, **t.params}
        scores = []
        for j in range(s.seeds):
            model, score = train_student(apply_params(recipe, params), teacher, tuning,
                                         out_dir / f"reruns/{t.number}-{j}", recipe.seed + 1000 * (j + 1), epochs)
            scores.append(score)
            if j == 0:
                models[t.number] = model
        reruns.append({"trial": t.number, "params": params, "scores": scores, "mean": statistics.mean(scores),
                       "std": statistics.stdev(scores) if len(scores) > 1 else 0.0})
    default_row = reruns[0]
    chosen = max(reruns[1:], key=lambda r: r["mean"], default=default_row)
    if chosen["mean"] <= default_row["mean"]:
        chosen = default_row  # only a strictly better held-out mean replaces the default
    best_recipe = apply_params(recipe, chosen["params"])
    write_text(out_dir / "best-recipe.yaml", dump_recipe(best_recipe))

    result = {"trials": rows, "reruns": reruns, "chosen": chosen, "default": default_row, "epochs": epochs,
              "holdout_size": len(tuning.holdout), "tune_size": len(tuning.tune)}
    if report_test:  # the only read of the test split, after the choice
        result["test"] = final_test(models, chosen["trial"], data)
    write_json(out_dir / "search.json", result)
    write_csv(out_dir / "trials.csv", rows)
    plot(out_dir / "search.png", rows, reruns)
    write_text(out_dir / "search.md", render(result))
    return result


def tuning_bundle(t: Tuning) -> DataBundle:
    """The teacher trains on the tuning part and selects on the validation split."""
    return DataBundle(train=t.tune, val=t.val, test=None, input_shape=t.input_shape, num_classes=t.num_classes)


def final_test(models: dict, chosen_trial: int, data: DataBundle) -> dict:
    out = {"default": classification_metrics(models[0], data.test)["accuracy"]}
    out["chosen"] = classification_metrics(models[chosen_trial], data.test)["accuracy"]
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = [",".join(keys)] + [",".join("" if r.get(k) is None else str(r.get(k)) for k in keys) for r in rows]
    write_text(path, "\n".join(lines) + "\n")


def plot(path: Path, rows: list[dict], reruns: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for state, color in (("COMPLETE", "tab:blue"), ("PRUNED", "tab:gray")):
        pts = [r for r in rows if r["state"] == state and r["holdout"] is not None]
        a.scatter([r["trial"] for r in pts], [r["holdout"] for r in pts], c=color, label=state.lower())
        b.scatter([r["temperature"] for r in pts], [r["alpha"] for r in pts], c=color, s=20)
    a.set(xlabel="trial", ylabel="held-out accuracy", title="trials (pruned: last epoch reported)")
    a.legend()
    b.set(xscale="log", xlabel="temperature", ylabel="alpha", title="where the sampler looked")
    for r in reruns:
        b.annotate(f"#{r['trial']} {r['mean']:.3f}", (r["params"]["temperature"], r["params"]["alpha"]), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(result: dict) -> str:
    keys = [k for k in result["trials"][0] if k not in ("trial", "state", "holdout")]
    lines = ["# kdforge search", "",
             f"Scored on a held-out part of the training split ({result['holdout_size']} samples; "
             f"trials train on {result['tune_size']} for {result['epochs']} epochs). Trial 0 is the recipe's default; "
             "pruned trials show their last reported epoch.", "",
             "| trial | state | held-out acc | " + " | ".join(keys) + " |", "|---" * (3 + len(keys)) + "|"]
    for r in result["trials"]:
        v = "-" if r["holdout"] is None else f"{r['holdout']:.4f}"
        lines.append(f"| {r['trial']} | {r['state'].lower()} | {v} | " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
    lines += ["", "Re-runs over seeds (held-out accuracy, mean ± std):", "", "| trial | mean ± std | params |", "|---|---|---|"]
    for r in result["reruns"]:
        mark = " (chosen)" if r["trial"] == result["chosen"]["trial"] else ""
        lines.append(f"| {r['trial']}{mark} | {r['mean']:.4f} ± {r['std']:.4f} | "
                     + ", ".join(f"{k}={_fmt(v)}" for k, v in r["params"].items()) + " |")
    if "test" in result:
        lines += ["", f"Test accuracy (read once, after the choice; each configuration's first re-run model, "
                      f"trained on the tuning part for {result['epochs']} epochs): chosen {result['test']['chosen']:.4f}, "
                      f"default {result['test']['default']:.4f}."]
    lines += ["", "![search](search.png)"]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
