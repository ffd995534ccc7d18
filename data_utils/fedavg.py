"""Federated Averaging (McMahan et al. 2017) in plain NumPy/Keras, and the pieces it shares with
the TFF version in :mod:`data_utils.tff_fedavg`: client sampling, the per-round client datasets
(same examples, same order in both), and the example-weighted mean of weights, layer by layer.

FedSGD is the special case ``local_epochs=1, batch_size=None`` (one full-batch gradient step).
"""
from __future__ import annotations

import atexit
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

Weights = list  # a list of NumPy arrays, one per layer variable, as from model.get_weights()
LR_SCHEDULES = ("constant", "cosine")


# ---- averaging ---------------------------------------------------------------------------------
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
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (the number of models), got {n!r}")
    if isinstance(k, bool) or not isinstance(k, (int, float, np.floating)) or not 0 <= k <= 1:
        raise ValueError(f"k must be a number in [0, 1], got {k!r}")
    k = float(k)
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


# ---- which clients, which examples, in which order ----------------------------------------------
def num_sampled(num_clients: int, client_fraction: float | None = None,
                clients_per_round: int | None = None) -> int:
    """How many clients take part in a round: ``clients_per_round``, or max(1, round(C * K))."""
    if clients_per_round is not None:
        if not 1 <= clients_per_round <= num_clients:
            raise ValueError(f"clients_per_round must be between 1 and {num_clients}, "
                             f"got {clients_per_round}")
        return int(clients_per_round)
    if client_fraction is None or not 0 < client_fraction <= 1:
        raise ValueError(f"client_fraction must be in (0, 1], got {client_fraction!r}")
    return max(1, int(round(client_fraction * num_clients)))


def sample_clients(num_clients: int, m: int, round_num: int, seed: int) -> np.ndarray:
    """The ``m`` clients of round ``round_num`` (1-based), drawn without replacement; a pure
    function of (seed, round), so TFF and the manual loop see the same clients. With m equal to
    num_clients every client takes part, in order."""
    if m == num_clients:
        return np.arange(num_clients)
    rng = np.random.default_rng([int(seed), 2, int(round_num)])
    return np.sort(rng.choice(num_clients, size=m, replace=False))


def epoch_orders(n: int, epochs: int, seed: int, round_num: int, client: int) -> list[np.ndarray]:
    """One permutation of range(n) per local epoch, a pure function of (seed, round, client)."""
    rng = np.random.default_rng([int(seed), 3, int(round_num), int(client)])
    return [rng.permutation(n) for _ in range(epochs)]


@dataclass(frozen=True)
class ClientBatches:
    """A client's local training for one round, as arrays: the examples of every local epoch in
    training order (``x``, ``y``: ``epochs`` blocks of ``n`` rows), each batch's ``[start, end)``
    rows (``bounds``; batches never cross an epoch's end) and the batch size. The manual loop
    trains on it directly (:func:`local_train`); :meth:`as_dataset` gives TFF the very same
    batches as a ``tf.data.Dataset``."""
    x: np.ndarray
    y: np.ndarray
    bounds: np.ndarray  # shape (num_batches, 2), int64
    n: int  # examples per epoch
    batch_size: int

    def __len__(self) -> int:
        return len(self.bounds)

    def as_dataset(self):
        import tensorflow as tf

        ds = None
        for lo in range(0, len(self.x), self.n):  # one epoch at a time
            part = tf.data.Dataset.from_tensor_slices(
                (self.x[lo:lo + self.n], self.y[lo:lo + self.n])).batch(self.batch_size)
            ds = part if ds is None else ds.concatenate(part)
        return ds


def client_batches(x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int | None,
                   seed: int, round_num: int = 0, client: int = 0) -> ClientBatches:
    """A client's local training data for one round: ``epochs`` passes, each in its own seeded
    order, batched within each epoch (a batch never mixes two epochs; ``batch_size=None``: one
    full batch per epoch, i.e. FedSGD). Deterministic: TFF and the manual loop get identical
    batches."""
    if epochs < 1:
        raise ValueError(f"local epochs must be >= 1, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None (full batch), got {batch_size}")
    n = len(x)
    if n == 0:
        raise ValueError("a client with no examples cannot train")
    bs = n if batch_size is None else int(batch_size)
    order = np.concatenate(epoch_orders(n, epochs, seed, round_num, client))
    starts = np.arange(0, n, bs)
    one_epoch = np.stack([starts, np.minimum(starts + bs, n)], axis=1)
    bounds = np.concatenate([one_epoch + e * n for e in range(epochs)]).astype(np.int64)
    return ClientBatches(np.ascontiguousarray(x[order]), y[order].astype("int32"), bounds, n, bs)


