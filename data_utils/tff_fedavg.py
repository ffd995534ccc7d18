"""Everything built with TensorFlow Federated 0.87 (notebooks 00, 04-07): the Keras model
wrapped for TFF, FedAvg's learning process, federated evaluation, and the round driver.

The clients are the same :class:`~data_utils.clients.ClientArrays` as the hand-written loop's;
each round only the sampled clients' ``tf.data`` datasets are built (lazily), with exactly the
batches :func:`~data_utils.clients.client_dataset` gives the hand-written loop, and the rounds run
in the same :func:`~data_utils.fedavg.run_rounds` loop, so both runs are comparable round by
round. TFF itself is imported only when a function needs it (:func:`import_tff`; Python 3.9-3.11
and Keras 2 only), so this module imports anywhere.

Notebook 04 shows the same TFF code in its own cells (tagged ``tff-lesson``: ``make_model_fn``,
``build_fedavg_process``, ``initial_state``, ``train_with_tff``) and trains with them when TFF is in
its process; :func:`build_process` and :func:`run_tff_fedavg` are their package version, which the
side-environment job (:func:`data_utils.jobs.tff_fedavg_job`) runs. ``tests/test_tff.py`` checks
that both give the same weights and accuracy round by round.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Callable

import numpy as np

from .aggregation import Weights
from .clients import ClientArrays, training_order
from .experiment import load_data, parse_params
from .fedavg import FedAvgConfig, RoundStep, run_rounds
from .models import build_model
from .env import atomic_write_bytes, atomic_write_text
from .validate import check_choice


def import_tff():
    """Import TFF, with a learner-facing message for the usual ways this fails."""
    import sys

    if sys.version_info[:2] > (3, 11):
        raise RuntimeError(
            f"TensorFlow Federated 0.87 needs Python 3.9-3.11; this is Python "
            f"{sys.version_info.major}.{sys.version_info.minor}. In Colab: Runtime -> Change runtime "
            "type -> Runtime version 2025.07 (Python 3.11), or use the side environment "
            "(data_utils.sidecar). Locally: make setup.")
    try:
        import tensorflow_federated as tff
    except ImportError as err:
        raise RuntimeError(
            f"TensorFlow Federated could not be imported ({err}). Install the course stack with "
            "`make setup` (locally) or `bash colab_setup.sh` (Colab); a plain `pip install "
            "tensorflow-federated` fails (its jaxlib==0.4.14 pin is gone from PyPI) or falls back "
            "to an ancient release.") from err
    version = tuple(int(p) for p in tff.__version__.split(".")[:2])
    if version < (0, 80):
        raise RuntimeError(
            f"TensorFlow Federated {tff.__version__} is too old for this course (it needs 0.87); "
            "pip fell back to an ancient release, usually because Python is not 3.11.")
    import tensorflow as tf

    if not tf.keras.__name__.startswith(("keras.api._v2", "tf_keras", "keras._tf_keras")) and \
            int(tf.__version__.split(".")[1]) >= 16:
        raise RuntimeError(
            f"TFF 0.87 needs Keras 2, but TensorFlow {tf.__version__} brings Keras 3. Use the "
            "course's Python 3.11 stack (TensorFlow 2.14).")
    if not _CONTEXT_SET:  # once per process: TFF's worker, started by the course (data_utils.workers)
        from .workers import use_local_worker

        use_local_worker()
        skip_autograph_where_unneeded()
        _CONTEXT_SET.append(True)
    return tff


_CONTEXT_SET: list = []

# TFF modules whose functions have no control flow on tensors (their `if`s and loops test Python
# values: structure checks, optimizer hyperparameters, Keras metric bookkeeping), plus `attr`,
# which TFF calls while tracing. AutoGraph rewrites each such function to graph code on first use
# (parse, transform, compile its source), and that rewrite, not the graph it produces, is most of
# the seconds `build_weighted_fed_avg` takes in a fresh process. Tracing them as plain Python
# gives the same graph. The client's training loop, the Keras model's forward pass and the
# aggregators keep AutoGraph (their loops and conditions do depend on tensors).
# TensorFlow Model Optimization's tensor encoders (what TFF's EncodedSumFactory and
# compression_aggregator run, notebook 09) were written for TF1 graphs: their conditions on tensors
# are tf.cond already. Skipping them cut measuring their encoded sizes from 9.3 to 1.9 CPU-s.
AUTOGRAPH_SKIPPED = ("tensorflow_federated.python.common_libs", "attr",
                     "tensorflow_federated.python.learning.metrics",
                     "tensorflow_federated.python.learning.optimizers",
                     "tensorflow_federated.python.learning.tensor_utils",
                     "tensorflow_model_optimization.python.core.internal.tensor_encoding")
AUTOGRAPH_ENV_VAR = "COURSE_AUTOGRAPH_ALL"  # "1": convert everything, as TFF does by default


def skip_autograph_where_unneeded() -> bool:
    """Tell AutoGraph not to convert :data:`AUTOGRAPH_SKIPPED` (once per process; TensorFlow's
    own modules are on the same list already). Returns False when ``$COURSE_AUTOGRAPH_ALL`` is
    "1" (TFF's default behaviour, for comparisons: ``make bench`` section 1 times both)."""
    if os.environ.get(AUTOGRAPH_ENV_VAR) == "1":
        return False
    from tensorflow.python.autograph.core import config as autograph_config

    rules = autograph_config.CONVERSION_RULES
    if not any(getattr(r, "_prefix", None) == AUTOGRAPH_SKIPPED[0] for r in rules):
        autograph_config.CONVERSION_RULES = tuple(
            autograph_config.DoNotConvert(m) for m in AUTOGRAPH_SKIPPED) + tuple(rules)
    return True


def keras_model_fn(model_name: str, input_shape, num_classes: int, element_spec) -> Callable:
    """A no-argument function that builds a fresh Keras model and wraps it for TFF."""
    tff = import_tff()
    import tensorflow as tf

    def model_fn():
        return tff.learning.models.from_keras_model(
            build_model(model_name, input_shape, num_classes),
            input_spec=element_spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    return model_fn


def element_spec(input_shape):
    """The type of one batch of a client's dataset: float32 images of ``input_shape`` and int32
    labels, any batch size (what ``from_keras_model`` needs as ``input_spec``)."""
    import tensorflow as tf

    return (tf.TensorSpec(shape=(None, *input_shape), dtype=tf.float32),
            tf.TensorSpec(shape=(None,), dtype=tf.int32))


# How TFF's learning processes loop over a client's batches. TFF's default, DATASET_REDUCE, runs the
# local training as one `tf.data.Dataset.reduce`; DATASET_ITERATOR as a graph loop over the
# dataset's iterator. Same batches, same updates; on CPU the iterator loop is the faster one
# (`make bench` section 1b, docs/benchmarks.md).
CLIENT_LOOP = "DATASET_ITERATOR"


def client_loop():
    """The ``tff.learning.LoopImplementation`` the course's TFF processes use (:data:`CLIENT_LOOP`)."""
    return getattr(import_tff().learning.LoopImplementation, CLIENT_LOOP)


def build_fedavg(model_name: str, input_shape, num_classes: int, client_lr: float,
                 server_lr: float = 1.0, model_aggregator=None, client_momentum: float = 0.0,
                 loop_implementation=None):
    """``tff.learning.algorithms.build_weighted_fed_avg`` with SGD on clients and server
    (``tff.learning.optimizers.build_sgdm``; the clients' with ``client_momentum`` if > 0),
    examples-weighted. ``loop_implementation``: a ``tff.learning.LoopImplementation`` (None:
    the course's, :func:`client_loop`; ``make bench`` section 1b compares them)."""
    tff = import_tff()
    return tff.learning.algorithms.build_weighted_fed_avg(
        keras_model_fn(model_name, input_shape, num_classes, element_spec(input_shape)),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(
            learning_rate=client_lr, momentum=client_momentum if client_momentum > 0 else None),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=server_lr),
        model_aggregator=model_aggregator,   # None: TFF's default (its weighted mean)
        loop_implementation=loop_implementation or client_loop(),
    )


def set_state_weights(process, state, weights: Weights):
    """Put Keras-ordered ``weights`` (all trainable in the course's models) into a TFF state."""
    tff = import_tff()
    current = process.get_model_weights(state)
    if len(current.trainable) != len(weights) or current.non_trainable:
        raise ValueError("weights do not match the TFF model's trainable variables")
    new = tff.learning.models.ModelWeights(
        trainable=[np.asarray(w, dtype=np.float32) for w in weights], non_trainable=[])
    return process.set_model_weights(state, new)


def state_weights(process, state) -> Weights:
    """The global model's weights in a TFF server ``state``, as a Keras-ordered list of arrays."""
    return [np.asarray(w) for w in process.get_model_weights(state).trainable]


def compact_client_dataset(x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int | None,
                           seed: int, round_num: int = 0, client: int = 0):
    """Exactly the batches of :func:`~data_utils.clients.client_dataset` (same epochs, orders and
    batch bounds), built so that the client's images are stored once, not once per local epoch:
    the epochs' example orders are batched as indices and each batch gathers its images. TFF
    serializes every client dataset and refuses one over 100 MB ("Serialized size of Dataset ...
    exceeds maximum allowed"), which a large non-IID client with 5 local epochs reaches when its
    images are copied per epoch (about 8,600 Fashion-MNIST images x 5 epochs)."""
    import tensorflow as tf

    n = len(x)
    order, size = training_order(n, epochs, batch_size, seed, round_num, client)
    images, labels = tf.constant(x), tf.constant(np.asarray(y).astype("int32"))
    ds = None
    for e in range(epochs):  # batched within each epoch, as client_batches does
        part = tf.data.Dataset.from_tensor_slices(order[e * n:(e + 1) * n]).batch(size)
        ds = part if ds is None else ds.concatenate(part)
    return ds.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)))


