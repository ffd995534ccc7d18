"""Notebook 04's TFF training as one function of plain parameters, so it can run in-process
(Python 3.11 stack) or in a Python 3.11 side environment driven from Colab's default runtime
(:mod:`data_utils.sidecar`): parameters in as JSON, results out as JSON values and NumPy arrays.

    result = tff_fedavg_job({"NUM_CLIENTS": 10, "ROUNDS": 5, "CLIENT_LR": 0.05}, progress=print)
    result["history"]        # one dict per round: train_loss, train_accuracy, test_accuracy, ...
    result["final_weights"]  # the global model's weights (Keras order), list of arrays

:func:`job_config` turns the same parameters into the :class:`~data_utils.experiment.Experiment`
and :class:`~data_utils.fedavg.FedAvgConfig` the manual loop uses, so both run the same rounds.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .experiment import Experiment

# Parameters of the job besides the experiment's (DATASET, NUM_CLIENTS, PARTITION, ALPHA, ...).
JOB_DEFAULTS: dict[str, Any] = {
    # notebook 04's workshop defaults
    "ROUNDS": 10,
    "CLIENTS_PER_ROUND": 2,      # None: every client, every round
    "LOCAL_EPOCHS": 5,
    "BATCH_SIZE": 20,            # None: one full batch per local epoch (FedSGD with LOCAL_EPOCHS=1)
    "CLIENT_LR": 0.1,
    "CLIENT_LR_SCHEDULE": "cosine",  # or "constant"
    "CLIENT_MOMENTUM": 0.0,      # client SGD momentum (0: plain SGD)
    "SERVER_LR": 1.0,
    "SMOKE": False,
    "FED_EVAL": True,            # federated evaluation on the clients' local test splits
    "EVAL_BATCH_SIZE": 500,
    "TENSORBOARD_DIR": None,     # write TensorBoard event files here (relative: to the repo root)
}
# The TensorFlow FL tutorial's settings (see the sources): 100-example clients, batch 20,
# client SGD 0.02, server SGD 1.0, 10 rounds; every client trains every round, as in its code.
TF_TUTORIAL_PRESET: dict[str, Any] = {
    "PARTITION": "iid", "LOCAL_TEST_FRACTION": 0.0, "EXAMPLES_PER_CLIENT": 100,
    "BATCH_SIZE": 20, "CLIENT_LR": 0.02, "SERVER_LR": 1.0, "ROUNDS": 10,
    "LOCAL_EPOCHS": 1, "CLIENTS_PER_ROUND": None, "CLIENT_LR_SCHEDULE": "constant",
    "CLIENT_MOMENTUM": 0.0,
}
PRESETS = {"tf_tutorial": TF_TUTORIAL_PRESET}


def apply_preset(params: dict, preset: str | None, num_train_examples: int) -> dict:
    """``params`` with a named preset's settings on top (None: unchanged). The preset's
    ``EXAMPLES_PER_CLIENT`` becomes ``NUM_CLIENTS = num_train_examples // EXAMPLES_PER_CLIENT``."""
    if preset is None or preset == "":
        return dict(params)
    if preset not in PRESETS:
        raise ValueError(f"unknown PRESET {preset!r}; choose None or one of {', '.join(PRESETS)}")
    out = dict(params)
    chosen = dict(PRESETS[preset])
    per_client = chosen.pop("EXAMPLES_PER_CLIENT")
    if num_train_examples < per_client:
        raise ValueError(f"the preset needs at least {per_client} training examples, "
                         f"got {num_train_examples}")
    out.update(chosen, NUM_CLIENTS=int(num_train_examples // per_client))
    return out


def job_config(params: dict):
    """Validate ``params`` (upper-case notebook names) and split them into the experiment and
    the FedAvg settings. Returns ``(experiment, fedavg_config, options)``; unknown names are an
    error, so a typo does not fall back to a default."""
    from .fedavg import FedAvgConfig

    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of notebook parameters, got {type(params).__name__}")
    exp_fields = {f.upper() for f in Experiment.__dataclass_fields__}
    unknown = sorted(k for k in params if k.upper() not in exp_fields | set(JOB_DEFAULTS) | {"SEED"})
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(exp_fields | set(JOB_DEFAULTS)))}")
    opts = dict(JOB_DEFAULTS)
    opts.update({k: v for k, v in params.items() if k in JOB_DEFAULTS})
    exp = Experiment.from_params(smoke=bool(opts["SMOKE"]),
                                 **{k: v for k, v in params.items() if k.upper() in exp_fields})
    for name in ("ROUNDS", "LOCAL_EPOCHS"):
        value = opts[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if name == "ROUNDS" else 1):
            raise ValueError(f"{name} must be an integer >= {0 if name == 'ROUNDS' else 1}, got {value!r}")
    for name in ("CLIENTS_PER_ROUND", "BATCH_SIZE"):
        value = opts[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    if opts["CLIENTS_PER_ROUND"] is not None and opts["CLIENTS_PER_ROUND"] > exp.num_clients:
        raise ValueError(f"CLIENTS_PER_ROUND={opts['CLIENTS_PER_ROUND']} is more than the "
                         f"{exp.num_clients} clients (NUM_CLIENTS)")
    for name in ("CLIENT_LR", "SERVER_LR"):
        value = opts[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    cfg = FedAvgConfig(rounds=int(opts["ROUNDS"]),
                       client_fraction=None if opts["CLIENTS_PER_ROUND"] else 1.0,
                       clients_per_round=opts["CLIENTS_PER_ROUND"],
                       local_epochs=int(opts["LOCAL_EPOCHS"]), batch_size=opts["BATCH_SIZE"],
                       client_lr=float(opts["CLIENT_LR"]), server_lr=float(opts["SERVER_LR"]),
                       seed=int(exp.seed), client_lr_schedule=opts["CLIENT_LR_SCHEDULE"],
                       client_momentum=float(opts["CLIENT_MOMENTUM"]))
    return exp, cfg, opts


def build_process(params: dict):
    """The TFF FedAvg process the job trains with (``build_weighted_fed_avg``, SGD on clients and
    server), built from the same parameters, so a notebook can show it and hand it to the job."""
    from .experiment import load_data
    from .tff_fedavg import build_fedavg

    exp, cfg, _ = job_config(params)
    data = load_data(exp)
    return build_fedavg(exp.model, data.input_shape, data.num_classes, cfg.client_lr, cfg.server_lr,
                        client_momentum=cfg.client_momentum)


def federated_evaluation(model_name: str, input_shape, num_classes: int, weights,
                         client_data: list, batch_size: int = 500) -> dict:
    """``tff.learning.algorithms.build_fed_eval`` on the given clients' (x, y) arrays with
    ``weights`` as the model: the example-weighted accuracy and loss over all those clients."""
    import tensorflow as tf

    from .tff_fedavg import element_spec, import_tff, keras_model_fn

    tff = import_tff()
    client_data = [(x, y) for x, y in client_data if len(x) > 0]
    if not client_data:
        raise ValueError("federated evaluation needs at least one client with local test data")
    evaluation = tff.learning.algorithms.build_fed_eval(
        keras_model_fn(model_name, tuple(input_shape), num_classes, element_spec(tuple(input_shape))))
    state = evaluation.initialize()
    state = evaluation.set_model_weights(state, tff.learning.models.ModelWeights(
        trainable=[np.asarray(w, np.float32) for w in weights], non_trainable=[]))
    datasets = [tf.data.Dataset.from_tensor_slices((x, np.asarray(y, np.int32))).batch(batch_size)
                for x, y in client_data]
    metrics = evaluation.next(state, datasets).metrics["client_work"]["eval"]["current_round_metrics"]
    return {"accuracy": float(metrics["sparse_categorical_accuracy"]), "loss": float(metrics["loss"]),
            "num_examples": int(metrics["num_examples"]), "num_clients": len(client_data),
            "next_type_signature": str(evaluation.next.type_signature)}


def _tensorboard_writer(directory):
    if not directory:
        return None
    import tensorflow as tf

    from .env import repo_root

    path = Path(directory)
    path = path if path.is_absolute() else repo_root() / path
    path.mkdir(parents=True, exist_ok=True)
    return tf.summary.create_file_writer(str(path))


def tff_fedavg_job(params: dict, progress: Callable[[dict], None] | None = None, *,
                   process=None, log: Callable[[str], None] | None = None) -> dict:
    """Train FedAvg with TFF on the experiment given by ``params`` and return what notebook 04
    shows: per-round history, final weights, timings, federated evaluation, type signatures.

    ``params``: plain JSON, the notebook's parameter names (experiment parameters such as
    NUM_CLIENTS, PARTITION, SEED, and those in :data:`JOB_DEFAULTS`). ``progress`` is called
    after every round with that round's row (plus ``"rounds"``, the total). ``process``: an
    already built process from :func:`build_process` (saves building it twice in-process).
    The result holds only JSON values and NumPy arrays."""
    from .experiment import client_arrays, get_partition, initial_weights, load_data
    from .models import WeightsEvaluator
    from .tff_fedavg import import_tff, run_tff_fedavg, set_state_weights, state_weights

    start = time.perf_counter()
    exp, cfg, opts = job_config(params)
    tff = import_tff()
    import tensorflow as tf

    from .env import set_seed

    set_seed(exp.seed)
    messages: list[str] = []

    def say(text: str) -> None:
        messages.append(text)
        if log:
            log(text)

    data = load_data(exp)
    partition = get_partition(exp, data, log=say)
    clients = client_arrays(exp, data, partition)
    w0 = initial_weights(exp, data, log=say)

    t = time.perf_counter()
    if process is None:
        process = build_process(params)
    build_seconds = time.perf_counter() - t
    t = time.perf_counter()
    state = set_state_weights(process, process.initialize(), w0)
    initialize_seconds = time.perf_counter() - t

    evaluator = WeightsEvaluator(exp.model, data.input_shape, data.num_classes, data.x_test, data.y_test)
    writer = _tensorboard_writer(opts["TENSORBOARD_DIR"])

    def on_round(record, _state):
        row = record.as_dict()
        if writer is not None:
            with writer.as_default():
                for key in ("train_loss", "train_accuracy", "test_accuracy"):
                    tf.summary.scalar(key, row[key], step=record.round)
                tf.summary.scalar("seconds_per_round", row["seconds"], step=record.round)
            writer.flush()
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
    return {
        "params": {k: v for k, v in params.items()},
        "experiment": exp.as_dict(),
        "history": [r.as_dict() for r in history],
        "initial_weights": [np.asarray(w) for w in w0],
        "final_weights": [np.asarray(w) for w in final],
        "final_test_accuracy": float(history[-1].metrics["test_accuracy"]) if history else
        float(evaluator(final)["test_accuracy"]),
        "fed_eval": fed_eval,
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
