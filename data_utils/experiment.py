"""The experiment every notebook shares: which dataset, how it is split across clients, which
model, which seed, and how small a smoke run is. One :class:`Experiment` built from a notebook's
parameters gives the same data, partition and initial weights in every notebook, and lets a
notebook run on its own (it recomputes what an earlier notebook would have saved)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

from .artifacts import artifacts_dir, cached_weights
from .datasets import ImageDataset, load_dataset
from .fedavg import ClientArrays
from .partition import Partition, load_or_make_partition

# A smoke run (SMOKE=True) trains on this many training images and tests on this many test
# images; enough for every code path, small enough for CI.
SMOKE_TRAIN_EXAMPLES = 3000
SMOKE_TEST_EXAMPLES = 1000


@dataclass(frozen=True)
class Experiment:
    dataset: str = "fashion_mnist"
    num_clients: int = 10
    partition: str = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    min_size: int = 10
    exponent: float = 1.0
    local_test_fraction: float = 0.1
    seed: int = 0
    model: str = "cnn_small"
    train_limit: int | None = None  # use only this many training images (smoke runs)
    test_limit: int | None = None

    @classmethod
    def from_params(cls, smoke: bool = False, **params) -> "Experiment":
        """Build from notebook parameters (upper- or lower-case names; unknown names are an
        error, so a typo does not silently fall back to a default)."""
        fields = set(cls.__dataclass_fields__)
        kwargs = {}
        for key, value in params.items():
            name = key.lower()
            if name not in fields:
                raise ValueError(f"unknown experiment parameter {key!r}; known: {', '.join(sorted(fields))}")
            kwargs[name] = value
        if smoke:
            kwargs.setdefault("train_limit", SMOKE_TRAIN_EXAMPLES)
            kwargs.setdefault("test_limit", SMOKE_TEST_EXAMPLES)
        return cls(**kwargs)

    def with_(self, **changes) -> "Experiment":
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)

    def partition_kwargs(self) -> dict:
        return dict(scheme=self.partition, num_clients=self.num_clients, seed=self.seed,
                    alpha=self.alpha, classes_per_client=self.classes_per_client,
                    min_size=self.min_size, exponent=self.exponent,
                    local_test_fraction=self.local_test_fraction)


_DATA_CACHE: dict = {}


def load_data(exp: Experiment) -> ImageDataset:
    """The experiment's dataset, cut to ``train_limit``/``test_limit`` images (a seeded random
    subset) when set. Cached per process."""
    key = (exp.dataset, exp.train_limit, exp.test_limit, exp.seed)
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    full = _DATA_CACHE.get((exp.dataset, None, None, None))
    if full is None:
        full = load_dataset(exp.dataset)
        _DATA_CACHE[(exp.dataset, None, None, None)] = full
    data = full
    if exp.train_limit or exp.test_limit:
        rng = np.random.default_rng([exp.seed, 7])
        tr = np.sort(rng.permutation(len(full.x_train))[:exp.train_limit]) if exp.train_limit else slice(None)
        te = np.sort(rng.permutation(len(full.x_test))[:exp.test_limit]) if exp.test_limit else slice(None)
        data = ImageDataset(full.name, full.x_train[tr], full.y_train[tr], full.x_test[te],
                            full.y_test[te], full.class_names)
    _DATA_CACHE[key] = data
    return data



def get_partition(exp: Experiment, data: ImageDataset | None = None,
                  log: Callable[[str], None] = print) -> Partition:
    """The experiment's client partition: the one notebook 01 saved if it was made with these
    parameters, else recreated from the same seed (and saved). Says which."""
    data = data or load_data(exp)
    path = artifacts_dir() / "partition.npz"
    partition, status = load_or_make_partition(path, data.y_train, **exp.partition_kwargs())
    log(f"partition: {status} ({path.name})")
    return partition


def client_arrays(exp: Experiment, data: ImageDataset, partition: Partition,
                  split: str = "train") -> ClientArrays:
    """The clients' local training (or local test) data, sliced lazily from the training set."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return ClientArrays(data.x_train, data.y_train, partition.train if split == "train" else partition.test)


def initial_weights(exp: Experiment, data: ImageDataset | None = None,
                    log: Callable[[str], None] = print) -> list:
    """The common starting point: the model's initial weights for ``exp.seed`` (saved once, so
    every notebook and every client starts from exactly the same numbers)."""
    from .models import build_model

    data = data or load_data(exp)
    params = {"model": exp.model, "seed": exp.seed, "input_shape": list(data.input_shape),
              "num_classes": data.num_classes}
    return cached_weights(
        "initial_weights", params,
        lambda: [build_model(exp.model, data.input_shape, data.num_classes, seed=exp.seed).get_weights()],
        log=log)[0]
