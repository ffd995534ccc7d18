"""The experiment every notebook shares, and the one place notebook parameters are checked.

An :class:`Experiment` is which dataset, how it is split across clients, which model, which seed
and how small a smoke run is. Built from a notebook's parameters it gives the same data,
partition and initial weights in every notebook, and lets a notebook run on its own (it
recomputes what an earlier notebook would have saved). :func:`parse_params` turns a notebook's
whole parameter set (the experiment's, FedAvg's and the notebook's own) into an
:class:`Experiment`, a :class:`~data_utils.fedavg.FedAvgConfig` and the rest, checking every
value (type, range, combination) before any work: a bad one is a ``ValueError`` that names the
parameter, the value given and what is allowed.

    >>> exp = Experiment.from_params(NUM_CLIENTS=10, PARTITION="dirichlet", ALPHA=0.5)
    >>> exp.partition, exp.alpha
    ('dirichlet', 0.5)
    >>> Experiment.from_params(NUM_CLIENTS=0)
    Traceback (most recent call last):
    ...
    ValueError: NUM_CLIENTS must be an integer in [1, 6000], got 0
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import numpy as np

from .artifacts import artifacts_dir, cached_weights
from .clients import ClientArrays
from .datasets import CLASS_NAMES, DATASETS, TRAIN_SIZES, ImageDataset, load_dataset
from .fedavg import FedAvgConfig
from .models import MODELS
from .partition import SCHEMES, Partition, load_or_make_partition
from .training import LR_SCHEDULES
from .validate import (check_choice, check_fraction, check_int, check_known, check_number,
                       check_positive)

# A smoke run (SMOKE=True) trains on this many training images and tests on this many test
# images; enough for every code path, small enough for CI.
SMOKE_TRAIN_EXAMPLES = 3000
SMOKE_TEST_EXAMPLES = 1000
# Every client needs at least this many training examples (one to train on, the rest to spare).
MIN_EXAMPLES_PER_CLIENT = 10


@dataclass(frozen=True)
class Experiment:
    """Dataset, partition, model and seed; every field is checked when the object is made
    (error messages use the notebooks' upper-case parameter names)."""
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

    def __post_init__(self):
        check_choice("DATASET", self.dataset, DATASETS)
        check_int("TRAIN_LIMIT", self.train_limit, low=1, allow_none=True)
        check_int("TEST_LIMIT", self.test_limit, low=1, allow_none=True)
        n_train = min(TRAIN_SIZES[self.dataset], self.train_limit or TRAIN_SIZES[self.dataset])
        check_int("NUM_CLIENTS", self.num_clients, 1, n_train // MIN_EXAMPLES_PER_CLIENT)
        check_choice("PARTITION", self.partition, SCHEMES)
        check_positive("ALPHA", self.alpha)
        check_int("CLASSES_PER_CLIENT", self.classes_per_client, 1, len(CLASS_NAMES[self.dataset]))
        check_int("MIN_SIZE", self.min_size, low=1)
        check_number("EXPONENT", self.exponent, low=0)
        check_fraction("LOCAL_TEST_FRACTION", self.local_test_fraction)
        check_int("SEED", self.seed, low=0)
        check_choice("MODEL", self.model, MODELS)
        if self.partition in ("dirichlet", "quantity") and self.num_clients * self.min_size > n_train:
            raise ValueError(f"NUM_CLIENTS={self.num_clients} x MIN_SIZE={self.min_size} is more than the "
                             f"{n_train} training images: lower one of them")

    @classmethod
    def from_params(cls, smoke: bool = False, **params) -> "Experiment":
        """Build from notebook parameters (upper- or lower-case names; unknown names are an
        error, so a typo does not silently fall back to a default)."""
        fields = set(cls.__dataclass_fields__)
        check_known("experiment parameter(s)", [k.lower() for k in params], fields)
        kwargs = {key.lower(): value for key, value in params.items()}
        if smoke:
            kwargs.setdefault("train_limit", SMOKE_TRAIN_EXAMPLES)
            kwargs.setdefault("test_limit", SMOKE_TEST_EXAMPLES)
        return cls(**kwargs)

    @property
    def smoke(self) -> bool:
        """A smoke experiment is one cut to a training subset (``from_params(smoke=True)``)."""
        return self.train_limit is not None

    def with_(self, **changes) -> "Experiment":
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)

    def partition_kwargs(self) -> dict:
        return dict(scheme=self.partition, num_clients=self.num_clients, seed=self.seed,
                    alpha=self.alpha, classes_per_client=self.classes_per_client,
                    min_size=self.min_size, exponent=self.exponent,
                    local_test_fraction=self.local_test_fraction)


def is_smoke(exp: Experiment) -> bool:
    """``exp.smoke``: the experiment is cut to a training subset."""
    return exp.smoke


# ---- notebook parameters -> experiment + FedAvg settings + the notebook's own ------------------
EXPERIMENT_PARAMS = tuple(f.upper() for f in Experiment.__dataclass_fields__)
# FedAvg's parameters (notebook 04's workshop defaults), shared by every notebook that trains it.
FEDAVG_PARAMS: dict[str, Any] = {
    "ROUNDS": 10,
    "CLIENTS_PER_ROUND": 2,      # None: every client, every round
    "LOCAL_EPOCHS": 5,
    "BATCH_SIZE": 20,            # None: one full batch per local epoch (FedSGD with LOCAL_EPOCHS=1)
    "CLIENT_LR": 0.1,
    "CLIENT_LR_SCHEDULE": "cosine",  # or "constant"
    "CLIENT_MOMENTUM": 0.0,      # client SGD momentum (0: plain SGD)
    "SERVER_LR": 1.0,
    "SMOKE": False,
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
    check_choice("PRESET", preset, PRESETS, allow_none=True)
    out = dict(params)
    chosen = dict(PRESETS[preset])
    per_client = chosen.pop("EXAMPLES_PER_CLIENT")
    if num_train_examples < per_client:
        raise ValueError(f"the preset needs at least {per_client} training examples, "
                         f"got {num_train_examples}")
    out.update(chosen, NUM_CLIENTS=int(num_train_examples // per_client))
    return out


def parse_params(params: dict, own: dict | None = None) -> tuple[Experiment, FedAvgConfig, dict]:
    """Check a notebook's (or job's) parameters (upper-case names) and split them into the
    :class:`Experiment`, the :class:`~data_utils.fedavg.FedAvgConfig` and a dict of the rest:
    FedAvg's own options (:data:`FEDAVG_PARAMS`) and ``own`` (name -> default), each filled in
    from its default when missing. Unknown names are an error.

        >>> exp, cfg, opts = parse_params({"NUM_CLIENTS": 5, "ROUNDS": 3, "DP_CLIP": 1.0},
        ...                               own={"DP_CLIP": 0.5})
        >>> exp.num_clients, cfg.rounds, opts["DP_CLIP"]
        (5, 3, 1.0)
    """
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of notebook parameters, got {type(params).__name__}")
    own = dict(own or {})
    check_known("parameter(s)", params, set(EXPERIMENT_PARAMS) | set(FEDAVG_PARAMS) | set(own))
    opts = dict(FEDAVG_PARAMS, **own)
    opts.update({k: v for k, v in params.items() if k in opts})
    exp = Experiment.from_params(smoke=bool(opts["SMOKE"]),
                                 **{k: v for k, v in params.items() if k in EXPERIMENT_PARAMS})
    rounds = check_int("ROUNDS", opts["ROUNDS"], low=0)
    local_epochs = check_int("LOCAL_EPOCHS", opts["LOCAL_EPOCHS"], low=1)
    per_round = check_int("CLIENTS_PER_ROUND", opts["CLIENTS_PER_ROUND"], 1, exp.num_clients,
                          allow_none=True)
    batch_size = check_int("BATCH_SIZE", opts["BATCH_SIZE"], low=1, allow_none=True)
    cfg = FedAvgConfig(rounds=rounds,
                       client_fraction=None if per_round else 1.0,
                       clients_per_round=per_round,
                       local_epochs=local_epochs, batch_size=batch_size,
                       client_lr=check_positive("CLIENT_LR", opts["CLIENT_LR"]),
                       server_lr=check_positive("SERVER_LR", opts["SERVER_LR"]),
                       seed=int(exp.seed),
                       client_lr_schedule=check_choice("CLIENT_LR_SCHEDULE", opts["CLIENT_LR_SCHEDULE"],
                                                       LR_SCHEDULES),
                       client_momentum=check_number("CLIENT_MOMENTUM", opts["CLIENT_MOMENTUM"], 0, 1,
                                                    high_open=True))
    return exp, cfg, opts


# ---- what the experiment gives every notebook ---------------------------------------------------
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
    check_choice("split", split, ("train", "test"))
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
