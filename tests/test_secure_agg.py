"""Secure aggregation simulation: masks cancel exactly, dropouts are recovered, errors are clear."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_utils.aggregation import weighted_average
from data_utils.secure_agg import (PRIME, Quantizer, SecureAggregation, check_modulus_bits, flatten,
                                   secure_sum, secure_weighted_mean, shamir_reconstruct, shamir_share,
                                   to_signed, unflatten)


def plain_sum(vectors, bits, skip=()):
    total = 0
    for i, v in enumerate(vectors):
        if i not in skip:
            total = total + np.asarray(v, dtype=object)
    return np.asarray(total % (1 << bits) if len(vectors) > len(skip) else 0, dtype=np.uint64)


@st.composite
def protocol_inputs(draw):
    bits = draw(st.integers(2, 63))
    n = draw(st.integers(2, 7))
    length = draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    vectors = [rng.integers(0, 1 << bits, size=length, dtype=np.uint64) for _ in range(n)]
    threshold = draw(st.integers(1, n))
    dropped = draw(st.sets(st.integers(0, n - 1), max_size=n - threshold))
    return bits, vectors, threshold, sorted(dropped), seed


@settings(max_examples=60, deadline=None)
@given(protocol_inputs())
def test_masked_sum_equals_plain_sum_exactly(inputs):
    bits, vectors, threshold, dropped, seed = inputs
    got = secure_sum(vectors, bits, dropped=dropped, threshold=threshold, seed=seed)
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, plain_sum(vectors, bits, set(dropped)))


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 8), st.integers(0, 2**31))
def test_without_recovery_the_dropped_clients_masks_spoil_the_sum(n, seed):
    rng = np.random.default_rng(seed)
    vectors = [rng.integers(0, 2**32, size=64, dtype=np.uint64) for _ in range(n)]
    wrong = secure_sum(vectors, 32, dropped=[1], seed=seed, recover_dropped=False)
    # 64 values of 32 random bits: equal to the true sum only by a 2**-2048 chance
    assert not np.array_equal(wrong, plain_sum(vectors, 32, {1}))


def test_one_masked_vector_looks_uniform_and_hides_the_input():
    protocol = SecureAggregation(5, 20000, modulus_bits=16, seed=1)
    zeros = np.zeros(20000, dtype=np.uint64)
    masked = protocol.masked_input(0, zeros)
    # the input is all zeros; what the server sees is spread evenly over 0..2**16-1
    hist = np.bincount((masked >> np.uint64(12)).astype(np.int64), minlength=16)
    assert hist.min() > 1000 and hist.max() < 1500
    assert np.mean(masked == 0) < 0.001
    # the same input with another client's masks looks different again
    assert np.mean(protocol.masked_input(1, zeros) == masked) < 0.001


def test_pairwise_masks_cancel_and_self_masks_remain():
    protocol = SecureAggregation(4, 50, modulus_bits=20, seed=3)
    assert protocol.pair_seed(0, 2) == protocol.pair_seed(2, 0)
    masks = sum(protocol.mask(u).astype(object) for u in range(4)) % (1 << 20)
    from data_utils.secure_agg import prg
    self_masks = sum(prg(protocol._self_seed[u], 50, 20).astype(object) for u in range(4)) % (1 << 20)
    np.testing.assert_array_equal(masks.astype(np.uint64), self_masks.astype(np.uint64))


def test_too_few_survivors_is_an_error():
    vectors = [np.arange(5, dtype=np.uint64)] * 5
    with pytest.raises(ValueError, match="fewer than the threshold 3"):
        secure_sum(vectors, 16, dropped=[0, 1, 2])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, PRIME - 1), st.integers(1, 6), st.data())
def test_shamir_any_threshold_shares_rebuild_the_secret(secret, threshold, data):
    n = data.draw(st.integers(threshold, 8))
    shares = shamir_share(secret, n, threshold, np.random.default_rng(threshold))
    subset = data.draw(st.permutations(shares))[:threshold]
    assert shamir_reconstruct(subset) == secret
    if threshold > 1:  # one share too few gives an unrelated number
        assert shamir_reconstruct(subset[:-1]) != secret or secret == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-2, 2, allow_nan=False), min_size=1, max_size=50),
       st.floats(0.01, 3), st.integers(4, 24))
def test_quantizer_round_trip_within_half_a_step(values, clip, value_bits):
    q = Quantizer(clip=clip, value_bits=value_bits, modulus_bits=32)
    x = np.asarray(values)
    back = q.decode(q.encode(x))
    assert np.all(np.abs(back - np.clip(x, -clip, clip)) <= q.step / 2 + 1e-12)


def test_to_signed_reads_twos_complement():
    bits = 8
    v = np.array([0, 1, 127, 128, 255], dtype=np.uint64)
    np.testing.assert_array_equal(to_signed(v, bits), [0, 1, 127, -128, -1])
    np.testing.assert_array_equal(to_signed(np.array([2**62], dtype=np.uint64), 63), [-2**62])


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.integers(0, 2**31), st.data())
def test_secure_weighted_mean_matches_weighted_average(n, seed, data):
    rng = np.random.default_rng(seed)
    deltas = [[rng.normal(0, 0.05, (3, 4)).astype(np.float32), rng.normal(0, 0.05, 4).astype(np.float32)]
              for _ in range(n)]
    counts = rng.integers(1, 600, size=n)
    dropped = data.draw(st.sets(st.integers(0, n - 1), max_size=(n - 1) // 2))
    q = Quantizer(clip=0.5, value_bits=20, modulus_bits=40)
    got = secure_weighted_mean(deltas, counts, q, dropped=dropped, seed=seed)
    alive = [i for i in range(n) if i not in dropped]
    want = weighted_average([deltas[i] for i in alive], counts[alive])
    n_max = counts.max()
    # each client's rounding error is at most step/2 after scaling by n_max / total count
    bound = len(alive) * q.step / 2 * n_max / counts[alive].sum() + 1e-6
    for g, w in zip(got, want):
        assert g.dtype == np.float32 and g.shape == w.shape
        assert np.max(np.abs(g - w)) <= bound


def test_flatten_unflatten_round_trip():
    ws = [np.arange(6.0).reshape(2, 3), np.array([7.0]), np.zeros((1, 1, 2))]
    flat, shapes = flatten(ws)
    assert flat.shape == (9,)
    for a, b in zip(unflatten(flat, shapes), ws):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="need 9"):
        unflatten(flat[:-1], shapes)


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [0, 1, 64, 100, 2.5, "32", True, None])
def test_bad_modulus_is_a_value_error(bits):
    with pytest.raises(ValueError, match=r"modulus_bits must be an integer in \[2, 63\], got "):
        check_modulus_bits(bits)
    with pytest.raises(ValueError, match="modulus_bits"):
        secure_sum([np.zeros(3, np.uint64)] * 3, bits)


def test_mismatched_lengths_and_shapes_are_value_errors():
    with pytest.raises(ValueError, match="same length"):
        secure_sum([np.zeros(3, np.uint64), np.zeros(4, np.uint64)], 16)
    protocol = SecureAggregation(3, 5, modulus_bits=16)
    with pytest.raises(ValueError, match="set up for 5"):
        protocol.masked_input(0, np.zeros(6, np.uint64))
    with pytest.raises(ValueError, match="one-dimensional"):
        protocol.masked_input(0, np.zeros((5, 1), np.uint64))
    with pytest.raises(ValueError, match="layer shapes"):
        secure_weighted_mean([[np.zeros(3)], [np.zeros(4)]], [1, 1], Quantizer(1.0))


def test_values_outside_the_modulus_and_non_integers_are_value_errors():
    with pytest.raises(ValueError, match=r"in \[0, 2\*\*8\)"):
        secure_sum([np.array([256], np.uint64), np.array([1], np.uint64)], 8)
    with pytest.raises(ValueError, match="integers"):
        secure_sum([np.array([0.5]), np.array([1.0])], 8)
    with pytest.raises(ValueError, match=r"in \[0, 2\*\*8\)"):
        secure_sum([np.array([-1]), np.array([1])], 8)


def test_bad_quantizer_and_protocol_settings_are_value_errors():
    with pytest.raises(ValueError, match="clip must be a positive"):
        Quantizer(clip=0.0)
    with pytest.raises(ValueError, match="clip must be a positive"):
        Quantizer(clip=float("nan"))
    with pytest.raises(ValueError, match="value_bits"):
        Quantizer(clip=1.0, value_bits=32, modulus_bits=32)
    with pytest.raises(ValueError, match="NaN or infinite"):
        Quantizer(clip=1.0).encode([np.inf])
    with pytest.raises(ValueError, match="overflow the modulus"):
        Quantizer(clip=1.0, value_bits=16, modulus_bits=20).check_summands(100)
    with pytest.raises(ValueError, match="num_clients must be an integer >= 2, got 1"):
        SecureAggregation(1, 5)
    with pytest.raises(ValueError, match="threshold"):
        SecureAggregation(3, 5, threshold=4)
    with pytest.raises(ValueError, match="client id"):
        SecureAggregation(3, 5).mask(3)
    with pytest.raises(ValueError, match="dropped"):
        secure_sum([np.zeros(2, np.uint64)] * 3, 8, dropped=[5])
    with pytest.raises(ValueError, match="counts"):
        secure_weighted_mean([[np.zeros(2)], [np.zeros(2)]], [1, -1], Quantizer(1.0))
    with pytest.raises(ValueError, match="NaN or infinite"):
        secure_weighted_mean([[np.zeros(2)], [np.array([0, np.nan])]], [1, 1], Quantizer(1.0))
    with pytest.raises(ValueError, match="empty list"):
        secure_weighted_mean([], [], Quantizer(1.0))
    with pytest.raises(ValueError, match="secret"):
        shamir_share(PRIME, 3, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="threshold"):
        shamir_share(5, 3, 4, np.random.default_rng(0))


def test_combination_rules_say_name_limit_and_value():
    with pytest.raises(ValueError, match=r"threshold must be at most num_clients \(3\), got 4"):
        SecureAggregation(3, 5, threshold=4)
    with pytest.raises(ValueError, match=r"threshold must be at most num_shares \(3\), got 4"):
        shamir_share(5, 3, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"value_bits must be less than modulus_bits \(32\), got 32"):
        Quantizer(clip=1.0, value_bits=32, modulus_bits=32)
    with pytest.raises(ValueError, match=r"client id must be an integer in \[0, 2\], got True"):
        SecureAggregation(3, 5).mask(True)
    with pytest.raises(ValueError, match="v must differ from u"):
        SecureAggregation(3, 5).pair_seed(1, 1)
