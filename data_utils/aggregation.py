"""Averaging models, layer by layer (notebooks 03, 06 and 07).

A model's weights are a list of NumPy arrays, one per layer variable (``model.get_weights()``).
FedAvg's server step is :func:`weighted_average` with each client's example count as its
coefficient; :func:`sequential_average` is Raj 2020's running ("Polyak") average. Robust
alternatives to the mean are in :mod:`data_utils.robust`.

    >>> import numpy as np
    >>> weighted_average([[np.zeros(2)], [np.ones(2)]], [1, 3])[0].tolist()
    [0.75, 0.75]
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .validate import check_int, check_number

Weights = list  # a list of NumPy arrays, one per layer variable, as from model.get_weights()


def check_weight_lists(weight_lists: Sequence[Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
    """Validate a list of models' weights: non-empty, same layers and shapes, all finite."""
    if len(weight_lists) == 0:
        raise ValueError("need at least one model's weights to aggregate, got an empty list")
    lists = [[np.asarray(w) for w in ws] for ws in weight_lists]
    ref = [w.shape for w in lists[0]]
    for i, ws in enumerate(lists):
        shapes = [w.shape for w in ws]
        if shapes != ref:
            raise ValueError(f"model {i} has layer shapes {shapes}, but model 0 has {ref}; "
                             "all models must share one architecture")
        for j, w in enumerate(ws):
            if not np.all(np.isfinite(w)):
                raise ValueError(f"model {i}, layer {j} contains NaN or infinite values")
    return lists


def weighted_average(weight_lists: Sequence[Sequence[np.ndarray]],
                     coefficients: Sequence[float] | None = None) -> Weights:
    """Layer-by-layer weighted mean of several models' weights.

    ``coefficients`` (e.g. example counts) are normalized to sum to one; None means a uniform
    mean. Layer j of the result is sum_i c_i * weights_i[j]."""
    lists = check_weight_lists(weight_lists)
    if coefficients is None:
        coefficients = np.ones(len(lists))
    coefficients = np.asarray(coefficients, dtype=np.float64)
    if coefficients.shape != (len(lists),):
        raise ValueError(f"need one coefficient per model ({len(lists)}), got {coefficients.shape}")
    if np.any(coefficients < 0) or not np.all(np.isfinite(coefficients)) or coefficients.sum() <= 0:
        raise ValueError("coefficients must be finite, non-negative and not all zero")
    c = coefficients / coefficients.sum()
    return [sum(ci * ws[j].astype(np.float64) for ci, ws in zip(c, lists)).astype(lists[0][j].dtype)
            for j in range(len(lists[0]))]


def sequential_coefficients(n: int, k: float = 0.5) -> np.ndarray:
    """The weight each of ``n`` models ends up with under :func:`sequential_average`.

    Model 0 starts the running average, then ``w = k * w_i + (1 - k) * w`` for i = 1..n-1, so
    model i > 0 gets ``k * (1 - k) ** (n - 1 - i)`` and model 0 gets ``(1 - k) ** (n - 1)``.
    The coefficients sum to one; with k = 0.5 the last model gets 1/2 and the first two
    1/2**(n-1) each: an exponential moving average, not a mean."""
    n = check_int("n (the number of models)", n, low=1)
    k = check_number("k", k, 0, 1)
    coefficients = np.array([k * (1 - k) ** (n - 1 - i) for i in range(n)], dtype=np.float64)
    coefficients[0] = (1 - k) ** (n - 1)
    return coefficients


def sequential_average(weight_lists: Sequence[Sequence[np.ndarray]], k: float = 0.5) -> Weights:
    """Raj 2020's "Polyak" aggregation: start from model 0 and fold in each next model with
    ``w = k * w_i + (1 - k) * w``, layer by layer. Equal to
    ``weighted_average(weight_lists, sequential_coefficients(len(weight_lists), k))``."""
    lists = check_weight_lists(weight_lists)
    sequential_coefficients(len(lists), k)  # validates k
    running = [w.astype(np.float64) for w in lists[0]]
    for ws in lists[1:]:
        running = [k * w.astype(np.float64) + (1 - k) * r for w, r in zip(ws, running)]
    return [r.astype(w.dtype) for r, w in zip(running, lists[0])]
