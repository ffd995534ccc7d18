"""data_utils.evaluation: training-cost accounting, table rows, per-client gains, Raj 2020's binary
task, sentences built from numbers, reuse of saved FedAvg runs; and notebook 05's table against
the numbers notebooks 02 and 04 stored for the same parameters."""
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_utils import evaluation as ev
from data_utils.clients import num_sampled, sample_clients
from data_utils.fedavg import FedAvgConfig, save_fedavg_run

ROOT = Path(__file__).resolve().parent.parent


# ---- training cost ---------------------------------------------------------------------------------
def test_raw_example_bytes_is_uint8_pixels_plus_a_label_byte():
    assert ev.raw_example_bytes((28, 28, 1)) == 785
    assert ev.raw_example_bytes((32, 32, 3)) == 3073
    with pytest.raises(ValueError, match="input_shape"):
        ev.raw_example_bytes((28, 0, 1))


def test_centralized_local_and_one_shot_costs_by_hand():
    c = ev.centralized_cost([100, 200], 2, (28, 28, 1))
    assert c == {"examples_processed": 600, "rounds": 0, "upload_bytes_per_client": 150 * 785.0,
                 "upload_bytes_max": 200 * 785}
    assert ev.local_cost(100, 3) == {"examples_processed": 300, "rounds": 0, "upload_bytes_per_client": 0.0,
                                     "upload_bytes_max": 0}
    o = ev.one_shot_cost([100, 200, 300], 2, 4000)
    assert o == {"examples_processed": 1200, "rounds": 1, "upload_bytes_per_client": 4000.0, "upload_bytes_max": 4000}


def test_fedavg_cost_by_hand():
    cost = ev.fedavg_cost([[0, 1], [1, 2]], [10, 20, 30], local_epochs=2, model_bytes=100)
    # client 0 once, client 1 twice, client 2 once
    assert cost["examples_processed"] == 2 * (10 + 20 + 20 + 30)
    assert cost["rounds"] == 2
    assert cost["upload_bytes_per_client"] == pytest.approx((100 + 200 + 100) / 3)
    assert cost["upload_bytes_max"] == 200
    assert ev.fedavg_cost([], [10], 1, 100)["examples_processed"] == 0


@pytest.mark.parametrize("call, message", [
    (lambda: ev.fedavg_cost([[0, 3]], [1, 2, 3], 1, 10), "outside 0..2"),
    (lambda: ev.fedavg_cost([[1, 1]], [1, 2, 3], 1, 10), "twice"),
    (lambda: ev.fedavg_cost([[0]], [1, 2, 3], 0, 10), "local_epochs"),
    (lambda: ev.fedavg_cost([[0]], [1, 2, 3], 1, 0), "model_bytes"),
    (lambda: ev.centralized_cost([5, -1], 1, (2, 2, 1)), "non-negative"),
    (lambda: ev.centralized_cost([], 1, (2, 2, 1)), "non-empty"),
    (lambda: ev.centralized_cost([5], 1.5, (2, 2, 1)), "epochs"),
    (lambda: ev.local_cost(-3, 1), "client_size"),
    (lambda: ev.one_shot_cost([3], 1, -5), "model_bytes"),
])
def test_costs_reject_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 500), min_size=1, max_size=12), rounds=st.integers(0, 8),
       per_round=st.integers(1, 12), epochs=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_fedavg_cost_matches_the_clients_fedavg_samples(sizes, rounds, per_round, epochs, seed):
    """The accounting agrees with what run_fedavg records: each round's clients come from
    data_utils.clients.sample_clients, and RoundRecord.num_examples is the sum of their sizes."""
    n = len(sizes)
    m = num_sampled(n, clients_per_round=min(per_round, n))
    sampled = [sample_clients(n, m, r, seed).tolist() for r in range(1, rounds + 1)]
    cost = ev.fedavg_cost(sampled, sizes, epochs, 4)
    assert cost["examples_processed"] == epochs * sum(sum(sizes[c] for c in s) for s in sampled)
    assert cost["rounds"] == rounds
    assert cost["upload_bytes_per_client"] * n == pytest.approx(4 * m * rounds)
    assert cost["upload_bytes_max"] <= 4 * rounds


