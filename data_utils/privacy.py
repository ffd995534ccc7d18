"""Differential privacy for federated learning (notebook 06): DP-FedAvg (McMahan et al. 2018,
"Learning Differentially Private Recurrent Language Models") with TensorFlow Federated, and the
privacy it spends, computed with Google's ``dp_accounting`` library.

DP-FedAvg protects each *client* (user-level DP): every round the server takes a random sample
of clients, clips each client's update to an L2 norm ``clip``, sums them, adds Gaussian noise of
standard deviation ``noise_multiplier * clip`` and divides by the expected number of clients. The
privacy spent after ``rounds`` rounds is an (epsilon, delta) pair that depends only on the noise
multiplier, the sampling rate ``clients_per_round / num_clients`` and the number of rounds.

The accounting functions need no TensorFlow; :func:`dp_model_aggregator` and
:func:`build_dp_fedavg` import TFF.
"""
from __future__ import annotations

import math

from .validate import check_choice, check_int, check_number, check_positive

SAMPLINGS = ("poisson", "without_replacement")
ACCOUNTANTS = ("rdp", "pld")


def _check_delta(delta) -> float:
    return check_number("delta", delta, 0, 1, low_open=True, high_open=True)


def dp_event(noise_multiplier: float, clients_per_round: int, num_clients: int, rounds: int,
             sampling: str = "poisson"):
    """The ``dp_accounting`` event of DP-FedAvg: ``rounds`` rounds of the Gaussian mechanism
    (noise multiplier ``z``) on a sample of ``clients_per_round`` of ``num_clients`` clients.

    ``sampling="poisson"``: each client takes part independently with probability
    q = clients_per_round / num_clients (the analysis DP-FedAvg papers use; add-or-remove-one
    neighbours). ``"without_replacement"``: exactly ``clients_per_round`` distinct clients, as
    :func:`data_utils.fedavg.sample_clients` draws them (replace-one neighbours). With every
    client in every round there is no sampling, and no amplification."""
    import dp_accounting

    z = check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    m = check_int("clients_per_round", clients_per_round, low=1)
    n = check_int("num_clients", num_clients, low=1)
    t = check_int("rounds", rounds, low=0)
    if m > n:
        raise ValueError(f"clients_per_round must be at most num_clients ({n}), got {m}")
    check_choice("sampling", sampling, SAMPLINGS)
    gaussian = dp_accounting.GaussianDpEvent(z)
    if m == n:
        per_round = gaussian
    elif sampling == "poisson":
        per_round = dp_accounting.PoissonSampledDpEvent(m / n, gaussian)
    else:
        per_round = dp_accounting.SampledWithoutReplacementDpEvent(n, m, gaussian)
    return dp_accounting.SelfComposedDpEvent(per_round, t)


def dp_epsilon(noise_multiplier: float, clients_per_round: int, num_clients: int, rounds: int,
               delta: float, sampling: str = "poisson", accountant: str = "rdp") -> float:
    """Epsilon spent by DP-FedAvg at ``delta`` (see :func:`dp_event` for the arguments).

    ``accountant="rdp"`` (Renyi DP, the usual choice, a valid upper bound) or ``"pld"``
    (privacy loss distributions, tighter, Poisson sampling only). Returns ``inf`` with no noise.

    >>> round(dp_epsilon(1.0, clients_per_round=10, num_clients=100, rounds=50, delta=1e-5), 1)
    5.9
    >>> round(dp_epsilon(2.0, 10, 100, 50, 1e-5), 2)      # twice the noise: far less spent
    1.84
    >>> round(dp_epsilon(1.0, 100, 100, 50, 1e-5), 2)     # every client every round: no amplification
    57.3
    >>> dp_epsilon(0.0, 10, 100, 50, 1e-5)                 # no noise, no privacy
    inf
    """
    import dp_accounting
    from dp_accounting import pld, rdp

    d = _check_delta(delta)
    check_choice("accountant", accountant, ACCOUNTANTS)
    event = dp_event(noise_multiplier, clients_per_round, num_clients, rounds, sampling)
    if noise_multiplier == 0 and rounds > 0:
        return math.inf
    if rounds == 0:
        return 0.0
    if accountant == "rdp":
        relation = (dp_accounting.NeighboringRelation.REPLACE_ONE if sampling == "without_replacement"
                    and clients_per_round < num_clients
                    else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
        acc = rdp.RdpAccountant(neighboring_relation=relation)
    else:
        if sampling == "without_replacement" and clients_per_round < num_clients:
            raise ValueError("accountant must be 'rdp' with sampling='without_replacement' (the PLD "
                             "accountant supports Poisson sampling only), got 'pld'")
        acc = pld.PLDAccountant()
    acc.compose(event)
    return float(acc.get_epsilon(d))


def noise_for_epsilon(target_epsilon: float, clients_per_round: int, num_clients: int,
                      rounds: int, delta: float, sampling: str = "poisson") -> float:
    """The smallest noise multiplier whose :func:`dp_epsilon` (RDP) is at most ``target_epsilon``."""
    import dp_accounting

    eps = check_positive("target_epsilon", target_epsilon)
    delta = _check_delta(delta)
    dp_event(1.0, clients_per_round, num_clients, rounds, sampling)  # checks the arguments
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: dp_accounting.rdp.RdpAccountant(
            neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
            if sampling == "without_replacement" and clients_per_round < num_clients
            else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE),
        lambda z: dp_event(float(z), clients_per_round, num_clients, rounds, sampling),
        eps, delta, dp_accounting.LowerEndpointAndGuess(0.0, 1.0), tol=1e-4))


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
    from .tff_fedavg import element_spec, import_tff, keras_model_fn

    client_lr, server_lr = check_positive("client_lr", client_lr), check_positive("server_lr", server_lr)
    tff = import_tff()
    return tff.learning.algorithms.build_unweighted_fed_avg(
        keras_model_fn(model_name, input_shape, num_classes, element_spec(input_shape)),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=client_lr),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=server_lr),
        model_aggregator=aggregator,
    )
