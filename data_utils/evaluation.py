"""Was federated learning worth it? The bookkeeping behind notebook 05.

- **Table rows** (:func:`model_row`, :func:`mean_row`, :func:`unavailable_row`,
  :func:`summary_rows`): one row per model, all scored on the same test set, with accuracy, macro
  precision/recall/F1 and the training cost.
- **Training cost** (:func:`centralized_cost`, :func:`local_cost`, :func:`one_shot_cost`,
  :func:`fedavg_cost`): examples processed (one example seen once by one gradient computation
  counts 1), communication rounds, and the bytes a client uploads in total: its raw data for the
  centralized baseline (uint8 pixels plus a one-byte label per image, the dataset's own format),
  nothing for a local-only model, one float32 model per round it takes part in for averaging.
- **Per-client view** (:func:`per_client_gains`): who gains from joining the federation, who loses.
- **The federated models** (:func:`get_manual_fedavg`, :func:`get_tff_fedavg`,
  :func:`heterogeneity_runs`): reuse what notebook 04 saved for the same parameters, recompute
  otherwise (TFF only where it can run; otherwise the row says it is not available).
- **Raj 2020's binary experiment** (:func:`make_binary_task`, :func:`get_binary_models`,
  :data:`RAJ_2020`): two easily confused classes, ten balanced clients of 198 images, a held-out
  test set of 1,013 images.
- **Sentences built from numbers** (:func:`compare`, :func:`order_sentence`,
  :func:`what_we_learned`): every claim of the closing cell is computed, and says so when a run
  contradicts it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

METRICS = ("accuracy", "precision", "recall", "f1")
COST_KEYS = ("examples_processed", "rounds", "upload_bytes_per_client", "upload_bytes_max")

# Raj 2020, "Building Decentralized Image Classifiers with Federated Learning" (../shared/sources):
# AlexNet pretrained on ImageNet, fine-tuned on Kaggle cats vs dogs with PyTorch; ten clients of
# 99 cats + 99 dogs; test set 506 cats + 507 dogs; aggregation w = k * w_i + (1 - k) * w, k = 0.5.
# Precision and recall there are those of one class (binary scores), not macro averages.
RAJ_2020 = {
    "task": "cats vs dogs (Kaggle), AlexNet pretrained on ImageNet, fine-tuned 10 epochs, batch 4, SGD lr 0.001",
    "centralized": {"accuracy": 0.9417, "precision": 0.9627, "recall": 0.91897},
    "averaged": {"accuracy": 0.9348, "precision": 0.9198, "recall": 0.9526},
    "submodel_accuracy": [0.8202, 0.8804, 0.8349, 0.8083, 0.6679, 0.8488, 0.8122, 0.81027, 0.8557, 0.8636],
    "num_clients": 10, "per_client": 198, "test_sizes": (506, 507), "centralized_train": 2003,
    "k": 0.5, "epochs": 10,
}
# Two classes per dataset that are easy to confuse (the paper's cats and dogs are in CIFAR-10).
BINARY_CLASSES = {"fashion_mnist": (0, 6), "cifar10": (3, 5), "mnist": (4, 9)}

# The heterogeneity comparison: FedAvg on the same clients' data split four ways.
HETEROGENEITY_SCHEMES = (
    {"label": "IID", "partition": "iid"},
    {"label": "Dirichlet(0.5)", "partition": "dirichlet", "alpha": 0.5},
    {"label": "Dirichlet(0.1)", "partition": "dirichlet", "alpha": 0.1},
    {"label": "pathological (2 classes)", "partition": "pathological", "classes_per_client": 2},
)


def _is_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _sizes(client_sizes) -> np.ndarray:
    sizes = np.asarray(client_sizes)
    if sizes.ndim != 1 or sizes.size == 0:
        raise ValueError(f"client_sizes must be a non-empty list of example counts, got shape {sizes.shape}")
    if not np.issubdtype(sizes.dtype, np.integer) or np.any(sizes < 0):
        raise ValueError("client_sizes must be non-negative integers (examples per client)")
    return sizes.astype(np.int64)


def _epochs(epochs, name="epochs") -> int:
    if not _is_int(epochs) or epochs < 1:
        raise ValueError(f"{name} must be a positive integer, got {epochs!r}")
    return int(epochs)


# ---- training cost ---------------------------------------------------------------------------------
def raw_example_bytes(input_shape) -> int:
    """Bytes of one training example in the dataset's own format: one uint8 per pixel value plus
    a one-byte label (785 for a 28x28 grayscale image)."""
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must be positive dimensions, got {input_shape!r}")
    return int(np.prod(shape)) + 1


def _cost(examples, rounds, uploads) -> dict:
    uploads = np.asarray(uploads, dtype=np.int64)
    return {"examples_processed": int(examples), "rounds": int(rounds),
            "upload_bytes_per_client": float(uploads.mean()), "upload_bytes_max": int(uploads.max())}


def centralized_cost(client_sizes, epochs: int, input_shape) -> dict:
    """Cost of the centralized baseline: every client uploads its raw training data once
    (:func:`raw_example_bytes` per image), the server trains ``epochs`` passes over the union."""
    sizes = _sizes(client_sizes)
    return _cost(_epochs(epochs) * sizes.sum(), 0, sizes * raw_example_bytes(input_shape))


def local_cost(client_size: int, epochs: int) -> dict:
    """Cost of one local-only model: ``epochs`` passes over the client's data, nothing uploaded."""
    if not _is_int(client_size) or client_size < 0:
        raise ValueError(f"client_size must be a non-negative integer, got {client_size!r}")
    return _cost(_epochs(epochs) * int(client_size), 0, [0])


