"""Evaluation runs on the model's own device unless told otherwise (no hidden "cpu" default)."""
import torch

from kdforge.data.base import ArrayDataset
from kdforge.train import evaluate
from kdforge.train.evaluate import classification_metrics, model_device


class Recorder(torch.nn.Linear):
    seen: list = []

    def forward(self, x):
        Recorder.seen.append(x.device)
        return super().forward(x)


def test_inputs_follow_the_model(monkeypatch):
    model = Recorder(3, 2)
    data = ArrayDataset(torch.randn(10, 3), torch.randint(0, 2, (10,)))
    # pretend the model lives elsewhere: predict must send the inputs to model_device(model), not to "cpu"
    monkeypatch.setattr(evaluate, "model_device", lambda m: torch.device("meta"))
    try:
        classification_metrics(model, data)
    except Exception:
        pass  # the meta device cannot compute; what matters is where the batch was sent
    assert Recorder.seen and Recorder.seen[-1].type == "meta"


def test_model_device_of_an_empty_module_is_cpu():
    assert model_device(torch.nn.Identity()) == torch.device("cpu")
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
