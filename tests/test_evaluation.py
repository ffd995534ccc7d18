"""Notebook 05's helpers: training-cost accounting (data_utils.cost), table rows and per-client
gains (data_utils.report), Raj 2020's binary task (data_utils.binary_task), findings computed
from the results (data_utils.findings), the heterogeneity experiments (data_utils.heterogeneity),
reuse of saved FedAvg runs (data_utils.runs); and notebook 05's table against the numbers
notebooks 02 and 04 stored for the same parameters."""
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_utils import binary_task, cost, findings, heterogeneity, report, runs
from data_utils.clients import num_sampled, sample_clients
from data_utils.fedavg import FedAvgConfig, save_fedavg_run

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_notebooks", ROOT / "scripts" / "check_notebooks.py")
nb_checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nb_checks)


# ---- training cost ---------------------------------------------------------------------------------
def test_raw_example_bytes_is_uint8_pixels_plus_a_label_byte():
    assert cost.raw_example_bytes((28, 28, 1)) == 785
    assert cost.raw_example_bytes((32, 32, 3)) == 3073
    with pytest.raises(ValueError, match="input_shape"):
        cost.raw_example_bytes((28, 0, 1))


def test_centralized_local_and_one_shot_costs_by_hand():
    c = cost.centralized_cost([100, 200], 2, (28, 28, 1))
    assert c == {"examples_processed": 600, "rounds": 0, "upload_bytes_per_client": 150 * 785.0,
                 "upload_bytes_max": 200 * 785}
    assert cost.local_cost(100, 3) == {"examples_processed": 300, "rounds": 0, "upload_bytes_per_client": 0.0,
                                     "upload_bytes_max": 0}
    o = cost.one_shot_cost([100, 200, 300], 2, 4000)
    assert o == {"examples_processed": 1200, "rounds": 1, "upload_bytes_per_client": 4000.0, "upload_bytes_max": 4000}


def test_fedavg_cost_by_hand():
    spent = cost.fedavg_cost([[0, 1], [1, 2]], [10, 20, 30], local_epochs=2, model_bytes=100)
    # client 0 once, client 1 twice, client 2 once
    assert spent["examples_processed"] == 2 * (10 + 20 + 20 + 30)
    assert spent["rounds"] == 2
    assert spent["upload_bytes_per_client"] == pytest.approx((100 + 200 + 100) / 3)
    assert spent["upload_bytes_max"] == 200
    assert cost.fedavg_cost([], [10], 1, 100)["examples_processed"] == 0


@pytest.mark.parametrize("call, message", [
    (lambda: cost.fedavg_cost([[0, 3]], [1, 2, 3], 1, 10), "outside 0..2"),
    (lambda: cost.fedavg_cost([[1, 1]], [1, 2, 3], 1, 10), "twice"),
    (lambda: cost.fedavg_cost([[0]], [1, 2, 3], 0, 10), "local_epochs"),
    (lambda: cost.fedavg_cost([[0]], [1, 2, 3], 1, 0), "model_bytes"),
    (lambda: cost.centralized_cost([5, -1], 1, (2, 2, 1)), "non-negative"),
    (lambda: cost.centralized_cost([], 1, (2, 2, 1)), "non-empty"),
    (lambda: cost.centralized_cost([5], 1.5, (2, 2, 1)), "epochs"),
    (lambda: cost.local_cost(-3, 1), "client_size"),
    (lambda: cost.one_shot_cost([3], 1, -5), "model_bytes"),
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
    spent = cost.fedavg_cost(sampled, sizes, epochs, 4)
    assert spent["examples_processed"] == epochs * sum(sum(sizes[c] for c in s) for s in sampled)
    assert spent["rounds"] == rounds
    assert spent["upload_bytes_per_client"] * n == pytest.approx(4 * m * rounds)
    assert spent["upload_bytes_max"] <= 4 * rounds


def test_raw_data_bytes_and_traffic_by_round_by_hand():
    assert cost.raw_data_bytes([2, 10], (28, 28, 1)).tolist() == [1570, 7850]
    t = cost.traffic_by_round([[0, 1], [1], [1, 2]], num_clients=3, model_bytes=100)
    assert t["rounds"].tolist() == [0, 1, 2, 3]
    # cumulative uploads: client 0 once (round 1), client 1 every round, client 2 in round 3
    assert t["up"].tolist() == [[0, 0, 0], [100, 100, 0], [100, 200, 0], [100, 300, 100]]
    # downloads: the global model each round taken part in, plus the final model once
    assert t["down"].tolist() == [[100, 100, 100], [200, 200, 100], [200, 300, 100], [200, 400, 200]]
    bare = cost.traffic_by_round([[0, 1], [1], [1, 2]], 3, 100, final_download=False)
    assert np.array_equal(bare["down"], bare["up"])
    empty = cost.traffic_by_round([], 2, 10)
    assert empty["up"].tolist() == [[0, 0]] and empty["down"].tolist() == [[10, 10]]


def test_crossover_round():
    assert cost.crossover_round([0, 100, 100, 200], 150) == 3
    assert cost.crossover_round([0, 100], 0) == 0
    assert cost.crossover_round([0, 100], 101) is None
    for bad, message in ((([], 1), "non-empty"), (([[1, 2]], 1), "1-D"), (([1, 2], -1), "threshold")):
        with pytest.raises(ValueError, match=message):
            cost.crossover_round(*bad)


@pytest.mark.parametrize("call, message", [
    (lambda: cost.traffic_by_round([[0, 3]], 3, 10), "outside 0..2"),
    (lambda: cost.traffic_by_round([[1, 1]], 3, 10), "twice"),
    (lambda: cost.traffic_by_round([[0]], 0, 10), "num_clients"),
    (lambda: cost.traffic_by_round([[0]], 3, 0), "model_bytes"),
    (lambda: cost.raw_data_bytes([3, -1], (2, 2, 1)), "non-negative"),
    (lambda: cost.raw_data_bytes([3], (2, 0, 1)), "input_shape"),
])
def test_traffic_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), per_round=st.integers(1, 12), rounds=st.integers(0, 30),
       model_bytes=st.integers(1, 10**6), seed=st.integers(0, 10**6))
