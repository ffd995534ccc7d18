"""Image datasets for the course, as normalized float32 arrays with a channel axis (notebook 00
loads one; every later notebook loads its DATASET through :mod:`data_utils.experiment`).

Fashion-MNIST, the default, works with no internet: Debian's ``dataset-fashion-mnist`` package
ships the four original IDX files, which we hand to Keras's own loader by placing them in Keras's
cache folder. MNIST and CIFAR-10 load through Keras's normal download, which needs internet.
"""
from __future__ import annotations

import gzip
import os
import shutil
import socket
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .validate import check_choice

DEFAULT_DATASET = "fashion_mnist"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    # file name: (IDX magic number, number of items)
    "train-images-idx3-ubyte.gz": (2051, 60000),
    "train-labels-idx1-ubyte.gz": (2049, 60000),
    "t10k-images-idx3-ubyte.gz": (2051, 10000),
    "t10k-labels-idx1-ubyte.gz": (2049, 10000),
}
CLASS_NAMES = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "mnist": [str(d) for d in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}
DATASETS = tuple(CLASS_NAMES)
# Training images per dataset (known before loading, so parameters can be checked up front).
TRAIN_SIZES = {"fashion_mnist": 60000, "mnist": 60000, "cifar10": 50000}
OFFLINE_DATASETS = ("fashion_mnist",)
# Keras's download hosts, used only to tell "offline" from "online".
_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


class DatasetFileError(ValueError):
    """A dataset file exists but is truncated or corrupt."""


@dataclass(frozen=True)
class ImageDataset:
    """Training and test images (float32 in [0, 1], shape (n, h, w, c)) with int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple

    @property
    def num_classes(self) -> int:
        """How many classes the labels have."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple:
        """One image's shape: (height, width, channels)."""
        return tuple(self.x_train.shape[1:])

    def summary(self) -> dict:
        """Name, array shapes, number of classes and dtype, for printing."""
        return {
            "name": self.name,
            "x_train_shape": list(self.x_train.shape),
            "x_test_shape": list(self.x_test.shape),
            "num_classes": self.num_classes,
            "dtype": str(self.x_train.dtype),
        }


def keras_cache_dir() -> Path:
    """Keras's dataset cache (``$KERAS_HOME/datasets`` or ``~/.keras/datasets``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


def check_idx_file(path: Path, magic: int, count: int) -> None:
    """Raise :class:`DatasetFileError` unless ``path`` is a complete gzip'd IDX file with the
    expected magic number and item count (checks the whole stream, so truncation is caught)."""
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetFileError(
            f"{path} is truncated or not a valid gzip file ({err}). Delete it and load again, "
            "or reinstall the offline copy with: apt-get install --reinstall dataset-fashion-mnist"
        ) from None
    ndim = magic - 2048
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFileError(f"{path} is too short to be an IDX file ({len(data)} bytes)")
    found_magic, *dims = struct.unpack(">" + "I" * (1 + ndim), data[:header])
    expected_size = header + int(np.prod(dims))
    if found_magic != magic or dims[0] != count or len(data) != expected_size:
        raise DatasetFileError(
            f"{path} is corrupt: magic {found_magic} (expected {magic}), {dims[0]} items "
            f"(expected {count}), {len(data)} bytes (expected {expected_size}). Delete it and "
            "load again, or reinstall: apt-get install --reinstall dataset-fashion-mnist"
        )


def ensure_offline_fashion_mnist(source: Path | None = None) -> Path:
    """Put the four Fashion-MNIST files into Keras's cache (copying Debian's copy if needed),
    check them, and return the cache folder. Raises ValueError naming the fix if none is found."""
    source = Path(source) if source else DEBIAN_FASHION_MNIST
    target = keras_cache_dir() / "fashion-mnist"
    for name, (magic, count) in FASHION_MNIST_FILES.items():
        cached = target / name
        if not cached.exists() and (source / name).is_file():
            target.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".partial")
            shutil.copyfile(source / name, tmp)
            os.replace(tmp, cached)
        if cached.exists():
            check_idx_file(cached, magic, count)
    return target


def _online(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(_DOWNLOAD_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _keras_cached(name: str) -> bool:
    cache = keras_cache_dir()
    if name == "mnist":
        return (cache / "mnist.npz").is_file()
    if name == "cifar10":
        return (cache / "cifar-10-batches-py").is_dir()
    return all((cache / "fashion-mnist" / f).is_file() for f in FASHION_MNIST_FILES)


def _normalize(x: np.ndarray) -> np.ndarray:
    x = x.astype("float32") / 255.0
    return x[..., None] if x.ndim == 3 else x


def load_dataset(name: str = DEFAULT_DATASET) -> ImageDataset:
    """Load ``name`` (one of ``DATASETS``) as an :class:`ImageDataset`.

    Fashion-MNIST needs no internet when Debian's ``dataset-fashion-mnist`` is installed (or Keras
    has cached it). MNIST and CIFAR-10 download through Keras on first use.
    """
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if not isinstance(key, str) or key not in DATASETS:
        check_choice("name", name, DATASETS)  # the ValueError shows the name as given
    name = key
    if name == "fashion_mnist":
        ensure_offline_fashion_mnist()
    if not _keras_cached(name) and not _online():
        offline = ", ".join(OFFLINE_DATASETS)
        hint = ("install the offline copy with 'apt-get install dataset-fashion-mnist' (make setup "
                "does this)" if name == "fashion_mnist" else f"use an offline dataset ({offline})")
        raise ValueError(
            f"dataset {name!r} must be downloaded and there is no internet connection here; {hint}."
        )
    import tensorflow as tf

    loader = getattr(tf.keras.datasets, name)
    (x_train, y_train), (x_test, y_test) = loader.load_data()
    return ImageDataset(
        name=name,
        x_train=_normalize(x_train),
        y_train=np.asarray(y_train).reshape(-1).astype("int64"),
        x_test=_normalize(x_test),
        y_test=np.asarray(y_test).reshape(-1).astype("int64"),
        class_names=tuple(CLASS_NAMES[name]),
    )