def one_shot_cost(client_sizes, epochs: int, model_bytes: int) -> dict:
    """Cost of averaging the local-only models once: all of their training, one round, each
    client uploads its model once."""
    sizes = _sizes(client_sizes)
    if not _is_int(model_bytes) or model_bytes < 1:
        raise ValueError(f"model_bytes must be a positive integer, got {model_bytes!r}")
    return _cost(_epochs(epochs) * sizes.sum(), 1, np.full(len(sizes), int(model_bytes)))


def fedavg_cost(round_clients: Sequence[Sequence[int]], client_sizes, local_epochs: int,
                model_bytes: int) -> dict:
    """Cost of a FedAvg run: ``round_clients[r]`` lists the clients that trained in round r+1
    (e.g. ``[row["clients"] for row in history]``). Each of them trains ``local_epochs`` passes
    over its data and uploads one model (``model_bytes``) per round it takes part in."""
    sizes = _sizes(client_sizes)
    local_epochs = _epochs(local_epochs, "local_epochs")
    if not _is_int(model_bytes) or model_bytes < 1:
        raise ValueError(f"model_bytes must be a positive integer, got {model_bytes!r}")
    times = np.zeros(len(sizes), dtype=np.int64)
    for r, clients in enumerate(round_clients):
        ids = np.asarray(list(clients), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(sizes)):
            raise ValueError(f"round {r + 1} names client(s) outside 0..{len(sizes) - 1}: {ids.tolist()}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"round {r + 1} names a client twice: {ids.tolist()}")
        times[ids] += 1
    return _cost(local_epochs * int((times * sizes).sum()), len(round_clients), times * int(model_bytes))


def human_bytes(n: float | None) -> str:
    """``1234567`` -> ``"1.23 MB"`` (decimal units); None -> ``"-"``."""
    if n is None:
        return "-"
    if n < 0 or not math.isfinite(n):
        raise ValueError(f"a byte count must be a finite non-negative number, got {n!r}")
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


# ---- table rows --------------------------------------------------------------------------------
def model_row(model: str, kind: str, metrics: Mapping, cost: Mapping | None = None, **extra) -> dict:
    """One table row: the model's name and kind, its four metrics, its training cost."""
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
    """Mean, standard deviation, worst (min), median and best (max) of some numbers."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        raise ValueError("need at least one value")
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "median": float(np.median(v)), "max": float(v.max())}


def mean_row(model: str, rows: Sequence[Mapping], kind: str = "local_mean") -> dict:
    """The mean of several rows' metrics (and of their examples processed), with the spread of
    the accuracy across them (``accuracy_std``, ``accuracy_min``, ``accuracy_median``,
    ``accuracy_max``)."""
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


def summary_rows(rows: Sequence[Mapping], keep_kinds: Sequence[str] = ("local",)) -> list[dict]:
    """The rows ``make course`` prints (every row except single local-only clients): model,
    accuracy, precision, recall, f1 and the cost, None where a model was not available."""
    keys = ("model", "kind", "available", *METRICS, *COST_KEYS)
    return [{k: r.get(k) for k in keys} for r in rows if r.get("kind") not in keep_kinds]


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
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    gains, scored = [], []
    for c, (f, l) in enumerate(zip(federated, local)):
        if (f is None) != (l is None):
            raise ValueError(f"client {c} has one accuracy but not the other ({f!r}, {l!r})")
        if f is None:
            gains.append(None)
            continue
        for value in (f, l):
            if not 0 <= value <= 1:
                raise ValueError(f"accuracies must be in [0, 1], got {value!r} for client {c}")
        gains.append(float(f) - float(l))
        scored.append(c)
    if not scored:
        raise ValueError("no client has a local test split to compare on")
    g = np.array([gains[c] for c in scored])
    out = {
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
        "tolerance": float(tolerance),
    }
    return out


# ---- the binary experiment (Raj 2020) ----------------------------------------------------------
@dataclass(frozen=True)
class BinaryTask:
    """A two-class task cut from a dataset: ``clients[i]`` are indices into the training set
    (balanced: half of each class), ``test`` indices into the test set. Labels are 0 for
    ``classes[0]`` and 1 for ``classes[1]``."""

    classes: tuple
    class_names: tuple
    clients: tuple
    test: np.ndarray

    def labels(self, y) -> np.ndarray:
        y = np.asarray(y)
        if not np.all(np.isin(y, self.classes)):
            raise ValueError(f"labels outside the task's classes {self.classes}")
        return (y == self.classes[1]).astype(np.int32)

    @property
    def train(self) -> np.ndarray:
        """The union of the clients' examples: what the centralized model trains on."""
        return np.sort(np.concatenate(self.clients))


def make_binary_task(y_train, y_test, classes: Sequence[int], num_clients: int = 10,
                     per_client: int = 198, test_sizes: Sequence[int] = (506, 507), seed: int = 0,
                     class_names: Sequence[str] | None = None) -> BinaryTask:
    """Raj 2020's setting on another dataset: ``num_clients`` clients holding ``per_client``
    training images each, half of each class, no image on two clients; a held-out test set of
    ``test_sizes[0]`` images of ``classes[0]`` and ``test_sizes[1]`` of ``classes[1]`` from the
    test split. Seeded and deterministic."""
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if len(classes) != 2 or not all(_is_int(c) for c in classes) or classes[0] == classes[1]:
        raise ValueError(f"classes must be two different class ids, got {classes!r}")
    k = int(max(y_train.max(), y_test.max())) + 1
    if min(classes) < 0 or max(classes) >= k:
        raise ValueError(f"classes must be in 0..{k - 1}, got {tuple(classes)}")
    if not _is_int(num_clients) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
    if not _is_int(per_client) or per_client < 2 or per_client % 2:
        raise ValueError(f"per_client must be an even integer >= 2 (half of each class), got {per_client!r}")
    if len(test_sizes) != 2 or not all(_is_int(s) and s >= 1 for s in test_sizes):
        raise ValueError(f"test_sizes must be two positive integers, got {test_sizes!r}")
    rng = np.random.default_rng([int(seed), 5])
    half = per_client // 2
    per_class = []
    for c, n_test in zip(classes, test_sizes):
        pool = np.flatnonzero(y_train == c)
        if len(pool) < half * num_clients:
            raise ValueError(f"class {c} has {len(pool)} training images; {num_clients} clients x "
                             f"{half} need {half * num_clients}")
        if np.sum(y_test == c) < n_test:
            raise ValueError(f"class {c} has {int(np.sum(y_test == c))} test images; asked for {n_test}")
        per_class.append(rng.permutation(pool)[:half * num_clients])
    clients = tuple(np.sort(np.concatenate([p[i * half:(i + 1) * half] for p in per_class]))
                    for i in range(num_clients))
    test = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y_test == c))[:n]
                                   for c, n in zip(classes, test_sizes)]))
    names = tuple(class_names[c] for c in classes) if class_names is not None else tuple(str(c) for c in classes)
    return BinaryTask(tuple(int(c) for c in classes), names, clients, test)


