"""What each client can learn alone, and what a central server could learn with all the data
(notebook 02; reused by 03-05).

- :func:`get_baseline`: the *centralized baseline*, one model trained on the union of the
  clients' local-train data (what a company would do if it could collect the data);
- :func:`get_local_models`: the *local-only* models, one per client, each trained only on its own
  local-train data, every one from the same initial weights as the baseline (Raj 2020's
  "submodels");
- :func:`evaluate_weight_lists`: accuracy and macro precision/recall/F1 of several models on one
  test set.

Both train with :func:`data_utils.training.train_weights` (the course's one
:class:`~data_utils.training.Trainer`). Trained weights are saved in ``build/artifacts/`` with
every parameter that affects them (:func:`data_utils.artifacts.cached_weights`), so a later
notebook reuses them only when it asks for exactly the same thing, and retrains otherwise.

    baseline = get_baseline(Experiment.from_params(smoke=True))   # trains, or loads the saved one
"""
from __future__ import annotations

import atexit
import hashlib
from typing import Callable, Sequence

import numpy as np

from .artifacts import cached_weights
from .datasets import ImageDataset
from .experiment import Experiment, get_partition, initial_weights, is_smoke, load_data
from .partition import Partition
from .training import train_weights, training_config


# ---- the two kinds of models the course compares with federated learning --------------------------
def fingerprint(*arrays) -> str:
    """A short hash of arrays' contents (dtype, shape and bytes)."""
    digest = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()[:16]


def _inputs(exp, data, partition, init, log):
    if not isinstance(exp, Experiment):
        raise ValueError(f"exp must be a data_utils.experiment.Experiment, got {type(exp).__name__}")
    data = data if data is not None else load_data(exp)
    partition = partition if partition is not None else get_partition(exp, data, log=log)
    init = init if init is not None else initial_weights(exp, data, log=log)
    return data, partition, [np.asarray(w) for w in init]


def training_params(kind: str, exp: Experiment, data: ImageDataset, partition: Partition, init, cfg: dict) -> dict:
    """Everything that changes the trained weights of a model of ``kind``, for the saved
    artifact's parameter check (:func:`~data_utils.artifacts.cached_weights`)."""
    return {"kind": kind, "model": exp.model, "seed": exp.seed, "dataset": data.name,
            "partition": partition.params, "train_sets": fingerprint(*partition.train),
            "x_train": fingerprint(data.x_train), "y_train": fingerprint(data.y_train),
            "initial_weights": fingerprint(*init), **cfg}


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch")


def get_baseline(exp: Experiment, data: ImageDataset | None = None, partition: Partition | None = None,
                 init=None, log: Callable[[str], None] = print, progress: bool = True,
                 name: str = "baseline", **train_overrides) -> list[np.ndarray]:
    """The centralized baseline: ``exp.model`` trained from the experiment's initial weights on
    the union of all clients' local-train data (the clients' local test splits stay out).

    Training hyperparameters are :func:`training_config` for the experiment (smoke defaults when
    ``exp`` is a smoke experiment), changed by ``train_overrides``. Reuses the weights saved in
    ``build/artifacts/<name>.npz`` (default ``baseline``) when they were made with exactly these
    inputs (e.g. ``name="baseline_iid"`` keeps an IID run's baseline beside the main one)."""
    data, partition, init = _inputs(exp, data, partition, init, log)
    cfg = training_config(is_smoke(exp), **train_overrides)
    union = np.sort(np.concatenate(partition.train))

    def compute():
        bar = _bar(cfg["epochs"], "baseline", progress)

        def tick(epoch, logs):
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=round(logs.get("loss", float("nan")), 4))
        try:
            return [train_weights(exp.model, init, data.x_train[union], data.y_train[union],
                                  cfg["epochs"], cfg["batch_size"], cfg["lr"], exp.seed,
                                  cfg["optimizer"], cfg["lr_schedule"], data.num_classes,
                                  stream=0, on_epoch_end=tick)]
        finally:
            if bar is not None:
                bar.close()

    return cached_weights(name, training_params("baseline", exp, data, partition, init, cfg),
                          compute, log=log)[0]


