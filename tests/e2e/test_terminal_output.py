"""What `kdforge run` prints: one progress bar per stage (with the validation metric), no
per-epoch lines unless --verbose; metrics.jsonl keeps every epoch either way."""
import re

import pytest
import yaml

from kdforge.cli import main
from kdforge.rundir import read_jsonl

EPOCHS = {"teacher": 2, "student": 3}
EPOCH_LINE = re.compile(r"^(teacher|student) epoch (\d+)/(\d+) \{", re.M)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("output")
    raw = {"run_dir": str(tmp / "run"), "data": {"name": "digits", "train_limit": 200},
           "teacher": {"name": "mlp", "hidden": [32], "train": {"epochs": EPOCHS["teacher"]}},
           "student": {"name": "mlp", "hidden": [16]},
           "distill": {"epochs": EPOCHS["student"], "losses": [{"kind": "kd", "temperature": 4.0, "alpha": 0.8}]}}
    (tmp / "r.yaml").write_text(yaml.safe_dump(raw))
    return tmp / "r.yaml", tmp / "run"


def run(recipe, capsys, *flags):
    path, run_dir = recipe
    assert main(["run", str(path), "--force", *flags]) == 0
    out = capsys.readouterr()
    for stage, n in EPOCHS.items():  # the record of every epoch stays on disk
        assert [r["epoch"] for r in read_jsonl(run_dir / stage / "metrics.jsonl")] == list(range(n))
    return out


def test_default_output_is_one_bar_per_stage(recipe, capsys):
    out = run(recipe, capsys)
    assert EPOCH_LINE.findall(out.out + out.err) == []
    # bars redraw in place (\r); what stays on screen is one finished line per stage
    finished = [line.rsplit("\r", 1)[-1] for line in out.err.split("\n") if line.strip()]
    assert [f.split(":")[0] for f in finished] == list(EPOCHS), finished
    for stage, n in EPOCHS.items():
        line = next(f for f in finished if f.startswith(stage))
        assert "100%" in line and f"epoch={n}/{n}" in line and re.search(r"val accuracy=\d\.\d{4}", line), line
    assert out.out.strip().splitlines()[-1].startswith("student test accuracy")


def test_verbose_prints_every_epoch(recipe, capsys):
    out = run(recipe, capsys, "--verbose")
    seen = [(s, int(e), int(n)) for s, e, n in EPOCH_LINE.findall(out.out)]
    assert seen == [(s, e, n) for s, n in EPOCHS.items() for e in range(1, n + 1)]


def test_quiet_prints_neither(recipe, capsys):
    out = run(recipe, capsys, "--quiet", "--verbose")
    assert out.err.strip() == "" and EPOCH_LINE.findall(out.out) == []
