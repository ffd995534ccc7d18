"""Differential privacy for federated learning (notebook 06): DP-FedAvg (McMahan et al. 2018,
"Learning Differentially Private Recurrent Language Models") with TensorFlow Federated, and the
privacy it spends, computed with Google's ``dp_accounting`` library.

DP-FedAvg protects each *client* (user-level DP): every round the server takes a random sample
of clients, clips each client's update to an L2 norm ``clip``, sums them, adds Gaussian noise of
standard deviation ``noise_multiplier * clip`` and divides by the number of clients sampled. The
privacy spent after ``rounds`` rounds is an (epsilon, delta) pair that depends only on the noise
multiplier, how the clients are sampled (``clients_per_round`` of ``num_clients``) and the number
of rounds.

Two samplers, two neighbouring relations (:func:`dp_event`):

- ``"without_replacement"``: exactly ``clients_per_round`` distinct clients each round, as
  :func:`data_utils.clients.sample_clients` draws them for training. The population size is then
  public and part of the algorithm, so the guarantee compares populations of the same size in
  which one client's data is *replaced* (replace-one neighbours). One client replaced can move the
  clipped sum by up to ``2 * clip`` (its update flips from +clip to -clip), so the accountant sees
  noise multiplier ``noise_multiplier / 2`` per unit of that sensitivity.
- ``"poisson"``: each client joins each round independently with probability
  ``clients_per_round / num_clients``; neighbours differ by *adding or removing* one client (the
  analysis of Abadi et al. 2016 and McMahan et al. 2018). Not what training here does; a comparison.

Two accountants: ``"pld"`` (privacy loss distributions, Koskela et al. 2020 / Doroshenko et al.
2022: numerically tight, the headline) and ``"rdp"`` (Renyi DP, Mironov 2017: a valid upper
bound, looser). ``dp_accounting`` 0.4.3's ``PLDAccountant`` has no
``SampledWithoutReplacementDpEvent`` (it composes Gaussian and Poisson-sampled events only). For
fixed-size sampling without replacement under replace-one neighbours, the worst pair of output
distributions of the clipped noisy sum is ``(1-q) N(0, s^2) + q N(2 clip, s^2)`` against
``N(0, s^2)`` with ``q = clients_per_round / num_clients`` (it is reached when every other client
sends -clip and the replaced client flips from +clip to -clip; Zhu, Dong & Wang 2022 show it
dominates), which is the pair of a Poisson-sampled Gaussian with noise multiplier
``noise_multiplier / 2``: that is the event the PLD accountant composes for this sampler. The RDP
accountant uses ``SampledWithoutReplacementDpEvent`` (Wang, Balle & Kasiviswanathan 2019) with
the same halved noise multiplier and ``NeighboringRelation.REPLACE_ONE``.

The accounting functions need no TensorFlow; :func:`dp_model_aggregator` and
:func:`build_dp_fedavg` import TFF.
"""
from __future__ import annotations

import math

from .validate import check_choice, check_int, check_number, check_positive

SAMPLINGS = ("without_replacement", "poisson")
ACCOUNTANTS = ("pld", "rdp")
# the neighbouring relation each sampler's analysis needs (dp_accounting.NeighboringRelation names)
RELATIONS = {"without_replacement": "REPLACE_ONE", "poisson": "ADD_OR_REMOVE_ONE"}
# PLD discretization: start here, refine until it is at most epsilon / PLD_RELATIVE_STEP
PLD_FIRST_INTERVAL, PLD_RELATIVE_STEP, PLD_FINEST_INTERVAL = 1e-3, 100, 1e-7
# dp_accounting's default Renyi orders (rdp_privacy_accountant.DEFAULT_RDP_ORDERS), largest 1024
DEFAULT_RDP_ORDERS = tuple([1 + x / 10 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024])


def _check_delta(delta) -> float:
    return check_number("delta", delta, 0, 1, low_open=True, high_open=True)


def _check_sampling(noise_multiplier, clients_per_round, num_clients, rounds, sampling):
    z = check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    m = check_int("clients_per_round", clients_per_round, low=1)
    n = check_int("num_clients", num_clients, low=1)
    t = check_int("rounds", rounds, low=0)
    if m > n:
        raise ValueError(f"clients_per_round must be at most num_clients ({n}), got {m}")
    check_choice("sampling", sampling, SAMPLINGS)
    return float(z), m, n, t


def accounting_noise_multiplier(noise_multiplier: float, sampling: str = "without_replacement") -> float:
    """The noise multiplier the accountant sees: noise std over the sensitivity of the clipped sum
    under the sampler's neighbouring relation. Replace-one (``"without_replacement"``): one client
    can move the sum by ``2 * clip``, so half of ``noise_multiplier``; add-or-remove
    (``"poisson"``): by ``clip``, so ``noise_multiplier`` itself.

    >>> accounting_noise_multiplier(4.0), accounting_noise_multiplier(4.0, "poisson")
    (2.0, 4.0)
    """
    z = check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    check_choice("sampling", sampling, SAMPLINGS)
    return float(z) / 2 if sampling == "without_replacement" else float(z)


