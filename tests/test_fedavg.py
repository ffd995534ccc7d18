"""Manual FedAvg (data_utils.fedavg): averaging rules, client sampling, per-round client data,
FedSGD as one big gradient step, the robustness hooks, and notebook 03's hand-written FedAvg
against the package's. No TFF here (see test_tff.py); `make test-py313` runs this file under Keras 3 too."""
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_utils.aggregation import sequential_average, sequential_coefficients, weighted_average
from data_utils.clients import ClientArrays, client_batches, client_dataset, num_sampled, sample_clients
from data_utils.fedavg import FedAvgConfig, fedavg_round, run_fedavg
from data_utils.training import client_trainer

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (8, 8, 1)  # small images keep the Keras tests fast


# ---- averaging ---------------------------------------------------------------------------------
def test_weighted_average_by_hand():
    a = [np.array([[1.0, 2.0]], np.float32), np.array([0.0], np.float32)]
    b = [np.array([[3.0, 6.0]], np.float32), np.array([4.0], np.float32)]
    mean = weighted_average([a, b])
    np.testing.assert_allclose(mean[0], [[2.0, 4.0]])
    np.testing.assert_allclose(mean[1], [2.0])
    weighted = weighted_average([a, b], [1, 3])  # 1/4 a + 3/4 b
    np.testing.assert_allclose(weighted[0], [[2.5, 5.0]])
    np.testing.assert_allclose(weighted[1], [3.0])
    assert weighted[0].dtype == np.float32


def test_weighted_average_is_layer_by_layer_not_whole_model_mean():
    # layers of different shapes: a whole-model np.mean cannot even be formed, ours works
    a = [np.ones((2, 3)), np.zeros(5)]
    b = [np.zeros((2, 3)), np.ones(5)]
    out = weighted_average([a, b], [3, 1])
    assert [w.shape for w in out] == [(2, 3), (5,)]
    np.testing.assert_allclose(out[0], 0.75)
    np.testing.assert_allclose(out[1], 0.25)


@pytest.mark.parametrize("lists, coeffs, message", [
    ([], None, "empty"),
    ([[np.zeros(2)], [np.zeros(3)]], None, "shapes"),
    ([[np.zeros(2)], [np.array([np.nan, 0.0])]], None, "NaN"),
    ([[np.zeros(2)], [np.zeros(2)]], [1, -1], "non-negative"),
    ([[np.zeros(2)], [np.zeros(2)]], [0, 0], "not all zero"),
    ([[np.zeros(2)], [np.zeros(2)]], [1, 2, 3], "one coefficient per model"),
])
def test_weighted_average_rejects_bad_input(lists, coeffs, message):
    with pytest.raises(ValueError, match=message):
        weighted_average(lists, coeffs)


weights_strategy = st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.floats(-10, 10, width=32), min_size=3, max_size=3), min_size=n, max_size=n),
    st.lists(st.floats(0.01, 100), min_size=n, max_size=n)))


@settings(max_examples=60, deadline=None)
@given(weights_strategy)
def test_weighted_average_properties(case):
    values, counts = case
    lists = [[np.array(v, np.float64)] for v in values]
    out = weighted_average(lists, counts)[0]
    stacked = np.array(values)
    # a convex combination: inside the per-coordinate range of the inputs
    assert np.all(out >= stacked.min(axis=0) - 1e-9) and np.all(out <= stacked.max(axis=0) + 1e-9)
    # scaling every count by the same factor changes nothing
    np.testing.assert_allclose(weighted_average(lists, np.array(counts) * 7.0)[0], out, atol=1e-9)
    # identical models average to themselves
    np.testing.assert_allclose(weighted_average([lists[0]] * len(lists), counts)[0], lists[0][0],
                               atol=1e-9)


# ---- sequential ("Polyak", Raj 2020) averaging -------------------------------------------------
def test_sequential_coefficients_k_half():
    c = sequential_coefficients(10, 0.5)
    assert c[-1] == 0.5 and c[-2] == 0.25
    assert c[0] == c[1] == 0.5 ** 9
    assert sequential_coefficients(1, 0.5).tolist() == [1.0]
    assert np.isclose(c.sum(), 1.0)


@pytest.mark.parametrize("n, k", [(0, 0.5), (3, 1.5), (3, -0.1), (2.5, 0.5), (3, "half")])
def test_sequential_coefficients_reject_bad_input(n, k):
    with pytest.raises(ValueError):
        sequential_coefficients(n, k)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.floats(0, 1))
