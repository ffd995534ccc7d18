"""Every entry point that runs TFF work from plain parameters, in this process or in the
Python 3.11 side environment (:mod:`data_utils.sidecar`): parameters in as JSON, results out as
JSON values and NumPy arrays. Each job starts from the same :func:`setup` (parameters checked,
data, partition, clients, initial weights), so the jobs cannot disagree on what an experiment is.

========================  =========  ==================================================
job                       notebook   what it runs
========================  =========  ==================================================
:func:`tff_demo_job`      00         TFF's hello world and a few tiny FedAvg rounds
:func:`tff_fedavg_job`    04, 05     TFF FedAvg on the course's experiment
:func:`tff_secure_sum_job` 06        TFF's secure-sum aggregator on given vectors
:func:`dp_fedavg_job`     06         DP-FedAvg, once per noise multiplier
:func:`fedavg_under_attack_job` 07   FedAvg with failing or malicious clients
:func:`remedies_tff_job`  08         TFF's FedProx and server optimizers against the hand-written ones
:func:`fedcore_job`       09         the Federated Core lesson and TFF's compression
========================  =========  ==================================================

    result = run_job("data_utils.jobs:tff_fedavg_job", {"NUM_CLIENTS": 10, "ROUNDS": 5})
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from .clients import ClientArrays
from .datasets import ImageDataset
from .env import set_seed
from .experiment import (Experiment, client_arrays, get_partition, initial_weights, load_data,
                         parse_params)
from .fedavg import FedAvgConfig
from .partition import Partition, make_partition
from .validate import check_choice, check_int, check_known, check_list, check_positive
from .workers import remote_context, use_local_worker


@dataclass
class JobSetup:
    """What every job starts from: the checked parameters and the experiment's data."""
    exp: Experiment
    cfg: FedAvgConfig
    opts: dict
    data: ImageDataset
    partition: Partition
    clients: ClientArrays
    initial_weights: list

    def evaluator(self):
        """Test accuracy of a weight list on the experiment's test set."""
        from .models import WeightsEvaluator

        return WeightsEvaluator(self.exp.model, self.data.input_shape, self.data.num_classes,
                                self.data.x_test, self.data.y_test)


def setup(params: Mapping, own: Mapping | None = None, partition: str = "saved",
          log: Callable[[str], None] | None = None,
          check_own: Callable[[dict], None] | None = None) -> JobSetup:
    """Check ``params`` (:func:`~data_utils.experiment.parse_params`, with the job's ``own``
    parameters and their defaults; then ``check_own(opts)``, the job's own checks, before any
    data is loaded), seed everything, load the data and the initial weights.
    ``partition="saved"``: the course's saved partition when it matches (else recreated and
    saved, :func:`~data_utils.experiment.get_partition`); ``"fresh"``: made from the same seed
    and not saved (a job whose clients are not the course's, such as DP's population)."""
    check_choice("partition", partition, ("saved", "fresh"))
    exp, cfg, opts = parse_params(dict(params), own)
    if check_own is not None:
        check_own(opts)
    say = log or (lambda msg: None)
    set_seed(exp.seed)
    data = load_data(exp)
    part = get_partition(exp, data, log=say) if partition == "saved" else \
        make_partition(data.y_train, **exp.partition_kwargs())
    return JobSetup(exp, cfg, opts, data, part, client_arrays(exp, data, part),
                    [np.asarray(w) for w in initial_weights(exp, data, log=say)])


def tff_demo_job(params: dict, progress: Callable | None = None) -> dict:
    """TFF's hello world and a few tiny ``build_weighted_fed_avg`` rounds on real Fashion-MNIST.

    params: ``rounds`` (0-20, default 1; 0: only the hello world), ``num_clients`` (1-10,
    default 3), ``examples_per_client`` (10-600, default 50), ``seed`` (default 0).
    Returns versions, the greeting, the per-round history and the final weights."""
    allowed = {"rounds": (0, 20, 1), "num_clients": (1, 10, 3),
               "examples_per_client": (10, 600, 50), "seed": (0, 2**32 - 1, 0)}
    check_known("parameter(s)", params, allowed)
    values = {key: check_int(key, params.get(key, default), low, high)
              for key, (low, high, default) in allowed.items()}
    from .datasets import load_dataset
    from .models import WeightsEvaluator
    from .tff_fedavg import build_fedavg, import_tff, run_tff_fedavg, state_weights

    t0 = time.perf_counter()
    tff = import_tff()
    import tensorflow as tf

    greeting = tff.federated_computation(lambda: "Hello, federated world")()
    versions = {"python": platform.python_version(), "tensorflow": tf.__version__,
                "tensorflow_federated": tff.__version__, "greeting": greeting.decode()}
    if values["rounds"] == 0:
        return {**versions, "history": [], "weights": [],
                "seconds": {"import_and_data": time.perf_counter() - t0}}
    data = load_dataset("fashion_mnist")
    n = values["num_clients"] * values["examples_per_client"]
    rng = np.random.default_rng(values["seed"])
    pick = rng.permutation(len(data.x_train))[:n]
    clients = ClientArrays(data.x_train, data.y_train, np.array_split(pick, values["num_clients"]))
    set_seed(values["seed"])
    t1 = time.perf_counter()
    process = build_fedavg("cnn_small", data.input_shape, data.num_classes, client_lr=0.05)
    state = process.initialize()
    t2 = time.perf_counter()
    evaluate = WeightsEvaluator("cnn_small", data.input_shape, data.num_classes,
                                data.x_test[:500], data.y_test[:500])
    cfg = FedAvgConfig(rounds=values["rounds"], client_lr=0.05, seed=values["seed"])

    def on_round(record, _state):
        if progress:
            progress({"round": record.round, "rounds": cfg.rounds, **record.metrics})

    state, history = run_tff_fedavg(process, state, clients, cfg, evaluate=evaluate,
                                    progress=False, on_round=on_round)
    return {
        **versions,
        "history": [{"round": h.round, "seconds": h.seconds, **h.metrics} for h in history],
        "weights": state_weights(process, state),
        "seconds": {"import_and_data": t1 - t0, "build_and_initialize": t2 - t1,
                    "rounds": time.perf_counter() - t2},
    }