def dp_event(noise_multiplier: float, clients_per_round: int, num_clients: int, rounds: int,
             sampling: str = "without_replacement", accountant: str = "pld"):
    """The ``dp_accounting`` event that ``accountant`` composes for DP-FedAvg: ``rounds`` rounds
    of the Gaussian mechanism (noise multiplier ``z``) on a sample of ``clients_per_round`` of
    ``num_clients`` clients, drawn as ``sampling`` says (see the module docstring).

    ``"without_replacement"`` (:func:`data_utils.clients.sample_clients`): for ``"rdp"``
    ``SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(z / 2))``, for ``"pld"`` the
    equivalent ``PoissonSampledDpEvent(m / N, GaussianDpEvent(z / 2))``. ``"poisson"``:
    ``PoissonSampledDpEvent(m / N, GaussianDpEvent(z))``. With every client in every round there
    is no sampling, and no amplification: ``GaussianDpEvent`` alone."""
    import dp_accounting

    z, m, n, t = _check_sampling(noise_multiplier, clients_per_round, num_clients, rounds, sampling)
    check_choice("accountant", accountant, ACCOUNTANTS)
    gaussian = dp_accounting.GaussianDpEvent(accounting_noise_multiplier(z, sampling))
    if m == n:
        per_round = gaussian
    elif sampling == "poisson" or accountant == "pld":
        per_round = dp_accounting.PoissonSampledDpEvent(m / n, gaussian)
    else:
        per_round = dp_accounting.SampledWithoutReplacementDpEvent(n, m, gaussian)
    return dp_accounting.SelfComposedDpEvent(per_round, t)


def make_accountant(sampling: str = "without_replacement", accountant: str = "pld",
                    interval: float = PLD_FIRST_INTERVAL):
    """A fresh ``dp_accounting`` accountant for :func:`dp_event`'s event: ``RdpAccountant`` with
    the sampler's neighbouring relation, or ``PLDAccountant`` with PLD value discretization
    ``interval`` (the relation of the Poisson-sampled event it composes is add-or-remove)."""
    import dp_accounting
    from dp_accounting import pld, rdp

    check_choice("sampling", sampling, SAMPLINGS)
    check_choice("accountant", accountant, ACCOUNTANTS)
    if accountant == "pld":
        return pld.PLDAccountant(value_discretization_interval=check_positive("interval", interval))
    return rdp.RdpAccountant(neighboring_relation=getattr(dp_accounting.NeighboringRelation,
                                                          RELATIONS[sampling]))


def epsilon_record(noise_multiplier: float, clients_per_round: int, num_clients: int, rounds: int,
                   delta: float, sampling: str = "without_replacement", accountant: str = "pld") -> dict:
    """Epsilon spent by DP-FedAvg at ``delta``, with everything needed to recompute it: the
    arguments, the neighbouring relation, the noise multiplier the accountant saw, the event (as
    text) and, for PLD, the discretization interval used (refined from 1e-3 until it is at most
    epsilon / 100, so a small epsilon is not a floor of the grid; PLD rounds pessimistically, so
    every interval gives an upper bound). ``epsilon`` is ``inf`` with no
    noise and 0 with no rounds."""
    d = _check_delta(delta)
    event = dp_event(noise_multiplier, clients_per_round, num_clients, rounds, sampling, accountant)
    record = {"noise_multiplier": float(noise_multiplier), "clients_per_round": int(clients_per_round),
              "num_clients": int(num_clients), "rounds": int(rounds), "delta": d, "sampling": sampling,
              "neighbouring_relation": RELATIONS[sampling], "accountant": accountant,
              "accounting_noise_multiplier": accounting_noise_multiplier(noise_multiplier, sampling),
              "event": repr(event), "pld_interval": None}
    if noise_multiplier == 0 and rounds > 0:
        return dict(record, epsilon=math.inf)
    if rounds == 0:
        return dict(record, epsilon=0.0)
    if accountant == "rdp":
        return dict(record, epsilon=float(make_accountant(sampling, "rdp").compose(event).get_epsilon(d)))
    interval = PLD_FIRST_INTERVAL
    while True:
        eps = float(make_accountant(sampling, "pld", interval).compose(event).get_epsilon(d))
        finer = 10 ** math.floor(math.log10(max(eps, 1e-300) / PLD_RELATIVE_STEP))
        if interval <= eps / PLD_RELATIVE_STEP * 1.000001 or interval <= PLD_FINEST_INTERVAL:
            return dict(record, epsilon=eps, pld_interval=interval)
        interval = max(min(finer, interval / 10), PLD_FINEST_INTERVAL)