def get_local_models(exp: Experiment, data: ImageDataset | None = None,
                     partition: Partition | None = None, init=None,
                     log: Callable[[str], None] = print, progress: bool = True,
                     name: str = "local_models", **train_overrides) -> list[list[np.ndarray]]:
    """The local-only models: for each client, ``exp.model`` trained from the *same* initial
    weights as the baseline on that client's local-train data only, with the same
    hyperparameters as :func:`get_baseline`. Client i's example order uses stream i + 1.

    Saved as ``build/artifacts/<name>.npz`` (default ``local_models``) with every input that
    affects them, and reused only when all of them match."""
    data, partition, init = _inputs(exp, data, partition, init, log)
    cfg = training_config(is_smoke(exp), **train_overrides)

    def compute():
        bar = _bar(partition.num_clients * cfg["epochs"], "local models", progress)
        models = []
        try:
            for c, idx in enumerate(partition.train):
                if bar is not None:
                    bar.set_description(f"client {c + 1}/{partition.num_clients}")

                def tick(epoch, logs):
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=round(logs.get("loss", float("nan")), 4))
                models.append(train_weights(exp.model, init, data.x_train[idx], data.y_train[idx],
                                            cfg["epochs"], cfg["batch_size"], cfg["lr"], exp.seed,
                                            cfg["optimizer"], cfg["lr_schedule"], data.num_classes,
                                            stream=c + 1, on_epoch_end=tick))
        finally:
            if bar is not None:
                bar.close()
        return models

    return cached_weights(name, training_params("local", exp, data, partition, init, cfg), compute, log=log)


_PREDICTORS: dict = {}
atexit.register(_PREDICTORS.clear)  # drop the compiled steps while TensorFlow is still whole


def _predictor(model_name: str, input_shape, num_classes: int, rebuild: bool = False):
    """One Keras model and one compiled prediction step (logits -> labels, a ``tf.function``) per
    (model, input shape, classes) in this process: the same numbers as the eager
    :func:`data_utils.models.predict_labels`, in about 60% of its time on the course's CNNs."""
    import tensorflow as tf

    from .models import build_model

    key = (model_name, tuple(int(d) for d in input_shape), int(num_classes))
    if rebuild or key not in _PREDICTORS:
        model = build_model(*key)
        step = tf.function(lambda xb: tf.argmax(model(xb, training=False), axis=1), reduce_retracing=True)
        _PREDICTORS[key] = (model, step)
    return _PREDICTORS[key]


def predict_weight_lists(model_name: str, weight_lists: Sequence[Sequence[np.ndarray]], x,
                         num_classes: int, input_shape=None, batch_size: int = 250) -> np.ndarray:
    """The predicted labels of ``x`` for each weight list (models x examples), in batches of
    ``batch_size`` through :func:`_predictor`'s compiled step. A Keras model invalidated by a TFF
    build (Keras 2) is made again."""
    x = np.asarray(x)
    shape = input_shape or x.shape[1:]
    if not len(weight_lists):
        return np.zeros((0, len(x)), dtype=np.int64)
    for attempt in range(2):
        model, step = _predictor(model_name, shape, num_classes, rebuild=attempt > 0)
        try:
            out = []
            for weights in weight_lists:
                model.set_weights([np.asarray(w) for w in weights])
                batches = [step(x[i:i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
                out.append(np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64))
            return np.stack(out).astype(np.int64)
        except ValueError as err:
            if "invalid state" not in str(err) or attempt:
                raise


def evaluate_weight_lists(model_name: str, weight_lists: Sequence[Sequence[np.ndarray]], x, y,
                          num_classes: int, input_shape=None) -> tuple[list[dict], np.ndarray]:
    """Accuracy and macro precision, recall and F1 (see :mod:`data_utils.metrics`) of each
    model on (x, y), and the predicted labels (models x examples)."""
    from .metrics import classification_metrics

    predictions = predict_weight_lists(model_name, weight_lists, x, num_classes, input_shape)
    return [classification_metrics(y, p, num_classes) for p in predictions], predictions
