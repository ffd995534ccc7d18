"""TFF's Federated Core (notebook 09): small federated computations whose types a learner can
predict, and Federated Averaging written from the federated operators (``tff.federated_broadcast``,
``tff.federated_map``, ``tff.federated_mean``) with an optional FedProx proximal term.

Notebook 09 writes the same definitions in its own cells (tagged ``fedcore-lesson``) and runs them
when TFF is in its process; :func:`data_utils.jobs.fedcore_job` runs these in the side environment
otherwise, and ``tests/test_fedcore.py`` checks that both agree (and that the FedAvg here equals
``build_weighted_fed_avg``, the FedProx ``build_weighted_fed_prox``). TFF is imported inside the
functions only, so this module imports without TFF.
"""
from __future__ import annotations

import numpy as np


def federated_basics() -> dict:
    """Four small federated computations, called on small values: ``{name: (type signature,
    result)}`` (TFF needed)."""
    from .tff_fedavg import import_tff

    tff = import_tff()
    import tensorflow as tf

    client_floats = tff.FederatedType(np.float32, tff.CLIENTS)

    @tff.federated_computation(client_floats)
    def average(readings):                 # {float32}@CLIENTS -> float32@SERVER
        return tff.federated_mean(readings)

    @tff.tensorflow.computation(np.float32)
    def to_fahrenheit(celsius):            # float32 -> float32, runs wherever it is placed
        return celsius * 1.8 + 32.0

    @tff.federated_computation(client_floats)
    def fahrenheit_on_clients(readings):   # {float32}@CLIENTS -> {float32}@CLIENTS
        return tff.federated_map(to_fahrenheit, readings)

    @tff.tensorflow.computation(np.float32, np.float32)
    def above(reading, threshold):
        return tf.cast(reading > threshold, np.int32)

    @tff.federated_computation(client_floats, tff.FederatedType(np.float32, tff.SERVER))
    def count_above(readings, threshold):  # how many clients read above the server's threshold
        at_clients = tff.federated_broadcast(threshold)
        return tff.federated_sum(tff.federated_map(above, tff.federated_zip((readings, at_clients))))

    readings = [20.0, 25.0, 31.0]
    calls = {"average": (average, (readings,)), "fahrenheit_on_clients": (fahrenheit_on_clients, (readings,)),
             "to_fahrenheit": (to_fahrenheit, (20.0,)), "count_above": (count_above, (readings, 24.0))}
    return {name: (str(comp.type_signature), np.asarray(comp(*args)).tolist()) for name, (comp, args) in calls.items()}


