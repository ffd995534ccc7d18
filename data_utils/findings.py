"""Conclusions computed from the results, each a sentence and the flags behind it (notebook 05).

Notebook 05 computes its conclusions in its own cells (tagged ``conclusions-lesson``), in plain
sight, with :func:`compare` for the sentences; this module is the package's version of them,
and ``tests/test_evaluation.py`` checks that the notebook's cells and :func:`conclusions` agree
on the same numbers.

:func:`conclusions` reads notebook 05's results by name (the table rows keyed by model name, the
per-client gains, FedAvg's accuracy by partition, the binary experiment's scores) and returns one
:class:`Finding` per claim: the sentence the notebook prints, and what a program can check
without reading it: ``claim`` (which comparison), ``relation`` ("above", "below", "on par"),
``held`` (whether the course's expectation held in this run; None when the claim only reports)
and the ``numbers`` the sentence quotes. When a run contradicts an expectation, ``held`` is
False and the sentence says so.

The sentence builders: :func:`compare` and :func:`relation` (one number against another, with
a tolerance), :func:`order_sentence` (are several numbers in the expected order?).

    >>> compare("FedAvg", 0.8812, "the centralized baseline", 0.9005)
    'FedAvg (0.8812) is 1.93 points below the centralized baseline (0.9005)'
    >>> relation(0.8812, 0.9005)
    'below'
    >>> order_sentence({"IID": 0.85, "skewed": 0.80}, ["IID", "skewed"], "accuracy")[1]
    True
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

from .cost import human_bytes
from .validate import check_positive

# What the one-shot rows' ``method`` field says, as the sentences name them.
ONE_SHOT_METHODS = ("uniform mean", "example-weighted mean", "sequential k=0.5")
# The names of the binary experiment's results (see data_utils.binary_task) the conclusions read.
BINARY_CENTRALIZED, BINARY_AVERAGED, BINARY_SUBMODEL_MEAN = (
    "centralized", "averaged, sequential k=0.5", "submodel_mean")


# ---- sentences built from numbers ---------------------------------------------------------------
def compare(name: str, value: float, ref_name: str, ref_value: float, tolerance: float = 0.005) -> str:
    """``"FedAvg (0.8812) is 1.93 points below the centralized baseline (0.9005)"``; within
    ``tolerance`` (accuracy units) it says "on par with" and gives the signed difference."""
    tolerance = check_positive("tolerance", tolerance, allow_zero=True)
    d = (float(value) - float(ref_value)) * 100
    head = f"{name} ({value:.4f}) is"
    if abs(d) <= tolerance * 100:
        return (f"{head} on par with {ref_name} ({ref_value:.4f}): {d:+.2f} points, within the "
                f"{tolerance * 100:.1f}-point tolerance")
    return f"{head} {abs(d):.2f} points {'above' if d > 0 else 'below'} {ref_name} ({ref_value:.4f})"


def relation(value: float, reference: float, tolerance: float = 0.005) -> str:
    """"above", "below" or "on par" (within ``tolerance``)."""
    d = float(value) - float(reference)
    return "on par" if abs(d) <= tolerance else ("above" if d > 0 else "below")


def _points(value: float, reference: float) -> str:
    """"1.23 points below" / "0.40 points above" / "level with" (to two decimals)."""
    d = round((float(value) - float(reference)) * 100, 2)
    return "level with" if d == 0 else f"{abs(d):.2f} points {'below' if d < 0 else 'above'}"


def _side(value: float, reference: float) -> str:
    """The relation :func:`_points` states: "below", "above" or "level"."""
    d = round((float(value) - float(reference)) * 100, 2)
    return "level" if d == 0 else ("below" if d < 0 else "above")


def order_sentence(values: Mapping[str, float], expected: Sequence[str], what: str,
                   tolerance: float = 0.0) -> tuple[str, bool]:
    """Says whether ``values`` (name -> number) fall in the ``expected`` order, highest first
    (a step down smaller than ``tolerance`` still counts as in order). Returns the sentence and
    whether the order held."""
    missing = [k for k in expected if k not in values]
    if missing:
        raise ValueError(f"no value for {missing}; have {sorted(values)}")
    held = all(values[a] >= values[b] - tolerance for a, b in zip(expected, expected[1:]))
    listed = ", ".join(f"{k} {values[k]:.4f}" for k in expected)
    if held:
        return f"{what}: {listed}, the expected order (each at least as high as the next).", True
    actual = " > ".join(sorted(expected, key=lambda k: -values[k]))
    return (f"{what}: {listed}. NOT the expected order {' > '.join(expected)}; this run gave "
            f"{actual}.", False)


# ---- findings -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One conclusion: ``claim`` names the comparison (e.g. ``"fed_vs_baseline"``), ``sentence``
    says it, ``relation`` is how the first number compares with the second ("above", "below",
    "on par"; None for claims that are not one comparison), ``held`` whether the course's
    expectation held in this run (None: the claim only reports), ``numbers`` the values the
    sentence is built from."""

    claim: str
    sentence: str
    relation: str | None = None
    held: bool | None = None
    numbers: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The finding as a plain dict (for a results JSON)."""
        return asdict(self)


def _one(table: Mapping[str, Mapping], kind: str) -> Mapping:
    rows = [r for r in table.values() if r.get("kind") == kind]
    if len(rows) != 1:
        raise ValueError(f"the table must hold exactly one row of kind {kind!r}, got {len(rows)}")
    return rows[0]


def _available(table: Mapping[str, Mapping], name: str) -> Mapping:
    if name not in table:
        raise ValueError(f"no row named {name!r} in the table; have {sorted(table)}")
    if not table[name].get("available", True):
        raise ValueError(f"row {name!r} has no numbers ({table[name].get('note')})")
    return table[name]


def _one_shot(table: Mapping[str, Mapping]) -> dict[str, float]:
    rows = {r.get("method"): r for r in table.values() if r.get("kind") == "one_shot"}
    missing = [m for m in ONE_SHOT_METHODS if m not in rows]
    if missing:
        raise ValueError(f"no one-shot row with method {missing} (rows of kind 'one_shot' name their "
                         f"method, one of {list(ONE_SHOT_METHODS)})")
    return {m: rows[m]["accuracy"] for m in ONE_SHOT_METHODS}


def fed_vs_baseline(fed: Mapping, base: Mapping) -> Finding:
    """The federated model against the centralized baseline, and what each client uploaded."""
    name, rounds = fed.get("method", fed["model"]), fed["rounds"]
    sentence = (compare(f"{name} after {rounds} rounds", fed["accuracy"], "the centralized baseline",
                        base["accuracy"])
                + f"; each client uploaded {human_bytes(fed['upload_bytes_per_client'])} of model weights "
                f"instead of {human_bytes(base['upload_bytes_per_client'])} of raw images.")
    return Finding("fed_vs_baseline", sentence, relation(fed["accuracy"], base["accuracy"]), None,
                   {"federated": fed["accuracy"], "baseline": base["accuracy"], "rounds": rounds,
                    "federated_upload_bytes": fed["upload_bytes_per_client"],
                    "centralized_upload_bytes": base["upload_bytes_per_client"]})


def fed_vs_local(fed: Mapping, local_mean: Mapping) -> Finding:
    """The federated model against the local-only models on the shared test set. Expected:
    above their mean (``numbers["above_best_client"]``: above the best of them too)."""
    acc, mean, best = fed["accuracy"], local_mean["accuracy"], local_mean["accuracy_max"]
    rel = relation(acc, mean)
    tail = {"above": ("It is also above the best single client "
                      f"({best:.4f}): on the shared test set every client gains by joining"
                      if acc > best else
                      f"Joining paid off on average, though the best single client ({best:.4f}) "
                      "did better on the shared test set"),
            "on par": "On the shared test set, federation bought nothing over training alone in this run",
            "below": "In this run the federated model is WORSE than training alone on the shared test set"}[rel]
    sentence = compare("The federated model", acc, "the mean local-only model", mean) + ". " + tail + "."
    return Finding("fed_vs_local", sentence, rel, rel == "above",
                   {"federated": acc, "local_mean": mean, "local_min": local_mean["accuracy_min"],
                    "local_max": best, "above_best_client": bool(acc > best)})


def who_gains(gains: Mapping | None) -> Finding:
    """On the clients' own test splits (:func:`data_utils.report.per_client_gains`), who gains
    from the federated model. Expected: no client loses."""
    if gains is None:
        return Finding("who_gains", "No client kept a local test split, so this run cannot say who gains "
                       "from joining.")
    n, losers, g = len(gains["clients"]), list(gains["losers"]), gains["gain"]
    sentence = (f"On their own test splits, {len(gains['gainers'])} of {n} clients gain from the federated "
                f"model and {len(losers)} lose (gain from {g['min']:+.4f} to {g['max']:+.4f}, median "
                f"{g['median']:+.4f})"
                + (": no client would have been better off alone." if not losers else
                   f": for client(s) {', '.join(map(str, losers))} their own model fits their own data better."))
    return Finding("who_gains", sentence, None, not losers,
                   {"clients": n, "gainers": list(gains["gainers"]), "losers": losers,
                    "gain_min": g["min"], "gain_median": g["median"], "gain_max": g["max"]})


def one_shot_vs_fedavg(one_shot: Mapping[str, float], fed: Mapping) -> Finding:
    """The best one-shot average of the local-only models against FedAvg. Expected: below it
    (averaging finished models once is no substitute for averaging every round)."""
    best = max(one_shot.items(), key=lambda kv: kv[1])
    rel = relation(best[1], fed["accuracy"])
    sentence = (f"Of the one-shot averages the {best[0]} does best: "
                + compare("it", best[1], f"{fed['rounds']}-round FedAvg", fed["accuracy"])
                + (": averaging finished models once is not a substitute for averaging every round."
                   if rel == "below" else ": in this run one round of averaging finished models was enough."))
    return Finding("one_shot_vs_fedavg", sentence, rel, rel == "below",
                   {**dict(one_shot), "best": best[0], "federated": fed["accuracy"], "rounds": fed["rounds"]})


def sequential_vs_weighted(one_shot: Mapping[str, float]) -> Finding:
    """Raj 2020's sequential update against the example-weighted mean (reported, no expectation)."""
    seq, weighted = one_shot["sequential k=0.5"], one_shot["example-weighted mean"]
    sentence = (compare("Raj 2020's sequential k=0.5 update", seq, "the example-weighted mean", weighted)
                + "; it weights the last client 1/2 and the first two 1/2^(n-1) each, so it is not a mean.")
    return Finding("sequential_vs_weighted", sentence, relation(seq, weighted), None,
                   {"sequential": seq, "weighted": weighted})


