"""One table of models scored on the same test set, and the per-client view (notebook 05).

- **Table rows** (:func:`model_row`, :func:`unavailable_row`, :func:`mean_row`,
  :func:`summary_rows`): one row per model, with its name and kind, accuracy, macro
  precision/recall/F1 and its training cost (:mod:`data_utils.cost`). A notebook keeps them in a
  dict keyed by model name; :func:`data_utils.findings.conclusions` reads that dict.
- **Summaries of numbers** (:func:`spread`, :func:`tail_mean`): mean, worst, median, best of some
  accuracies; where a noisy learning curve ended.
- **Per client** (:func:`per_client_gains`): on each client's own test data, who gains from
  joining the federation and who loses.

    >>> row = model_row("centralized baseline", "baseline",
    ...                 {"accuracy": 0.9, "precision": 0.9, "recall": 0.9, "f1": 0.9})
    >>> row["model"], row["accuracy"], row["rounds"]
    ('centralized baseline', 0.9, None)
    >>> g = per_client_gains(federated=[0.9, 0.5, None], local=[0.8, 0.6, None])
    >>> g["gainers"], g["losers"], g["clients"]
    ([0], [1], [0, 1])
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .cost import COST_KEYS
from .validate import check_int, check_number, check_positive

METRICS = ("accuracy", "precision", "recall", "f1")


# ---- table rows --------------------------------------------------------------------------------
def model_row(model: str, kind: str, metrics: Mapping, cost: Mapping | None = None, **extra) -> dict:
    """One table row: the model's name and kind, its four metrics, its training cost (a dict
    from :mod:`data_utils.cost`, None: unknown), and any ``extra`` fields (e.g. ``client=3``,
    ``method="uniform mean"``)."""
    missing = [m for m in METRICS if m not in metrics]
    if missing:
        raise ValueError(f"metrics for {model!r} lack {missing}; need {list(METRICS)}")
    row = {"model": str(model), "kind": str(kind), "available": True,
           **{m: float(metrics[m]) for m in METRICS}}
    row.update({k: (cost or {}).get(k) for k in COST_KEYS})
    row.update(extra)
    return row


def unavailable_row(model: str, kind: str, reason: str, **extra) -> dict:
    """A row for a model that could not be trained or loaded here: no numbers, and why."""
    return {"model": str(model), "kind": str(kind), "available": False, "note": str(reason),
            **{m: None for m in METRICS}, **{k: None for k in COST_KEYS}, **extra}


def spread(values) -> dict:
    """Mean, standard deviation, worst (min), median and best (max) of some numbers (None
    values are left out).

        >>> spread([0.5, 0.7, None, 0.9])["median"]
        0.7
    """
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        raise ValueError("need at least one value")
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "median": float(np.median(v)), "max": float(v.max())}


def mean_row(model: str, rows: Sequence[Mapping], kind: str = "local_mean") -> dict:
    """The mean of several rows' metrics (and of their examples processed), with the spread of
    the accuracy across them (``accuracy_std``, ``accuracy_min``, ``accuracy_median``,
    ``accuracy_max``) and how many rows it averages (``count``). Unavailable rows are left out."""
    rows = [r for r in rows if r.get("available", True)]
    if not rows:
        raise ValueError("mean_row needs at least one available row")
    out = model_row(model, kind, {m: float(np.mean([r[m] for r in rows])) for m in METRICS})
    acc = spread([r["accuracy"] for r in rows])
    out.update({f"accuracy_{k}": acc[k] for k in ("std", "min", "median", "max")})
    if all(r.get("examples_processed") is not None for r in rows):
        out["examples_processed"] = int(round(np.mean([r["examples_processed"] for r in rows])))
        out["rounds"] = 0
        out["upload_bytes_per_client"] = float(np.mean([r["upload_bytes_per_client"] for r in rows]))
        out["upload_bytes_max"] = int(max(r["upload_bytes_max"] for r in rows))
    out["count"] = len(rows)
    return out


def summary_rows(rows: Sequence[Mapping] | Mapping[str, Mapping],
                 keep_kinds: Sequence[str] = ("local",),
                 beside: Sequence[Mapping] | Mapping[str, Mapping] | None = None,
                 suffix: str = "_iid") -> list[dict]:
    """The rows ``make course`` prints (every row except those of the kinds in ``keep_kinds``:
    single local-only clients): model, kind, available, the four metrics and the cost, None
    where a model was not available. ``rows`` is a list of rows or a dict of them by name.

    ``beside``: the same models in a second setting (e.g. notebook 05's IID run next to its
    Dirichlet one), matched by model name; each summary row then also carries that setting's
    four metrics as ``accuracy<suffix>``, ... (None where the model has no row there or was
    not available).

        >>> main = [model_row("FedAvg", "fedavg_manual", {"accuracy": 0.8, "precision": 0.8, "recall": 0.8, "f1": 0.7})]
        >>> iid = [model_row("FedAvg", "fedavg_manual", {"accuracy": 0.9, "precision": 0.9, "recall": 0.9, "f1": 0.9})]
        >>> row = summary_rows(main, beside=iid)[0]
        >>> row["accuracy"], row["accuracy_iid"], row["f1_iid"]
        (0.8, 0.9, 0.9)
    """
    if isinstance(rows, Mapping):
        rows = list(rows.values())
    keys = ("model", "kind", "available", *METRICS, *COST_KEYS)
    out = [{k: r.get(k) for k in keys} for r in rows if r.get("kind") not in keep_kinds]
    if beside is not None:
        if not isinstance(suffix, str) or not suffix:
            raise ValueError(f"suffix must be a non-empty string such as '_iid', got {suffix!r}")
        other = beside if isinstance(beside, Mapping) else {r["model"]: r for r in beside}
        for row in out:
            match = other.get(row["model"]) or {}
            row.update({f"{m}{suffix}": match.get(m) if match.get("available", True) else None
                        for m in METRICS})
    return out


def tail_mean(values: Sequence[float], last: int = 3) -> float:
    """The mean of the last ``last`` values of a learning curve (fewer if the curve is shorter):
    a steadier summary of where a noisy FedAvg run ended than its final round alone.

        >>> tail_mean([0.1, 0.5, 0.6, 0.7])
        0.6
    """
    last = check_int("last", last, low=1)
    if len(values) == 0:
        raise ValueError("the curve is empty")
    return float(np.mean(np.asarray(values, dtype=np.float64)[-last:]))


# ---- per-client view -------------------------------------------------------------------------------
def per_client_gains(federated: Sequence[float | None], local: Sequence[float | None],
                     tolerance: float = 0.0) -> dict:
    """Who gains from joining the federation: ``federated[c]`` and ``local[c]`` are client c's
    accuracy on its own local test split with the federated model and with its local-only model
    (None: the client has no local test split and is left out).

    Returns the gains (federated - local, None for left-out clients), the clients that gain
    (gain > ``tolerance``), lose (gain < -``tolerance``) or tie, and the spread (worst, median,
    best) of the federated accuracy, the local accuracy and the gain."""
    if len(federated) != len(local):
        raise ValueError(f"need one federated and one local accuracy per client, got "
                         f"{len(federated)} and {len(local)}")
    tolerance = check_positive("tolerance", tolerance, allow_zero=True)
    gains, scored = [], []
    for c, (f, l) in enumerate(zip(federated, local)):
        if (f is None) != (l is None):
            raise ValueError(f"client {c} has one accuracy but not the other ({f!r}, {l!r})")
        if f is None:
            gains.append(None)
            continue
        f = check_number(f"federated[{c}]", f, 0, 1)
        l = check_number(f"local[{c}]", l, 0, 1)
        gains.append(f - l)
        scored.append(c)
    if not scored:
        raise ValueError("no client has a local test split to compare on")
    g = np.array([gains[c] for c in scored])
    return {
        "gains": gains, "clients": scored,
        "gainers": [c for c in scored if gains[c] > tolerance],
        "losers": [c for c in scored if gains[c] < -tolerance],
        "ties": [c for c in scored if abs(gains[c]) <= tolerance],
        "federated": spread([federated[c] for c in scored]),
        "local": spread([local[c] for c in scored]),
        "gain": spread(g),
        "worst_client": int(scored[int(np.argmin([federated[c] for c in scored]))]),
        "best_client": int(scored[int(np.argmax([federated[c] for c in scored]))]),
        "biggest_loser": int(scored[int(np.argmin(g))]),
        "biggest_gainer": int(scored[int(np.argmax(g))]),
        "tolerance": tolerance,
    }
