"""What each client can learn alone, and what a central server could learn with all the data.

- :func:`train_weights`: train one model from given initial weights on (x, y), seeded and
  deterministic (the example order of every epoch comes from :func:`data_utils.fedavg.epoch_orders`);
- :func:`get_baseline`: the *centralized baseline*, one model trained on the union of the
  clients' local-train data (what a company would do if it could collect the data);
- :func:`get_local_models`: the *local-only* models, one per client, each trained only on its own
  local-train data, every one from the same initial weights as the baseline (Raj 2020's
  "submodels");
- :func:`evaluate_weight_lists`: accuracy and macro precision/recall/F1 of several models on one
  test set.

Trained weights are saved in ``build/artifacts/`` with every parameter that affects them
(:func:`data_utils.artifacts.cached_weights`), so a later notebook reuses them only when it asks
for exactly the same thing, and retrains otherwise.
"""
from __future__ import annotations

import hashlib
import math
import time
from typing import Callable, Sequence

import numpy as np

from .artifacts import cached_weights
from .datasets import ImageDataset
from .experiment import Experiment, get_partition, initial_weights, load_data
from .fedavg import epoch_orders
from .partition import Partition

# Workshop defaults. Measured on the course's 2-core machine (TF 2.14, seed 0, 10 IID clients, so
# 54,000 pooled images): cnn_small with Adam 2e-3, batch 64 and a per-epoch cosine decay reaches
# 0.906 test accuracy on Fashion-MNIST after 10 epochs (constant Adam 1e-3 plateaus near 0.898 at
# 8 epochs). An epoch over 54,000 images takes about 4-12 s depending on the machine's load.
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 64
DEFAULT_OPTIMIZER = "adam"
DEFAULT_LEARNING_RATE = 2e-3
DEFAULT_LR_SCHEDULE = "cosine"
# Smoke runs (Experiment.from_params(smoke=True): 3,000 training images) only check the code paths.
SMOKE_EPOCHS = 2
SMOKE_BATCH_SIZE = 32
SMOKE_OPTIMIZER = DEFAULT_OPTIMIZER
SMOKE_LEARNING_RATE = 1e-3

OPTIMIZERS = ("adam", "sgd", "sgdm")  # sgdm = SGD with momentum 0.9
LR_SCHEDULES = ("constant", "cosine")
TRAIN_KEYS = ("epochs", "batch_size", "optimizer", "lr", "lr_schedule")
# Keras runs this many batches per call into TensorFlow: the same steps in the same order, but about
# a third less CPU time per epoch for a model as small as cnn_small (measured: 4.2 s -> 2.7 s).
STEPS_PER_EXECUTION = 32


def is_smoke(exp: Experiment) -> bool:
    """A smoke experiment is one cut to a training subset (``Experiment.from_params(smoke=True)``)."""
    return exp.train_limit is not None


def training_config(smoke: bool = False, **overrides) -> dict:
    """The training hyperparameters: the workshop defaults (or the smoke ones), with ``overrides``
    (``epochs``, ``batch_size``, ``optimizer``, ``lr``, ``lr_schedule``; None keeps the default).
    Checked here, so a bad value fails before any training starts."""
    unknown = set(overrides) - set(TRAIN_KEYS)
    if unknown:
        raise ValueError(f"unknown training parameter(s) {sorted(unknown)}; known: {', '.join(TRAIN_KEYS)}")
    cfg = {"epochs": SMOKE_EPOCHS if smoke else DEFAULT_EPOCHS,
           "batch_size": SMOKE_BATCH_SIZE if smoke else DEFAULT_BATCH_SIZE,
           "optimizer": SMOKE_OPTIMIZER if smoke else DEFAULT_OPTIMIZER,
           "lr": SMOKE_LEARNING_RATE if smoke else DEFAULT_LEARNING_RATE,
           "lr_schedule": DEFAULT_LR_SCHEDULE}
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    _check_config(**cfg)
    cfg["epochs"], cfg["batch_size"], cfg["lr"] = int(cfg["epochs"]), int(cfg["batch_size"]), float(cfg["lr"])
    return cfg


