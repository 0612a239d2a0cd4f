"""report.md and a self-contained report.html for a run directory.

Contents: one table row per model (teacher, distilled student, each compression
stage, each exported ONNX artifact) with params, size, latency, accuracy and the
change vs the teacher; accuracy-vs-latency and accuracy-vs-size plots; training
curves from every metrics.jsonl; the class-similarity heatmap of the teacher's
averaged soft targets ("dark knowledge": which classes the teacher finds alike).
PNGs go to RUN/report/ (linked from report.md) and are base64-embedded in the HTML.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import torch

from kdforge.rundir import read_jsonl, write_text


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
        if st["kind"] == "export":
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
    from kdforge.bench.measure import make_runner, stack_inputs

    run = make_runner("torch", teacher.eval())
    x = stack_inputs(dataset, len(dataset))
    y = torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))])
    p = (run(x) / temperature).softmax(-1)  # (N, C)
    c = p.shape[1]
    return torch.stack([p[y == k].mean(0) if (y == k).any() else torch.zeros(c) for k in range(c)])


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def make_plots(run_dir: Path, rows: list[dict], similarity: torch.Tensor | None) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    plots: dict[str, bytes] = {}
    for key, label, scale in (("p50_b32", "latency p50 at batch 32 (ms)", 1), ("size_bytes", "size on disk (KB)", 1 / 1024)):
        pts = [r for r in rows if r.get(key) is not None and r["accuracy"] is not None]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in pts:
            ax.scatter(r[key] * scale, r["accuracy"] * 100, s=40)
            ax.annotate(r["name"], (r[key] * scale, r["accuracy"] * 100), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label + " (log)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"accuracy vs {label.split(' (')[0]}")
        ax.grid(alpha=0.3)
        plots["accuracy_vs_" + ("latency" if key == "p50_b32" else "size")] = _png(fig)

    curves = {p.parent.relative_to(run_dir).as_posix(): read_jsonl(p) for p in sorted(run_dir.rglob("metrics.jsonl"))}
    curves = {k: v for k, v in curves.items() if v and "val/accuracy" in v[0]}
    if curves:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
        for name, hist in curves.items():
            ep = [r["epoch"] + 1 for r in hist]
            a1.plot(ep, [r["val/accuracy"] * 100 for r in hist], label=name)
            loss_keys = [k for k in hist[0] if k.startswith("train/") and k not in ("train/filtered", "train/seen")]
            a2.plot(ep, [sum(r.get(k, 0) for k in loss_keys) for r in hist], label=name)
        a1.set(xlabel="epoch", ylabel="val accuracy (%)", title="validation accuracy")
        a2.set(xlabel="epoch", ylabel="train loss (sum of terms)", title="training loss", yscale="log")
        for a in (a1, a2):
            a.grid(alpha=0.3)
            a.legend(fontsize=7)
        plots["training_curves"] = _png(fig)

    if similarity is not None:
        c = similarity.shape[0]
        fig, ax = plt.subplots(figsize=(5.5, 4.8))
        off = similarity.clone()
        off.fill_diagonal_(float("nan"))  # the diagonal dwarfs the rest; dark knowledge is off it
        im = ax.imshow(off.numpy(), cmap="viridis")
        fig.colorbar(im, ax=ax, label="mean teacher probability (T=4), diagonal hidden")
        ax.set(xticks=range(c), yticks=range(c), xlabel="predicted class", ylabel="true class",
               title="teacher soft targets: class similarity")
        plots["class_similarity"] = _png(fig)
    return plots


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
    md += [f"![{name}](report/{name}.png)" for name in plots]
    write_text(run_dir / "report.md", "\n".join(md) + "\n")

    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    imgs = "".join(f'<figure><img alt="{n}" src="data:image/png;base64,{base64.b64encode(p).decode()}">'
                   f"<figcaption>{n.replace('_', ' ')}</figcaption></figure>" for n, p in plots.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child{{text-align:left}}
figure{{display:inline-block;margin:1em}} img{{max-width:520px}}</style></head><body>
<h1>{html.escape(title)}</h1>{_markdown_html(preamble) if preamble else ""}<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>{cells}</table>
<ul>{''.join(f'<li>{html.escape(n.replace("**", ""))}</li>' for n in notes)}</ul>{imgs}</body></html>"""
    write_text(run_dir / "report.html", page)
    return run_dir / "report.html"
