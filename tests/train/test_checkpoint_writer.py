"""Checkpoints written on a worker thread: what is written is what was submitted, the newest
checkpoint of a folder wins, and a failed write surfaces in the training thread."""
import pytest
import torch
from torch import nn

from kdforge.train.checkpoint import CheckpointWriter, load_checkpoint


def test_writes_the_submitted_snapshot_and_the_newest_per_folder(tmp_path):
    model = nn.Linear(3, 2)
    writer = CheckpointWriter()
    for step in range(5):
        with torch.no_grad():
            model.weight.fill_(float(step))
        writer.submit(tmp_path / "last", model, {"step": step})
        with torch.no_grad():
            model.weight.fill_(-1.0)  # changed right after submitting: must not reach the file
    writer.close()
    fresh = nn.Linear(3, 2)
    state = load_checkpoint(tmp_path / "last", fresh)
    assert state["step"] == 4 and torch.all(fresh.weight == 4.0)


def test_tied_weights_round_trip(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4, bias=False)
            self.b = nn.Linear(4, 4, bias=False)
            self.b.weight = self.a.weight

    model, writer = Tied(), CheckpointWriter()
    writer.submit(tmp_path / "c", model, {})
    writer.close()
    other = Tied()
    load_checkpoint(tmp_path / "c", other)
    assert torch.equal(other.a.weight, model.a.weight) and other.b.weight is other.a.weight


def test_a_failed_write_is_raised_to_the_caller(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    writer = CheckpointWriter()
    writer.submit(tmp_path / "file" / "ckpt", nn.Linear(2, 2), {})
    with pytest.raises(OSError):
        writer.wait()
    writer.close()