def test_traffic_by_round_matches_fedavg_cost_and_the_sampling(n, per_round, rounds, model_bytes, seed):
    """Each round, the m sampled clients upload and download one model each: after r rounds the
    clients together have uploaded r * m models (the mean client r * m / n), the last row is
    fedavg_cost's upload, and every client has downloaded what it uploaded plus the final model."""
    m = num_sampled(n, clients_per_round=min(per_round, n))
    sampled = [sample_clients(n, m, r, seed).tolist() for r in range(1, rounds + 1)]
    t = cost.traffic_by_round(sampled, n, model_bytes)
    assert t["up"].shape == t["down"].shape == (rounds + 1, n)
    assert np.array_equal(t["up"].sum(axis=1), model_bytes * m * np.arange(rounds + 1))
    assert np.array_equal(t["down"], t["up"] + model_bytes)
    assert np.all(np.diff(t["up"], axis=0) >= 0)
    spent = cost.fedavg_cost(sampled, [5] * n, 1, model_bytes)
    assert spent["upload_bytes_per_client"] == pytest.approx(t["up"][-1].mean())
    assert spent["upload_bytes_max"] == t["up"][-1].max()
    raw = float(model_bytes * 3)
    first = cost.crossover_round(t["up"].mean(axis=1), raw)
    if first is not None:
        assert t["up"][first].mean() >= raw and (first == 0 or t["up"][first - 1].mean() < raw)


def test_human_bytes():
    assert cost.human_bytes(999) == "999 B"
    assert cost.human_bytes(1000) == "1.00 kB"
    assert cost.human_bytes(217_640) == "217.64 kB"
    assert cost.human_bytes(4.2e9) == "4.20 GB"
    assert cost.human_bytes(None) == "-"
    with pytest.raises(ValueError):
        cost.human_bytes(-1)


# ---- table rows --------------------------------------------------------------------------------
M = {"accuracy": 0.8, "precision": 0.7, "recall": 0.6, "f1": 0.65}


def test_model_row_and_unavailable_row():
    row = report.model_row("baseline", "baseline", M, cost.local_cost(10, 1), client=3)
    assert row["accuracy"] == 0.8 and row["examples_processed"] == 10 and row["client"] == 3 and row["available"]
    with pytest.raises(ValueError, match="lack"):
        report.model_row("x", "local", {"accuracy": 0.5})
    na = report.unavailable_row("FedAvg, TFF", "fedavg_tff", "TFF cannot run here")
    assert na["accuracy"] is None and na["f1"] is None and not na["available"] and "TFF" in na["note"]


