"""DP accounting helpers (against the analytic Gaussian mechanism and the worst case of the sampler
training uses), notebook 06's own accounting cell and its results JSON, recomputed with
``dp_accounting``; and, in a subprocess, TFF's DP and robust aggregators as the course builds them."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_utils.privacy import (accounting_noise_multiplier, dp_epsilon, epsilon_record, noise_for_epsilon,
                                noise_std_of_mean, rdp_epsilon_floor)

# numpy 2 (the Python 3.13 stage) renamed trapz to trapezoid
_trapezoid = getattr(np, "trapezoid", None) or np.trapz

ROOT = Path(__file__).resolve().parent.parent
NB06 = ROOT / "notebooks" / "06_privacy_and_secure_aggregation.ipynb"


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
    pld = dp_epsilon(sigma, 10, 10, rounds, 1e-5, sampling="poisson", accountant="pld")
    rdp = dp_epsilon(sigma, 10, 10, rounds, 1e-5, sampling="poisson", accountant="rdp")
    assert pld == pytest.approx(exact, rel=0.02)
    assert rdp >= exact * 0.999  # RDP is a valid upper bound, a little loose
    assert rdp < exact * 1.5
    # replace-one neighbours: one client moves the clipped sum by 2C, i.e. half the noise multiplier
    replace_one = dp_epsilon(sigma, 10, 10, rounds, 1e-5, sampling="without_replacement")
    assert replace_one == pytest.approx(analytic_gaussian_epsilon(sigma / 2, rounds, 1e-5), rel=0.02)


def _hockey_stick(p, q, eps, x):
    """delta(eps) = integral of max(0, p - e^eps q) on the grid x (densities p, q on x)."""
    return float(_trapezoid(np.maximum(p - math.exp(eps) * q, 0.0), x))


@pytest.mark.parametrize("z, m, n", [(2.0, 30, 600), (4.0, 10, 100), (1.0, 3, 10)])
def test_pld_for_fixed_size_sampling_is_the_worst_case_that_happens(z, m, n):
    """One round, clip C = 1, noise std z. Client 0 sends +1 in population D and -1 in D' (one
    client replaced); the n - 1 others send -1. A sample of m without replacement sums to -m + 2 if
    it holds client 0 (probability q = m/n), else -m: D gives (1-q) N(-m, z^2) + q N(-m+2, z^2),
    D' gives N(-m, z^2). The epsilon of that pair (either order) is what fixed-size sampling
    really spends on these data; the PLD epsilon the course reports must be at least that, and
    (being a tight accountant) not much more."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    q, delta = m / n, 1e-5
    x = np.linspace(-12 * z, 2 + 12 * z, 400_001)
    d, d_prime = (1 - q) * norm.pdf(x, 0, z) + q * norm.pdf(x, 2, z), norm.pdf(x, 0, z)
    worst = max(brentq(lambda e: _hockey_stick(a, b, e, x) - delta, 0.0, 50.0)
                for a, b in ((d, d_prime), (d_prime, d)) if _hockey_stick(a, b, 0.0, x) > delta)
    reported = dp_epsilon(z, m, n, 1, delta)
    assert worst <= reported <= worst * 1.02 + 2e-3
    # and RDP (a proven upper bound, Wang et al. 2019, at the same halved noise) is above both
    assert dp_epsilon(z, m, n, 1, delta, accountant="rdp") >= reported * 0.999


@settings(max_examples=20, deadline=None)
@given(st.floats(0.3, 5.0), st.integers(1, 50), st.integers(2, 50))
def test_epsilon_shrinks_with_noise_and_grows_with_rounds_and_sampling(z, rounds, m):
    n = 100
    kw = dict(sampling="poisson", accountant="rdp")   # fast; the property holds for every analysis
    eps = dp_epsilon(z, m, n, rounds, 1e-5, **kw)
    assert dp_epsilon(z * 1.5, m, n, rounds, 1e-5, **kw) < eps
    assert dp_epsilon(z, m, n, rounds + 5, 1e-5, **kw) > eps
    assert dp_epsilon(z, min(n, m + 10), n, rounds, 1e-5, **kw) > eps