def tff_fedavg_job(params: dict, progress: Callable[[dict], None] | None = None, *,
                   process=None, log: Callable[[str], None] | None = None) -> dict:
    """Train FedAvg with TFF on the experiment given by ``params`` and return what notebook 04
    shows: per-round history, final weights, timings, federated evaluation, type signatures.
    Notebook 04 trains with its own cells (tagged ``tff-lesson``) when TFF is in its process and
    with this job (in the side environment) when it is not; ``tests/test_tff.py`` checks that the
    two give the same weights and accuracy round by round.

    ``params``: plain JSON, the notebook's parameter names (experiment parameters such as
    NUM_CLIENTS, PARTITION, SEED, FedAvg's in
    :data:`~data_utils.experiment.FEDAVG_PARAMS` and :data:`~data_utils.tff_fedavg.JOB_OPTIONS`). ``progress`` is called
    after every round with that round's row (plus ``"rounds"``, the total). ``process``: an
    already built process from :func:`build_process` (saves building it twice in-process).
    The result holds only JSON values and NumPy arrays."""
    from .tff_fedavg import (JOB_OPTIONS, build_process, compare_data_paths, federated_evaluation, import_tff,
                             run_tff_fedavg, set_state_weights, state_weights, tensorboard_round,
                             tensorboard_writer)

    start = time.perf_counter()
    messages: list[str] = []

    def say(text: str) -> None:
        messages.append(text)
        if log:
            log(text)

    job = setup(params, JOB_OPTIONS, log=say)
    exp, cfg, opts, data, partition, clients, w0 = (job.exp, job.cfg, job.opts, job.data, job.partition,
                                                    job.clients, job.initial_weights)
    tff = import_tff()
    import tensorflow as tf

    t = time.perf_counter()
    if process is None:
        process = build_process(params)
    build_seconds = time.perf_counter() - t
    t = time.perf_counter()
    state = set_state_weights(process, process.initialize(), w0)
    initialize_seconds = time.perf_counter() - t

    evaluator = job.evaluator()
    writer = tensorboard_writer(opts["TENSORBOARD_DIR"])

    def on_round(record, _state):
        row = record.as_dict()
        tensorboard_round(writer, row)
        if progress:
            progress(dict(row, rounds=cfg.rounds))

    state, history = run_tff_fedavg(process, state, clients, cfg, evaluate=evaluator,
                                    progress=False, on_round=on_round)
    final = state_weights(process, state)
    if writer is not None:
        writer.close()

    fed_eval, fed_eval_seconds = None, 0.0
    test_clients = client_arrays(exp, data, partition, split="test")
    if opts["FED_EVAL"] and any(len(i) for i in test_clients.indices):
        t = time.perf_counter()
        fed_eval = federated_evaluation(exp.model, data.input_shape, data.num_classes, final,
                                        [test_clients[c] for c in range(len(test_clients))],
                                        opts["EVAL_BATCH_SIZE"])
        fed_eval_seconds = time.perf_counter() - t
    elif opts["FED_EVAL"]:
        say("federated evaluation skipped: the clients have no local test split (LOCAL_TEST_FRACTION=0)")

    round_seconds = [float(r.seconds) for r in history]
    data_paths = compare_data_paths(process, state, clients, cfg) if opts["COMPARE_DATA_PATHS"] and history else None
    return {
        "params": {k: v for k, v in params.items()},
        "experiment": exp.as_dict(),
        "history": [r.as_dict() for r in history],
        "initial_weights": [np.asarray(w) for w in w0],
        "final_weights": [np.asarray(w) for w in final],
        "final_test_accuracy": float(history[-1].metrics["test_accuracy"]) if history else
        float(evaluator(final)["test_accuracy"]),
        "fed_eval": fed_eval,
        "data_paths": data_paths,
        "timings": {"build_seconds": build_seconds, "initialize_seconds": initialize_seconds,
                    "round_seconds": round_seconds,
                    "median_round_seconds": float(np.median(round_seconds)) if round_seconds else None,
                    "fed_eval_seconds": fed_eval_seconds,
                    "total_seconds": time.perf_counter() - start},
        "type_signatures": {"initialize": str(process.initialize.type_signature),
                            "next": str(process.next.type_signature)},
        "state_fields": list(getattr(state, "_fields", [])),
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "tensorflow_federated": tff.__version__, "numpy": np.__version__},
        "messages": messages,
    }


def tff_secure_sum_job(params: dict) -> dict:
    """Sum the clients' float vectors with TFF's ``tff.aggregators.SecureSumFactory`` (values
    clipped to ``[-BOUND, BOUND]``, quantized, summed with ``tff.federated_secure_sum_bitwidth``).

    ``params``: ``{"VALUES": [one 1-D float array per client], "BOUND": float}``. Tries TFF's
    default simulation runtime first and records what happens; then runs the computation as
    TFF's *test* runtime (``tff.backends.test``) compiles it, each secure-sum intrinsic replaced
    with an ordinary sum of the same quantized integers (the arithmetic of secure aggregation, not
    its cryptography), on the course's own worker; the default context stays as it was."""
    import gc
    import logging

    from .tff_fedavg import import_tff

    values = [np.asarray(v, dtype=np.float32) for v in params.get("VALUES", [])]
    if len(values) < 2 or any(v.ndim != 1 or v.shape != values[0].shape for v in values):
        raise ValueError("VALUES must hold at least two 1-D arrays of one length (one per client)")
    bound = check_positive("BOUND", params.get("BOUND"))
    tff = import_tff()
    # TF logs a page about unused assert ops when a failed run's graph is garbage-collected
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.CRITICAL)
    try:
        return _secure_sum_in_tff(tff, values, float(bound))
    finally:
        gc.collect()
        tf_logger.setLevel(level)