def federated_data(clients: ClientArrays, sampled, cfg: FedAvgConfig, round_num: int) -> list:
    """The sampled clients' datasets for one round, built only now (lazy): the same batches, in
    the same order, as the manual loop's (:func:`compact_client_dataset`)."""
    out = []
    for c in sampled:
        x, y = clients[c]
        out.append(compact_client_dataset(x, y, cfg.local_epochs, cfg.batch_size, cfg.seed, round_num, int(c)))
    return out


def run_tff_fedavg(process, state, clients: ClientArrays, cfg: FedAvgConfig,
                   evaluate: Callable[[Weights], dict] | None = None, progress: bool = True,
                   desc: str = "TFF FedAvg", on_round: Callable | None = None,
                   data_path: str = "files"):
    """Run ``cfg.rounds`` rounds of ``process.next`` on the sampled clients, in the same
    :func:`~data_utils.fedavg.run_rounds` loop (same sampling) as the hand-written FedAvg.
    Returns the final state and per-round history (train loss/accuracy from TFF, plus
    ``evaluate(weights)``).

    ``data_path="files"`` (the default) sends client ids and lets TFF's worker read each client's
    data from files (:class:`ClientFiles`, :func:`with_client_files`); ``"datasets"`` ships each
    sampled client's ``tf.data`` dataset from Python every round (:func:`federated_data`). Both
    train on the same batches in the same order."""
    check_choice("data_path", data_path, DATA_PATHS)
    files, runner = (_files_and_process(process, clients, cfg) if data_path == "files"
                     else (None, process))

    def step(state, sampled, r):
        if cfg.client_lr_schedule != "constant":  # the client learning rate lives in the state
            hparams = process.get_hparams(state)
            hparams["client_work"]["learning_rate"] = np.float32(cfg.client_lr_for_round(r))
            state = process.set_hparams(state, hparams)
        data = files.round_ids(sampled, r) if files is not None else federated_data(clients, sampled, cfg, r)
        result = runner.next(state, data)
        if files is not None:
            files.end_round()
        train = result.metrics["client_work"]["train"]
        return RoundStep(result.state, int(sum(len(clients.indices[c]) for c in sampled)),
                         {"train_loss": float(train["loss"]),
                          "train_accuracy": float(train["sparse_categorical_accuracy"])})

    return run_rounds(state, len(clients), cfg, step, weights_of=lambda s: state_weights(process, s),
                      evaluate=evaluate, on_round=on_round, progress=progress, desc=desc)


