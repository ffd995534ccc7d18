"""Centralized baseline and local-only training (data_utils.baselines, data_utils.training), and feature skew
(data_utils.skew), on real Fashion-MNIST subsets."""
import numpy as np
import pytest

from data_utils import baselines as B
from data_utils import env
from data_utils import training as T
from data_utils import skew as S
from data_utils.experiment import Experiment, get_partition, initial_weights, load_data


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


@pytest.fixture(scope="module")
def small():
    """A smoke experiment (3,000 training images) split over 3 clients by Dirichlet(0.3)."""
    exp = Experiment.from_params(smoke=True, num_clients=3, partition="dirichlet", alpha=0.3, seed=4)
    return exp, load_data(exp)


# ---- hyperparameters ---------------------------------------------------------------------------
def test_training_config_defaults_smoke_and_overrides():
    cfg = T.training_config()
    assert cfg == {"epochs": T.DEFAULT_EPOCHS, "batch_size": T.DEFAULT_BATCH_SIZE,
                   "optimizer": T.DEFAULT_OPTIMIZER, "lr": T.DEFAULT_LEARNING_RATE,
                   "lr_schedule": T.DEFAULT_LR_SCHEDULE}
    smoke = T.training_config(smoke=True)
    assert smoke["epochs"] == T.SMOKE_EPOCHS and smoke["batch_size"] == T.SMOKE_BATCH_SIZE
    assert T.training_config(epochs=3, lr=None)["epochs"] == 3  # None keeps the default
    assert T.training_config(epochs=3, lr=None)["lr"] == T.DEFAULT_LEARNING_RATE


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"epochs": 1.5}, {"batch_size": -1}, {"optimizer": "rmsprop"},
                                 {"lr": 0}, {"lr": float("nan")}, {"lr_schedule": "step"}, {"epoch": 3}])
def test_training_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=list(bad)[0].rstrip("s")[:5]):
        T.training_config(**bad)


def test_cosine_schedule():
    lrs = [T.epoch_learning_rate(0.1, e, 4) for e in range(4)]
    assert lrs[0] == pytest.approx(0.1) and lrs[2] == pytest.approx(0.05)
    assert all(a > b > 0 for a, b in zip(lrs, lrs[1:]))
    assert T.epoch_learning_rate(0.1, 3, 4, "constant") == 0.1


# ---- training ------------------------------------------------------------------------------------
def test_train_weights_learns_and_is_deterministic(small, artifacts):
    exp, data = small
    init = initial_weights(exp, data, log=lambda s: None)
    init_copy = [w.copy() for w in init]
    x, y = data.x_train[:1500], data.y_train[:1500]
    a = T.train_weights(exp.model, init, x, y, epochs=2, batch_size=32, lr=1e-3, seed=1)
    b = T.train_weights(exp.model, init, x, y, epochs=2, batch_size=32, lr=1e-3, seed=1)
    c = T.train_weights(exp.model, init, x, y, epochs=2, batch_size=32, lr=1e-3, seed=2)
    assert same(init, init_copy), "training must not change the initial weights"
    assert same(a, b), "same seed, same weights"
    assert not same(a, c), "another seed shuffles differently"
    before, = B.evaluate_weight_lists(exp.model, [init], data.x_test, data.y_test, 10)[0]
    after, = B.evaluate_weight_lists(exp.model, [a], data.x_test, data.y_test, 10)[0]
    assert before["accuracy"] < 0.3 < 0.65 < after["accuracy"]


