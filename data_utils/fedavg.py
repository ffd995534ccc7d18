"""Federated Averaging (McMahan et al. 2017) written by hand (notebooks 03-07), and the round
loop it shares with TFF's FedAvg (:mod:`data_utils.tff_fedavg`).

One round: sample clients, broadcast the global weights, let each sampled client train
(:meth:`data_utils.training.Trainer.run`), take the example-weighted mean of the results
(:func:`data_utils.aggregation.weighted_average`), and step the server towards it. FedSGD is the
special case ``local_epochs=1, batch_size=None`` (one full-batch gradient step).

:func:`run_rounds` is the loop around any such round, with hooks, as TFF composes its learning
processes from parts: which clients (``sample``), one round's step (``step``), and what to
record afterwards (``evaluate``, ``on_round``). :func:`run_fedavg` plugs in the hand-written
round; :func:`data_utils.tff_fedavg.run_tff_fedavg` plugs in ``process.next``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .aggregation import Weights, weighted_average
from .artifacts import load_arrays, pack_weights, save_arrays, unpack_weights
from .clients import ClientArrays, client_batches, num_sampled, sample_clients
from .training import LR_SCHEDULES, Trainer, epoch_learning_rate
from .validate import check_choice, check_int, check_number, check_positive


# ---- settings and records ------------------------------------------------------------------------
@dataclass
class FedAvgConfig:
    """FedAvg's settings in McMahan et al.'s terms (notebooks 03-07): ``rounds``; the share of
    clients per round C (``client_fraction``) or an exact ``clients_per_round``; local epochs
    E and batch size B (None: the full local data, FedSGD with E = 1); the client and server
    learning rates; the seed of sampling and example order; an optional cosine decay of the
    client learning rate over the rounds, and client SGD momentum.

        >>> FedAvgConfig(rounds=10, client_lr=0.1, client_lr_schedule="cosine").client_lr_for_round(1)
        0.1
    """
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
        check_int("rounds", self.rounds, low=0)
        check_positive("client_lr", self.client_lr)
        check_positive("server_lr", self.server_lr)
        check_number("client_momentum", self.client_momentum, 0, 1, high_open=True)
        check_choice("client_lr_schedule", self.client_lr_schedule, LR_SCHEDULES)

    def client_lr_for_round(self, round_num: int) -> float:
        """The clients' learning rate in round ``round_num`` (1-based): ``client_lr`` every round,
        or a cosine decay from ``client_lr`` in round 1 towards zero (never reached)."""
        check_int("round_num (rounds are numbered from 1)", round_num, low=1)
        return epoch_learning_rate(self.client_lr, round_num - 1, max(self.rounds, round_num),
                                   self.client_lr_schedule)


@dataclass
class RoundRecord:
    """One round of a run: its number, the sampled clients, the examples they trained on, the
    seconds the round took, and what was measured afterwards (``metrics``)."""
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


# ---- the round loop, shared with TFF ----------------------------------------------------------------
@dataclass
class RoundStep:
    """What one round's ``step`` returns to :func:`run_rounds`: the new server state, the
    examples the clients trained on, and metrics the step measured itself (TFF's train loss)."""
    state: Any
    num_examples: int
    metrics: dict = field(default_factory=dict)


def run_rounds(state, num_clients: int, cfg: FedAvgConfig,
               step: Callable[[Any, np.ndarray, int], RoundStep],
               weights_of: Callable[[Any], Weights] = lambda s: s,
               evaluate: Callable[[Weights], dict] | None = None,
               on_round: Callable[[RoundRecord, Any], None] | None = None,
               progress: bool = True, desc: str = "FedAvg") -> tuple[Any, list[RoundRecord]]:
    """``cfg.rounds`` rounds from ``state``. Each round samples its clients
    (:func:`~data_utils.clients.sample_clients`, a pure function of seed and round), calls
    ``step(state, sampled, round_num)`` and times it, then ``evaluate(weights_of(state))``
    (e.g. test accuracy) and ``on_round(record, state)``. Returns the final state and one
    :class:`RoundRecord` per round. A tqdm bar shows progress unless ``progress=False``."""
    m = num_sampled(num_clients, cfg.client_fraction, cfg.clients_per_round)
    history: list[RoundRecord] = []
    rounds = range(1, cfg.rounds + 1)
    if progress:
        from tqdm.auto import tqdm
        rounds = tqdm(rounds, desc=desc, unit="round")
    for r in rounds:
        sampled = sample_clients(num_clients, m, r, cfg.seed)
        start = time.perf_counter()
        result = step(state, sampled, r)
        seconds = time.perf_counter() - start
        state = result.state
        metrics = dict(result.metrics)
        if evaluate:
            metrics.update(evaluate(weights_of(state)))
        if cfg.client_lr_schedule != "constant":
            metrics["client_lr"] = cfg.client_lr_for_round(r)
        history.append(RoundRecord(r, [int(c) for c in sampled], int(result.num_examples), seconds, metrics))
        if on_round:
            on_round(history[-1], state)
        if progress and metrics:
            rounds.set_postfix({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
    return state, history


# ---- the hand-written round ----------------------------------------------------------------------
def fedavg_round(trainer: Trainer, global_weights: Weights, clients: ClientArrays, sampled: Sequence[int],
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
            new = trainer.run(global_weights, batches)
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


def run_fedavg(trainer: Trainer, initial_weights: Weights, clients: ClientArrays, cfg: FedAvgConfig,
               evaluate: Callable[[Weights], dict] | None = None, progress: bool = True,
               aggregate: Callable | None = None, client_update: Callable | None = None,
               desc: str = "FedAvg") -> tuple[Weights, list[RoundRecord]]:
    """Run ``cfg.rounds`` rounds of FedAvg from ``initial_weights``; after each round call
    ``evaluate(weights)`` (e.g. test accuracy) and record it. Returns the final weights and the
    per-round history. ``trainer`` (:func:`data_utils.training.client_trainer`) trains the
    clients; ``aggregate``/``client_update`` as in :func:`fedavg_round`."""
    if not isinstance(trainer, Trainer):
        raise ValueError(f"trainer must be a data_utils.training.Trainer (client_trainer(...)), "
                         f"got {type(trainer).__name__}")

    def step(weights, sampled, r):
        if cfg.client_lr_schedule != "constant":  # else the trainer keeps the rate it was built with
            trainer.set_learning_rate(cfg.client_lr_for_round(r))
        new, n = fedavg_round(trainer, weights, clients, sampled, cfg, r, aggregate, client_update)
        return RoundStep(new, n)

    return run_rounds([np.array(w) for w in initial_weights], len(clients), cfg, step,
                      evaluate=evaluate, progress=progress, desc=desc)


# ---- saving a trained global model for later notebooks ------------------------------------------
def _config_dict(cfg: FedAvgConfig) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in asdict(cfg).items()}


def save_fedavg_run(name: str, experiment: dict, cfg: FedAvgConfig, weights: Weights,
                    history: Sequence, extra: dict | None = None):
    """Save a FedAvg run's final global weights, its round history (``RoundRecord`` list or
    rows) and its settings as the artifact ``name`` (e.g. ``"fedavg_tff"``), keyed by the
    experiment's parameters (``Experiment.as_dict()``), for later notebooks."""
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
