"""The progress bar's throughput postfix: tokens/s from batch shapes, teacher work from its counters."""
import torch

from kdforge.train.progress import Throughput


class FakeTeacher:
    cached = False
    samples, calls = 0, 0


def test_throughput_counts_tokens_and_teacher_work(monkeypatch):
    clock = iter([100.0, 102.0, 103.0])
    monkeypatch.setattr("kdforge.train.progress.time.perf_counter", lambda: next(clock))
    t = FakeTeacher()
    thr = Throughput(t)
    for _ in range(4):
        thr.add({"input_ids": torch.zeros(8, 64, dtype=torch.long)})
        t.samples += 8
    post = thr.postfix()
    assert post == {"tok/s": f"{4 * 8 * 64 / 2.0:,.0f}", "teacher": "32 fwd samples"}
    t.cached, t.calls = True, 4
    assert Throughput(t).postfix() == {"teacher": "4 store reads"}  # no tokens counted yet: no rate shown