def test_reused_trainer_equals_fresh_one(small, artifacts):
    exp, data = small
    init = initial_weights(exp, data, log=lambda s: None)
    trainer = T.Trainer(exp.model, data.input_shape, 10, "adam", 1e-3)
    x1, y1, x2, y2 = data.x_train[:300], data.y_train[:300], data.x_train[300:700], data.y_train[300:700]
    T.train_weights(exp.model, init, x1, y1, 2, 32, 1e-3, 0, trainer=trainer)  # leaves optimizer state
    reused = T.train_weights(exp.model, init, x2, y2, 2, 32, 1e-3, 0, trainer=trainer)
    fresh = T.train_weights(exp.model, init, x2, y2, 2, 32, 1e-3, 0,
                            trainer=T.Trainer(exp.model, data.input_shape, 10, "adam", 1e-3))
    shared = T.train_weights(exp.model, init, x2, y2, 2, 32, 1e-3, 0)  # the process-wide trainer
    assert same(reused, fresh) and same(shared, fresh)
    one_step = T.Trainer(exp.model, data.input_shape, 10, "adam", 1e-3, steps_per_execution=1)
    assert same(T.train_weights(exp.model, init, x2, y2, 2, 32, 1e-3, 0, trainer=one_step), fresh), \
        "running several steps per call must not change the training"
    with pytest.raises(ValueError, match="trainer was built for"):
        T.train_weights(exp.model, init, x2, y2, 1, 32, 1e-2, 0, trainer=trainer)


def test_shared_trainer_is_rebuilt_when_keras_invalidated_it(small, artifacts, monkeypatch):
    exp, data = small
    init = initial_weights(exp, data, log=lambda s: None)
    x, y = data.x_train[:200], data.y_train[:200]
    expected = T.train_weights(exp.model, init, x, y, 1, 32, 1e-3, 0)
    old = T.shared_trainer(exp.model, data.input_shape, 10, "adam", 1e-3)

    def invalidated(*args, **kwargs):  # what Keras 2 raises after a TFF build
        raise ValueError("Your Layer or Model is in an invalid state.")
    monkeypatch.setattr(old, "fit", invalidated)
    assert same(T.train_weights(exp.model, init, x, y, 1, 32, 1e-3, 0), expected)
    assert T.shared_trainer(exp.model, data.input_shape, 10, "adam", 1e-3) is not old
    monkeypatch.setattr(T.shared_trainer(exp.model, data.input_shape, 10, "adam", 1e-3), "fit",
                        lambda *a, **k: (_ for _ in ()).throw(ValueError("other problem")))
    with pytest.raises(ValueError, match="other problem"):
        T.train_weights(exp.model, init, x, y, 1, 32, 1e-3, 0)
    T.shared_trainer(exp.model, data.input_shape, 10, "adam", 1e-3, rebuild=True)


def test_model_never_predicts_classes_it_never_saw(small, artifacts):
    exp, data = small
    init = initial_weights(exp, data, log=lambda s: None)
    keep = np.isin(data.y_train, [0, 1, 7])
    w = T.train_weights(exp.model, init, data.x_train[keep], data.y_train[keep], 2, 32, 1e-3, 0)
    _, preds = B.evaluate_weight_lists(exp.model, [w], data.x_test, data.y_test, 10)
    assert set(np.unique(preds[0])) <= {0, 1, 7}


def test_train_weights_rejects_bad_data(small, artifacts):
    exp, data = small
    init = initial_weights(exp, data, log=lambda s: None)
    with pytest.raises(ValueError, match="zero examples"):
        T.train_weights(exp.model, init, data.x_train[:0], data.y_train[:0], 1, 32, 1e-3, 0)
    with pytest.raises(ValueError, match="differ in length"):
        T.train_weights(exp.model, init, data.x_train[:10], data.y_train[:9], 1, 32, 1e-3, 0)