def _secure_sum_in_tff(tff, values: list, bound: float) -> dict:
    aggregator = tff.aggregators.SecureSumFactory(bound).create(
        tff.TensorType(np.float32, values[0].shape))

    @tff.federated_computation(tff.FederatedType(tff.TensorType(np.float32, values[0].shape), tff.CLIENTS))
    def secure_total(client_values):
        return aggregator.next(aggregator.initialize(), client_values).result

    out = {"bound": bound, "plain_sum": np.sum(values, axis=0, dtype=np.float64),
           "type_signature": str(secure_total.type_signature)}
    try:
        out["default_runtime_sum"] = np.asarray(secure_total(values))
        out["default_runtime_error"] = None
    except Exception as err:  # noqa: BLE001 - report what the runtime says, whatever it is
        details = getattr(err, "details", None)
        text = details() if callable(details) else str(err)
        out["default_runtime_error"] = f"{type(err).__name__}: {text.strip().splitlines()[0][:300]}"
    # TFF's test runtime's compilation on the course's own worker (data_utils.workers), for this
    # one call: tff.backends.test's context would start a second worker that outlives a crash
    worker = use_local_worker()
    with tff.framework.get_context_stack().install(
            remote_context(worker.address, worker, plain_secure_sums=True)):
        out["test_runtime_sum"] = np.asarray(secure_total(values))
    return out


def dp_fedavg_job(params: dict, progress=None) -> dict:
    """Train DP-FedAvg with TFF once per noise multiplier and sampling seed, from the same
    initial weights on the same population; return each run's test accuracy by round and its
    timings.

    ``params``: the experiment's (``NUM_CLIENTS`` is the population DP samples from), the FedAvg
    settings of :func:`data_utils.experiment.parse_params` (``ROUNDS``, ``CLIENTS_PER_ROUND``,
    ``CLIENT_LR``, ...), ``NOISE_MULTIPLIERS`` (a list), ``DP_CLIP`` (None: adaptive clip) and
    ``RUN_SEEDS`` (a list; default ``[SEED]``): each run's seed of client sampling
    (:func:`data_utils.clients.sample_clients`) and of the clients' batch order. The clients are
    partitioned afresh from ``SEED`` and not saved: DP's population (hundreds of small clients) is
    not the course's partition, which notebook 01 saved for the other notebooks.

    TFF's Gaussian noise op (TF Privacy's ``GaussianSumQuery``, ``tf.random_normal_initializer``
    without a seed) takes no seed, and TensorFlow's op determinism refuses unseeded random ops,
    so determinism is switched off while the job runs: the noise differs from run to run, as DP
    noise must (a noise seed the server could know would void the guarantee).
    Runs in this process or, from Colab's default runtime, through :mod:`data_utils.sidecar`."""
    import dataclasses

    from tensorflow.python.framework import config as tf_config

    from .privacy import build_dp_fedavg, dp_model_aggregator
    from .tff_fedavg import run_tff_fedavg, set_state_weights

    def check_own(opts):
        check_list("NOISE_MULTIPLIERS", opts["NOISE_MULTIPLIERS"],
                   lambda name, z: check_positive(name, z, allow_zero=True))
        check_positive("DP_CLIP", opts["DP_CLIP"], allow_none=True)
        if opts["RUN_SEEDS"] is not None:
            check_list("RUN_SEEDS", opts["RUN_SEEDS"], lambda name, v: check_int(name, v, low=0))

    job = setup(params, {"NOISE_MULTIPLIERS": [0.0, 1.0], "DP_CLIP": 0.5, "RUN_SEEDS": None},
                partition="fresh", check_own=check_own)
    exp, cfg, data, clients, w0 = job.exp, job.cfg, job.data, job.clients, job.initial_weights
    zs = [float(z) for z in job.opts["NOISE_MULTIPLIERS"]]
    seeds = [int(v) for v in (job.opts["RUN_SEEDS"] or [exp.seed])]
    clip = None if job.opts["DP_CLIP"] is None else float(job.opts["DP_CLIP"])
    m = cfg.clients_per_round or exp.num_clients
    evaluate = job.evaluator()
    runs, done = [], 0
    was_deterministic = tf_config.is_op_determinism_enabled()
    if was_deterministic:
        tf_config.disable_op_determinism()
    try:
        for z in zs:
            start = time.perf_counter()
            process = build_dp_fedavg(exp.model, data.input_shape, data.num_classes, cfg.client_lr,
                                      cfg.server_lr, dp_model_aggregator(z, m, clip=clip))
            built = time.perf_counter() - start
            for seed in seeds:
                state = set_state_weights(process, process.initialize(), w0)

                def on_round(record, _state, z=z, seed=seed):
                    nonlocal done
                    done += 1
                    if progress:
                        progress({"round": done, "rounds": cfg.rounds * len(zs) * len(seeds),
                                  "noise_multiplier": z, "seed": seed,
                                  "test_accuracy": record.metrics["test_accuracy"]})

                state, history = run_tff_fedavg(process, state, clients, dataclasses.replace(cfg, seed=seed),
                                                evaluate=evaluate, progress=False, on_round=on_round)
                runs.append({"noise_multiplier": z, "seed": seed, "build_seconds": built,
                             "round_seconds": [r.seconds for r in history],
                             "test_accuracy": [r.metrics["test_accuracy"] for r in history],
                             "train_loss": [r.metrics["train_loss"] for r in history]})
    finally:
        if was_deterministic:
            tf_config.enable_op_determinism()
    return {"runs": runs, "num_clients": exp.num_clients, "clients_per_round": int(m),
            "rounds": cfg.rounds, "clip": clip, "seeds": seeds, "client_sizes": clients.sizes().tolist()}