def test_human_bytes():
    assert ev.human_bytes(999) == "999 B"
    assert ev.human_bytes(1000) == "1.00 kB"
    assert ev.human_bytes(217_640) == "217.64 kB"
    assert ev.human_bytes(4.2e9) == "4.20 GB"
    assert ev.human_bytes(None) == "-"
    with pytest.raises(ValueError):
        ev.human_bytes(-1)


# ---- table rows --------------------------------------------------------------------------------
M = {"accuracy": 0.8, "precision": 0.7, "recall": 0.6, "f1": 0.65}


def test_model_row_and_unavailable_row():
    row = ev.model_row("baseline", "baseline", M, ev.local_cost(10, 1), client=3)
    assert row["accuracy"] == 0.8 and row["examples_processed"] == 10 and row["client"] == 3 and row["available"]
    with pytest.raises(ValueError, match="lack"):
        ev.model_row("x", "local", {"accuracy": 0.5})
    na = ev.unavailable_row("FedAvg, TFF", "fedavg_tff", "TFF cannot run here")
    assert na["accuracy"] is None and na["f1"] is None and not na["available"] and "TFF" in na["note"]


def test_mean_row_averages_metrics_and_reports_the_spread():
    rows = [ev.model_row(f"c{i}", "local", {**M, "accuracy": a}, ev.local_cost(n, 2))
            for i, (a, n) in enumerate([(0.5, 10), (0.7, 20), (0.9, 30)])]
    rows.append(ev.unavailable_row("broken", "local", "no data"))
    mean = ev.mean_row("mean", rows)
    assert mean["accuracy"] == pytest.approx(0.7) and mean["precision"] == pytest.approx(0.7)
    assert mean["accuracy_std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
    assert (mean["accuracy_min"], mean["accuracy_median"], mean["accuracy_max"]) == pytest.approx((0.5, 0.7, 0.9))
    assert mean["examples_processed"] == 40 and mean["count"] == 3
    with pytest.raises(ValueError):
        ev.mean_row("mean", [ev.unavailable_row("x", "local", "none")])


def _run_course_module():
    spec = importlib.util.spec_from_file_location("run_course", ROOT / "scripts" / "run_course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_rows_drop_single_clients_and_make_course_prints_them(capsys):
    table = [ev.model_row("centralized baseline", "baseline", M),
             ev.model_row("local-only: client 0", "local", M),
             ev.model_row("local-only: mean of 1", "local_mean", M),
             ev.unavailable_row("FedAvg, TFF (3 rounds)", "fedavg_tff", "no TFF")]
    summary = ev.summary_rows(table)
    assert [r["model"] for r in summary] == ["centralized baseline", "local-only: mean of 1", "FedAvg, TFF (3 rounds)"]
    assert summary[-1]["accuracy"] is None
    _run_course_module().print_course_table(json.loads(json.dumps({"summary_table": summary})))
    out = capsys.readouterr().out
    assert "centralized baseline" in out and "0.8000" in out and "0.6500" in out
    assert "FedAvg, TFF (3 rounds)" in out and "n/a" in out and "client 0" not in out


# ---- per-client gains -----------------------------------------------------------------------------
def test_per_client_gains_by_hand():
    g = ev.per_client_gains([0.9, 0.5, None, 0.7], [0.8, 0.6, None, 0.7])
    assert g["gains"][0] == pytest.approx(0.1) and g["gains"][1] == pytest.approx(-0.1)
    assert g["gains"][2] is None and g["gains"][3] == 0.0
    assert (g["gainers"], g["losers"], g["ties"], g["clients"]) == ([0], [1], [3], [0, 1, 3])
    assert (g["worst_client"], g["best_client"], g["biggest_loser"], g["biggest_gainer"]) == (1, 0, 1, 0)
    assert g["federated"]["median"] == pytest.approx(0.7)
    wide = ev.per_client_gains([0.9, 0.5, 0.7], [0.8, 0.6, 0.7], tolerance=0.15)
    assert wide["gainers"] == [] and wide["losers"] == [] and wide["ties"] == [0, 1, 2]


@pytest.mark.parametrize("fed, local, message", [
    ([0.5], [0.5, 0.6], "one federated and one local"),
    ([0.5, None], [0.5, 0.4], "one accuracy but not the other"),
    ([None], [None], "no client"),
    ([1.5], [0.5], r"\[0, 1\]"),
])
def test_per_client_gains_rejects_bad_input(fed, local, message):
    with pytest.raises(ValueError, match=message):
        ev.per_client_gains(fed, local)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=20),
       st.floats(0, 0.2))
