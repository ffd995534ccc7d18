"""Raj 2020's binary experiment on the course's datasets (notebook 05).

J. T. Raj, "Building Decentralized Image Classifiers with Federated Learning" (2020),
fine-tuned an ImageNet-pretrained AlexNet on Kaggle cats vs dogs: one centralized model and ten
*submodels*, one per client of 99 cats + 99 dogs, all from the same weights, averaged once with
``w = k * w_i + (1 - k) * w``, k = 0.5, and tested on 506 cats and 507 dogs. :data:`RAJ_2020`
holds the paper's numbers; :func:`make_binary_task` cuts the same design out of another dataset
(two easily confused classes, :data:`BINARY_CLASSES`); :func:`get_binary_models` trains (or
reuses) the centralized model and the submodels, keyed by name; :func:`binary_scores` scores
them as the paper did (precision and recall of one class).

    >>> import numpy as np
    >>> y_train, y_test = np.repeat([0, 1, 2], 50), np.repeat([0, 1, 2], 10)
    >>> task = make_binary_task(y_train, y_test, (0, 2), num_clients=2, per_client=10, test_sizes=(5, 5))
    >>> [len(c) for c in task.clients], len(task.test), task.labels([0, 2]).tolist()
    ([10, 10], 10, [0, 1])
    >>> binary_scores([0, 1, 1], [0, 1, 0])["recall_pos"]
    0.5
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .validate import check_int, is_int

# J. T. Raj, "Building Decentralized Image Classifiers with Federated Learning" (2020): AlexNet
# pretrained on ImageNet, fine-tuned on Kaggle cats vs dogs with PyTorch; ten clients of 99 cats +
# 99 dogs; test set 506 cats + 507 dogs; aggregation w = k * w_i + (1 - k) * w, k = 0.5. Precision
# and recall there are those of one class (binary scores), not macro averages. "data", "images",
# "model" and "optimizer" say what notebook 05 sets beside its own choices.
RAJ_2020 = {
    "task": "cats vs dogs (Kaggle), AlexNet pretrained on ImageNet, fine-tuned 10 epochs, batch 4, SGD lr 0.001",
    "data": "cats vs dogs (Kaggle Dogs vs. Cats)",
    "images": "224x224 colour photos, random flips",
    "model": "AlexNet pretrained on ImageNet (about 57 million parameters)",
    "optimizer": "SGD lr 0.001, batch 4, 10 epochs",
    "centralized": {"accuracy": 0.9417, "precision": 0.9627, "recall": 0.91897},
    "averaged": {"accuracy": 0.9348, "precision": 0.9198, "recall": 0.9526},
    "submodel_accuracy": [0.8202, 0.8804, 0.8349, 0.8083, 0.6679, 0.8488, 0.8122, 0.81027, 0.8557, 0.8636],
    "num_clients": 10, "per_client": 198, "test_sizes": (506, 507), "centralized_train": 2003,
    "k": 0.5, "epochs": 10,
}
# Two classes per dataset that are easy to confuse (the paper's cats and dogs are in CIFAR-10).
BINARY_CLASSES = {"fashion_mnist": (0, 6), "cifar10": (3, 5), "mnist": (4, 9)}


@dataclass(frozen=True)
class BinaryTask:
    """A two-class task cut from a dataset: ``clients[i]`` are indices into the training set
    (balanced: half of each class), ``test`` indices into the test set. Labels are 0 for
    ``classes[0]`` and 1 for ``classes[1]``."""

    classes: tuple
    class_names: tuple
    clients: tuple
    test: np.ndarray

    def labels(self, y) -> np.ndarray:
        """The task's labels (0 or 1) of the dataset's labels ``y``."""
        y = np.asarray(y)
        if not np.all(np.isin(y, self.classes)):
            raise ValueError(f"labels outside the task's classes {self.classes}")
        return (y == self.classes[1]).astype(np.int32)

    @property
    def train(self) -> np.ndarray:
        """The union of the clients' examples: what the centralized model trains on."""
        return np.sort(np.concatenate(self.clients))

    def client_names(self) -> list[str]:
        """``["client 0", ..., "client n-1"]``: the submodels' names in :func:`get_binary_models`."""
        return [f"client {i}" for i in range(len(self.clients))]


