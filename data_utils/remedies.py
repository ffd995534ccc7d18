"""Remedies for clients whose data differ (non-IID), taught in notebook 08: FedProx, SCAFFOLD,
FedNova and the server optimizers FedAvgM, FedAdam and FedYogi, as the few lines that differ
from FedAvg (:mod:`data_utils.fedavg`), plugged into the same round loop
(:func:`~data_utils.fedavg.run_rounds`: same client sampling, same batches, same seeds); plus
client drift and personalization (fine-tuning the global model on each client).

A round is three parts, as TFF composes its learning processes:

- the **client update** (:func:`local_train`): FedAvg's local SGD (``trainer.run``), or the same
  compiled loop with one extra gradient term, FedProx's proximal gradient
  ``mu * (w - w_global)`` or SCAFFOLD's correction ``c - c_i``;
- the **aggregation**: the example-weighted mean of the updates, or FedNova's normalised mean
  (each update divided by its client's number of local steps, :func:`fednova_update`);
- the **server update** (:class:`ServerOptimizer`): the averaged update (minus TFF's
  pseudo-gradient) applied with SGD (FedAvg), SGD with momentum (FedAvgM), Adam or Yogi
  (Reddi et al. 2021), written as ``tff.learning.optimizers`` computes them.

    >>> opt = ServerOptimizer("sgd", lr=1.0)
    >>> [w.tolist() for w in opt.step([np.zeros(2)], [np.array([1.0, -2.0])])]
    [[1.0, -2.0]]
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .aggregation import Weights, weighted_average
from .clients import ClientArrays, ClientBatches, client_batches
from .fedavg import FedAvgConfig, RoundStep, fedavg_round, run_rounds
from .training import Trainer
from .validate import check_choice, check_int, check_number, check_positive

ALGORITHMS = ("fedavg", "fedprox", "scaffold", "fednova", "fedavgm", "fedadam", "fedyogi")
# the server optimizer of each algorithm (TFF: build_weighted_fed_avg's server_optimizer_fn)
SERVER_OPTIMIZERS = {"fedavg": "sgd", "fedprox": "sgd", "scaffold": "sgd", "fednova": "sgd",
                     "fedavgm": "sgdm", "fedadam": "adam", "fedyogi": "yogi"}
# server learning rate when none is given: FedAvg's (cfg.server_lr) except for the adaptive
# optimizers, whose step is about lr per weight whatever the update's size (Reddi et al. 2021
# tune it in [1e-3, 1]; 0.01 is in their best range for image tasks with tau = 1e-3)
ADAPTIVE_SERVER_LR = 0.01
YOGI_INITIAL_PRECONDITIONER = 1e-6  # tff.learning.optimizers.build_yogi's default


def server_learning_rate(algorithm: str, cfg: FedAvgConfig, server_lr: float | None = None) -> float:
    """The server learning rate a run of ``algorithm`` uses: ``server_lr``, or the default
    (``cfg.server_lr``; :data:`ADAPTIVE_SERVER_LR` for FedAdam and FedYogi)."""
    check_choice("algorithm", algorithm, ALGORITHMS)
    if server_lr is not None:
        return check_positive("server_lr", server_lr)
    return ADAPTIVE_SERVER_LR if SERVER_OPTIMIZERS[algorithm] in ("adam", "yogi") else float(cfg.server_lr)


# ---- the lines that differ from FedAvg (notebook 08 shows the same in its remedies-lesson cells) --
def proximal_gradients(grads, weights, global_weights, mu):
    """FedProx (Li et al. 2020): the gradient of loss + mu/2 ||w - w_global||^2, layer by layer."""
    return [g + mu * (w - w0) for g, w, w0 in zip(grads, weights, global_weights)]


def scaffold_gradients(grads, c, c_i):
    """SCAFFOLD (Karimireddy et al. 2020): each step's gradient corrected by c - c_i."""
    return [g + s - si for g, s, si in zip(grads, c, c_i)]


def scaffold_control(c_i, c, global_weights, local_weights, steps, lr):
    """SCAFFOLD's new client control variate (option II): c_i - c + (x - y_i) / (K lr)."""
    return [ci - s + (x - y) / (steps * lr) for ci, s, x, y in zip(c_i, c, global_weights, local_weights)]


def nova_steps(steps, momentum=0.0):
    """FedNova's ||a_i||_1 for ``steps`` local SGD steps with momentum rho (Wang et al. 2020):
    the steps themselves for plain SGD."""
    if momentum == 0:
        return float(steps)
    rho = momentum
    return (steps - rho * (1 - rho ** steps) / (1 - rho)) / (1 - rho)