def heterogeneity_finding(accuracy: Mapping[str, float], expected: Sequence[str], centralized: float) -> Finding:
    """FedAvg's accuracy by partition (e.g. the mean of the last rounds): expected to fall in the
    order ``expected`` (least skewed first). ``relation``: how the worst partition ends against
    the centralized model on the same images."""
    sentence, held = order_sentence(accuracy, expected, "FedAvg's accuracy by partition "
                                    "(mean of the last rounds)", tolerance=0.005)
    worst = min(accuracy, key=accuracy.get)
    sentence += (f" The centralized model on the same images reached {centralized:.4f}; "
                 f"the worst partition, {worst}, ends {_points(accuracy[worst], centralized)} it.")
    return Finding("heterogeneity_order", sentence, _side(accuracy[worst], centralized), held,
                   {"accuracy": dict(accuracy), "expected_order": list(expected),
                    "order": sorted(accuracy, key=lambda k: -accuracy[k]), "centralized": centralized,
                    "worst": worst, "worst_vs_centralized_points": round((accuracy[worst] - centralized) * 100, 2)})


def binary_vs_paper(binary: Mapping[str, Mapping], paper: Mapping[str, Mapping]) -> Finding:
    """Raj 2020's binary task: the averaged model against the centralized one, in the paper and
    here (``relation``: ours, "below", "above" or "level"). Expected: the averaged model beats
    the mean submodel."""
    central = binary[BINARY_CENTRALIZED]["accuracy"]
    averaged = binary[BINARY_AVERAGED]["accuracy"]
    local_mean = binary[BINARY_SUBMODEL_MEAN]["accuracy"]
    p_central, p_averaged = paper["centralized"]["accuracy"], paper["averaged"]["accuracy"]
    beats = averaged > local_mean
    sentence = (f"Raj 2020's binary task: the paper's averaged model is {_points(p_averaged, p_central)} "
                f"its centralized one ({p_averaged:.4f} vs {p_central:.4f}); ours is "
                f"{_points(averaged, central)} our centralized one ({averaged:.4f} vs {central:.4f}), and "
                + ("the averaged model beats the mean submodel" if beats else
                   "the averaged model does NOT beat the mean submodel")
                + f" ({local_mean:.4f}).")
    return Finding("binary_vs_paper", sentence, _side(averaged, central), beats,
                   {"centralized": central, "averaged": averaged, "submodel_mean": local_mean,
                    "paper_centralized": p_central, "paper_averaged": p_averaged,
                    "paper_relation": _side(p_averaged, p_central)})