def test_baseline_and_local_models_cached_and_reproducible(small, artifacts):
    exp, data = small
    messages = []
    log = messages.append
    part = get_partition(exp, data, log=log)
    init = initial_weights(exp, data, log=log)
    base = B.get_baseline(exp, data, part, init, log=log, progress=False)
    models = B.get_local_models(exp, data, part, init, log=log, progress=False)
    assert len(models) == exp.num_clients
    assert any("baseline: missing" in m for m in messages)
    assert (artifacts / "baseline.npz").is_file() and (artifacts / "local_models.npz").is_file()

    # the baseline is the model trained on the union of the clients' local-train data
    union = np.sort(np.concatenate(part.train))
    cfg = T.training_config(smoke=True)
    expected = T.train_weights(exp.model, init, data.x_train[union], data.y_train[union], cfg["epochs"],
                               cfg["batch_size"], cfg["lr"], exp.seed)
    assert same(base, expected)
    # client 1's model: the same initial weights, only client 1's data
    idx = part.train[1]
    expected = T.train_weights(exp.model, init, data.x_train[idx], data.y_train[idx], cfg["epochs"],
                               cfg["batch_size"], cfg["lr"], exp.seed, stream=2)
    assert same(models[1], expected)

    # asked again with the same inputs: reused; with other inputs: retrained
    messages.clear()
    assert same(B.get_baseline(exp, data, part, init, log=log, progress=False), base)
    assert same(sum(B.get_local_models(exp, data, part, init, log=log, progress=False), []), sum(models, []))
    assert sum("reused" in m for m in messages) == 2
    messages.clear()
    other = B.get_baseline(exp, data, part, init, log=log, progress=False, epochs=1)
    assert not same(other, base) and any("other parameters" in m for m in messages)
    # the artifact now holds the 1-epoch model, so asking for the default retrains again
    assert same(B.get_baseline(exp, data, part, init, log=log, progress=False), base)


def test_iid_run_beside_is_saved_under_its_own_names(small, artifacts):
    """Notebook 02 saves the IID run beside the main one (``baseline_iid``, ``local_models_iid``,
    as notebook 05 asks for them): neither replaces the main setting's artifacts, and each is
    reused when asked for again with its own experiment."""
    import dataclasses

    from data_utils.partition import make_partition

    exp, data = small
    quiet = lambda s: None  # noqa: E731
    part, init = get_partition(exp, data, log=quiet), initial_weights(exp, data, log=quiet)
    exp_iid = dataclasses.replace(exp, partition="iid")
    part_iid = make_partition(data.y_train, **exp_iid.partition_kwargs())
    base = B.get_baseline(exp, data, part, init, log=quiet, progress=False, epochs=1)
    base_iid = B.get_baseline(exp_iid, data, part_iid, init, log=quiet, progress=False, epochs=1, name="baseline_iid")
    local_iid = B.get_local_models(exp_iid, data, part_iid, init, log=quiet, progress=False, epochs=1,
                                   name="local_models_iid")
    assert (artifacts / "baseline.npz").is_file() and (artifacts / "baseline_iid.npz").is_file()
    assert (artifacts / "local_models_iid.npz").is_file() and not same(base, base_iid)
    messages = []
    assert same(B.get_baseline(exp, data, part, init, log=messages.append, progress=False, epochs=1), base)
    assert same(B.get_baseline(exp_iid, data, part_iid, init, log=messages.append, progress=False, epochs=1,
                               name="baseline_iid"), base_iid)
    again = B.get_local_models(exp_iid, data, part_iid, init, log=messages.append, progress=False, epochs=1,
                               name="local_models_iid")
    assert same(sum(again, []), sum(local_iid, [])) and sum("reused" in m for m in messages) == 3


def test_get_baseline_defaults_and_bad_input(small, artifacts):
    exp, data = small
    one_epoch = B.get_baseline(exp, log=lambda s: None, progress=False, epochs=1)
    assert [w.shape for w in one_epoch] == [w.shape for w in initial_weights(exp, log=lambda s: None)]
    with pytest.raises(ValueError, match="Experiment"):
        B.get_baseline({"seed": 0})
    with pytest.raises(ValueError, match="optimizer"):
        B.get_local_models(exp, data, log=lambda s: None, optimizer="lbfgs")


def test_evaluate_weight_lists_matches_metrics(small, artifacts):
    from data_utils.metrics import classification_metrics

    exp, data = small
    init = initial_weights(exp, data, log=lambda s: None)
    rows, preds = B.evaluate_weight_lists(exp.model, [init, init], data.x_test[:200], data.y_test[:200], 10)
    assert preds.shape == (2, 200) and rows[0] == rows[1]
    assert rows[0] == classification_metrics(data.y_test[:200], preds[0], 10)