# How a round's client data reaches TFF: ids read from files inside the worker, or shipped datasets.
DATA_PATHS = ("files", "datasets")
_COMPOSED: dict = {}  # (process, clients, local training) -> (process, clients, files, composed process)


def _composed_key(process, clients: ClientArrays, cfg: FedAvgConfig) -> tuple:
    return (id(process), id(clients), cfg.local_epochs, cfg.batch_size)  # the seed only enters the order files


def _files_and_process(process, clients: ClientArrays, cfg: FedAvgConfig):
    """The :class:`ClientFiles` and composed process for this process, clients and local
    training, made once and reused (composing builds a new TFF computation)."""
    key = _composed_key(process, clients, cfg)
    hit = _COMPOSED.get(key)
    if hit is None or hit[0] is not process or hit[1] is not clients:
        files = ClientFiles(clients, cfg.local_epochs, cfg.batch_size, cfg.seed)
        hit = (process, clients, files, with_client_files(process, files))
        while len(_COMPOSED) >= 4:
            _COMPOSED.pop(next(iter(_COMPOSED)))[2].close()
        _COMPOSED[key] = hit
    hit[2].seed = int(cfg.seed)  # the order files of the next rounds use this run's seed
    return hit[2], hit[3]


def build_process(params: dict):
    """The TFF FedAvg process notebook 04 trains with (``build_weighted_fed_avg``, SGD on
    clients and server), built from the notebook's parameters (:func:`~data_utils.experiment.parse_params`)."""
    exp, cfg, _ = parse_params(params, own=JOB_OPTIONS)
    data = load_data(exp)
    return build_fedavg(exp.model, data.input_shape, data.num_classes, cfg.client_lr, cfg.server_lr,
                        client_momentum=cfg.client_momentum)