def binary_scores(y_true, y_pred) -> dict:
    """Accuracy, the positive class's (label 1) precision and recall (the paper's sklearn
    defaults), and the macro F1 of a two-class prediction."""
    from .metrics import classification_metrics

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    tp = int(np.sum((y_pred == 1) & (y_true == 1)))
    precision = tp / max(int(np.sum(y_pred == 1)), 1)
    recall = tp / max(int(np.sum(y_true == 1)), 1)
    macro = classification_metrics(y_true, y_pred, 2)
    return {"accuracy": macro["accuracy"], "precision_pos": float(precision), "recall_pos": float(recall),
            "precision": macro["precision"], "recall": macro["recall"], "f1": macro["f1"]}


def get_binary_models(task: BinaryTask, data, model_name: str, seed: int, train_config: Mapping,
                      log: Callable[[str], None] = print, progress: bool = True) -> list:
    """The binary experiment's models: ``[centralized, client 0, ..., client n-1]``, every one
    from the same initial weights (``model_name`` with two outputs, drawn from ``seed``), the
    centralized one on the union of the clients' images. ``train_config`` is a
    :func:`data_utils.local.training_config`. Saved as ``build/artifacts/binary_models.npz``
    and reused only when every input matches."""
    from .artifacts import cached_weights
    from .baselines import fingerprint
    from .training import train_weights
    from .models import build_model

    cfg = dict(train_config)
    init = build_model(model_name, data.input_shape, 2, seed=seed).get_weights()
    params = {"kind": "binary", "model": model_name, "seed": int(seed), "dataset": data.name,
              "classes": list(task.classes), "clients": fingerprint(*task.clients),
              "x_train": fingerprint(data.x_train), "initial_weights": fingerprint(*init), **cfg}

    def compute():
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=(1 + len(task.clients)) * cfg["epochs"], desc="binary models", unit="epoch")

        def tick(epoch, logs):
            if bar is not None:
                bar.update(1)
        out = []
        try:
            for i, idx in enumerate((task.train, *task.clients)):
                out.append(train_weights(model_name, init, data.x_train[idx], task.labels(data.y_train[idx]),
                                         cfg["epochs"], cfg["batch_size"], cfg["lr"], seed, cfg["optimizer"],
                                         cfg["lr_schedule"], 2, stream=i, on_epoch_end=tick))
        finally:
            if bar is not None:
                bar.close()
        return out

    return cached_weights("binary_models", params, compute, log=log)


