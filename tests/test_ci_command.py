"""CI runs the README's test command verbatim, and that command prints pytest's summary."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^python3 -m venv \.venv .*-m pytest.*$", readme, re.M)
    assert len(commands) == 1, commands
    return commands[0]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_test_command() in ci.splitlines()[-1]


def test_readme_test_command_keeps_pytest_summary_line():
    # `-q` on the command line plus `-q` in addopts makes `-qq`, which hides "N passed".
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    quiet = addopts.split().count("-q") + _readme_test_command().split().count("-q")
    assert "-qq" not in addopts and quiet <= 1
