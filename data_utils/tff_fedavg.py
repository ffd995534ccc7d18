"""FedAvg with TensorFlow Federated 0.87 on the course's clients and models.

The clients are the same :class:`~data_utils.fedavg.ClientArrays` as the manual loop's; each round
only the sampled clients' ``tf.data`` datasets are built (lazily), with exactly the batches
:func:`~data_utils.fedavg.client_dataset` gives the manual loop, so both runs are comparable
round by round. Importing this module imports TFF (Python 3.9-3.11 and Keras 2 only).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .fedavg import (ClientArrays, FedAvgConfig, RoundRecord, Weights, client_dataset,
                     num_sampled, sample_clients)
from .models import build_model


def import_tff():
    """Import TFF, with a learner-facing message for the usual ways this fails."""
    import sys

    if sys.version_info[:2] > (3, 11):
        raise RuntimeError(
            f"TensorFlow Federated 0.87 needs Python 3.9-3.11; this is Python "
            f"{sys.version_info.major}.{sys.version_info.minor}. In Colab: Runtime -> Change runtime "
            "type -> Runtime version 2025.07 (Python 3.11), or use the side environment "
            "(data_utils.sidecar). Locally: make setup.")
    try:
        import tensorflow_federated as tff
    except ImportError as err:
        raise RuntimeError(
            f"TensorFlow Federated could not be imported ({err}). Install the course stack with "
            "`make setup` (locally) or `bash colab_setup.sh` (Colab); a plain `pip install "
            "tensorflow-federated` fails (its jaxlib==0.4.14 pin is gone from PyPI) or falls back "
            "to an ancient release.") from err
    version = tuple(int(p) for p in tff.__version__.split(".")[:2])
    if version < (0, 80):
        raise RuntimeError(
            f"TensorFlow Federated {tff.__version__} is too old for this course (it needs 0.87); "
            "pip fell back to an ancient release, usually because Python is not 3.11.")
    import tensorflow as tf

    if not tf.keras.__name__.startswith(("keras.api._v2", "tf_keras", "keras._tf_keras")) and \
            int(tf.__version__.split(".")[1]) >= 16:
        raise RuntimeError(
            f"TFF 0.87 needs Keras 2, but TensorFlow {tf.__version__} brings Keras 3. Use the "
            "course's Python 3.11 stack (TensorFlow 2.14).")
    return tff


def keras_model_fn(model_name: str, input_shape, num_classes: int, element_spec) -> Callable:
    """A no-argument function that builds a fresh Keras model and wraps it for TFF."""
    tff = import_tff()
    import tensorflow as tf

    def model_fn():
        return tff.learning.models.from_keras_model(
            build_model(model_name, input_shape, num_classes),
            input_spec=element_spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    return model_fn


def element_spec(input_shape):
    import tensorflow as tf

    return (tf.TensorSpec(shape=(None, *input_shape), dtype=tf.float32),
            tf.TensorSpec(shape=(None,), dtype=tf.int32))


def build_fedavg(model_name: str, input_shape, num_classes: int, client_lr: float,
                 server_lr: float = 1.0, model_aggregator=None, client_momentum: float = 0.0):
    """``tff.learning.algorithms.build_weighted_fed_avg`` with SGD on clients and server
    (``tff.learning.optimizers.build_sgdm``; the clients' with ``client_momentum`` if > 0),
    examples-weighted."""
    tff = import_tff()
    kwargs = {}
    if model_aggregator is not None:
        kwargs["model_aggregator"] = model_aggregator
    return tff.learning.algorithms.build_weighted_fed_avg(
        keras_model_fn(model_name, input_shape, num_classes, element_spec(input_shape)),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(
            learning_rate=client_lr, momentum=client_momentum if client_momentum > 0 else None),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=server_lr),
        **kwargs,
    )


def set_state_weights(process, state, weights: Weights):
    """Put Keras-ordered ``weights`` (all trainable in the course's models) into a TFF state."""
    tff = import_tff()
    current = process.get_model_weights(state)
    if len(current.trainable) != len(weights) or current.non_trainable:
        raise ValueError("weights do not match the TFF model's trainable variables")
    new = tff.learning.models.ModelWeights(
        trainable=[np.asarray(w, dtype=np.float32) for w in weights], non_trainable=[])
    return process.set_model_weights(state, new)


def state_weights(process, state) -> Weights:
    return [np.asarray(w) for w in process.get_model_weights(state).trainable]


def federated_data(clients: ClientArrays, sampled, cfg: FedAvgConfig, round_num: int) -> list:
    """The sampled clients' datasets for one round, built only now (lazy), identical to the
    manual loop's."""
    out = []
    for c in sampled:
        x, y = clients[c]
        out.append(client_dataset(x, y, cfg.local_epochs, cfg.batch_size, cfg.seed, round_num, int(c)))
    return out


def run_tff_fedavg(process, state, clients: ClientArrays, cfg: FedAvgConfig,
                   evaluate: Callable[[Weights], dict] | None = None, progress: bool = True,
                   desc: str = "TFF FedAvg", on_round: Callable | None = None):
    """Run ``cfg.rounds`` rounds of ``process.next`` on the sampled clients (same sampling as the
    manual loop). Returns the final state and per-round history (train loss/accuracy from TFF,
    plus ``evaluate(weights)``)."""
    m = num_sampled(len(clients), cfg.client_fraction, cfg.clients_per_round)
    history: list[RoundRecord] = []
    rounds = range(1, cfg.rounds + 1)
    if progress:
        from tqdm.auto import tqdm
        rounds = tqdm(rounds, desc=desc, unit="round")
    for r in rounds:
        sampled = sample_clients(len(clients), m, r, cfg.seed)
        start = time.perf_counter()
        if cfg.client_lr_schedule != "constant":  # the client learning rate lives in the state
            hparams = process.get_hparams(state)
            hparams["client_work"]["learning_rate"] = np.float32(cfg.client_lr_for_round(r))
            state = process.set_hparams(state, hparams)
        result = process.next(state, federated_data(clients, sampled, cfg, r))
        state = result.state
        seconds = time.perf_counter() - start
        train = result.metrics["client_work"]["train"]
        metrics = {"train_loss": float(train["loss"]),
                   "train_accuracy": float(train["sparse_categorical_accuracy"])}
        if evaluate:
            metrics.update(evaluate(state_weights(process, state)))
        if cfg.client_lr_schedule != "constant":
            metrics["client_lr"] = cfg.client_lr_for_round(r)
        n = int(sum(len(clients.indices[c]) for c in sampled))
        history.append(RoundRecord(r, [int(c) for c in sampled], n, seconds, metrics))
        if on_round:
            on_round(history[-1], state)
        if progress:
            rounds.set_postfix({k: round(v, 4) for k, v in metrics.items()})
    return state, history
