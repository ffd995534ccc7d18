"""What training a model cost: examples processed, communication rounds, bytes uploaded (notebook 05).

Every model of notebook 05's table gets the same three numbers:

- **examples processed**: how many times an example went through a gradient computation (one
  example seen once counts 1): epochs x examples, and for FedAvg, local epochs x the examples of
  every client in every round it took part in;
- **rounds**: how many times the server and the clients exchanged models;
- **bytes uploaded by a client**, in total: its raw data for the centralized baseline (uint8
  pixels plus a one-byte label per image, the dataset's own format), nothing for a local-only
  model, one float32 model per round it takes part in for averaging.

    >>> centralized_cost([100, 200], epochs=2, input_shape=(28, 28, 1))["upload_bytes_max"]
    157000
    >>> fedavg_cost([[0, 1], [1]], client_sizes=[10, 20], local_epochs=1, model_bytes=400)
    {'examples_processed': 50, 'rounds': 2, 'upload_bytes_per_client': 600.0, 'upload_bytes_max': 800}
    >>> human_bytes(217_640)
    '217.64 kB'

Over many rounds (:func:`traffic_by_round`): what each client has sent (*up*) and received
(*down*) after 0, 1, 2, ... rounds, to set against its raw data (:func:`raw_data_bytes`);
:func:`crossover_round` finds the first round where the first reaches the second.

    >>> t = traffic_by_round([[0], [1], [0, 1]], num_clients=2, model_bytes=100)
    >>> t["up"][:, 0].tolist(), t["down"][:, 0].tolist()
    ([0, 100, 100, 200], [100, 200, 200, 300])
    >>> crossover_round([0, 100, 100, 200], 150)
    3
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .validate import check_int, is_int, is_number

COST_KEYS = ("examples_processed", "rounds", "upload_bytes_per_client", "upload_bytes_max")


def _sizes(client_sizes) -> np.ndarray:
    sizes = np.asarray(client_sizes)
    if sizes.ndim != 1 or sizes.size == 0:
        raise ValueError(f"client_sizes must be a non-empty list of example counts, got shape {sizes.shape}")
    if not np.issubdtype(sizes.dtype, np.integer) or np.any(sizes < 0):
        raise ValueError(f"client_sizes must be non-negative integers (examples per client), "
                         f"got {sizes.tolist()!r}")
    return sizes.astype(np.int64)


def _cost(examples, rounds, uploads) -> dict:
    uploads = np.asarray(uploads, dtype=np.int64)
    return {"examples_processed": int(examples), "rounds": int(rounds),
            "upload_bytes_per_client": float(uploads.mean()), "upload_bytes_max": int(uploads.max())}


def raw_example_bytes(input_shape) -> int:
    """Bytes of one training example in the dataset's own format: one uint8 per pixel value plus
    a one-byte label (785 for a 28x28 grayscale image).

        >>> raw_example_bytes((32, 32, 3))
        3073
    """
    shape = tuple(input_shape)
    if not shape or not all(is_int(s) and s >= 1 for s in shape):
        raise ValueError(f"input_shape must be positive integer dimensions, got {input_shape!r}")
    return int(np.prod([int(s) for s in shape])) + 1


def centralized_cost(client_sizes, epochs: int, input_shape) -> dict:
    """Cost of the centralized baseline: every client uploads its raw training data once
    (:func:`raw_example_bytes` per image), the server trains ``epochs`` passes over the union."""
    sizes = _sizes(client_sizes)
    epochs = check_int("epochs", epochs, low=1)
    return _cost(epochs * sizes.sum(), 0, sizes * raw_example_bytes(input_shape))


def local_cost(client_size: int, epochs: int) -> dict:
    """Cost of one local-only model: ``epochs`` passes over the client's data, nothing uploaded."""
    client_size = check_int("client_size", client_size, low=0)
    return _cost(check_int("epochs", epochs, low=1) * client_size, 0, [0])


