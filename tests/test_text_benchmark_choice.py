"""benchmarks/text.py chooses on validation only: the arm it exports and names best, and per seed what the
shipped recipe keeps (the default arm, or the control when it validates strictly better)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _text(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_text_choice", ROOT / "benchmarks/text.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_best_arm_is_chosen_on_validation_never_test(monkeypatch):
    text = _text(monkeypatch)
    # arm "a" validates better, arm "b" would win on test: the choice must not look at test (it is not even given)
    records = {"a": [{"val": 0.90}, {"val": 0.88}], "b": [{"val": 0.80}, {"val": 0.82}],
               text.SHIPPED: [{"val": 0.99}, {"val": 0.99}]}  # the derived arm's val is a max of two: left out
    assert text.best_on_val(records) == "a"


def test_shipped_arm_keeps_the_control_only_when_strictly_better_on_validation(monkeypatch):
    text = _text(monkeypatch)
    records = {text.DEFAULT: [{"val": 0.80}, {"val": 0.85}, {"val": 0.70}],
               text.ALONE: [{"val": 0.80}, {"val": 0.84}, {"val": 0.75}]}
    assert text.shipped_arm(records) == [text.DEFAULT, text.DEFAULT, text.ALONE]  # a tie keeps the distilled one
    assert text.shipped_arm({text.ALONE: records[text.ALONE]}) == []  # no default arm ran: nothing to derive
