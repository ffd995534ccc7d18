"""Robust aggregators (median, trimmed mean, norm clipping/zeroing), notebook 07's hand-written
versions of them, and the attack hooks (dropouts, label flipping, backdoor)."""
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_utils.aggregation import weighted_average
from data_utils.robust import (AGGREGATORS, coordinate_median, make_aggregator, norm_clipped_mean,
                               norm_zeroed_mean, plain_mean, trimmed_count, trimmed_mean,
                               update_norms)


def updates(rng, n, scale=0.1):
    return [[rng.normal(0, scale, (4, 3)).astype(np.float32), rng.normal(0, scale, 3).astype(np.float32)]
            for _ in range(n)]


def test_median_and_trimmed_mean_against_numpy():
    rng = np.random.default_rng(0)
    ds = updates(rng, 7)
    med = coordinate_median(ds, np.ones(7))
    for j in range(2):
        stack = np.stack([d[j] for d in ds])
        np.testing.assert_allclose(med[j], np.median(stack, axis=0), rtol=1e-6)
        s = np.sort(stack, axis=0)
        np.testing.assert_allclose(trimmed_mean(ds, trim_fraction=0.2)[j], s[2:5].mean(axis=0), rtol=1e-6)
        assert med[j].dtype == np.float32
    # no trimming is the uniform mean
    for a, b in zip(trimmed_mean(ds, trim_fraction=0.0), weighted_average(ds)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_trimmed_count_never_removes_everything():
    assert trimmed_count(10, 0.1) == 1
    assert trimmed_count(9, 0.1) == 1   # one attacker among 9 is still trimmed
    assert trimmed_count(10, 0.2) == 2
    assert trimmed_count(2, 0.4) == 0
    assert trimmed_count(3, 0.4) == 1
    assert trimmed_count(1, 0.3) == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 12), st.integers(0, 2**31), st.floats(-1e6, 1e6, allow_nan=False))
def test_one_outlier_cannot_drag_median_or_trimmed_mean_outside_the_honest_range(n, seed, outlier):
    rng = np.random.default_rng(seed)
    honest = updates(rng, n)
    bad = [np.full((4, 3), outlier, np.float32), np.full(3, -outlier, np.float32)]
    ds = honest + [bad]
    for agg in (coordinate_median(ds), trimmed_mean(ds, trim_fraction=0.1)):
        for j in range(2):
            stack = np.stack([h[j] for h in honest])
            assert np.all(agg[j] >= stack.min(axis=0) - 1e-6)
            assert np.all(agg[j] <= stack.max(axis=0) + 1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 10), st.integers(0, 2**31), st.floats(1e-3, 10))