def client_dataset(x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int | None,
                   seed: int, round_num: int = 0, client: int = 0):
    """:func:`client_batches` as a ``tf.data.Dataset`` (what TFF's clients train on)."""
    return client_batches(x, y, epochs, batch_size, seed, round_num, client).as_dataset()


class ClientArrays:
    """The clients' data, indexed lazily: ``clients[i]`` returns client i's (x, y) arrays,
    sliced from the shared training arrays only when asked for (nothing per client is stored)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, client_indices: Sequence[np.ndarray]):
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        if len(client_indices) == 0:
            raise ValueError("need at least one client")
        self.x, self.y, self.indices = x, y, list(client_indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        idx = self.indices[i]
        return self.x[idx], self.y[idx]

    def sizes(self) -> np.ndarray:
        return np.array([len(i) for i in self.indices])


# ---- the algorithm -----------------------------------------------------------------------------
@dataclass
class FedAvgConfig:
    rounds: int = 10
    client_fraction: float | None = 1.0
    clients_per_round: int | None = None
    local_epochs: int = 1
    batch_size: int | None = 20
    client_lr: float = 0.05
    server_lr: float = 1.0
    seed: int = 0
    client_lr_schedule: str = "constant"  # or "cosine": decay client_lr over the rounds
    client_momentum: float = 0.0  # SGD momentum of the clients (state restarts every round)

    def __post_init__(self):
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if not self.client_lr > 0 or not self.server_lr > 0:
            raise ValueError("client_lr and server_lr must be positive")
        if not 0 <= self.client_momentum < 1:
            raise ValueError(f"client_momentum must be in [0, 1), got {self.client_momentum!r}")
        if self.client_lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown client_lr_schedule {self.client_lr_schedule!r}; choose one of "
                             f"{', '.join(LR_SCHEDULES)}")

    def client_lr_for_round(self, round_num: int) -> float:
        """The clients' learning rate in round ``round_num`` (1-based): ``client_lr`` every round,
        or a cosine decay from ``client_lr`` in round 1 towards zero (never reached)."""
        if round_num < 1:
            raise ValueError(f"rounds are numbered from 1, got {round_num}")
        from .local import epoch_learning_rate

        return epoch_learning_rate(self.client_lr, round_num - 1, max(self.rounds, round_num),
                                   self.client_lr_schedule)


@dataclass
class RoundRecord:
    round: int
    clients: list
    num_examples: int
    seconds: float
    metrics: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """One flat, JSON-able row: round, clients, num_examples, seconds and the metrics."""
        row = {"round": int(self.round), "clients": [int(c) for c in self.clients],
               "num_examples": int(self.num_examples), "seconds": float(self.seconds)}
        row.update({k: float(v) if isinstance(v, (float, np.floating)) else v
                    for k, v in self.metrics.items()})
        return row


def curve_difference(history_a: Sequence, history_b: Sequence, key: str = "test_accuracy") -> np.ndarray:
    """Per-round absolute difference of metric ``key`` between two runs of the same rounds
    (``RoundRecord`` lists or their ``as_dict`` rows)."""
    def values(history, name):
        out = []
        for r in history:
            metrics = r.metrics if isinstance(r, RoundRecord) else r
            if key not in metrics:
                raise ValueError(f"metric {key!r} is missing from round {len(out) + 1} of {name}; "
                                 f"it has {sorted(metrics)}")
            out.append(float(metrics[key]))
        return np.array(out)

    a, b = values(history_a, "the first run"), values(history_b, "the second run")
    if len(a) != len(b):
        raise ValueError(f"the runs have different numbers of rounds ({len(a)} and {len(b)})")
    return np.abs(a - b)


def reset_optimizer(model) -> None:
    """Give ``model``'s optimizer a fresh state (step counter, momentum) while keeping its
    learning rate: every client starts every round with a new optimizer, as in TFF."""
    optimizer = model.optimizer
    lr = float(np.asarray(optimizer.learning_rate))
    for var in optimizer.variables:
        var.assign(np.zeros(var.shape, dtype=np.dtype(var.dtype.name if hasattr(var.dtype, "name") else var.dtype)))
    optimizer.learning_rate.assign(lr)  # Keras 3 keeps the learning rate among the variables


_TRAIN_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# drop the compiled loops while TensorFlow is still whole (else its __del__ complains at exit)
atexit.register(_TRAIN_STEPS.clear)


def _compiled_local_loop(model):
    """One ``tf.function`` per model that runs every batch of a :class:`ClientBatches` in a
    single graph call: the same forward pass, loss and SGD step as ``model.fit`` (identical
    weights), without ``fit``'s per-call set-up, which costs more than a small client's training."""
    loop = _TRAIN_STEPS.get(model)
    if loop is not None:
        return loop
    import tensorflow as tf

    loss_fn, optimizer = model.loss, model.optimizer
    variables = model.trainable_variables
    if not optimizer.variables:
        optimizer.build(variables)

    @tf.function(reduce_retracing=True)
    def loop(x, y, bounds):
        for i in tf.range(tf.shape(bounds)[0]):
            xb, yb = x[bounds[i, 0]:bounds[i, 1]], y[bounds[i, 0]:bounds[i, 1]]
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
                if model.losses:
                    loss = loss + tf.add_n(model.losses)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    _TRAIN_STEPS[model] = loop
    return loop


def local_train(model, weights: Weights, data) -> Weights:
    """Client update: start from ``weights`` with a fresh optimizer state, run SGD over ``data``
    once (it already holds every local epoch), return the new weights. ``data`` is a
    :class:`ClientBatches` (one compiled call) or a ``tf.data.Dataset`` (``model.fit``).
    ``model`` must be compiled with SGD (:func:`client_model`)."""
    model.set_weights(weights)
    if model.optimizer.variables:  # built by an earlier call
        reset_optimizer(model)
    if isinstance(data, ClientBatches):
        _compiled_local_loop(model)(data.x, data.y, data.bounds)
    else:
        model.fit(data, epochs=1, verbose=0, shuffle=False)
    return model.get_weights()


def client_model(model_name: str, input_shape, num_classes: int, cfg: FedAvgConfig):
    """A Keras model compiled as the clients' trainer for ``cfg``: SGD with ``cfg.client_lr``
    and ``cfg.client_momentum``."""
    from .models import build_model, compile_model

    return compile_model(build_model(model_name, input_shape, num_classes),
                         learning_rate=cfg.client_lr, momentum=cfg.client_momentum)


def fedavg_round(model, global_weights: Weights, clients: ClientArrays, sampled: Sequence[int],
                 cfg: FedAvgConfig, round_num: int,
                 aggregate: Callable | None = None,
                 client_update: Callable | None = None) -> tuple[Weights, int]:
    """One FedAvg round: broadcast, local training on each sampled client, example-weighted mean
    (or ``aggregate(updates, counts)``), server step ``w + server_lr * (mean - w)``.

    ``client_update(client_id, weights)`` may replace local training (used to simulate failing
    or malicious clients); it returns new weights, or None for a client that dropped out."""
    results, counts = [], []
    for c in sampled:
        x, y = clients[c]
        if client_update is not None:
            new = client_update(int(c), global_weights)
        else:
            batches = client_batches(x, y, cfg.local_epochs, cfg.batch_size, cfg.seed, round_num, int(c))
            new = local_train(model, global_weights, batches)
        if new is None:
            continue
        results.append(new)
        counts.append(len(x))
    if not results:  # every sampled client dropped out: keep the model
        return [np.array(w) for w in global_weights], 0
    if aggregate is None:
        mean = weighted_average(results, counts)
    else:
        deltas = [[n - g for n, g in zip(r, global_weights)] for r in results]
        mean = [g + d for g, d in zip(global_weights, aggregate(deltas, counts))]
    new_global = [g + cfg.server_lr * (m - g) for g, m in zip(global_weights, mean)]
    return [w.astype(g.dtype) for w, g in zip(new_global, global_weights)], int(sum(counts))


def run_fedavg(model, initial_weights: Weights, clients: ClientArrays, cfg: FedAvgConfig,
               evaluate: Callable[[Weights], dict] | None = None, progress: bool = True,
               aggregate: Callable | None = None, client_update: Callable | None = None,
               desc: str = "FedAvg") -> tuple[Weights, list[RoundRecord]]:
    """Run ``cfg.rounds`` rounds of FedAvg from ``initial_weights``; after each round call
    ``evaluate(weights)`` (e.g. test accuracy) and record it. Returns the final weights and the
    per-round history. ``model`` is a compiled Keras model used as the clients' trainer."""
    m = num_sampled(len(clients), cfg.client_fraction, cfg.clients_per_round)
    weights = [np.array(w) for w in initial_weights]
    history: list[RoundRecord] = []
    rounds = range(1, cfg.rounds + 1)
    if progress:
        from tqdm.auto import tqdm
        rounds = tqdm(rounds, desc=desc, unit="round")
    for r in rounds:
        sampled = sample_clients(len(clients), m, r, cfg.seed)
        start = time.perf_counter()
        if cfg.client_lr_schedule != "constant":  # else the model keeps the rate it was compiled with
            model.optimizer.learning_rate.assign(cfg.client_lr_for_round(r))
        weights, n = fedavg_round(model, weights, clients, sampled, cfg, r, aggregate, client_update)
        seconds = time.perf_counter() - start
        metrics = evaluate(weights) if evaluate else {}
        if cfg.client_lr_schedule != "constant":
            metrics = dict(metrics, client_lr=cfg.client_lr_for_round(r))
        history.append(RoundRecord(r, [int(c) for c in sampled], n, seconds, metrics))
        if progress and metrics:
            rounds.set_postfix({k: round(v, 4) for k, v in metrics.items()
                                if isinstance(v, float)})
    return weights, history


