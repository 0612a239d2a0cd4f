"""The reasoning workflow: the teacher's kept generations are the training set, answers are scored by exact match."""
import json

import yaml

import kdforge.workflows.reasoning as reasoning
from kdforge.cli import main
from tests.hf_tiny import tiny_llama_dir  # noqa: F401  (fixture)


def test_reasoning_recipe_trains_on_kept_teacher_rationales_and_reports_answer_accuracy(tiny_llama_dir, tmp_path, monkeypatch):  # noqa: F811
    rows = [{"question": f"{i}+0", "answer": "2" if i % 4 else "3"} for i in range(20)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a random tiny model cannot do arithmetic: every model "answers" 2 (wrong where the label is 3), asked for
    # the answer alone ("[answer]" prefix: the student) or for a rationale (the teacher)
    monkeypatch.setattr(reasoning, "greedy_text", lambda model, tok, prompts, n, ctx: [
        "2" if p.startswith(reasoning.ANSWER) else "add. Answer: 2" for p in prompts])
    hf = {"name": "hf", "hf": str(tiny_llama_dir), "task": "causal_lm"}
    recipe = {"method": "reasoning", "run_dir": str(tmp_path / "run"),
              "data": {"name": "qa", "path": str(tmp_path / "qa.jsonl"), "text_column": "question", "label_column": "answer",
                       "val_fraction": 0.2, "test_fraction": 0.2, "max_length": 24},
              "teacher": hf, "student": {**hf, "layers": [0]},
              "distill": {"epochs": 1, "batch_size": 4, "lm": {"template": "q: {question}\n", "max_new_tokens": 3}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(tmp_path / "r.yaml"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    train = sum(1 for line in (tmp_path / "run/student/metrics.jsonl").read_text().splitlines() if "train/answer" in line)
    assert train >= 1 and metrics["method"] == "reasoning"
    assert metrics["student"]["accuracy"] == metrics["teacher"]["accuracy"] > 0  # both scored on the same test answers