def test_sequential_coefficients_sum_to_one_and_grow(n, k):
    c = sequential_coefficients(n, k)
    assert c.shape == (n,) and np.all(c >= 0)
    assert np.isclose(c.sum(), 1.0)
    assert np.all(np.diff(c[1:]) >= 0)  # a later model never weighs less
    if 0.01 < k < 0.99 and n > 2:
        assert np.all(np.diff(c[1:]) > 0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_sequential_average_equals_weighted_average_with_its_coefficients(n, k, seed):
    rng = np.random.default_rng(seed)
    lists = [[rng.normal(size=(2, 3)), rng.normal(size=4)] for _ in range(n)]
    seq = sequential_average(lists, k)
    ref = weighted_average(lists, sequential_coefficients(n, k))
    for a, b in zip(seq, ref):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_sequential_average_by_hand():
    models = [[np.array([0.0])], [np.array([4.0])], [np.array([8.0])]]
    # w = 0 -> 0.5*4 + 0.5*0 = 2 -> 0.5*8 + 0.5*2 = 5
    assert sequential_average(models, 0.5)[0].tolist() == [5.0]
    assert weighted_average(models)[0].tolist() == [4.0]


# ---- sampling and client data ------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.integers(1, 50), st.data())
def test_sample_clients_is_a_seeded_subset(num_clients, data):
    m = data.draw(st.integers(1, num_clients))
    r = data.draw(st.integers(1, 100))
    seed = data.draw(st.integers(0, 1000))
    s = sample_clients(num_clients, m, r, seed)
    assert len(s) == m == len(set(s.tolist()))
    assert s.min() >= 0 and s.max() < num_clients
    assert np.array_equal(s, sample_clients(num_clients, m, r, seed))
    if m == num_clients:
        assert s.tolist() == list(range(num_clients))


def test_sample_clients_changes_with_round_and_seed():
    rounds = {tuple(sample_clients(100, 10, r, 0)) for r in range(1, 6)}
    assert len(rounds) == 5
    assert not np.array_equal(sample_clients(100, 10, 1, 0), sample_clients(100, 10, 1, 1))


def test_num_sampled():
    assert num_sampled(10, 0.1) == 1 and num_sampled(10, 0.5) == 5 and num_sampled(10, 1.0) == 10
    assert num_sampled(3, 0.01) == 1
    assert num_sampled(10, clients_per_round=4) == 4
    for bad in (dict(client_fraction=0), dict(client_fraction=1.5), dict(clients_per_round=11),
                dict(clients_per_round=0)):
        with pytest.raises(ValueError):
            num_sampled(10, **bad)


def _batches(ds):
    return [(np.asarray(x), np.asarray(y)) for x, y in ds]


def test_client_dataset_epochs_are_permutations_in_batches():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10)
    batches = _batches(client_dataset(x, y, epochs=2, batch_size=4, seed=0, round_num=1, client=3))
    assert [len(b[1]) for b in batches] == [4, 4, 2, 4, 4, 2]  # no batch mixes two epochs
    first = np.concatenate([b[1] for b in batches[:3]])
    second = np.concatenate([b[1] for b in batches[3:]])
    assert sorted(first) == sorted(second) == list(range(10))
    assert not np.array_equal(first, second)
    assert all(np.array_equal(bx.reshape(-1), by) for bx, by in batches)  # x and y stay paired
    again = _batches(client_dataset(x, y, epochs=2, batch_size=4, seed=0, round_num=1, client=3))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(batches, again))
    other = _batches(client_dataset(x, y, epochs=2, batch_size=4, seed=0, round_num=2, client=3))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(batches, other))
    full = _batches(client_dataset(x, y, epochs=1, batch_size=None, seed=0))
    assert len(full) == 1 and len(full[0][1]) == 10


@pytest.mark.parametrize("kwargs", [dict(epochs=0), dict(batch_size=0)])
def test_client_dataset_rejects_bad_input(kwargs):
    args = dict(epochs=1, batch_size=2, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError):
        client_dataset(np.zeros((4, 1, 1, 1), np.float32), np.zeros(4), **args)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 4), st.one_of(st.none(), st.integers(1, 50)),
       st.integers(0, 2**31 - 1))