# Options of TFF's FedAvg job besides the experiment's and FedAvg's parameters.
JOB_OPTIONS = {
    "FED_EVAL": True,            # federated evaluation on the clients' local test splits
    "EVAL_BATCH_SIZE": 500,
    "TENSORBOARD_DIR": None,     # write TensorBoard event files here (relative: to the repo root)
    "COMPARE_DATA_PATHS": True,  # after training, time one round with shipped datasets vs client ids
}


def federated_evaluation(model_name: str, input_shape, num_classes: int, weights,
                         client_data: list, batch_size: int = 500) -> dict:
    """``tff.learning.algorithms.build_fed_eval`` on the given clients' (x, y) arrays with
    ``weights`` as the model: the example-weighted accuracy and loss over all those clients."""
    import tensorflow as tf

    tff = import_tff()
    client_data = [(x, y) for x, y in client_data if len(x) > 0]
    if not client_data:
        raise ValueError("federated evaluation needs at least one client with local test data")
    evaluation = tff.learning.algorithms.build_fed_eval(
        keras_model_fn(model_name, tuple(input_shape), num_classes, element_spec(tuple(input_shape))),
        loop_implementation=client_loop())
    state = evaluation.initialize()
    state = evaluation.set_model_weights(state, tff.learning.models.ModelWeights(
        trainable=[np.asarray(w, np.float32) for w in weights], non_trainable=[]))
    datasets = [tf.data.Dataset.from_tensor_slices((x, np.asarray(y, np.int32))).batch(batch_size)
                for x, y in client_data]
    metrics = evaluation.next(state, datasets).metrics["client_work"]["eval"]["current_round_metrics"]
    return {"accuracy": float(metrics["sparse_categorical_accuracy"]), "loss": float(metrics["loss"]),
            "num_examples": int(metrics["num_examples"]), "num_clients": len(client_data),
            "next_type_signature": str(evaluation.next.type_signature)}


