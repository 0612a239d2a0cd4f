"""Checkpoints carry the CPU and (when present) every CUDA generator, so a GPU run resumes like a CPU run."""
import torch

from kdforge.train import checkpoint as ck


def test_cpu_round_trip_through_a_checkpoint_file(tmp_path):
    model = torch.nn.Linear(2, 2)
    torch.manual_seed(3)
    ck.save_checkpoint(tmp_path / "c", model, {"rng": ck.rng_state()})
    want = torch.rand(5)
    torch.manual_seed(99)
    ck.restore_rng(ck.load_checkpoint(tmp_path / "c", model)["rng"])
    assert torch.equal(torch.rand(5), want)


def test_cuda_states_are_saved_and_restored(tmp_path, monkeypatch):
    gpu_states = [torch.arange(8, dtype=torch.uint8), torch.arange(8, 16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in gpu_states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.extend(states))
    model = torch.nn.Linear(2, 2)
    ck.save_checkpoint(tmp_path / "c", model, {"rng": ck.rng_state()})  # saved with weights_only-safe types
    ck.restore_rng(ck.load_checkpoint(tmp_path / "c", model)["rng"])
    assert len(restored) == 2 and all(torch.equal(a, b) for a, b in zip(restored, gpu_states))


def test_older_cpu_only_checkpoints_still_restore():
    torch.manual_seed(5)
    saved = torch.get_rng_state()
    want = torch.rand(3)
    ck.restore_rng(saved)
    assert torch.equal(torch.rand(3), want)