def test_mean_row_averages_metrics_and_reports_the_spread():
    rows = [report.model_row(f"c{i}", "local", {**M, "accuracy": a}, cost.local_cost(n, 2))
            for i, (a, n) in enumerate([(0.5, 10), (0.7, 20), (0.9, 30)])]
    rows.append(report.unavailable_row("broken", "local", "no data"))
    mean = report.mean_row("mean", rows)
    assert mean["accuracy"] == pytest.approx(0.7) and mean["precision"] == pytest.approx(0.7)
    assert mean["accuracy_std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
    assert (mean["accuracy_min"], mean["accuracy_median"], mean["accuracy_max"]) == pytest.approx((0.5, 0.7, 0.9))
    assert mean["examples_processed"] == 40 and mean["count"] == 3
    with pytest.raises(ValueError):
        report.mean_row("mean", [report.unavailable_row("x", "local", "none")])


def _run_course_module():
    spec = importlib.util.spec_from_file_location("run_course", ROOT / "scripts" / "run_course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_rows_drop_single_clients_and_make_course_prints_them(capsys):
    table = [report.model_row("centralized baseline", "baseline", M),
             report.model_row("local-only: client 0", "local", M),
             report.model_row("local-only: mean of 1", "local_mean", M),
             report.unavailable_row("FedAvg, TFF (3 rounds)", "fedavg_tff", "no TFF")]
    summary = report.summary_rows(table)
    assert [r["model"] for r in summary] == ["centralized baseline", "local-only: mean of 1", "FedAvg, TFF (3 rounds)"]
    assert summary[-1]["accuracy"] is None
    assert report.summary_rows({r["model"]: r for r in table}) == summary  # rows keyed by name
    _run_course_module().print_course_table(json.loads(json.dumps({"summary_table": summary})))
    out = capsys.readouterr().out
    assert "centralized baseline" in out and "0.8000" in out and "0.6500" in out
    assert "FedAvg, TFF (3 rounds)" in out and "n/a" in out and "client 0" not in out


def test_summary_rows_carry_the_iid_column_and_make_course_prints_both(capsys):
    """Notebook 05's summary rows: the main setting's metrics and, beside them, the IID run's
    (matched by model name; None where the IID run has no such row); make course prints both."""
    main = [report.model_row("centralized baseline", "baseline", M),
            report.model_row("local-only: client 0", "local", M),
            report.model_row("FedAvg, hand-written (3 rounds)", "fedavg_manual", {**M, "accuracy": 0.7, "f1": 0.6}),
            report.model_row("FedAvg, TFF (3 rounds)", "fedavg_tff", {**M, "accuracy": 0.71, "f1": 0.61})]
    iid = {"centralized baseline": report.model_row("centralized baseline", "baseline", {**M, "accuracy": 0.81}),
           "FedAvg, hand-written (3 rounds)": report.model_row("FedAvg, hand-written (3 rounds)", "fedavg_manual",
                                                               {**M, "accuracy": 0.79, "f1": 0.78})}
    summary = report.summary_rows(main, beside=iid)
    assert [r["model"] for r in summary] == ["centralized baseline", "FedAvg, hand-written (3 rounds)",
                                             "FedAvg, TFF (3 rounds)"]
    assert (summary[0]["accuracy"], summary[0]["accuracy_iid"]) == (0.8, 0.81)
    assert (summary[1]["f1"], summary[1]["f1_iid"]) == (0.6, 0.78)
    assert summary[2]["accuracy_iid"] is None and summary[2]["accuracy"] == 0.71
    assert report.summary_rows(main, beside=list(iid.values())) == summary
    na = {"centralized baseline": report.unavailable_row("centralized baseline", "baseline", "not trained")}
    assert report.summary_rows(main[:1], beside=na)[0]["accuracy_iid"] is None
    with pytest.raises(ValueError, match="suffix"):
        report.summary_rows(main, beside=iid, suffix="")
    results = {"summary_table": summary, "summary_settings": {"iid": "IID", "main": "Dirichlet(0.5)"}}
    _run_course_module().print_course_table(json.loads(json.dumps(results)))
    out = capsys.readouterr().out
    assert "IID" in out and "Dirichlet(0.5)" in out and out.index("IID") < out.index("Dirichlet(0.5)")
    baseline_line = next(line for line in out.splitlines() if "centralized baseline" in line)
    assert baseline_line.split()[-4:] == ["0.8100", "0.6500", "0.8000", "0.6500"]
    tff_line = next(line for line in out.splitlines() if "FedAvg, TFF" in line)
    assert tff_line.split()[-4:] == ["n/a", "n/a", "0.7100", "0.6100"]


# ---- per-client gains -----------------------------------------------------------------------------
def test_per_client_gains_by_hand():
    g = report.per_client_gains([0.9, 0.5, None, 0.7], [0.8, 0.6, None, 0.7])
    assert g["gains"][0] == pytest.approx(0.1) and g["gains"][1] == pytest.approx(-0.1)
    assert g["gains"][2] is None and g["gains"][3] == 0.0
    assert (g["gainers"], g["losers"], g["ties"], g["clients"]) == ([0], [1], [3], [0, 1, 3])
    assert (g["worst_client"], g["best_client"], g["biggest_loser"], g["biggest_gainer"]) == (1, 0, 1, 0)
    assert g["federated"]["median"] == pytest.approx(0.7)
    wide = report.per_client_gains([0.9, 0.5, 0.7], [0.8, 0.6, 0.7], tolerance=0.15)
    assert wide["gainers"] == [] and wide["losers"] == [] and wide["ties"] == [0, 1, 2]


@pytest.mark.parametrize("fed, local, message", [
    ([0.5], [0.5, 0.6], "one federated and one local"),
    ([0.5, None], [0.5, 0.4], "one accuracy but not the other"),
    ([None], [None], "no client"),
    ([1.5], [0.5], r"\[0, 1\]"),
])
def test_per_client_gains_rejects_bad_input(fed, local, message):
    with pytest.raises(ValueError, match=message):
        report.per_client_gains(fed, local)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=20),
       st.floats(0, 0.2))