# ---- the fast path: each client's data read inside TFF's worker, not shipped every round -------
class ClientFiles:
    """The clients' examples written once to files that TFF's worker reads itself, so a round
    sends client ids instead of datasets (:meth:`client_data`, :func:`with_client_files`).

    Each client's images go to ``c<i>.x`` (uint8 when the images are exactly ``uint8 / 255``,
    as Fashion-MNIST's are; else float32) and its labels to ``c<i>.y`` (int32), in
    ``<artifacts>/tff_clients/<fingerprint>/``, when the client is first sampled: the fingerprint
    hashes the images, labels and every client's indices, so a partition made with the same
    parameters reuses its files and any other gets its own. A round
    writes each sampled client's example order (:func:`~data_utils.clients.training_order`, the
    hand-written loop's) to a small file the client's dataset reads, so TFF trains on exactly the
    manual loop's batches; :meth:`round_ids` writes them and removes the previous round's.

    ``epochs``, ``batch_size`` (None: the full batch) and ``seed`` are the round's local training,
    as in :class:`~data_utils.fedavg.FedAvgConfig`; ``seed`` only enters the order files, so it
    may be changed between rounds without composing the process again."""

    def __init__(self, clients: ClientArrays, epochs: int, batch_size: int | None, seed: int,
                 directory: str | Path | None = None):
        training_order(1, epochs, batch_size, seed)  # checks epochs and batch_size
        self.clients, self.epochs, self.batch_size, self.seed = clients, int(epochs), batch_size, int(seed)
        self.input_shape = tuple(clients.x.shape[1:])
        self._stored, self.uint8, self.directory = _client_folder(clients, directory)
        self.orders = Path(tempfile.mkdtemp(prefix=f"orders-{os.getpid()}-", dir=self.directory))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.orders), True)
        self._written: list[Path] = []
        self._client_data = None

    def __len__(self) -> int:
        return len(self.clients)

    def round_ids(self, sampled, round_num: int) -> list[str]:
        """The ids of the sampled clients for round ``round_num`` (``"c<client>/r<round>"``), after
        writing their example orders for this round (and removing the previous round's)."""
        self.end_round()
        ids = []
        for c in sampled:
            c = int(c)
            self._write_client(c)
            order, _ = training_order(len(self.clients.indices[c]), self.epochs, self.batch_size,
                                      self.seed, round_num, c)
            self._written.append(atomic_write_bytes(self.orders / f"r{int(round_num)}_c{c}.i32",
                                                    order.astype("<i4").tobytes()))
            ids.append(f"c{c}/r{int(round_num)}")
        return ids

    def _write_client(self, c: int) -> None:
        """Write client ``c``'s examples unless they are there (from this or an earlier run)."""
        idx = self.clients.indices[c]
        for path, values in ((self.directory / f"c{c}.x", lambda: self._stored[idx]),
                             (self.directory / f"c{c}.y", lambda: self.clients.y[idx].astype("<i4"))):
            if not path.is_file():
                atomic_write_bytes(path, values().tobytes())

    def end_round(self) -> None:
        """Remove the order files of the last round (the worker has read them)."""
        for path in self._written:
            path.unlink(missing_ok=True)
        self._written = []

    def close(self) -> None:
        """Remove this object's order files (the clients' example files stay for reuse)."""
        self._written = []
        self._finalizer()

    def dataset_fn(self):
        """``client id -> tf.data.Dataset`` in TensorFlow ops only (TFF runs it inside its worker):
        read the client's images, labels and this round's order from files, batch the order
        within each epoch, gather each batch's examples (as :func:`compact_client_dataset`)."""
        import tensorflow as tf

        folder, orders = str(self.directory), str(self.orders)
        shape, epochs, batch_size, uint8 = self.input_shape, self.epochs, self.batch_size, self.uint8

        def dataset(client_id):
            client, rnd = tf.strings.split(client_id, "/")[0], tf.strings.split(client_id, "/")[1]
            raw = tf.io.read_file(tf.strings.join([folder, "/", client, ".x"]))
            x = (tf.cast(tf.io.decode_raw(raw, tf.uint8), tf.float32) / 255.0 if uint8
                 else tf.io.decode_raw(raw, tf.float32))
            x = tf.reshape(x, (-1, *shape))
            y = tf.io.decode_raw(tf.io.read_file(tf.strings.join([folder, "/", client, ".y"])), tf.int32)
            order = tf.io.decode_raw(tf.io.read_file(
                tf.strings.join([orders, "/", rnd, "_", client, ".i32"])), tf.int32)
            n = tf.cast(tf.size(y), tf.int64)
            size = n if batch_size is None else tf.constant(batch_size, tf.int64)
            batches = tf.data.Dataset.range(epochs).flat_map(   # batched within each epoch
                lambda e: tf.data.Dataset.from_tensor_slices(order[e * n:(e + 1) * n]).batch(size))
            return batches.map(lambda i: (tf.gather(x, i), tf.gather(y, i)))

        return dataset

    def client_data(self):
        """The clients as a ``tff.simulation.datasets.ClientData`` whose ``dataset_computation``
        (a TFF computation ``str -> dataset``) builds a client's round dataset from its id."""
        if self._client_data is None:
            tff = import_tff()
            probe = self.round_ids([0], 0)  # ClientData builds one dataset to learn its type
            self._client_data = tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
                probe, self.dataset_fn())
            self.end_round()
        return self._client_data