def test_norm_clipping_bounds_every_contribution(n, seed, clip):
    rng = np.random.default_rng(seed)
    ds = updates(rng, n, scale=rng.uniform(0.01, 5))
    counts = rng.integers(1, 100, n)
    out = norm_clipped_mean(ds, counts, clip_norm=clip)
    assert update_norms([out])[0] <= clip * (1 + 1e-5)
    # with a bound above every norm nothing changes
    big = float(update_norms(ds).max()) * 2
    for a, b in zip(norm_clipped_mean(ds, counts, clip_norm=big), weighted_average(ds, counts)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_adaptive_clip_uses_the_median_norm():
    honest = [[np.full(4, 1.0, np.float32)] for _ in range(4)]  # norm 2 each
    attacker = [np.full(4, 100.0, np.float32)]                   # norm 200
    out = norm_clipped_mean(honest + [attacker], [1] * 5)
    np.testing.assert_allclose(out[0], np.full(4, 1.0), rtol=1e-6)  # attacker scaled to norm 2
    assert plain_mean(honest + [attacker], [1] * 5)[0][0] == pytest.approx(20.8)


def test_norm_zeroing_replaces_big_updates_by_zeros():
    ds = [[np.array([3.0, 4.0])], [np.array([0.3, 0.4])]]  # norms 5 and 0.5
    out = norm_zeroed_mean(ds, [1, 3], max_norm=1.0)
    np.testing.assert_allclose(out[0], [0.3 * 3 / 4, 0.4 * 3 / 4])
    np.testing.assert_allclose(update_norms(ds), [5.0, 0.5])


def test_make_aggregator_by_name():
    rng = np.random.default_rng(1)
    ds = updates(rng, 5)
    for name in AGGREGATORS:
        out = make_aggregator(name)(ds, np.ones(5))
        assert [o.shape for o in out] == [(4, 3), (3,)]
    with pytest.raises(ValueError, match="aggregator must be one of 'mean', .*, got 'mode'"):
        make_aggregator("mode")
    with pytest.raises(ValueError, match="takes options"):
        make_aggregator("median", trim_fraction=0.1)
    np.testing.assert_allclose(make_aggregator("trimmed_mean", trim_fraction=0.0)(ds, None)[0],
                               weighted_average(ds)[0], rtol=1e-6)


# ---- bad input -------------------------------------------------------------------------------
ROBUST = [coordinate_median, trimmed_mean, norm_clipped_mean, norm_zeroed_mean, plain_mean]


@pytest.mark.parametrize("agg", ROBUST, ids=lambda f: f.__name__)
def test_empty_list_is_a_value_error(agg):
    with pytest.raises(ValueError, match="empty list"):
        agg([], [])


@pytest.mark.parametrize("agg", ROBUST, ids=lambda f: f.__name__)
def test_mismatched_layer_shapes_are_a_value_error(agg):
    with pytest.raises(ValueError, match="layer shapes"):
        agg([[np.zeros((2, 2))], [np.zeros((2, 3))]], [1, 1])
    with pytest.raises(ValueError, match="layer shapes"):
        agg([[np.zeros(2), np.zeros(1)], [np.zeros(2)]], [1, 1])


@pytest.mark.parametrize("agg", ROBUST, ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_a_value_error(agg, bad):
    with pytest.raises(ValueError, match="NaN or infinite"):
        agg([[np.zeros(2)], [np.array([0.0, bad])]], [1, 1])


@pytest.mark.parametrize("agg", ROBUST, ids=lambda f: f.__name__)
def test_bad_counts_are_a_value_error(agg):
    with pytest.raises(ValueError, match="count"):
        agg([[np.zeros(2)], [np.zeros(2)]], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        agg([[np.zeros(2)], [np.zeros(2)]], [1, -2])


def test_bad_options_are_value_errors():
    ds = [[np.zeros(2)], [np.ones(2)]]
    with pytest.raises(ValueError, match="trim_fraction"):
        trimmed_mean(ds, trim_fraction=0.5)
    with pytest.raises(ValueError, match="clip_norm"):
        norm_clipped_mean(ds, clip_norm=-1.0)
    with pytest.raises(ValueError, match="max_norm"):
        norm_zeroed_mean(ds, max_norm=float("nan"))


# ---- attacks ---------------------------------------------------------------------------------
def test_flip_labels_and_dropped_clients():
    from data_utils.attacks import dropped_clients, flip_labels

    np.testing.assert_array_equal(flip_labels(np.array([0, 3, 9]), 10), [9, 6, 0])
    with pytest.raises(ValueError, match="labels must be in 0..9"):
        flip_labels(np.array([10]), 10)
    sampled = np.arange(10)
    drop = dropped_clients(sampled, 0.3, round_num=2, seed=0)
    assert len(drop) == 3 and drop <= set(range(10))
    assert drop == dropped_clients(sampled, 0.3, round_num=2, seed=0)
    assert dropped_clients(sampled, 0.0, 1, 0) == set()
    with pytest.raises(ValueError, match=r"fraction must be a finite number in \[0, 1\], got 1.5"):
        dropped_clients(sampled, 1.5, 1, 0)


def test_client_behaviour_honest_run_equals_plain_run_and_attack_scales():
    from data_utils.attacks import ClientBehaviour
    from data_utils.clients import ClientArrays, sample_clients
    from data_utils.fedavg import FedAvgConfig, run_fedavg
    from data_utils.models import build_model
    from data_utils.training import client_trainer

    rng = np.random.default_rng(0)
    x = rng.random((120, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 120)
    clients = ClientArrays(x, y, [np.arange(i * 30, (i + 1) * 30) for i in range(4)])
    cfg = FedAvgConfig(rounds=2, clients_per_round=3, batch_size=10, seed=5)
    w0 = build_model("cnn_small", seed=1).get_weights()
    model = client_trainer("cnn_small", (28, 28, 1), 10, cfg.client_lr)
    plain, _ = run_fedavg(model, w0, clients, cfg, progress=False)
    hook = ClientBehaviour(model, clients, cfg, 10)
    hooked, _ = run_fedavg(model, w0, clients, cfg, progress=False, client_update=hook)
    for a, b in zip(plain, hooked):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [r["event"] for r in hook.log] == ["honest"] * 6

    # boosted label flipping: the attacker's update is boost x its (flipped-label) local update
    attacker = ClientBehaviour(model, clients, cfg, 10, malicious=[0, 1, 2, 3], attack="boosted_label_flip", boost=4.0)
    flipper = ClientBehaviour(model, clients, cfg, 10, malicious=[0, 1, 2, 3], attack="label_flip")
    first_round = sample_clients(4, 3, 1, 5)
    sampled_first = int(first_round[0])
    boosted = attacker(sampled_first, w0)
    flipped = flipper(sampled_first, w0)
    for b, f, g in zip(boosted, flipped, w0):
        np.testing.assert_allclose(b - g, 4.0 * (f - g), rtol=1e-4, atol=1e-6)

    dropper = ClientBehaviour(model, clients, cfg, 10, drop_fraction=1.0)
    final, history = run_fedavg(model, w0, clients, cfg, progress=False, client_update=dropper)
    assert all(r.num_examples == 0 for r in history)  # everyone failed: the model stays
    for a, b in zip(final, w0):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="attack must be one of"):
        ClientBehaviour(model, clients, cfg, 10, malicious=[1], attack="model_replacement")
    with pytest.raises(ValueError, match="client ids"):
        ClientBehaviour(model, clients, cfg, 10, malicious=[7], attack="label_flip")
    unsampled = sorted(set(range(4)) - set(first_round.tolist()))[0]
    with pytest.raises(RuntimeError, match="not sampled"):
        ClientBehaviour(model, clients, cfg, 10)(unsampled, w0)


def test_attack_job_rejects_bad_parameters():
    from data_utils.jobs import fedavg_under_attack_job

    with pytest.raises(ValueError, match="AGGREGATOR must be one of"):
        fedavg_under_attack_job({"SMOKE": True, "ROUNDS": 1, "AGGREGATOR": "krum"})
    with pytest.raises(ValueError, match="unknown parameter"):
        fedavg_under_attack_job({"SMOKE": True, "ROUNDS": 1, "ROUND": 3})


def test_backdoor_trigger_and_data():
    from data_utils.attacks import TRIGGER_SIZE, attack_success_rate, backdoor_data, stamp_trigger

    x = np.zeros((6, 28, 28, 1), np.float32)
    stamped = stamp_trigger(x)
    assert x.sum() == 0                                # a copy
    k = TRIGGER_SIZE
    assert stamped[:, -k - 1:-1, -k - 1:-1].sum() == 6 * (k * k // 2)
    assert stamped[:, :-k - 1].sum() == 0 and stamped[:, :, -1].sum() == 0
    y = np.arange(6) % 3 + 1
    bx, by = backdoor_data(x, y, target=0, fraction=0.5, seed=1, client=2)
    poisoned = by == 0
    assert poisoned.sum() == 3
    assert np.all(bx[poisoned].reshape(3, -1).sum(axis=1) > 0) and bx[~poisoned].sum() == 0
    bx2, by2 = backdoor_data(x, y, target=0, fraction=0.5, seed=1, client=2)
    np.testing.assert_array_equal(by, by2)             # seeded
    # ASR: triggered non-target images classified as the target
    assert attack_success_rate(lambda imgs: np.zeros(len(imgs), int), x, y, 0) == 1.0
    assert attack_success_rate(lambda imgs: np.ones(len(imgs), int), np.zeros((7, 28, 28, 1)), np.r_[y, 0], 0) == 0.0
    with pytest.raises(ValueError, match="shape"):
        stamp_trigger(np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="no image outside"):
        attack_success_rate(lambda imgs: imgs, x, np.zeros(6, int), 0)


def test_backdoor_and_within_norm_attackers():
    from data_utils.attacks import ClientBehaviour
    from data_utils.clients import ClientArrays, sample_clients
    from data_utils.fedavg import FedAvgConfig
    from data_utils.models import build_model
    from data_utils.robust import update_norms
    from data_utils.training import client_trainer

    rng = np.random.default_rng(1)
    x = rng.random((90, 28, 28, 1), dtype=np.float32)
    clients = ClientArrays(x, rng.integers(0, 10, 90), [np.arange(i * 30, (i + 1) * 30) for i in range(3)])
    cfg = FedAvgConfig(rounds=1, batch_size=10, seed=2)
    w0 = build_model("cnn_small", seed=1).get_weights()
    model = client_trainer("cnn_small", (28, 28, 1), 10, cfg.client_lr)
    c = int(sample_clients(3, 3, 1, 2)[0])
    delta = lambda ws: [[w - g for w, g in zip(ws, w0)]]
    honest = ClientBehaviour(model, clients, cfg, 10)
    boosted = ClientBehaviour(model, clients, cfg, 10, malicious=[c], attack="backdoor", boost=10.0)
    inside = ClientBehaviour(model, clients, cfg, 10, malicious=[c], attack="backdoor", boost=10.0,
                             within_norm=True)
    h, b, i = (update_norms(delta(hook(c, w0)))[0] for hook in (honest, boosted, inside))
    assert b > 5 * h                                  # the boosted backdoor stands out
    assert i == pytest.approx(h, rel=1e-3)            # the stealthy one has an honest norm
    assert inside.log[0]["event"] == "backdoor" and inside.log[0]["norm"] == pytest.approx(i, rel=1e-4)
    with pytest.raises(ValueError, match="target"):
        ClientBehaviour(model, clients, cfg, 10, malicious=[c], attack="backdoor", target=10)
    with pytest.raises(ValueError, match="within_norm"):
        ClientBehaviour(model, clients, cfg, 10, within_norm="yes")


# ---- notebook 07's hand-written aggregators are the package's ---------------------------------
ROOT = Path(__file__).resolve().parent.parent


def robust_lesson():
    """Execute the cells of notebook 07 tagged ``robust-lesson`` (its robust aggregators), in order."""
    nb_path = ROOT / "notebooks" / "07_robustness.ipynb"
    cells = [c for c in json.loads(nb_path.read_text())["cells"]
             if "robust-lesson" in c.get("metadata", {}).get("tags", [])]
    assert cells, "notebook 07 must tag its hand-written aggregator cells robust-lesson"
    namespace: dict = {}
    for cell in cells:
        exec(compile("".join(cell["source"]), "notebook-07-robust-lesson", "exec"), namespace)
    return namespace


LESSON = robust_lesson()


def assert_same(ours, theirs, inputs=None):
    """Equal up to float32 rounding of the inputs (the package rounds its results to float32)."""
    big = max([1.0] + [float(np.abs(w).max()) for d in inputs or [] for w in d])
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert np.shape(a) == np.shape(b)
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-5, atol=1e-6 * big)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 2**31), scale=st.floats(1e-3, 100),
       trim=st.floats(0, 0.49), clip=st.one_of(st.none(), st.floats(1e-3, 50)),
       outlier=st.floats(-1e4, 1e4))
def test_notebook_aggregators_equal_the_package(n, seed, scale, trim, clip, outlier):
    rng = np.random.default_rng(seed)
    ds = updates(rng, n, scale=scale)
    ds[0] = [w + np.float32(outlier) for w in ds[0]]        # one client far off
    counts = rng.integers(1, 500, n)
    assert_same(LESSON["plain_mean"](ds, counts), plain_mean(ds, counts), ds)
    assert_same(LESSON["plain_mean"](ds), plain_mean(ds), ds)
    assert_same(LESSON["coordinate_median"](ds, counts), coordinate_median(ds, counts), ds)
    assert_same(LESSON["trimmed_mean"](ds, counts, trim_fraction=trim), trimmed_mean(ds, counts, trim_fraction=trim), ds)
    assert_same(LESSON["norm_clipped_mean"](ds, counts, clip_norm=clip), norm_clipped_mean(ds, counts, clip_norm=clip), ds)
    assert LESSON["update_norm"](ds[0]) == pytest.approx(update_norms(ds)[0], rel=1e-9)


def test_notebook_trimmed_mean_keeps_the_package_rounding():
    ds = [[np.array([float(v)])] for v in range(9)]
    for n in (2, 3, 9, 10):
        for trim in (0.0, 0.1, 0.2, 0.3, 0.45):
            assert_same(LESSON["trimmed_mean"](ds[:n], trim_fraction=trim), trimmed_mean(ds[:n], trim_fraction=trim))


def test_attack_job_uses_the_given_aggregator_and_trainer():
    from data_utils.jobs import fedavg_under_attack_job
    from data_utils.training import client_trainer

    with pytest.raises(ValueError, match="ATTACK must be one of"):
        fedavg_under_attack_job({"SMOKE": True, "ROUNDS": 1, "ATTACK": "model_replacement"})
    calls = []

    def median_spy(deltas, counts):
        calls.append(len(deltas))
        return coordinate_median(deltas, counts)

    params = {"SMOKE": True, "ROUNDS": 2, "NUM_CLIENTS": 4, "MALICIOUS": [1], "ATTACK": "backdoor",
              "WITHIN_NORM": True, "EVERY_ROUND": False, "AGGREGATOR": "median", "CLIENT_LR": 0.05,
              "CLIENTS_PER_ROUND": 4}
    trainer = client_trainer("cnn_small", (28, 28, 1), 10, 0.05)
    out = fedavg_under_attack_job(params, aggregate=median_spy, trainer=trainer)
    assert calls == [4, 4]
    assert len(out["test_accuracy"]) == 1 and len(out["attack_success_rate"]) == 1   # the last round only
    assert 0 <= out["attack_success_rate"][0] <= 1
    assert {e["event"] for e in out["events"]} == {"honest", "backdoor"}
    with pytest.raises(ValueError, match="trainer was built for"):
        fedavg_under_attack_job(params, trainer=client_trainer("cnn_small", (28, 28, 1), 10, 0.2))
