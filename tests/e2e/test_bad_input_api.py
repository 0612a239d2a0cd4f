"""kdforge.distill with bad inputs: one KDForgeError line, before any training or folder is written.
(The recipe, data, store, folder and CLI cases are in test_bad_input.py.)"""
import pytest
import torch
from torch import nn

import kdforge
from kdforge.errors import KDForgeError


class Pairs(torch.utils.data.Dataset):
    """(x, y) pairs; `shape_at` gives sample i its own input shape (a dataset that yields the wrong shape)."""

    def __init__(self, n=40, width=6, classes=3, shape_at=None, y_fn=None):
        self.n, self.width, self.classes, self.shape_at = n, width, classes, shape_at or {}
        self.y_fn = y_fn or (lambda i: torch.tensor(i % classes))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.ones(self.shape_at.get(i, (self.width,))) * i / self.n, self.y_fn(i)


class Returns(nn.Module):
    """A linear classifier whose forward wraps its logits in a dict, a tuple or nothing."""

    def __init__(self, how=None, width=6, classes=3):
        super().__init__()
        self.lin, self.how = nn.Linear(width, classes), how

    def forward(self, x):
        z = self.lin(x)
        return {"dict": lambda: {"logits": z}, "tuple": lambda: (z, x), "flat": lambda: z.sum(-1)}.get(self.how, lambda: z)()


API_CASES = {
    "every 5th sample of another shape": (dict(train=Pairs(shape_at={i: (5,) for i in range(4, 40, 5)})),
                                          "train: samples cannot be batched: sample 4 has input shape (5,), sample 0 (6,)"),
    "inputs the student cannot take": (dict(train=Pairs(width=4), val=Pairs(width=4)), "student: cannot run on a batch of train inputs x (14, 4) float32"),
    "student returns a dict": (dict(student=Returns("dict")), "student: forward must return a logits tensor (B, C), got a dict (keys logits)"),
    "student returns a tuple": (dict(student=Returns("tuple")), "got a tuple"),
    "student returns one number per sample": (dict(student=Returns("flat")), "got (14,) for x (14, 6)"),
    "teacher cannot take the inputs": (dict(teacher=Returns(width=5)), "teacher: cannot run on a batch"),
    "one-hot float labels": (dict(train=Pairs(y_fn=lambda i: torch.eye(3)[i % 3])), "train: labels y must be integer class ids"),
    "labels beyond the classes": (dict(val=Pairs(y_fn=lambda i: torch.tensor(i % 5))), "labels [3, 4] are outside the student's 3 classes"),
    "empty training set": (dict(train=Pairs(n=0)), "train: the dataset is empty"),
    "val of another shape": (dict(val=Pairs(width=7)), "val: inputs have shape (7,), train inputs (6,)"),
    "bad config": (dict(config={"epochs": 0}), "config field epochs"),
    "RGB images for a one-channel CNN": (dict(train=Pairs(shape_at={i: (3, 8, 8) for i in range(40)}),
                                              val=Pairs(shape_at={i: (3, 8, 8) for i in range(40)}),
                                              student=nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(3))),
                                         "student: cannot run on a batch of train inputs x (14, 3, 8, 8) float32"),
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_api_bad_input_one_line_before_training(name, tmp_path):
    kwargs, needle = API_CASES[name]
    args = dict(teacher=Returns(), student=Returns(), train=Pairs(), val=Pairs(), config={"epochs": 1}) | kwargs
    with pytest.raises(KDForgeError) as e:
        kdforge.distill(**args, run_dir=tmp_path / "run")
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not (tmp_path / "run").exists()
