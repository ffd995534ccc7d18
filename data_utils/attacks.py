"""Clients that misbehave, for the robustness notebook (notebook 07): clients that drop out
(stragglers that miss the deadline, phones that lose their connection), and poisoned clients:

- ``"label_flip"``: untargeted label flipping (class ``c`` trained as ``9 - c``), update sent as is;
- ``"boosted_label_flip"``: the same, with the update scaled by ``boost`` (the scaling of
  model replacement, Bagdasaryan et al. 2020, applied to an untargeted attack);
- ``"backdoor"``: a targeted backdoor (Bagdasaryan et al. 2020; Sun et al. 2019): a small
  pixel pattern (:func:`stamp_trigger`) is stamped on a share of the attacker's images, which
  are relabelled to a target class; the update is scaled by ``boost``.

With ``within_norm=True`` a boosted attacker also trains honestly on its own clean data and
scales its malicious update down to that honest update's L2 norm: it looks like an ordinary
client to any defence that only looks at norms (Sun et al. 2019's norm-bounded attacker).

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

ATTACKS = ("label_flip", "boosted_label_flip", "backdoor")
TRIGGER_SIZE = 4  # the backdoor trigger: a 4x4 checkerboard in the bottom-right corner


def flip_labels(y, num_classes: int) -> np.ndarray:
    """The label-flipping attack's labels: class ``c`` becomes ``num_classes - 1 - c``."""
    y = np.asarray(y)
    num_classes = check_int("num_classes", num_classes, low=2)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got values from {y.min()} to "
                         f"{y.max()}")
    return (num_classes - 1 - y).astype(y.dtype)


def stamp_trigger(x) -> np.ndarray:
    """A copy of images ``x`` (n, h, w, c) in [0, 1] with the backdoor trigger stamped on: a
    :data:`TRIGGER_SIZE` x :data:`TRIGGER_SIZE` checkerboard of 1s and 0s, one pixel from the
    bottom-right corner (where Fashion-MNIST images are background).

    >>> stamp_trigger(np.zeros((1, 8, 8, 1)))[0, 3:, 3:, 0].astype(int).tolist()
    [[1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 0, 0, 0, 0]]
    """
    x = np.array(x, copy=True)
    if x.ndim != 4 or x.shape[1] < TRIGGER_SIZE + 1 or x.shape[2] < TRIGGER_SIZE + 1:
        raise ValueError(f"x must be images of shape (n, h, w, c) with h, w > {TRIGGER_SIZE}, got "
                         f"shape {x.shape}")
    k = TRIGGER_SIZE
    board = (np.indices((k, k)).sum(axis=0) % 2 == 0).astype(x.dtype)
    x[:, -k - 1:-1, -k - 1:-1, :] = board[None, :, :, None]
    return x


def backdoor_data(x, y, target: int, fraction: float, seed: int, client: int = 0):
    """The backdoor attacker's training set: a seeded ``fraction`` of its images get the trigger
    and the label ``target``; the rest stay clean (so the model stays accurate on clean data)."""
    y = np.asarray(y)
    target = check_int("target", target, low=0)
    fraction = check_fraction("fraction", fraction, allow_one=True)
    rng = np.random.default_rng([check_int("seed", seed, low=0), 13, int(client)])
    chosen = rng.permutation(len(y))[:int(round(fraction * len(y)))]
    x, y = np.array(x, copy=True), y.copy()
    x[chosen] = stamp_trigger(x[chosen])
    y[chosen] = target
    return x, y


def attack_success_rate(predict, x_test, y_test, target: int) -> float:
    """Backdoor attack success rate: the share of triggered test images whose true class is
    not ``target`` that ``predict(images) -> labels`` puts in class ``target``."""
    keep = np.asarray(y_test) != target
    if not keep.any():
        raise ValueError(f"the test set has no image outside the target class {target}")
    return float(np.mean(np.asarray(predict(stamp_trigger(np.asarray(x_test)[keep]))) == target))


