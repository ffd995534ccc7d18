"""The course's quantizer (data_utils.compression, notebook 09): round-trip error within one step
of b bits, stochastic rounding unbiased over many draws, nearest rounding biased, clear errors
for b outside 1..32 and for non-finite input, the byte count, and the FedAvg aggregation hook.
The TFF factory is checked against these functions in tests/test_fedcore.py (it needs TFF)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from data_utils.compression import (NO_COMPRESSION_BITS, check_bits, decode, encode, encoded_bytes, quantize,
                                    quantized_mean)

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=30, deadline=None)
@given(x=arrays(np.float32, st.integers(1, 40), elements=finite), bits=st.integers(1, 16), seed=st.integers(0, 99))
def test_round_trip_error_is_below_one_step(x, bits, seed):
    out = quantize(x, bits, rng=np.random.default_rng(seed))
    assert out.shape == x.shape and out.dtype == np.float32
    lo, hi = float(x.min()), float(x.max())
    step = (hi - lo) / (2 ** bits - 1)
    assert np.all(np.abs(out.astype(np.float64) - x) <= step * (1 + 1e-6) + 1e-6 * max(abs(lo), abs(hi), 1))
    assert out.min() >= np.float32(lo) - 1e-3 and out.max() <= np.float32(hi) + 1e-3   # stays in [lo, hi]
    codes, qlo, qhi = encode(x, bits, rng=np.random.default_rng(seed))
    assert codes.min() >= 0 and codes.max() <= 2 ** bits - 1 and (qlo, qhi) == (lo, hi)


def test_the_grid_has_2_to_the_b_levels_and_keeps_its_ends():
    x = np.linspace(-1, 3, 1001).astype(np.float32)
    for bits in (1, 2, 4, 8):
        out = quantize(x, bits, rng=np.random.default_rng(0))
        assert len(np.unique(out)) <= 2 ** bits
        assert out[0] == x[0] and out[-1] == x[-1]   # lo and hi are sent exactly
    assert np.array_equal(quantize(x, 32), x)        # 32 bits: no quantization
    same = np.full(5, 0.7, np.float32)
    assert np.array_equal(quantize(same, 3, rng=np.random.default_rng(0)), same)   # hi == lo


def test_stochastic_rounding_is_unbiased_and_nearest_is_not():
    """The mean of many 2-bit round trips converges to x (within 4 standard errors); rounding to
    nearest misses a value off the grid by the same amount every time."""
    rng = np.random.default_rng(1)
    x = np.concatenate([[0.0, 1.0], rng.uniform(0, 1, 30)]).astype(np.float32)
    draws = np.stack([quantize(x, 2, rng=rng) for _ in range(2000)])
    step = 1 / 3
    stderr = step / 2 / np.sqrt(len(draws))          # a rounding error is at most one step; sd at most step / 2
    assert np.all(np.abs(draws.mean(axis=0) - x) < 4 * stderr)
    nearest = quantize(x, 2, stochastic=False)
    assert np.max(np.abs(nearest - x)) > 0.05 and np.array_equal(nearest, quantize(x, 2, stochastic=False))
    one_bit = np.array([quantize(np.array([0.0, 0.3, 1.0]), 1, rng=rng)[1] for _ in range(2000)])
    assert set(np.unique(one_bit)) == {0.0, 1.0} and abs(one_bit.mean() - 0.3) < 0.05   # sd 0.46 / sqrt(2000) = 0.01


def test_given_noise_decides_the_rounding():
    x = np.array([0.0, 0.25, 1.0], np.float32)       # 0.25 is 0.75 of a step at 2 bits
    assert quantize(x, 2, noise=np.full(3, 0.9))[1] == 0.0
    assert np.isclose(quantize(x, 2, noise=np.full(3, 0.5))[1], 1 / 3)
    codes, lo, hi = encode(x, 2, noise=np.full(3, 0.5))
    assert codes.tolist() == [0, 1, 3] and np.allclose(decode(codes, lo, hi, 2), [0, 1 / 3, 1])
    with pytest.raises(ValueError, match="one draw per value"):
        quantize(x, 2, noise=np.zeros(2))


@pytest.mark.parametrize("bits", [0, 33, -1, 2.5, "8", None, True])
def test_bits_outside_1_to_32_are_a_clear_error(bits):
    with pytest.raises(ValueError, match=r"bits must be an integer in \[1, 32\]"):
        quantize(np.zeros(3, np.float32), bits)
    with pytest.raises(ValueError, match="bits must be"):
        encoded_bytes([(3,)], bits)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"x must be finite to be quantized, got 1 NaN or infinite value"):
        quantize(np.array([0.0, bad, 1.0], np.float32), 8)
    with pytest.raises(ValueError, match="finite"):
        quantize(np.array([bad]), 32)   # also when nothing is quantized
    with pytest.raises(ValueError, match="at most 31 to encode"):
        encode(np.zeros(2), NO_COMPRESSION_BITS)
    assert check_bits(32) == 32


def test_bytes_up_per_client():
    shapes = [(3, 3, 1, 32), (32,), (5408, 10), (10,)]   # cnn_small: 54,410 parameters
    assert encoded_bytes(shapes, 32) == 4 * 54410
    assert encoded_bytes(shapes, 8) == 54410 + 4 * 8
    assert encoded_bytes(shapes, 1) == 36 + 4 + 6760 + 2 + 4 * 8   # packed bits, rounded up to bytes per tensor
    assert encoded_bytes(shapes, 32) / encoded_bytes(shapes, 4) > 7.9


def test_quantized_mean_hook():
    """32 bits: FedAvg's example-weighted mean exactly; b bits: within one step of it, a fresh
    draw on every call, the same draws for the same seed."""
    rng = np.random.default_rng(3)
    deltas = [[rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)] for _ in range(3)]
    counts = [10, 30, 60]
    exact = [sum(c * d[k] for c, d in zip(counts, deltas)) / 100 for k in range(2)]
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(quantized_mean(32)(deltas, counts), exact))
    agg = quantized_mean(4, seed=5)
    first, second = agg(deltas, counts), agg(deltas, counts)
    assert not np.array_equal(first[0], second[0])                                   # new draws each round
    assert np.array_equal(first[0], quantized_mean(4, seed=5)(deltas, counts)[0])    # reproducible
    steps = [max(float(d[k].max() - d[k].min()) for d in deltas) / 15 for k in range(2)]
    assert all(np.max(np.abs(a - b)) <= s for a, b, s in zip(first, exact, steps))
