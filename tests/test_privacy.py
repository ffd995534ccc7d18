"""DP accounting helpers (against the analytic Gaussian mechanism) and, in a subprocess, TFF's DP
and robust aggregators as the course builds them."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_utils.privacy import dp_epsilon, noise_for_epsilon, noise_std_of_mean


def analytic_gaussian_epsilon(sigma: float, rounds: int, delta: float) -> float:
    """Exact epsilon of ``rounds`` Gaussian mechanisms with noise multiplier ``sigma`` (no
    sampling): the composition is one Gaussian mechanism with sigma / sqrt(rounds), whose
    delta(epsilon) is known in closed form (Balle & Wang 2018, Theorem 8)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    s = sigma / math.sqrt(rounds)

    def delta_of(eps):
        return norm.cdf(0.5 / s - eps * s) - math.exp(eps) * norm.cdf(-0.5 / s - eps * s) - delta

    return brentq(delta_of, 0.0, 500.0)


@pytest.mark.parametrize("sigma,rounds", [(1.0, 1), (2.0, 10), (5.0, 50)])
def test_epsilon_without_sampling_matches_the_analytic_gaussian_mechanism(sigma, rounds):
    exact = analytic_gaussian_epsilon(sigma, rounds, 1e-5)
    pld = dp_epsilon(sigma, 10, 10, rounds, 1e-5, accountant="pld")
    rdp = dp_epsilon(sigma, 10, 10, rounds, 1e-5, accountant="rdp")
    assert pld == pytest.approx(exact, rel=0.02)
    assert rdp >= exact * 0.999  # RDP is a valid upper bound, a little loose
    assert rdp < exact * 1.5


@settings(max_examples=20, deadline=None)
@given(st.floats(0.3, 5.0), st.integers(1, 50), st.integers(2, 50))
def test_epsilon_shrinks_with_noise_and_grows_with_rounds_and_sampling(z, rounds, m):
    n = 100
    eps = dp_epsilon(z, m, n, rounds, 1e-5)
    assert dp_epsilon(z * 1.5, m, n, rounds, 1e-5) < eps
    assert dp_epsilon(z, m, n, rounds + 5, 1e-5) > eps
    assert dp_epsilon(z, min(n, m + 10), n, rounds, 1e-5) > eps


def test_special_cases():
    assert dp_epsilon(0.0, 10, 100, 5, 1e-5) == math.inf
    assert dp_epsilon(1.0, 10, 100, 0, 1e-5) == 0.0
    # sampling without replacement (replace-one neighbours) costs more than Poisson here
    assert dp_epsilon(1.0, 30, 300, 10, 1e-5, sampling="without_replacement") > \
        dp_epsilon(1.0, 30, 300, 10, 1e-5)
    assert noise_std_of_mean(1.0, 0.5, 25) == pytest.approx(0.02)


@pytest.mark.parametrize("target", [1.0, 4.0])
def test_noise_for_epsilon_inverts_dp_epsilon(target):
    z = noise_for_epsilon(target, 30, 300, 10, 1e-5)
    assert dp_epsilon(z, 30, 300, 10, 1e-5) <= target * 1.001
    assert dp_epsilon(z * 0.97, 30, 300, 10, 1e-5) > target


