"""report.md and a self-contained report.html for a run directory.

Contents: one table row per model (teacher, distilled student, each compression
stage, each exported ONNX artifact) with params, size, latency, accuracy and the
change vs the teacher; accuracy-vs-latency and accuracy-vs-size plots; training
curves from every metrics.jsonl; the class-similarity heatmap of the teacher's
averaged soft targets ("dark knowledge": which classes the teacher finds alike).
The figures are drawn in kdforge.bench.plots; PNGs go to RUN/report/ (linked from
report.md) and are base64-embedded in the HTML.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import torch

from kdforge.bench.deploy import report_lines
from kdforge.bench.measure import make_runner, stack_inputs
from kdforge.bench.plots import make_plots
from kdforge.rundir import write_text


def collect_rows(run_dir: Path) -> list[dict]:
    """[{name, params, size_bytes, p50_b1, p50_b32, accuracy}] from compress/summary.json (or baseline.json)."""
    root = run_dir / "compress"
    summary = json.loads((root / "summary.json").read_text()) if (root / "summary.json").exists() else {}
    base = summary.get("baseline") or (json.loads((root / "baseline.json").read_text()) if (root / "baseline.json").exists() else {})
    rows = [_row(role, base[role]) for role in ("teacher", "student") if role in base]
    if not rows:  # no compression stages: fall back to metrics.json accuracies
        metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
        rows = [{"name": r, "params": metrics[r].get("params"), "accuracy": metrics[r]["accuracy"]}
                for r in ("teacher", "student") if isinstance(metrics.get(r), dict) and "accuracy" in metrics[r]]
    for st in summary.get("stages", []):
        if "artifacts" in st:  # an export stage: one row per measured artifact
            rows += [_row(f"{st['name']} {fmt}", m) for fmt, m in st["artifacts"].items() if fmt != "torch"]
        else:
            rows.append(_row(st["name"], st["metrics"]))
    return rows


def _row(name: str, m: dict) -> dict:
    lat = m.get("latency_ms", {})
    return {"name": name, "params": m.get("params"), "size_bytes": m.get("size_bytes"), "accuracy": m.get("accuracy"),
            "p50_b1": lat.get("1", {}).get("p50"), "p50_b32": lat.get("32", {}).get("p50")}


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    teacher = next((r["accuracy"] for r in rows if r["name"] == "teacher"), None)
    head = ["model", "params", "size (KB)", "p50 batch 1 (ms)", "p50 batch 32 (ms)", "accuracy", "Δ vs teacher (points)"]
    body = []
    for r in rows:
        delta = None if teacher is None or r["accuracy"] is None else (r["accuracy"] - teacher) * 100
        body.append([r["name"], _fmt(r["params"], ","), _fmt(r["size_bytes"] and r["size_bytes"] / 1024, ".1f"),
                     _fmt(r.get("p50_b1"), ".3f"), _fmt(r.get("p50_b32"), ".3f"), _fmt(r["accuracy"], ".4f"),
                     _fmt(delta, "+.2f")])
    return head, body


@torch.no_grad()
def soft_target_similarity(teacher, dataset, temperature: float = 4.0) -> torch.Tensor:
    """(C, C): row i = the teacher's softmax(z / T) averaged over samples of class i."""
    run = make_runner("torch", teacher.eval())
    x = stack_inputs(dataset, len(dataset))
    y = torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))])
    p = (run(x) / temperature).softmax(-1)  # (N, C)
    c = p.shape[1]
    return torch.stack([p[y == k].mean(0) if (y == k).any() else torch.zeros(c) for k in range(c)])


def _markdown_html(text: str) -> str:
    """The little markdown our preambles use: '# ' headings, pipe tables, paragraphs."""
    out, table = [], []

    def flush() -> None:
        if table:
            rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in table if not set(r) <= set("|-: ")]
            head, *body = rows
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 3)
            out.append(f"<h{level + 1}>{html.escape(line.lstrip('#').strip())}</h{level + 1}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "".join(out)


def write_report(run_dir: Path, *, teacher=None, data=None, preamble: str | None = None) -> Path:
    """Write RUN/report.md, RUN/report.html and RUN/report/*.png; returns the HTML path.

    preamble: Markdown placed first in report.md (and as preformatted text in the HTML),
    e.g. the run's own summary table."""
    run_dir = Path(run_dir)
    rows = collect_rows(run_dir)
    sim = soft_target_similarity(teacher, data.test) if teacher is not None and data is not None else None
    plots = make_plots(run_dir, rows, sim)
    assets = run_dir / "report"
    assets.mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        (assets / f"{name}.png").write_bytes(png)
    head, body = table_rows(rows)
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    comp = metrics.get("compress", {})
    title = f"kdforge report — {run_dir.name}"
    notes = []
    if comp.get("gate_failed"):
        notes.append(f"**Gate failed:** {comp['gate_failed']}")
    for st in comp.get("stages", []):
        for n in st.get("notes", []):
            notes.append(f"{st['name']}: {n}")
        if st.get("manifest", {}).get("onnx_max_abs_diff") is not None:
            notes.append(f"{st['name']}: ONNX Runtime vs PyTorch max abs diff {st['manifest']['onnx_max_abs_diff']:.2e}")
    stage = metrics.get("student_stage", {})
    if "filtered" in stage:
        notes.append(f"Confidence filter: {int(stage['filtered'])} of {int(stage['seen'])} sample-visits filtered.")
    notes.append("Latency: single-threaded CPU, p50 of repeated calls after warm-up; compare ratios within one run.")

    md = ([preamble.rstrip(), "", f"## Compression and deployment — {run_dir.name}"] if preamble else [f"# {title}"])
    md += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    md += [""] + [f"- {n}" for n in notes] + [""]
    md += report_lines(comp)  # which artifact to ship (kdforge.bench.deploy)
    md += [f"![{name}](report/{name}.png)" for name in plots]
    write_text(run_dir / "report.md", "\n".join(md) + "\n")

    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    imgs = "".join(f'<figure class="{"wide" if n == "training_curves" else ""}"><img alt="{n}" '
                   f'src="data:image/png;base64,{base64.b64encode(p).decode()}"><figcaption>{n.replace("_", " ")}</figcaption></figure>'
                   for n, p in plots.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child{{text-align:left}}
.plots{{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1em 1.5em;margin-top:1.5em}}
figure{{margin:0}} figure.wide{{grid-column:1/-1}} img{{max-width:100%;height:auto}}
figcaption{{color:#555;font-size:90%}}</style></head><body>
<h1>{html.escape(title)}</h1>{_markdown_html(preamble) if preamble else ""}<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>{cells}</table>
<ul>{''.join(f'<li>{html.escape(n.replace("**", ""))}</li>' for n in notes)}</ul><div class="plots">{imgs}</div></body></html>"""
    write_text(run_dir / "report.html", page)
    return run_dir / "report.html"
