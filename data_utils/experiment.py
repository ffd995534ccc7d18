"""The experiment every notebook shares, and the one place notebook parameters are checked.

An :class:`Experiment` is which dataset, how it is split across clients, which model, which seed
and how small a smoke run is. Built from a notebook's parameters it gives the same data,
partition and initial weights in every notebook, and lets a notebook run on its own (it
recomputes what an earlier notebook would have saved). :func:`parse_params` turns a job's
parameters (the experiment's, FedAvg's and the job's own) into an :class:`Experiment`, a
:class:`~data_utils.fedavg.FedAvgConfig` and the rest. :func:`check_notebook_params` knows every
parameter of every notebook (:data:`NOTEBOOK_PARAMS`, :data:`NOTEBOOK_RULES`): each notebook's
setup cell calls it first, so every value is checked (type, range, combination) before any work,
and a bad one is a ``ValueError`` that names the parameter, the value given and what is allowed.

    >>> exp = Experiment.from_params(NUM_CLIENTS=10, PARTITION="dirichlet", ALPHA=0.5)
    >>> exp.partition, exp.alpha
    ('dirichlet', 0.5)
    >>> Experiment.from_params(NUM_CLIENTS=0)
    Traceback (most recent call last):
    ...
    ValueError: NUM_CLIENTS must be an integer in [1, 6000], got 0
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np

from .artifacts import artifacts_dir, cached_weights
from .clients import ClientArrays
from .datasets import CLASS_NAMES, DATASETS, TRAIN_SIZES, ImageDataset, load_dataset
from .fedavg import FedAvgConfig
from .models import MODELS
from .partition import SCHEMES, Partition, load_or_make_partition
from .robust import AGGREGATORS
from .remedies import ALGORITHMS as REMEDY_ALGORITHMS
from .secure_agg import MAX_MODULUS_BITS, MIN_MODULUS_BITS, Quantizer
from .skew import FEATURE_SKEWS
from .training import LR_SCHEDULES, OPTIMIZERS
from .validate import (check_choice, check_fraction, check_int, check_known, check_list, check_number,
                       check_positive, is_int)

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
        n_train = self.train_examples
        if self.train_limit is not None and self.train_limit < TRAIN_SIZES[self.dataset]:
            high = n_train // MIN_EXAMPLES_PER_CLIENT
            if not (is_int(self.num_clients) and 1 <= self.num_clients <= high):
                smoke = ", as in a smoke run" if self.train_limit == SMOKE_TRAIN_EXAMPLES else ""
                raise ValueError(f"NUM_CLIENTS must be an integer in [1, {high}] (at least "
                                 f"{MIN_EXAMPLES_PER_CLIENT} training images per client of the {n_train} "
                                 f"used: TRAIN_LIMIT={self.train_limit}{smoke}), got {self.num_clients!r}")
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
    def train_examples(self) -> int:
        """How many training images the experiment uses (known before any data is loaded)."""
        return min(TRAIN_SIZES[self.dataset], self.train_limit or TRAIN_SIZES[self.dataset])

    @property
    def smoke(self) -> bool:
        """A smoke experiment is one cut to a training subset (``from_params(smoke=True)``)."""
        return self.train_limit is not None

    def with_(self, **changes) -> "Experiment":
        """A copy with some fields changed (checked again)."""
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """The fields as a plain dict (saved next to every artifact made from the experiment)."""
        return asdict(self)

    def partition_kwargs(self) -> dict:
        """The keyword arguments of :func:`data_utils.partition.make_partition` for this experiment."""
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
    "LOCAL_EPOCHS": 1,
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


# ---- every notebook's parameters, checked in one place -----------------------------------------
# What each notebook's parameters cell holds, and what each parameter may be. A parameter is
# checked by the Experiment (EXPERIMENT), by parse_params' FedAvg settings (FEDAVG), by a check of
# its own (a function ``check(name, value) -> value``), or by both (a pair: the notebook allows
# less than FedAvg in general). Then each notebook's rules check how the parameters combine.
EXPERIMENT, FEDAVG = "experiment", "fedavg"
# Notebook 07's aggregators: data_utils.robust's and TFF's robust_aggregator.
ROBUST_AGGREGATORS = AGGREGATORS + ("tff_robust",)


def _int(low=None, high=None, none=False):
    return lambda name, value: check_int(name, value, low, high, allow_none=none)


def _number(low=None, high=None, low_open=False, high_open=False, none=False):
    return lambda name, value: check_number(name, value, low, high, low_open, high_open, allow_none=none)


def _positive(none=False):
    return lambda name, value: check_positive(name, value, allow_none=none)


def _choice(choices, none=False):
    choices = tuple(choices)
    return lambda name, value: check_choice(name, value, choices, allow_none=none)


def _list_of(check_item):
    def check(name, value):
        try:
            return check_list(name, value, check_item)
        except ValueError as err:
            if str(err).startswith(f"{name} must"):
                raise
            raise ValueError(f"{err} (in {name} = {value!r})") from None
    return check


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _folder(name, value):
    if not (isinstance(value, os.PathLike) or (isinstance(value, str) and value.strip())):
        raise ValueError(f"{name} must be a folder path (a non-empty string), got {value!r}")
    return value


def _feature_skew(name, value):
    if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
        return None
    return check_choice(name, value, FEATURE_SKEWS, allow_none=True)


def _preset(name, value):
    return None if value == "" else check_choice(name, value, PRESETS, allow_none=True)


def _two_classes(name, value):
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(is_int(c) and c >= 0 for c in value)
            or value[0] == value[1]):
        raise ValueError(f"{name} must be None or two different class ids, such as (0, 6), got {value!r}")
    return tuple(int(c) for c in value)


_COMMON = {"DATASET": EXPERIMENT, "SEED": EXPERIMENT, "RESULTS_DIR": _folder, "SMOKE": (FEDAVG, _flag)}
_SPLIT = {name: EXPERIMENT for name in ("NUM_CLIENTS", "PARTITION", "ALPHA", "CLASSES_PER_CLIENT",
                                        "LOCAL_TEST_FRACTION")}
_FEDAVG_ALL = {name: FEDAVG for name in FEDAVG_PARAMS if name != "SMOKE"}

def _worker_addresses(name, value):
    if value is None:
        return None
    from .workers import check_addresses  # listed after this module; a plain check, no TFF

    try:
        return check_addresses(value)
    except ValueError as err:
        raise ValueError(f"{name} must be None or a list of 'host:port' strings, got {value!r}: {err}") from None


NOTEBOOK_PARAMS: dict[str, dict[str, Any]] = {
    "00": {**_COMMON, "TFF_MODE": _choice(("auto", "sidecar"))},
    "01": {**_COMMON, **_SPLIT, "FEATURE_SKEW": _feature_skew},
    "02": {**_COMMON, **_SPLIT, "MODEL": EXPERIMENT, "FEATURE_SKEW": _feature_skew,
           "EPOCHS": _int(1, none=True), "BATCH_SIZE": _int(1, none=True),  # centralized training
           "OPTIMIZER": _choice(OPTIMIZERS, none=True), "LEARNING_RATE": _positive(none=True),
           "NON_IID_ALPHA": _positive(none=True)},
    "03": {**_COMMON, **_SPLIT, "MODEL": EXPERIMENT, "DIFFERENT_INIT_CLIENTS": _int(2),
           "POLYAK_K": _number(0, 1), "ROUNDS": (FEDAVG, _int(1)), "CLIENT_FRACTION": _number(0, 1, low_open=True),
           "LOCAL_EPOCHS": FEDAVG, "BATCH_SIZE": FEDAVG, "CLIENT_LR": FEDAVG, "FEDSGD_LR": _positive(),
           "NON_IID_PARTITION": _choice(s for s in SCHEMES if s != "iid")},
    "04": {**_COMMON, **_SPLIT, "MODEL": EXPERIMENT, **_FEDAVG_ALL, "PRESET": _preset},
    "05": {**_COMMON, **_SPLIT, "MODEL": EXPERIMENT, **_FEDAVG_ALL, "PRESET": _preset,
           "HETERO_ROUNDS": _int(1), "HETERO_TRAIN_EXAMPLES": _int(1, none=True),
           "BINARY_CLASSES": _two_classes, "BINARY_EPOCHS": _int(1), "BINARY_BATCH_SIZE": _int(1)},
    "06": {**_COMMON, **_SPLIT, "MODEL": EXPERIMENT, "TRAIN_LIMIT": EXPERIMENT,
           "LEAK_PARTITION": _choice(SCHEMES), "BATCH_SIZE": FEDAVG, "CLIENT_LR": FEDAVG,
           "SECAGG_CLIP": _positive(), "SECAGG_VALUE_BITS": _int(2, MAX_MODULUS_BITS - 1),
           "SECAGG_MODULUS_BITS": _int(MIN_MODULUS_BITS + 1, MAX_MODULUS_BITS), "SECAGG_DROPOUTS": _int(0),
           "DP_NUM_CLIENTS": _int(1), "DP_CLIENTS_PER_ROUND": _int(1), "DP_ROUNDS": _int(1),
           "DP_CLIP": _positive(none=True), "DP_DELTA": _number(0, 1, low_open=True, high_open=True),
           "NOISE_MULTIPLIERS": _list_of(_number(0)), "DP_RUNS": _int(1, 10), "DP_LAST_ROUNDS": _int(1)},
    "07": {**_COMMON, **_SPLIT, "MODEL": EXPERIMENT, "TRAIN_LIMIT": EXPERIMENT,
           "ROUNDS": (FEDAVG, _int(1)), "CLIENTS_PER_ROUND": FEDAVG, "LOCAL_EPOCHS": FEDAVG,
           "BATCH_SIZE": FEDAVG, "CLIENT_LR": FEDAVG,
           "DROP_FRACTIONS": _list_of(_number(0, 1, high_open=True)), "NUM_FLIPPERS": _int(0),
           "NUM_ATTACKERS": _int(0), "BOOST": _positive(), "TRIM_FRACTION": _number(0, 0.5, high_open=True),
           "AGGREGATORS": _list_of(_choice(ROBUST_AGGREGATORS)), "BACKDOOR_TARGET": _int(0, 9),
           "POISON_FRACTION": _number(0, 1, low_open=True)},
    "08": {**_COMMON, **_SPLIT, "MODEL": EXPERIMENT, "TRAIN_LIMIT": EXPERIMENT, "TEST_IMAGES": _int(1, none=True),
           "ROUNDS": (FEDAVG, _int(1)), "CLIENTS_PER_ROUND": FEDAVG, "LOCAL_EPOCHS": FEDAVG, "BATCH_SIZE": FEDAVG,
           "CLIENT_LR": FEDAVG, "ALGORITHMS": _list_of(_choice(REMEDY_ALGORITHMS)), "MU": _number(0),
           "SERVER_MOMENTUM": _number(0, 1, high_open=True), "ADAPTIVE_SERVER_LR": _positive(), "LAST_ROUNDS": _int(1), "DRIFT_CLASSES": _list_of(_int(1, 10)),
           "DRIFT_EPOCHS": _list_of(_int(1, 20)), "FINE_TUNE_EPOCHS": _int(1), "LOCAL_ONLY_EPOCHS": _int(1),
           "TFF_ALGORITHMS": _list_of(_choice(("fedprox", "fedavgm", "fedadam", "fedyogi"))),
           "TFF_ROUNDS": _int(1)},
    # TFF_ENCODERS: data_utils.fedcore.TFF_ENCODERS (not imported: fedcore comes after this module)
    "09": {**_COMMON, **_SPLIT, "MODEL": EXPERIMENT, "TRAIN_LIMIT": EXPERIMENT,
           "ROUNDS": (FEDAVG, _int(1)), "CLIENTS_PER_ROUND": FEDAVG, "LOCAL_EPOCHS": FEDAVG, "BATCH_SIZE": FEDAVG,
           "CLIENT_LR": FEDAVG, "PROXIMAL_STRENGTH": _positive(), "BITS": _list_of(_int(1, 32)),
           "AGGREGATOR_BITS": _int(1, 32), "TFF_BITS": _list_of(_int(1, 16)),
           "TFF_ENCODERS": _list_of(_choice(("uniform", "hadamard"))), "COMPRESSION_AGGREGATOR": _flag},
    "10": {**_COMMON, **_SPLIT, "MODEL": EXPERIMENT, "TRAIN_LIMIT": EXPERIMENT,
           "ROUNDS": (FEDAVG, _int(1)), "CLIENTS_PER_ROUND": FEDAVG, "LOCAL_EPOCHS": FEDAVG,
           "BATCH_SIZE": FEDAVG, "CLIENT_LR": FEDAVG, "WORKER_COUNTS": _list_of(_int(1, 8)),
           "WORKER_ADDRESSES": _worker_addresses, "FLOWER_CLIENTS": _int(1, 8), "FLOWER_ROUNDS": _int(1),
           "FLOWER_TRAIN_EXAMPLES": _int(10), "FLOWER_TEST_EXAMPLES": _int(1), "FLOWER_TIMEOUT": _positive()},
}


# How a notebook's parameters combine: each rule is ``rule(values, exp)`` and raises a ValueError.
def _below(name, other, or_equal=False):
    """``values[name] < values[other]`` (``or_equal``: ``<=``)."""
    def rule(values, exp):
        value, bound = values[name], values[other]
        if value > bound or (value == bound and not or_equal):
            raise ValueError(f"{name} must be {'at most' if or_equal else 'below'} {other} ({bound!r}), "
                             f"got {value!r}")
    return rule


def _at_least(name, low, why):
    def rule(values, exp):
        if values[name] < low:
            raise ValueError(f"{name} must be at least {low} here ({why}), got {values[name]!r}")
    return rule


def _flower_examples(values, exp):
    """Every Flower client needs at least 10 training images."""
    need = 10 * values["FLOWER_CLIENTS"]
    if values["FLOWER_TRAIN_EXAMPLES"] < need:
        raise ValueError(f"FLOWER_TRAIN_EXAMPLES must be at least 10 per Flower client ({need} for "
                         f"FLOWER_CLIENTS={values['FLOWER_CLIENTS']}), got {values['FLOWER_TRAIN_EXAMPLES']!r}")


def _secagg_fits(values, exp):
    """The sum of NUM_CLIENTS quantized values must not overflow the modulus."""
    if values["SECAGG_VALUE_BITS"] >= values["SECAGG_MODULUS_BITS"]:
        raise ValueError(f"SECAGG_VALUE_BITS must be below SECAGG_MODULUS_BITS ({values['SECAGG_MODULUS_BITS']!r}), "
                         f"got {values['SECAGG_VALUE_BITS']!r}")
    most = Quantizer(values["SECAGG_CLIP"], values["SECAGG_VALUE_BITS"], values["SECAGG_MODULUS_BITS"]).max_summands
    if exp.num_clients > most:
        raise ValueError(f"NUM_CLIENTS must be at most {most} with SECAGG_VALUE_BITS={values['SECAGG_VALUE_BITS']} "
                         f"and SECAGG_MODULUS_BITS={values['SECAGG_MODULUS_BITS']} (more would overflow the "
                         f"modulus), got {exp.num_clients!r}")


def _dp_job(values, exp):
    """Notebook 06's DP-FedAvg job: DP_NUM_CLIENTS clients of the whole training set (a smoke run
    uses at most 30 of them), checked as the job will check them (parse_params)."""
    job = {k: values[k] for k in ("DATASET", "SEED", "MODEL", "PARTITION", "ALPHA", "CLASSES_PER_CLIENT",
                                  "LOCAL_TEST_FRACTION", "BATCH_SIZE", "CLIENT_LR")}
    job.update(NUM_CLIENTS=values["DP_NUM_CLIENTS"], CLIENTS_PER_ROUND=values["DP_CLIENTS_PER_ROUND"],
               ROUNDS=values["DP_ROUNDS"])
    _renamed(parse_params, {"NUM_CLIENTS": "DP_NUM_CLIENTS", "CLIENTS_PER_ROUND": "DP_CLIENTS_PER_ROUND",
                            "ROUNDS": "DP_ROUNDS"})(job)


def _hetero_examples(values, exp):
    """Notebook 05's heterogeneity runs: HETERO_TRAIN_EXAMPLES images for NUM_CLIENTS clients."""
    n = values["HETERO_TRAIN_EXAMPLES"]
    if n is not None and n < MIN_EXAMPLES_PER_CLIENT * exp.num_clients:
        raise ValueError(f"HETERO_TRAIN_EXAMPLES must be None or at least {MIN_EXAMPLES_PER_CLIENT} x NUM_CLIENTS "
                         f"= {MIN_EXAMPLES_PER_CLIENT * exp.num_clients}, got {n!r}")