def test_compiled_predictions_equal_the_eager_ones(small, artifacts):
    """evaluate_weight_lists predicts through one compiled step per model (faster); its labels
    are the eager data_utils.models.predict_labels', batch edges (an odd length) included."""
    from data_utils.models import WeightsEvaluator, build_model

    exp, data = small
    init = initial_weights(exp, data, log=lambda s: None)
    other = build_model(exp.model, data.input_shape, 10, seed=99).get_weights()
    x = data.x_test[:613]
    preds = B.predict_weight_lists(exp.model, [init, other], x, 10)
    eager = WeightsEvaluator(exp.model, data.input_shape, 10, x, data.y_test[:613])
    assert preds.shape == (2, 613) and preds.dtype == np.int64
    assert np.array_equal(preds[0], eager.predict(init)) and np.array_equal(preds[1], eager.predict(other))
    assert B.predict_weight_lists(exp.model, [], x, 10).shape == (0, 613)


# ---- feature skew ----------------------------------------------------------------------------------
def test_skew_values_spread_and_seeded():
    v = S.client_skew_values(5, "rotation", seed=0)
    assert sorted(v) == pytest.approx([-30, -15, 0, 15, 30])
    assert np.array_equal(v, S.client_skew_values(5, "rotation", seed=0))
    assert not np.array_equal(v, S.client_skew_values(5, "rotation", seed=1))
    assert S.client_skew_values(3, "brightness", strength=0.2).max() == pytest.approx(0.2)


@pytest.mark.parametrize("call", [lambda: S.check_feature_skew("blur"), lambda: S.client_skew_values(0, "rotation"),
                                  lambda: S.client_skew_values(3, "brightness", strength=2.0),
                                  lambda: S.client_skew_values(3, "rotation", strength=-1),
                                  lambda: S.rotate_images(np.zeros((28, 28)), 10)])
def test_skew_bad_input(call):
    with pytest.raises(ValueError):
        call()


def test_rotation_and_brightness():
    img = np.zeros((1, 5, 5, 1), np.float32)
    img[0, 0, 2, 0] = 1.0  # top middle
    np.testing.assert_allclose(S.rotate_images(img, 90)[0, :, :, 0], np.rot90(img[0, :, :, 0]), atol=1e-6)
    np.testing.assert_array_equal(S.rotate_images(img, 0), img)
    out = S.shift_brightness(np.array([[0.0, 0.5, 0.95]], np.float32), 0.1)
    np.testing.assert_allclose(out, [[0.1, 0.6, 1.0]])
    assert S.shift_brightness(img, -0.5).min() == 0.0


def test_apply_feature_skew_changes_only_client_images(small, artifacts):
    exp, data = small
    part = get_partition(exp.with_(partition="pathological", classes_per_client=1, num_clients=2), data,
                         log=lambda s: None)  # 2 clients x 1 class: most images belong to nobody
    skewed, values = S.apply_feature_skew(data, part, "brightness", seed=0)
    assert skewed is not data and np.array_equal(skewed.x_test, data.x_test)
    held = np.concatenate(part.train + part.test)
    nobody = np.setdiff1d(np.arange(len(data.x_train)), held)
    assert len(nobody) > 0 and np.array_equal(skewed.x_train[nobody], data.x_train[nobody])
    for c, value in enumerate(values):
        idx = np.concatenate([part.train[c], part.test[c]])
        np.testing.assert_allclose(skewed.x_train[idx], np.clip(data.x_train[idx] + value, 0, 1), atol=1e-6)
    assert S.apply_feature_skew(data, part, None) == (data, None)


def test_stopwatch():
    watch = env.Stopwatch()
    with watch("a"):
        sum(range(1000))
    with watch("a"):
        pass
    assert set(watch.seconds) == {"a"} and 0 <= watch.seconds["a"] <= watch.total()
