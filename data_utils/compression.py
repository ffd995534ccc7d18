"""Compressing what clients send: uniform quantization of an update to ``b`` bits with stochastic
rounding (notebook 09), as a pure NumPy function and as a TFF aggregation factory.

A tensor is sent as its minimum ``lo``, its maximum ``hi`` (two float32) and one ``b``-bit integer
code per value: the value's position on the grid of ``2**b - 1`` equal steps between ``lo`` and
``hi``, rounded *stochastically* (up with probability equal to the distance from the grid point
below, in steps), so the decoded value is exact in expectation (Suresh et al. 2017, Alistarh et
al. 2017). ``b = 32`` means no quantization: the float32 values as they are.

    >>> import numpy as np
    >>> x = np.array([0.0, 0.25, 1.0], np.float32)
    >>> quantize(x, 2, noise=np.full(3, 0.9)).round(3).tolist()   # 0.25 is 0.75 of a step: down if the draw >= 0.75
    [0.0, 0.0, 1.0]
    >>> [round(float(v), 3) for v in quantize(x, 2, noise=np.full(3, 0.5))]   # ... up if it is below
    [0.0, 0.333, 1.0]
    >>> quantize(x, 32).tolist()                          # 32 bits: sent as is
    [0.0, 0.25, 1.0]
    >>> encoded_bytes([(3, 3, 1, 32), (32,)], 8)          # 288 + 32 one-byte codes, 8 bytes of scale each
    336

TFF is imported only inside :func:`quantized_sum_factory`, so this module imports without TFF
(Colab's default runtime, the Python 3.13 stand-in).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .validate import check_int

NO_COMPRESSION_BITS = 32  # float32 values, sent as they are
SCALE_BYTES = 8           # lo and hi of each quantized tensor, two float32


def check_bits(bits) -> int:
    """``bits`` as an int in 1..32 (32: no quantization), else a ValueError that says so."""
    return check_int("bits", bits, 1, NO_COMPRESSION_BITS)


def _check_finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"x must hold numbers, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"x must be finite to be quantized, got {bad} NaN or infinite value(s)")
    return x


def encode(x, bits: int, noise=None, rng: np.random.Generator | None = None,
           stochastic: bool = True) -> tuple[np.ndarray, float, float]:
    """``(codes, lo, hi)``: ``x``'s values as integers in ``[0, 2**bits - 1]`` on the grid between
    its minimum ``lo`` and maximum ``hi``. ``stochastic``: round up with probability equal to the
    fractional part (``noise``: the uniform [0, 1) draws to use, one per value; else drawn from
    ``rng``); otherwise round to the nearest grid point (biased). Not for ``bits = 32``."""
    bits = check_bits(bits)
    if bits == NO_COMPRESSION_BITS:
        raise ValueError("bits must be at most 31 to encode (32 means: send the float32 values)")
    x = _check_finite(x)
    flat = x.astype(np.float64).ravel()
    lo, hi = (float(flat.min()), float(flat.max())) if flat.size else (0.0, 0.0)
    levels = 2 ** bits - 1
    if hi == lo:
        return np.zeros(x.shape, np.int64), lo, hi
    scaled = (flat - lo) / (hi - lo) * levels
    if stochastic:
        if noise is None:
            noise = (rng if rng is not None else np.random.default_rng()).random(flat.size)
        noise = np.asarray(noise, np.float64).ravel()
        if noise.shape != flat.shape:
            raise ValueError(f"noise must hold one draw per value ({flat.size}), got {noise.size}")
        codes = np.floor(scaled) + (noise < scaled - np.floor(scaled))
    else:
        codes = np.rint(scaled)
    return np.clip(codes, 0, levels).astype(np.int64).reshape(x.shape), lo, hi


def decode(codes, lo: float, hi: float, bits: int) -> np.ndarray:
    """The values ``codes`` stand for: ``lo + codes * (hi - lo) / (2**bits - 1)``, as float32."""
    levels = 2 ** check_bits(bits) - 1
    return (lo + np.asarray(codes, np.float64) * ((hi - lo) / levels)).astype(np.float32)


def quantize(x, bits: int, noise=None, rng: np.random.Generator | None = None,
             stochastic: bool = True) -> np.ndarray:
    """``x`` after a round trip through ``bits``-bit uniform quantization (what the server
    decodes); ``bits = 32``: ``x`` unchanged (as float32). Every value moves by less than one
    step ``(max - min) / (2**bits - 1)``; with stochastic rounding the result equals ``x`` in
    expectation. A ValueError for ``bits`` outside 1..32 or a non-finite value."""
    bits = check_bits(bits)
    x = _check_finite(x)
    if bits == NO_COMPRESSION_BITS:
        return x.astype(np.float32)
    return decode(*encode(x, bits, noise, rng, stochastic), bits)


def encoded_bytes(shapes: Sequence[Sequence[int]], bits: int) -> int:
    """Bytes one client sends for tensors of these shapes at ``bits`` bits: 4 per value at 32
    bits, else ``ceil(n * bits / 8)`` bytes of packed codes plus 8 bytes (lo, hi) per tensor."""
    bits = check_bits(bits)
    total = 0
    for shape in shapes:
        n = int(np.prod(shape, dtype=np.int64))
        total += 4 * n if bits == NO_COMPRESSION_BITS else math.ceil(n * bits / 8) + SCALE_BYTES
    return total


def quantized_mean(bits: int, seed: int = 0) -> Callable:
    """An ``aggregate(deltas, counts)`` hook for :func:`data_utils.fedavg.run_fedavg`: each
    client quantizes every layer of its update to ``bits`` bits (its own random draws, seeded by
    ``seed``, the call's number and the client's position), the server takes the
    example-weighted mean of the decoded updates. ``bits = 32``: the plain weighted mean."""
    bits = check_bits(bits)
    calls = [0]

    def aggregate(deltas, counts=None):
        calls[0] += 1
        w = np.ones(len(deltas)) if counts is None else np.asarray(counts, np.float64)
        decoded = [[quantize(layer, bits, rng=np.random.default_rng([seed, calls[0], i])) for layer in d]
                   for i, d in enumerate(deltas)]
        return [sum(wi * layer.astype(np.float64) for wi, layer in zip(w / w.sum(), layers)).astype(np.float32)
                for layers in zip(*decoded)]

    return aggregate


# ---- the same quantizer inside TFF -------------------------------------------------------------------
def tf_encode(x, bits: int, noise):
    """:func:`encode` in TensorFlow ops (for a TFF client): ``(codes int32, lo, hi)`` of a float32
    tensor, stochastic rounding with the given uniform ``noise`` (same shape as ``x``)."""
    import tensorflow as tf

    levels = float(2 ** check_bits(bits) - 1)
    lo, hi = tf.reduce_min(x), tf.reduce_max(x)
    lo64, hi64 = tf.cast(lo, tf.float64), tf.cast(hi, tf.float64)
    span = tf.where(hi64 > lo64, hi64 - lo64, tf.ones_like(hi64))   # all values equal: every code 0
    scaled = (tf.cast(x, tf.float64) - lo64) / span * levels
    codes = tf.floor(scaled) + tf.cast(tf.cast(noise, tf.float64) < scaled - tf.floor(scaled), tf.float64)
    return tf.cast(tf.clip_by_value(codes, 0.0, levels), tf.int32), lo, hi


def tf_decode(codes, lo, hi, bits: int):
    """:func:`decode` in TensorFlow ops (for TFF's server side)."""
    import tensorflow as tf

    levels = float(2 ** check_bits(bits) - 1)
    step = (tf.cast(hi, tf.float64) - tf.cast(lo, tf.float64)) / levels
    return tf.cast(tf.cast(lo, tf.float64) + tf.cast(codes, tf.float64) * step, tf.float32)


def tf_client_noise(x, counter, index: int):
    """The uniform draws a TFF client rounds ``x`` with: stateless (reproducible), seeded by the
    aggregator's round counter, the tensor's position and a checksum of the client's values (so
    clients with different updates draw differently; a real client would use its own randomness)."""
    import tensorflow as tf

    checksum = tf.reduce_sum(tf.cast(tf.math.floormod(tf.bitcast(x, tf.int32), 65521), tf.int64))
    seed = tf.stack([tf.cast(counter, tf.int64) * 1000 + index, checksum])
    return tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=tf.float32)


