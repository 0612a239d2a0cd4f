"""`kdforge bench` on an ONNX artifact; bad arguments are one-line errors with exit code 2."""
import json

from kdforge.cli import main
from kdforge.compress import Export, export


def test_bench_onnx_writes_json(tmp_path, digits, digits_mlp, capsys):
    man = export(digits_mlp, tmp_path / "o", Export(["onnx-int8"]), example_inputs=digits.val.x[:4])
    out = tmp_path / "bench.json"
    assert main(["bench", man["files"]["onnx-int8"], "--repeats", "2", "--batch-sizes", "1,8", "--json", str(out)]) == 0
    m = json.loads(out.read_text())[man["files"]["onnx-int8"]]
    assert set(m["latency_ms"]) == {"1", "8"} and m["threads"] == 1 and m["accuracy"] > 0.85
    assert "accuracy" in capsys.readouterr().out


def test_bench_bad_arguments(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("x")
    assert main(["bench", str(tmp_path / "x.txt")]) == 2
    assert "not an .onnx file" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "x.txt"), "--batch-sizes", "0,a"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--batch-sizes" in err


def test_bench_several_artifacts_recommends_one(tmp_path, digits, digits_mlp, capsys):
    man = export(digits_mlp, tmp_path / "o", Export(["onnx", "onnx-opt", "onnx-opt-int8"]), example_inputs=digits.val.x[:4])
    files = [man["files"][f] for f in ("onnx", "onnx-opt", "onnx-opt-int8")]
    out = tmp_path / "bench.json"
    assert main(["bench", *files, "--repeats", "3", "--batch-sizes", "1,8", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "intra_op_num_threads=1" in text and "ORT_ENABLE_ALL" in text
    assert "Recommended for latency" in text and "Recommended for throughput" in text
    measured = json.loads(out.read_text())
    ok = [f for f in files if measured[f]["accuracy"] >= measured[files[0]]["accuracy"] - 0.005]
    fastest = min(ok, key=lambda f: measured[f]["latency_ms"]["8"]["p50"])
    assert f"(lowest p50 at batch 8, accuracy within 0.5 points of {files[0]}): **{fastest}**" in text