def _is_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _check_config(epochs, batch_size, optimizer, lr, lr_schedule="constant") -> None:
    if not _is_int(epochs) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not (
            math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr (learning rate) must be a positive number, got {lr!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")


def epoch_learning_rate(lr: float, epoch: int, epochs: int, schedule: str = "cosine") -> float:
    """The learning rate of epoch ``epoch`` (0-based): constant, or a cosine decay from ``lr``
    (first epoch) towards zero (never reached: the last epoch still learns)."""
    if schedule == "constant":
        return float(lr)
    if schedule == "cosine":
        return float(lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    raise ValueError(f"unknown lr_schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")


class Trainer:
    """One compiled Keras model and optimizer, reused for many trainings (clients): each call of
    :meth:`train` loads the initial weights and zeroes the optimizer's state (step counter and
    moments), which is exactly a fresh optimizer, without Keras re-tracing its training step."""

    def __init__(self, model_name: str, input_shape, num_classes: int, optimizer: str = DEFAULT_OPTIMIZER,
                 lr: float = DEFAULT_LEARNING_RATE, steps_per_execution: int = STEPS_PER_EXECUTION):
        import tensorflow as tf

        from .models import build_model

        _check_config(1, 1, optimizer, lr)
        self.spec = (model_name, tuple(input_shape), int(num_classes), optimizer, float(lr))
        self.model = build_model(model_name, input_shape, num_classes)
        if optimizer == "adam":
            self.optimizer = tf.keras.optimizers.Adam(learning_rate=lr)
        else:
            self.optimizer = tf.keras.optimizers.SGD(learning_rate=lr,
                                                     momentum=0.9 if optimizer == "sgdm" else 0.0)
        self.model.compile(optimizer=self.optimizer,
                           loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=["accuracy"], steps_per_execution=int(steps_per_execution))

    def reset(self, weights: Sequence[np.ndarray]) -> None:
        self.model.set_weights([np.asarray(w) for w in weights])
        for var in self.optimizer.variables:
            # Keras 2: a tf.DType; Keras 3: a string such as "float32"
            var.assign(np.zeros(var.shape, dtype=np.dtype(getattr(var.dtype, "as_numpy_dtype", var.dtype))))

    def train(self, init_weights, x, y, epochs: int, batch_size: int, seed: int, stream: int = 0,
              lr_schedule: str = DEFAULT_LR_SCHEDULE,
              on_epoch_end: Callable[[int, dict], None] | None = None) -> list[np.ndarray]:
        import tensorflow as tf

        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        if len(x) == 0:
            raise ValueError("cannot train on zero examples")
        _check_config(epochs, batch_size, self.spec[3], self.spec[4], lr_schedule)
        self.reset(init_weights)
        y = np.asarray(y).astype("int32")
        for epoch, order in enumerate(epoch_orders(len(x), int(epochs), int(seed), 0, int(stream))):
            self.optimizer.learning_rate.assign(
                epoch_learning_rate(self.spec[4], epoch, int(epochs), lr_schedule))
            ds = tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(int(batch_size))
            history = self.model.fit(ds.prefetch(2), epochs=1, verbose=0, shuffle=False)
            if on_epoch_end is not None:
                on_epoch_end(epoch, {k: float(v[-1]) for k, v in history.history.items()})
        return [np.array(w) for w in self.model.get_weights()]


_TRAINERS: dict = {}


def shared_trainer(model_name: str, input_shape, num_classes: int, optimizer: str = DEFAULT_OPTIMIZER,
                   lr: float = DEFAULT_LEARNING_RATE, rebuild: bool = False) -> Trainer:
    """One :class:`Trainer` per (model, input shape, classes, optimizer, learning rate) in this
    process, so the baseline and every client reuse one traced training step (``rebuild``: make
    a new one, e.g. after a TFF computation invalidated the old Keras model)."""
    spec = (model_name, tuple(input_shape), int(num_classes), optimizer, float(lr))
    if rebuild or spec not in _TRAINERS:
        _TRAINERS[spec] = Trainer(model_name, input_shape, num_classes, optimizer, lr)
    return _TRAINERS[spec]


def train_weights(model_name: str, init_weights: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray,
                  epochs: int = DEFAULT_EPOCHS, batch_size: int = DEFAULT_BATCH_SIZE,
                  lr: float = DEFAULT_LEARNING_RATE, seed: int = 0, optimizer: str = DEFAULT_OPTIMIZER,
                  lr_schedule: str = DEFAULT_LR_SCHEDULE, num_classes: int | None = None,
                  stream: int = 0, trainer: Trainer | None = None,
                  on_epoch_end: Callable[[int, dict], None] | None = None) -> list[np.ndarray]:
    """Train ``model_name`` from ``init_weights`` on (x, y) and return the trained weights.

    Each epoch visits every example once in its own order, a pure function of (``seed``,
    ``stream``, epoch), in batches of ``batch_size``; the learning rate follows ``lr_schedule``.
    The same arguments always give the same weights. The Keras model doing the work is
    :func:`shared_trainer`'s (or ``trainer``, a :class:`Trainer` with the same model and optimizer);
    ``on_epoch_end(epoch, logs)`` is called after each epoch (progress bars)."""
    _check_config(epochs, batch_size, optimizer, lr, lr_schedule)
    x = np.asarray(x)
    if num_classes is None:
        num_classes = int(np.asarray(init_weights[-1]).shape[-1])
    spec = (model_name, tuple(x.shape[1:]), int(num_classes), optimizer, float(lr))
    if trainer is not None:
        if trainer.spec[:5] != spec:
            raise ValueError(f"trainer was built for {trainer.spec[:5]}, but this training needs {spec}")
        return trainer.train(init_weights, x, y, epochs, batch_size, seed, stream, lr_schedule, on_epoch_end)
    trainer = shared_trainer(*spec)
    try:
        return trainer.train(init_weights, x, y, epochs, batch_size, seed, stream, lr_schedule, on_epoch_end)
    except ValueError as err:  # Keras 2: a TFF build since the last call invalidated the model
        if "invalid state" not in str(err):
            raise
        return shared_trainer(*spec, rebuild=True).train(init_weights, x, y, epochs, batch_size, seed, stream,
                                                         lr_schedule, on_epoch_end)


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


def _params(kind: str, exp: Experiment, data: ImageDataset, partition: Partition, init, cfg: dict) -> dict:
    """Everything that changes the trained weights, for the artifact's parameter check."""
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
                 **train_overrides) -> list[np.ndarray]:
    """The centralized baseline: ``exp.model`` trained from the experiment's initial weights on
    the union of all clients' local-train data (the clients' local test splits stay out).

    Training hyperparameters are :func:`training_config` for the experiment (smoke defaults when
    ``exp`` is a smoke experiment), changed by ``train_overrides``. Reuses the weights saved in
    ``build/artifacts/baseline.npz`` when they were made with exactly these inputs."""
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

    return cached_weights("baseline", _params("baseline", exp, data, partition, init, cfg),
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

    return cached_weights(name, _params("local", exp, data, partition, init, cfg), compute, log=log)


def evaluate_weight_lists(model_name: str, weight_lists: Sequence[Sequence[np.ndarray]], x, y,
                          num_classes: int, input_shape=None) -> tuple[list[dict], np.ndarray]:
    """Accuracy and macro precision, recall and F1 (see :mod:`data_utils.metrics`) of each
    model on (x, y), and the predicted labels (models x examples)."""
    from .metrics import classification_metrics
    from .models import WeightsEvaluator

    x = np.asarray(x)
    evaluator = WeightsEvaluator(model_name, input_shape or x.shape[1:], num_classes, x, y)
    predictions = np.stack([evaluator.predict(w) for w in weight_lists]) if len(weight_lists) else \
        np.zeros((0, len(x)), dtype=int)
    return [classification_metrics(y, p, num_classes) for p in predictions], predictions


class Stopwatch:
    """Wall-clock seconds of named steps: ``with watch("baseline"): ...``; ``watch.seconds``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def __call__(self, name: str):
        watch = self

        class _Step:
            def __enter__(self):
                self.t = time.perf_counter()
                return self

            def __exit__(self, *exc):
                watch.seconds[name] = watch.seconds.get(name, 0.0) + time.perf_counter() - self.t
                return False

        return _Step()

    def total(self) -> float:
        return time.perf_counter() - self._start
