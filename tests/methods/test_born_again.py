"""Born-again networks: generation 2 starts from its own initialisation and learns from generation 1."""
import json

import torch
from safetensors.torch import load_file

from kdforge.cli import main
from kdforge.config import ModelConfig
from kdforge.methods.standard import StandardKD
from kdforge.models.build import build_model


def test_generation_two_is_fresh_and_learns_from_generation_one(tmp_path, monkeypatch):
    seen = []
    original = StandardKD.__init__

    def spy(self, student, teacher, cfg, probe):
        seen.append(({k: v.clone() for k, v in student.state_dict().items()},
                     {k: v.clone() for k, v in teacher.state_dict().items()}))
        original(self, student, teacher, cfg, probe)

    monkeypatch.setattr(StandardKD, "__init__", spy)  # born_again's registration builds StandardKD
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"method: born_again\nrun_dir: {tmp_path / 'run'}\ndata: {{name: digits, train_limit: 300}}\n"
                      "student: {name: mlp, hidden: [16]}\nborn_again: {generations: 2}\n"
                      "distill: {epochs: 2, losses: [{kind: kd, temperature: 4.0, alpha: 0.5}]}\n")
    assert main(["run", str(recipe), "--quiet"]) == 0
    assert len(seen) == 2  # the check before the run, then generation 2's stage (generation 1 learns from the labels)
    gen2_init, gen2_teacher = seen[1]
    gen1_init = build_model(ModelConfig(name="mlp", hidden=[16]), (1, 8, 8), 10, "student", 0 + 1).state_dict()
    gen1_best = load_file(str(tmp_path / "run/gen1/checkpoints/best/model.safetensors"))
    gen1_best = {k.removeprefix("student."): v for k, v in gen1_best.items()}
    # the teacher of generation 2 is generation 1 as trained (its best epoch)...
    assert all(torch.equal(gen2_teacher[k], gen1_best[k]) for k in gen2_teacher)
    # ...and generation 2 does not start from generation 1's weights, trained or initial
    assert not torch.equal(gen2_init["head.weight"], gen1_best["head.weight"])
    assert not torch.equal(gen2_init["head.weight"], gen1_init["head.weight"])
    assert not torch.equal(gen1_init["head.weight"], gen1_best["head.weight"])  # generation 1 did train
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert {"gen1", "gen2", "ensemble"} <= set(metrics["models"]) and set(metrics["generations"]) == {"gen1", "gen2"}
    assert (tmp_path / "run/gen2/metrics.jsonl").exists()