def make_binary_task(y_train, y_test, classes: Sequence[int], num_clients: int = 10,
                     per_client: int = 198, test_sizes: Sequence[int] = (506, 507), seed: int = 0,
                     class_names: Sequence[str] | None = None) -> BinaryTask:
    """Raj 2020's setting on another dataset: ``num_clients`` clients holding ``per_client``
    training images each, half of each class, no image on two clients; a held-out test set of
    ``test_sizes[0]`` images of ``classes[0]`` and ``test_sizes[1]`` of ``classes[1]`` from the
    test split. Seeded and deterministic."""
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if len(classes) != 2 or not all(is_int(c) for c in classes) or classes[0] == classes[1]:
        raise ValueError(f"classes must be two different class ids, got {classes!r}")
    k = int(max(y_train.max(), y_test.max())) + 1
    if min(classes) < 0 or max(classes) >= k:
        raise ValueError(f"classes must be in 0..{k - 1}, got {tuple(classes)}")
    num_clients = check_int("num_clients", num_clients, low=1)
    if not is_int(per_client) or per_client < 2 or per_client % 2:
        raise ValueError(f"per_client must be an even integer >= 2 (half of each class), got {per_client!r}")
    if len(test_sizes) != 2 or not all(is_int(s) and s >= 1 for s in test_sizes):
        raise ValueError(f"test_sizes must be two positive integers, got {test_sizes!r}")
    seed = check_int("seed", seed, low=0)
    rng = np.random.default_rng([seed, 5])
    half = per_client // 2
    per_class = []
    for c, n_test in zip(classes, test_sizes):
        pool = np.flatnonzero(y_train == c)
        if len(pool) < half * num_clients:
            raise ValueError(f"class {c} has {len(pool)} training images; {num_clients} clients x "
                             f"{half} need {half * num_clients}")
        if np.sum(y_test == c) < n_test:
            raise ValueError(f"class {c} has {int(np.sum(y_test == c))} test images; asked for {n_test}")
        per_class.append(rng.permutation(pool)[:half * num_clients])
    clients = tuple(np.sort(np.concatenate([p[i * half:(i + 1) * half] for p in per_class]))
                    for i in range(num_clients))
    test = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y_test == c))[:n]
                                   for c, n in zip(classes, test_sizes)]))
    names = tuple(class_names[c] for c in classes) if class_names is not None else tuple(str(c) for c in classes)
    return BinaryTask(tuple(int(c) for c in classes), names, clients, test)


def binary_scores(y_true, y_pred) -> dict:
    """Accuracy, the positive class's (label 1) precision and recall (the paper's sklearn
    defaults), and the macro precision, recall and F1 of a two-class prediction."""
    from .metrics import classification_metrics

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    tp = int(np.sum((y_pred == 1) & (y_true == 1)))
    precision = tp / max(int(np.sum(y_pred == 1)), 1)
    recall = tp / max(int(np.sum(y_true == 1)), 1)
    macro = classification_metrics(y_true, y_pred, 2)
    return {"accuracy": macro["accuracy"], "precision_pos": float(precision), "recall_pos": float(recall),
            "precision": macro["precision"], "recall": macro["recall"], "f1": macro["f1"]}


def get_binary_models(task: BinaryTask, data, model_name: str, seed: int, train_config: Mapping,
                      log: Callable[[str], None] = print, progress: bool = True) -> dict[str, list]:
    """The binary experiment's models by name: ``{"centralized": weights, "client 0": weights,
    ..., "client n-1": weights}`` (:meth:`BinaryTask.client_names`), every one from the same
    initial weights (``model_name`` with two outputs, drawn from ``seed``), the centralized one
    on the union of the clients' images. ``train_config`` is a
    :func:`data_utils.training.training_config`. Saved as ``build/artifacts/binary_models.npz``
    and reused only when every input matches."""
    from .artifacts import cached_weights
    from .baselines import fingerprint
    from .models import build_model
    from .training import train_weights

    cfg = dict(train_config)
    init = build_model(model_name, data.input_shape, 2, seed=seed).get_weights()
    params = {"kind": "binary", "model": model_name, "seed": int(seed), "dataset": data.name,
              "classes": list(task.classes), "clients": fingerprint(*task.clients),
              "x_train": fingerprint(data.x_train), "initial_weights": fingerprint(*init), **cfg}

    def compute():
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=(1 + len(task.clients)) * cfg["epochs"], desc="binary models", unit="epoch")

        def tick(epoch, logs):
            if bar is not None:
                bar.update(1)
        out = []
        try:
            for i, idx in enumerate((task.train, *task.clients)):
                out.append(train_weights(model_name, init, data.x_train[idx], task.labels(data.y_train[idx]),
                                         cfg["epochs"], cfg["batch_size"], cfg["lr"], seed, cfg["optimizer"],
                                         cfg["lr_schedule"], 2, stream=i, on_epoch_end=tick))
        finally:
            if bar is not None:
                bar.close()
        return out

    weights = cached_weights("binary_models", params, compute, log=log)
    return dict(zip(["centralized", *task.client_names()], weights))
