"""Figures the notebooks show. Each function draws on a new (or given) matplotlib figure and
returns it, so a notebook cell shows it and a script can save it."""
from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib.pyplot as plt

    return plt


def image_grid(images, labels, class_names, rows: int = 3, cols: int = 8, title: str | None = None,
               predictions=None):
    """A grid of images titled with their class names (and predictions, if given: wrong ones red)."""
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