def test_client_batches_cover_every_epoch_once_and_never_cross_an_epoch(n, epochs, batch_size, seed):
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
    b = client_batches(x, np.arange(n), epochs, batch_size, seed, round_num=2, client=5)
    bs = n if batch_size is None else batch_size
    assert len(b.x) == len(b.y) == epochs * n
    assert b.bounds[0][0] == 0 and b.bounds[-1][1] == epochs * n
    assert np.array_equal(b.bounds[1:, 0], b.bounds[:-1, 1])  # contiguous, in order
    sizes = b.bounds[:, 1] - b.bounds[:, 0]
    assert sizes.min() >= 1 and sizes.max() <= bs
    for e in range(epochs):  # each epoch: a permutation of the client's examples, in whole batches
        assert sorted(b.y[e * n:(e + 1) * n]) == list(range(n))
        assert e * n in b.bounds[:, 0]
    assert np.array_equal(b.x.reshape(-1), b.y)  # x and y stay paired


def test_client_batches_and_client_dataset_are_the_same_batches():
    x = np.arange(23, dtype=np.float32).reshape(23, 1, 1, 1)
    y = np.arange(23)
    b = client_batches(x, y, 3, 5, seed=4, round_num=1, client=2)
    from_ds = _batches(client_dataset(x, y, 3, 5, seed=4, round_num=1, client=2))
    from_bounds = [(b.x[s:e], b.y[s:e]) for s, e in b.bounds]
    assert len(from_ds) == len(from_bounds) == 15
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1])
               for p, q in zip(from_ds, from_bounds))


@pytest.mark.parametrize("epochs, batch_size", [(1, 5), (2, 7), (1, None)])
def test_trainer_run_compiled_loop_equals_model_fit(epochs, batch_size):
    """Trainer.run on ClientBatches (one compiled call) gives model.fit's weights on the same
    batches: same forward pass, loss and SGD steps, fresh optimizer each time."""
    clients, w0, make = _setup(num_clients=2)
    trainer = make(0.1)
    for client in range(2):
        x, y = clients[client]
        args = (x, y, epochs, batch_size, 0, 1, client)
        by_fit = trainer.run(w0, client_dataset(*args))
        by_loop = trainer.run(w0, client_batches(*args))
        for a, c in zip(by_fit, by_loop):
            np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
        assert not all(np.array_equal(a, w) for a, w in zip(by_loop, w0))


def test_client_arrays_and_config_validate():
    with pytest.raises(ValueError):
        ClientArrays(np.zeros((3, 1)), np.zeros(2), [np.arange(2)])
    with pytest.raises(ValueError):
        ClientArrays(np.zeros((3, 1)), np.zeros(3), [])
    for bad in (dict(rounds=-1), dict(client_lr=0), dict(server_lr=-1)):
        with pytest.raises(ValueError):
            FedAvgConfig(**bad)


# ---- the algorithm on a real Keras model -------------------------------------------------------
def _setup(num_clients=3, per_client=24, seed=0):
    from data_utils.models import build_model

    rng = np.random.default_rng(seed)
    n = num_clients * per_client
    x = rng.random((n, *SHAPE), dtype=np.float32)
    y = rng.integers(0, 10, n)
    sizes = np.linspace(per_client // 2, per_client * 3 // 2, num_clients).astype(int)
    sizes[-1] = n - sizes[:-1].sum()
    clients = ClientArrays(x, y, np.split(rng.permutation(n), np.cumsum(sizes)[:-1]))
    w0 = build_model("cnn_small", SHAPE, 10, seed=seed).get_weights()
    return clients, w0, lambda lr: client_trainer("cnn_small", SHAPE, 10, lr)


def test_fedsgd_round_is_one_gradient_step_on_the_union():
    """FedSGD (one full-batch step per client, example-weighted mean) equals one gradient step
    of the example-weighted sum of the clients' mean-loss gradients."""
    import tensorflow as tf

    clients, w0, make = _setup()
    lr = 0.1
    cfg = FedAvgConfig(rounds=1, local_epochs=1, batch_size=None, client_lr=lr)
    new, n = fedavg_round(make(lr), w0, clients, [0, 1, 2], cfg, round_num=1)
    model = make(lr).model
    model.set_weights(w0)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    grads = None
    for c in range(3):
        x, y = clients[c]
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        g = [np.asarray(v) * len(x) / n for v in tape.gradient(loss, model.trainable_variables)]
        grads = g if grads is None else [a + b for a, b in zip(grads, g)]
    expected = [w - lr * g for w, g in zip(w0, grads)]
    assert n == sum(clients.sizes())
    for a, b in zip(new, expected):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_fedavg_single_client_is_local_training_and_server_lr_scales_the_step():

    clients, w0, make = _setup()
    cfg = FedAvgConfig(rounds=1, local_epochs=2, batch_size=8, client_lr=0.05)
    new, _ = fedavg_round(make(0.05), w0, clients, [1], cfg, round_num=1)
    x, y = clients[1]
    local = make(0.05).run(w0, client_dataset(x, y, 2, 8, cfg.seed, 1, 1))
    for a, b in zip(new, local):
        np.testing.assert_allclose(a, b, atol=1e-6)
    half = FedAvgConfig(rounds=1, local_epochs=2, batch_size=8, client_lr=0.05, server_lr=0.5)
    new_half, _ = fedavg_round(make(0.05), w0, clients, [1], half, round_num=1)
    for h, a, g in zip(new_half, new, w0):
        np.testing.assert_allclose(h, g + 0.5 * (a - g), atol=1e-6)


def test_run_fedavg_is_deterministic_and_records_history():
    clients, w0, make = _setup()
    cfg = FedAvgConfig(rounds=2, client_fraction=0.67, local_epochs=1, batch_size=8, seed=5)
    calls = []
    w1, h1 = run_fedavg(make(0.05), w0, clients, cfg, progress=False,
                        evaluate=lambda w: calls.append(1) or {"norm": float(np.linalg.norm(w[-1]))})
    w2, h2 = run_fedavg(make(0.05), w0, clients, cfg, progress=False)
    assert len(calls) == 2 and [r.round for r in h1] == [1, 2]
    assert all(len(r.clients) == 2 for r in h1)
    assert [r.clients for r in h1] == [sample_clients(3, 2, r, 5).tolist() for r in (1, 2)]
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(w1[-1], w0[-1])
    row = h1[0].as_dict()
    json.dumps(row)
    assert row["round"] == 1 and "norm" in row and row["num_examples"] == h1[0].num_examples


def test_client_lr_schedule():
    cfg = FedAvgConfig(rounds=10, client_lr=0.1, client_lr_schedule="cosine")
    lrs = [cfg.client_lr_for_round(r) for r in range(1, 11)]
    assert lrs[0] == 0.1 and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] > 0
    assert FedAvgConfig(rounds=3, client_lr=0.1).client_lr_for_round(3) == 0.1
    with pytest.raises(ValueError, match="client_lr_schedule"):
        FedAvgConfig(client_lr_schedule="step")
    with pytest.raises(ValueError):
        cfg.client_lr_for_round(0)


