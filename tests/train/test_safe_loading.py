"""Loading never executes code: pickled payloads are refused before anything runs."""
import hashlib
import json
import os
import pickle

import pytest
import torch

from kdforge.config import ModelConfig
from kdforge.errors import KDForgeError
from kdforge.models import MLP
from kdforge.models.build import build_model
from kdforge.train.checkpoint import load_checkpoint, save_checkpoint


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_state_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "last"
    save_checkpoint(ckpt, MLP((4,), 2, hidden=[3]), {"n": 1})
    (ckpt / "state.pt").write_bytes(pickle.dumps(Payload(marker)))
    meta = json.loads((ckpt / "meta.json").read_text())  # an attacker can fix the checksum too
    meta["state.pt"] = hashlib.sha256((ckpt / "state.pt").read_bytes()).hexdigest()
    (ckpt / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(KDForgeError, match="refusing to load"):
        load_checkpoint(ckpt, MLP((4,), 2, hidden=[3]))
    assert not marker.exists()


def test_pickled_weights_file_is_refused_as_teacher_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "teacher.pt"
    evil.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(KDForgeError, match="not a .safetensors file"):
        build_model(ModelConfig(name="mlp", hidden=[8], checkpoint=str(evil)), (4,), 2, "teacher", 0)
    assert not marker.exists()


def test_weights_that_do_not_fit_name_the_role(tmp_path):
    from safetensors.torch import save_model

    save_model(MLP((4,), 3, hidden=[8]), str(tmp_path / "t.safetensors"))
    with pytest.raises(KDForgeError, match="teacher.checkpoint: weights in .* do not fit the teacher model"):
        build_model(ModelConfig(name="mlp", hidden=[8], checkpoint=str(tmp_path / "t.safetensors")), (4,), 2, "teacher", 0)
    ok = build_model(ModelConfig(name="mlp", hidden=[8], checkpoint=str(tmp_path / "t.safetensors")), (4,), 3, "teacher", 0)
    assert isinstance(ok, torch.nn.Module)
