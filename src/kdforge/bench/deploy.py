"""Deployment summary: which artifact to ship, decided by measurement.

For each artifact: p50 / p95 latency at each batch size, size, accuracy, speedup against a
reference (usually the PyTorch fp32 model) and its accuracy drop. Among the artifacts whose
accuracy is within `max_drop` of the reference, kdforge recommends
  - for latency:    the smallest p50 at the smallest batch size (one request at a time),
  - for throughput: the smallest p50 at the largest batch size (most samples per second).
An artifact without a measured accuracy is never recommended.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from kdforge.compress.ort_opt import CPU_FLAGS, cpu_features


@dataclass
class Artifact:
    name: str
    p50: dict[int, float]                      # batch size -> ms
    p95: dict[int, float] = field(default_factory=dict)
    size_bytes: int | None = None
    accuracy: float | None = None


def from_measure(name: str, m: dict) -> Artifact:
    """An Artifact from the dict `kdforge.bench.measure.measure` returns."""
    lat = {int(b): v for b, v in m["latency_ms"].items()}
    return Artifact(name, {b: v["p50"] for b, v in lat.items()}, {b: v["p95"] for b, v in lat.items()},
                    m.get("size_bytes"), m.get("accuracy"))


def summarize(artifacts: list[Artifact], reference: str, max_drop: float = 0.005) -> dict:
    """{"reference", "batches", "max_drop", "rows": [...], "latency": name | None, "throughput": name | None}.

    max_drop: largest accepted accuracy drop against the reference, a fraction (0.005 = 0.5 points)."""
    by_name = {a.name: a for a in artifacts}
    if reference not in by_name:
        raise KeyError(f"reference {reference!r} is not one of the artifacts: {', '.join(by_name)}")
    ref = by_name[reference]
    batches = sorted(ref.p50)
    rows = []
    for a in artifacts:
        drop = None if a.accuracy is None or ref.accuracy is None else ref.accuracy - a.accuracy
        rows.append({"name": a.name, "p50": a.p50, "p95": a.p95, "size_bytes": a.size_bytes, "accuracy": a.accuracy,
                     "speedup": {b: ref.p50[b] / a.p50[b] for b in batches if b in a.p50},
                     "drop": drop, "eligible": drop is not None and drop <= max_drop + 1e-12})
    ok = [r for r in rows if r["eligible"] and all(b in r["p50"] for b in batches)]
    pick = {key: min(ok, key=lambda r: r["p50"][b])["name"] if ok else None
            for key, b in (("latency", batches[0]), ("throughput", batches[-1]))}
    return {"reference": reference, "batches": batches, "max_drop": max_drop, "rows": rows, **pick}


def render(summary: dict) -> list[str]:
    """Markdown lines: one table row per artifact, then the two recommendations."""
    bs = summary["batches"]
    head = "| artifact | " + " | ".join(f"p50 / p95 ms, batch {b}" for b in bs) + " | " + \
        " | ".join(f"× ref, b{b}" for b in bs) + " | MiB | accuracy % | drop (points) |"
    lines = [head, "|---|" + "---:|" * (2 * len(bs) + 3)]
    for r in summary["rows"]:
        lat = " | ".join(f"{r['p50'][b]:.2f} / {r['p95'][b]:.2f}" if b in r["p95"] else f"{r['p50'][b]:.2f}" for b in bs)
        spd = " | ".join(f"{r['speedup'][b]:.2f}×" for b in bs)
        size = f"{r['size_bytes'] / 2**20:.1f}" if r["size_bytes"] else ""
        acc = f"{100 * r['accuracy']:.2f}" if r["accuracy"] is not None else ""
        drop = f"{100 * r['drop']:+.2f}" if r["drop"] is not None else ""
        lines.append(f"| {r['name']} | {lat} | {spd} | {size} | {acc} | {drop} |")
    lim = f"accuracy within {100 * summary['max_drop']:g} points of {summary['reference']}"
    for key, b, what in (("latency", bs[0], "p50"), ("throughput", bs[-1], "p50")):
        name = summary[key]
        if name is None:
            lines.append(f"\nRecommended for {key}: none ({lim}: no artifact qualifies).")
            continue
        row = next(r for r in summary["rows"] if r["name"] == name)
        lines.append(f"\nRecommended for {key} (lowest {what} at batch {b}, {lim}): **{name}**, "
                     f"{row['speedup'][b]:.2f}× {summary['reference']}.")
    return lines


def cpu_line() -> str:
    """The CPU's INT8-relevant instruction sets, for reports."""
    f = cpu_features()
    have = [k for k in CPU_FLAGS if f[k]]
    lacks = [k for k in CPU_FLAGS if not f[k]]
    return f"CPU INT8 instruction sets: {', '.join(have) or 'none detected'}" + (f" (not: {', '.join(lacks)})" if lacks else "")


def runtime_line(threads: int) -> str:
    """How PyTorch and ONNX Runtime were set for the measurement (see export.ort_session)."""
    return (f"Threads: torch.set_num_threads({threads}) and ONNX Runtime intra_op_num_threads={threads}, "
            f"inter_op_num_threads=1, graph_optimization_level=ORT_ENABLE_ALL, execution_mode=ORT_SEQUENTIAL, "
            f"CPUExecutionProvider. {cpu_line()}.")


def report_lines(compress: dict, max_drop: float = 0.005) -> list[str]:
    """The "Deployment summary" section of a run's report, from its compress summary
    (metrics.json["compress"]): the baseline student, every stage's model and every export
    artifact, against the student in PyTorch fp32. [] when nothing was compressed."""
    base = compress.get("baseline", {}).get("student")
    if not base or "latency_ms" not in base or not compress.get("stages"):
        return []
    arts = [from_measure("student (PyTorch fp32)", base)]
    for st in compress["stages"]:
        measured = {f"{st['name']} {fmt}": m for fmt, m in st.get("artifacts", {}).items() if fmt != "torch"} \
            if st["kind"] == "export" else {st["name"]: st.get("metrics", {})}
        arts += [from_measure(name, m) for name, m in measured.items() if "latency_ms" in m]
    summary = summarize(arts, arts[0].name, max_drop)
    return ["## Deployment summary", "", *render(summary), "", runtime_line(int(base.get("threads") or 1)), ""]


def bench_lines(results: dict[str, dict], threads: int, max_drop: float = 0.005) -> list[str]:
    """What `kdforge bench` prints after the per-artifact lines: the runtime settings and, for
    several artifacts, the deployment summary against the first one."""
    lines = [runtime_line(threads)]
    if len(results) > 1:
        arts = [from_measure(name, m) for name, m in results.items()]
        lines += ["", *render(summarize(arts, arts[0].name, max_drop))]
    return lines
