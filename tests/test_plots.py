"""The figure helpers draw what they are given and reject mismatched input."""
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from data_utils import plots  # noqa: E402

NAMES = [f"c{i}" for i in range(3)]


def test_figures_are_drawn():
    counts = np.array([[5, 0, 1], [0, 3, 3]])
    fig = plots.label_heatmap(counts, NAMES)
    assert fig.axes[0].images[0].get_array().tolist() == counts.tolist()
    fig = plots.client_size_histogram([10, 20, 30])
    assert sum(p.get_height() for p in fig.axes[0].patches) == 3
    fig = plots.class_balance([[1, 2, 3], [3, 2, 1]], NAMES, labels=("train", "test"))
    assert [p.get_height() for p in fig.axes[0].patches] == [1, 2, 3, 3, 2, 1]
    rows = [{"accuracy": 0.5, "f1": 0.4}, {"accuracy": 0.7, "f1": 0.6}]
    fig = plots.metric_bars(["a", "b"], rows, metrics=("accuracy", "f1"), baseline={"accuracy": 0.9, "f1": 0.8})
    assert [p.get_height() for p in fig.axes[0].patches] == [0.5, 0.7, 0.4, 0.6]
    fig = plots.confusion_matrices([np.eye(3, dtype=int), np.ones((3, 3), int)], ["a", "b"], NAMES)
    assert len(fig.axes) == 2
    img = np.random.default_rng(0).random((4, 5, 5, 1)).astype("float32")
    fig = plots.clients_side_by_side(img, [0, 1, 2, 0], img, [1, 1, 1, 1], NAMES, n=4, cols=2)
    assert len(fig.subfigs) == 2


def test_bad_input():
    with pytest.raises(ValueError):
        plots.label_heatmap(np.arange(3))
    with pytest.raises(ValueError):
        plots.class_balance([[1, 2]], NAMES)
    with pytest.raises(ValueError):
        plots.metric_bars(["a"], [])
    with pytest.raises(ValueError):
        plots.confusion_matrices([np.eye(3)], ["a", "b"])


def test_format_table():
    text = plots.format_table([{"m": "x", "v": 0.5}, {"m": "long name", "v": None}], {"m": "s", "v": ("value", ".2f")})
    lines = text.splitlines()
    assert lines[0].split() == ["m", "value"] and lines[2].split() == ["x", "0.50"] and lines[3].endswith("-")
    assert len({len(line) for line in lines}) == 1