def test_special_cases():
    assert dp_epsilon(0.0, 10, 100, 5, 1e-5) == math.inf
    assert dp_epsilon(1.0, 10, 100, 0, 1e-5) == 0.0
    assert accounting_noise_multiplier(3.0) == 1.5 and accounting_noise_multiplier(3.0, "poisson") == 3.0
    # fixed-size sampling with replace-one neighbours spends more than the Poisson analysis says
    assert dp_epsilon(2.0, 30, 300, 10, 1e-5) > dp_epsilon(2.0, 30, 300, 10, 1e-5, sampling="poisson")
    # PLD is tighter than RDP for the same sampler
    assert dp_epsilon(2.0, 30, 300, 10, 1e-5) < dp_epsilon(2.0, 30, 300, 10, 1e-5, accountant="rdp")
    assert noise_std_of_mean(1.0, 0.5, 25) == pytest.approx(0.02)


def test_small_epsilons_are_not_a_floor_of_the_accountant():
    """Issue 14: RDP printed 0.00576, 0.00575, 0.00575 for z = 33, 67, 133 (1000 of 1,000,000
    clients, 10 rounds, delta 1e-6), its conversion floor. PLD, with its grid refined, keeps
    falling as the noise grows."""
    floor = rdp_epsilon_floor(1e-6)
    rdp = [dp_epsilon(z, 1000, 10**6, 10, 1e-6, sampling="poisson", accountant="rdp") for z in (33.3, 66.7, 133.3)]
    assert all(r == pytest.approx(floor, rel=0.01) for r in rdp)
    records = [epsilon_record(z, 1000, 10**6, 10, 1e-6) for z in (33.3, 66.7, 133.3)]
    eps = [r["epsilon"] for r in records]
    assert eps[0] > eps[1] > eps[2] and eps[0] < floor / 5
    assert all(r["pld_interval"] <= r["epsilon"] / 100 or r["pld_interval"] == 1e-7 for r in records)


