"""Federated Averaging (McMahan et al. 2017) in plain NumPy/Keras, and the pieces it shares with
the TFF version in :mod:`data_utils.tff_fedavg`: client sampling, the per-round client datasets
(same examples, same order in both), and the example-weighted mean of weights, layer by layer.

FedSGD is the special case ``local_epochs=1, batch_size=None`` (one full-batch gradient step).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

Weights = list  # a list of NumPy arrays, one per layer variable, as from model.get_weights()


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


def client_dataset(x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int | None,
                   seed: int, round_num: int = 0, client: int = 0):
    """A client's local training data for one round as a ``tf.data.Dataset``: ``epochs`` passes,
    each in its own seeded order, batched within each epoch (``batch_size=None``: one full batch
    per epoch, i.e. FedSGD). Deterministic: TFF and the manual loop get identical batches."""
    import tensorflow as tf

    if epochs < 1:
        raise ValueError(f"local epochs must be >= 1, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None (full batch), got {batch_size}")
    if len(x) == 0:
        raise ValueError("a client with no examples cannot train")
    bs = len(x) if batch_size is None else int(batch_size)
    order = np.concatenate(epoch_orders(len(x), epochs, seed, round_num, client))
    # batch each epoch separately: a batch never mixes two epochs
    epoch_of = np.repeat(np.arange(epochs), len(x))
    ds = None
    for e in range(epochs):
        idx = order[epoch_of == e]
        part = tf.data.Dataset.from_tensor_slices((x[idx], y[idx].astype("int32"))).batch(bs)
        ds = part if ds is None else ds.concatenate(part)
    return ds


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

    def __post_init__(self):
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if not self.client_lr > 0 or not self.server_lr > 0:
            raise ValueError("client_lr and server_lr must be positive")


@dataclass
class RoundRecord:
    round: int
    clients: list
    num_examples: int
    seconds: float
    metrics: dict = field(default_factory=dict)


def local_train(model, weights: Weights, dataset) -> Weights:
    """Client update: start from ``weights``, run SGD over ``dataset`` once (the dataset already
    holds every local epoch), return the new weights. ``model`` must be compiled with SGD."""
    model.set_weights(weights)
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return model.get_weights()


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
            ds = client_dataset(x, y, cfg.local_epochs, cfg.batch_size, cfg.seed, round_num, int(c))
            new = local_train(model, global_weights, ds)
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
        weights, n = fedavg_round(model, weights, clients, sampled, cfg, r, aggregate, client_update)
        seconds = time.perf_counter() - start
        metrics = evaluate(weights) if evaluate else {}
        history.append(RoundRecord(r, [int(c) for c in sampled], n, seconds, metrics))
        if progress and metrics:
            rounds.set_postfix({k: round(v, 4) for k, v in metrics.items()
                                if isinstance(v, float)})
    return weights, history
