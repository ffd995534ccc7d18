"""Split a training set across simulated clients (taught in Notebook 01; notebooks 02-07 reuse
the saved partition through :mod:`data_utils.experiment`).

One function per scheme, each seeded and deterministic, each returning a list of index arrays
(one per client, into the training set). :func:`make_partition` adds each client's local test
split and records the parameters, so a saved partition can be checked before it is reused.

- ``iid``: a uniform random split into (almost) equal parts;
- ``dirichlet``: label skew; each class is spread over the clients with proportions drawn from
  Dirichlet(alpha), so small alpha means few classes per client;
- ``pathological``: McMahan et al. 2017's sort-and-shard split; each client holds
  ``classes_per_client`` shards, each shard from a different class;
- ``quantity``: every client has the same label mix, but sizes follow a power law.

    >>> import numpy as np
    >>> labels = np.repeat(np.arange(4), 25)          # 100 examples, 4 classes
    >>> part = make_partition(labels, "pathological", num_clients=4, classes_per_client=2)
    >>> part.client_sizes().tolist(), part.label_counts(labels).astype(bool).sum(axis=1).tolist()
    ([23, 22, 22, 23], [2, 2, 2, 2])
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .validate import check_choice, check_fraction, check_int, check_positive

SCHEMES = ("iid", "dirichlet", "pathological", "quantity")
_MAX_DIRICHLET_TRIES = 1000


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(check_int("seed", seed, low=0))


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"labels must be non-negative integers, got dtype {labels.dtype} with "
                         f"values from {labels.min()} to {labels.max()}")
    return labels


def _check_num_clients(num_clients: int, n: int) -> int:
    num_clients = check_int("num_clients", num_clients, low=1)
    if num_clients > n:
        raise ValueError(f"num_clients must be at most the number of examples ({n}), got {num_clients}")
    return num_clients


def _check_min_size(min_size: int, num_clients: int, n: int) -> int:
    min_size = check_int("min_size", min_size, low=1)
    if min_size * num_clients > n:
        raise ValueError(f"min_size must be at most {n // num_clients} ({num_clients} clients x "
                         f"min_size must fit in {n} examples), got {min_size}")
    return min_size


def _split_by_proportions(indices: np.ndarray, proportions: np.ndarray) -> list[np.ndarray]:
    """Cut ``indices`` into consecutive parts whose sizes follow ``proportions``
    (largest-remainder rounding, so the sizes add up exactly)."""
    raw = proportions / proportions.sum() * len(indices)
    sizes = np.floor(raw).astype(int)
    remainder = len(indices) - sizes.sum()
    if remainder:
        sizes[np.argsort(-(raw - sizes), kind="stable")[:remainder]] += 1
    return np.split(indices, np.cumsum(sizes)[:-1])


def partition_iid(labels, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    """Uniform random split: client sizes differ by at most one.

    >>> [len(c) for c in partition_iid(np.zeros(10, dtype=int), num_clients=3)]
    [4, 3, 3]
    """
    labels = _check_labels(labels)
    num_clients = _check_num_clients(num_clients, len(labels))
    order = _rng(seed).permutation(len(labels))
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def partition_dirichlet(labels, num_clients: int, alpha: float, seed: int = 0,
                        min_size: int = 10) -> list[np.ndarray]:
    """Label skew: for each class, draw client proportions from Dirichlet(``alpha``) and deal the
    class's examples out accordingly. Redraws until every client has at least ``min_size``
    examples; raises ValueError if that cannot be met.

    >>> labels = np.repeat(np.arange(10), 100)
    >>> skewed = partition_dirichlet(labels, 5, alpha=0.1, seed=0)
    >>> [len(np.unique(labels[c])) for c in skewed]      # classes per client: few
    [2, 5, 9, 5, 8]
    >>> mixed = partition_dirichlet(labels, 5, alpha=100.0, seed=0)
    >>> [len(np.unique(labels[c])) for c in mixed]       # large alpha: close to IID
    [10, 10, 10, 10, 10]
    """
    labels = _check_labels(labels)
    num_clients = _check_num_clients(num_clients, len(labels))
    alpha = check_positive("alpha", alpha)
    min_size = _check_min_size(min_size, num_clients, len(labels))
    rng = _rng(seed)
    classes = np.unique(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    for _ in range(_MAX_DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            proportions = rng.dirichlet(np.full(num_clients, float(alpha)))
            for client, chunk in enumerate(_split_by_proportions(idx, proportions)):
                parts[client].append(chunk)
        clients = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(c) for c in clients) >= min_size:
            return clients
    raise ValueError(
        f"min_size={min_size} cannot be met with alpha={alpha} and {num_clients} clients after "
        f"{_MAX_DIRICHLET_TRIES} draws; use a larger alpha, fewer clients or a smaller min_size")


def partition_pathological(labels, num_clients: int, classes_per_client: int = 2,
                           seed: int = 0) -> list[np.ndarray]:
    """McMahan et al. 2017's sort-and-shard split: the examples of each class are cut into equal
    shards, and each client receives ``classes_per_client`` shards of *different* classes, so it
    holds at most ``classes_per_client`` classes. Classes are dealt round-robin in a seeded random
    order; when ``num_clients * classes_per_client`` is smaller than the number of classes, some
    classes go unused.

    >>> labels = np.repeat(np.arange(10), 100)
    >>> parts = partition_pathological(labels, 5, classes_per_client=2, seed=0)
    >>> [np.unique(labels[c]).tolist() for c in parts]
    [[1, 8], [3, 5], [0, 9], [4, 6], [2, 7]]
    """
    labels = _check_labels(labels)
    num_clients = _check_num_clients(num_clients, len(labels))
    classes = np.unique(labels)
    k = check_int("classes_per_client", classes_per_client, low=1)
    if k > len(classes):
        raise ValueError(f"classes_per_client must be at most the number of classes "
                         f"({len(classes)}), got {k}")
    rng = _rng(seed)
    class_order = rng.permutation(classes)
    # Shard s holds class class_order[s % C]; client c takes shards c*k .. c*k+k-1, which are k
    # consecutive positions modulo C and therefore k different classes.
    shard_class = class_order[np.arange(num_clients * k) % len(classes)]
    shards_of_class = {c: np.flatnonzero(shard_class == c) for c in classes}
    shard_indices: dict[int, np.ndarray] = {}
    for c, shard_ids in shards_of_class.items():
        if len(shard_ids) == 0:
            continue
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < len(shard_ids):
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than the {len(shard_ids)} "
                             "shards it must fill; use fewer clients or fewer classes per client")
        for shard, chunk in zip(shard_ids, np.array_split(idx, len(shard_ids))):
            shard_indices[int(shard)] = chunk
    client_order = rng.permutation(num_clients)
    return [np.sort(np.concatenate([shard_indices[c * k + j] for j in range(k)]))
            for c in client_order]


def partition_quantity(labels, num_clients: int, seed: int = 0, exponent: float = 1.0,
                       min_size: int = 10) -> list[np.ndarray]:
    """Quantity skew: client sizes proportional to ``rank ** -exponent`` (a power law, in a seeded
    random client order), each class split in those proportions, so every client has the same
    label mix. Each client gets at least ``min_size`` examples.

    >>> labels = np.repeat(np.arange(10), 100)
    >>> parts = partition_quantity(labels, 5, seed=0, exponent=1.0)
    >>> [len(c) for c in parts], [len(np.unique(labels[c])) for c in parts]
    ([150, 90, 110, 430, 220], [10, 10, 10, 10, 10])
    """
    labels = _check_labels(labels)
    num_clients = _check_num_clients(num_clients, len(labels))
    exponent = check_positive("exponent", exponent, allow_zero=True)
    min_size = _check_min_size(min_size, num_clients, len(labels))
    rng = _rng(seed)
    weights = np.arange(1, num_clients + 1, dtype=float) ** (-float(exponent))
    weights = weights[rng.permutation(num_clients)]
    # Reserve min_size per client (stratified as far as possible), share the rest by the power law.
    order = rng.permutation(len(labels))
    stratified = order[np.argsort(labels[order], kind="stable")]  # grouped by class, random within
    reserve = stratified[np.linspace(0, len(labels) - 1, min_size * num_clients).astype(int)]
    rest = np.setdiff1d(np.arange(len(labels)), reserve)
    parts: list[list[np.ndarray]] = [[reserve[c::num_clients]] for c in range(num_clients)]
    for c in np.unique(labels[rest]):
        idx = rng.permutation(rest[labels[rest] == c])
        for client, chunk in enumerate(_split_by_proportions(idx, weights)):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


@dataclass
class Partition:
    """Which training examples each client holds, split into local train and local test."""

    params: dict
    train: list[np.ndarray]
    test: list[np.ndarray] = field(default_factory=list)

    @property
    def num_clients(self) -> int:
        """How many clients the partition has."""
        return len(self.train)

    def client_sizes(self) -> np.ndarray:
        """Each client's number of local-train examples."""
        return np.array([len(t) for t in self.train])

    def label_counts(self, labels, num_classes: int | None = None, split: str = "train") -> np.ndarray:
        """A (clients x classes) matrix of label counts in the chosen split."""
        split = check_choice("split", split, ("train", "test"))
        labels = np.asarray(labels)
        num_classes = num_classes or int(labels.max()) + 1
        parts = self.train if split == "train" else self.test
        return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])

    def save(self, path: str | os.PathLike) -> Path:
        """Save indices and parameters to one ``.npz`` file (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"train_{i}": t for i, t in enumerate(self.train)}
        arrays.update({f"test_{i}": t for i, t in enumerate(self.test)})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, params=json.dumps(self.params, sort_keys=True), **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Partition":
        """The partition :meth:`save` wrote to ``path``."""
        with np.load(path, allow_pickle=False) as data:
            params = json.loads(str(data["params"]))
            n = sum(1 for k in data.files if k.startswith("train_"))
            train = [data[f"train_{i}"] for i in range(n)]
            test = [data[f"test_{i}"] for i in range(n)] if "test_0" in data.files else []
        return cls(params=params, train=train, test=test)


def partition_params(labels, scheme: str = "iid", num_clients: int = 10, seed: int = 0, *,
                     alpha: float = 0.5, classes_per_client: int = 2, min_size: int = 10,
                     exponent: float = 1.0, local_test_fraction: float = 0.1) -> dict:
    """The parameters :func:`make_partition` records: only those that matter to ``scheme``."""
    check_choice("scheme", scheme, SCHEMES)
    check_fraction("local_test_fraction", local_test_fraction)
    labels = _check_labels(labels)
    params = {"scheme": scheme, "num_clients": num_clients, "seed": seed,
              "num_examples": int(len(labels)),
              # a fingerprint of the labels: a partition of another dataset (or subset) never matches
              "labels_sha1": hashlib.sha1(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()[:16],
              "local_test_fraction": float(local_test_fraction)}
    if scheme == "dirichlet":
        params.update(alpha=alpha, min_size=min_size)
    elif scheme == "pathological":
        params.update(classes_per_client=classes_per_client)
    elif scheme == "quantity":
        params.update(exponent=exponent, min_size=min_size)
    return json.loads(json.dumps(params, default=lambda v: v.item()))  # plain JSON types


def make_partition(labels, scheme: str = "iid", num_clients: int = 10, seed: int = 0, *,
                   alpha: float = 0.5, classes_per_client: int = 2, min_size: int = 10,
                   exponent: float = 1.0, local_test_fraction: float = 0.1) -> Partition:
    """Partition ``labels`` with ``scheme`` and split each client's examples into local train and
    local test (``local_test_fraction`` of each client; at least one example stays for training).

    The parameters that matter to the chosen scheme are recorded in ``Partition.params``; the
    same recorded parameters always give the same partition.

    >>> labels = np.repeat(np.arange(10), 20)
    >>> part = make_partition(labels, "iid", num_clients=4, local_test_fraction=0.2)
    >>> part.client_sizes().tolist(), [len(t) for t in part.test]
    ([40, 40, 40, 40], [10, 10, 10, 10])
    >>> part.params["scheme"], part.params["local_test_fraction"]
    ('iid', 0.2)
    """
    params = partition_params(labels, scheme, num_clients, seed, alpha=alpha,
                              classes_per_client=classes_per_client, min_size=min_size,
                              exponent=exponent, local_test_fraction=local_test_fraction)
    labels = _check_labels(labels)
    if scheme == "iid":
        clients = partition_iid(labels, num_clients, seed)
    elif scheme == "dirichlet":
        clients = partition_dirichlet(labels, num_clients, alpha, seed, min_size)
    elif scheme == "pathological":
        clients = partition_pathological(labels, num_clients, classes_per_client, seed)
    else:
        clients = partition_quantity(labels, num_clients, seed, exponent, min_size)
    rng = np.random.default_rng([int(seed), 1])
    train, test = [], []
    for idx in clients:
        n_test = min(int(round(len(idx) * local_test_fraction)), len(idx) - 1)
        shuffled = rng.permutation(idx)
        test.append(np.sort(shuffled[:n_test]))
        train.append(np.sort(shuffled[n_test:]))
    return Partition(params=params, train=train, test=test)


def load_or_make_partition(path: str | os.PathLike, labels, **kwargs) -> tuple[Partition, str]:
    """Reuse the partition saved at ``path`` if it was made with the same parameters, else make
    it (same seed, same result) and save it. Returns the partition and what happened
    (``"loaded"``, ``"created"`` or ``"recreated: ..."``), so a notebook can say which."""
    wanted = partition_params(labels, **kwargs)
    path = Path(path)
    status = "created"
    if path.is_file():
        try:
            saved = Partition.load(path)
        except Exception as err:  # noqa: BLE001 - a corrupt or foreign file is rebuilt
            saved, status = None, f"recreated: the saved file could not be read ({err})"
        if saved is not None:
            if saved.params == wanted:
                return saved, "loaded"
            changed = sorted(k for k in set(saved.params) | set(wanted)
                             if saved.params.get(k) != wanted.get(k))
            detail = ", ".join(f"{k}: {saved.params.get(k)!r} -> {wanted.get(k)!r}"
                               if len(repr(wanted.get(k))) < 20 else k for k in changed)
            if len(detail) > 120:  # a long diff: the names say enough (notebook outputs stay short)
                detail = "differ in " + ", ".join(changed)
            status = f"recreated: saved with other parameters ({detail})"
    partition = make_partition(labels, **kwargs)
    partition.save(path)
    return partition, status


def label_entropy(counts) -> np.ndarray:
    """Shannon entropy (bits) of each row of a (clients x classes) count matrix: 0 for a client
    holding one class, log2(number of classes) for a perfectly balanced one; 0 for an empty row.

    >>> label_entropy([[5, 5, 0, 0], [10, 0, 0, 0], [1, 1, 1, 1]]).tolist()
    [1.0, 0.0, 2.0]
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    if np.any(counts < 0):
        raise ValueError(f"counts must be non-negative, got a minimum of {counts.min():g}")
    totals = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=1)


def client_statistics(partition: Partition, labels, num_classes: int | None = None) -> list[dict]:
    """One row per client: local-train and local-test sizes, the number of classes present in its
    local-train data, the label entropy (bits) and the share of its largest class."""
    counts = partition.label_counts(labels, num_classes)
    entropy = label_entropy(counts)
    totals = counts.sum(axis=1)
    test_sizes = [len(t) for t in partition.test] if partition.test else [0] * partition.num_clients
    return [{"client": c, "train_examples": int(totals[c]), "test_examples": int(test_sizes[c]),
             "classes_present": int(np.count_nonzero(counts[c])), "label_entropy_bits": float(entropy[c]),
             "largest_class_share": float(counts[c].max() / totals[c]) if totals[c] else 0.0}
            for c in range(partition.num_clients)]