def _uncompressed_baseline(values, exp):
    """Notebook 09 compares every bit width with 32 bits (no compression)."""
    if 32 not in values["BITS"]:
        raise ValueError(f"BITS must include 32 (no compression, the run the others are compared with), "
                         f"got {values['BITS']!r}")


def _classes_of_dataset(values, exp):
    classes = values["BINARY_CLASSES"]
    k = len(CLASS_NAMES[exp.dataset])
    if classes is not None and max(classes) >= k:
        raise ValueError(f"BINARY_CLASSES must be two class ids of {exp.dataset} (0 to {k - 1}), got {classes!r}")


NOTEBOOK_RULES: dict[str, list[Callable]] = {
    "03": [_at_least("NUM_CLIENTS", 2, "parts 2 and 3 mix two clients' models"),
           _below("DIFFERENT_INIT_CLIENTS", "NUM_CLIENTS", or_equal=True)],
    "05": [_hetero_examples, _classes_of_dataset],
    "06": [_at_least("NUM_CLIENTS", 2, "secure aggregation needs two clients"),
           _below("SECAGG_DROPOUTS", "NUM_CLIENTS"), _secagg_fits,
           _below("DP_CLIENTS_PER_ROUND", "DP_NUM_CLIENTS", or_equal=True), _dp_job,
           _below("DP_LAST_ROUNDS", "DP_ROUNDS", or_equal=True)],
    "07": [_below("NUM_FLIPPERS", "NUM_CLIENTS"), _below("NUM_ATTACKERS", "NUM_CLIENTS")],
    "08": [_at_least("NUM_CLIENTS", 2, "client drift compares clients' updates"),
           _below("LAST_ROUNDS", "ROUNDS", or_equal=True), _below("TFF_ROUNDS", "ROUNDS", or_equal=True)],
    "09": [_uncompressed_baseline],
    "10": [_flower_examples],
}


