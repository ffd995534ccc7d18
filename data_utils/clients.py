"""Which clients take part, which examples they train on, in which order (notebooks 03 and 04).

A *client* here is a simulated device or organisation holding its own slice of the training set.
:class:`ClientArrays` gives client i's (x, y) lazily; :func:`sample_clients` picks each round's
clients as a pure function of (seed, round); :func:`client_batches` lays out one client's local
epochs as batches, seeded per (seed, round, client). The hand-written FedAvg and TFF's use the
very same clients, examples and batch order, so their runs agree round by round.

    >>> import numpy as np
    >>> sample_clients(num_clients=10, m=3, round_num=1, seed=0).tolist()
    [3, 4, 7]
    >>> b = client_batches(np.zeros((5, 2)), np.arange(5), epochs=2, batch_size=2, seed=0)
    >>> b.bounds.tolist()
    [[0, 2], [2, 4], [4, 5], [5, 7], [7, 9], [9, 10]]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .validate import check_fraction, check_int


def num_sampled(num_clients: int, client_fraction: float | None = None,
                clients_per_round: int | None = None) -> int:
    """How many clients take part in a round: ``clients_per_round``, or max(1, round(C * K))."""
    if clients_per_round is not None:
        return check_int("clients_per_round", clients_per_round, 1, num_clients)
    client_fraction = check_fraction("client_fraction", client_fraction, allow_zero=False, allow_one=True)
    return max(1, int(round(client_fraction * num_clients)))


def sample_clients(num_clients: int, m: int, round_num: int, seed: int) -> np.ndarray:
    """The ``m`` clients of round ``round_num`` (1-based), drawn without replacement; a pure
    function of (seed, round), so TFF and the manual loop see the same clients. With m equal to
    num_clients every client takes part, in order."""
    if m == num_clients:
        return np.arange(num_clients)
    rng = np.random.default_rng([int(seed), 2, int(round_num)])
    return np.sort(rng.choice(num_clients, size=m, replace=False))


def epoch_orders(n: int, epochs: int, seed: int, round_num: int, client: int) -> list[np.ndarray]:
    """One permutation of range(n) per local epoch, a pure function of (seed, round, client)."""
    rng = np.random.default_rng([int(seed), 3, int(round_num), int(client)])
    return [rng.permutation(n) for _ in range(epochs)]


def training_order(n: int, epochs: int, batch_size: int | None, seed: int, round_num: int = 0,
                   client: int = 0) -> tuple[np.ndarray, int]:
    """A client's example order for one round (its ``epochs`` seeded permutations of
    ``range(n)``, one after the other, as int64) and its batch size (``None``: the full batch),
    checked: what :func:`client_batches` and TFF's client datasets
    (:func:`data_utils.tff_fedavg.compact_client_dataset`) both batch."""
    epochs = check_int("local epochs", epochs, low=1)
    batch_size = check_int("batch_size (None: full batch)", batch_size, low=1, allow_none=True)
    if n == 0:
        raise ValueError("a client with no examples cannot train")
    order = np.concatenate(epoch_orders(n, epochs, seed, round_num, client)).astype(np.int64)
    return order, n if batch_size is None else int(batch_size)


@dataclass(frozen=True)
class ClientBatches:
    """A client's local training for one round, as arrays: the examples of every local epoch in
    training order (``x``, ``y``: ``epochs`` blocks of ``n`` rows), each batch's ``[start, end)``
    rows (``bounds``; batches never cross an epoch's end) and the batch size. The manual loop
    trains on it directly (:meth:`data_utils.training.Trainer.run`); :meth:`as_dataset` gives TFF the very same
    batches as a ``tf.data.Dataset``."""
    x: np.ndarray
    y: np.ndarray
    bounds: np.ndarray  # shape (num_batches, 2), int64
    n: int  # examples per epoch
    batch_size: int

    def __len__(self) -> int:
        return len(self.bounds)

    def as_dataset(self):
        """The same batches, in the same order, as a ``tf.data.Dataset`` (TFF's client data)."""
        import tensorflow as tf

        ds = None
        for lo in range(0, len(self.x), self.n):  # one epoch at a time
            part = tf.data.Dataset.from_tensor_slices(
                (self.x[lo:lo + self.n], self.y[lo:lo + self.n])).batch(self.batch_size)
            ds = part if ds is None else ds.concatenate(part)
        return ds


def client_batches(x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int | None,
                   seed: int, round_num: int = 0, client: int = 0) -> ClientBatches:
    """A client's local training data for one round: ``epochs`` passes, each in its own seeded
    order, batched within each epoch (a batch never mixes two epochs; ``batch_size=None``: one
    full batch per epoch, i.e. FedSGD). Deterministic: TFF and the manual loop get identical
    batches."""
    n = len(x)
    order, bs = training_order(n, epochs, batch_size, seed, round_num, client)
    starts = np.arange(0, n, bs)
    one_epoch = np.stack([starts, np.minimum(starts + bs, n)], axis=1)
    bounds = np.concatenate([one_epoch + e * n for e in range(epochs)]).astype(np.int64)
    return ClientBatches(np.ascontiguousarray(x[order]), y[order].astype("int32"), bounds, n, bs)


def client_dataset(x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int | None,
                   seed: int, round_num: int = 0, client: int = 0):
    """:func:`client_batches` as a ``tf.data.Dataset`` (what TFF's clients train on)."""
    return client_batches(x, y, epochs, batch_size, seed, round_num, client).as_dataset()


class ClientArrays:
    """The clients' data, indexed lazily: ``clients[i]`` returns client i's (x, y) arrays,
    sliced from the shared training arrays only when asked for (nothing per client is stored)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, client_indices: Sequence[np.ndarray]):
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        if len(client_indices) == 0:
            raise ValueError("need at least one client")
        self.x, self.y, self.indices = x, y, list(client_indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        idx = self.indices[i]
        return self.x[idx], self.y[idx]

    def sizes(self) -> np.ndarray:
        """Each client's number of examples."""
        return np.array([len(i) for i in self.indices])
