"""FedAvg on the same images split four ways, from IID to pathological (notebook 05).

FedAvg's promise holds best when clients look alike. :func:`heterogeneity_runs` trains the
hand-written FedAvg with one set of settings on one set of training images, partitioned by each
scheme of :data:`HETEROGENEITY_SCHEMES` (IID, Dirichlet(0.5), Dirichlet(0.1), 2 classes per
client), plus a centralized model on the same images, the target FedAvg tries to reach.
:func:`classes_per_round` counts the classes a round's clients hold between them: with few
clients per round on a skewed split, the split and the sampling are confounded.
:data:`EXPECTED_ORDER` is the order the course expects their final accuracies in
(notebook 05's conclusions and :func:`data_utils.findings.conclusions` check it).

    >>> from data_utils.experiment import Experiment
    >>> variants = dict(heterogeneity_experiments(Experiment.from_params(smoke=True), train_examples=1500))
    >>> list(variants)
    ['IID', 'Dirichlet(0.5)', 'Dirichlet(0.1)', 'pathological (2 classes)']
    >>> variants["Dirichlet(0.1)"].alpha, variants["IID"].train_limit
    (0.1, 1500)
    >>> dict(heterogeneity_experiments(Experiment.from_params(), test_examples=2000))["IID"].test_limit
    2000
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from .validate import check_int

# The heterogeneity comparison: FedAvg on the same clients' data split four ways.
HETEROGENEITY_SCHEMES = (
    {"label": "IID", "partition": "iid"},
    {"label": "Dirichlet(0.5)", "partition": "dirichlet", "alpha": 0.5},
    {"label": "Dirichlet(0.1)", "partition": "dirichlet", "alpha": 0.1},
    {"label": "pathological (2 classes)", "partition": "pathological", "classes_per_client": 2},
)
# FedAvg's accuracy should fall in this order (least skewed first). The pathological split is
# left out: whether it ends below Dirichlet(0.1) after a few rounds depends on the run.
EXPECTED_ORDER = ("IID", "Dirichlet(0.5)", "Dirichlet(0.1)")


def heterogeneity_experiments(exp, schemes: Sequence[Mapping] = HETEROGENEITY_SCHEMES,
                              train_examples: int | None = None,
                              test_examples: int | None = None) -> list[tuple[str, object]]:
    """``(label, experiment)`` for each partition scheme: ``exp`` with that scheme (its other
    parameters kept) and, when ``train_examples`` (``test_examples``) is set, at most that many
    training (test) images, a seeded random subset (:func:`data_utils.experiment.load_data`)."""
    train_examples = check_int("train_examples", train_examples, low=1, allow_none=True)
    test_examples = check_int("test_examples", test_examples, low=1, allow_none=True)

    def cut(limit, n):
        return limit if n is None else min(limit, n) if limit is not None else n

    limit, test_limit = cut(exp.train_limit, train_examples), cut(exp.test_limit, test_examples)
    out = []
    for spec in schemes:
        spec = dict(spec)
        label = spec.pop("label")
        out.append((label, exp.with_(train_limit=limit, test_limit=test_limit, **spec)))
    return out


def heterogeneity_runs(exp, cfg, init, schemes: Sequence[Mapping] = HETEROGENEITY_SCHEMES,
                       train_examples: int | None = None, test_examples: int | None = None,
                       log: Callable[[str], None] = print,
                       progress: bool = True, prefix: str = "hetero", centralized: bool = True) -> dict:
    """FedAvg (the hand-written loop, proven equal to TFF's) with settings ``cfg`` from ``init``
    on each partition scheme, on the same training images; plus a centralized reference trained
    on the IID scheme's pooled local-train data with the course's default training settings.
    ``train_examples``/``test_examples``: train on at most that many images, and score every
    round and the centralized model on at most that many test images (the same ones for all).

    Returns ``{"runs": {label: round rows}, "classes_per_client": {label: classes per client},
    "label_counts": {label: clients x classes counts}, "centralized": {"accuracy", "examples",
    "training"}, "train_examples": n, "test_examples": n}``. Every run is saved (artifacts
    ``<prefix>_<i>``, ``hetero_baseline``) and reused when its inputs match; ``centralized=False`` skips the
    centralized reference (``"centralized"`` is then None). Partitions are made with
    :func:`data_utils.partition.make_partition` (notebook 01's saved partition is left alone)."""
    from .artifacts import cached_weights
    from .baselines import training_params
    from .experiment import client_arrays, load_data
    from .fedavg import load_fedavg_run, run_fedavg, save_fedavg_run
    from .models import WeightsEvaluator
    from .partition import make_partition
    from .training import client_trainer, train_weights, training_config

    if not schemes:
        raise ValueError("need at least one partition scheme")
    if not isinstance(prefix, str) or not prefix or "/" in prefix:
        raise ValueError(f"prefix must be a plain artifact name such as 'hetero', got {prefix!r}")
    runs, classes_seen, counts, iid, first = {}, {}, {}, None, None
    for i, (label, e) in enumerate(heterogeneity_experiments(exp, schemes, train_examples, test_examples)):
        data = load_data(e)
        part = make_partition(data.y_train, **e.partition_kwargs())
        counts[label] = np.asarray(part.label_counts(data.y_train, data.num_classes))
        classes_seen[label] = [int(np.count_nonzero(row)) for row in counts[label]]
        first = first or (e, part)
        if e.partition == "iid" and iid is None:
            iid = (e, part)
        name = f"{prefix}_{i}"
        run, status = load_fedavg_run(name, dict(e.as_dict(), label=label), cfg)
        if run is not None:
            log(f"{label}: reused the saved run ({name})")
            runs[label] = run["history"]
            continue
        log(f"{label}: {status}; training it now")
        evaluate = WeightsEvaluator(e.model, data.input_shape, data.num_classes, data.x_test, data.y_test)
        trainer = client_trainer(e.model, data.input_shape, data.num_classes, cfg.client_lr, cfg.client_momentum)
        weights, history = run_fedavg(trainer, init, client_arrays(e, data, part), cfg,
                                      evaluate=evaluate, progress=progress, desc=f"FedAvg {label}")
        save_fedavg_run(name, dict(e.as_dict(), label=label), cfg, weights, history)
        runs[label] = [r.as_dict() for r in history]
    out = {"runs": runs, "classes_per_client": classes_seen, "label_counts": counts, "centralized": None}
    if not centralized:
        out["train_examples"] = int(len(load_data(first[0]).x_train))
        out["test_examples"] = int(len(load_data(first[0]).x_test))
        return out
    e, part = iid or first  # a scheme list without IID: pool the first scheme's clients
    data = load_data(e)
    union = np.sort(np.concatenate(part.train))
    train_cfg = training_config(exp.train_limit is not None)
    central = cached_weights(
        "hetero_baseline", training_params("hetero_baseline", e, data, part, init, train_cfg),
        lambda: [train_weights(e.model, init, data.x_train[union], data.y_train[union], train_cfg["epochs"],
                               train_cfg["batch_size"], train_cfg["lr"], e.seed, train_cfg["optimizer"],
                               train_cfg["lr_schedule"], data.num_classes)], log=log)[0]
    acc = WeightsEvaluator(e.model, data.input_shape, data.num_classes, data.x_test, data.y_test)(central)
    out["centralized"] = {"accuracy": acc["test_accuracy"], "examples": int(len(union)), "training": train_cfg}
    out["train_examples"] = int(len(data.x_train))
    out["test_examples"] = int(len(data.x_test))
    return out


def classes_per_round(label_counts, round_clients: Sequence[Sequence[int]]) -> list[int]:
    """How many classes the clients of each round hold between them (``label_counts``: clients x
    classes example counts; ``round_clients[r]``: the clients of round r+1). With 2 of 10
    pathological clients of 2 classes each, a round sees at most 4 of the 10 classes.

        >>> classes_per_round([[5, 0, 0], [0, 3, 0], [0, 2, 1]], [[0], [0, 1], [1, 2]])
        [1, 2, 2]
    """
    counts = np.asarray(label_counts)
    if counts.ndim != 2:
        raise ValueError(f"label_counts must be clients x classes, got shape {counts.shape}")
    out = []
    for r, clients in enumerate(round_clients, start=1):
        ids = np.asarray(list(clients), dtype=np.int64)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= len(counts):
            raise ValueError(f"round {r} must name clients in 0..{len(counts) - 1}, got {ids.tolist()}")
        out.append(int(np.count_nonzero(counts[ids].sum(axis=0))))
    return out