@pytest.mark.parametrize("call,match", [
    (lambda: dp_epsilon(-1.0, 10, 100, 5, 1e-5), "noise_multiplier"),
    (lambda: dp_epsilon(1.0, 0, 100, 5, 1e-5), "clients_per_round"),
    (lambda: dp_epsilon(1.0, 200, 100, 5, 1e-5),
     r"clients_per_round must be at most num_clients \(100\), got 200"),
    (lambda: dp_epsilon(1.0, 10, 100, -1, 1e-5), "rounds"),
    (lambda: dp_epsilon(1.0, 10, 100, 5, 1.5), "delta"),
    (lambda: dp_epsilon(1.0, 10, 100, 5, 0.0), "delta"),
    (lambda: dp_epsilon(1.0, 10, 100, 5, 1e-5, sampling="shuffle"), "sampling"),
    (lambda: dp_epsilon(1.0, 10, 100, 5, 1e-5, accountant="moments"), "accountant"),
    (lambda: dp_epsilon(1.0, 10, 100, 5, 1e-5, sampling="without_replacement", accountant="pld"),
     "Poisson sampling only"),
    (lambda: dp_epsilon(float("nan"), 10, 100, 5, 1e-5), "noise_multiplier"),
    (lambda: noise_std_of_mean(1.0, 0.0, 10), "clip"),
])
def test_bad_input_is_a_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def tff_aggregator_checks_job(params: dict) -> dict:
    """Runs in a child process (TFF leaves a worker_binary behind; the sidecar ends its group)."""
    from data_utils.privacy import build_dp_fedavg, dp_model_aggregator
    from data_utils.robust import TffAggregatorHook, norm_clipped_mean, plain_mean
    from data_utils.tff_fedavg import import_tff

    tff = import_tff()
    out = {}
    template = [np.zeros((400, 5), np.float32)]
    # fixed clip, no noise: the unweighted mean of the clipped updates
    hook = TffAggregatorHook(dp_model_aggregator(0.0, 3, clip=1.0), template)
    ups = [[np.full((400, 5), v, np.float32)] for v in (0.1, 0.001, -0.002)]  # norms ~4.5, 0.045, 0.09
    got = hook(ups, [5, 1, 1])[0]
    out["fixed_clip_err"] = float(np.abs(got - norm_clipped_mean(ups, None, clip_norm=1.0)[0]).max())
    # noise: std of the mean is z * clip / clients_per_round
    hook = TffAggregatorHook(dp_model_aggregator(2.0, 4, clip=0.5), template)
    out["noise_std"] = float(hook([[np.zeros((400, 5), np.float32)]] * 4, [1] * 4)[0].std())
    # the adaptive (tff.learning.dp_aggregator) version builds and runs (needs >= 10 z clients)
    hook = TffAggregatorHook(dp_model_aggregator(1.0, 40), template)
    out["adaptive_finite"] = bool(np.all(np.isfinite(hook(ups + ups[:1], [1] * 4)[0])))
    # TFF's robust aggregator in the manual loop's hook: an outlier is tamed
    hook = TffAggregatorHook(tff.learning.robust_aggregator(), template)
    bad = ups[1:] + [[np.full((400, 5), 50.0, np.float32)]]
    out["robust_max"] = float(np.abs(hook(bad, [1, 1, 1])[0]).max())
    out["plain_max"] = float(np.abs(plain_mean(bad, [1, 1, 1])[0]).max())
    out["robust_measurements"] = sorted(hook.measurements[0])
    try:
        hook([[np.zeros(3, np.float32)]], [1])
    except ValueError as err:
        out["shape_error"] = str(err)
    try:
        dp_model_aggregator(1.0, 4, clip=1.0, zeroing=True)
    except ValueError as err:
        out["zeroing_error"] = str(err)
    process = build_dp_fedavg("cnn_small", (28, 28, 1), 10, 0.05, 1.0, dp_model_aggregator(1.0, 2, clip=0.5))
    out["dp_fedavg_next"] = "->" in str(process.next.type_signature)
    return out


def test_tff_dp_and_robust_aggregators_in_a_child_process():
    from data_utils.sidecar import run_job

    out = run_job("tests.test_privacy:tff_aggregator_checks_job", {}, mode="sidecar",
                  timeout=600, show=False, echo=False)
    assert out["fixed_clip_err"] < 1e-6
    assert out["noise_std"] == pytest.approx(2.0 * 0.5 / 4, rel=0.1)
    assert out["adaptive_finite"]
    assert out["robust_max"] < out["plain_max"] / 5
    assert any("clipping_norm" in k for k in out["robust_measurements"])
    assert "aggregator was built for" in out["shape_error"]
    assert "adaptive clip" in out["zeroing_error"]
    assert out["dp_fedavg_next"]


def test_jobs_reject_bad_parameters_before_starting_tff():
    from data_utils.jobs import dp_fedavg_job
    from data_utils.jobs import tff_secure_sum_job

    with pytest.raises(ValueError, match="NOISE_MULTIPLIERS"):
        dp_fedavg_job({"SMOKE": True, "NOISE_MULTIPLIERS": []})
    with pytest.raises(ValueError, match=r"NOISE_MULTIPLIERS\[1\] must be a non-negative finite number"):
        dp_fedavg_job({"SMOKE": True, "NOISE_MULTIPLIERS": [1.0, -0.5]})
    with pytest.raises(ValueError, match="DP_CLIP"):
        dp_fedavg_job({"SMOKE": True, "DP_CLIP": 0})
    with pytest.raises(ValueError, match="VALUES"):
        tff_secure_sum_job({"VALUES": [np.zeros(3)], "BOUND": 1.0})
    with pytest.raises(ValueError, match="BOUND"):
        tff_secure_sum_job({"VALUES": [np.zeros(3), np.zeros(3)], "BOUND": -1})
