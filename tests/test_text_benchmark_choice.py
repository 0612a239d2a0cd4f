"""benchmarks/text.py chooses on validation only: the arm it exports and names best, and per seed what the
shipped recipe keeps (the default arm, or the control when it validates strictly better)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(monkeypatch, name: str):
    """benchmarks/<name>.py loaded as a module (benchmarks/ is not a package)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}_choice", ROOT / f"benchmarks/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_best_arm_is_chosen_on_validation_never_test(monkeypatch):
    text = _bench(monkeypatch, "text")
    # arm "a" validates better, arm "b" would win on test: the choice must not look at test (it is not even given)
    records = {"a": [{"val": 0.90}, {"val": 0.88}], "b": [{"val": 0.80}, {"val": 0.82}],
               text.SHIPPED: [{"val": 0.99}, {"val": 0.99}]}  # the derived arm's val is a max of two: left out
    assert text.best_on_val(records) == "a"


def test_shipped_arm_keeps_the_control_only_when_strictly_better_on_validation(monkeypatch):
    text = _bench(monkeypatch, "text")
    records = {text.DEFAULT: [{"val": 0.80}, {"val": 0.85}, {"val": 0.70}],
               text.ALONE: [{"val": 0.80}, {"val": 0.84}, {"val": 0.75}]}
    assert text.shipped_arm(records) == [text.DEFAULT, text.DEFAULT, text.ALONE]  # a tie keeps the distilled one
    assert text.shipped_arm({text.ALONE: records[text.ALONE]}) == []  # no default arm ran: nothing to derive


def test_kd_gain_control_row_picks_per_seed_on_validation_and_counts_both_arms(monkeypatch):
    kd_gain = _bench(monkeypatch, "kd_gain")
    col = {}
    for key, test, val in (("full/default", [0.9, 0.7, 0.6], [0.8, 0.5, 0.6]), ("full/alone", [0.5, 0.95, 0.99], [0.7, 0.6, 0.6]),
                           ("few/default", [0.4, 0.4, 0.4], [0.4, 0.4, 0.4]), ("few/alone", [0.3, 0.3, 0.3], [0.5, 0.5, 0.5]),
                           ("pool/default", [0.8, 0.8, 0.8], [0.6, 0.6, 0.6])):
        col[key], col[f"{key}:val"] = test, val
        col[f"{key}:epochs"], col[f"{key}:teacher"] = [10, 10, 10], [5, 5, 5]
    kept = kd_gain.add_controlled(col)
    # seed 0: default validates better; seed 1: the control does (its test is read, not the default's);
    # seed 2: a tie keeps the distilled one even though the control's test would be higher
    assert col["full/with_control"] == [0.9, 0.95, 0.6] and kept["full/with_control"] == 1
    assert col["few/with_control"] == [0.3, 0.3, 0.3] and kept["few/with_control"] == 3
    assert col["pool/with_control"] == [0.8, 0.8, 0.8]  # the pool's control is the few-label student alone
    assert col["full/with_control:epochs"] == [20, 20, 20] and col["full/with_control:teacher"] == [10, 10, 10]


def test_llm_recover_picks_the_cross_entropy_lr_on_validation_never_test(monkeypatch):
    rec = _bench(monkeypatch, "llm_recover")

    def run(val, test):
        return {"val": val, "after": {"perplexity": test}}

    kind = "width-pruned"
    # per seed the CE lr with the lower validation perplexity, even where another would test better
    by = {(kind, "KD"): {0: run(90, 90), 1: run(91, 91), 2: run(89, 89)},
          (kind, "CE"): {0: run(200, 150), 1: run(150, 300), 2: run(210, 140)},
          (kind, "CE, lr 1e-4"): {0: run(180, 400), 1: run(170, 100), 2: run(190, 410)}}
    arm, line = rec.ce_on_val(by, kind)
    assert line.endswith(": CE, lr 1e-4 / CE / CE, lr 1e-4)"), line
    assert [by[arm][k]["after"]["perplexity"] for k in (0, 1, 2)] == [400, 300, 410]
    del by[arm], by[(kind, "CE, lr 1e-4")][2]  # an lr that did not run at every seed KD did is not a candidate
    assert rec.ce_on_val(by, kind) == ((kind, "CE"), "")
