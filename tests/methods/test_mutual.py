"""Deep mutual learning: each peer's loss is CE + the mean T²·KL to the other peers, detached."""
import pytest
import torch
import torch.nn.functional as F

from kdforge.cli import main
from kdforge.config import MutualConfig
from kdforge.errors import KDForgeError
from kdforge.losses.multi import mutual_learning_losses
from kdforge.methods.mutual import MutualLearning
from kdforge.models import MLP


def test_mutual_loss_equals_its_formula():
    torch.manual_seed(0)
    z = [torch.randn(5, 4) for _ in range(3)]
    y = torch.randint(0, 4, (5,))
    T, w = 2.0, 0.7
    out = mutual_learning_losses(z, y, temperature=T, weight=w)
    for k in range(3):
        kl = sum(F.kl_div(F.log_softmax(z[k] / T, -1), F.softmax(z[j] / T, -1), reduction="batchmean") * T**2
                 for j in range(3) if j != k) / 2
        assert out[f"peer{k}_kl"].item() == pytest.approx(w * kl.item(), rel=1e-5)
        assert out[f"peer{k}_ce"].item() == pytest.approx(F.cross_entropy(z[k], y).item(), rel=1e-6)


def test_identical_peers_have_zero_kl_and_each_loss_moves_only_its_peer():
    z0 = torch.randn(4, 3, requires_grad=True)
    z1 = z0.detach().clone().requires_grad_(True)
    out = mutual_learning_losses([z0, z1], torch.tensor([0, 1, 2, 0]))
    assert out["peer0_kl"].item() == pytest.approx(0.0, abs=1e-6)
    (out["peer0_kl"] + out["peer0_ce"]).backward()
    assert z0.grad is not None and z1.grad is None  # the other peer's prediction is a detached target


def test_step_trains_every_peer():
    torch.manual_seed(0)
    peers = [MLP((6,), 3, hidden=[8]), MLP((6,), 3, hidden=[16])]
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    m = MutualLearning(peers, None, None, {"x": x[:2]}, MutualConfig())
    assert m.student is peers[0] and set(m.parameters()) == set(peers[0].parameters()) | set(peers[1].parameters())
    sum(m.step({"x": x, "y": y}).values()).backward()
    assert all(p.grad is not None for peer in peers for p in peer.parameters())


def test_fewer_than_two_peers_is_an_error(tmp_path):
    with pytest.raises(KDForgeError, match="at least 2 peers"):
        MutualLearning(MLP((6,), 3, hidden=[8]), None, None, None, MutualConfig())
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: mutual\nmutual: {peers: [{name: mlp, hidden: [8]}]}\n")
    assert main(["run", str(recipe), "--set", f"run_dir={tmp_path / 'run'}"]) == 2
    assert not (tmp_path / "run").exists()


def test_mutual_recipe_runs_and_tests_every_peer(tmp_path):
    import json

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"method: mutual\nrun_dir: {tmp_path / 'run'}\ndata: {{name: digits, train_limit: 300}}\n"
                      "mutual: {peers: [{name: mlp, hidden: [8]}, {name: mlp, hidden: [16]}]}\ndistill: {epochs: 2}\n")
    assert main(["run", str(recipe), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert set(metrics["models"]) == {"peer0", "peer1"} and metrics["student"] == metrics["models"]["peer0"]
    line = json.loads((tmp_path / "run/peers/metrics.jsonl").read_text().splitlines()[-1])
    assert {"val/peer0_accuracy", "val/peer1_accuracy", "train/peer1_kl"} <= set(line)