def build_fedavg_from_primitives(model_name: str, input_shape, num_classes: int, client_lr: float,
                                 proximal_strength: float = 0.0):
    """FedAvg as a ``tff.templates.IterativeProcess`` written from the federated operators: the
    server broadcasts its weights, each client runs SGD (``client_lr``) over its dataset (plus
    ``proximal_strength`` times ``w - w_server`` in every gradient: FedProx), the server takes the
    example-weighted mean of the clients' weights. ``initialize()`` returns the model's initial
    weights (a list of arrays); ``next(weights, client_datasets)`` returns
    ``<weights, loss, examples>`` (the new weights, the clients' mean training loss, the examples)."""
    from .models import build_model
    from .tff_fedavg import element_spec, import_tff

    tff = import_tff()
    import tensorflow as tf

    def keras_model():
        return build_model(model_name, input_shape, num_classes)

    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    weights_type = tff.types.to_type([(np.float32, w.shape) for w in keras_model().get_weights()])
    data_type = tff.SequenceType(tff.types.tensorflow_to_type(element_spec(input_shape)))

    @tf.function
    def local_sgd(model, dataset, server_weights):
        for v, w in zip(model.trainable_variables, server_weights):
            v.assign(w)

        def train_on_batch(state, batch):   # state: (examples seen, sum of batch losses x examples)
            with tf.GradientTape() as tape:
                loss = loss_fn(batch[1], model(batch[0], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            for v, g, w0 in zip(model.trainable_variables, grads, server_weights):
                v.assign_sub(client_lr * (g + proximal_strength * (v - w0)))
            n = tf.cast(tf.shape(batch[1])[0], tf.float32)
            return state[0] + n, state[1] + loss * n

        n, loss_sum = dataset.reduce((tf.constant(0.0), tf.constant(0.0)), train_on_batch)
        return [tf.identity(v) for v in model.trainable_variables], loss_sum / n, n

    @tff.tensorflow.computation(data_type, weights_type)
    def client_update(dataset, server_weights):
        return local_sgd(keras_model(), dataset, server_weights)

    @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                               tff.FederatedType(data_type, tff.CLIENTS))
    def next_fn(server_weights, client_datasets):
        at_clients = tff.federated_broadcast(server_weights)                  # server -> clients
        trained = tff.federated_map(client_update, (client_datasets, at_clients))
        weights, loss, n = trained[0], trained[1], trained[2]                # each {...}@CLIENTS
        new_weights = tff.federated_mean(weights, weight=n)                   # clients -> server
        return new_weights, tff.federated_mean(loss, weight=n), tff.federated_sum(n)

    @tff.tensorflow.computation
    def initial_weights():
        return [tf.constant(w) for w in keras_model().get_weights()]

    initialize = tff.federated_computation(lambda: tff.federated_eval(initial_weights, tff.SERVER))
    return tff.templates.IterativeProcess(initialize, next_fn)


def run_primitives(process, weights, clients, cfg, evaluate=None, on_round=None):
    """``cfg.rounds`` rounds of a process from :func:`build_fedavg_from_primitives` from
    ``weights``, on the sampled clients' datasets (:func:`~data_utils.tff_fedavg.federated_data`:
    the same batches as the hand-written loop and ``run_tff_fedavg(..., data_path="datasets")``).
    Returns the final weights and the per-round history."""
    from .fedavg import RoundStep, run_rounds
    from .tff_fedavg import federated_data

    def step(w, sampled, r):
        new, loss, n = process.next(w, federated_data(clients, sampled, cfg, r))
        return RoundStep([np.asarray(v) for v in new], int(n), {"train_loss": float(loss)})

    return run_rounds([np.asarray(w, np.float32) for w in weights], len(clients), cfg, step,
                      evaluate=evaluate, on_round=on_round, progress=False)


# TFF's own compression: the encoders of tensorflow_model_optimization inside tff.aggregators.EncodedSumFactory
TFF_ENCODERS = ("uniform", "hadamard")


def tff_encoder(kind: str, bits: int):
    """TFF's encoder of one tensor: ``"uniform"`` (``te.encoders.uniform_quantization``: min/max
    scale, stochastic rounding, bit packing) or ``"hadamard"`` (``te.encoders.hadamard_quantization``:
    a random rotation first)."""
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    from .validate import check_choice, check_int

    check_choice("kind", kind, TFF_ENCODERS)
    bits = check_int("bits", bits, 1, 16)
    return te.encoders.uniform_quantization(bits) if kind == "uniform" else te.encoders.hadamard_quantization(bits)


def tff_compression_factory(kind: str, bits: int | None = None):
    """A weighted TFF aggregation factory: ``tff.learning.compression_aggregator()`` for
    ``kind="compression_aggregator"`` (8 bits for tensors over 20,000 values, adaptive zeroing and
    clipping), else ``MeanFactory(EncodedSumFactory(...))`` with :func:`tff_encoder` on every tensor."""
    from .tff_fedavg import import_tff

    tff = import_tff()
    if kind == "compression_aggregator":
        return tff.learning.compression_aggregator()
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    tff_encoder(kind, bits)  # checked now, not inside TFF's create
    return tff.aggregators.MeanFactory(tff.aggregators.EncodedSumFactory(
        lambda spec: te.encoders.as_gather_encoder(tff_encoder(kind, bits), spec)))


def tff_encoded_bytes(kind: str, bits: int | None, shapes, seed: int = 0) -> int:
    """Bytes one client sends when TFF's encoder encodes tensors of ``shapes`` (measured: the
    encoded tensors' sizes). ``"compression_aggregator"``: 8-bit uniform for tensors over 20,000
    values, the rest as float32 (its zeroing and clipping norms travel apart, a few bytes)."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    rng = np.random.default_rng(seed)
    total = 0
    for shape in shapes:
        n = int(np.prod(shape))
        if kind == "compression_aggregator":
            if n <= 20000:
                total += 4 * n
                continue
            enc = te.encoders.uniform_quantization(8)
        else:
            enc = tff_encoder(kind, bits)
        encoder = te.encoders.as_simple_encoder(enc, tf.TensorSpec(shape, tf.float32))
        encoded, _ = encoder.encode(tf.constant(rng.normal(size=shape).astype(np.float32)), encoder.initial_state())
        total += sum(int(np.prod(t.shape)) * t.dtype.size for t in tf.nest.flatten(encoded))
    return total