def fedavg_under_attack_job(params: dict, progress=None, aggregate: Callable | None = None,
                             trainer=None) -> dict:
    """One FedAvg run of the robustness notebook, from plain parameters: the experiment's and
    the FedAvg settings of :func:`data_utils.experiment.parse_params`, plus

    - ``AGGREGATOR``: ``"mean"``, ``"median"``, ``"trimmed_mean"``, ``"norm_clip"``,
      ``"norm_zero"`` (:mod:`data_utils.robust`, NumPy) or ``"tff_robust"``
      (``tff.learning.robust_aggregator()`` run by TFF on the loop's updates);
    - ``AGGREGATOR_OPTIONS`` (dict), ``MALICIOUS`` (client ids), ``ATTACK``, ``BOOST``,
      ``DROP_FRACTION``, ``WITHIN_NORM``, ``BACKDOOR_TARGET``, ``POISON_FRACTION`` as in
      :class:`data_utils.attacks.ClientBehaviour`; ``MEASURE_ASR``: also score the backdoor's
      attack success rate (always done when ``ATTACK`` is ``"backdoor"``);
      ``EVERY_ROUND``: score every round (default) or only the last one (False: faster).

    In this process only: ``aggregate``, an ``aggregate(deltas, counts)`` callable used instead
    of the one ``AGGREGATOR`` names (notebook 07 passes its own hand-written aggregators), and
    ``trainer``, a :func:`~data_utils.training.client_trainer` to reuse across runs (it must
    match the model and client learning rate; TFF's aggregator always gets a new one).
    Returns the test accuracy (and attack success rate) by round, the examples used per round,
    seconds, what each client did, and TFF's measurements (``tff_robust``). Runs in this
    process, or in the side environment through :mod:`data_utils.sidecar` when TFF is needed
    and missing here."""
    from .attacks import ATTACKS, ClientBehaviour, stamp_trigger
    from .fedavg import run_fedavg
    from .models import WeightsEvaluator
    from .robust import AGGREGATORS, TffAggregatorHook, make_aggregator
    from .training import client_trainer

    own_defaults = {"AGGREGATOR": "mean", "AGGREGATOR_OPTIONS": {}, "MALICIOUS": [], "ATTACK": None,
                    "BOOST": 10.0, "DROP_FRACTION": 0.0, "WITHIN_NORM": False, "BACKDOOR_TARGET": 0,
                    "POISON_FRACTION": 0.5, "MEASURE_ASR": False, "EVERY_ROUND": True}

    def check_own(opts):
        check_choice("AGGREGATOR", opts["AGGREGATOR"], AGGREGATORS + ("tff_robust",))
        check_choice("ATTACK", opts["ATTACK"], ATTACKS, allow_none=True)
    job = setup(params, own_defaults, check_own=check_own)
    exp, cfg, own = job.exp, job.cfg, job.opts
    name = own["AGGREGATOR"]
    data, clients, w0 = job.data, job.clients, job.initial_weights
    hook = None
    if aggregate is not None:
        if not callable(aggregate):
            raise ValueError(f"aggregate must be a callable aggregate(deltas, counts), got {aggregate!r}")
    elif name == "tff_robust":
        from .tff_fedavg import import_tff

        hook = TffAggregatorHook(import_tff().learning.robust_aggregator(**own["AGGREGATOR_OPTIONS"]), w0)
        aggregate = hook
    elif name != "mean" or own["AGGREGATOR_OPTIONS"]:
        aggregate = make_aggregator(name, **own["AGGREGATOR_OPTIONS"])
    if trainer is None or hook is not None:  # a TFF build invalidates Keras models made before it
        trainer = client_trainer(exp.model, data.input_shape, data.num_classes, cfg.client_lr,
                                 cfg.client_momentum)
    elif tuple(trainer.spec[:5]) != (exp.model, tuple(data.input_shape), data.num_classes, "sgd",
                                     float(cfg.client_lr)) or trainer.spec[5] != cfg.client_momentum:
        raise ValueError(f"trainer was built for {trainer.spec}, this run needs model {exp.model!r} with "
                         f"client learning rate {cfg.client_lr} and momentum {cfg.client_momentum}")
    behaviour = ClientBehaviour(trainer, clients, cfg, data.num_classes, malicious=own["MALICIOUS"],
                                attack=own["ATTACK"], boost=float(own["BOOST"]),
                                drop_fraction=float(own["DROP_FRACTION"]), within_norm=own["WITHIN_NORM"],
                                target=own["BACKDOOR_TARGET"], poison_fraction=float(own["POISON_FRACTION"]))
    evaluate = job.evaluator()
    backdoor = None
    if own["MEASURE_ASR"] or own["ATTACK"] == "backdoor":  # triggered test images not of the target class
        keep = data.y_test != behaviour.target
        backdoor = WeightsEvaluator(exp.model, data.input_shape, data.num_classes,
                                    stamp_trigger(data.x_test[keep]),
                                    np.full(int(keep.sum()), behaviour.target), key="attack_success_rate")

    def scored(weights):
        if not own["EVERY_ROUND"] and len(rounds_done) < cfg.rounds - 1:
            rounds_done.append(None)
            return {}
        metrics = evaluate(weights)
        if backdoor is not None:
            metrics.update(backdoor(weights))
            asr.append(metrics["attack_success_rate"])
        if progress:
            progress({"round": len(scores) + 1, "rounds": cfg.rounds, **metrics})
        scores.append(metrics["test_accuracy"])
        return metrics

    scores: list[float] = []
    asr: list[float] = []
    rounds_done: list = []
    _, history = run_fedavg(trainer, w0, clients, cfg, evaluate=scored, progress=False,
                            aggregate=aggregate, client_update=behaviour)
    return {"aggregator": name, "test_accuracy": scores, "attack_success_rate": asr,
            "examples": [r.num_examples for r in history],
            "round_seconds": [r.seconds for r in history],
            "events": behaviour.log,
            "tff_measurements": hook.measurements if hook is not None else []}