# ---- the federated models -------------------------------------------------------------------------
def _fedavg_trainer(exp, data, cfg):
    from .training import client_trainer

    return client_trainer(exp.model, data.input_shape, data.num_classes, cfg.client_lr, cfg.client_momentum)


def get_manual_fedavg(exp, cfg, data, partition, init, log: Callable[[str], None] = print,
                      progress: bool = True, name: str = "fedavg_manual") -> tuple[list, list[dict], str]:
    """The hand-written FedAvg run (:func:`data_utils.fedavg.run_fedavg`) for experiment ``exp``
    with settings ``cfg``: the one notebook 04 saved (artifact ``name``) when both match, else
    trained now from ``init`` and saved. Returns (final weights, round rows, status)."""
    from .experiment import client_arrays
    from .fedavg import load_fedavg_run, run_fedavg, save_fedavg_run
    from .models import WeightsEvaluator

    run, status = load_fedavg_run(name, exp.as_dict(), cfg)
    if run is not None:
        log(f"{name}: reused the saved run ({len(run['history'])} rounds)")
        return run["weights"], run["history"], "reused"
    log(f"{name}: {status}; training it now")
    evaluate = WeightsEvaluator(exp.model, data.input_shape, data.num_classes, data.x_test, data.y_test)
    weights, history = run_fedavg(_fedavg_trainer(exp, data, cfg), init, client_arrays(exp, data, partition),
                                  cfg, evaluate=evaluate, progress=progress, desc=name)
    save_fedavg_run(name, exp.as_dict(), cfg, weights, history)
    return weights, [r.as_dict() for r in history], "trained"


