"""The trackers log what the run logs: a small recipe's TensorBoard events (and W&B offline run, when wandb is
installed) read back equal the student stage's metrics.jsonl, epoch by epoch."""
import json
import struct
from pathlib import Path

import pytest

from kdforge.recipe_file import parse_recipe
from kdforge.workflows import run_recipe


def _run(tmp_path: Path, tracker: str) -> tuple[Path, list[dict]]:
    raw = {"run_dir": str(tmp_path / "run"), "data": {"name": "digits"},
           "teacher": {"name": "mlp", "hidden": [32], "train": {"epochs": 1, "tracker": "none"}},
           "student": {"name": "mlp", "hidden": [8]},
           "distill": {"epochs": 3, "tracker": tracker, "log_every": 7,  # running train losses between epoch ends
                       "losses": [{"kind": "kd", "temperature": 4.0, "alpha": 0.8}]}}
    run_recipe(parse_recipe(raw), quiet=True)
    stage = tmp_path / "run" / "student"
    records = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    return stage, records


def _assert_matches(logged: dict[str, dict[int, float]], records: list[dict]) -> None:
    """`logged`: tag -> step -> the last value logged at that step; every train/ and val/ scalar of every epoch
    is there at the epoch's step, and no other tag is."""
    names = {k for r in records for k in r if k.startswith(("train/", "val/"))}
    assert set(logged) == names
    for r in records:
        for name in names:
            assert logged[name][r["step"]] == pytest.approx(r[name], rel=1e-6), (name, r["epoch"])
    for name in (n for n in names if n.startswith("val/")):  # validation runs once per epoch: nothing else logged
        assert sorted(logged[name]) == [r["step"] for r in records]


def test_tensorboard_events_equal_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stage, records = _run(tmp_path, "tensorboard")
    (logdir,) = (stage / "tensorboard").iterdir()
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    logged = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    _assert_matches(logged, records)


def _wandb_records(path: Path):
    """The records of a W&B offline run file: a 7-byte header, then LevelDB-log records (crc, length, type)
    in 32 KiB blocks, each record's payload a wandb_internal Record."""
    from wandb.proto import wandb_internal_pb2

    data, pos, payload = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a record header is padding
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        payload, pos = payload + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            payload = b""
            yield record


def test_wandb_offline_run_equals_metrics_jsonl(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.chdir(tmp_path)  # anything written beside the cwd would show up here

    stage, records = _run(tmp_path, "wandb")
    (run_file,) = (stage / "wandb").glob("offline-run-*/run-*.wandb")  # the run's files live in the stage folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    logged: dict[str, dict[int, float]] = {}
    for record in _wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for key, value in items.items():
                if not key.startswith("_"):  # _step, _runtime, _timestamp: W&B's own
                    logged.setdefault(key, {})[items["_step"]] = value
    _assert_matches(logged, records)