def test_run_fedavg_follows_the_client_lr_schedule():
    clients, w0, make = _setup()
    cfg = FedAvgConfig(rounds=2, local_epochs=1, batch_size=8, client_lr=0.2, client_lr_schedule="cosine")
    weights, history = run_fedavg(make(0.2), w0, clients, cfg, progress=False)
    assert [r.metrics["client_lr"] for r in history] == [0.2, cfg.client_lr_for_round(2)]
    step1, _ = fedavg_round(make(0.2), w0, clients, [0, 1, 2], cfg, 1)
    step2, _ = fedavg_round(make(cfg.client_lr_for_round(2)), step1, clients, [0, 1, 2], cfg, 2)
    for a, b in zip(weights, step2):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_each_client_starts_with_a_fresh_optimizer():
    """With momentum, client 1 must not inherit client 0's velocity: one shared trainer gives
    the same result as a new model per client (TFF restarts the client optimizer too)."""
    clients, w0, _ = _setup()
    cfg = FedAvgConfig(rounds=1, local_epochs=1, batch_size=8, client_lr=0.05, client_momentum=0.9)
    shared, _ = fedavg_round(client_trainer("cnn_small", SHAPE, 10, cfg.client_lr, cfg.client_momentum), w0, clients, [0, 1], cfg, 1)
    separate = []
    for c in (0, 1):
        x, y = clients[c]
        separate.append(client_trainer("cnn_small", SHAPE, 10, cfg.client_lr, cfg.client_momentum).run(
            w0, client_dataset(x, y, 1, 8, cfg.seed, 1, c)))
    expected = weighted_average(separate, [len(clients[0][0]), len(clients[1][0])])
    for a, b in zip(shared, expected):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert float(np.asarray(client_trainer("cnn_small", SHAPE, 10, cfg.client_lr, cfg.client_momentum).optimizer.learning_rate)) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="client_momentum"):
        FedAvgConfig(client_momentum=1.0)