def get_tff_fedavg(job_params: Mapping, log: Callable[[str], None] = print,
                   progress: bool = True) -> tuple[list | None, list | None, str]:
    """TFF's FedAvg for notebook 04's parameters ``job_params`` (see
    :func:`data_utils.experiment.parse_params`): the run notebook 04 saved (artifact ``fedavg_tff``)
    when it was made with these parameters; else trained now in this process with
    :func:`data_utils.jobs.tff_fedavg_job` when TFF can run here (Python 3.11 stack); else
    (weights, history) are None and the status says why. Returns (weights, rows, status)."""
    from .fedavg import load_fedavg_run, save_fedavg_run
    from .experiment import parse_params
    from .tff_fedavg import JOB_OPTIONS

    exp, cfg, _ = parse_params(dict(job_params), JOB_OPTIONS)
    run, status = load_fedavg_run("fedavg_tff", exp.as_dict(), cfg)
    if run is not None:
        made_by = run["extra"].get("made_by", "04_tff_fedavg")
        log(f"fedavg_tff: reused the saved run of {made_by} ({len(run['history'])} rounds)")
        return run["weights"], run["history"], "reused"
    log(f"fedavg_tff: {status}")
    from .sidecar import tff_available_here

    if not tff_available_here():
        import sys

        return None, None, (
            f"not available: TensorFlow Federated cannot run in this runtime (Python "
            f"{sys.version_info.major}.{sys.version_info.minor}"
            + ("" if sys.version_info[:2] == (3, 11) else "; TFF 0.87 needs Python 3.11 and Keras 2")
            + ") and no saved run of notebook 04 matches these parameters. Run notebook 04 with the "
            "same parameters (it can use the Python 3.11 side environment), then this notebook again.")
    from .jobs import tff_fedavg_job

    log("fedavg_tff: training it now with TFF in this process")
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.rounds, desc="TFF FedAvg", unit="round")

    def tick(row):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(test_acc=round(row["test_accuracy"], 4))
    try:
        import warnings

        with warnings.catch_warnings():  # TFF's dependencies import pkg_resources (harmless, noisy)
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            result = tff_fedavg_job(dict(job_params, FED_EVAL=False, TENSORBOARD_DIR=None), progress=tick, log=log)
    finally:
        if bar is not None:
            bar.close()
    save_fedavg_run("fedavg_tff", exp.as_dict(), cfg, result["final_weights"], result["history"],
                    extra={"made_by": "05_evaluation"})
    return result["final_weights"], result["history"], "trained"


def heterogeneity_experiments(exp, schemes: Sequence[Mapping] = HETEROGENEITY_SCHEMES,
                              train_examples: int | None = None) -> list[tuple[str, object]]:
    """``(label, experiment)`` for each partition scheme: ``exp`` with that scheme (its other
    parameters kept) and, when ``train_examples`` is set, at most that many training images."""
    if train_examples is not None and (not _is_int(train_examples) or train_examples < 1):
        raise ValueError(f"train_examples must be a positive integer or None, got {train_examples!r}")
    limit = exp.train_limit
    if train_examples is not None:
        limit = min(limit, int(train_examples)) if limit is not None else int(train_examples)
    out = []
    for spec in schemes:
        spec = dict(spec)
        label = spec.pop("label")
        out.append((label, exp.with_(train_limit=limit, **spec)))
    return out