def conclusions(table: Mapping[str, Mapping], federated: str, gains: Mapping | None = None,
                heterogeneity: Mapping[str, float] | None = None, heterogeneity_central: float | None = None,
                heterogeneity_order: Sequence[str] = (), binary: Mapping | None = None,
                paper: Mapping | None = None, smoke: bool = False) -> list[Finding]:
    """Notebook 05's closing findings, each read from the results given by name:

    - ``table``: the table rows keyed by model name (:func:`data_utils.report.model_row`); it
      must hold one row of kind ``"baseline"``, one of kind ``"local_mean"`` and the one-shot rows
      (kind ``"one_shot"``, their ``method`` one of :data:`ONE_SHOT_METHODS`);
    - ``federated``: the name of the federated model's row (its ``method`` field, when set, names
      it in the sentences);
    - ``gains``: :func:`data_utils.report.per_client_gains`, None when no client kept a local
      test split;
    - ``heterogeneity``: partition label -> FedAvg's accuracy at the end (e.g.
      :func:`data_utils.report.tail_mean`), ``heterogeneity_central`` the centralized model on
      the same images, ``heterogeneity_order`` the labels in the order the course expects
      (:data:`data_utils.heterogeneity.EXPECTED_ORDER`);
    - ``binary``: the binary experiment's scores by model name (``"centralized"``,
      ``"averaged, sequential k=0.5"``, ``"submodel_mean"``, each with an ``"accuracy"``), and
      ``paper`` the paper's (:data:`data_utils.binary_task.RAJ_2020`);
    - ``smoke``: a smoke run adds a last finding saying the numbers describe it.

    Returns the findings in the order the notebook prints them: ``fed_vs_baseline``,
    ``fed_vs_local``, ``who_gains``, ``one_shot_vs_fedavg``, ``sequential_vs_weighted``, then
    ``heterogeneity_order``, ``binary_vs_paper`` and ``smoke_run`` when given."""
    fed, base, local_mean = _available(table, federated), _one(table, "baseline"), _one(table, "local_mean")
    one_shot = _one_shot(table)
    out = [fed_vs_baseline(fed, base), fed_vs_local(fed, local_mean), who_gains(gains),
           one_shot_vs_fedavg(one_shot, fed), sequential_vs_weighted(one_shot)]
    if heterogeneity:
        if heterogeneity_central is None or not heterogeneity_order:
            raise ValueError("heterogeneity results need heterogeneity_central (the centralized model on the "
                             "same images) and heterogeneity_order (the expected order of the labels)")
        out.append(heterogeneity_finding(heterogeneity, heterogeneity_order, heterogeneity_central))
    if binary:
        if paper is None:
            raise ValueError("binary results need the paper's numbers (paper=RAJ_2020)")
        out.append(binary_vs_paper(binary, paper))
    if smoke:
        out.append(Finding("smoke_run", "This was a smoke run (few images, few epochs and rounds): the "
                           "sentences above describe it, not the workshop setting."))
    return out


def by_claim(findings: Sequence[Finding]) -> dict[str, Finding]:
    """The findings keyed by their ``claim``.

        >>> by_claim([Finding("smoke_run", "A smoke run.")])["smoke_run"].held is None
        True
    """
    return {f.claim: f for f in findings}