def test_per_client_gains_properties(pairs, tol):
    fed, local = [p[0] for p in pairs], [p[1] for p in pairs]
    g = ev.per_client_gains(fed, local, tolerance=tol)
    assert sorted(g["gainers"] + g["losers"] + g["ties"]) == list(range(len(pairs)))
    assert g["gain"]["min"] <= g["gain"]["median"] <= g["gain"]["max"]
    assert all(g["gains"][c] > tol for c in g["gainers"]) and all(g["gains"][c] < -tol for c in g["losers"])
    assert fed[g["worst_client"]] == min(fed) and fed[g["best_client"]] == max(fed)


# ---- Raj 2020's binary task -----------------------------------------------------------------------
def _labels(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, 6000), rng.integers(0, 4, 2000)


def test_make_binary_task_is_balanced_disjoint_and_seeded():
    y_train, y_test = _labels()
    task = ev.make_binary_task(y_train, y_test, (1, 3), num_clients=10, per_client=198,
                               test_sizes=(206, 207), seed=4, class_names=list("abcd"))
    assert task.class_names == ("b", "d") and len(task.clients) == 10
    for idx in task.clients:
        assert len(idx) == 198
        assert np.sum(y_train[idx] == 1) == 99 and np.sum(y_train[idx] == 3) == 99
    union = np.concatenate(task.clients)
    assert len(np.unique(union)) == len(union) == 1980
    assert np.array_equal(task.train, np.sort(union))
    assert np.sum(y_test[task.test] == 1) == 206 and np.sum(y_test[task.test] == 3) == 207
    assert np.array_equal(task.labels(y_test[task.test]), (y_test[task.test] == 3).astype(int))
    with pytest.raises(ValueError, match="outside"):
        task.labels(np.array([0, 1]))
    same = ev.make_binary_task(y_train, y_test, (1, 3), per_client=198, test_sizes=(206, 207), seed=4)
    other = ev.make_binary_task(y_train, y_test, (1, 3), per_client=198, test_sizes=(206, 207), seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(task.clients, same.clients))
    assert not all(np.array_equal(a, b) for a, b in zip(task.clients, other.clients))


@pytest.mark.parametrize("kwargs, message", [
    ({"classes": (2, 2)}, "two different"),
    ({"classes": (0, 9)}, r"0\.\.3"),
    ({"classes": (0,)}, "two different"),
    ({"per_client": 197}, "even"),
    ({"num_clients": 0}, "num_clients"),
    ({"per_client": 2000}, "training images"),
    ({"test_sizes": (900, 10)}, "test images"),
    ({"test_sizes": (0, 10)}, "test_sizes"),
])
def test_make_binary_task_rejects_bad_input(kwargs, message):
    y_train, y_test = _labels()
    args = {"classes": (0, 1), **kwargs}
    with pytest.raises(ValueError, match=message):
        ev.make_binary_task(y_train, y_test, **args)