def _norm(ws) -> float:
    return float(np.sqrt(sum(float(np.sum(np.square(np.asarray(w, np.float64)))) for w in ws)))


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

    - ``malicious`` clients, which run ``attack`` (one of :data:`ATTACKS`, see the module
      docstring): ``"boosted_label_flip"`` and ``"backdoor"`` send
      ``weights + boost * (poisoned - weights)``; with ``boost`` = clients per round / server
      learning rate the mean becomes roughly the attacker's model (model replacement,
      Bagdasaryan et al. 2020). ``within_norm``: scale that update down to the norm of the
      attacker's own honest update. ``target``/``poison_fraction``: the backdoor's target class
      and the share of the attacker's images that carry the trigger;
    - a ``drop_fraction`` of each round's sampled clients, which fail and send nothing (None).

    The hook counts its calls to know the round (``run_fedavg`` calls it once per sampled client,
    rounds in order), so use a new one for every run. ``trainer`` trains the clients
    (:func:`data_utils.training.client_trainer`). ``log`` has one row per call: round, client,
    what it did and the L2 norm of the update it sent."""

    def __init__(self, trainer: Trainer, clients: ClientArrays, cfg: FedAvgConfig, num_classes: int,
                 malicious: Iterable[int] = (), attack: str | None = None, boost: float = 10.0,
                 drop_fraction: float = 0.0, within_norm: bool = False, target: int = 0,
                 poison_fraction: float = 0.5):
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
        if not isinstance(within_norm, (bool, np.bool_)):
            raise ValueError(f"within_norm must be True or False, got {within_norm!r}")
        self.within_norm = bool(within_norm)
        self.target = check_int("target", target, 0, self.num_classes - 1)
        self.poison_fraction = check_fraction("poison_fraction", poison_fraction, allow_one=True)
        self.m = num_sampled(len(clients), cfg.client_fraction, cfg.clients_per_round)
        self.calls = 0
        self.log: list[dict] = []

    def _poisoned_data(self, client_id, x, y):
        if self.attack == "backdoor":
            return backdoor_data(x, y, self.target, self.poison_fraction, self.cfg.seed, client_id)
        return x, flip_labels(y, self.num_classes)

    def __call__(self, client_id: int, weights):
        round_num = self.calls // self.m + 1
        self.calls += 1
        sampled = sample_clients(len(self.clients), self.m, round_num, self.cfg.seed)
        if client_id not in set(sampled.tolist()):
            raise RuntimeError(f"client {client_id} was not sampled in round {round_num}: a "
                               "ClientBehaviour follows one run from its start; make a new one per run")
        if client_id in dropped_clients(sampled, self.drop_fraction, round_num, self.cfg.seed):
            self.log.append({"round": round_num, "client": client_id, "event": "dropped", "norm": 0.0})
            return None
        x, y = self.clients[client_id]
        attack = self.attack if client_id in self.malicious else None

        def train(x, y):
            batches = client_batches(x, y, self.cfg.local_epochs, self.cfg.batch_size, self.cfg.seed,
                                     round_num, client_id)
            return [np.asarray(w) - np.asarray(g) for w, g in zip(self.trainer.run(weights, batches), weights)]

        if attack is None:  # honest: exactly the plain loop's local training
            batches = client_batches(x, y, self.cfg.local_epochs, self.cfg.batch_size, self.cfg.seed,
                                     round_num, client_id)
            new = self.trainer.run(weights, batches)
            self.log.append({"round": round_num, "client": client_id, "event": "honest",
                             "norm": _norm([np.asarray(w) - np.asarray(g) for w, g in zip(new, weights)])})
            return [np.asarray(w, dtype=np.asarray(g).dtype) for w, g in zip(new, weights)]
        delta = train(*self._poisoned_data(client_id, x, y))
        if attack in ("boosted_label_flip", "backdoor"):
            delta = [self.boost * d for d in delta]
            if self.within_norm:  # shrink to the norm an honest update of this client would have
                bound, norm = _norm(train(x, y)), _norm(delta)
                delta = [d * min(1.0, bound / max(norm, 1e-30)) for d in delta]
        self.log.append({"round": round_num, "client": client_id, "event": attack, "norm": _norm(delta)})
        return [(np.asarray(g) + d).astype(np.asarray(g).dtype) for d, g in zip(delta, weights)]
