"""The benchmarks: helper rules (fast), and the SMOKE variant end to end in a subprocess (its own
session, ended afterwards), checking the report's structure and that no worker_binary survives."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import common, niid, report  # noqa: E402
from benchmarks.__main__ import parse_sections  # noqa: E402
from benchmarks.settings import FULL, SECTIONS, SMOKE, settings_from_dict  # noqa: E402


# ---- fast checks ---------------------------------------------------------------------------------
@hsettings(max_examples=60, deadline=None)
@given(n=st.integers(20, 400), per=st.integers(1, 40), k=st.integers(1, 60), seed=st.integers(0, 9))
def test_fixed_size_clients_rules(n, per, k, seed):
    per = min(per, n)
    clients = common.fixed_size_clients(n, k, per, seed)
    assert len(clients) == k
    for c in clients:
        assert len(c) == per and len(np.unique(c)) == per  # exact size, no repeats inside a client
        assert c.min() >= 0 and c.max() < n
    flat = np.concatenate(clients)
    if k * per <= n:
        assert len(np.unique(flat)) == k * per  # disjoint while they fit
    # each pass over the data (one permutation) serves n // per clients, so no example is used by
    # more clients than there are passes
    passes = -(-k // (n // per))
    assert np.bincount(flat, minlength=n).max() <= passes


def test_fixed_size_clients_deterministic_and_checked():
    a = common.fixed_size_clients(60000, 3000, 600, 0)
    b = common.fixed_size_clients(60000, 3000, 600, 0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.bincount(np.concatenate(a)).tolist() == [30] * 60000  # each image in 30 clients
    first100 = np.concatenate(a[:100])
    assert len(np.unique(first100)) == 60000  # the first 100 clients are an IID partition
    for bad in ({"per_client": 0}, {"num_clients": -1}, {"per_client": 70000}):
        kwargs = dict(num_examples=60000, num_clients=10, per_client=600, seed=0)
        kwargs.update(bad)
        with pytest.raises(ValueError):
            common.fixed_size_clients(**kwargs)


def test_settings_round_trip_and_sections():
    assert settings_from_dict(FULL.as_dict()) == FULL
    assert settings_from_dict(SMOKE.as_dict()) == SMOKE
    assert parse_sections("1,scale") == ["overhead", "scale"]
    assert parse_sections("5") == parse_sections("niid") == ["niid"]
    assert parse_sections(None) == list(SECTIONS)
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="unknown section"):
        parse_sections("6")


def test_goal_wording_says_by_how_much():
    g = report._goal("1", "x", 1.5, 1.3, False, "x")
    assert g["met"] is False and "missed by 0.2x" in g["summary"]
    g = report._goal("4", "acc", 0.9, 0.884, True, lower_is_better=False)
    assert "missed" not in g["summary"]
    assert report._goal("3", "m", None, 3072, None)["summary"] == "not measured"


def test_niid_flower_table_is_the_cited_one():
    # Flower baseline niid_bench README (Fashion-MNIST rows), as quoted in issue 16
    issue = {"IID": (89.23, 89.33, 89.42, 89.36), "Dirichlet(0.5)": (88.09, 88.44, 88.15, 88.22),
             "#C=1": (28.39, 10.00, 32.65, 16.86), "#C=2": (78.10, 33.80, 78.05, 71.67),
             "#C=3": (82.43, 80.32, 82.99, 81.97)}
    assert {row: tuple(m for m, _ in cells) for row, cells in niid.FLOWER.items()} == issue
    assert [r[0] for r in FULL.niid.rows] == list(issue)
    assert [c[0] for c in FULL.niid.columns][:4] == list(niid.FLOWER_COLUMNS)
    assert niid.FLOWER_URL == "https://github.com/adap/flower/tree/main/baselines/niid_bench"
    assert niid.flower("#C=2", "SCAFFOLD") == 33.80 and niid.flower("IID", "FedAvgM") is None


def test_niid_jobs_are_cells_sharing_the_cores():
    cells = niid.jobs(FULL, cores=2)
    assert [(j["rows"], j["columns"]) for j in cells] == [
        ([r[0]], [c[0]]) for r in FULL.niid.rows for c in FULL.niid.columns]
    assert {j["env"]["TF_NUM_INTRAOP_THREADS"] for j in cells} == {"1"}  # 2 cores, 2 at a time
    assert niid.threads(FULL, cores=8) == 4 and niid.threads(FULL, cores=1) == 1
    assert niid.threads(replace(FULL, niid=replace(FULL.niid, threads=3)), cores=2) == 3
    rows = niid.jobs(replace(FULL, niid=replace(FULL.niid, job_unit="row")), cores=2)
    assert [j["rows"] for j in rows] == [[r[0]] for r in FULL.niid.rows]
    assert len(niid.jobs(replace(FULL, niid=replace(FULL.niid, isolate=False)))) == 1
    with pytest.raises(ValueError, match="job_unit must be 'cell' or 'row', got 'column'"):
        niid.jobs(replace(FULL, niid=replace(FULL.niid, job_unit="column")))
    # cell jobs report their row each; the section keeps one row entry, cells in job order
    parts = [{"ok": True, "setup": {}, "rows": [{"row": r}], "cells": [{"row": r, "column": c}],
              "cpu_seconds": 1.0, "process": {}} for r in ("A", "B") for c in ("x", "y")]
    out = niid.combine(parts)
    assert [x["row"] for x in out["rows"]] == ["A", "B"] and len(out["cells"]) == 4
    assert out["ok"] and out["cpu_seconds"] == 4.0


def test_niid_cells_stop_before_a_round_that_would_pass_the_cpu_budget():
    assert not niid.over_budget(90.0, 9, 100.0)       # 90 + 10 = 100: the next round still fits
    assert niid.over_budget(91.0, 9, 100.0)           # 91 + 10.1 > 100
    assert not niid.over_budget(1e9, 3, None)         # no budget: only the round cap
    assert not niid.over_budget(0.0, 0, 1.0)          # before any round there is no estimate
    assert FULL.niid.cpu_budget_seconds == 200.0 and FULL.niid.rounds == 50  # niid_bench's rounds
    r = {"setup": {"cpu_budget_seconds": 200.0, "max_rounds": 50},
         "cells": [{"ok": True, "rounds": 27}, {"ok": True, "rounds": 31}, {"ok": False},
                   {"ok": True, "rounds": 6, "stop_reason": "failed in round 7 (ValueError: NaN)"}]}
    assert niid.round_range(r) == (27, 31) and niid.round_range({"cells": []}) == (0, 0)
    assert niid.round_span(r) == "27-31"
    assert niid.budget_words(r["setup"]) == "at most 200 training CPU s per cell"
    assert niid.budget_words({"rounds": 6}) == "at most 6 rounds per cell"  # a report from before
    assert niid.epochs_words({"local_epochs": 1}) == "1 local epoch"
    assert niid.epochs_words({"local_epochs": 2}) == "2 local epochs"
    assert niid.stopped_by({"stop_reason": "round cap (50)"}, niid.BUDGET, niid.CAP)
    assert not niid.stopped_by({}, niid.BUDGET) and niid.stopped_by({}, niid.BUDGET, missing=niid.BUDGET)


def test_niid_cell_ends_at_its_budget_and_keeps_the_rounds_before_a_failure(monkeypatch):
    # niid.run with a stand-in for the algorithm: it reports the initial weights after each
    # "round" and fails in its third; the real cells run in the smoke benchmark below
    from data_utils.remedies import ALGORITHMS

    def fake_run_remedy(algorithm, trainer, w0, clients, cfg, evaluate, progress, **kwargs):
        for _ in range(min(cfg.rounds, 2)):
            start = time.process_time()
            while time.process_time() - start < 0.05:  # a "round" that costs CPU time
                pass
            evaluate(w0)
        if cfg.rounds > 1:
            raise ValueError("model 2, layer 0 contains NaN or infinite values")

    monkeypatch.setattr(niid, "_remedies", lambda: (ALGORITHMS, fake_run_remedy, None))
    columns = (("SCAFFOLD", "scaffold", ()),)
    small = replace(SMOKE, data=replace(SMOKE.data, train_limit=600, test_limit=200))
    failed = niid.run(replace(small, niid=replace(small.niid, rounds=5, cpu_budget_seconds=None,
                                                  columns=columns)))["cells"][0]
    assert failed["ok"] and failed["rounds"] == 2 and len(failed["curve"]) == 2
    assert failed["stop_reason"].startswith("failed in round 3 (ValueError: model 2, layer 0 contains NaN")
    ended = niid.run(replace(small, niid=replace(small.niid, rounds=5, cpu_budget_seconds=1e-6,
                                                 columns=columns)))["cells"][0]
    assert ended["ok"] and ended["rounds"] == 1 and ended["stop_reason"] == "CPU budget (1e-06 s)"
    # the round cap comes first: no budget stop after the last round, whatever was spent
    capped = niid.run(replace(small, niid=replace(small.niid, rounds=1, cpu_budget_seconds=1e-6,
                                                  columns=columns)))["cells"][0]
    assert capped["ok"] and capped["rounds"] == 1 and capped["stop_reason"] == "round cap (1)"


def test_niid_markdown_words_follow_the_cells():
    setup = {"model": "lenet5", "num_clients": 10, "max_rounds": 50, "cpu_budget_seconds": 200.0,
             "local_epochs": 2, "batch_size": 64, "client_lr": 0.01, "client_momentum": 0.9,
             "alpha": 0.5, "train_examples": 60000, "test_examples": 10000, "tf_intraop_threads": "1"}

    def cell(column, curve, stop):
        best = int(np.argmax(curve))
        return {"row": "IID", "column": column, "ok": True, "curve": curve, "rounds": len(curve),
                "best_accuracy": curve[best], "best_round": best + 1, "final_accuracy": curve[-1],
                "stop_reason": stop, "seconds": 1.0, "train_cpu_seconds": 1.0, "eval_cpu_seconds": 0.1}

    r = {"setup": setup, "rows": [{"row": "IID", "scheme": "iid", "classes_per_client": None,
                                   "client_sizes": [6000] * 10, "classes_held": [10] * 10}],
         "cells": [cell("FedAvg", [0.5, 0.6, 0.7], "CPU budget (200 s)"),
                   cell("SCAFFOLD", [0.5, 0.6, 0.7], "round cap (3)"),
                   cell("FedProx", [0.4], "failed in round 2 (ValueError: NaN)")]}
    payload = {"settings": FULL.as_dict(), "machine": {"usable_cores": 2}}
    text = "\n".join(niid.markdown(payload, r, "fig.png"))
    assert "at most 200 CPU seconds** (1 TensorFlow thread; evaluation not counted)" in text
    assert "up to 50: **3 rounds** on this machine" in text  # the failed cell's 1 round is not a range
    assert "its best of the 1 round before counts" in text
    # the cells the budget or the round cap ended while still rising (not the failed one)
    assert ("2 of 3 cells scored their best accuracy in their last round (the last round added "
            "10.0 points): the budget or the round cap, not the algorithm, ended them while they "
            "still rose.") in text
    assert "a faster machine fits more rounds" in text and "round cap before" not in text
    # every cell ended by the round cap, one of them still rising
    capped = dict(r, cells=[cell("FedAvg", [0.5, 0.7, 0.6], "round cap (50)"),
                            cell("SCAFFOLD", [0.5, 0.6, 0.75], "round cap (50)")])
    text = "\n".join(niid.markdown(payload, capped, "fig.png"))
    assert "every cell reached the 50-round cap before its budget ran out" in text
    assert "a faster machine fits more rounds" not in text
    assert ("1 of 2 cells scored its best accuracy in its last round (the last round added 15.0 "
            "points): the round cap, not the algorithm, ended it while it still rose.") in text
    assert "the budget is sized for 25 cells in the section's 60 minutes on 2 cores" in text
    for bad in (cell("FedProx", [0.4], "failed in round 2 (ValueError: NaN)"),
                {"row": "IID", "column": "FedProx", "ok": False, "error": "ValueError: NaN"}):
        text = "\n".join(niid.markdown(payload, dict(capped, cells=capped["cells"] + [bad]), "fig.png"))
        assert "every cell that did not fail reached the 50-round cap" in text
    one = dict(r, cells=[cell("FedAvg", [0.5, 0.51], "CPU budget (200 s)")])
    assert ("1 of 1 cell scored its best accuracy in its last round (the last round added 1.0 "
            "point): the budget, not the algorithm, ended it") in "\n".join(niid.markdown(payload, one, "fig.png"))
    # a best remedy's margin over Flower's FedAvg smaller than Flower's spread over seeds is said
    skew = {"row": "#C=2", "scheme": "pathological", "classes_per_client": 2,
            "client_sizes": [6000] * 10, "classes_held": [2] * 10}
    two = dict(r, rows=[skew], cells=[dict(cell("FedAvg", [0.69], "round cap (50)"), row="#C=2"),
                                      dict(cell("FedAvgM", [0.7916], "round cap (50)"), row="#C=2")])
    text = "\n".join(niid.markdown(payload, two, "fig.png"))
    assert ("the course's best remedy, FedAvgM (79.16), is 1.06 points above Flower's FedAvg (78.10 "
            "± 2.51; the margin is within Flower's spread over seeds)") in text
    two["cells"][1] = dict(cell("FedAvgM", [0.85], "round cap (50)"), row="#C=2")
    assert "6.90 points above Flower's FedAvg (78.10); the course's own FedAvg scores 69.00." in \
        "\n".join(niid.markdown(payload, two, "fig.png"))
    none_ran = dict(r, cells=[])
    assert "(no cell ran); no weight decay" in "\n".join(niid.markdown(payload, none_ran, "fig.png"))


def test_niid_chance_rows_name_the_cells_stuck_at_ten_percent():
    cells = [{"row": "#C=1", "column": "FedAvg", "ok": True, "curve": [0.1] * 15 + [0.18, 0.3]},
             {"row": "#C=1", "column": "SCAFFOLD", "ok": True, "curve": [0.1] * 17},
             {"row": "#C=1", "column": "FedProx", "ok": True, "curve": [0.1, 0.3] + [0.1] * 15},
             {"row": "IID", "column": "FedAvg", "ok": True, "curve": [0.7] * 17}]
    assert niid.chance_rows({"cells": cells}) == {"#C=1": ([("FedAvg", 16)], ["SCAFFOLD"])}


def test_niid_largest_drops_name_the_unsteady_rows():
    cells = [{"row": "A", "column": "x", "ok": True, "curve": [0.5, 0.6, 0.55, 0.7]},   # -5 points
             {"row": "A", "column": "y", "ok": True, "curve": [0.5, 0.4, 0.7]},          # -10 points
             {"row": "B", "column": "x", "ok": True, "curve": [0.5, 0.49, 0.6]},         # -1: steady
             {"row": "C", "column": "x", "ok": False, "error": "diverged"}]
    drops = niid.largest_drops({"cells": cells})
    assert list(drops) == ["A"] and drops["A"][1:] == ("y", 2)
    assert drops["A"][0] == pytest.approx(10.0)
    assert niid.largest_drops({"cells": cells}, points=20.0) == {}


def _niid_payload(acc: dict, seconds: float = 1800.0) -> dict:
    """A report payload holding section 5 with the given best accuracies {(row, column): %}."""
    cells = [{"row": r, "column": c, "ok": True, "best_accuracy": a / 100, "best_round": 1,
              "final_accuracy": a / 100, "curve": [a / 100], "seconds": 1.0,
              "train_cpu_seconds": 1.0, "eval_cpu_seconds": 0.1} for (r, c), a in acc.items()]
    entry = {"ok": True, "seconds": seconds, "load": {"min": 1, "max": 2, "mean": 1.5},
             "result": {"cells": cells, "cpu_seconds": 2 * seconds,
                        "rows": [{"row": r[0]} for r in FULL.niid.rows]}}
    return {"settings": FULL.as_dict(), "sections": {"niid": entry}}


def test_niid_goals_within_two_points_and_best_remedy():
    cols = [c[0] for c in FULL.niid.columns]
    acc = {(row, c): niid.flower(row, c) if c in niid.FLOWER_COLUMNS else 50.0
           for row in niid.FLOWER for c in cols}
    for row in niid.FLOWER:  # the best remedy beats Flower's FedAvg on every row by 0.5 points
        acc[(row, "FedAvgM")] = niid.flower(row, "FedAvg") + 0.5
    acc[("IID", "SCAFFOLD")] -= 1.9   # within 2 points
    acc[("#C=3", "FedNova")] -= 2.5   # not within
    goals = niid.goals(FULL.as_dict(), _niid_payload(acc)["sections"]["niid"], report._goal)
    assert [g["met"] for g in goals] == [True, True, False, True, True]
    assert goals[0]["measured"] == pytest.approx(1.9) and "SCAFFOLD" in goals[0]["summary"]
    assert goals[2]["measured"] == pytest.approx(2.5) and "missed by 0.5 points" in goals[2]["summary"]
    assert goals[3]["measured"] == pytest.approx(0.5) and goals[4]["measured"] == 30.0
    for c in cols[1:]:  # now no remedy beats Flower's FedAvg (28.39) on #C=1
        acc[("#C=1", c)] = 20.0
    goals = niid.goals(FULL.as_dict(), _niid_payload(acc, seconds=4000)["sections"]["niid"], report._goal)
    assert goals[3]["met"] is False and "#C=1" in goals[3]["summary"]
    assert goals[4]["met"] is False and "missed by 6.67 min" in goals[4]["summary"]
    del acc[("IID", "FedNova")]  # a missing cell: the row's goal is not measured
    entry = _niid_payload(acc)["sections"]["niid"]
    goals = niid.goals(FULL.as_dict(), entry, report._goal)
    assert goals[0]["met"] is None and goals[0]["summary"] == "not measured"
    entry["result"]["cells"].append({"row": "IID", "column": "FedNova", "ok": False,
                                     "error": "ValueError: NaN"})  # a cell that failed: missed
    goals = niid.goals(FULL.as_dict(), entry, report._goal)
    assert goals[0]["met"] is False and "FedNova failed (ValueError: NaN)" in goals[0]["summary"]
    assert all(g["met"] is None for g in niid.goals(FULL.as_dict(), None, report._goal))
    entry["result"]["cells"] = [c for c in entry["result"]["cells"] if c.get("ok")]
    entry["result"]["cells"].append({"row": "IID", "column": "FedNova", "ok": True, "best_accuracy": 0.9,
                                     "best_round": 1, "final_accuracy": 0.9, "curve": [0.9], "rounds": 1,
                                     "stop_reason": "failed in round 2 (ValueError: NaN)"})
    goals = niid.goals(FULL.as_dict(), entry, report._goal)  # failed part way: counted, and said
    assert "FedNova failed in round 2 (ValueError: NaN), its earlier rounds count" in goals[0]["summary"]
    entry["result"]["rows"] = entry["result"]["rows"][:2]  # rows missing: no section wall time
    goals = niid.goals(FULL.as_dict(), entry, report._goal)
    assert goals[4]["met"] is None and "only 2 of 5 rows ran" in goals[4]["summary"]


def test_reproduce_line_gives_this_reports_minutes_only_for_a_whole_run():
    payload = {"machine": {"usable_cores": 2}, "sections_run": list(report.NUMBERS),
               "sections": {k: {"seconds": 600.0} for k in report.NUMBERS}}
    assert report._bench_minutes(payload) == " (this report's run: 50 min on 2 cores, section 5 10 of them)"
    merged = dict(payload, sections_run=["niid"])  # python -m benchmarks --sections 5
    assert report._bench_minutes(merged).startswith(" (the sum of this report's sections, each from its last run: 50 min")
    assert report._bench_minutes(dict(payload, smoke=True)) == ""
    del payload["sections"]["scale"]
    assert report._bench_minutes(payload) == ""


def test_report_keeps_text_of_sections_not_in_report_json(tmp_path):
    old = ["# Benchmarks", "", "## Goals", "", "| section | goal | result |", "|---|---|---|",
           "| 2 | kept goal | met (earlier) |", "", "## 2. Rounds to a target accuracy", "",
           "old text of section 2", "", "## Method notes", ""]
    (tmp_path / "benchmarks.md").write_text("\n".join(old))
    payload = {"smoke": False, "sections": {"overhead": {}}}
    goals, blocks = report._kept_text(payload, tmp_path / "benchmarks.md")
    assert goals == {"2": ["| 2 | kept goal | met (earlier) |"]}
    assert blocks == {"rounds": ["## 2. Rounds to a target accuracy", "", "old text of section 2", ""]}
    assert report._kept_text(dict(payload, smoke=True), tmp_path / "benchmarks.md") == ({}, {})


def test_autograph_sentence_compares_the_interleaved_runs():
    ts = {"build_seconds": 3.6, "initialize_seconds": 0.34,
          "tff_default": {"build_seconds": 4.9, "initialize_seconds": 0.31, "runs": [{}, {}, {}]}}
    text = report._autograph_sentence(ts)
    assert "in 3 processes" in text and "took 5.2 s (build 4.9 s)" in text
    assert "saves 1.3 s (24%)" in text
    assert FULL.overhead.setup_tff_default and not SMOKE.overhead.setup_tff_default


def test_speedups_exact_and_bounds():
    def run(alg, reached, rounds):
        return {"partition": "iid", "algorithm": alg, "reached": reached,
                "rounds_to_target": rounds if reached else None, "rounds_run": rounds}

    sp = report.speedups([run("FedSGD", True, 300), run("A", True, 20), run("B", False, 100)])
    assert sp["iid/A"] == {"value": 15.0, "kind": "exact"}
    assert sp["iid/B"] == {"value": 3.0, "kind": "less than"}  # FedAvg stopped first: a bound
    sp = report.speedups([run("FedSGD", False, 600), run("A", True, 20), run("B", False, 50)])
    assert sp["iid/A"] == {"value": 30.0, "kind": "at least"}
    assert "iid/B" not in sp  # neither reached: nothing can be said


def test_cpu_and_memory_readers_see_this_process():
    before = common.tree_cpu_seconds()
    sum(i * i for i in range(2_000_000))
    assert common.tree_cpu_seconds() > before
    mem = common.memory_mb()
    assert mem["python_peak_mb"] >= mem["python_rss_mb"] > 10


# ---- the smoke benchmark, end to end ---------------------------------------------------------------
def _live_in_session(sid: int) -> list[int]:
    return common.session_pids(sid)


@pytest.mark.tff  # the benchmark starts TFF in children of this Python
def test_bench_smoke_end_to_end(tmp_path):
    out = tmp_path / "bench"
    log = tmp_path / "bench.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    with open(log, "w") as handle:  # a file, not a pipe: worker_binary would hold a pipe open
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
                                cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=900)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    seconds = time.perf_counter() - start
    text = log.read_text()
    assert rc == 0, f"the smoke benchmark failed (exit {rc}):\n{text[-3000:]}"
    print(f"smoke benchmark: {seconds:.0f} s")

    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == 1 and rep["smoke"] is True
    assert rep["command"] == "python -m benchmarks --smoke --out " + str(out)
    m = rep["machine"]
    assert m["logical_cores"] >= 1 and m["memory_total_gb"] > 0 and len(m["loadavg"]) == 3
    assert m["versions"]["tensorflow"] and m["versions"]["tensorflow-federated"]
    assert set(rep["sections"]) == set(SECTIONS)
    for name, entry in rep["sections"].items():
        assert entry["ok"], f"section {name} failed: {entry['result'].get('error')}"
        assert entry["command"] and entry["seconds"] > 0 and entry["load"]["max"] >= 0

    o = rep["sections"]["overhead"]["result"]
    for engine in ("tff", "manual", "keras_epoch"):
        e = o["engines"][engine]
        assert len(e["seconds"]) == SMOKE.overhead.repeats and e["median_seconds"] > 0
        assert e["median_cpu_seconds"] >= 0
    assert o["engines"]["tff"]["ratio_to_keras"] > 0 and o["tff_setup"]["build_seconds"] > 0
    assert o["profiles"]["tff"]["by_cumulative"]

    r = rep["sections"]["rounds"]["result"]
    assert len(r["runs"]) == len(SMOKE.rounds.partitions) * len(SMOKE.rounds.algorithms)
    for run in r["runs"]:
        assert run["reached"] == (run["rounds_to_target"] is not None)
        assert run["curve"] and 0 <= run["best_accuracy"] <= 1
        assert run["reached"] or run["stop_reason"] != "target reached"
    assert r["paper"]["rounds"]["FedSGD"]["iid"] == 626

    sc = rep["sections"]["scale"]["result"]
    assert {(c["engine"], c["num_clients"]) for c in sc["configs"]} == {
        (e, k) for e in SMOKE.scale.engines for k in SMOKE.scale.client_counts}
    for c in sc["configs"]:
        assert len(c["seconds"]) == SMOKE.scale.repeats and c["memory"]["peak_total_mb"] > 0
    assert any(c["memory"]["worker_binary_peak_mb"] > 0 for c in sc["configs"] if c["engine"] == "tff")

    b = rep["sections"]["budget"]["result"]
    assert [x["partition"] for x in b["runs"]] == list(SMOKE.budget.partitions)
    for x in b["runs"]:
        assert x["rounds_run"] >= 1 and x["beat_reference"] == (x["best_accuracy"] > x["reference"])

    n = rep["sections"]["niid"]["result"]
    assert {(c["row"], c["column"]) for c in n["cells"]} == {
        (r[0], c[0]) for r in SMOKE.niid.rows for c in SMOKE.niid.columns}
    for c in n["cells"]:
        assert c["ok"], f"niid cell {c['row']}/{c['column']} failed: {c.get('error')}"
        # the smoke budget (1e-6 CPU s) ends every cell after its first of SMOKE.niid.rounds rounds
        assert len(c["curve"]) == c["rounds"] == 1 < SMOKE.niid.rounds and 0 <= c["best_accuracy"] <= 1
        assert c["stop_reason"] == f"CPU budget ({SMOKE.niid.cpu_budget_seconds:g} s)"
        assert c["best_accuracy"] == max(c["curve"]) and c["train_cpu_seconds"] > 0
    assert n["setup"]["model"] == "lenet5" and n["cpu_seconds"] > 0
    assert n["setup"]["tf_intraop_threads"] == str(niid.threads(SMOKE))  # the job's env reached it
    assert "| partition | FedAvg | SCAFFOLD | FedProx | FedNova | FedAvgM |" in (out / "benchmarks.md").read_text()

    assert len(rep["goals"]) == 9 + len(SMOKE.niid.goal_rows) + 2
    o = rep["sections"]["overhead"]["result"]
    assert {"tff", "tff_datasets", "manual", "keras_epoch", "compiled_epoch"} <= set(o["engines"])
    assert o["engines"]["tff"]["ratio_to_manual"] > 0 and o["engines"]["tff_datasets"]["ratio_to_manual"] > 0
    assert [w["name"] for w in o["worker_settings"]] == [w[0] for w in SMOKE.overhead.worker_settings]
    assert all(w["median_seconds"] > 0 for w in o["worker_settings"])
    for g in rep["goals"]:
        assert g["met"] in (True, False) and g["summary"]

    md = (out / "benchmarks.md").read_text()
    assert "SMOKE RUN" in md
    for fig in report.FIGURES.values():
        assert f"]({fig})" in md
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # No TFF worker_binary survives: every job ran in its own session, and each is empty now.
    pids = [rep["sections"][s]["result"]["process"]["pid"] for s in ("overhead", "rounds", "budget")]
    pids += [p["pid"] for p in sc["processes"]] + [p["pid"] for p in n["processes"]]
    time.sleep(1)
    for pid in pids + [proc.pid]:
        left = _live_in_session(pid)
        for p in left:  # clean up before failing, so a failure leaves nothing behind
            os.kill(p, signal.SIGKILL)
        assert not left, f"processes of benchmark session {pid} survived: {left}"
    assert rep["worker_binary_left"] == 0


def test_worker_settings_note_goes_with_its_own_setting():
    """1b prints a setting's note (why the course keeps its default) only when that setting is the
    fastest; another fastest setting gets the plain "Fastest here" line."""
    noted, note = FULL.overhead.worker_notes[0]
    rows = lambda fast: [{"name": "default", "median_seconds": 2.0, "median_cpu_seconds": 3.0},
                         {"name": fast, "median_seconds": 1.0, "median_cpu_seconds": 3.0}]
    text = "\n".join(report.md_worker_settings(rows(noted)))
    assert f"Fastest here: {noted}" in text and note in text
    text = "\n".join(report.md_worker_settings(rows("2 computations at a time")))
    assert "Fastest here: 2 computations at a time" in text and note not in text