def compare_data_paths(process, state, clients: ClientArrays, cfg: FedAvgConfig, round_num: int = 1) -> dict:
    """One round of ``process`` from ``state`` both ways (the new state is dropped): with the
    sampled clients' datasets shipped from Python (:func:`federated_data`) and with client ids read
    from files (:func:`with_client_files`, as :func:`run_tff_fedavg` trains), each timed after a
    warm-up call (TFF compiles a computation on its first call). Returns the seconds of each and the bytes Python hands TFF:
    the serialized datasets (their images embedded as constants) against the ids."""
    from .clients import num_sampled, sample_clients

    sampled = sample_clients(len(clients), num_sampled(len(clients), cfg.client_fraction, cfg.clients_per_round),
                             round_num, cfg.seed)
    datasets = federated_data(clients, sampled, cfg, round_num)
    shipped_bytes = sum(len(ds._as_serialized_graph().numpy()) for ds in datasets)
    warm = _composed_key(process, clients, cfg) in _COMPOSED  # composed and run by the training
    files, composed = _files_and_process(process, clients, cfg)
    # TFF compiles a computation on its first call: a warm-up call first, with one batch per client
    # for the shipped datasets, with the full round for a composed process not run before.
    process.next(state, [ds.take(1) for ds in datasets])
    seconds = {}
    start = time.perf_counter()
    process.next(state, federated_data(clients, sampled, cfg, round_num))
    seconds["datasets"] = time.perf_counter() - start
    for _ in range(1 if warm else 2):
        start = time.perf_counter()
        ids = files.round_ids(sampled, round_num)
        composed.next(state, ids)
        files.end_round()
        seconds["files"] = time.perf_counter() - start
    return {"clients": [int(c) for c in sampled], "round": int(round_num),
            "examples": int(sum(len(clients.indices[c]) for c in sampled)) * cfg.local_epochs,
            "datasets_seconds": seconds["datasets"], "files_seconds": seconds["files"],
            "datasets_bytes": int(shipped_bytes), "ids_bytes": int(sum(len(i.encode()) for i in ids)),
            "files_mb": round(sum(f.stat().st_size for c in sampled for f in
                                  (files.directory / f"c{int(c)}.x", files.directory / f"c{int(c)}.y")) / 1e6, 2)}


_STORED: dict = {}  # id(images) -> (weak reference, stored images, uint8?, digest): one pass per array


def _stored_images(x: np.ndarray) -> tuple[np.ndarray, bool, bytes]:
    """The images as stored in the clients' files (uint8 if they are exactly ``uint8 / 255``,
    else float32), that flag and a digest of them; computed once per array in a process (the
    training set is shared by every run)."""
    hit = _STORED.get(id(x))
    if hit is not None and hit[0]() is x:
        return hit[1:]
    x8 = np.round(x * np.float32(255.0)).astype(np.uint8)
    uint8 = bool(x.dtype == np.float32 and np.array_equal(x8.astype(np.float32) / np.float32(255.0), x))
    stored = x8 if uint8 else x.astype("<f4")
    out = (stored, uint8, hashlib.blake2b(np.ascontiguousarray(stored).tobytes(), digest_size=16).digest())
    _STORED.clear()  # keep one array's copy at most
    try:
        _STORED[id(x)] = (weakref.ref(x), *out)
    except TypeError:  # an array type without weak references: do not cache
        pass
    return out


