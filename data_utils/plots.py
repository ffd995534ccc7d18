"""Figures the notebooks show (notebooks 00, 01, 02, 05 and 07). Each function draws on a new (or
given) matplotlib figure and returns it, so a notebook cell shows it and a script can save it."""
from __future__ import annotations

import numpy as np

from .validate import check_int


def _plt():
    import matplotlib.pyplot as plt

    return plt


def image_grid(images, labels, class_names, rows: int = 3, cols: int = 8, title: str | None = None,
               predictions=None):
    """A grid of images titled with their class names (and predictions, if given: wrong ones red)."""
    rows, cols = check_int("rows", rows, low=1), check_int("cols", cols, low=1)
    plt = _plt()
    n = min(rows * cols, len(images))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i >= n:
            continue
        img = np.asarray(images[i])
        ax.imshow(img.squeeze(), cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=1)
        text = class_names[int(labels[i])]
        color = "black"
        if predictions is not None:
            text = f"{text}\n(pred: {class_names[int(predictions[i])]})"
            color = "black" if int(predictions[i]) == int(labels[i]) else "red"
        ax.set_title(text, fontsize=8, color=color)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _axes(ax, figsize):
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def class_balance(counts, class_names, labels=("train",), title: str | None = None, ax=None):
    """Grouped bars of examples per class: ``counts`` is one row of per-class counts per split
    (e.g. train and test), named by ``labels``."""
    counts = np.atleast_2d(np.asarray(counts))
    if counts.shape[1] != len(class_names) or counts.shape[0] != len(labels):
        raise ValueError(f"counts must have shape ({len(labels)}, {len(class_names)}), got {counts.shape}")
    fig, ax = _axes(ax, (9, 3.2))
    width = 0.8 / len(counts)
    x = np.arange(len(class_names))
    for i, (row, name) in enumerate(zip(counts, labels)):
        ax.bar(x + (i - (len(counts) - 1) / 2) * width, row, width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(class_names, rotation=30, ha="right")
    ax.set_ylabel("examples")
    ax.legend()
    ax.set_title(title or "examples per class")
    fig.tight_layout()
    return fig


def label_heatmap(counts, class_names=None, title: str | None = None, ax=None, annotate: bool | None = None):
    """A client x class heatmap of label counts (rows: clients, columns: classes)."""
    counts = np.asarray(counts)
    if counts.ndim != 2:
        raise ValueError(f"counts must be a (clients x classes) matrix, got shape {counts.shape}")
    fig, ax = _axes(ax, (min(11, 0.8 * counts.shape[1] + 2.5), 0.4 * counts.shape[0] + 1.8))
    image = ax.imshow(counts, aspect="auto", cmap="viridis")
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    ax.set_xticks(np.arange(counts.shape[1]))
    ax.set_xticklabels(class_names if class_names is not None else range(counts.shape[1]),
                       rotation=45 if class_names is not None else 0, ha="right" if class_names is not None else "center",
                       fontsize=9)
    step = max(1, counts.shape[0] // 20)
    ax.set_yticks(np.arange(0, counts.shape[0], step))
    if annotate is None:
        annotate = counts.size <= 200
    if annotate:
        high = counts.max() if counts.size else 0
        for (r, c), v in np.ndenumerate(counts):
            ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=8,
                    color="black" if v > 0.6 * high else "white")
    fig.colorbar(image, ax=ax, label="examples")
    ax.set_title(title or "label counts per client")
    fig.tight_layout()
    return fig


def client_size_histogram(sizes, bins: int | None = None, title: str | None = None, ax=None):
    """Histogram of client sizes (examples per client)."""
    sizes = np.asarray(sizes)
    bins = check_int("bins", bins, low=1, allow_none=True)
    fig, ax = _axes(ax, (5, 3))
    bins = bins or min(20, max(5, len(sizes)))
    ax.hist(sizes, bins=bins, color="tab:blue", edgecolor="white")
    ax.axvline(sizes.mean(), color="tab:red", linestyle="--", label=f"mean {sizes.mean():.0f}")
    ax.set_xlabel("examples per client")
    ax.set_ylabel("clients")
    ax.legend()
    ax.set_title(title or f"client sizes ({len(sizes)} clients)")
    fig.tight_layout()
    return fig


def clients_side_by_side(images_a, labels_a, images_b, labels_b, class_names, names=("client A", "client B"),
                         n: int = 8, cols: int = 4, title: str | None = None):
    """The first ``n`` images of two clients, in two panels side by side, titled by class."""
    n, cols = check_int("n", n, low=1), check_int("cols", cols, low=1)
    plt = _plt()
    rows = int(np.ceil(n / cols))
    fig = plt.figure(figsize=(2 * 1.3 * cols + 0.6, 1.5 * rows + 0.7))
    panels = fig.subfigures(1, 2, wspace=0.05)
    for panel, images, labels, name in zip(panels, (images_a, images_b), (labels_a, labels_b), names):
        axes = panel.subplots(rows, cols, squeeze=False)
        for i, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if i >= min(n, len(images)):
                continue
            img = np.asarray(images[i])
            ax.imshow(img.squeeze(), cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=1)
            ax.set_title(class_names[int(labels[i])], fontsize=8)
        panel.suptitle(name, fontsize=10)
    if title:
        fig.suptitle(title, y=1.02)
    return fig


def metric_bars(names, rows, metrics=("accuracy", "precision", "recall", "f1"), baseline=None,
                title: str | None = None, ax=None):
    """Grouped bars of ``metrics`` per model (``rows``: one dict of metrics per name), with the
    baseline's values (a dict) as dashed lines."""
    if len(names) != len(rows):
        raise ValueError(f"rows must hold one metrics dict per name ({len(names)}), got {len(rows)}")
    fig, ax = _axes(ax, (max(6, 0.7 * len(names) + 3), 3.4))
    width = 0.8 / len(metrics)
    x = np.arange(len(names))
    colors = _plt().rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(metrics):
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, [r[m] for r in rows], width, label=m,
               color=colors[i % len(colors)])
        if baseline is not None:
            ax.axhline(baseline[m], color=colors[i % len(colors)], linestyle="--", linewidth=1)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=0 if len(names) <= 12 else 90)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score on the shared test set")
    ax.legend(ncol=len(metrics), fontsize=8, loc="lower right")
    ax.set_title(title or ("per-model metrics" + (" (dashed: baseline)" if baseline is not None else "")))
    fig.tight_layout()
    return fig


