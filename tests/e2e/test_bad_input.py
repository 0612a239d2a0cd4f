"""Bad input: one line naming the cause, exit code 2, no traceback, nothing half-written."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kdforge.cli import main
from kdforge.errors import KDForgeError
from kdforge.rundir import lock_path, run_dir_lock
from tests.conftest import kdforge_cli
from tests.hf_tiny import tiny_bert_dir  # noqa: F401  (fixture)

TINY = {
    "data": {"name": "digits", "train_limit": 200},
    "teacher": {"name": "mlp", "hidden": [16], "train": {"epochs": 1}},
    "student": {"name": "mlp", "hidden": [8]},
    "distill": {"epochs": 1},
}


def write(tmp_path: Path, recipe: dict | str) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    return p


def hint(student_layer="layers.0", teacher_layer="layers.0"):
    return {"kind": "hint", "student_layer": student_layer, "teacher_layer": teacher_layer}


CSV_NO_LABEL = "a,b\n1,2\n3,4\n"
CSV_TEXT_FEATURE = "f,label\nfoo,1\nbar,0\n"
GOOD_ROWS = "1,2,0\n3,4,1\n" * 20  # 40 rows, 2 classes: splits fine
TEXT_ROWS = "".join(f"text {i},{'a' if i % 2 else 'b'}\n" for i in range(40))
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcde", "bcdef"))


def csv_case(content: str | bytes, needle: str, **data) -> tuple:
    """A case: TINY reading `content` as data.csv."""
    return {**TINY, "data": {"name": "csv", "path": "@data.csv", **data}}, [], needle, {"data.csv": content}


def data_case(name: str, content: str | bytes, needle: str, file: str = "data.csv", more: dict | None = None, **data) -> tuple:
    """A case: TINY with a `name` dataset reading `file` (no tokenizer needed: the file is checked first)."""
    return {**TINY, "data": {"name": name, "path": f"@{file}", **data}}, [], needle, {file: content, **(more or {})}


def digits(**data) -> dict:
    return {**TINY, "data": {"name": "digits", **data}}


# name: (recipe: dict | YAML text | bytes | None = no file | "DIR" = a folder, overrides, expected text, files {name: content})
# "@name" in a dict recipe is replaced by that file's path in the test's tmp folder.
CASES = {
    "malformed yaml": ("distill: {epochs: 3\n", [], "malformed YAML", {}),
    "yaml is a list": ("- 1\n- 2\n", [], "expected a mapping", {}),
    "python tag in yaml": ("student: !!python/object/apply:os.system ['true']\n", [], "malformed YAML", {}),
    "unknown top-level field": ({**TINY, "teachr": {}}, [], "teachr: unknown field", {}),
    "unknown loss kind": ({**TINY, "distill": {"losses": [{"kind": "klx"}]}}, [], "klx", {}),
    "alpha above 1": ({**TINY, "distill": {"losses": [{"kind": "kd", "alpha": 2}]}}, [], "distill.losses.0.alpha", {}),
    "negative temperature": ({**TINY, "distill": {"losses": [{"kind": "kd", "temperature": -1}]}}, [], "temperature", {}),
    "zero epochs": ({**TINY, "distill": {"epochs": 0}}, [], "distill.epochs", {}),
    "unknown dataset": ({**TINY, "data": {"name": "imagenet"}}, [], "data.name: unknown dataset 'imagenet'", {}),
    "unknown model": ({**TINY, "student": {"name": "resnet50"}}, [], "student.name: unknown model 'resnet50'", {}),
    "unknown method": ({**TINY, "method": "magic"}, [], "method: unknown method 'magic'", {}),
    "bad val fraction": (digits(val_fraction=0.7), [], "data.val_fraction", {}),
    "omitted class out of range": (digits(omit_classes=[12]), [], "data.omit_classes: [12] out of range", {}),
    "unknown student module": ({**TINY, "distill": {"losses": [hint("layers.9")]}}, [], "student has no module named 'layers.9'", {}),
    "unknown teacher module": ({**TINY, "distill": {"losses": [hint("layers.0", "encoder")]}}, [], "teacher has no module named 'encoder'", {}),
    "missing data file": ({**TINY, "data": {"name": "csv", "path": "/nonexistent/data.csv"}}, [], "file not found: /nonexistent/data.csv", {}),
    "csv without label column": csv_case(CSV_NO_LABEL, "data.label_column: 'label' is not a column"),
    "csv with text features": csv_case(CSV_TEXT_FEATURE, 'feature columns must be numeric'),
    "empty csv": csv_case("", 'data.csv is empty'),
    "cnn on tabular data": ({**csv_case("", "")[0], "student": {"name": "cnn"}}, [], "cnn needs image inputs", {"data.csv": "f,g,label\n" + GOOD_ROWS}),
    "missing teacher checkpoint": ({**TINY, "teacher": {"name": "mlp", "hidden": [16], "checkpoint": "/nope/t.safetensors"}}, [], "teacher.checkpoint: file not found", {}),
    "pickled teacher checkpoint": ({**TINY, "teacher": {"name": "mlp", "hidden": [16], "checkpoint": "@t.pt"}}, [], "pickled checkpoints are refused", {"t.pt": b"\x80\x04K\x01."}),
    "class count mismatch": (TINY, ["student.num_classes=5"], "teacher predicts 10 classes but student predicts 5", {}),
    "nan loss": (TINY, ["distill.lr=1e30", "distill.max_grad_norm=null", "distill.epochs=3"], "non-finite", {}),
    "bad override value": (TINY, ["distill.epochs=many"], "distill.epochs: got 'many'", {}),
    "override without value": (TINY, ["distill.epochs"], "expected FIELD=VALUE", {}),
    "override index out of range": (TINY, ["distill.losses.4.weight=1"], "is not an index of a list of 1", {}),
    "missing recipe": (None, [], "recipe file not found", {}),
    # recipe files
    "recipe not utf-8": (b"\xff\xfeseed: 1\n", [], "not UTF-8 text (byte 0xff at offset 0)", {}),
    "recipe with NUL bytes": (b"seed: 1\n\x00\x00", [], "contains NUL bytes", {}),
    "empty recipe": ("", [], "the recipe is empty", {}),
    "recipe of comments only": ("# todo: write the recipe\n", [], "the recipe is empty", {}),
    "recipe is a scalar": ("hello\n", [], "expected a mapping of fields at the top level (data:, student:, ...), got str", {}),
    "recipe is a folder": ("DIR", [], "is a directory; give a recipe YAML file", {}),
    "duplicate top-level key": ("seed: 1\nseed: 2\n", [], "duplicate key 'seed' at line 2 (first at line 1)", {}),
    "duplicate nested key": ("distill:\n  epochs: 1\n  lr: 0.1\n  epochs: 2\n", [], "duplicate key 'epochs' at line 4", {}),
    "alias bomb": (ALIAS_BOMB, [], "YAML aliases expand to more than", {}),
    "self-referencing alias": ("seed: &a [*a]\n", [], "YAML aliases expand to more than", {}),
    "section is a number": ({**TINY, "distill": 5}, [], "recipe field distill: got 5", {}),
    "store k zero": ({**TINY, "store": {"path": "@store", "k": 0}}, [], "store.k: got 0", {}),
    # data files: csv
    "csv not utf-8": csv_case("a,b,label\n1,2,caf\xe9\n".encode("latin-1"), "is not UTF-8 text (byte 0xe9"),
    "csv header without rows": csv_case("a,b,label\n", 'has a header but no rows'),
    "csv with nan features": csv_case("a,b,label\n1,2,0\nnan,3,1\n" + GOOD_ROWS, "missing or non-finite values (nan/inf): column 'a' at data row 2;"),
    "csv with inf features": csv_case("a,b,label\n1,inf,0\n" + GOOD_ROWS + "2,-inf,1\n", "column 'b' at data rows 1, 42;"),
    "csv with an empty cell": csv_case("a,b,label\n" + GOOD_ROWS + "5,,1\n", "column 'b' at data row 41;"),
    "csv with one class": csv_case("a,b,label\n" + "1,2,0\n3,4,0\n" * 20, "has a single class ('0'); a classifier needs samples of at least 2 classes"),
    "csv with a missing label": csv_case("a,b,label\n" + GOOD_ROWS + "5,6,\n", "data.label_column: 'label' of"),
    "csv with fractional labels": csv_case("a,b,label\n" + GOOD_ROWS + "5,6,0.5\n", 'holds fractional or infinite numbers (e.g. 0.5 at data row 41)'),
    "csv of only the label column": csv_case("label\n" + "0\n1\n" * 20, "no feature columns besides the label column 'label'"),
    "csv too small to split": csv_case("a,b,label\n1,2,0\n3,4,1\n", 'cannot split 2 samples'),
    "csv path is a folder": ({**TINY, "data": {"name": "csv", "path": "@sub"}}, [], "is a directory; give a file", {"sub/x": ""}),
    "csv without a path": ({**TINY, "data": {"name": "csv"}}, [], "data.path: the csv dataset needs a file path", {}),
    # splits
    "omit every class": (digits(omit_classes=list(range(10))), [], "data.omit_classes: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] leaves 0 class(es)", {}),
    "omit all but one class": (digits(omit_classes=list(range(1, 10))), [], "leaves 1 class(es) to train on", {}),
    "train limit of one sample": (digits(train_limit=1), [], "data.train_limit: 1 training samples hold 1 class(es)", {}),
    "train limit misses test classes": (digits(train_limit=5), [], "without a training sample", {}),
    # data files: text, text-lm, qa, bbc-news
    "text with an empty text cell": data_case("text", "text,label\n" + TEXT_ROWS + ",a\n", "data.text_column: 'text' of"),
    "text with one class": data_case("text", "text,label\n" + "x,a\n" * 30, "has a single class ('a')"),
    "text jsonl malformed": data_case("text", '{"text": "a", "label": 1}\n{"text": \n', "cannot parse", "d.jsonl"),
    "text jsonl labels are lists": data_case("text", '{"text": "a", "label": [1]}\n{"text": "b", "label": [2]}\n', "holds lists or mappings", "d.jsonl"),
    "text test file with unseen labels": data_case("text", "text,label\n" + TEXT_ROWS, "data.test_path: labels ['zz']", test_path="@test.csv",
                                                   more={"test.csv": "text,label\nq,zz\n"}),
    "text-lm binary file": data_case("text-lm", b"\x89PNG\r\n\x1a\n\xff\xd8", "is not UTF-8 text (byte 0x89", "in.txt"),
    "text-lm empty file": data_case("text-lm", " \n\n", "is empty; a language-model dataset needs text", "in.txt"),
    "qa with an empty answer": data_case("qa", "question,answer\n" + "what?,yes\n" * 10 + "why?,\n", "data.label_column: 'answer' of",
                                         text_column="question", label_column="answer"),
    "qa too few rows": data_case("qa", "question,answer\nwhat?,yes\n", "too few to split", text_column="question", label_column="answer"),
    "bbc-news given a file": data_case("bbc-news", "x", "bbc-news is built in"),
    # compression stages and methods
    "gate against a missing teacher": ({**TINY, "method": "supervised", "compress": [{"kind": "quantize", "max_accuracy_drop": 0.1, "against": "teacher"}]}, [], "compress.0.against: the gate compares with the teacher", {}),
    "gate on an unknown metric": ({**TINY, "compress": [{"kind": "quantize", "max_f1_drop": 0.1}]}, [], "max_f1_drop: unknown field", {}),
    "compress after a method without stages": ({**TINY, "method": "mutual", "compress": [{"kind": "quantize"}]}, [], "method 'mutual' does not run compress stages", {}),
    # run directories
    "run dir is a file": (TINY, ["run_dir=@afile"], "is a file; give a folder for the run", {"afile": "x"}),
    "store path is a file": ({**TINY, "store": {"path": "@afile"}}, [], "store.path: ", {"afile": "x"}),
}
def materialize(tmp_path: Path, recipe, files: dict) -> Path:
    """Write the case's files and recipe into tmp_path; returns the recipe path."""
    for name, content in files.items():
        f = tmp_path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(content if isinstance(content, bytes) else content.encode())
    if recipe is None:
        return tmp_path / "absent.yaml"
    if recipe == "DIR":
        (tmp_path / "recipe_dir").mkdir()
        return tmp_path / "recipe_dir"
    if isinstance(recipe, dict):
        recipe = re.sub(r"'@([\w.\-/]+)'", lambda m: str(tmp_path / m.group(1)), yaml.safe_dump(recipe))
    p = tmp_path / "recipe.yaml"
    p.write_bytes(recipe if isinstance(recipe, bytes) else recipe.encode())
    return p


