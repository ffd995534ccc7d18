"""The benchmarks: helper rules (fast), and the SMOKE variant end to end in a subprocess (its own
session, ended afterwards), checking the report's structure and that no worker_binary survives."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import common, report  # noqa: E402
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
    assert parse_sections(None) == list(SECTIONS)
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="unknown section"):
        parse_sections("5")


def test_goal_wording_says_by_how_much():
    g = report._goal("1", "x", 1.5, 1.3, False, "x")
    assert g["met"] is False and "missed by 0.2x" in g["summary"]
    g = report._goal("4", "acc", 0.9, 0.884, True, lower_is_better=False)
    assert "missed" not in g["summary"]
    assert report._goal("3", "m", None, 3072, None)["summary"] == "not measured"


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

    assert len(rep["goals"]) == 9
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
    pids += [p["pid"] for p in sc["processes"]]
    time.sleep(1)
    for pid in pids + [proc.pid]:
        left = _live_in_session(pid)
        for p in left:  # clean up before failing, so a failure leaves nothing behind
            os.kill(p, signal.SIGKILL)
        assert not left, f"processes of benchmark session {pid} survived: {left}"
    assert rep["worker_binary_left"] == 0
