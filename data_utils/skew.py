"""Feature skew: each client sees its images through its own, slightly different "camera"
(notebook 01 shows it, notebook 02 trains on it; their ``FEATURE_SKEW`` parameter).

Label skew (:mod:`data_utils.partition`) changes *which* classes a client holds; feature skew
changes *how* its images look. Here each client gets a client-specific transformation, seeded:

- ``rotation``: every image of client i is rotated by the same angle a_i (degrees), with the
  angles spread evenly over ``[-strength, +strength]`` and dealt to clients in a seeded order;
- ``brightness``: every pixel of client i is shifted by b_i (clipped to [0, 1]), the shifts spread
  evenly over ``[-strength, +strength]`` the same way.

The transformation applies to a client's local-train *and* local-test examples (both come from
its device); the shared test set is left as it is.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from .validate import check_choice, check_int, check_number, check_positive

FEATURE_SKEWS = ("rotation", "brightness")
DEFAULT_STRENGTH = {"rotation": 30.0, "brightness": 0.3}


def check_feature_skew(kind, name: str = "FEATURE_SKEW") -> str | None:
    """``None`` (no skew) or one of :data:`FEATURE_SKEWS`; anything else is a ValueError naming
    ``name`` (``"none"`` and ``""`` also mean None)."""
    if kind is None or (isinstance(kind, str) and kind.lower() in ("none", "")):
        return None
    return check_choice(name, kind, (None, *FEATURE_SKEWS))


def client_skew_values(num_clients: int, kind: str, seed: int = 0,
                       strength: float | None = None) -> np.ndarray:
    """The per-client parameter: rotation angle in degrees or brightness shift, one per client,
    spread evenly over [-strength, strength] and assigned in a seeded random order."""
    kind = check_choice("kind", kind, FEATURE_SKEWS)  # None has no per-client values
    num_clients = check_int("num_clients", num_clients, low=1)
    seed = check_int("seed", seed, low=0)
    strength = check_positive("strength", DEFAULT_STRENGTH[kind] if strength is None else strength,
                              allow_zero=True)
    if kind == "brightness" and strength > 1:
        raise ValueError(f"strength must be at most 1 for a brightness shift (pixels are in "
                         f"[0, 1]), got {strength}")
    values = np.linspace(-strength, strength, num_clients) if num_clients > 1 else np.zeros(1)
    return values[np.random.default_rng([seed, 11]).permutation(num_clients)]


def rotate_images(images: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate (n, h, w, c) images by ``degrees`` counter-clockwise about their centre
    (bilinear, zero outside), keeping their size and the [0, 1] range."""
    from scipy import ndimage

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (n, height, width, channels), got {images.shape}")
    degrees = check_number("degrees", degrees)
    if degrees == 0 or len(images) == 0:
        return images.copy()
    out = ndimage.rotate(images, float(degrees), axes=(2, 1), reshape=False, order=1,
                         mode="constant", cval=0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def shift_brightness(images: np.ndarray, shift: float) -> np.ndarray:
    """Add ``shift`` to every pixel, clipped to [0, 1]."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(images + np.float32(check_number("shift", shift)), 0.0, 1.0)


def transform(images: np.ndarray, kind: str, value: float) -> np.ndarray:
    """One client's transformation of ``images``: ``rotation`` by ``value`` degrees or
    ``brightness`` shifted by ``value``."""
    kind = check_feature_skew(kind, "kind")
    if kind == "rotation":
        return rotate_images(images, value)
    if kind == "brightness":
        return shift_brightness(images, value)
    return np.asarray(images).copy()


def apply_feature_skew(data, partition, kind, seed: int = 0, strength: float | None = None):
    """A copy of ``data`` (an :class:`~data_utils.datasets.ImageDataset`) whose training images
    are transformed client by client (local train and local test), and the per-client values.
    Training images no client holds and the shared test set are unchanged. ``kind=None`` returns
    ``data`` itself and no values."""
    kind = check_feature_skew(kind, "kind")
    if kind is None:
        return data, None
    values = client_skew_values(partition.num_clients, kind, seed, strength)
    x = data.x_train.copy()
    for c in range(partition.num_clients):
        idx = _client_indices(partition, c)
        if len(idx):
            x[idx] = transform(data.x_train[idx], kind, values[c])
    return replace(data, x_train=x), values


def _client_indices(partition, client: int) -> np.ndarray:
    parts: Sequence[np.ndarray] = [partition.train[client]]
    if partition.test:
        parts = [*parts, partition.test[client]]
    return np.concatenate(parts).astype(int)