def fednova_update(global_weights, local_weights, counts, a):
    """FedNova: each client's update divided by its a_i, the example-weighted mean of those,
    times tau_eff = sum_i p_i a_i (equal a_i: FedAvg's mean update)."""
    p = np.asarray(counts, dtype=np.float64) / np.sum(counts)
    tau_eff = float(np.dot(p, a))
    return [tau_eff * sum(pi * (y[k] - g) / ai for pi, y, ai in zip(p, local_weights, a))
            for k, g in enumerate(global_weights)]


def adam_step(w, m, v, delta, lr, beta1, beta2, tau, step):
    """One server Adam step on the averaged update ``delta`` (TFF's pseudo-gradient is -delta),
    as ``tff.learning.optimizers.build_adam`` computes it (bias-corrected learning rate)."""
    g = -delta
    m = m + (g - m) * (1 - beta1)
    v = v + (g * g - v) * (1 - beta2)
    lr_t = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    return w - lr_t * m / (np.sqrt(v) + tau), m, v


def yogi_step(w, m, v, delta, lr, beta1, beta2, tau, step):
    """Yogi (Zaheer et al. 2018; FedYogi): Adam whose second moment moves by (1 - beta2) g^2
    towards g^2 only, sign(g^2 - v) (``tff.learning.optimizers.build_yogi``)."""
    g = -delta
    m = m + (g - m) * (1 - beta1)
    v = v + (1 - beta2) * np.sign(g * g - v) * (g * g)
    lr_t = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    return w - lr_t * m / (np.sqrt(v) + tau), m, v


def check_remedy_options(mu=0.01, server_lr=None, server_momentum=0.9, beta1=0.9, beta2=0.99, tau=1e-3) -> None:
    """ValueError naming the first bad option of :func:`run_remedy` (mu >= 0, server_lr > 0 or
    None, server_momentum, beta1 and beta2 in [0, 1), tau > 0)."""
    check_positive("mu", mu, allow_zero=True)
    check_positive("server_lr", server_lr, allow_none=True)
    for name, value in (("server_momentum", server_momentum), ("beta1", beta1), ("beta2", beta2)):
        check_number(name, value, 0, 1, high_open=True)
    check_positive("tau", tau)


# ---- server side ---------------------------------------------------------------------------------
class ServerOptimizer:
    """The server's step on the averaged client update ``delta`` (mean local weights minus global
    weights): ``"sgd"`` w + lr delta (FedAvg), ``"sgdm"`` with momentum (FedAvgM), ``"adam"``,
    ``"yogi"`` (FedAdam, FedYogi). Keeps its state (momentum, moments) across rounds."""

    def __init__(self, name: str, lr: float = 1.0, momentum: float = 0.9, beta1: float = 0.9,
                 beta2: float = 0.99, tau: float = 1e-3):
        self.name = check_choice("server optimizer", name, ("sgd", "sgdm", "adam", "yogi"))
        self.lr = check_positive("server_lr", lr)
        self.momentum = check_number("server_momentum", momentum, 0, 1, high_open=True)
        self.beta1 = check_number("beta1", beta1, 0, 1, high_open=True)
        self.beta2 = check_number("beta2", beta2, 0, 1, high_open=True)
        self.tau = check_positive("tau", tau)
        self.m = self.v = None
        self.steps = 0

    def step(self, weights: Weights, delta: Weights) -> Weights:
        """The new global weights."""
        self.steps += 1
        if self.name == "sgd":
            return [(w + self.lr * d).astype(w.dtype) for w, d in zip(weights, delta)]
        if self.m is None:
            self.m = [np.zeros_like(w) for w in weights]
            start = YOGI_INITIAL_PRECONDITIONER if self.name == "yogi" else 0.0
            self.v = [np.full_like(w, start) for w in weights]
        if self.name == "sgdm":  # TFF's sgdm on the pseudo-gradient -delta: m = rho m + g; w - lr m
            self.m = [self.momentum * m + d for m, d in zip(self.m, delta)]
            return [(w + self.lr * m).astype(w.dtype) for w, m in zip(weights, self.m)]
        rule = adam_step if self.name == "adam" else yogi_step
        out = [rule(w, m, v, d, self.lr, self.beta1, self.beta2, self.tau, self.steps)
               for w, m, v, d in zip(weights, self.m, self.v, delta)]
        self.m, self.v = [o[1] for o in out], [o[2] for o in out]
        return [o[0].astype(w.dtype) for o, w in zip(out, weights)]


# ---- client side: FedAvg's compiled local loop with one extra gradient term --------------------
def _adjust(grads, weights, anchor, correction, mu):
    """Each gradient g of the trainer's local loop (``trainer.step_loop(_adjust)``, as
    :meth:`~data_utils.training.Trainer.run`'s) becomes g + mu (w - anchor) + correction."""
    grads = proximal_gradients(grads, weights, anchor, mu)     # FedProx (mu = 0: none)
    return [g + c for g, c in zip(grads, correction)]          # SCAFFOLD (0: none)


