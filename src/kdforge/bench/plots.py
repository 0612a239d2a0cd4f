"""The report's figures, drawn to be read at the size report.html shows them.

- accuracy vs latency / size: every model a point, the Pareto front (no other model is
  both cheaper and more accurate) as a staircase, each label placed where its box
  overlaps no other label, point or the axes edge (measured with the renderer),
  further out with a leader line when nothing near is free;
- training curves: one full-width panel per metric, one line per stage, the legend
  outside the panels;
- the teacher's class-similarity heatmap (off-diagonal soft-target mass).

Figures use matplotlib's object API with the Agg canvas (no pyplot state, no backend switch).
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
import matplotlib.ticker
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from kdforge.rundir import read_jsonl

DPI = 100  # figures are drawn at the pixel size the page shows (report.html: two columns of ~540 px)
SCATTERS = (("p50_b32", "latency", "latency p50 at batch 32 (ms)", 1.0), ("size_bytes", "size", "size on disk (KB)", 1 / 1024))
# directions tried around a point, the most readable first (right, left, the diagonals, above, below, between)
ANGLES = (0, 180, 35, -35, 145, -145, 90, -90, 60, -60, 120, -120, 15, -15, 165, -165)
DISTANCES = (6, 12, 22, 34, 48, 64, 82, 102)  # offsets in points; beyond the first, a leader line joins label and point


def new_figure(width_px: int, height_px: int) -> Figure:
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, accuracy) that no other point beats on both, by increasing cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def _align(c: float) -> tuple[str, float]:
    """Text alignment for an offset whose unit component is c, and the box's start as a fraction of its size."""
    return ("left", 0.0) if c > 0.3 else ("right", -1.0) if c < -0.3 else ("center", -0.5)


