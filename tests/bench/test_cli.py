"""`kdforge bench` on an ONNX artifact; bad arguments are one-line errors with exit code 2."""
import json

from kdforge.cli import main
from kdforge.compress import export


def test_bench_onnx_writes_json(tmp_path, digits, digits_mlp, capsys):
    man = export(digits_mlp, tmp_path / "o", ["onnx-int8"], example_inputs=digits.val.x[:4])
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