def heterogeneity_runs(exp, cfg, init, schemes: Sequence[Mapping] = HETEROGENEITY_SCHEMES,
                       train_examples: int | None = None, log: Callable[[str], None] = print,
                       progress: bool = True) -> dict:
    """FedAvg (the hand-written loop, proven equal to TFF's) with settings ``cfg`` from ``init``
    on each partition scheme, on the same training images; plus a centralized reference trained
    on the IID scheme's pooled local-train data with the course's default training settings.

    Returns ``{"runs": {label: round rows}, "partitions": {label: classes per client},
    "centralized": {"accuracy", "examples"}, "train_examples": n}``. Every run is saved
    (artifacts ``hetero_<i>``, ``hetero_baseline``) and reused when its inputs match. Partitions
    are made with :func:`data_utils.partition.make_partition` (notebook 01's saved partition is
    left alone)."""
    from .artifacts import cached_weights
    from .experiment import client_arrays, load_data
    from .fedavg import load_fedavg_run, run_fedavg, save_fedavg_run
    from .baselines import training_params as _params
    from .training import train_weights, training_config
    from .models import WeightsEvaluator
    from .partition import make_partition

    if not schemes:
        raise ValueError("need at least one partition scheme")
    runs, classes_seen, iid, first = {}, {}, None, None
    for i, (label, e) in enumerate(heterogeneity_experiments(exp, schemes, train_examples)):
        data = load_data(e)
        part = make_partition(data.y_train, **e.partition_kwargs())
        classes_seen[label] = [int(np.count_nonzero(row)) for row in part.label_counts(data.y_train, data.num_classes)]
        first = first or (e, part)
        if e.partition == "iid" and iid is None:
            iid = (e, part)
        name = f"hetero_{i}"
        run, status = load_fedavg_run(name, dict(e.as_dict(), label=label), cfg)
        if run is not None:
            log(f"{label}: reused the saved run ({name})")
            runs[label] = run["history"]
            continue
        log(f"{label}: {status}; training it now")
        evaluate = WeightsEvaluator(e.model, data.input_shape, data.num_classes, data.x_test, data.y_test)
        weights, history = run_fedavg(_fedavg_trainer(e, data, cfg), init, client_arrays(e, data, part), cfg,
                                      evaluate=evaluate, progress=progress, desc=f"FedAvg {label}")
        save_fedavg_run(name, dict(e.as_dict(), label=label), cfg, weights, history)
        runs[label] = [r.as_dict() for r in history]
    e, part = iid or first  # a scheme list without IID: pool the first scheme's clients
    data = load_data(e)
    union = np.sort(np.concatenate(part.train))
    train_cfg = training_config(exp.train_limit is not None)
    central = cached_weights(
        "hetero_baseline", _params("hetero_baseline", e, data, part, init, train_cfg),
        lambda: [train_weights(e.model, init, data.x_train[union], data.y_train[union], train_cfg["epochs"],
                               train_cfg["batch_size"], train_cfg["lr"], e.seed, train_cfg["optimizer"],
                               train_cfg["lr_schedule"], data.num_classes)], log=log)[0]
    acc = WeightsEvaluator(e.model, data.input_shape, data.num_classes, data.x_test, data.y_test)(central)
    return {"runs": runs, "classes_per_client": classes_seen,
            "centralized": {"accuracy": acc["test_accuracy"], "examples": int(len(union)),
                            "training": train_cfg},
            "train_examples": int(len(data.x_train))}


