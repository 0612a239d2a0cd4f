"""The workflow layer: one registered workflow per recipe method, and the shared report table."""
from types import SimpleNamespace

from kdforge.registry import METHODS, WORKFLOWS
from kdforge.workflows import run_recipe  # noqa: F401  (registers every workflow)
from kdforge.workflows.run import report_markdown
from kdforge.workflows.standard import run_standard


def test_every_method_names_a_registered_workflow_and_every_workflow_runs_a_method():
    named = {METHODS.get(k).workflow for k in METHODS}
    assert named == set(WORKFLOWS.keys())  # no method without its workflow, no workflow without a method
    assert {k for k in METHODS if WORKFLOWS.get(METHODS.get(k).workflow) is run_standard} == {"standard", "supervised"}


def test_report_table_shows_missing_values_as_dashes_and_keeps_notes():
    recipe = SimpleNamespace(data=SimpleNamespace(name="digits"), method="mutual", seed=3)
    text = report_markdown(recipe, {"peer0": {"params": 1234, "accuracy": 0.5}, "ensemble": {"accuracy": 0.75}},
                           [("test accuracy", "accuracy"), ("loss", "loss")], ["a note"])
    lines = text.splitlines()
    assert lines[0] == "# kdforge run — digits, method mutual, seed 3"
    assert "| peer0 | 1,234 | 0.5000 | - |" in lines and "| ensemble | - | 0.7500 | - |" in lines
    assert lines[-1] == "a note"