def _client_folder(clients: ClientArrays, directory=None) -> tuple[np.ndarray, bool, Path]:
    """The images as stored (uint8 if they are exactly ``uint8 / 255``, else float32), that flag,
    and the clients' folder, named by a fingerprint of the stored images, labels and every
    client's indices (the same partition of the same data: the same folder, its files reused).
    A client's files are written when it is first sampled (:meth:`ClientFiles.round_ids`)."""
    from .artifacts import artifacts_dir

    stored, uint8, images_digest = _stored_images(np.asarray(clients.x))
    digest = hashlib.blake2b(images_digest, digest_size=10)
    for part in (np.array(stored.shape), np.array([uint8]), np.asarray(clients.y).astype("<i8"),
                 np.array([len(i) for i in clients.indices]), *clients.indices):
        digest.update(np.ascontiguousarray(part).tobytes())
    root = Path(directory) if directory is not None else artifacts_dir() / "tff_clients"
    folder = root / digest.hexdigest()
    if not (folder / "meta.json").is_file():  # what the folder holds, for a person looking at it
        atomic_write_text(folder / "meta.json", json.dumps(
            {"clients": len(clients), "uint8": uint8, "input_shape": list(stored.shape[1:])}))
    return stored, uint8, folder


def with_client_files(process, client_files: ClientFiles):
    """``process`` composed with ``client_files``' dataset computation
    (``tff.simulation.compose_dataset_computation_with_learning_process``): the same learning
    process, whose ``next`` takes client ids (``{str}@CLIENTS``) and builds each client's dataset
    inside TFF's worker."""
    tff = import_tff()
    return tff.simulation.compose_dataset_computation_with_learning_process(
        client_files.client_data().dataset_computation, process)


# ---- type signatures, readable --------------------------------------------------------------------
_OPENERS, _CLOSERS = "<({[", ">)}]"


def _closes(text: str, i: int) -> bool:
    return text[i] in _CLOSERS and not (text[i] == ">" and i > 0 and text[i - 1] == "-")  # "->"


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        if text[i] in _OPENERS:
            depth += 1
        elif _closes(text, i):
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    return parts + [text[start:]]


def format_type_signature(signature, width: int = 100, indent: int = 0) -> str:
    """A TFF type signature (or its ``str``) as indented lines of at most about ``width``
    characters: a structure that fits stays on one line, a longer one gets one line per field.

    >>> print(format_type_signature("(<state=<lr=float32>@SERVER,data={int32[?]}@CLIENTS> -> <state=<lr=float32>@SERVER>)", 40))
    (
      <
        state=<lr=float32>@SERVER,
        data={int32[?]}@CLIENTS
      >
      -> <state=<lr=float32>@SERVER>
    )
    """
    text, pad = str(signature).strip(), " " * indent
    first = next((i for i, ch in enumerate(text) if ch in "<({"), None)
    if indent + len(text) <= width or first is None:
        return pad + text
    depth, end = 0, len(text) - 1
    for j in range(first, len(text)):
        depth += text[j] in _OPENERS
        depth -= _closes(text, j)
        if depth == 0:
            end = j
            break
    head, inner, tail = text[:first + 1], text[first + 1:end], text[end:]
    lines = [pad + head]
    sides = _split_top(inner, " -> ")
    if len(sides) == 2:  # a function: parameter -> result
        if sides[0].strip():
            lines.append(format_type_signature(sides[0], width, indent + 2))
        result = format_type_signature(sides[1].strip(), width - 3, indent + 2)
        lines.append(" " * (indent + 2) + "-> " + result.lstrip(" "))
    else:
        parts = _split_top(inner, ",")
        lines += [format_type_signature(part, width, indent + 2) + ("," if k < len(parts) - 1 else "")
                  for k, part in enumerate(parts)]
    return "\n".join(lines + [pad + tail])


def tensorboard_round(writer, row: dict) -> None:
    """Write one round's train loss and accuracy, test accuracy and seconds to a TensorBoard
    ``writer`` (:func:`tensorboard_writer`; nothing when it is None)."""
    if writer is None:
        return
    import tensorflow as tf

    with writer.as_default():
        for key in ("train_loss", "train_accuracy", "test_accuracy"):
            if key in row:
                tf.summary.scalar(key, row[key], step=row["round"])
        tf.summary.scalar("seconds_per_round", row["seconds"], step=row["round"])
    writer.flush()


def tensorboard_writer(directory):
    """A TensorBoard summary writer for ``directory`` (relative: to the repository root), or
    None when ``directory`` is empty."""
    if not directory:
        return None
    import tensorflow as tf

    from .env import repo_root

    path = Path(directory)
    path = path if path.is_absolute() else repo_root() / path
    path.mkdir(parents=True, exist_ok=True)
    return tf.summary.create_file_writer(str(path))