def one_shot_cost(client_sizes, epochs: int, model_bytes: int) -> dict:
    """Cost of averaging the local-only models once: all of their training, one round, each
    client uploads its model once."""
    sizes = _sizes(client_sizes)
    epochs = check_int("epochs", epochs, low=1)
    model_bytes = check_int("model_bytes", model_bytes, low=1)
    return _cost(epochs * sizes.sum(), 1, np.full(len(sizes), model_bytes))


def fedavg_cost(round_clients: Sequence[Sequence[int]], client_sizes, local_epochs: int,
                model_bytes: int) -> dict:
    """Cost of a FedAvg run: ``round_clients[r]`` lists the clients that trained in round r+1
    (e.g. ``[row["clients"] for row in history]``). Each of them trains ``local_epochs`` passes
    over its data and uploads one model (``model_bytes``) per round it takes part in."""
    sizes = _sizes(client_sizes)
    local_epochs = check_int("local_epochs", local_epochs, low=1)
    model_bytes = check_int("model_bytes", model_bytes, low=1)
    times = np.zeros(len(sizes), dtype=np.int64)
    for r, clients in enumerate(round_clients):
        ids = np.asarray(list(clients), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(sizes)):
            raise ValueError(f"round {r + 1} names client(s) outside 0..{len(sizes) - 1}: {ids.tolist()}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"round {r + 1} names a client twice: {ids.tolist()}")
        times[ids] += 1
    return _cost(local_epochs * int((times * sizes).sum()), len(round_clients), times * model_bytes)


def human_bytes(n: float | None) -> str:
    """``1234567`` -> ``"1.23 MB"`` (decimal units); None -> ``"-"``."""
    if n is None:
        return "-"
    if not is_number(n) or n < 0:
        raise ValueError(f"a byte count must be a finite non-negative number, got {n!r}")
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def raw_data_bytes(client_sizes, input_shape) -> np.ndarray:
    """Each client's raw training data in the dataset's own format (:func:`raw_example_bytes`
    per example): what it would upload once for the centralized baseline.

        >>> raw_data_bytes([2, 10], (28, 28, 1)).tolist()
        [1570, 7850]
    """
    return _sizes(client_sizes) * raw_example_bytes(input_shape)


def traffic_by_round(round_clients: Sequence[Sequence[int]], num_clients: int, model_bytes: int,
                     final_download: bool = True) -> dict:
    """Cumulative bytes per client after 0, 1, ..., R rounds of FedAvg (``round_clients[r]``
    lists the clients of round r+1, e.g. from :func:`data_utils.clients.sample_clients`).

    In a round, each sampled client **downloads** the global model (the broadcast) and
    **uploads** its trained model: ``model_bytes`` each way. With ``final_download`` every
    client also downloads the final global model once, to use it (so a client that never took
    part still receives ``model_bytes``). Returns ``{"rounds": [0..R], "up": (R+1, n) array,
    "down": (R+1, n) array}``, row r being what each client has exchanged if training stops
    after round r."""
    num_clients = check_int("num_clients", num_clients, low=1)
    model_bytes = check_int("model_bytes", model_bytes, low=1)
    times = np.zeros((len(round_clients) + 1, num_clients), dtype=np.int64)
    for r, clients in enumerate(round_clients, start=1):
        ids = np.asarray(list(clients), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= num_clients):
            raise ValueError(f"round {r} names client(s) outside 0..{num_clients - 1}: {ids.tolist()}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"round {r} names a client twice: {ids.tolist()}")
        times[r] = times[r - 1]
        times[r, ids] += 1
    up = times * model_bytes
    return {"rounds": np.arange(len(round_clients) + 1), "up": up,
            "down": up + (model_bytes if final_download else 0)}


def crossover_round(cumulative, threshold: float) -> int | None:
    """The first round (index into ``cumulative``, round 0 first) at which ``cumulative``
    reaches ``threshold``; None if it never does within the rounds given."""
    values = np.asarray(cumulative, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"cumulative must be a non-empty 1-D sequence, got shape {values.shape}")
    if not is_number(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a non-negative number of bytes, got {threshold!r}")
    hits = np.flatnonzero(values >= threshold)
    return int(hits[0]) if hits.size else None