def confusion_matrices(matrices, titles, class_names=None, normalize: bool = False, title: str | None = None):
    """Confusion matrices side by side (rows: true class, columns: predicted class), counts
    written in the cells; ``normalize`` shows each row as fractions instead."""
    plt = _plt()
    matrices = [np.asarray(m) for m in matrices]
    if len(matrices) != len(titles):
        raise ValueError(f"titles must hold one title per matrix ({len(matrices)}), got {len(titles)}")
    k, n = matrices[0].shape[0], len(matrices)
    scale = min(1.0, 11 / ((0.5 * k + 1.3) * n))   # at most 11 inches wide: Colab's width
    fig, axes = plt.subplots(1, n, figsize=((0.5 * k + 1.3) * n * scale, (0.5 * k + 1.6) * scale),
                             squeeze=False)
    labels = class_names if class_names is not None else [str(i) for i in range(k)]
    for ax, cm, name in zip(axes.ravel(), matrices, titles):
        shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
        ax.imshow(shown, cmap="Blues")
        high = shown.max() if shown.size else 0
        for (r, c), v in np.ndenumerate(shown):
            if cm[r, c]:
                ax.text(c, r, f"{v:.2f}" if normalize else str(int(v)), ha="center", va="center",
                        fontsize=9 if k <= 10 else 7, color="white" if v > 0.6 * high else "black")
        ax.set_xticks(np.arange(k))
        ax.set_yticks(np.arange(k))
        ax.set_xticklabels(labels, rotation=90, fontsize=9)
        ax.set_yticklabels(labels, fontsize=9)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def format_table(rows, columns) -> str:
    """A plain-text table: ``rows`` is a list of dicts, ``columns`` maps each key to a format
    spec (``{"client": "d", "accuracy": ".4f"}``) or to a (header, spec) pair. Missing values
    and None print as ``-``."""
    spec = {k: (v if isinstance(v, tuple) else (k, v)) for k, v in columns.items()}
    cells = [[header for header, _ in spec.values()]]
    for row in rows:
        line = []
        for key, (_, fmt) in spec.items():
            value = row.get(key)
            line.append("-" if value is None else format(value, fmt))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(spec))]
    out = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
           for r in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def per_class_accuracy_bars(values, class_names, title: str | None = None, ax=None):
    """Grouped bars of per-class accuracy: ``values`` maps a model's name to one accuracy per
    class (NaN for a class absent from the test set is drawn as no bar)."""
    names = list(values)
    arrays = [np.asarray(values[n], dtype=float) for n in names]
    if not names or any(a.shape != (len(class_names),) for a in arrays):
        raise ValueError(f"values must hold one accuracy per class ({len(class_names)}) for each "
                         f"model, got shapes {[a.shape for a in arrays] or 'none'}")
    fig, ax = _axes(ax, (max(7, 0.9 * len(class_names) + 2), 3.4))
    width = 0.8 / len(names)
    x = np.arange(len(class_names))
    for i, (name, a) in enumerate(zip(names, arrays)):
        ax.bar(x + (i - (len(names) - 1) / 2) * width, np.nan_to_num(a), width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(class_names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("accuracy on the class")
    ax.legend(fontsize=8, ncol=len(names), loc="upper center")
    ax.set_title(title or "per-class accuracy on the shared test set")
    fig.tight_layout()
    return fig


def client_gain_plot(federated, local, baseline=None, names=("federated", "local-only", "centralized"),
                     title: str | None = None):
    """Per client: accuracy on its own local test split with the federated model and with its
    local-only model (and the centralized baseline, if given), and the gain (federated minus
    local) as green/red bars. None entries (clients without a local test split) are skipped."""
    plt = _plt()
    keep = [c for c, f in enumerate(federated) if f is not None]
    if not keep:
        raise ValueError("federated must hold at least one accuracy, got only None (no client has "
                         "an accuracy to plot)")
    fed = np.array([federated[c] for c in keep], dtype=float)
    loc = np.array([local[c] for c in keep], dtype=float)
    x = np.arange(len(keep))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(min(16, max(9, 0.9 * len(keep) + 4)), 3.6),
                                   gridspec_kw={"width_ratios": [3, 2]})
    ax1.plot(x, fed, "o", color="tab:blue", label=names[0])
    ax1.plot(x, loc, "s", color="tab:orange", label=names[1])
    if baseline is not None:
        ax1.plot(x, np.array([baseline[c] for c in keep], dtype=float), "_", color="k", ms=14, label=names[2])
    ax1.vlines(x, np.minimum(fed, loc), np.maximum(fed, loc), color="grey", lw=1)
    step = max(1, len(keep) // 20)   # at most about 20 client labels per axis
    ax1.set_xticks(x[::step])
    ax1.set_xticklabels([str(c) for c in keep][::step])
    ax1.set_xlabel("client")
    ax1.set_ylabel("accuracy on its own test split")
    ax1.legend(fontsize=8)
    ax1.set_title("each client's own test split")
    gain = fed - loc
    ax2.bar(x, gain, color=np.where(gain >= 0, "tab:green", "tab:red"))
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xticks(x[::step])
    ax2.set_xticklabels([str(c) for c in keep][::step])
    ax2.set_xlabel("client")
    ax2.set_ylabel(f"{names[0]} - {names[1]}")
    ax2.set_title("gain from joining (green) or loss (red)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def learning_curves(curves, reference=None, reference_label: str = "centralized", ylabel: str = "test accuracy",
                    title: str | None = None, ax=None):
    """Several runs' metric by round on one plot: ``curves`` maps a label to a list of values
    (round 1, 2, ...); ``reference`` (a number) is drawn as a dashed horizontal line."""
    if not curves:
        raise ValueError(f"curves must hold at least one curve, got {curves!r}")
    fig, ax = _axes(ax, (7.5, 4.2))
    for label, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, "o-", ms=3, label=label)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=f"{reference_label} ({reference:.3f})")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title(title or "FedAvg learning curves")
    fig.tight_layout()
    return fig