def remedies_tff_job(params: dict, progress=None) -> dict:
    """Notebook 08's TFF check: each of ``TFF_ALGORITHMS`` trained with TFF and by hand
    (:func:`data_utils.remedies.run_remedy`) from the same initial weights on the same clients and
    batches, test accuracy every round. ``"fedprox"`` is
    ``tff.learning.algorithms.build_weighted_fed_prox(proximal_strength=MU)``; ``"fedavgm"``,
    ``"fedadam"``, ``"fedyogi"`` are ``build_weighted_fed_avg`` with
    ``server_optimizer_fn=tff.learning.optimizers.build_sgdm(momentum=SERVER_MOMENTUM)``,
    ``build_adam`` or ``build_yogi`` (``BETA1``, ``BETA2``, ``TAU`` as epsilon; ``SERVER_LR``
    None: :func:`~data_utils.remedies.server_learning_rate`). FedProx is also run by hand with
    the proximal gradient's sign flipped (``-MU``): TFF 0.87's proximal client work adds
    ``MU * (w_global - w)`` to each gradient (``proximal_client_work.py``), and the job measures
    which hand-written run TFF's weights are closer to. TFF runs first, then the hand-written
    runs (building a TFF computation invalidates Keras models made before it)."""
    from .remedies import check_remedy_options, run_remedy, server_learning_rate
    from .tff_fedavg import client_loop, import_tff, keras_model_fn, element_spec, run_tff_fedavg, set_state_weights, state_weights
    from .training import client_trainer

    own = {"TFF_ALGORITHMS": ["fedprox", "fedadam"], "MU": 0.01, "ADAPTIVE_SERVER_LR": None,
           "SERVER_MOMENTUM": 0.9, "BETA1": 0.9, "BETA2": 0.99, "TAU": 1e-3}

    def check_own(opts):
        check_list("TFF_ALGORITHMS", opts["TFF_ALGORITHMS"],
                   lambda name, v: check_choice(name, v, ("fedprox", "fedavgm", "fedadam", "fedyogi")))
        check_remedy_options(opts["MU"], opts["ADAPTIVE_SERVER_LR"], opts["SERVER_MOMENTUM"], opts["BETA1"],
                             opts["BETA2"], opts["TAU"])

    job = setup(params, own, check_own=check_own)
    exp, cfg, opts, data, clients, w0 = job.exp, job.cfg, job.opts, job.data, job.clients, job.initial_weights
    if cfg.client_lr_schedule != "constant":
        raise ValueError("CLIENT_LR_SCHEDULE must be 'constant' for this job (TFF's FedProx keeps its client "
                         f"learning rate outside the hyperparameters run_tff_fedavg sets), got {cfg.client_lr_schedule!r}")
    tff = import_tff()
    algos = list(dict.fromkeys(opts["TFF_ALGORITHMS"]))
    kw = dict(mu=float(opts["MU"]), server_momentum=float(opts["SERVER_MOMENTUM"]), beta1=float(opts["BETA1"]),
              beta2=float(opts["BETA2"]), tau=float(opts["TAU"]))
    lrs = {a: server_learning_rate(a, cfg, opts["ADAPTIVE_SERVER_LR"] if a in ("fedadam", "fedyogi") else None)
           for a in algos}
    model_fn = keras_model_fn(exp.model, data.input_shape, data.num_classes, element_spec(data.input_shape))
    client_opt = tff.learning.optimizers.build_sgdm(learning_rate=cfg.client_lr,
                                                    momentum=cfg.client_momentum or None)
    servers = {"fedprox": lambda lr: tff.learning.optimizers.build_sgdm(learning_rate=lr),
               "fedavgm": lambda lr: tff.learning.optimizers.build_sgdm(learning_rate=lr, momentum=kw["server_momentum"]),
               "fedadam": lambda lr: tff.learning.optimizers.build_adam(lr, beta_1=kw["beta1"], beta_2=kw["beta2"],
                                                                        epsilon=kw["tau"]),
               "fedyogi": lambda lr: tff.learning.optimizers.build_yogi(lr, beta_1=kw["beta1"], beta_2=kw["beta2"],
                                                                        epsilon=kw["tau"])}
    evaluate = job.evaluator()
    runs, done, total = {}, 0, cfg.rounds * len(algos)
    for algo in algos:
        start = time.perf_counter()
        if algo == "fedprox":
            process = tff.learning.algorithms.build_weighted_fed_prox(
                model_fn, proximal_strength=kw["mu"], client_optimizer_fn=client_opt,
                server_optimizer_fn=servers[algo](lrs[algo]), loop_implementation=client_loop())
        else:
            process = tff.learning.algorithms.build_weighted_fed_avg(
                model_fn, client_optimizer_fn=client_opt, server_optimizer_fn=servers[algo](lrs[algo]),
                loop_implementation=client_loop())
        state = set_state_weights(process, process.initialize(), w0)

        def on_round(record, _state, algo=algo):
            nonlocal done
            done += 1
            if progress:
                progress({"round": done, "rounds": total, "algorithm": algo,
                          "test_accuracy": record.metrics["test_accuracy"]})

        state, history = run_tff_fedavg(process, state, clients, cfg, evaluate=evaluate, progress=False,
                                        on_round=on_round)
        runs[algo] = {"tff": [r.metrics["test_accuracy"] for r in history], "server_lr": lrs[algo],
                      "tff_weights": state_weights(process, state), "tff_seconds": time.perf_counter() - start,
                      "clients": [r.clients for r in history]}
    trainer = client_trainer(exp.model, data.input_shape, data.num_classes, cfg.client_lr, cfg.client_momentum)
    evaluate = job.evaluator()
    for algo, run in runs.items():
        start = time.perf_counter()
        weights, history = run_remedy(algo, trainer, w0, clients, cfg, server_lr=lrs[algo], evaluate=evaluate,
                                      progress=False, **kw)
        run.update(manual=[r.metrics["test_accuracy"] for r in history], manual_weights=weights,
                   manual_seconds=time.perf_counter() - start, manual_clients=[r.clients for r in history])
        run["max_accuracy_diff"] = float(np.max(np.abs(np.subtract(run["tff"], run["manual"])))) if history else 0.0
        run["weight_distance"] = _distance(run["tff_weights"], weights)
        if algo == "fedprox":  # the proximal gradient with the other sign
            flipped, _ = _run_flipped_fedprox(trainer, w0, clients, cfg, lrs[algo], kw)
            run["weight_distance_flipped_sign"] = _distance(run["tff_weights"], flipped)
            run["weight_distance_fedavg"] = _distance(run["tff_weights"], run_remedy(
                "fedavg", trainer, w0, clients, cfg, progress=False)[0])
    return {"runs": runs, "algorithms": algos, "rounds": cfg.rounds, "mu": kw["mu"],
            "versions": {"tensorflow_federated": tff.__version__, "python": platform.python_version()}}