def test_binary_scores_by_hand():
    s = ev.binary_scores([0, 0, 1, 1, 1], [0, 1, 1, 1, 0])
    assert s["accuracy"] == pytest.approx(0.6)
    assert s["precision_pos"] == pytest.approx(2 / 3) and s["recall_pos"] == pytest.approx(2 / 3)
    # class 0: precision 1/2, recall 1/2; class 1: 2/3, 2/3
    assert s["precision"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_raj_2020_numbers_are_the_papers():
    p = ev.RAJ_2020
    assert p["centralized"]["accuracy"] == 0.9417 and p["averaged"]["accuracy"] == 0.9348
    assert len(p["submodel_accuracy"]) == p["num_clients"] == 10
    assert p["per_client"] == 198 and sum(p["test_sizes"]) == 1013
    assert ev.BINARY_CLASSES["fashion_mnist"] == (0, 6)  # T-shirt/top vs Shirt


# ---- sentences from numbers ---------------------------------------------------------------------
def test_compare_and_relation():
    assert ev.compare("A", 0.8812, "B", 0.9005) == "A (0.8812) is 1.93 points below B (0.9005)"
    assert ev.compare("A", 0.95, "B", 0.90) == "A (0.9500) is 5.00 points above B (0.9000)"
    assert ev.compare("A", 0.901, "B", 0.90) == ("A (0.9010) is on par with B (0.9000): +0.10 points, within the "
                                                 "0.5-point tolerance")
    assert ev.relation(0.9, 0.8) == "above" and ev.relation(0.8, 0.9) == "below" and ev.relation(0.8, 0.803) == "on par"
    with pytest.raises(ValueError):
        ev.compare("A", 1, "B", 1, tolerance=-1)


def test_order_sentence_says_when_the_order_breaks():
    text, held = ev.order_sentence({"a": 0.9, "b": 0.8, "c": 0.5}, ["a", "b", "c"], "acc")
    assert held and "expected order" in text and "a 0.9000" in text
    text, held = ev.order_sentence({"a": 0.7, "b": 0.8, "c": 0.5}, ["a", "b", "c"], "acc")
    assert not held and "NOT the expected order" in text and "b > a > c" in text
    _, held = ev.order_sentence({"a": 0.799, "b": 0.8}, ["a", "b"], "acc", tolerance=0.005)
    assert held
    with pytest.raises(ValueError, match="no value"):
        ev.order_sentence({"a": 1}, ["a", "b"], "acc")


def _facts(**changes):
    f = {"baseline": 0.90, "fed_name": "FedAvg, TFF", "fed": 0.88, "fed_rounds": 20, "fed_upload": 2_176_400.0,
         "central_upload": 4_239_000.0, "local_mean": 0.84, "local_min": 0.83, "local_max": 0.85,
         "uniform": 0.70, "weighted": 0.71, "sequential": 0.60, "gainers": [0, 1, 2], "losers": [],
         "scored_clients": 3, "gain_min": 0.01, "gain_median": 0.03, "gain_max": 0.05,
         "hetero": {"IID": 0.85, "Dirichlet(0.5)": 0.83, "Dirichlet(0.1)": 0.70, "pathological (2 classes)": 0.60},
         "hetero_order": ["IID", "Dirichlet(0.5)", "Dirichlet(0.1)"], "hetero_central": 0.87,
         "binary": {"central": 0.84, "averaged": 0.80, "local_mean": 0.79},
         "paper": {"central": 0.9417, "averaged": 0.9348}, "smoke": False}
    f.update(changes)
    return f


def test_what_we_learned_quotes_the_numbers():
    lessons = ev.what_we_learned(_facts())
    text = "\n".join(lessons)
    assert "0.8800" in lessons[0] and "2.00 points below the centralized baseline (0.9000)" in lessons[0]
    assert "2.18 MB" in lessons[0] and "4.24 MB" in lessons[0]
    assert "every client gains by joining" in lessons[1]
    assert "3 of 3 clients gain" in lessons[2] and "no client would have been better off alone" in lessons[2]
    assert "the example-weighted mean does best: it (0.7100) is 17.00 points below 20-round FedAvg" in lessons[3]
    assert "not a substitute" in lessons[3]
    assert "the expected order" in lessons[5] and "NOT" not in lessons[5]
    assert "the worst partition, pathological (2 classes), ends 27.00 points below it" in lessons[5]
    assert "0.69 points below its centralized one" in lessons[6]
    assert "4.00 points below our centralized one" in lessons[6]
    assert "beats the mean submodel" in lessons[6]
    assert "smoke" not in text


def test_what_we_learned_changes_when_the_numbers_contradict_the_claims():
    lessons = ev.what_we_learned(_facts(
        fed=0.80, losers=[1], gainers=[0, 2], uniform=0.95, local_max=0.87,
        hetero={"IID": 0.70, "Dirichlet(0.5)": 0.83, "Dirichlet(0.1)": 0.72, "pathological (2 classes)": 0.6},
        binary={"central": 0.84, "averaged": 0.85, "local_mean": 0.86}, smoke=True))
    assert "WORSE than training alone" in lessons[1]
    assert "2 of 3 clients gain" in lessons[2] and "client(s) 1" in lessons[2]
    assert "one round of averaging finished models was enough" in lessons[3]
    assert "NOT the expected order" in lessons[5]
    assert "1.00 points above our centralized one" in lessons[6] and "does NOT beat the mean submodel" in lessons[6]
    assert "smoke run" in lessons[-1]
    partly = ev.what_we_learned(_facts(local_max=0.90))
    assert "the best single client (0.9000) did better" in partly[1]


# ---- heterogeneity experiments and saved runs ----------------------------------------------------
def test_heterogeneity_experiments_keep_the_experiment_and_cut_the_data():
    from data_utils.experiment import Experiment

    exp = Experiment.from_params(smoke=True, num_clients=7, seed=3)
    variants = dict(ev.heterogeneity_experiments(exp, train_examples=1500))
    assert list(variants) == [s["label"] for s in ev.HETEROGENEITY_SCHEMES]
    assert variants["Dirichlet(0.1)"].alpha == 0.1 and variants["Dirichlet(0.1)"].partition == "dirichlet"
    assert variants["pathological (2 classes)"].classes_per_client == 2
    assert all(e.train_limit == 1500 and e.num_clients == 7 and e.seed == 3 for e in variants.values())
    assert dict(ev.heterogeneity_experiments(exp))["IID"].train_limit == exp.train_limit
    full = Experiment()
    assert dict(ev.heterogeneity_experiments(full, train_examples=12000))["IID"].train_limit == 12000
    assert dict(ev.heterogeneity_experiments(full))["IID"].train_limit is None
    with pytest.raises(ValueError, match="train_examples"):
        ev.heterogeneity_experiments(exp, train_examples=0)


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


def test_get_tff_fedavg_reuses_a_matching_run_and_says_when_tff_is_missing(artifacts, monkeypatch):
    from data_utils import sidecar
    from data_utils.experiment import parse_params
    from data_utils.tff_fedavg import JOB_OPTIONS

    params = {"NUM_CLIENTS": 3, "SEED": 5, "SMOKE": True, "ROUNDS": 2}
    monkeypatch.setattr(sidecar, "tff_available_here", lambda: False)
    weights, history, status = ev.get_tff_fedavg(params, log=lambda s: None)
    assert weights is None and history is None
    assert status.startswith("not available") and "notebook 04" in status

    exp, cfg, _ = parse_params(params, JOB_OPTIONS)
    saved = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    rows = [{"round": r, "clients": [0, 1, 2], "num_examples": 30, "seconds": 0.1, "test_accuracy": 0.5}
            for r in (1, 2)]
    save_fedavg_run("fedavg_tff", exp.as_dict(), cfg, saved, rows)
    weights, history, status = ev.get_tff_fedavg(params, log=lambda s: None)
    assert status == "reused" and history == rows
    assert all(np.array_equal(a, b) for a, b in zip(weights, saved))
    # other FedAvg settings: not reused
    weights, _, status = ev.get_tff_fedavg(dict(params, CLIENT_LR=0.3), log=lambda s: None)
    assert weights is None and status.startswith("not available")


def test_get_manual_fedavg_trains_once_then_reuses(artifacts):
    from data_utils.experiment import Experiment, get_partition, initial_weights, load_data

    exp = Experiment.from_params(smoke=True, num_clients=3, seed=2)
    cfg = FedAvgConfig(rounds=1, client_fraction=1.0, batch_size=50, client_lr=0.1, seed=2)
    data = load_data(exp)
    part = get_partition(exp, data, log=lambda s: None)
    init = initial_weights(exp, data, log=lambda s: None)
    w1, h1, s1 = ev.get_manual_fedavg(exp, cfg, data, part, init, log=lambda s: None, progress=False)
    w2, h2, s2 = ev.get_manual_fedavg(exp, cfg, data, part, init, log=lambda s: None, progress=False)
    assert (s1, s2) == ("trained", "reused")
    assert h1[0]["clients"] == h2[0]["clients"] == [0, 1, 2]
    assert h1[0]["test_accuracy"] == pytest.approx(h2[0]["test_accuracy"])
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert not all(np.array_equal(a, b) for a, b in zip(w1, init))


def test_get_binary_models_trains_from_one_start_and_reuses(artifacts):
    from data_utils.experiment import Experiment, load_data
    from data_utils.training import training_config

    data = load_data(Experiment.from_params(smoke=True, seed=1))
    task = ev.make_binary_task(data.y_train, data.y_test, (0, 6), num_clients=2, per_client=20,
                               test_sizes=(10, 10), seed=1)
    cfg = training_config(True, epochs=1, batch_size=10)
    logs = []
    models = ev.get_binary_models(task, data, "cnn_small", 1, cfg, log=logs.append, progress=False)
    again = ev.get_binary_models(task, data, "cnn_small", 1, cfg, log=logs.append, progress=False)
    assert len(models) == 3 and models[0][-1].shape == (2,)
    assert "computing" in logs[0] and "reused" in logs[1]
    assert all(np.array_equal(a, b) for m, n in zip(models, again) for a, b in zip(m, n))
    assert not np.array_equal(models[1][0], models[2][0])  # two clients, two different models


# ---- notebook 05 against notebooks 02 and 04 ----------------------------------------------------
def _parameter_defaults(stem: str) -> dict:
    import ast

    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    out = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # e.g. SMOKE = os.environ.get(...)
    return out


def test_notebook_05_defaults_are_those_of_notebooks_02_and_04():
    """Notebook 05 reuses notebook 04's saved FedAvg runs (and 02's models) only when it asks for
    the same parameters: its defaults must be theirs, or `make course` retrains everything."""
    nb05 = _parameter_defaults("05_evaluation")
    for stem in ("02_local_training", "04_tff_fedavg"):
        other = _parameter_defaults(stem)
        shared = sorted(set(nb05) & set(other) - {"RESULTS_DIR"})
        if stem == "02_local_training":
            shared = [k for k in shared if k != "BATCH_SIZE"]  # 02's is the local-training batch
        assert {"SEED", "NUM_CLIENTS", "PARTITION"} <= set(shared)
        assert {k: nb05[k] for k in shared} == {k: other[k] for k in shared}, stem
    fedavg_names = {"ROUNDS", "CLIENTS_PER_ROUND", "LOCAL_EPOCHS", "BATCH_SIZE", "CLIENT_LR",
                    "CLIENT_LR_SCHEDULE", "CLIENT_MOMENTUM", "SERVER_LR", "PRESET"}
    assert fedavg_names & set(_parameter_defaults("04_tff_fedavg")) <= set(nb05)


@pytest.mark.notebooks
def test_notebook_05_table_matches_notebooks_02_03_and_04(tmp_path, monkeypatch):
    """Run 02, 03, 04 and 05 in order (smoke, the same non-default parameters, shared artifacts
    and results folders), then check that 05's rows are the numbers 02, 03 and 04 stored."""
    import papermill as pm

    params = {"NUM_CLIENTS": 7, "PARTITION": "dirichlet", "ALPHA": 0.5, "SEED": 123, "SMOKE": True,
              "RESULTS_DIR": str(tmp_path / "results")}
    monkeypatch.setenv("COURSE_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("COURSE_SMOKE", "0")
    seconds = {}
    stems = ("02_local_training", "03_manual_weight_averaging", "04_tff_fedavg", "05_evaluation")
    for stem in stems:
        start = time.perf_counter()
        pm.execute_notebook(str(ROOT / "notebooks" / f"{stem}.ipynb"), str(tmp_path / f"{stem}.ipynb"),
                            parameters=params, cwd=str(ROOT / "notebooks"), kernel_name="python3",
                            progress_bar=False)
        seconds[stem] = time.perf_counter() - start
    r02, r03, r04, r05 = (json.loads((tmp_path / "results" / f"{s}.json").read_text()) for s in stems)
    assert r05["smoke"] is True and r05["summary_table"]
    rows = {r["model"]: r for r in r05["table"]}
    by_kind = lambda kind: [r for r in r05["table"] if r["kind"] == kind]

    (base,) = by_kind("baseline")
    for m in ("accuracy", "precision", "recall", "f1"):
        assert base[m] == pytest.approx(r02["baseline"][m], abs=1e-9), m
    clients = by_kind("local")
    assert len(clients) == len(r02["clients"]) == 7
    for row, stored in zip(clients, r02["clients"]):
        for m in ("accuracy", "precision", "recall", "f1"):
            assert row[m] == pytest.approx(stored[m], abs=1e-9), (row["model"], m)
    (mean,) = by_kind("local_mean")
    assert mean["accuracy"] == pytest.approx(r02["local_mean"]["accuracy"], abs=1e-9)

    # notebook 03 averages with its own lesson function (the package's equals it to 1e-6), so a
    # test image on a decision boundary may flip: allow one image of the test set
    one_image = 1 / r05["experiment"]["test_limit"]
    shots = {r["model"]: r["accuracy"] for r in by_kind("one_shot")}
    assert shots["one-shot: uniform mean"] == pytest.approx(r03["one_shot"]["uniform_mean"], abs=one_image)
    assert shots["one-shot: example-weighted mean"] == pytest.approx(
        r03["one_shot"]["example_weighted_mean"], abs=one_image)
    assert shots["one-shot: sequential k=0.5 (Raj 2020)"] == pytest.approx(r03["sequential"]["accuracy"], abs=1e-9)
    assert base["accuracy"] == pytest.approx(r03["one_shot"]["baseline"], abs=1e-9)

    assert r05["status"]["manual"] == "reused"
    (manual,) = by_kind("fedavg_manual")
    assert manual["accuracy"] == pytest.approx(r04["manual_final_test_accuracy"], abs=1e-9)
    assert manual["rounds"] == r04["fedavg"]["rounds"]
    (tff,) = by_kind("fedavg_tff")
    if r04["tff_ran"]:
        assert r05["status"]["tff"] == "reused"
        assert tff["accuracy"] == pytest.approx(r04["tff_final_test_accuracy"], abs=1e-9)
    else:
        assert tff["accuracy"] is None and not tff["available"]
    assert r05["experiment"] == r04["experiment"]
    # every number of the summary is a table row's number
    for s in r05["summary_table"]:
        assert s["accuracy"] == rows[s["model"]]["accuracy"] and s["f1"] == rows[s["model"]]["f1"]
    assert seconds["05_evaluation"] < 120, seconds


# ---- notebook 05's figures (data_utils.plots) -------------------------------------------------
def test_notebook_05_plots_draw_and_check_their_input():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from data_utils import plots

    fig = plots.per_class_accuracy_bars({"a": [0.5, np.nan, 0.9], "b": [0.4, 0.6, 0.8]}, ["x", "y", "z"])
    assert len(fig.axes[0].patches) == 6
    with pytest.raises(ValueError, match="one accuracy per class"):
        plots.per_class_accuracy_bars({"a": [0.5, 0.9]}, ["x", "y", "z"])
    fig2 = plots.client_gain_plot([0.9, None, 0.5], [0.8, None, 0.6], [0.95, None, 0.7])
    bars = fig2.axes[1].patches
    assert len(bars) == 2 and bars[0].get_height() == pytest.approx(0.1) and bars[1].get_height() == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="no client"):
        plots.client_gain_plot([None], [None])
    fig3 = plots.learning_curves({"IID": [0.5, 0.7], "skewed": [0.3, 0.4]}, reference=0.8)
    assert len(fig3.axes[0].lines) == 3
    with pytest.raises(ValueError, match="at least one curve"):
        plots.learning_curves({})
    plt.close("all")


def test_what_we_learned_without_local_test_splits():
    f = _facts()
    for key in ("gainers", "losers", "scored_clients", "gain_min", "gain_median", "gain_max"):
        f.pop(key)
    lessons = ev.what_we_learned(f)
    assert "cannot say who gains" in lessons[2] and len(lessons) == len(ev.what_we_learned(_facts()))


def test_tail_mean():
    assert ev.tail_mean([0.1, 0.5, 0.6, 0.7]) == pytest.approx(0.6)
    assert ev.tail_mean([0.1, 0.5], last=3) == pytest.approx(0.3)
    assert ev.tail_mean([0.4], last=1) == 0.4
    with pytest.raises(ValueError, match="empty"):
        ev.tail_mean([])
    with pytest.raises(ValueError, match="last"):
        ev.tail_mean([0.1], last=0)


@pytest.mark.parametrize("notebook_fails", [False, True])
def test_make_course_ends_with_this_runs_table(tmp_path, monkeypatch, capsys, notebook_fails):
    """scripts/run_course.py (make course) prints notebook 05's summary_table from the results
    folder the run used, and never a stale table when notebook 05 failed."""
    import papermill

    from data_utils import write_results

    run_course = _run_course_module()
    results = tmp_path / "results"
    stale = [ev.model_row("stale model", "baseline", M)]
    write_results("05_evaluation", {"summary_table": ev.summary_rows(stale)}, results)
    fresh = [ev.model_row("centralized baseline", "baseline", {**M, "accuracy": 0.9123, "f1": 0.9111}),
             ev.unavailable_row("FedAvg, TFF (3 rounds)", "fedavg_tff", "no TFF")]

    def fake_execute(nb, out, parameters, **kwargs):
        if notebook_fails:
            raise RuntimeError("a cell failed")
        write_results(Path(nb).stem, {"summary_table": ev.summary_rows(fresh), "smoke": True},
                      parameters["RESULTS_DIR"])

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    code = run_course.main(["--smoke", "-p", f"RESULTS_DIR={results}", "--out", str(tmp_path / "nb"), "05"])
    out = capsys.readouterr().out
    assert "stale model" not in out
    if notebook_fails:
        assert code == 1 and "Course summary" not in out
    else:
        assert code == 0 and "Course summary" in out
        assert "centralized baseline" in out and "0.9123" in out and "0.9111" in out
        assert "FedAvg, TFF (3 rounds)" in out and "n/a" in out
