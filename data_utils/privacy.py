"""Differential privacy for federated learning: DP-FedAvg (McMahan et al. 2018, "Learning
Differentially Private Recurrent Language Models") with TensorFlow Federated, and the privacy it
spends, computed with Google's ``dp_accounting`` library.

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
import numbers

SAMPLINGS = ("poisson", "without_replacement")
ACCOUNTANTS = ("rdp", "pld")


def _positive(name, value, allow_zero=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
        and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite "
                         f"number, got {value!r}")
    return float(value)


def _count(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


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

    z = _positive("noise_multiplier", noise_multiplier, allow_zero=True)
    m, n = _count("clients_per_round", clients_per_round), _count("num_clients", num_clients)
    t = _count("rounds", rounds, minimum=0)
    if m > n:
        raise ValueError(f"clients_per_round ({m}) cannot exceed num_clients ({n})")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
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
    (privacy loss distributions, tighter, Poisson sampling only). Returns ``inf`` with no noise."""
    import dp_accounting
    from dp_accounting import pld, rdp

    d = _positive("delta", delta)
    if d >= 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
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
            raise ValueError("the PLD accountant supports Poisson sampling only; use accountant='rdp'")
        acc = pld.PLDAccountant()
    acc.compose(event)
    return float(acc.get_epsilon(d))


def noise_for_epsilon(target_epsilon: float, clients_per_round: int, num_clients: int,
                      rounds: int, delta: float, sampling: str = "poisson") -> float:
    """The smallest noise multiplier whose :func:`dp_epsilon` (RDP) is at most ``target_epsilon``."""
    import dp_accounting

    eps = _positive("target_epsilon", target_epsilon)
    _positive("delta", delta)
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
    return _positive("noise_multiplier", noise_multiplier, allow_zero=True) * \
        _positive("clip", clip) / _count("clients_per_round", clients_per_round)


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

    z = _positive("noise_multiplier", noise_multiplier, allow_zero=True)
    m = _count("clients_per_round", clients_per_round)
    tff = import_tff()
    if clip is None:
        return tff.learning.dp_aggregator(z, m, zeroing=bool(zeroing))
    if zeroing:
        raise ValueError("zeroing is available with the adaptive clip (clip=None) only")
    return tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(z, m, _positive("clip", clip))


def build_dp_fedavg(model_name: str, input_shape, num_classes: int, client_lr: float,
                    server_lr: float, aggregator):
    """DP-FedAvg as a TFF learning process: ``tff.learning.algorithms.build_unweighted_fed_avg``
    (the DP aggregators are unweighted) with SGD on clients and server and ``aggregator`` from
    :func:`dp_model_aggregator`. Runs with :func:`data_utils.tff_fedavg.run_tff_fedavg`."""
    from .tff_fedavg import element_spec, import_tff, keras_model_fn

    tff = import_tff()
    return tff.learning.algorithms.build_unweighted_fed_avg(
        keras_model_fn(model_name, input_shape, num_classes, element_spec(input_shape)),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=_positive("client_lr", client_lr)),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=_positive("server_lr", server_lr)),
        model_aggregator=aggregator,
    )


def split_job_params(params: dict, own: dict) -> tuple[dict, dict]:
    """Split a job's parameters into its own (``own``: name -> default) and those
    :func:`data_utils.tff_jobs.job_config` checks (experiment and FedAvg settings)."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of notebook parameters, got {type(params).__name__}")
    mine = dict(own)
    mine.update({k: v for k, v in params.items() if k in own})
    return mine, {k: v for k, v in params.items() if k not in own}


def dp_fedavg_job(params: dict, progress=None) -> dict:
    """Train DP-FedAvg with TFF once per noise multiplier, from the same initial weights on the
    same sampled clients; return each run's test accuracy by round and its timings.

    ``params``: the experiment's (``NUM_CLIENTS`` is the population DP samples from), the FedAvg
    settings of :func:`data_utils.tff_jobs.job_config` (``ROUNDS``, ``CLIENTS_PER_ROUND``,
    ``CLIENT_LR``, ...), ``NOISE_MULTIPLIERS`` (a list) and ``DP_CLIP`` (None: adaptive clip).
    The clients are partitioned afresh (not saved over the course's shared partition).

    TFF's Gaussian noise op takes no seed, and TensorFlow's op determinism refuses unseeded
    random ops, so determinism is switched off while the job runs: the noise differs from run
    to run, as DP noise must (a noise seed the server could know would void the guarantee).
    Runs in this process or, from Colab's default runtime, through :mod:`data_utils.sidecar`."""
    import time

    from tensorflow.python.framework import config as tf_config

    from .experiment import client_arrays, initial_weights, load_data
    from .models import WeightsEvaluator
    from .partition import make_partition
    from .tff_fedavg import run_tff_fedavg, set_state_weights
    from .tff_jobs import job_config

    own, rest = split_job_params(params, {"NOISE_MULTIPLIERS": [0.0, 1.0], "DP_CLIP": 0.5})
    exp, cfg, _ = job_config(rest)
    zs = own["NOISE_MULTIPLIERS"]
    if not isinstance(zs, (list, tuple)) or not zs:
        raise ValueError(f"NOISE_MULTIPLIERS must be a non-empty list of numbers >= 0, got {zs!r}")
    zs = [_positive("each noise multiplier", z, allow_zero=True) for z in zs]
    clip = None if own["DP_CLIP"] is None else _positive("DP_CLIP", own["DP_CLIP"])
    m = cfg.clients_per_round or exp.num_clients
    data = load_data(exp)
    partition = make_partition(data.y_train, **exp.partition_kwargs())
    clients = client_arrays(exp, data, partition)
    w0 = initial_weights(exp, data, log=lambda msg: None)
    evaluate = WeightsEvaluator(exp.model, data.input_shape, data.num_classes, data.x_test, data.y_test)
    runs, done = [], 0
    was_deterministic = tf_config.is_op_determinism_enabled()
    if was_deterministic:
        tf_config.disable_op_determinism()
    try:
        for z in zs:
            start = time.perf_counter()
            process = build_dp_fedavg(exp.model, data.input_shape, data.num_classes, cfg.client_lr,
                                      cfg.server_lr, dp_model_aggregator(z, m, clip=clip))
            state = set_state_weights(process, process.initialize(), w0)
            built = time.perf_counter() - start

            def on_round(record, _state, z=z):
                nonlocal done
                done += 1
                if progress:
                    progress({"round": done, "rounds": cfg.rounds * len(zs), "noise_multiplier": z,
                              "test_accuracy": record.metrics["test_accuracy"]})

            state, history = run_tff_fedavg(process, state, clients, cfg, evaluate=evaluate,
                                            progress=False, on_round=on_round)
            runs.append({"noise_multiplier": z, "build_seconds": built,
                         "round_seconds": [r.seconds for r in history],
                         "test_accuracy": [r.metrics["test_accuracy"] for r in history],
                         "train_loss": [r.metrics["train_loss"] for r in history]})
    finally:
        if was_deterministic:
            tf_config.enable_op_determinism()
    return {"runs": runs, "num_clients": exp.num_clients, "clients_per_round": int(m),
            "rounds": cfg.rounds, "clip": clip, "client_sizes": clients.sizes().tolist()}