def _distance(a, b) -> float:
    return float(np.sqrt(sum(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)
                             for x, y in zip(a, b))))


def _run_flipped_fedprox(trainer, w0, clients, cfg, server_lr, kw):
    """Hand-written FedProx whose proximal gradient is mu (w_global - w): TFF 0.87's sign."""
    from .fedavg import RoundStep, run_rounds
    from .remedies import Remedy

    remedy = Remedy("fedprox", trainer, clients, cfg, mu=0.0, server_lr=server_lr)
    remedy.mu = -kw["mu"]  # run_remedy refuses a negative mu; this run exists only for the comparison
    return run_rounds([np.array(w) for w in w0], len(clients), cfg,
                      lambda w, s, r: RoundStep(*remedy.round(w, s, r)), progress=False)


class _DropMessage:
    """A logging filter that drops records containing ``text``."""
    def __init__(self, text: str):
        self.text = text

    def filter(self, record) -> bool:
        return self.text not in record.getMessage()


# Notebook 09's own parameters of the Federated Core job (besides the experiment's and FedAvg's).
FEDCORE_OPTIONS = {"PROXIMAL_STRENGTH": 0.5, "AGGREGATOR_BITS": 4, "TFF_BITS": [8, 2],
                   "TFF_ENCODERS": ["uniform", "hadamard"], "COMPRESSION_AGGREGATOR": True}