def local_train(trainer: Trainer, weights: Weights, batches: ClientBatches, mu: float | None = None,
                correction: Weights | None = None) -> Weights:
    """One client update from ``weights`` over ``batches`` with a fresh optimizer state:
    FedAvg's (no ``mu``, no ``correction``: ``trainer.run``), FedProx's (``mu``: the proximal
    gradient towards ``weights``) or SCAFFOLD's (``correction`` = c - c_i added to every
    gradient); both in one compiled loop that adds them to each step's gradient."""
    if mu is None and correction is None:
        return trainer.run(weights, batches)
    import tensorflow as tf

    trainer.reset(weights)
    anchor = [tf.constant(np.asarray(w, np.float32)) for w in weights]
    corr = [tf.constant(np.asarray(c, np.float32)) for c in
            (correction if correction is not None else [np.zeros_like(w) for w in weights])]
    trainer.step_loop(_adjust)(batches.x, batches.y, batches.bounds, anchor, corr, tf.constant(float(mu or 0.0), tf.float32))
    return trainer.weights()


# ---- one round of any of the algorithms ---------------------------------------------------------
class Remedy:
    """One algorithm's state across rounds: its server optimizer and, for SCAFFOLD, the server
    control variate c and every client's c_i (kept by the clients between rounds)."""

    def __init__(self, algorithm: str, trainer: Trainer, clients: ClientArrays, cfg: FedAvgConfig,
                 mu: float = 0.01, server_lr: float | None = None, server_momentum: float = 0.9,
                 beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3):
        self.algorithm = check_choice("algorithm", algorithm, ALGORITHMS)
        check_remedy_options(mu, server_lr, server_momentum, beta1, beta2, tau)
        self.mu = float(mu)
        self.server = ServerOptimizer(SERVER_OPTIMIZERS[algorithm], server_learning_rate(algorithm, cfg, server_lr),
                                      server_momentum, beta1, beta2, tau)
        self.trainer, self.clients, self.cfg = trainer, clients, cfg
        self.c: Weights | None = None   # SCAFFOLD: the server's control variate
        self.c_clients: dict = {}       # SCAFFOLD: each client's c_i (state kept between rounds)

    def round(self, weights: Weights, sampled: Sequence[int], round_num: int) -> tuple[Weights, int]:
        """One round from the global ``weights`` with the ``sampled`` clients: the new global
        weights and the examples trained on (as :func:`~data_utils.fedavg.fedavg_round`)."""
        cfg, algo = self.cfg, self.algorithm
        lr = cfg.client_lr_for_round(round_num)
        if cfg.client_lr_schedule != "constant":
            self.trainer.set_learning_rate(lr)
        if algo == "scaffold" and self.c is None:
            self.c = [np.zeros_like(w) for w in weights]
        results, counts, steps, new_c = [], [], [], {}
        for c in sampled:
            c = int(c)
            x, y = self.clients[c]
            batches = client_batches(x, y, cfg.local_epochs, cfg.batch_size, cfg.seed, round_num, c)
            if algo == "fedprox":
                new = local_train(self.trainer, weights, batches, mu=self.mu)
            elif algo == "scaffold":
                c_i = self.c_clients.get(c, [np.zeros_like(w) for w in weights])
                # With client momentum b the correction enters the momentum buffer, which multiplies a
                # steady term by 1/(1 - b): scaled by (1 - b) it moves each step by lr (c - c_i), as
                # the paper's plain-SGD step (and Flower's baseline, which adds it after momentum) does.
                keep = 1.0 - cfg.client_momentum
                new = local_train(self.trainer, weights, batches,
                                  correction=[keep * (s - si) for s, si in zip(self.c, c_i)])
                new_c[c] = scaffold_control(c_i, self.c, weights, new, len(batches), lr)
            else:
                new = local_train(self.trainer, weights, batches)
            results.append(new)
            counts.append(len(x))
            steps.append(len(batches))
        if algo == "fednova":
            delta = fednova_update(weights, results, counts, [nova_steps(k, cfg.client_momentum) for k in steps])
        else:
            delta = [m - w for m, w in zip(weighted_average(results, counts), weights)]
        if algo == "scaffold":  # c <- c + |S|/N mean(c_i+ - c_i)
            old = {c: self.c_clients.get(c, [np.zeros_like(w) for w in weights]) for c in new_c}
            share = len(new_c) / len(self.clients)
            self.c = [s + share * np.mean([new_c[c][k] - old[c][k] for c in new_c], axis=0)
                      for k, s in enumerate(self.c)]
            self.c_clients.update(new_c)
        return self.server.step(weights, delta), int(sum(counts))


