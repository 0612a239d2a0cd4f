"""report.md / report.html from a finished run directory, and the HTML rendered in headless Chromium."""
import base64
import io
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from kdforge.bench.report import soft_target_similarity, write_report
from kdforge.rundir import write_json, write_jsonl


def fake_run(tmp: Path) -> Path:
    run = tmp / "run"
    lat = {"1": {"p50": 0.1}, "32": {"p50": 0.5}}
    base = {"teacher": {"params": 1000, "size_bytes": 4000, "accuracy": 0.95, "latency_ms": lat},
            "student": {"params": 100, "size_bytes": 400, "accuracy": 0.93, "latency_ms": lat}}
    stage = {"name": "00-quantize", "kind": "quantize", "notes": [],
             "metrics": {"params": 100, "size_bytes": 150, "accuracy": 0.92, "latency_ms": lat}}
    write_json(run / "compress/summary.json", {"baseline": base, "stages": [stage], "last_passing": "x"})
    write_json(run / "metrics.json", {"compress": {"stages": [stage]}})
    write_jsonl(run / "student/metrics.jsonl", [{"epoch": e, "train/kd": 1 / (e + 1), "val/accuracy": 0.5 + e / 10} for e in range(4)])
    return run


def test_report_files(tmp_path, digits, digits_mlp):
    run = fake_run(tmp_path)
    page = write_report(run, teacher=digits_mlp, data=digits)
    md = (run / "report.md").read_text()
    assert "| 00-quantize | 100 |" in md and "-3.00" in md  # change vs teacher, in points
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 4  # latency, size, curves, similarity
    for name in ("accuracy_vs_latency", "accuracy_vs_size", "training_curves", "class_similarity"):
        assert (run / "report" / f"{name}.png").stat().st_size > 1000


def test_soft_target_similarity_rows_are_distributions(digits, digits_mlp):
    sim = soft_target_similarity(digits_mlp, digits.test)
    assert sim.shape == (10, 10)
    torch.testing.assert_close(sim.sum(1), torch.ones(10))
    assert (sim.diagonal() > sim.mean(1)).all()  # a trained teacher puts most mass on the true class


class _Page(HTMLParser):
    """What a browser would have to draw: the open/close tag balance and every <img> source."""

    VOID = {"img", "meta", "br", "hr", "link", "input", "source", "col", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.unbalanced = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.unbalanced.append(tag)
        else:
            self.stack.pop()


def test_html_page_is_well_formed_and_its_plots_decode_without_a_browser(tmp_path, digits, digits_mlp):
    """The part of the Chromium check that needs no browser (it skips where Chromium is absent): the page's tags
    balance and every embedded plot is a PNG that decodes to a drawn figure, not a blank or broken image."""
    page = _Page()
    page.feed(write_report(fake_run(tmp_path), teacher=digits_mlp, data=digits).read_text())
    assert not page.unbalanced and not page.stack, (page.unbalanced, page.stack)
    assert len(page.images) == 4 and all(src.startswith("data:image/png;base64,") for src in page.images)
    for src in page.images:
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")
        assert img.width > 200 and img.height > 100
        assert len(set(img.resize((120, 80)).getdata())) > 20  # axes, lines and text: far more than a blank image


def test_html_renders_in_headless_chromium(tmp_path, digits, digits_mlp):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:  # the browser-free checks above still run
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    page = write_report(fake_run(tmp_path), teacher=digits_mlp, data=digits)
    shot = tmp_path / "report.png"
    profile = tempfile.mkdtemp()
    try:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        f"--screenshot={shot}", "--window-size=1200,2000", page.resolve().as_uri()],
                       capture_output=True, timeout=120, env={**os.environ, "HOME": profile})
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert shot.exists()
    img = Image.open(shot).convert("RGB").resize((120, 200))
    colours = len(set(img.getdata()))
    assert colours > 50  # plots rendered: far more than a blank page's few colours
