"""The course's Keras models, written against ``tf.keras`` APIs present in Keras 2 and Keras 3.

- ``cnn_small``: the CNN of the TensorFlow FL tutorial (Conv 32 3x3 ReLU -> MaxPool 2x2 ->
  Flatten -> Dense 10), 54,410 parameters on 28x28x1 inputs;
- ``cnn_mcmahan``: the CNN of McMahan et al. 2017 (5x5 conv 32 -> pool -> 5x5 conv 64 -> pool ->
  Dense 512 -> Dense 10), 1,663,370 parameters on 28x28x1 inputs.

Models output logits; losses use ``from_logits=True``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

MODELS = ("cnn_small", "cnn_mcmahan")


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


_BUILDERS: dict[str, Callable] = {"cnn_small": _cnn_small, "cnn_mcmahan": _cnn_mcmahan}


def build_model(name: str = "cnn_small", input_shape: Sequence[int] = (28, 28, 1),
                num_classes: int = 10, seed: int | None = None):
    """A fresh, uncompiled Keras model. With ``seed``, its initial weights depend only on the seed."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if len(tuple(input_shape)) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    import tensorflow as tf

    if seed is not None:
        tf.keras.utils.set_random_seed(int(seed))
    return _BUILDERS[name](tf, tuple(input_shape), int(num_classes))


def compile_model(model, learning_rate: float = 0.05, momentum: float = 0.0):
    """Compile with plain SGD (the optimizer of FedAvg's clients), sparse categorical
    cross-entropy on logits, and accuracy."""
    import tensorflow as tf

    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    model.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def count_params(weights: Sequence[np.ndarray]) -> int:
    return int(sum(np.asarray(w).size for w in weights))


def weights_nbytes(weights: Sequence[np.ndarray]) -> int:
    """Bytes needed to send these weights (float32)."""
    return int(sum(np.asarray(w).size * 4 for w in weights))


def predict_logits(model, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Logits for ``x`` in batches (``model(x, training=False)``; faster than ``predict`` in
    a loop and silent)."""
    out = [np.asarray(model(x[i:i + batch_size], training=False))
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), "float32")


def predict_labels(model, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    return predict_logits(model, x, batch_size).argmax(axis=1)


def accuracy_of(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on (x, y)."""
    return float(np.mean(predict_labels(model, x) == np.asarray(y)))


def accuracy_with_weights(model, weights: Sequence[np.ndarray], x, y) -> float:
    """Accuracy of ``model``'s architecture with ``weights`` loaded (the model is changed)."""
    model.set_weights(list(weights))
    return accuracy_of(model, x, y)


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
        if self._model is None:
            self._model = build_model(*self.spec)
        return self._model

    def predict(self, weights) -> np.ndarray:
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
