"""The dataset loader: real Fashion-MNIST offline, clear errors for unknown names, no internet,
and damaged files."""
import gzip
import re
import shutil

import numpy as np
import pytest

from data_utils import datasets as D


@pytest.fixture(scope="module")
def fmnist():
    return D.load_dataset("fashion_mnist")


def test_fashion_mnist_shapes_dtypes_ranges(fmnist):
    assert fmnist.x_train.shape == (60000, 28, 28, 1) and fmnist.x_test.shape == (10000, 28, 28, 1)
    assert fmnist.y_train.shape == (60000,) and fmnist.y_test.shape == (10000,)
    assert fmnist.x_train.dtype == np.float32 and fmnist.x_test.dtype == np.float32
    assert fmnist.y_train.dtype == np.int64
    assert fmnist.x_train.min() == 0.0 and fmnist.x_train.max() == 1.0
    assert 0.0 <= fmnist.x_test.min() and fmnist.x_test.max() <= 1.0
    assert set(np.unique(fmnist.y_train)) == set(range(10)) == set(np.unique(fmnist.y_test))
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class
    assert np.all(np.bincount(fmnist.y_train) == 6000) and np.all(np.bincount(fmnist.y_test) == 1000)
    assert fmnist.num_classes == 10 and fmnist.input_shape == (28, 28, 1)
    assert fmnist.class_names[0] == "T-shirt/top" and len(fmnist.class_names) == 10
    assert fmnist.summary()["x_train_shape"] == [60000, 28, 28, 1]


def test_other_spellings(fmnist):
    assert D.load_dataset("Fashion-MNIST").y_train[:100].tolist() == fmnist.y_train[:100].tolist()


@pytest.mark.parametrize("name", ["imagenet", "", None, 3])
def test_unknown_dataset(name):
    with pytest.raises(ValueError, match=re.escape(f"name must be one of 'fashion_mnist', 'mnist', "
                                                   f"'cifar10', got {name!r}")):
        D.load_dataset(name)


def test_mnist_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # nothing cached there
    monkeypatch.setattr(D, "_online", lambda timeout=3.0: False)
    with pytest.raises(ValueError, match="no internet.*fashion_mnist"):
        D.load_dataset("mnist")


def _copy_fmnist(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(D, "_online", lambda timeout=3.0: False)
    target = D.keras_cache_dir() / "fashion-mnist"
    target.mkdir(parents=True)
    for name in D.FASHION_MNIST_FILES:
        shutil.copyfile(D.DEBIAN_FASHION_MNIST / name, target / name)
    return target


def test_truncated_file_gives_dataset_file_error(tmp_path, monkeypatch):
    target = _copy_fmnist(tmp_path, monkeypatch)
    damaged = target / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-200])
    with pytest.raises(D.DatasetFileError, match="truncated"):
        D.load_dataset("fashion_mnist")
    assert issubclass(D.DatasetFileError, ValueError)


def test_corrupt_content_gives_dataset_file_error(tmp_path, monkeypatch):
    target = _copy_fmnist(tmp_path, monkeypatch)
    damaged = target / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(damaged.read_bytes()))
    data[3] = 99  # wrong magic number
    damaged.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(D.DatasetFileError, match="corrupt"):
        D.load_dataset("fashion_mnist")
    damaged.write_bytes(b"plain text, not gzip")
    with pytest.raises(D.DatasetFileError):
        D.check_idx_file(damaged, 2049, 10000)


def test_offline_copy_is_placed_in_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    target = D.ensure_offline_fashion_mnist()
    assert sorted(p.name for p in target.iterdir()) == sorted(D.FASHION_MNIST_FILES)
