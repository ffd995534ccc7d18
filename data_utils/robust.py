"""Robust aggregation of client updates: what a server can use instead of the plain mean when
some clients may send garbage or attacks (notebook 07; notebook 06 uses :func:`plain_mean` and
:class:`TffAggregatorHook`).

Every aggregator here has the signature of the ``aggregate`` hook of
:func:`data_utils.fedavg.fedavg_round`: ``aggregator(deltas, counts) -> delta``, where ``deltas``
is one list of per-layer arrays (new weights minus global weights) per client and ``counts``
their example counts.

- :func:`coordinate_median`: each coordinate's median over the clients (Yin et al. 2018);
- :func:`trimmed_mean`: each coordinate's mean after dropping the largest and the smallest
  values (Yin et al. 2018);
- :func:`norm_clipped_mean`: each update scaled down to an L2 norm of at most ``clip_norm``
  (by default the median norm of the round), then the example-weighted mean;
- :func:`norm_zeroed_mean`: updates with an L2 norm above ``max_norm`` are replaced by zeros
  (as ``tff.aggregators.zeroing_factory`` does), then the example-weighted mean.

Notebook 07 writes the median, the trimmed mean and norm clipping out in its own cells (tagged
``robust-lesson``), runs them, and ``tests/test_robust.py`` checks them against these.

The median and the trimmed mean are unweighted: they treat every client alike, whatever its
example count (a weighted median would let one client claim a huge count and win).

    >>> import numpy as np
    >>> deltas = [[np.array([1.0, 2.0])], [np.array([1.2, 2.2])], [np.array([100.0, -100.0])]]
    >>> plain_mean(deltas)[0].round(2).tolist()        # one attacker drags the mean away
    [34.07, -31.93]
    >>> coordinate_median(deltas)[0].tolist()           # the median ignores it
    [1.2, 2.0]
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Sequence

import numpy as np

from .aggregation import check_weight_lists, weighted_average
from .validate import check_choice, check_int, check_number, check_positive

AGGREGATORS = ("mean", "median", "trimmed_mean", "norm_clip", "norm_zero")


def _check(deltas, counts) -> tuple[list[list[np.ndarray]], np.ndarray | None]:
    lists = check_weight_lists(deltas)  # empty list, mismatched layers, NaN/inf
    if counts is None:
        return lists, None
    c = np.asarray(counts, dtype=np.float64)
    if c.shape != (len(lists),):
        raise ValueError(f"counts must hold one count per client update ({len(lists)}), got shape "
                         f"{c.shape}")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError(f"counts must be finite and non-negative, got {c.tolist()}")
    return lists, c


def _stack(lists, j) -> np.ndarray:
    return np.stack([ws[j].astype(np.float64) for ws in lists])


def update_norms(deltas: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """The L2 norm of each client's whole update (all layers together)."""
    lists = check_weight_lists(deltas)
    return np.array([math.sqrt(sum(float(np.sum(w.astype(np.float64) ** 2)) for w in ws))
                     for ws in lists])


def coordinate_median(deltas, counts=None) -> list[np.ndarray]:
    """Coordinate-wise median of the clients' updates (counts are checked, not used)."""
    lists, _ = _check(deltas, counts)
    return [np.median(_stack(lists, j), axis=0).astype(lists[0][j].dtype)
            for j in range(len(lists[0]))]


def _check_trim_fraction(trim_fraction) -> float:
    return check_number("trim_fraction", trim_fraction, 0, 0.5, high_open=True)