def run_one_line(args: list[str], capsys, code: int = 2) -> str:
    """main(args) exits with `code` and prints exactly one line, without a traceback."""
    assert main(args) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_the_table_is_large():
    assert len(CASES) >= 45


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_one_line_exit_2(name, tmp_path, capsys):
    recipe, overrides, needle, files = CASES[name]
    run_dir = tmp_path / "run"
    path = materialize(tmp_path, recipe, files)
    args = ["run", str(path), "--quiet", "--set", f"run_dir={run_dir}"]
    for o in overrides:
        args += ["--set", o.replace("@", f"{tmp_path}/")]
    err = run_one_line(args, capsys)
    assert needle in err, err
    if name == "nan loss":  # it got as far as training: the last good checkpoint is kept, no final metrics
        assert not (run_dir / "metrics.json").exists()
    else:
        assert not run_dir.exists()
    assert not list(tmp_path.glob(".*.lock")), "the run-dir lock is released"


@pytest.mark.parametrize("args, needle", [
    (["run"], "give a RECIPE file or --resume RUN_DIR"),
    (["run", "--resume", "/tmp"], "is not a kdforge run directory"),
    (["run", "r.yaml", "--no-such-flag"], "No such option"),
    (["frobnicate"], "No such command"),
])
def test_bad_cli_arguments(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_real_entry_point_prints_one_line_and_debug_shows_traceback(tmp_path):
    path = write(tmp_path, {**TINY, "distill": {"losses": [hint("nope")]}})
    r = kdforge_cli("run", str(path))
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: student has no module named 'nope'")
    assert len(r.stderr.strip().splitlines()) == 1
    r = kdforge_cli("run", str(path), "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_existing_run_dir_is_not_overwritten(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("keep")
    assert main(["run", str(write(tmp_path, TINY)), "--set", f"run_dir={run_dir}"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run_dir / "precious.txt").read_text() == "keep"


# ---------------------------------------------------------------- run-directory lock


def test_a_live_lock_refuses_a_second_run_even_with_force(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with run_dir_lock(run_dir):  # another live holder (a separate open file: flock conflicts within one process too)
        err = run_one_line(["run", str(materialize(tmp_path, TINY, {})), "--quiet", "--force", "--set", f"run_dir={run_dir}"], capsys)
    assert err.startswith(f"error: run_dir {run_dir} is in use by another kdforge run (pid {os.getpid()} ")
    assert not run_dir.exists()


def test_two_concurrent_runs_second_refuses_first_finishes_intact(tmp_path, capsys):
    """The first `kdforge run` (a real process) holds the lock; a second one into the same run_dir,
    even with --force, refuses with one line and the first run's directory comes out whole."""
    run_dir = tmp_path / "run"
    slow = {**TINY, "data": {"name": "digits", "train_limit": 600}, "run_dir": str(run_dir), "distill": {"epochs": 4, "losses": [{"kind": "kd"}]},
            "teacher": {"name": "mlp", "hidden": [64], "train": {"epochs": 4}}}  # a few seconds of training
    first = subprocess.Popen([sys.executable, "-m", "kdforge", "run", str(write(tmp_path, slow)), "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "KDFORGE_DEVICE": "cpu"})
    try:
        deadline = time.monotonic() + 120
        while not lock_path(run_dir).exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        second = tmp_path / "second"
        second.mkdir()
        err = run_one_line(["run", str(write(second, {**TINY, "seed": 7})), "--quiet", "--force", "--set", f"run_dir={run_dir}"], capsys)
        assert f"run_dir {run_dir} is in use by another kdforge run (pid {first.pid} " in err
        assert first.poll() is None, "the first run was still going when the second was refused"
        out, errs = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, errs
    assert "student test accuracy" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["seed"] == 0 and yaml.safe_load((run_dir / "recipe.yaml").read_text())["seed"] == 0  # not the second's
    assert (run_dir / "report.md").exists() and not lock_path(run_dir).exists()


# ---------------------------------------------------------------- teacher stores


@pytest.fixture(scope="module")
def teacher_store(tmp_path_factory):
    """A k=all store written by `kdforge cache-teacher` from a teacher checkpoint, plus a second checkpoint."""
    from safetensors.torch import save_model

    from kdforge.config import ModelConfig
    from kdforge.models.build import build_model

    d = tmp_path_factory.mktemp("store")
    for seed in (0, 1):
        save_model(build_model(ModelConfig(name="mlp", hidden=[16]), (1, 8, 8), 10, "teacher", seed), str(d / f"t{seed}.safetensors"))
    recipe = {**TINY, "teacher": {"name": "mlp", "hidden": [16], "checkpoint": str(d / "t0.safetensors")},
              "store": {"path": str(d / "store"), "shard_size": 64, "k": "all"}}
    assert main(["cache-teacher", str(write(d, recipe))]) == 0
    return d, recipe


def _break_shard(store: Path) -> None:
    f = store / "shard-00001" / "values.npy"
    f.write_bytes(f.read_bytes()[:200])


def _break_meta(store: Path) -> None:
    (store / "meta.json").write_text('{"n": 200, "k": ')


STORE_CASES = {
    "store with a truncated shard": (_break_shard, {}, "shard-00001/values.npy is truncated or unreadable"),
    "store missing a shard": (lambda s: shutil.rmtree(s / "shard-00002"), {}, "shard-00002/values.npy is missing"),
    "store with a corrupt meta.json": (_break_meta, {}, "meta.json is unreadable (JSONDecodeError"),
    "store written with another k": (None, {"k": 3}, "k (store all, now 3) differ"),
    "store of a foreign teacher": (None, {"teacher": "t1"}, "teacher (store "),
    "store path is not a store": (lambda s: (shutil.rmtree(s), s.mkdir(), (s / "x").write_text("")), {}, "is a folder with other files, not a teacher store"),
}


@pytest.mark.parametrize("name", list(STORE_CASES))
def test_bad_teacher_store_one_line_before_the_run_dir(name, teacher_store, tmp_path, capsys):
    src, recipe = teacher_store
    breaker, change, needle = STORE_CASES[name]
    store = tmp_path / "store"
    shutil.copytree(src / "store", store)
    if breaker is not None:
        breaker(store)
    recipe = {**recipe, "store": {**recipe["store"], "path": str(store), **{k: v for k, v in change.items() if k == "k"}}}
    if "teacher" in change:
        recipe["teacher"] = {**recipe["teacher"], "checkpoint": str(src / f"{change['teacher']}.safetensors")}
    err = run_one_line(["run", str(write(tmp_path, recipe)), "--quiet", "--set", f"run_dir={tmp_path / 'run'}"], capsys)
    assert needle in err and "cache-teacher" in err, err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- model folders


@pytest.fixture(scope="module")
def model_folders(tiny_bert_dir, tmp_path_factory):  # noqa: F811
    """The tiny BERT classifier folder (3 classes) and broken copies of it."""
    d = tmp_path_factory.mktemp("folders")
    shutil.copytree(tiny_bert_dir, d / "no-config")
    (d / "no-config" / "config.json").unlink()
    (d / "no-tokenizer").mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert_dir / f, d / "no-tokenizer" / f)
    shutil.copytree(tiny_bert_dir, d / "truncated")
    w = d / "truncated" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    (d / "data.csv").write_text("text,label\n" + "".join(f"text {i},{'abc'[i % 3]}\n" for i in range(45)))
    return {"good": tiny_bert_dir, **{p.name: p for p in d.iterdir()}}


def hf_recipe(teacher: dict | None = None, student: dict | None = None, tokenizer: str = "good") -> dict:
    return {"data": {"name": "text", "path": "data.csv", "tokenizer": tokenizer, "max_length": 16},
            "teacher": {"name": "hf", "hf": "good", **(teacher or {})}, "student": {"name": "hf", "hf": "good", "layers": [0], **(student or {})},
            "distill": {"epochs": 1}}


FOLDER_CASES = {
    "model folder without config.json": (hf_recipe({"hf": "no-config"}), "no-config is not a model folder (no config.json)"),
    "model folder that does not exist": (hf_recipe({"hf": "absent"}), "absent is not a model folder (not found)"),
    "model folder that is a file": (hf_recipe({"hf": "data.csv"}), "data.csv is not a model folder (a file)"),
    "model folder with truncated weights": (hf_recipe({"hf": "truncated"}), "cannot load"),
    "tokenizer folder without a tokenizer": (hf_recipe(tokenizer="no-tokenizer"), "data.tokenizer: cannot load a tokenizer"),
    "causal LM task for a classifier method": (hf_recipe({"task": "causal_lm"}), "teacher.task: method 'standard' distils classifiers"),
    "embedding task for the student": (hf_recipe(student={"task": "embed"}), "student.task: method 'standard' distils classifiers"),
    "mlp student on token ids": (hf_recipe(student={"name": "mlp", "hf": None, "layers": None, "hidden": [8]}), "student: cannot run on a batch of train inputs x"),
}


@pytest.mark.parametrize("name", list(FOLDER_CASES))
def test_bad_model_folder_one_line(name, model_folders, tmp_path, capsys):
    recipe, needle = FOLDER_CASES[name]
    text = yaml.safe_dump(recipe)
    for key in ("good", "no-config", "no-tokenizer", "truncated", "data.csv"):
        text = re.sub(rf"(: ){re.escape(key)}\n", lambda m: f"{m.group(1)}{model_folders.get(key, tmp_path / key)}\n", text)
    text = text.replace(": absent\n", f": {tmp_path / 'absent'}\n")
    err = run_one_line(["run", str(write(tmp_path, text)), "--quiet", "--set", f"run_dir={tmp_path / 'run'}"], capsys)
    assert needle in err, err
    assert not (tmp_path / "run").exists()


def test_compress_on_a_supervised_run_gate_without_teacher_and_a_held_lock(tmp_path, capsys):
    """`kdforge compress` on a supervised run: a gate against the teacher the run lacks, and a run
    directory another live run holds, are both refused with one line before compress/ exists."""
    run_dir = tmp_path / "run"
    assert main(["run", str(write(tmp_path, {**TINY, "method": "supervised"})), "--quiet", "--set", f"run_dir={run_dir}"]) == 0
    capsys.readouterr()
    err = run_one_line(["compress", str(run_dir), "--quiet", "--stage", "{kind: quantize, max_accuracy_drop: 0.1, against: teacher}"], capsys)
    assert "compress 00-quantize: the gate compares with the teacher, but this run has no teacher model" in err
    with run_dir_lock(run_dir):
        err = run_one_line(["compress", str(run_dir), "--quiet", "--force", "--stage", "{kind: quantize}"], capsys)
    assert "is in use by another kdforge run" in err
    assert not (run_dir / "compress").exists()
