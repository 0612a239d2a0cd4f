"""The report's figures can be read: labels never cover each other or a point, the Pareto
front is exactly the undominated models, training curves get one panel per metric."""
import io
import itertools

from matplotlib.text import Text
from PIL import Image

from kdforge.bench.plots import _overlap, curves_figure, make_plots, new_figure, pareto_front, place_labels
from kdforge.rundir import write_jsonl


def test_pareto_front_is_the_undominated_points():
    pts = [(1.0, 90.0), (2.0, 95.0), (2.0, 93.0), (3.0, 94.0), (0.5, 80.0), (4.0, 97.0), (0.5, 70.0)]
    front = pareto_front(pts)
    dominated = {i for i, j in itertools.permutations(range(len(pts)), 2)
                 if pts[j][0] <= pts[i][0] and pts[j][1] >= pts[i][1] and pts[j] != pts[i]}
    assert set(front) == set(range(len(pts))) - dominated
    assert [pts[i][0] for i in front] == sorted(pts[i][0] for i in front)  # by increasing cost


def test_crowded_labels_do_not_overlap_each_other_or_points():
    # the case that motivated this: export artifacts at (almost) the same place, long names
    names = ["teacher", "student", "00-prune", "01-recover", "02-quantize", "03-export onnx", "03-export onnx-int8",
             "03-export onnx-int8 (copy)"]
    xs = [5.0, 0.4, 0.3, 0.3, 0.21, 0.1, 0.1, 0.1001]
    ys = [97.0, 93.0, 88.0, 92.5, 92.4, 93.0, 92.9, 92.9]
    fig = new_figure(540, 420)
    ax = fig.add_subplot()
    ax.scatter(xs, ys)
    ax.set_xscale("log")
    ax.margins(x=0.35, y=0.25)
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    labels = place_labels(ax, xs, ys, names)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(t, renderer) for t in labels]  # the text alone, not its leader line
    frame = ax.get_window_extent(renderer)
    assert sorted(t.get_text() for t in labels) == sorted(names)
    for a, b in itertools.combinations(range(len(boxes)), 2):
        assert _overlap(boxes[a], boxes[b]) == 0, (labels[a].get_text(), labels[b].get_text())
    points = ax.transData.transform(list(zip(xs, ys)))
    for t, box in zip(labels, boxes):
        assert frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1), t.get_text()
        assert not any(box.contains(x, y) for x, y in points), t.get_text()


def test_training_curves_one_panel_per_metric(tmp_path):
    for stage in ("teacher", "student"):
        write_jsonl(tmp_path / stage / "metrics.jsonl",
                    [{"epoch": e, "train/kd": 1 / (e + 1), "val/accuracy": 0.5 + e / 10, "val/loss": 1 / (e + 2)} for e in range(4)])
    plots = make_plots(tmp_path, [], None)
    assert list(plots) == ["training_curves"]
    w, h = Image.open(io.BytesIO(plots["training_curves"])).size
    assert w >= 900 and h >= 3 * 200  # about the page width; three panels (val accuracy, val loss, train loss)


def test_search_trials_are_grey_and_listed_once(tmp_path):
    rec = [{"epoch": e, "train/kd": 1 / (e + 1), "val/accuracy": 0.5 + e / 10} for e in range(3)]
    for folder in ("teacher", "student", "student/auto/trials/0", "student/auto/trials/1"):
        write_jsonl(tmp_path / folder / "metrics.jsonl", rec)
    fig = curves_figure(tmp_path)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["student", "teacher", "search trials (grey)"]
    lines = fig.axes[0].get_lines()
    grey = [ln for ln in lines if ln.get_color() == "0.78"]
    assert len(lines) == 4 and len(grey) == 2  # one line per folder; the two trials drawn in grey
