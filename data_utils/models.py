"""The course's Keras models, written against ``tf.keras`` APIs present in Keras 2 and Keras 3
(notebooks 02-07 train them; notebook 02 introduces them).

- ``cnn_small`` (Conv 32 3x3 ReLU -> MaxPool 2x2 -> Flatten -> Dense 10), 54,410 parameters on
  28x28x1 inputs: the CNN of the blog tutorial "Federated Learning with TensorFlow: A Practical
  Guide with Example Code" (Data Science Stunt,
  https://datasciencestunt.com/federated-learning-with-tensorflow/), with logits instead of its
  softmax output. It is not the model of TensorFlow Federated's own tutorial "Federated Learning
  for Image Classification", which trains a single dense layer on flattened EMNIST digits;
- ``cnn_mcmahan``: the CNN of McMahan et al. 2017, "Communication-Efficient Learning of Deep
  Networks from Decentralized Data" (5x5 conv 32 -> pool -> 5x5 conv 64 -> pool -> Dense 512 ->
  Dense 10), 1,663,370 parameters on 28x28x1 inputs;
- ``lenet5``: the LeNet-style CNN of Li et al. 2022 (NIID-Bench) and Flower's baseline
  ``niid_bench`` (5x5 conv 6 -> pool -> 5x5 conv 16 -> pool -> Dense 120 -> Dense 84 -> Dense 10,
  no padding, ReLU), 44,426 parameters on 28x28x1 inputs (the benchmark's section 5).

Models output logits; losses use ``from_logits=True``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .validate import check_choice, check_int, check_number, check_positive, is_int

MODELS = ("cnn_small", "cnn_mcmahan", "lenet5")


def _cnn_small(tf, input_shape, num_classes):
    layers = tf.keras.layers
    return tf.keras.Sequential([
        layers.Input(shape=input_shape),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(num_classes),
    ], name="cnn_small")


def _cnn_mcmahan(tf, input_shape, num_classes):
    layers = tf.keras.layers
    return tf.keras.Sequential([
        layers.Input(shape=input_shape),
        layers.Conv2D(32, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.Dense(num_classes),
    ], name="cnn_mcmahan")


def _lenet5(tf, input_shape, num_classes):
    layers = tf.keras.layers
    return tf.keras.Sequential([
        layers.Input(shape=input_shape),
        layers.Conv2D(6, 5, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(16, 5, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(120, activation="relu"),
        layers.Dense(84, activation="relu"),
        layers.Dense(num_classes),
    ], name="lenet5")


_BUILDERS: dict[str, Callable] = {"cnn_small": _cnn_small, "cnn_mcmahan": _cnn_mcmahan,
                                  "lenet5": _lenet5}


def build_model(name: str = "cnn_small", input_shape: Sequence[int] = (28, 28, 1),
                num_classes: int = 10, seed: int | None = None):
    """A fresh, uncompiled Keras model. With ``seed``, its initial weights depend only on the seed."""
    check_choice("name", name, MODELS)
    try:
        shape = tuple(input_shape)
    except TypeError:  # not a sequence
        shape = ()
    if len(shape) != 3 or not all(is_int(d) and d >= 1 for d in shape):
        raise ValueError(f"input_shape must be (height, width, channels) of positive integers, "
                         f"got {input_shape!r}")
    num_classes = check_int("num_classes", num_classes, low=2)
    seed = check_int("seed", seed, low=0, allow_none=True)
    import tensorflow as tf

    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    return _BUILDERS[name](tf, tuple(int(d) for d in shape), num_classes)


def compile_model(model, learning_rate: float = 0.05, momentum: float = 0.0):
    """Compile with plain SGD (the optimizer of FedAvg's clients), sparse categorical
    cross-entropy on logits, and accuracy."""
    learning_rate = check_positive("learning_rate", learning_rate)
    momentum = check_number("momentum", momentum, 0, 1)
    import tensorflow as tf

    model.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def count_params(weights: Sequence[np.ndarray]) -> int:
    """How many numbers a model's weights hold (all layers together)."""
    return int(sum(np.asarray(w).size for w in weights))


def weights_nbytes(weights: Sequence[np.ndarray]) -> int:
    """Bytes needed to send these weights (float32)."""
    return int(sum(np.asarray(w).size * 4 for w in weights))


def predict_logits(model, x: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """Logits for ``x`` in batches (``model(x, training=False)``; faster than ``predict`` in
    a loop and silent). Batches of 250 take half the CPU time of batches of 1,000 on this
    course's CNNs (10,000 test images: 1.2 s vs 2.7 s, measured on 2 cores)."""
    out = [np.asarray(model(x[i:i + batch_size], training=False))
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), "float32")


def predict_labels(model, x: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """The predicted class of each example of ``x`` (the argmax of :func:`predict_logits`)."""
    return predict_logits(model, x, batch_size).argmax(axis=1)


class WeightsEvaluator:
    """Scores weight lists on a fixed (x, y): ``evaluator(weights) -> {"test_accuracy": ...}``.

    Holds its own Keras model and rebuilds it when TFF has invalidated it: in Keras 2, building
    a TFF computation creates Keras layers inside a graph, which invalidates every Keras model
    made before ("Your Layer or Model is in an invalid state")."""

    def __init__(self, model_name: str, input_shape, num_classes: int, x, y,
                 key: str = "test_accuracy"):
        self.spec = (model_name, tuple(input_shape), int(num_classes))
        self.x, self.y, self.key = x, np.asarray(y), key
        self._model = None

    def model(self):
        """The evaluator's Keras model (built on first use, rebuilt after a TFF build)."""
        if self._model is None:
            self._model = build_model(*self.spec)
        return self._model

    def predict(self, weights) -> np.ndarray:
        """The predicted labels of ``x`` with ``weights`` loaded."""
        try:
            self.model().set_weights(list(weights))
            return predict_labels(self.model(), self.x)
        except ValueError as err:
            if "invalid state" not in str(err):
                raise
            self._model = None  # invalidated by a TFF build: make a new one
            self.model().set_weights(list(weights))
            return predict_labels(self.model(), self.x)

    def __call__(self, weights) -> dict:
        return {self.key: float(np.mean(self.predict(weights) == self.y))}