@pytest.mark.parametrize("target", [1.0, 4.0])
def test_noise_for_epsilon_inverts_dp_epsilon(target):
    kw = dict(sampling="poisson")     # fast; the fixed-size sampler goes through the same calibration
    z = noise_for_epsilon(target, 30, 300, 10, 1e-5, **kw)
    assert dp_epsilon(z, 30, 300, 10, 1e-5, accountant="rdp", **kw) <= target * 1.001
    assert dp_epsilon(z * 0.97, 30, 300, 10, 1e-5, accountant="rdp", **kw) > target


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
    (lambda: dp_epsilon(float("nan"), 10, 100, 5, 1e-5), "noise_multiplier"),
    (lambda: noise_std_of_mean(1.0, 0.0, 10), "clip"),
    (lambda: rdp_epsilon_floor(0.0), "delta"),
])
def test_bad_input_is_a_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- notebook 06: its accounting cell, and every epsilon of its results JSON ------------------
def lesson_namespace() -> dict:
    """Execute notebook 06's cells tagged ``dp-lesson`` (the accounting it shows), in order."""
    cells = [c for c in json.loads(NB06.read_text())["cells"] if "dp-lesson" in c.get("metadata", {}).get("tags", [])]
    assert cells, "notebook 06 must tag its accounting cell dp-lesson"
    namespace: dict = {}
    for cell in cells:
        exec(compile("".join(cell["source"]), "notebook-06-dp-lesson", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("z, m, n, rounds", [(1.0, 30, 600, 10), (4.0, 10, 100, 8), (0.0, 10, 100, 3), (2.0, 10, 10, 5)])
def test_notebook_accounting_equals_package(z, m, n, rounds):
    ns = lesson_namespace()
    for accountant in ("pld", "rdp"):
        ours = epsilon_record(z, m, n, rounds, 1e-5, accountant=accountant)
        theirs = ns["epsilon_fixed_size"](z, m, n, rounds, 1e-5, accountant)
        if ours["pld_interval"] in (None, 1e-3):    # the same PLD grid: the same number
            assert theirs == pytest.approx(ours["epsilon"], rel=1e-9)
        else:                                       # the package refined its grid: tighter
            assert ours["epsilon"] <= theirs * 1.0001


def recompute(record: dict) -> float:
    """One epsilon of notebook 06's results JSON, from its stored settings only, with
    ``dp_accounting`` directly: PLD for fixed-size sampling (replace-one) composes the
    Poisson-sampled Gaussian with half the noise multiplier; RDP uses SampledWithoutReplacement."""
    import dp_accounting
    from dp_accounting import pld, rdp

    z, m, n = record["noise_multiplier"], record["clients_per_round"], record["num_clients"]
    if z == 0:
        return math.inf
    replace_one = record["sampling"] == "without_replacement"
    assert record["neighbouring_relation"] == ("REPLACE_ONE" if replace_one else "ADD_OR_REMOVE_ONE")
    gaussian = dp_accounting.GaussianDpEvent(z / 2 if replace_one else z)
    if m == n:
        one_round = gaussian
    elif record["accountant"] == "rdp" and replace_one:
        one_round = dp_accounting.SampledWithoutReplacementDpEvent(n, m, gaussian)
    else:
        one_round = dp_accounting.PoissonSampledDpEvent(m / n, gaussian)
    if record["accountant"] == "pld":
        acc = pld.PLDAccountant(value_discretization_interval=record["pld_interval"])
    else:
        acc = rdp.RdpAccountant(neighboring_relation=getattr(dp_accounting.NeighboringRelation,
                                                             record["neighbouring_relation"]))
    return acc.compose(dp_accounting.SelfComposedDpEvent(one_round, record["rounds"])).get_epsilon(record["delta"])


def check_results_epsilons(results: dict) -> int:
    """Every epsilon notebook 06 reports, recomputed from its JSON (relative tolerance 1e-6: the
    same computation must give the same number); returns how many were checked."""
    dp = results["dp"]
    assert (dp["sampler"], dp["sampler_function"]) == ("without_replacement", "data_utils.clients.sample_clients")
    assert (dp["neighbouring_relation"], dp["headline_accountant"]) == ("REPLACE_ONE", "pld")
    records = dp["epsilons"] + [r[k] for r in dp["at_scale"] for k in ("pld", "rdp")]
    for record in records:   # JSON has no infinity: write_results stores an infinite epsilon as null
        stored = math.inf if record["epsilon"] is None else record["epsilon"]
        assert stored == pytest.approx(recompute(record), rel=1e-6), record
    for record in dp["epsilons"]:
        assert (record["clients_per_round"], record["num_clients"], record["rounds"], record["delta"]) == \
            (dp["clients_per_round"], dp["num_clients"], dp["rounds"], dp["delta"])
    headline = {r["noise_multiplier"]: r["epsilon"] for r in dp["epsilons"]
                if (r["sampling"], r["accountant"]) == ("without_replacement", "pld")}
    assert {float(z): e for z, e in dp["epsilon_by_z"].items()} == headline   # the table's column, nulls included
    assert dp["rdp_floor_at_scale"] == pytest.approx(rdp_epsilon_floor(dp["at_scale"][0]["rdp"]["delta"]))
    return len(records)


# Notebook 06's own results JSON goes through check_results_epsilons in
# test_notebooks.test_notebook_runs_alone_in_smoke_mode[06_...], on the run that test makes anyway.


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
    with pytest.raises(ValueError, match=r"RUN_SEEDS\[1\] must be an integer >= 0"):
        dp_fedavg_job({"SMOKE": True, "RUN_SEEDS": [0, -1]})
    with pytest.raises(ValueError, match="VALUES"):
        tff_secure_sum_job({"VALUES": [np.zeros(3)], "BOUND": 1.0})
    with pytest.raises(ValueError, match="BOUND"):
        tff_secure_sum_job({"VALUES": [np.zeros(3), np.zeros(3)], "BOUND": -1})