def run_remedy(algorithm: str, trainer: Trainer, initial_weights: Weights, clients: ClientArrays,
               cfg: FedAvgConfig, *, mu: float = 0.01, server_lr: float | None = None,
               server_momentum: float = 0.9, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3,
               evaluate: Callable[[Weights], dict] | None = None, progress: bool = True) -> tuple[list, list]:
    """Like :func:`data_utils.fedavg.run_fedavg` (same clients, batches and seeds; returns the
    final weights and one :class:`~data_utils.fedavg.RoundRecord` per round), for one of
    :data:`ALGORITHMS`. ``mu``: FedProx's proximal strength; ``server_lr`` (None: see
    :func:`server_learning_rate`), ``server_momentum`` (FedAvgM), ``beta1``, ``beta2``, ``tau``
    (FedAdam, FedYogi: Adam's epsilon). ``run_remedy("fedavg", ...)`` is ``run_fedavg``."""
    if not isinstance(trainer, Trainer):
        raise ValueError(f"trainer must be a data_utils.training.Trainer (client_trainer(...)), "
                         f"got {type(trainer).__name__}")
    remedy = Remedy(algorithm, trainer, clients, cfg, mu, server_lr, server_momentum, beta1, beta2, tau)

    def step(weights, sampled, r):
        if algorithm == "fedavg" and server_lr in (None, cfg.server_lr):  # FedAvg itself
            if cfg.client_lr_schedule != "constant":
                trainer.set_learning_rate(cfg.client_lr_for_round(r))
            return RoundStep(*fedavg_round(trainer, weights, clients, sampled, cfg, r))
        return RoundStep(*remedy.round(weights, sampled, r))

    return run_rounds([np.array(w) for w in initial_weights], len(clients), cfg, step,
                      evaluate=evaluate, progress=progress, desc=algorithm)


# ---- client drift ----------------------------------------------------------------------------------
def flat(weights: Weights) -> np.ndarray:
    """All layers of a weight list (or update) as one float64 vector."""
    return np.concatenate([np.asarray(w, np.float64).ravel() for w in weights])


def client_drift(global_weights: Weights, local_weights: Sequence[Weights], counts: Sequence[int]) -> dict:
    """How far the clients' updates point apart after one round of local training from
    ``global_weights``: the mean cosine between pairs of client updates, the mean cosine of each
    update with the example-weighted average update, and the mean distance of each local model
    from the averaged model relative to the average update's norm (0: every client agrees)."""
    if len(local_weights) < 2:
        raise ValueError(f"client drift needs at least two clients' updates, got {len(local_weights)}")
    g = flat(global_weights)
    u = np.stack([flat(w) - g for w in local_weights])
    p = np.asarray(counts, np.float64) / np.sum(counts)
    avg = p @ u
    unit = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-30)
    cos = unit @ unit.T
    pairs = cos[np.triu_indices(len(u), 1)]
    to_avg = unit @ (avg / max(np.linalg.norm(avg), 1e-30))
    return {"pairwise_cosine": float(pairs.mean()), "cosine_to_average": float(to_avg.mean()),
            "distance_to_average": float(np.linalg.norm(u - avg, axis=1).mean() / max(np.linalg.norm(avg), 1e-30)),
            "update_norm": float(np.linalg.norm(u, axis=1).mean())}


# ---- personalization ----------------------------------------------------------------------------------
PERSONAL_ROUND = 10_000  # the "round" number seeding fine-tuning's batch order (never a training round)


def fine_tune(trainer: Trainer, weights: Weights, x: np.ndarray, y: np.ndarray, epochs: int,
              batch_size: int | None, seed: int, client: int) -> Weights:
    """Personalization by fine-tuning: the client trains the global model on its own training
    data for ``epochs`` epochs (the client trainer's SGD; seeded batches) and keeps the result."""
    check_int("epochs", epochs, low=1)
    return trainer.run(weights, client_batches(x, y, epochs, batch_size, seed, PERSONAL_ROUND, client))


def client_accuracies(model, weight_lists: Sequence[Weights], test_clients: ClientArrays) -> np.ndarray:
    """Accuracy of ``weight_lists[i]`` (client i's model) on client i's local test split, with a
    Keras ``model`` of the right architecture (NaN: the client has no local test data)."""
    if len(weight_lists) != len(test_clients):
        raise ValueError(f"need one weight list per client ({len(test_clients)}), got {len(weight_lists)}")
    from .models import predict_labels

    out = []
    for i in range(len(test_clients)):
        x, y = test_clients[i]
        if len(x) == 0:
            out.append(float("nan"))
            continue
        model.set_weights(list(weight_lists[i]))
        out.append(float(np.mean(predict_labels(model, x) == y)))
    return np.array(out)