def test_hooks_aggregate_and_client_update():
    clients, w0, make = _setup()
    cfg = FedAvgConfig(rounds=1, local_epochs=1, batch_size=8)
    plain, _ = fedavg_round(make(0.05), w0, clients, [0, 1, 2], cfg, 1)

    def mean_of_deltas(deltas, counts):
        return weighted_average(deltas, counts)

    hooked, _ = fedavg_round(make(0.05), w0, clients, [0, 1, 2], cfg, 1, aggregate=mean_of_deltas)
    for a, b in zip(plain, hooked):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # a client that drops out (returns None) is left out of the mean and of the example count
    dropped, n = fedavg_round(make(0.05), w0, clients, [0, 1], cfg, 1,
                              client_update=lambda c, w: None if c == 1 else [v + 1 for v in w])
    assert n == len(clients[0][0])
    for a, g in zip(dropped, w0):
        np.testing.assert_allclose(a, g + 1, atol=1e-6)
    kept, n = fedavg_round(make(0.05), w0, clients, [0], cfg, 1, client_update=lambda c, w: None)
    assert n == 0 and all(np.array_equal(a, g) for a, g in zip(kept, w0))


def test_curve_difference():
    from data_utils.fedavg import RoundRecord, curve_difference

    a = [RoundRecord(1, [0], 5, 0.1, {"test_accuracy": 0.5}), RoundRecord(2, [0], 5, 0.1, {"test_accuracy": 0.6})]
    b = [RoundRecord(1, [0], 5, 0.1, {"test_accuracy": 0.52}), RoundRecord(2, [0], 5, 0.1, {"test_accuracy": 0.6})]
    np.testing.assert_allclose(curve_difference(a, b), [0.02, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="rounds"):
        curve_difference(a, b[:1])
    with pytest.raises(ValueError, match="missing"):
        curve_difference(a, b, key="loss")


# ---- notebook 03's hand-written FedAvg is the package's ----------------------------------------
def lesson_namespace():
    """Execute the cells of notebook 03 tagged ``fedavg-lesson`` (the hand-written FedAvg), in order."""
    nb_path = ROOT / "notebooks" / "03_manual_weight_averaging.ipynb"
    if not nb_path.is_file():
        pytest.skip("notebook 03 not written yet")
    cells = [c for c in json.loads(nb_path.read_text())["cells"]
             if "fedavg-lesson" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) >= 1, "notebook 03 must tag its hand-written FedAvg cells fedavg-lesson"
    namespace: dict = {}
    for cell in cells:
        exec(compile("".join(cell["source"]), "notebook-03-fedavg-lesson", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("fraction, epochs, batch", [(1.0, 1, 8), (0.67, 2, 5), (1.0, 1, None)])
def test_notebook_fedavg_equals_package(fraction, epochs, batch):
    ns = lesson_namespace()
    clients, w0, make = _setup(seed=3)
    cfg = FedAvgConfig(rounds=2, client_fraction=fraction, local_epochs=epochs, batch_size=batch,
                       client_lr=0.05, seed=11)
    ours, _ = run_fedavg(make(0.05), w0, clients, cfg, progress=False)
    theirs, history = ns["federated_averaging"](
        make(0.05).model, w0, clients, rounds=2, client_fraction=fraction, local_epochs=epochs,
        batch_size=batch, seed=11)
    assert len(history) == 2
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=1e-5)


# ---- saving a run for later notebooks ----------------------------------------------------------
def test_save_and_load_fedavg_run(tmp_path, monkeypatch):
    from data_utils.fedavg import RoundRecord, load_fedavg_run, save_fedavg_run

    monkeypatch.setenv("COURSE_ARTIFACTS_DIR", str(tmp_path))
    exp = {"dataset": "fashion_mnist", "num_clients": 7, "seed": 123}
    cfg = FedAvgConfig(rounds=2, client_lr=0.1)
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    history = [RoundRecord(1, [0, 2], 50, 1.5, {"test_accuracy": 0.5}),
               RoundRecord(2, [1, 2], 40, 1.2, {"test_accuracy": np.float32(0.625)})]
    save_fedavg_run("fedavg_test", exp, cfg, weights, history, extra={"max_diff": 0.001})
    run, status = load_fedavg_run("fedavg_test", exp, cfg)
    assert status == "loaded"
    assert all(np.array_equal(a, b) for a, b in zip(run["weights"], weights))
    assert [r["test_accuracy"] for r in run["history"]] == [0.5, 0.625]
    assert run["history"][1]["clients"] == [1, 2] and run["config"]["client_lr"] == 0.1
    assert run["extra"] == {"max_diff": 0.001}
    assert load_fedavg_run("fedavg_test", exp)[1] == "loaded"  # any settings
    run, status = load_fedavg_run("fedavg_test", exp, FedAvgConfig(rounds=3, client_lr=0.1))
    assert run is None and "rounds" in status
    run, status = load_fedavg_run("fedavg_test", dict(exp, seed=1))
    assert run is None and "other parameters" in status
    assert load_fedavg_run("fedavg_other", exp) == (None, "missing")
