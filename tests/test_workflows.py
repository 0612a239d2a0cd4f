"""The workflow layer: one registered workflow per recipe method, and the shared report table."""
from types import SimpleNamespace

from kdforge.config import CLASSIFY_METHODS
from kdforge.registry import METHODS, WORKFLOWS
from kdforge.workflows import run_recipe  # noqa: F401  (registers every workflow)
from kdforge.workflows.run import report_markdown
from kdforge.workflows.standard import run_standard


def test_every_method_has_exactly_its_workflow():
    assert WORKFLOWS.keys() == METHODS.keys()
    assert {k for k in WORKFLOWS if WORKFLOWS.get(k) is run_standard} == set(CLASSIFY_METHODS)


def test_report_table_shows_missing_values_as_dashes_and_keeps_notes():
    recipe = SimpleNamespace(data=SimpleNamespace(name="digits"), method="mutual", seed=3)
    text = report_markdown(recipe, {"peer0": {"params": 1234, "accuracy": 0.5}, "ensemble": {"accuracy": 0.75}},
                           [("test accuracy", "accuracy"), ("loss", "loss")], ["a note"])
    lines = text.splitlines()
    assert lines[0] == "# kdforge run — digits, method mutual, seed 3"
    assert "| peer0 | 1,234 | 0.5000 | - |" in lines and "| ensemble | - | 0.7500 | - |" in lines
    assert lines[-1] == "a note"