def dp_epsilon(noise_multiplier: float, clients_per_round: int, num_clients: int, rounds: int,
               delta: float, sampling: str = "without_replacement", accountant: str = "pld") -> float:
    """Epsilon spent by DP-FedAvg at ``delta`` (:func:`epsilon_record`, the number only).

    By default for the sampler training uses (``"without_replacement"``, replace-one neighbours)
    with the PLD accountant; ``sampling="poisson"`` for the add-or-remove analysis of the DP-FedAvg
    papers, ``accountant="rdp"`` for the Renyi-DP bound. Returns ``inf`` with no noise.

    >>> round(dp_epsilon(4.0, clients_per_round=10, num_clients=100, rounds=10, delta=1e-5), 1)
    0.8
    >>> round(dp_epsilon(4.0, 10, 100, 10, 1e-5, sampling="poisson"), 1)   # add-or-remove: less
    0.3
    >>> round(dp_epsilon(4.0, 10, 100, 10, 1e-5, accountant="rdp"), 1)     # RDP: a looser bound
    1.5
    >>> dp_epsilon(0.0, 10, 100, 50, 1e-5)                                  # no noise, no privacy
    inf
    """
    return epsilon_record(noise_multiplier, clients_per_round, num_clients, rounds, delta,
                          sampling, accountant)["epsilon"]


def rdp_epsilon_floor(delta: float, orders=None) -> float:
    """The smallest epsilon the RDP accountant can report at ``delta`` for any mechanism that
    leaks at all (Renyi divergence above ``delta**2``): converting RDP at order ``a`` to
    (epsilon, delta) costs ``log1p(-1/a) - log(delta * a) / (a - 1)`` even with no privacy loss,
    and ``dp_accounting``'s default orders stop at 1024. Below it, RDP's number is the
    accountant's, not the mechanism's (PLD has no such floor).

    >>> round(rdp_epsilon_floor(1e-6), 5)
    0.00575
    """
    d = _check_delta(delta)
    orders = DEFAULT_RDP_ORDERS if orders is None else orders
    return float(min(math.log1p(-1 / a) - math.log(d * a) / (a - 1) for a in orders if a > 1.01))


def noise_for_epsilon(target_epsilon: float, clients_per_round: int, num_clients: int,
                      rounds: int, delta: float, sampling: str = "without_replacement") -> float:
    """The smallest noise multiplier whose RDP epsilon (:func:`dp_epsilon` with
    ``accountant="rdp"``, fast and a valid upper bound) is at most ``target_epsilon``."""
    import dp_accounting

    eps = check_positive("target_epsilon", target_epsilon)
    delta = _check_delta(delta)
    dp_event(1.0, clients_per_round, num_clients, rounds, sampling, "rdp")  # checks the arguments
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: make_accountant(sampling, "rdp"),
        lambda z: dp_event(float(z), clients_per_round, num_clients, rounds, sampling, "rdp"),
        eps, delta, dp_accounting.LowerEndpointAndGuess(0.05, 1.0), tol=1e-4))


def noise_std_of_mean(noise_multiplier: float, clip: float, clients_per_round: int) -> float:
    """Standard deviation of the noise DP-FedAvg adds to each coordinate of the *mean* update:
    ``noise_multiplier * clip / clients_per_round``. More clients per round, less noise."""
    return check_positive("noise_multiplier", noise_multiplier, allow_zero=True) * \
        check_positive("clip", clip) / check_int("clients_per_round", clients_per_round, low=1)


def dp_model_aggregator(noise_multiplier: float, clients_per_round: int, clip: float | None = None,
                        zeroing: bool = False):
    """TFF's DP aggregator for DP-FedAvg (an unweighted mean: every client counts the same).

    ``clip`` a number: ``tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed`` (fixed L2
    clip, noise std ``noise_multiplier * clip`` on the sum). ``clip=None``:
    ``tff.learning.dp_aggregator``, whose clip adapts to the median update norm (starting at 0.1;
    ``noise_multiplier`` is then the total, the clip estimate's own noise included).
    ``zeroing=True`` adds TFF's adaptive zeroing of huge updates (adaptive mode only); its
    threshold is estimated without noise, so keep it off when the accounting must be exact."""
    from .tff_fedavg import import_tff

    z = check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    m = check_int("clients_per_round", clients_per_round, low=1)
    clip = check_positive("clip", clip, allow_none=True)
    if zeroing and clip is not None:
        raise ValueError(f"zeroing must be False with a fixed clip (it needs the adaptive clip, "
                         f"clip=None), got {zeroing!r}")
    tff = import_tff()
    if clip is None:
        return tff.learning.dp_aggregator(z, m, zeroing=bool(zeroing))
    return tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(z, m, clip)


def build_dp_fedavg(model_name: str, input_shape, num_classes: int, client_lr: float,
                    server_lr: float, aggregator):
    """DP-FedAvg as a TFF learning process: ``tff.learning.algorithms.build_unweighted_fed_avg``
    (the DP aggregators are unweighted) with SGD on clients and server and ``aggregator`` from
    :func:`dp_model_aggregator`. Runs with :func:`data_utils.tff_fedavg.run_tff_fedavg`."""
    from .tff_fedavg import client_loop, element_spec, import_tff, keras_model_fn

    client_lr, server_lr = check_positive("client_lr", client_lr), check_positive("server_lr", server_lr)
    tff = import_tff()
    return tff.learning.algorithms.build_unweighted_fed_avg(
        keras_model_fn(model_name, input_shape, num_classes, element_spec(input_shape)),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=client_lr),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=server_lr),
        model_aggregator=aggregator,
        loop_implementation=client_loop(),
    )