def trimmed_count(n: int, trim_fraction: float) -> int:
    """How many values :func:`trimmed_mean` drops at each end for ``n`` clients:
    ``ceil(trim_fraction * n)``, but never so many that nothing is left.

    >>> trimmed_count(10, 0.1), trimmed_count(9, 0.1), trimmed_count(3, 0.4), trimmed_count(2, 0.4)
    (1, 1, 1, 0)
    """
    n = check_int("n", n, low=1)
    trim_fraction = _check_trim_fraction(trim_fraction)
    return min(math.ceil(trim_fraction * n - 1e-9), (n - 1) // 2)


def trimmed_mean(deltas, counts=None, trim_fraction: float = 0.1) -> list[np.ndarray]:
    """Coordinate-wise trimmed mean: for every coordinate drop the ``k`` largest and ``k``
    smallest values (``k = trimmed_count(n, trim_fraction)``), average the rest.

    >>> import numpy as np
    >>> deltas = [[np.array([v])] for v in (1.0, 2.0, 3.0, 4.0, 1000.0)]
    >>> trimmed_mean(deltas, trim_fraction=0.2)[0].tolist()   # drops 1.0 and 1000.0
    [3.0]
    """
    trim_fraction = _check_trim_fraction(trim_fraction)
    lists, _ = _check(deltas, counts)
    k = trimmed_count(len(lists), trim_fraction)
    out = []
    for j in range(len(lists[0])):
        values = np.sort(_stack(lists, j), axis=0)
        out.append(values[k:len(lists) - k].mean(axis=0).astype(lists[0][j].dtype))
    return out


def norm_clipped_mean(deltas, counts=None, clip_norm: float | None = None) -> list[np.ndarray]:
    """Scale each update to an L2 norm of at most ``clip_norm`` (None: the median norm of this
    round's updates, an adaptive bound an attacker in the minority cannot move much), then take
    the example-weighted mean (uniform without counts).

    >>> import numpy as np
    >>> deltas = [[np.array([3.0, 4.0])], [np.array([0.3, 0.4])]]    # norms 5 and 0.5
    >>> norm_clipped_mean(deltas, clip_norm=1.0)[0].round(2).tolist()  # (0.6 + 0.3) / 2, ...
    [0.45, 0.6]
    """
    clip_norm = check_positive("clip_norm", clip_norm, allow_zero=True, allow_none=True)
    lists, c = _check(deltas, counts)
    norms = update_norms(lists)
    bound = float(np.median(norms)) if clip_norm is None else clip_norm
    scales = np.minimum(1.0, bound / np.maximum(norms, 1e-30))
    clipped = [[w * s for w in ws] for ws, s in zip(lists, scales)]
    return weighted_average(clipped, c)


def norm_zeroed_mean(deltas, counts=None, max_norm: float = 1.0) -> list[np.ndarray]:
    """Replace every update whose L2 norm exceeds ``max_norm`` by zeros, then take the
    example-weighted mean (a zeroed client still counts with its weight, as in TFF).

    >>> import numpy as np
    >>> deltas = [[np.array([3.0, 4.0])], [np.array([0.3, 0.4])]]    # norms 5 and 0.5
    >>> norm_zeroed_mean(deltas, [1, 3], max_norm=1.0)[0].round(3).tolist()  # 3/4 of [0.3, 0.4]
    [0.225, 0.3]
    """
    max_norm = check_positive("max_norm", max_norm, allow_zero=True)
    lists, c = _check(deltas, counts)
    norms = update_norms(lists)
    kept = [ws if n <= max_norm else [np.zeros_like(w) for w in ws] for ws, n in zip(lists, norms)]
    return weighted_average(kept, c)


def plain_mean(deltas, counts=None) -> list[np.ndarray]:
    """The example-weighted mean (FedAvg's own aggregation), with the same checks."""
    lists, c = _check(deltas, counts)
    return weighted_average(lists, c)


def make_aggregator(name: str, **options) -> Callable:
    """An ``aggregate(deltas, counts)`` callable by name: one of :data:`AGGREGATORS`, with its
    options (``trim_fraction``, ``clip_norm``, ``max_norm``).

    >>> import numpy as np
    >>> aggregate = make_aggregator("trimmed_mean", trim_fraction=0.2)
    >>> aggregate([[np.array([v])] for v in (1.0, 2.0, 3.0, 4.0, 1000.0)], None)[0].tolist()
    [3.0]
    """
    check_choice("aggregator", name, AGGREGATORS)
    table = {"mean": (plain_mean, set()), "median": (coordinate_median, set()),
             "trimmed_mean": (trimmed_mean, {"trim_fraction"}),
             "norm_clip": (norm_clipped_mean, {"clip_norm"}),
             "norm_zero": (norm_zeroed_mean, {"max_norm"})}
    fn, allowed = table[name]
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"aggregator {name!r} takes options {sorted(allowed) or 'none'}, "
                         f"got {sorted(unknown)}")
    return partial(fn, **options) if options else fn


def _flat_measurements(tree, prefix: str = "") -> dict:
    """TFF's nested measurements as ``{"a/b": number}`` (empty entries left out)."""
    out = {}
    for key, value in tree.items():
        if hasattr(value, "items"):
            out.update(_flat_measurements(value, f"{prefix}{key}/"))
        elif np.ndim(value) == 0 and not isinstance(value, tuple):
            out[f"{prefix}{key}"] = float(value)
    return out


class TffAggregatorHook:
    """A TFF aggregation factory used as the ``aggregate(deltas, counts)`` hook of
    :func:`data_utils.fedavg.run_fedavg`, e.g. ``tff.learning.robust_aggregator()`` or
    ``tff.aggregators.clipping_factory(...)``: TFF's own code aggregates the manual loop's
    updates, and its state (adaptive clipping and zeroing norms) carries over from round to
    round. ``measurements`` holds what TFF reported each round (norms, clipped counts).

    Build it before the Keras models you train with (in Keras 2, a TFF build can invalidate
    Keras models made earlier)."""

    def __init__(self, factory, template_weights):
        # The caller made ``factory`` with TFF, so it imports; no data_utils.tff_fedavg needed here
        # (that would make this low-level module depend on the experiment machinery).
        import tensorflow_federated as tff

        template = check_weight_lists([template_weights])[0]
        self.dtypes = [w.dtype for w in template]
        value_type = tff.types.to_type([(np.float32, w.shape) for w in template])
        self.weighted = isinstance(factory, tff.aggregators.WeightedAggregationFactory)
        if self.weighted:
            self.process = factory.create(value_type, tff.TensorType(np.float32))
        elif isinstance(factory, tff.aggregators.UnweightedAggregationFactory):
            self.process = factory.create(value_type)
        else:
            raise ValueError(f"factory must be a tff.aggregators aggregation factory, got "
                             f"{type(factory).__name__}")
        self.shapes = [w.shape for w in template]
        self.state = self.process.initialize()
        self.measurements: list[dict] = []

    def __call__(self, deltas, counts=None) -> list[np.ndarray]:
        lists, c = _check(deltas, counts)
        if [w.shape for w in lists[0]] != self.shapes:
            raise ValueError(f"updates have layer shapes {[w.shape for w in lists[0]]}, the "
                             f"aggregator was built for {self.shapes}")
        values = [[np.asarray(w, dtype=np.float32) for w in ws] for ws in lists]
        if self.weighted:
            weights = [np.float32(x) for x in (c if c is not None else np.ones(len(lists)))]
            out = self.process.next(self.state, values, weights)
        else:
            out = self.process.next(self.state, values)
        self.state = out.state
        self.measurements.append(_flat_measurements(out.measurements))
        return [np.asarray(r, dtype=d) for r, d in zip(out.result, self.dtypes)]
