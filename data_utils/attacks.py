"""Clients that misbehave, for the robustness notebook (notebook 07): clients that drop out
(stragglers that miss the deadline, phones that lose their connection), and poisoned clients
(label flipping, and model replacement: a poisoned update scaled up so that it dominates the
average).

:class:`ClientBehaviour` is a ``client_update(client_id, weights)`` hook for
:func:`data_utils.fedavg.run_fedavg`: honest clients train exactly as the plain loop does (same
batches, same order), so a run without attackers or dropouts equals a run without the hook.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .clients import ClientArrays, client_batches, num_sampled, sample_clients
from .fedavg import FedAvgConfig
from .training import Trainer
from .validate import check_choice, check_fraction, check_int, check_positive

ATTACKS = ("label_flip", "model_replacement")


def flip_labels(y, num_classes: int) -> np.ndarray:
    """The label-flipping attack's labels: class ``c`` becomes ``num_classes - 1 - c``."""
    y = np.asarray(y)
    num_classes = check_int("num_classes", num_classes, low=2)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got values from {y.min()} to "
                         f"{y.max()}")
    return (num_classes - 1 - y).astype(y.dtype)


def dropped_clients(sampled: Iterable[int], fraction: float, round_num: int, seed: int) -> set:
    """Which of a round's sampled clients fail: ``round(fraction * m)`` of them, drawn from
    (seed, round), so every run with the same seed loses the same clients."""
    sampled = np.asarray(list(sampled))
    fraction = check_fraction("fraction", fraction, allow_one=True)
    k = int(round(fraction * len(sampled)))
    rng = np.random.default_rng([check_int("seed", seed, low=0), 11,
                                 check_int("round_num", round_num, low=0)])
    return {int(c) for c in rng.choice(sampled, size=k, replace=False)} if k else set()


class ClientBehaviour:
    """A ``client_update(client_id, weights)`` hook: honest local training, except for

    - ``malicious`` clients, which run ``attack``: ``"label_flip"`` (train on flipped labels)
      or ``"model_replacement"`` (train on flipped labels, then send
      ``weights + boost * (poisoned - weights)``; with ``boost`` = number of clients per round /
      server learning rate, the mean becomes roughly the attacker's model, Bagdasaryan et al.
      2020);
    - a ``drop_fraction`` of each round's sampled clients, which fail and send nothing (None).

    The hook counts its calls to know the round (``run_fedavg`` calls it once per sampled client,
    rounds in order), so use a new one for every run. ``trainer`` trains the clients
    (:func:`data_utils.training.client_trainer`)."""

    def __init__(self, trainer: Trainer, clients: ClientArrays, cfg: FedAvgConfig, num_classes: int,
                 malicious: Iterable[int] = (), attack: str | None = None, boost: float = 10.0,
                 drop_fraction: float = 0.0):
        self.trainer, self.clients, self.cfg = trainer, clients, cfg
        self.num_classes = check_int("num_classes", num_classes, low=2)
        self.malicious = {int(c) for c in malicious}
        if not self.malicious <= set(range(len(clients))):
            raise ValueError(f"malicious must be client ids in [0, {len(clients)}), got "
                             f"{sorted(self.malicious)}")
        check_choice("attack", attack, ATTACKS, allow_none=True)
        if self.malicious and attack is None:
            raise ValueError(f"attack must be one of {', '.join(map(repr, ATTACKS))} when there are "
                             f"malicious clients, got None")
        self.attack = attack
        self.boost = check_positive("boost", boost)
        self.drop_fraction = check_fraction("drop_fraction", drop_fraction, allow_one=True)
        self.m = num_sampled(len(clients), cfg.client_fraction, cfg.clients_per_round)
        self.calls = 0
        self.log: list[dict] = []  # one row per call: round, client, what happened

    def __call__(self, client_id: int, weights):
        round_num = self.calls // self.m + 1
        self.calls += 1
        sampled = sample_clients(len(self.clients), self.m, round_num, self.cfg.seed)
        if client_id not in set(sampled.tolist()):
            raise RuntimeError(f"client {client_id} was not sampled in round {round_num}: a "
                               "ClientBehaviour follows one run from its start; make a new one per run")
        if client_id in dropped_clients(sampled, self.drop_fraction, round_num, self.cfg.seed):
            self.log.append({"round": round_num, "client": client_id, "event": "dropped"})
            return None
        x, y = self.clients[client_id]
        attack = self.attack if client_id in self.malicious else None
        if attack is not None:
            y = flip_labels(y, self.num_classes)
        batches = client_batches(x, y, self.cfg.local_epochs, self.cfg.batch_size, self.cfg.seed,
                                 round_num, client_id)
        new = self.trainer.run(weights, batches)
        if attack == "model_replacement":
            new = [g + self.boost * (w - g) for w, g in zip(new, weights)]
        self.log.append({"round": round_num, "client": client_id, "event": attack or "honest"})
        return [np.asarray(w, dtype=np.asarray(g).dtype) for w, g in zip(new, weights)]