def quantized_sum_factory(bits: int):
    """A ``tff.aggregators.UnweightedAggregationFactory``: each client encodes every tensor of its
    value to ``bits`` bits (:func:`tf_encode`, noise from :func:`tf_client_noise`), the encoded
    values are decoded and summed inside ``tff.federated_aggregate``, the state counts the rounds.
    ``bits = 32``: a plain ``tff.federated_sum``. Weighted, as TFF's compression does:
    ``tff.aggregators.MeanFactory(quantized_sum_factory(bits))``. Notebook 09 writes the same
    factory in its ``fedcore-lesson`` cells; ``tests/test_fedcore.py`` checks they agree."""
    from .tff_fedavg import import_tff

    tff = import_tff()
    import tensorflow as tf

    bits = check_bits(bits)

    class QuantizedSumFactory(tff.aggregators.UnweightedAggregationFactory):
        def create(self, value_type):
            specs = tff.types.type_to_tf_tensor_specs(value_type)
            flat_specs = tf.nest.flatten(specs)

            @tff.tensorflow.computation
            def start():
                return tf.constant(0, tf.int64)

            @tff.tensorflow.computation(value_type, tf.int64)
            def encode_on_client(value, counter):
                flat = tf.nest.flatten(value)
                if bits == NO_COMPRESSION_BITS:
                    return flat
                return [tf_encode(x, bits, tf_client_noise(x, counter, i)) for i, x in enumerate(flat)]

            @tff.tensorflow.computation
            def zero():
                return [tf.zeros(s.shape, s.dtype) for s in flat_specs]

            @tff.tensorflow.computation
            def decode_and_add(total, encoded):
                if bits == NO_COMPRESSION_BITS:
                    return [t + e for t, e in zip(total, encoded)]
                return [t + tf_decode(*e, bits) for t, e in zip(total, encoded)]

            @tff.tensorflow.computation
            def add(a, b):
                return [x + y for x, y in zip(a, b)]

            @tff.tensorflow.computation
            def report(total):
                return tf.nest.pack_sequence_as(specs, total)

            @tff.tensorflow.computation(tf.int64)
            def next_counter(counter):
                return counter + 1

            @tff.federated_computation()
            def initialize():
                return tff.federated_eval(start, tff.SERVER)

            @tff.federated_computation(initialize.type_signature.result,
                                       tff.FederatedType(value_type, tff.CLIENTS))
            def next_fn(state, value):
                encoded = tff.federated_map(encode_on_client, (value, tff.federated_broadcast(state)))
                total = tff.federated_aggregate(encoded, zero(), decode_and_add, add, report)
                return tff.templates.MeasuredProcessOutput(
                    state=tff.federated_map(next_counter, state), result=total,
                    measurements=tff.federated_value((), tff.SERVER))

            return tff.templates.AggregationProcess(initialize, next_fn)

    return QuantizedSumFactory()