# ---- saving a trained global model for later notebooks ------------------------------------------
def _config_dict(cfg: FedAvgConfig) -> dict:
    from dataclasses import asdict

    return {k: (v.item() if hasattr(v, "item") else v) for k, v in asdict(cfg).items()}


def save_fedavg_run(name: str, experiment: dict, cfg: FedAvgConfig, weights: Weights,
                    history: Sequence, extra: dict | None = None):
    """Save a FedAvg run's final global weights, its round history (``RoundRecord`` list or
    rows) and its settings as the artifact ``name`` (e.g. ``"fedavg_tff"``), keyed by the
    experiment's parameters (``Experiment.as_dict()``), for later notebooks."""
    import json

    from .artifacts import pack_weights, save_arrays

    rows = [r.as_dict() if isinstance(r, RoundRecord) else dict(r) for r in history]
    arrays = pack_weights([weights])
    arrays["__history__"] = np.array(json.dumps(rows, default=float))
    arrays["__config__"] = np.array(json.dumps(_config_dict(cfg)))
    arrays["__extra__"] = np.array(json.dumps(extra or {}, default=float))
    return save_arrays(name, {"experiment": dict(experiment)}, arrays)


def load_fedavg_run(name: str, experiment: dict, cfg: FedAvgConfig | None = None) -> tuple[dict | None, str]:
    """The run saved by :func:`save_fedavg_run` for this experiment (and, if ``cfg`` is given,
    these FedAvg settings), as ``{"weights", "history", "config", "extra"}``, or None, with a
    status saying why ("loaded", "missing", "made with other parameters (...)")."""
    import json

    from .artifacts import load_arrays, unpack_weights

    arrays, status = load_arrays(name, {"experiment": dict(experiment)})
    if arrays is None:
        return None, status
    config = json.loads(str(arrays.pop("__config__")))
    if cfg is not None and config != json.loads(json.dumps(_config_dict(cfg))):
        changed = sorted(k for k, v in _config_dict(cfg).items() if config.get(k) != v)
        return None, "made with other FedAvg settings (" + ", ".join(changed) + ")"
    history = json.loads(str(arrays.pop("__history__")))
    extra = json.loads(str(arrays.pop("__extra__")))
    return {"weights": unpack_weights(arrays)[0], "history": history, "config": config,
            "extra": extra}, "loaded"
