"""The prune-then-distill chat recipe end to end on a tiny local Llama: teacher correction, Minitron
pruning, a packed store written from the corrected teacher, KD, and HF + ONNX export."""
import json
from pathlib import Path

import pytest

from kdforge.cli import main
from kdforge.data import load_data
from kdforge.errors import KDForgeError
from kdforge.models.hf import load_hf
from kdforge.recipe_file import parse_recipe
from kdforge.store.fingerprint import hash_module
from kdforge.train.checkpoint import load_weights
from kdforge.train.lm_metrics import perplexity_metrics
from kdforge.workflows import run_recipe
from kdforge.workflows.teacher_store import cache_teacher_for
from tests.hf_tiny import tiny_chat_llama_dir  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]


def _raw(tmp_path, folder):
    rows = [{"question": f"what is {i} plus {i}?", "answer": f"it is {2 * i}."} for i in range(48)]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = {"name": "chat", "path": str(tmp_path / "chat.jsonl"), "tokenizer": str(folder), "max_length": 64,
            "prompt_column": "question", "completion_column": "answer", "val_fraction": 0.1, "test_fraction": 0.1}
    return {"seed": 0, "run_dir": str(tmp_path / "run"), "method": "token_kd", "data": data,
            "teacher": {"name": "hf", "hf": str(folder), "task": "causal_lm", "correct": True,
                        "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3}},
            "student": {"name": "hf", "hf": str(folder), "task": "causal_lm", "init": "prune",
                        "prune": {"hidden_size": 24, "intermediate_size": 32, "num_kv_groups": 1, "num_layers": 2, "samples": 16}},
            "store": {"path": str(tmp_path / "store"), "k": 8, "sampling": "random", "weights": "packed"},
            "distill": {"epochs": 1, "batch_size": 8, "losses": [{"kind": "kd", "alpha": 0.5, "temperature": 1.0}]},
            "compress": [{"kind": "export", "formats": ["hf", "onnx"]}]}


def test_prune_distill_chat_recipe_end_to_end(tmp_path, tiny_chat_llama_dir):  # noqa: F811
    raw = _raw(tmp_path, tiny_chat_llama_dir)
    recipe = parse_recipe(raw)
    res = run_recipe(recipe, quiet=True)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pruning"]["sizes"] == {"hidden_size": 24, "intermediate_size": 32, "num_heads": 2, "num_kv_groups": 1,
                                           "num_layers": 2, "head_dim": 8}
    assert metrics["student"]["params"] < metrics["teacher"]["params"] / 2
    # teacher correction: trained, recorded, and better on held-out answers than the teacher as shipped
    fix = metrics["teacher_correction"]
    assert fix["steps"] > 0 and metrics["teacher"]["perplexity"] < fix["test_before"]["perplexity"]
    # the store was written from the corrected teacher (its weights' hash), not from the one on disk
    corrected = load_hf(str(tiny_chat_llama_dir), "causal_lm")
    shipped = hash_module(corrected)
    load_weights(run / "teacher/checkpoints/best", corrected)
    store_teacher = json.loads((tmp_path / "store/meta.json").read_text())["fingerprint"]["teacher"]
    assert store_teacher == hash_module(corrected) != shipped
    # the exported HF folder is the student: same held-out perplexity; ONNX matches PyTorch
    export = res["exports"][0]
    data = load_data(recipe.data, recipe.seed)
    again = perplexity_metrics(load_hf(export["files"]["hf"], "causal_lm"), data.test)
    assert again["perplexity"] == pytest.approx(metrics["student"]["perplexity"], rel=1e-5)
    assert export["onnx_max_abs_diff"] < 1e-4 and (run / "compress/00-export/artifacts/model.onnx").is_file()
    report = (run / "report.md").read_text()
    assert "Teacher corrected" in report and "pruned by importance" in report


def test_bad_prune_sizes_fail_before_the_run_directory_and_cache_teacher_refuses_correction(tmp_path, tiny_chat_llama_dir):  # noqa: F811
    raw = _raw(tmp_path, tiny_chat_llama_dir)
    raw["student"]["prune"]["num_heads"] = 3
    with pytest.raises(KDForgeError, match="student.prune.num_heads: 3 heads in 1 KV groups is more than the 2 query heads each group has"):
        run_recipe(parse_recipe(raw), quiet=True)
    assert not (tmp_path / "run").exists()
    with pytest.raises(KDForgeError, match="teacher.correct: the run fine-tunes the teacher first"):
        cache_teacher_for(parse_recipe(_raw(tmp_path, tiny_chat_llama_dir)))


def test_shipped_prune_distill_recipe_runs_on_a_tiny_model(tmp_path, tiny_chat_llama_dir):  # noqa: F811
    """recipes/smollm2-prune-distill.yaml as shipped, with the tiny model and a small chat file in place of
    SmolLM2 and GSM8K (and prune sizes that fit the tiny model)."""
    rows = [{"question": f"what is {i} plus {i}?", "answer": f"it is {2 * i}."} for i in range(40)]
    for name in ("train", "test"):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    sets = {"run_dir": tmp_path / "run", "data.path": tmp_path / "train.jsonl", "data.test_path": tmp_path / "test.jsonl",
            "data.tokenizer": tiny_chat_llama_dir, "data.max_length": 64, "data.val_fraction": 0.1,
            "teacher.hf": tiny_chat_llama_dir, "student.hf": tiny_chat_llama_dir, "student.prune.intermediate_size": 32, "store.path": tmp_path / "store", "distill.epochs": 1}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    assert main(["run", str(ROOT / "recipes/smollm2-prune-distill.yaml"), "--quiet", *args]) == 0
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["pruning"]["sizes"]["intermediate_size"] == 32 and "teacher_correction" in metrics
    assert (tmp_path / "run/compress/00-export/artifacts/hf/config.json").is_file()
    assert (tmp_path / "run/compress/00-export/artifacts/model.onnx").is_file()