def test_per_client_gains_properties(pairs, tol):
    fed, local = [p[0] for p in pairs], [p[1] for p in pairs]
    g = report.per_client_gains(fed, local, tolerance=tol)
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
    task = binary_task.make_binary_task(y_train, y_test, (1, 3), num_clients=10, per_client=198,
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
    same = binary_task.make_binary_task(y_train, y_test, (1, 3), per_client=198, test_sizes=(206, 207), seed=4)
    other = binary_task.make_binary_task(y_train, y_test, (1, 3), per_client=198, test_sizes=(206, 207), seed=5)
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
        binary_task.make_binary_task(y_train, y_test, **args)


def test_binary_scores_by_hand():
    s = binary_task.binary_scores([0, 0, 1, 1, 1], [0, 1, 1, 1, 0])
    assert s["accuracy"] == pytest.approx(0.6)
    assert s["precision_pos"] == pytest.approx(2 / 3) and s["recall_pos"] == pytest.approx(2 / 3)
    # class 0: precision 1/2, recall 1/2; class 1: 2/3, 2/3
    assert s["precision"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_raj_2020_numbers_are_the_papers():
    p = binary_task.RAJ_2020
    assert p["centralized"]["accuracy"] == 0.9417 and p["averaged"]["accuracy"] == 0.9348
    assert len(p["submodel_accuracy"]) == p["num_clients"] == 10
    assert p["per_client"] == 198 and sum(p["test_sizes"]) == 1013
    assert binary_task.BINARY_CLASSES["fashion_mnist"] == (0, 6)  # T-shirt/top vs Shirt


# ---- sentences from numbers ---------------------------------------------------------------------
def test_compare_and_relation():
    assert findings.compare("A", 0.8812, "B", 0.9005) == "A (0.8812) is 1.93 points below B (0.9005)"
    assert findings.compare("A", 0.95, "B", 0.90) == "A (0.9500) is 5.00 points above B (0.9000)"
    assert findings.compare("A", 0.901, "B", 0.90) == ("A (0.9010) is on par with B (0.9000): +0.10 points, within the "
                                                 "0.5-point tolerance")
    assert findings.relation(0.9, 0.8) == "above" and findings.relation(0.8, 0.9) == "below" and findings.relation(0.8, 0.803) == "on par"
    with pytest.raises(ValueError):
        findings.compare("A", 1, "B", 1, tolerance=-1)


def test_order_sentence_says_when_the_order_breaks():
    text, held = findings.order_sentence({"a": 0.9, "b": 0.8, "c": 0.5}, ["a", "b", "c"], "acc")
    assert held and "expected order" in text and "a 0.9000" in text
    text, held = findings.order_sentence({"a": 0.7, "b": 0.8, "c": 0.5}, ["a", "b", "c"], "acc")
    assert not held and "NOT the expected order" in text and "b > a > c" in text
    _, held = findings.order_sentence({"a": 0.799, "b": 0.8}, ["a", "b"], "acc", tolerance=0.005)
    assert held
    with pytest.raises(ValueError, match="no value"):
        findings.order_sentence({"a": 1}, ["a", "b"], "acc")


FED = "FedAvg, TFF (20 rounds)"
CLAIMS = ["fed_vs_baseline", "fed_vs_local", "who_gains", "one_shot_vs_fedavg", "sequential_vs_weighted",
          "heterogeneity_order", "binary_vs_paper"]


def _results(**changes):
    """Notebook 05's results by name, as conclusions() reads them; ``changes`` override the
    numbers (flat names, as the notebook's old facts dict had them)."""
    f = {"baseline": 0.90, "fed": 0.88, "fed_rounds": 20, "fed_upload": 2_176_400.0,
         "central_upload": 4_239_000.0, "local_mean": 0.84, "local_min": 0.83, "local_max": 0.85,
         "uniform": 0.70, "weighted": 0.71, "sequential": 0.60,
         "own_federated": [0.81, 0.83, 0.85], "own_local": [0.80, 0.80, 0.80],
         "hetero": {"IID": 0.85, "Dirichlet(0.5)": 0.83, "Dirichlet(0.1)": 0.70, "pathological (2 classes)": 0.60},
         "hetero_central": 0.87,
         "binary": {"central": 0.84, "averaged": 0.80, "local_mean": 0.79}, "smoke": False}
    f.update(changes)

    def row(name, kind, acc, upload=None, rounds=0, **extra):
        spent = {"examples_processed": 100, "rounds": rounds, "upload_bytes_per_client": upload,
                 "upload_bytes_max": upload}
        return report.model_row(name, kind, {**M, "accuracy": acc}, spent, **extra)

    rows = [row("centralized baseline", "baseline", f["baseline"], f["central_upload"]),
            row("local-only: mean of 3", "local_mean", f["local_mean"], 0,
                accuracy_min=f["local_min"], accuracy_max=f["local_max"]),
            row("one-shot: uniform mean", "one_shot", f["uniform"], 1000, 1, method="uniform mean"),
            row("one-shot: example-weighted mean", "one_shot", f["weighted"], 1000, 1,
                method="example-weighted mean"),
            row("one-shot: sequential k=0.5 (Raj 2020)", "one_shot", f["sequential"], 1000, 1,
                method="sequential k=0.5"),
            row("FedAvg, hand-written (20 rounds)", "fedavg_manual", 0.5, f["fed_upload"], f["fed_rounds"],
                method="FedAvg, hand-written"),
            row(FED, "fedavg_tff", f["fed"], f["fed_upload"], f["fed_rounds"], method="FedAvg, TFF")]
    b = f["binary"]
    gains = None if f["own_federated"] is None else report.per_client_gains(f["own_federated"], f["own_local"])
    return {"table": {r["model"]: r for r in rows}, "federated": FED, "gains": gains,
            "heterogeneity": f["hetero"], "heterogeneity_central": f["hetero_central"],
            "heterogeneity_order": heterogeneity.EXPECTED_ORDER,
            "binary": {"centralized": {"accuracy": b["central"]},
                       "averaged, sequential k=0.5": {"accuracy": b["averaged"]},
                       "submodel_mean": {"accuracy": b["local_mean"]}},
            "paper": binary_task.RAJ_2020, "smoke": f["smoke"]}


def _conclude(**changes) -> dict:
    out = findings.conclusions(**_results(**changes))
    assert len(findings.by_claim(out)) == len(out)  # one finding per claim
    return findings.by_claim(out)


def test_conclusions_read_the_numbers():
    found = _conclude()
    assert list(found) == CLAIMS  # the order the notebook prints them in; no smoke_run
    fb = found["fed_vs_baseline"]
    assert fb.relation == "below" and fb.held is None
    assert fb.numbers["federated"] == 0.88 and fb.numbers["baseline"] == 0.90 and fb.numbers["rounds"] == 20
    assert (fb.numbers["federated_upload_bytes"], fb.numbers["centralized_upload_bytes"]) == (2_176_400.0, 4_239_000.0)
    assert "FedAvg, TFF after 20 rounds (0.8800) is 2.00 points below the centralized baseline (0.9000)" in fb.sentence
    assert "2.18 MB" in fb.sentence and "4.24 MB" in fb.sentence
    fl = found["fed_vs_local"]
    assert fl.relation == "above" and fl.held is True and fl.numbers["above_best_client"] is True
    assert fl.numbers["local_max"] == 0.85 and "every client gains by joining" in fl.sentence
    wg = found["who_gains"]
    assert wg.held is True and wg.numbers["gainers"] == [0, 1, 2] and wg.numbers["losers"] == []
    assert wg.numbers["clients"] == 3
    assert (wg.numbers["gain_min"], wg.numbers["gain_median"], wg.numbers["gain_max"]) == pytest.approx((0.01, 0.03, 0.05))
    assert "no client would have been better off alone" in wg.sentence
    os_ = found["one_shot_vs_fedavg"]
    assert os_.relation == "below" and os_.held is True and os_.numbers["best"] == "example-weighted mean"
    assert os_.numbers["example-weighted mean"] - os_.numbers["federated"] == pytest.approx(-0.17)
    assert "the example-weighted mean does best: it (0.7100) is 17.00 points below 20-round FedAvg" in os_.sentence
    assert "not a substitute" in os_.sentence
    sw = found["sequential_vs_weighted"]
    assert sw.relation == "below" and sw.held is None
    assert (sw.numbers["sequential"], sw.numbers["weighted"]) == (0.60, 0.71)
    het = found["heterogeneity_order"]
    assert het.held is True and het.numbers["order"][:3] == list(heterogeneity.EXPECTED_ORDER)
    assert het.numbers["worst"] == "pathological (2 classes)" and het.relation == "below"
    assert het.numbers["worst_vs_centralized_points"] == pytest.approx(-27.0)
    assert "NOT" not in het.sentence
    bp = found["binary_vs_paper"]
    assert bp.numbers["paper_relation"] == "below"
    assert (bp.numbers["paper_averaged"] - bp.numbers["paper_centralized"]) * 100 == pytest.approx(-0.69)
    assert bp.relation == "below" and (bp.numbers["averaged"] - bp.numbers["centralized"]) * 100 == pytest.approx(-4.0)
    assert bp.held is True and bp.numbers["submodel_mean"] == 0.79
    assert "0.69 points below its centralized one" in bp.sentence and "4.00 points below our centralized one" in bp.sentence
    assert all("smoke" not in f.sentence for f in found.values())
    json.dumps([f.as_dict() for f in found.values()])  # plain JSON for the results file


def test_conclusions_flag_a_run_that_contradicts_the_claims():
    found = _conclude(
        fed=0.80, own_federated=[0.81, 0.78, 0.85], uniform=0.95, local_max=0.87,
        hetero={"IID": 0.70, "Dirichlet(0.5)": 0.83, "Dirichlet(0.1)": 0.72, "pathological (2 classes)": 0.6},
        binary={"central": 0.84, "averaged": 0.85, "local_mean": 0.86}, smoke=True)
    assert list(found) == [*CLAIMS, "smoke_run"]
    fl = found["fed_vs_local"]
    assert fl.relation == "below" and fl.held is False and "WORSE than training alone" in fl.sentence
    wg = found["who_gains"]
    assert wg.held is False and wg.numbers["gainers"] == [0, 2] and wg.numbers["losers"] == [1]
    assert "client(s) 1" in wg.sentence
    os_ = found["one_shot_vs_fedavg"]
    assert os_.held is False and os_.relation == "above" and os_.numbers["best"] == "uniform mean"
    assert "one round of averaging finished models was enough" in os_.sentence
    het = found["heterogeneity_order"]
    assert het.held is False and het.numbers["order"][:3] == ["Dirichlet(0.5)", "Dirichlet(0.1)", "IID"]
    assert "NOT the expected order" in het.sentence
    bp = found["binary_vs_paper"]
    assert bp.relation == "above" and (bp.numbers["averaged"] - bp.numbers["centralized"]) * 100 == pytest.approx(1.0)
    assert bp.held is False and "does NOT beat the mean submodel" in bp.sentence
    assert "smoke run" in found["smoke_run"].sentence
    partly = _conclude(local_max=0.90)["fed_vs_local"]
    assert partly.relation == "above" and partly.held is True and partly.numbers["above_best_client"] is False
    assert "the best single client (0.9000) did better" in partly.sentence
    on_par = _conclude(fed=0.842)["fed_vs_local"]
    assert on_par.relation == "on par" and on_par.held is False


def _conclusion_cells(**changes):
    """Run notebook 05's cells tagged ``conclusions-lesson`` (its per-setting conclusions, in plain
    sight) on the results of :func:`_results` (one setting, "Dirichlet(0.5)"; the IID setting is
    the same results with FedAvg 3 points higher). Returns the lessons they printed, by claim."""
    import textwrap
    from types import SimpleNamespace

    nb = json.loads((ROOT / "notebooks" / "05_evaluation.ipynb").read_text())
    cells = [c for c in nb["cells"] if "conclusions-lesson" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) >= 2, "notebook 05 must tag its conclusion cells conclusions-lesson"
    r = _results(**changes)
    iid = {name: dict(row, accuracy=row["accuracy"] + 0.03) if row["kind"] == "fedavg_tff" else row
           for name, row in r["table"].items()}
    gains = None if r["gains"] is None else {"IID": r["gains"], "Dirichlet(0.5)": r["gains"]}
    ns = {"textwrap": textwrap, "compare": findings.compare, "settings": {"IID": None, "Dirichlet(0.5)": None},
          "tables": {"IID": iid, "Dirichlet(0.5)": r["table"]}, "table": r["table"], "table_iid": iid,
          "IID": "IID", "MAIN": "Dirichlet(0.5)", "fed_label": FED, "fed_settings": "20 rounds",
          "gains": gains, "cfg": SimpleNamespace(rounds=20), "coef": np.array([0.5])}
    for cell in cells:
        exec(compile("".join(cell["source"]), "notebook-05-conclusions-lesson", "exec"), ns)
    out = {}
    for lesson in ns["lessons"]:
        out.setdefault(lesson["claim"], {})[lesson["setting"]] = lesson
    return out, findings.by_claim(findings.conclusions(**r))


@pytest.mark.parametrize("changes", [
    {},
    {"fed": 0.80, "own_federated": [0.81, 0.78, 0.85], "uniform": 0.95, "local_max": 0.87},
    {"fed": 0.842},                       # on par with the local-only mean: not "above"
    {"own_federated": None},              # no local test splits: no per-client claim
])
def test_notebook_05_conclusion_cells_agree_with_findings(changes, capsys):
    """The conclusions notebook 05 computes in its own cells say what data_utils.findings says
    from the same numbers: the same expectation held or not, the same numbers quoted."""
    ours, package = _conclusion_cells(**changes)
    main = "Dirichlet(0.5)"
    for claim in ("fed_vs_baseline", "fed_vs_local", "one_shot_vs_fedavg", "sequential_vs_weighted"):
        assert ours[claim][main]["held"] == package[claim].held, claim
        assert set(ours[claim]) == {"IID", main}
    for number in ("0.9000", "0.8400"):
        assert number in ours["fed_vs_baseline"][main]["sentence"] + ours["fed_vs_local"][main]["sentence"]
    if changes.get("own_federated", []) is None:
        assert "who_gains" not in ours
    else:
        assert ours["who_gains"][main]["held"] == package["who_gains"].held
        assert f"{len(package['who_gains'].numbers['gainers'])} of 3 clients gain" in ours["who_gains"][main]["sentence"]
    cost_ = ours["non_iid_cost"]["IID vs Dirichlet(0.5)"]
    assert cost_["held"] is True and "-3.00 points" in cost_["sentence"]
    printed = capsys.readouterr().out
    assert all(len(line) <= 200 for line in printed.splitlines())
    assert "[IID]" in printed and f"[{main}]" in printed


def test_conclusions_without_local_test_splits():
    found = _conclude(own_federated=None)
    wg = found["who_gains"]
    assert wg.held is None and wg.numbers == {} and "cannot say who gains" in wg.sentence
    assert list(found) == list(_conclude())


def test_conclusions_need_the_rows_they_read():
    results = _results()
    with pytest.raises(ValueError, match="no row named"):
        findings.conclusions(**dict(results, federated="FedAvg, TFF (3 rounds)"))
    table = dict(results["table"])
    table[FED] = report.unavailable_row(FED, "fedavg_tff", "no TFF")
    with pytest.raises(ValueError, match="has no numbers"):
        findings.conclusions(**dict(results, table=table))
    no_mean = {k: r for k, r in results["table"].items() if r["kind"] != "local_mean"}
    with pytest.raises(ValueError, match="local_mean"):
        findings.conclusions(**dict(results, table=no_mean))
    no_method = {k: dict(r, method=None) if r["kind"] == "one_shot" else r for k, r in results["table"].items()}
    with pytest.raises(ValueError, match="one-shot"):
        findings.conclusions(**dict(results, table=no_method))
    with pytest.raises(ValueError, match="paper"):
        findings.conclusions(**dict(results, paper=None))
    with pytest.raises(ValueError, match="heterogeneity_order"):
        findings.conclusions(**dict(results, heterogeneity_order=()))
    # what is not given is left out, not guessed
    assert [f.claim for f in findings.conclusions(results["table"], FED)] == CLAIMS[:5]


# ---- heterogeneity experiments and saved runs ----------------------------------------------------
def test_heterogeneity_experiments_keep_the_experiment_and_cut_the_data():
    from data_utils.experiment import Experiment

    exp = Experiment.from_params(smoke=True, num_clients=7, seed=3)
    variants = dict(heterogeneity.heterogeneity_experiments(exp, train_examples=1500))
    assert list(variants) == [s["label"] for s in heterogeneity.HETEROGENEITY_SCHEMES]
    assert variants["Dirichlet(0.1)"].alpha == 0.1 and variants["Dirichlet(0.1)"].partition == "dirichlet"
    assert variants["pathological (2 classes)"].classes_per_client == 2
    assert all(e.train_limit == 1500 and e.num_clients == 7 and e.seed == 3 for e in variants.values())
    assert dict(heterogeneity.heterogeneity_experiments(exp))["IID"].train_limit == exp.train_limit
    full = Experiment()
    assert dict(heterogeneity.heterogeneity_experiments(full, train_examples=12000))["IID"].train_limit == 12000
    assert dict(heterogeneity.heterogeneity_experiments(full))["IID"].train_limit is None
    with pytest.raises(ValueError, match="train_examples"):
        heterogeneity.heterogeneity_experiments(exp, train_examples=0)


def test_classes_per_round_counts_the_classes_a_round_sees():
    from data_utils.partition import make_partition

    counts = [[5, 0, 0], [0, 3, 0], [0, 2, 1]]
    assert heterogeneity.classes_per_round(counts, [[0], [0, 1], [1, 2], [0, 1, 2]]) == [1, 2, 2, 3]
    with pytest.raises(ValueError, match="0..2"):
        heterogeneity.classes_per_round(counts, [[3]])
    with pytest.raises(ValueError, match="clients x classes"):
        heterogeneity.classes_per_round([1, 2], [[0]])
    # McMahan's split, 2 classes per client: 2 clients see at most 4 classes, all 10 clients all of them
    y = np.repeat(np.arange(10), 60)
    part = make_partition(y, scheme="pathological", num_clients=10, classes_per_client=2, seed=1,
                          local_test_fraction=0.0)
    label_counts = part.label_counts(y, 10)
    two = heterogeneity.classes_per_round(label_counts, [sample_clients(10, 2, r, 0) for r in range(1, 21)])
    assert all(1 <= c <= 4 for c in two)
    assert heterogeneity.classes_per_round(label_counts, [range(10)]) == [10]


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
    weights, history, status = runs.get_tff_fedavg(params, log=lambda s: None)
    assert weights is None and history is None
    assert status.startswith("not available") and "notebook 04" in status

    exp, cfg, _ = parse_params(params, JOB_OPTIONS)
    saved = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    rows = [{"round": r, "clients": [0, 1, 2], "num_examples": 30, "seconds": 0.1, "test_accuracy": 0.5}
            for r in (1, 2)]
    save_fedavg_run("fedavg_tff", exp.as_dict(), cfg, saved, rows)
    weights, history, status = runs.get_tff_fedavg(params, log=lambda s: None)
    assert status == "reused" and history == rows
    assert all(np.array_equal(a, b) for a, b in zip(weights, saved))
    # other FedAvg settings: not reused
    weights, _, status = runs.get_tff_fedavg(dict(params, CLIENT_LR=0.3), log=lambda s: None)
    assert weights is None and status.startswith("not available")


def test_get_tff_fedavg_says_why_when_training_fails_here(artifacts, monkeypatch):
    """A TFF run that cannot be trained here (e.g. a client dataset over TFF's serialization
    limit) is a status sentence for the table's row, not a traceback in the notebook."""
    from data_utils import jobs, sidecar

    def fails(params, progress=None, log=None):
        raise ValueError("Serialized size of Dataset (135370264 bytes) exceeds maximum allowed (104857600 bytes)")

    monkeypatch.setattr(sidecar, "tff_available_here", lambda: True)
    monkeypatch.setattr(jobs, "tff_fedavg_job", fails)
    weights, history, status = runs.get_tff_fedavg({"NUM_CLIENTS": 3, "SEED": 5, "SMOKE": True, "ROUNDS": 2},
                                                   log=lambda s: None, progress=False)
    assert weights is None and history is None
    assert status.startswith("not available") and "ValueError" in status and "exceeds maximum" in status
    assert "notebook 04" in status


def test_get_manual_fedavg_trains_once_then_reuses(artifacts):
    from data_utils.experiment import Experiment, get_partition, initial_weights, load_data

    exp = Experiment.from_params(smoke=True, num_clients=3, seed=2)
    cfg = FedAvgConfig(rounds=1, client_fraction=1.0, batch_size=50, client_lr=0.1, seed=2)
    data = load_data(exp)
    part = get_partition(exp, data, log=lambda s: None)
    init = initial_weights(exp, data, log=lambda s: None)
    w1, h1, s1 = runs.get_manual_fedavg(exp, cfg, data, part, init, log=lambda s: None, progress=False)
    w2, h2, s2 = runs.get_manual_fedavg(exp, cfg, data, part, init, log=lambda s: None, progress=False)
    assert (s1, s2) == ("trained", "reused")
    assert h1[0]["clients"] == h2[0]["clients"] == [0, 1, 2]
    assert h1[0]["test_accuracy"] == pytest.approx(h2[0]["test_accuracy"])
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert not all(np.array_equal(a, b) for a, b in zip(w1, init))


def test_get_binary_models_trains_from_one_start_and_reuses(artifacts):
    from data_utils.experiment import Experiment, load_data
    from data_utils.training import training_config

    data = load_data(Experiment.from_params(smoke=True, seed=1))
    task = binary_task.make_binary_task(data.y_train, data.y_test, (0, 6), num_clients=2, per_client=20,
                               test_sizes=(10, 10), seed=1)
    cfg = training_config(True, epochs=1, batch_size=10)
    logs = []
    models = binary_task.get_binary_models(task, data, "cnn_small", 1, cfg, log=logs.append, progress=False)
    again = binary_task.get_binary_models(task, data, "cnn_small", 1, cfg, log=logs.append, progress=False)
    assert list(models) == ["centralized", "client 0", "client 1"] == list(again)
    assert models["centralized"][-1].shape == (2,)
    assert "computing" in logs[0] and "reused" in logs[1]
    assert all(np.array_equal(a, b) for name in models for a, b in zip(models[name], again[name]))
    assert not np.array_equal(models["client 0"][0], models["client 1"][0])  # two clients, two different models


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
    for stem in stems:  # what test_notebooks checks for the notebooks it runs alone
        problems = nb_checks.output_problems(json.loads((tmp_path / f"{stem}.ipynb").read_text()), stem)
        assert not problems, "what a learner would have to read past:\n" + "\n".join(problems)
        print(f"{stem}: {seconds[stem]:.0f} s in smoke mode, in the chain")
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
    # every number of the summary is a table row's number, the IID column the IID table's
    rows_iid = {r["model"]: r for r in r05["table_iid"]}
    assert r05["summary_settings"] == {"iid": "IID", "main": "Dirichlet(0.5)"}
    for s in r05["summary_table"]:
        assert s["accuracy"] == rows[s["model"]]["accuracy"] and s["f1"] == rows[s["model"]]["f1"]
        iid = rows_iid.get(s["model"], {})
        assert s["accuracy_iid"] == iid.get("accuracy") and s["f1_iid"] == iid.get("f1")
    assert rows_iid[manual["model"]]["accuracy"] is not None
    # the bandwidth curve ends this run's rounds where the table's upload column does
    bandwidth = r05["bandwidth"]
    assert bandwidth["up_mean"][manual["rounds"]] == pytest.approx(manual["upload_bytes_per_client"])
    assert bandwidth["down_mean"][0] == r05["model_bytes"]
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


def test_tail_mean():
    assert report.tail_mean([0.1, 0.5, 0.6, 0.7]) == pytest.approx(0.6)
    assert report.tail_mean([0.1, 0.5], last=3) == pytest.approx(0.3)
    assert report.tail_mean([0.4], last=1) == 0.4
    with pytest.raises(ValueError, match="empty"):
        report.tail_mean([])
    with pytest.raises(ValueError, match="last"):
        report.tail_mean([0.1], last=0)


@pytest.mark.parametrize("notebook_fails", [False, True])
def test_make_course_ends_with_this_runs_table(tmp_path, monkeypatch, capsys, notebook_fails):
    """scripts/run_course.py (make course) prints notebook 05's summary_table from the results
    folder the run used, and never a stale table when notebook 05 failed."""
    import papermill

    from data_utils import write_results

    run_course = _run_course_module()
    results = tmp_path / "results"
    stale = [report.model_row("stale model", "baseline", M)]
    write_results("05_evaluation", {"summary_table": report.summary_rows(stale)}, results)
    fresh = [report.model_row("centralized baseline", "baseline", {**M, "accuracy": 0.9123, "f1": 0.9111}),
             report.unavailable_row("FedAvg, TFF (3 rounds)", "fedavg_tff", "no TFF")]

    def fake_execute(nb, out, parameters, **kwargs):
        if notebook_fails:
            raise RuntimeError("a cell failed")
        write_results(Path(nb).stem, {"summary_table": report.summary_rows(fresh), "smoke": True},
                      parameters["RESULTS_DIR"])
        Path(out).write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))

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
