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
========================  =========  ==================================================

    result = run_job("data_utils.jobs:tff_fedavg_job", {"NUM_CLIENTS": 10, "ROUNDS": 5})
"""
from __future__ import annotations

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
from .workers import use_local_worker


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
    default simulation runtime first and records what happens; then runs the computation in
    TFF's *test* runtime (``tff.backends.test``), which replaces each secure-sum intrinsic with
    an ordinary sum of the same quantized integers: the arithmetic of secure aggregation, not its
    cryptography. The default runtime is restored afterwards."""
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
    try:
        tff.backends.test.set_sync_test_cpp_execution_context()
        out["test_runtime_sum"] = np.asarray(secure_total(values))
    finally:
        use_local_worker()  # back to the course's worker (data_utils.workers)
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