def place_labels(ax, xs: list[float], ys: list[float], names: list[str], fontsize: float = 8, marker_px: float = 4) -> list:
    """Annotate point i with names[i] at the nearest free spot; returns the annotations.

    A spot is free when the label's box (display pixels, measured with the renderer) lies inside
    the axes and overlaps no label placed before it and no point marker. Axis limits must be final
    before the call. When no spot is free, the one with the least overlap is taken."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px = ax.transData.transform(list(zip(xs, ys)))  # (N, 2) display pixels
    obstacles = [Bbox.from_bounds(x - marker_px, y - marker_px, 2 * marker_px, 2 * marker_px) for x, y in px]
    to_px = ax.figure.dpi / 72  # offsets are in points
    labels = []
    for i in sorted(range(len(names)), key=lambda i: (-px[i][1], px[i][0])):  # top to bottom
        probe = ax.text(0, 0, names[i], fontsize=fontsize)
        size = probe.get_window_extent(renderer)
        probe.remove()
        best = None
        for dist, angle in ((d, a) for d in DISTANCES for a in ANGLES):
            c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            (ha, fx), (va, fy) = _align(c), _align(s)
            x0 = px[i][0] + c * dist * to_px + fx * size.width
            y0 = px[i][1] + s * dist * to_px + fy * size.height
            box = Bbox.from_bounds(x0, y0, size.width, size.height).padded(2)
            cost = (box.width * box.height - _overlap(box, frame)) * 10 + sum(_overlap(box, o) for o in obstacles)
            if best is None or cost < best[0]:
                best = (cost, box, (c * dist, s * dist), ha, {"left": "bottom", "right": "top"}.get(va, "center"), dist)
            if cost == 0:
                break
        _, box, offset, ha, va, dist = best
        labels.append(ax.annotate(
            names[i], (xs[i], ys[i]), xytext=offset, textcoords="offset points", fontsize=fontsize, ha=ha, va=va,
            bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.85),  # readable over grid and front lines
            arrowprops=dict(arrowstyle="-", color="0.55", lw=0.6, shrinkA=0, shrinkB=3) if dist > DISTANCES[0] else None))
        obstacles.append(box)
    return labels


def scatter_plot(rows: list[dict], key: str, what: str, label: str, scale: float) -> bytes | None:
    pts = [r for r in rows if r.get(key) is not None and r.get("accuracy") is not None]
    if not pts:
        return None
    xs, ys = [r[key] * scale for r in pts], [r["accuracy"] * 100 for r in pts]
    front = pareto_front(list(zip(xs, ys)))
    fig = new_figure(540, 420)
    ax = fig.add_subplot()
    on = set(front)
    ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=36, color="C0", zorder=3, label="on the Pareto front")
    off = [i for i in range(len(pts)) if i not in on]
    if off:
        ax.scatter([xs[i] for i in off], [ys[i] for i in off], s=36, facecolor="white", edgecolor="0.45", zorder=3,
                   label=f"beaten on {what} and accuracy")
    fx, fy = [xs[i] for i in front], [ys[i] for i in front]
    ax.step(fx, fy, where="post", color="C0", lw=1.2, alpha=0.7, zorder=2, label="Pareto front (best accuracy for its cost)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.margins(x=0.35, y=0.25)  # room for labels on every side of the outermost points
    ax.set_xlabel(label + " (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"accuracy vs {what}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    fig.subplots_adjust(left=0.13, right=0.97, top=0.92, bottom=0.27)
    ax.set_xlim(ax.get_xlim())  # freeze the limits the labels are placed against
    ax.set_ylim(ax.get_ylim()[0], min(ax.get_ylim()[1], 100.0) if max(ys) <= 100.0 else ax.get_ylim()[1])
    place_labels(ax, xs, ys, [r["name"] for r in pts])
    return png(fig)


def curves_figure(run_dir: Path) -> Figure | None:
    """One panel per metric (each val/ metric, then the summed training loss), one coloured line per
    stage; hyperparameter-search trials (…/trials/N) as thin grey lines behind them."""
    curves = {p.parent.relative_to(run_dir).as_posix(): read_jsonl(p) for p in sorted(run_dir.rglob("metrics.jsonl"))}
    curves = {k: v for k, v in curves.items() if v and any(key.startswith("val/") for key in v[0])}
    if not curves:
        return None
    val_keys = sorted({k for h in curves.values() for k in h[0] if k.startswith("val/") and "_class_" not in k})
    panels = [(k, "val " + k[4:].replace("_", " ")) for k in val_keys] + [("train", "train loss (sum, log)")]
    fig = new_figure(1060, 250 * len(panels) + 40)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    stages = [n for n in curves if "trials" not in n.split("/")]
    colours = matplotlib.colormaps["tab10" if len(stages) <= 10 else "tab20"].colors
    legend: dict = {}
    for name, hist in curves.items():
        trial = name not in stages
        style = dict(color="0.78", lw=0.8, zorder=1) if trial else dict(color=colours[stages.index(name) % len(colours)], lw=1.5, zorder=2)
        label = "search trials (grey)" if trial else name
        ep = [r["epoch"] + 1 for r in hist]
        for ax, (key, _) in zip(axes, panels):
            if key == "train":
                terms = [k for k in hist[0] if k.startswith("train/") and k not in ("train/filtered", "train/seen", "train/skipped_steps")]
                ys = [sum(r.get(k, 0.0) for k in terms) for r in hist] if terms else None
            else:
                ys = [r[key] * (100 if "accuracy" in key else 1) for r in hist] if key in hist[0] else None
            if ys is not None:
                legend.setdefault(label, ax.plot(ep, ys, **style)[0])
    for ax, (key, title) in zip(axes, panels):
        ax.set_ylabel(title + (" (%)" if "accuracy" in key else ""))
        ax.grid(alpha=0.3)
        if key == "train":
            ax.set_yscale("log")
    axes[-1].set_xlabel("epoch")
    axes[0].set_title("training curves (validation metrics, then training loss)")
    fig.subplots_adjust(left=0.08, right=0.78, hspace=0.12)
    names = [n for n in stages if n in legend] + [n for n in legend if n not in stages]  # stages first, trials last
    fig.legend([legend[n] for n in names], names, loc="upper left", bbox_to_anchor=(0.79, 0.92), fontsize=8,
               title="stage", frameon=False)
    return fig


def similarity_plot(similarity: torch.Tensor) -> bytes:
    c = similarity.shape[0]
    fig = new_figure(540, 460)
    ax = fig.add_subplot()
    off = similarity.clone()
    off.fill_diagonal_(float("nan"))  # the diagonal dwarfs the rest; dark knowledge is off it
    im = ax.imshow(off.numpy(), cmap="viridis")
    fig.colorbar(im, ax=ax, label="mean teacher probability (T=4), diagonal hidden")
    ax.set(xticks=range(c), yticks=range(c), xlabel="predicted class", ylabel="true class",
           title="teacher soft targets: class similarity")
    return png(fig)


def make_plots(run_dir: Path, rows: list[dict], similarity: torch.Tensor | None) -> dict[str, bytes]:
    """name -> PNG bytes, in page order."""
    plots: dict[str, bytes] = {}
    for key, what, label, scale in SCATTERS:
        img = scatter_plot(rows, key, what, label, scale)
        if img is not None:
            plots[f"accuracy_vs_{what}"] = img
    curves = curves_figure(Path(run_dir))
    if curves is not None:
        plots["training_curves"] = png(curves)
    if similarity is not None:
        plots["class_similarity"] = similarity_plot(similarity)
    return plots