# ---- sentences built from numbers ---------------------------------------------------------------
def compare(name: str, value: float, ref_name: str, ref_value: float, tolerance: float = 0.005) -> str:
    """``"FedAvg (0.8812) is 1.93 points below the centralized baseline (0.9005)"``; within
    ``tolerance`` (accuracy units) it says "on par with" and gives the signed difference."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    d = (float(value) - float(ref_value)) * 100
    head = f"{name} ({value:.4f}) is"
    if abs(d) <= tolerance * 100:
        return (f"{head} on par with {ref_name} ({ref_value:.4f}): {d:+.2f} points, within the "
                f"{tolerance * 100:.1f}-point tolerance")
    return f"{head} {abs(d):.2f} points {'above' if d > 0 else 'below'} {ref_name} ({ref_value:.4f})"


def _points(value: float, reference: float) -> str:
    """"1.23 points below" / "0.40 points above" / "level with"."""
    d = round((float(value) - float(reference)) * 100, 2)
    return "level with" if d == 0 else f"{abs(d):.2f} points {'below' if d < 0 else 'above'}"


def tail_mean(values: Sequence[float], last: int = 3) -> float:
    """The mean of the last ``last`` values of a learning curve (fewer if the curve is shorter):
    a steadier summary of where a noisy FedAvg run ended than its final round alone."""
    if not _is_int(last) or last < 1:
        raise ValueError(f"last must be a positive integer, got {last!r}")
    if len(values) == 0:
        raise ValueError("the curve is empty")
    return float(np.mean(np.asarray(values, dtype=np.float64)[-last:]))


def relation(value: float, reference: float, tolerance: float = 0.005) -> str:
    """"above", "below" or "on par" (within ``tolerance``)."""
    d = float(value) - float(reference)
    return "on par" if abs(d) <= tolerance else ("above" if d > 0 else "below")


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


def what_we_learned(f: Mapping) -> list[str]:
    """The closing sentences of notebook 05, each built from the numbers in ``f``:

    ``baseline``, ``fed_name``, ``fed`` (accuracy), ``fed_rounds``, ``fed_upload``,
    ``central_upload`` (bytes per client), ``local_mean``, ``local_min``, ``local_max``,
    ``uniform``, ``weighted``, ``sequential``, ``gainers``, ``losers``, ``scored_clients``,
    ``gain_min``, ``gain_median``, ``gain_max`` (all absent or None: no local test splits),
    ``hetero`` (label -> accuracy at the end, e.g. :func:`tail_mean`),
    ``hetero_order`` (labels, least skewed first), ``hetero_central``, ``binary`` (``central``,
    ``averaged``, ``local_mean``), ``paper`` (``central``, ``averaged``), ``smoke``."""
    out = []
    fed, base = f["fed"], f["baseline"]
    out.append(compare(f"{f['fed_name']} after {f['fed_rounds']} rounds", fed, "the centralized baseline", base)
               + f"; each client uploaded {human_bytes(f['fed_upload'])} of model weights instead of "
               f"{human_bytes(f['central_upload'])} of raw images.")
    rel = relation(fed, f["local_mean"])
    out.append(compare("The federated model", fed, "the mean local-only model", f["local_mean"]) + ". "
               + ({"above": ("It is also above the best single client "
                             f"({f['local_max']:.4f}): on the shared test set every client gains by joining"
                             if fed > f["local_max"] else
                             f"Joining paid off on average, though the best single client ({f['local_max']:.4f}) "
                             "did better on the shared test set"),
                   "on par": "On the shared test set, federation bought nothing over training alone in this run",
                   "below": "In this run the federated model is WORSE than training alone on the shared test set"}[rel])
               + ".")
    if f.get("gainers") is None:
        out.append("No client kept a local test split, so this run cannot say who gains from joining.")
    else:
        n, g, l = f["scored_clients"], len(f["gainers"]), len(f["losers"])
        out.append(f"On their own test splits, {g} of {n} clients gain from the federated model and {l} lose "
                   f"(gain from {f['gain_min']:+.4f} to {f['gain_max']:+.4f}, median {f['gain_median']:+.4f})"
                   + (": no client would have been better off alone." if l == 0 else
                      f": for client(s) {', '.join(map(str, f['losers']))} their own model fits their own data "
                      "better."))
    best_one_shot = max(("uniform mean", f["uniform"]), ("example-weighted mean", f["weighted"]),
                        ("sequential k=0.5", f["sequential"]), key=lambda kv: kv[1])
    out.append(f"Of the one-shot averages the {best_one_shot[0]} does best: "
               + compare("it", best_one_shot[1], f"{f['fed_rounds']}-round FedAvg", fed)
               + (": averaging finished models once is not a substitute for averaging every round."
                  if relation(best_one_shot[1], fed) == "below" else
                  ": in this run one round of averaging finished models was enough."))
    out.append(compare("Raj 2020's sequential k=0.5 update", f["sequential"], "the example-weighted mean",
                       f["weighted"])
               + ("; it weights the last client 1/2 and the first two 1/2^(n-1) each, so it is not a mean."))
    if f.get("hetero"):
        sentence, held = order_sentence(f["hetero"], f["hetero_order"], "FedAvg's accuracy by partition "
                                        "(mean of the last rounds)", tolerance=0.005)
        worst = min(f["hetero"], key=f["hetero"].get)
        out.append(sentence + f" The centralized model on the same images reached {f['hetero_central']:.4f}; "
                   f"the worst partition, {worst}, ends {_points(f['hetero'][worst], f['hetero_central'])} it.")
    if f.get("binary"):
        b, p = f["binary"], f["paper"]
        out.append(f"Raj 2020's binary task: the paper's averaged model is {_points(p['averaged'], p['central'])} "
                   f"its centralized one ({p['averaged']:.4f} vs {p['central']:.4f}); ours is "
                   f"{_points(b['averaged'], b['central'])} our centralized one ({b['averaged']:.4f} vs "
                   f"{b['central']:.4f}), and "
                   + ("the averaged model beats the mean submodel" if b["averaged"] > b["local_mean"] else
                      "the averaged model does NOT beat the mean submodel")
                   + f" ({b['local_mean']:.4f}).")
    if f.get("smoke"):
        out.append("This was a smoke run (few images, few epochs and rounds): the sentences above describe "
                   "it, not the workshop setting.")
    return out