def fedcore_job(params: dict, progress: Callable[[dict], None] | None = None, *,
                lesson: Mapping[str, Callable] | None = None) -> dict:
    """Notebook 09's TFF work: the small federated computations; FedAvg written from the federated
    operators next to ``build_weighted_fed_avg`` and, with a proximal term, next to
    ``build_weighted_fed_prox`` (both signs of the term); the quantizing aggregation factory in
    ``build_weighted_fed_avg(model_aggregator=...)``; TFF's own compression (``EncodedSumFactory``
    with uniform and Hadamard quantization, ``compression_aggregator``) on the hand-written FedAvg
    loop. Every run starts from the experiment's initial weights on the same clients and batches
    (client learning rate constant).

    ``params``: the experiment's and FedAvg's (:func:`~data_utils.experiment.parse_params`) and
    :data:`FEDCORE_OPTIONS`. ``lesson``: in this process only, the notebook's own definitions
    (``federated_basics``, ``build_fedavg_from_primitives``, ``quantized_sum_factory``) used
    instead of :mod:`data_utils.fedcore`'s and :mod:`data_utils.compression`'s."""
    import logging

    from tensorflow.python.framework import config as tf_config

    from . import compression, fedcore
    from .fedavg import run_fedavg
    from .robust import TffAggregatorHook
    from .tff_fedavg import (build_fedavg, client_loop, element_spec, import_tff, keras_model_fn, run_tff_fedavg,
                             set_state_weights, state_weights)
    from .training import client_trainer

    def check_own(opts):
        check_positive("PROXIMAL_STRENGTH", opts["PROXIMAL_STRENGTH"])
        compression.check_bits(opts["AGGREGATOR_BITS"])
        check_list("TFF_BITS", opts["TFF_BITS"], lambda name, b: check_int(name, b, 1, 16), allow_empty=True)
        check_list("TFF_ENCODERS", opts["TFF_ENCODERS"],
                   lambda name, k: check_choice(name, k, fedcore.TFF_ENCODERS), allow_empty=True)

    job = setup(dict(params, CLIENT_LR_SCHEDULE="constant"), FEDCORE_OPTIONS, check_own=check_own)
    exp, cfg, opts, data, clients, w0 = job.exp, job.cfg, job.opts, job.data, job.clients, job.initial_weights
    own = {"federated_basics": fedcore.federated_basics,
           "build_fedavg_from_primitives": fedcore.build_fedavg_from_primitives,
           "quantized_sum_factory": compression.quantized_sum_factory, **(lesson or {})}
    tff = import_tff()
    import tensorflow as tf

    evaluate = job.evaluator()
    shape = (exp.model, data.input_shape, data.num_classes)
    runs = [(kind, b) for kind in opts["TFF_ENCODERS"] for b in opts["TFF_BITS"]]
    runs += [("compression_aggregator", 8)] if opts["COMPRESSION_AGGREGATOR"] else []
    done, total, seconds = [0], cfg.rounds * (6 + len(runs)), {}

    def tick(part):
        def on_round(record, _state=None):
            done[0] += 1
            if progress:
                progress({"round": done[0], "rounds": total, "part": part,
                          "test_accuracy": record.metrics.get("test_accuracy") if record else None})
        return on_round

    def accuracy(history):
        return [float(r.metrics["test_accuracy"]) for r in history]

    def gap(a, b):
        return max(float(np.abs(x - y).max()) for x, y in zip(a, b))

    def distance(a, b):
        return float(np.sqrt(sum(np.sum((np.asarray(x, np.float64) - y) ** 2) for x, y in zip(a, b))))

    out = {"versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                        "tensorflow_federated": tff.__version__}, "rounds": cfg.rounds}
    t = time.perf_counter()
    out["basics"] = {k: list(v) for k, v in own["federated_basics"]().items()}
    seconds["basics"] = time.perf_counter() - t

    # 1. FedAvg from the federated operators, next to build_weighted_fed_avg (same batches)
    t = time.perf_counter()
    ours = own["build_fedavg_from_primitives"](*shape, cfg.client_lr)
    theirs = build_fedavg(*shape, cfg.client_lr, cfg.server_lr)
    w_ours, h_ours = fedcore.run_primitives(ours, w0, clients, cfg, evaluate, tick("FedAvg, from primitives"))
    state, h_theirs = run_tff_fedavg(theirs, set_state_weights(theirs, theirs.initialize(), w0), clients, cfg,
                                     evaluate=evaluate, progress=False, on_round=tick("FedAvg, TFF"),
                                     data_path="datasets")
    w_theirs = state_weights(theirs, state)
    out["fedavg"] = {"primitives": accuracy(h_ours), "tff": accuracy(h_theirs),
                     "primitives_loss": [r.metrics["train_loss"] for r in h_ours],
                     "tff_loss": [r.metrics["train_loss"] for r in h_theirs],
                     "max_weight_diff": gap(w_ours, w_theirs),
                     "relative_weight_diff": distance(w_ours, w_theirs) / distance(w_theirs, w0),
                     "next_signature": str(ours.next.type_signature),
                     "tff_next_signature": str(theirs.next.type_signature),
                     "initial_accuracy": float(evaluate(w0)["test_accuracy"]),
                     "final_weights": [np.asarray(w) for w in w_ours]}
    seconds["fedavg"] = time.perf_counter() - t

    # 2. the proximal term, both signs, next to build_weighted_fed_prox
    t = time.perf_counter()
    mu = float(opts["PROXIMAL_STRENGTH"])
    prox = tff.learning.algorithms.build_weighted_fed_prox(
        keras_model_fn(*shape, element_spec(data.input_shape)), proximal_strength=mu,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=cfg.client_lr),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=cfg.server_lr),
        loop_implementation=client_loop())
    state, h_prox = run_tff_fedavg(prox, set_state_weights(prox, prox.initialize(), w0), clients, cfg,
                                   evaluate=evaluate, progress=False, on_round=tick("FedProx, TFF"),
                                   data_path="datasets")
    w_prox = state_weights(prox, state)
    out["fedprox"] = {"mu": mu, "tff": accuracy(h_prox), "tff_distance_from_fedavg": distance(w_prox, w_ours)}
    for name, strength in (("paper_sign", mu), ("flipped_sign", -mu)):
        process = own["build_fedavg_from_primitives"](*shape, cfg.client_lr, proximal_strength=strength)
        w, h = fedcore.run_primitives(process, w0, clients, cfg, evaluate, tick(f"FedProx, {name}"))
        out["fedprox"][name] = {"accuracy": accuracy(h), "max_weight_diff": gap(w, w_prox),
                                "relative_weight_diff": distance(w, w_prox) / distance(w_prox, w0),
                                "distance_from_fedavg": distance(w, w_ours)}
    seconds["fedprox"] = time.perf_counter() - t

    # 3. the quantizing aggregation factory inside build_weighted_fed_avg
    t = time.perf_counter()
    bits = int(opts["AGGREGATOR_BITS"])
    quantized = build_fedavg(*shape, cfg.client_lr, cfg.server_lr,
                             model_aggregator=tff.aggregators.MeanFactory(own["quantized_sum_factory"](bits)))
    _, h_q = run_tff_fedavg(quantized, set_state_weights(quantized, quantized.initialize(), w0), clients, cfg,
                            evaluate=evaluate, progress=False, on_round=tick(f"FedAvg, {bits}-bit factory"),
                            data_path="datasets")
    value_type = tff.types.to_type([(np.float32, w.shape) for w in w0])
    out["aggregator"] = {"bits": bits, "accuracy": accuracy(h_q),
                         "next_signature": str(own["quantized_sum_factory"](bits).create(value_type).next.type_signature),
                         "bytes": compression.encoded_bytes([w.shape for w in w0], bits)}
    seconds["aggregator"] = time.perf_counter() - t

    # 4. TFF's own compression aggregating the hand-written FedAvg loop's updates. TFF's encoders
    # draw their rounding (and rotation) noise with unseeded random ops, which TensorFlow's op
    # determinism refuses: it is switched off for this part (that noise is not reproducible).
    t = time.perf_counter()
    was_deterministic = tf_config.is_op_determinism_enabled()
    if was_deterministic:
        tf_config.disable_op_determinism()
    quiet = _DropMessage("temporarily allocate extra memory")   # TFF's bit packing logs this per tensor
    logging.getLogger().addFilter(quiet)
    rows, hooks = [], {}
    try:
        for kind, b in runs:   # TFF builds first: in Keras 2 a TFF build invalidates Keras models made before it
            try:
                hooks[kind, b] = TffAggregatorHook(fedcore.tff_compression_factory(kind, b), w0)
            except Exception as err:  # noqa: BLE001 - say why TFF refused, in one line
                hooks[kind, b] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
        trainer = client_trainer(exp.model, data.input_shape, data.num_classes, cfg.client_lr)
        for (kind, b), hook in hooks.items():
            row = {"kind": kind, "bits": b, "bytes": fedcore.tff_encoded_bytes(kind, b, [w.shape for w in w0]),
                   "accuracy": None, "error": hook if isinstance(hook, str) else None}
            if row["error"] is None:
                try:
                    _, h = run_fedavg(trainer, w0, clients, cfg, evaluate=evaluate, progress=False, aggregate=hook)
                    row["accuracy"] = accuracy(h)
                except Exception as err:  # noqa: BLE001
                    row["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
            for _ in range(cfg.rounds):
                tick(f"TFF {kind}, {b} bits")(None)
            rows.append(row)
    finally:
        logging.getLogger().removeFilter(quiet)
        if was_deterministic:
            tf_config.enable_op_determinism()
    out["tff_compression"] = rows
    seconds["tff_compression"] = time.perf_counter() - t
    out["seconds"] = seconds
    out["float32_bytes"] = compression.encoded_bytes([w.shape for w in w0], 32)
    return out


def loopback_bytes() -> int | None:
    """Bytes the machine's loopback interface has carried so far (received; Linux's
    /proc/net/dev), None elsewhere. Counts every local connection, not only TFF's."""
    try:
        for line in open("/proc/net/dev", encoding="ascii"):
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[0])
    except OSError:
        return None
    return None