def _renamed(fn: Callable, names: dict[str, str]) -> Callable:
    """``fn``, with the parameter names in its ValueErrors renamed (a job's ``NUM_CLIENTS`` is
    notebook 06's ``DP_NUM_CLIENTS``)."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")

    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as err:
            raise ValueError(pattern.sub(lambda m: names[m.group(1)], str(err))) from None
    return call


@dataclass(frozen=True)
class NotebookParams:
    """What :func:`check_notebook_params` returns: ``params``, every parameter of the notebook,
    checked (``params["FEATURE_SKEW"]`` is None, "rotation" or "brightness", whatever spelling of
    None was given); ``exp``, the notebook's :class:`Experiment` (a smoke run's included); and
    ``job_params``, its experiment and FedAvg parameters (``PRESET`` applied; in a smoke run
    ``TRAIN_LIMIT`` cut to :data:`SMOKE_TRAIN_EXAMPLES`), as :func:`parse_params` and the jobs
    take them. ``checked[name]`` is ``checked.params[name]``."""
    notebook: str
    params: dict
    exp: Experiment
    job_params: dict

    def __getitem__(self, name: str):
        return self.params[name]


def check_notebook_params(notebook: str, params: Mapping) -> NotebookParams:
    """Check every parameter of a notebook (``"00"`` .. ``"07"``), before any work: its type, its
    range and how it combines with the others (:data:`NOTEBOOK_PARAMS`, :data:`NOTEBOOK_RULES`).
    A bad value is a ``ValueError`` that names the parameter, the value given and what is allowed.

    ``params``: the notebook's parameters by name (all of them; an unknown name is an error), or
    the notebook's own namespace, ``globals()``, from which its parameters are read.

        >>> checked = check_notebook_params("00", {"SEED": 0, "DATASET": "fashion_mnist",
        ...     "RESULTS_DIR": "build/results", "TFF_MODE": "auto", "SMOKE": False})
        >>> checked.exp.dataset, checked["TFF_MODE"]
        ('fashion_mnist', 'auto')
        >>> check_notebook_params("00", dict(checked.params, TFF_MODE="remote"))
        Traceback (most recent call last):
        ...
        ValueError: TFF_MODE must be one of 'auto', 'sidecar', got 'remote'
    """
    check_choice("notebook", notebook, NOTEBOOK_PARAMS)
    spec = NOTEBOOK_PARAMS[notebook]
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a dict of notebook {notebook}'s parameters, got {type(params).__name__}")
    if "__name__" not in params:  # not a namespace: exactly the notebook's parameters
        check_known(f"parameter(s) of notebook {notebook}", params, spec)
    missing = [name for name in spec if name not in params]
    if missing:
        raise ValueError(f"missing parameter(s) of notebook {notebook}: {', '.join(missing)}")
    values = {name: params[name] for name in spec}
    for name, how in spec.items():  # the notebook's own checks first
        check = how[1] if isinstance(how, tuple) else how
        if callable(check):
            values[name] = check(name, values[name])
    job = {name: values[name] for name, how in spec.items()
           if (how[0] if isinstance(how, tuple) else how) in (EXPERIMENT, FEDAVG)}
    absent = {"CLIENTS_PER_ROUND": None}  # a notebook without it: no per-round cap to check
    exp = parse_params(dict(absent, **job))[0]
    if values["SMOKE"] and "TRAIN_LIMIT" in job:  # a smoke run uses at most SMOKE_TRAIN_EXAMPLES
        job["TRAIN_LIMIT"] = min(job["TRAIN_LIMIT"] or SMOKE_TRAIN_EXAMPLES, SMOKE_TRAIN_EXAMPLES)
        exp = parse_params(dict(absent, **job))[0]
    if values.get("PRESET"):
        job = apply_preset(job, values["PRESET"], exp.train_examples)
        exp = parse_params(dict(absent, **job))[0]
    for rule in NOTEBOOK_RULES.get(notebook, ()):
        rule(values, exp)
    return NotebookParams(notebook, values, exp, job)


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