def tff_workers_job(params: dict, progress=None) -> dict:
    """Notebook 10, part 1: TFF's FedAvg (notebook 04's, clients' data read from files) with
    each round's clients split across several TFF workers (:func:`data_utils.workers.use_workers`,
    TFF's mergeable-computation context). Own parameters: ``WORKER_COUNTS`` (list: run once per
    count, on that many workers started on 127.0.0.1) or ``ADDRESSES`` (list of ``"host:port"``:
    run once on those workers, already running here or on other machines). Every run starts from
    the same state on the same clients. Returns per run: seconds per round, the global weights'
    largest difference from the first run's after each round, test accuracy after the last
    round, loopback bytes per round (this machine, everything local) and the model's size."""
    from . import workers
    from .models import weights_nbytes
    from .tff_fedavg import build_fedavg, run_tff_fedavg, set_state_weights

    def check_own(opts):
        check_list("WORKER_COUNTS", opts["WORKER_COUNTS"], lambda n, v: check_int(n, v, low=1, high=8))
        if opts["ADDRESSES"] is not None:
            workers.check_addresses(opts["ADDRESSES"])

    job = setup(params, {"WORKER_COUNTS": [1, 2], "ADDRESSES": None}, check_own=check_own)
    exp, cfg, own = job.exp, job.cfg, job.opts
    tell = progress or (lambda row: None)
    process = build_fedavg(exp.model, job.data.input_shape, job.data.num_classes, cfg.client_lr,
                           cfg.server_lr, client_momentum=cfg.client_momentum)
    workers.use_local_worker()
    state0 = set_state_weights(process, process.initialize(), job.initial_weights)
    evaluator = job.evaluator()
    settings = ([(len(own["ADDRESSES"]), list(own["ADDRESSES"]))] if own["ADDRESSES"] is not None
                else [(int(k), None) for k in own["WORKER_COUNTS"]])
    runs, reference = [], None
    for k, addresses in settings:
        started = [] if addresses is not None else workers.start_local_workers(k)
        weights_by_round: list = []
        try:
            workers.use_workers(addresses or [w.address for w in started])
            before = loopback_bytes()
            state, history = run_tff_fedavg(
                process, state0, job.clients, cfg, progress=False,
                on_round=lambda rec, s: weights_by_round.append(
                    [np.asarray(w) for w in process.get_model_weights(s).trainable]))
            after = loopback_bytes()
        finally:
            workers.use_local_worker()
            for w in started:
                w.stop()
        reference = reference or weights_by_round
        diffs = [max(float(np.max(np.abs(a - b))) for a, b in zip(mine, ref))
                 for mine, ref in zip(weights_by_round, reference)]
        seconds = [h.seconds for h in history]
        runs.append({"workers": k, "addresses": addresses or [w.address for w in started],
                     "seconds_per_round": seconds,
                     "median_seconds_per_round": float(np.median(seconds[1:] or seconds)),
                     "max_weight_diff_by_round": diffs,
                     "test_accuracy": float(evaluator(weights_by_round[-1])["test_accuracy"]),
                     "loopback_bytes_per_round": None if before is None or after is None
                     else (after - before) / len(history)})
        tell({"workers": k, "median_seconds_per_round": runs[-1]["median_seconds_per_round"]})
    return {"experiment": exp.as_dict(), "rounds": cfg.rounds, "runs": runs,
            "model_bytes": int(weights_nbytes(job.initial_weights)),
            "clients_per_round": int(len(history[0].clients)), "cpu_count": os.cpu_count()}
