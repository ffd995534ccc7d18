"""Flower over real processes (data_utils.flower_fl, notebook 10): runs only where flwr is
installed, the Python 3.13 stand-in (.venv313, `make test-py313`); Flower cannot share TFF 0.87's
environment.

- a SuperLink and one SuperNode per client start as separate processes on 127.0.0.1, train the
  course's model with Flower's FedAvg, and match the hand-written loop round by round;
- every process the run started is gone afterwards, also after a failure;
- a SuperNode killed mid-run is a clear FlowerRunError within a timeout, never a hang;
- bad settings are a ValueError before any process starts.
"""
import os
import signal
import sys
import time

import numpy as np
import pytest

from data_utils import flower_fl
from data_utils.fedavg import FedAvgConfig

pytestmark = [
    pytest.mark.py313,
    pytest.mark.skipif(sys.version_info[:2] < (3, 12) or not flower_fl.flower_available()[0],
                       reason="Flower (flwr) lives in the Python 3.13 environment (.venv313): "
                              "make test-py313"),
]

# What the comparison may differ by. Both runs train the same seeded batches with the same SGD;
# Flower averages the replies in float32, the manual loop in float64. Measured on 2026-11-30
# (2 Dirichlet clients, 600 images, 2 rounds): one round started from the same global weights
# differs by at most 4.5e-8; the chained runs drift to 1.1e-3 by round 2 (training amplifies the
# rounding difference), with equal test accuracies. The bounds: 1e-6 for one round; 0.05 for the
# drift (a sanity bound: a wrong client or learning rate moves weights by 0.1 or more); one test
# image (of 300) changing its prediction.
MAX_ROUND_WEIGHT_DIFFERENCE = 1e-6
MAX_DRIFT = 0.05
MAX_ACCURACY_DIFFERENCE = 1 / 300 + 1e-9


@pytest.fixture(scope="module")
def small():
    """Two Dirichlet(0.5) clients on 400 training images, 300 test images, seed 0."""
    from data_utils.clients import ClientArrays
    from data_utils.datasets import load_dataset
    from data_utils.models import build_model
    from data_utils.partition import make_partition

    full = load_dataset("fashion_mnist")
    rng = np.random.default_rng(0)
    tr, te = np.sort(rng.permutation(len(full.x_train))[:400]), np.sort(rng.permutation(len(full.x_test))[:300])
    x, y = full.x_train[tr], full.y_train[tr]
    part = make_partition(y, "dirichlet", num_clients=2, seed=0, alpha=0.5, local_test_fraction=0.0)
    clients = ClientArrays(x, y, part.train)
    init = build_model("cnn_small", x.shape[1:], 10, seed=0).get_weights()
    return clients, init, full.x_test[te], full.y_test[te]


def run_processes(procs) -> list[int]:
    """The run's live processes as its own bookkeeping sees them, plus (independently of it) any
    process whose command line names one of the run's 127.0.0.1 ports: Flower's SuperExec, ServerApp
    and ClientApp processes all carry the address of the API they talk to."""
    import psutil

    ports = {str(a) for p in procs.procs for flag, a in zip(p.popen.args, p.popen.args[1:])
             if flag == "--port"}
    named = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(f"127.0.0.1:{port}" in cmd for port in ports):
            named.append(proc.info["pid"])
    return sorted(({pid for pid in procs.pids()} | set(named)) - {os.getpid()})


def test_flower_over_real_processes_matches_the_manual_loop_and_leaves_nothing(small):
    clients, init, x_test, y_test = small
    cfg = FedAvgConfig(rounds=1, client_fraction=1.0, batch_size=20, client_lr=0.1, seed=0)
    seen = {}

    def on_start(procs):
        seen["procs"] = procs
        seen["pids"] = run_processes(procs)
        seen["names"] = [p.name for p in procs.procs]

    start = time.perf_counter()
    out = flower_fl.compare_with_manual(clients, init, x_test, y_test, cfg, progress=False,
                                        on_start=on_start, timeout=300, round_timeout=120)
    print(f"Flower + manual, 2 clients x 1 round: {time.perf_counter() - start:.0f} s; Flower's "
          f"processes used {out['flower'].extra['cpu_seconds']:.0f} CPU-seconds")
    # real, separate processes: a SuperLink, one SuperNode per client, each its own program
    assert seen["names"][:3] == ["superlink", "supernode_0", "supernode_1"]
    assert len(seen["pids"]) >= 3 and os.getpid() not in seen["pids"]
    rows = out["rows"]
    assert [r["round"] for r in rows] == [1]
    assert all(r["clients"] == r["manual_clients"] == [0, 1] for r in rows)
    for r in rows:
        print(r)
        assert r["round_weight_difference"] <= MAX_ROUND_WEIGHT_DIFFERENCE, r
        assert r["max_weight_difference"] <= MAX_DRIFT, r
        assert r["accuracy_difference"] <= MAX_ACCURACY_DIFFERENCE, r
    # it trained: the model moved away from its initial weights, and accuracy is a real number
    assert not np.allclose(out["flower"].round_weights[-1][0], init[0])
    assert 0.0 < rows[-1]["flower_accuracy"] <= 1.0
    assert out["flower"].flwr_version == flower_fl.FLOWER_VERSION
    # nothing is left: neither the programs nor the processes Flower started for the apps
    assert run_processes(seen["procs"]) == []


@pytest.mark.parametrize("per_round, seed", [(None, 0), (2, 4), (1, 7)])
def test_the_strategy_sends_each_round_to_the_clients_the_manual_loop_samples(per_round, seed, monkeypatch):
    """Flower's FedAvg samples random node ids; the course's strategy sends round r's training
    messages to the nodes holding the clients sample_clients(seed, r) picks (no processes)."""
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity

    from data_utils.clients import sample_clients

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):  # as inside a ServerApp
        monkeypatch.setattr(TaskIdentity, name, value)

    n = 4
    node_of_client = {c: 1000 + 17 * c for c in range(n)}  # Flower's node ids are arbitrary
    cfg = FedAvgConfig(rounds=3, client_fraction=None if per_round else 1.0, clients_per_round=per_round,
                       seed=seed)
    strategy = flower_fl._course_fedavg_class()(node_of_client, cfg, lambda event: None)
    arrays = ArrayRecord([np.zeros(3, np.float32)])
    for r in (1, 2, 3):
        messages = list(strategy.configure_train(r, arrays, ConfigRecord(), grid=None))
        expected = [int(c) for c in sample_clients(n, per_round or n, r, seed)]
        assert strategy.sampled == expected
        assert [m.metadata.dst_node_id for m in messages] == [node_of_client[c] for c in expected]
        assert all(m.content["config"]["server-round"] == r for m in messages)


def test_a_killed_supernode_is_a_clear_error_within_a_timeout(small):
    clients, init, x_test, y_test = small
    cfg = FedAvgConfig(rounds=3, client_fraction=1.0, batch_size=20, seed=0)
    seen = {}

    def kill_one(procs):
        seen["procs"] = procs
        node = next(p for p in procs.procs if p.name == "supernode_1")
        os.killpg(node.popen.pid, signal.SIGKILL)
        seen["killed"] = time.perf_counter()

    with pytest.raises(flower_fl.FlowerRunError, match=r"SuperNode of client 1 .*stopped"):
        flower_fl.run_flower_fedavg(clients, init, x_test, y_test, cfg, progress=False,
                                    on_start=kill_one, timeout=120, round_timeout=60)
    assert time.perf_counter() - seen["killed"] < 30
    assert run_processes(seen["procs"]) == []


@pytest.mark.parametrize("change, message", [
    ({"num_clients": 0}, "NUM_CLIENTS"),
    ({"num_clients": flower_fl.MAX_CLIENTS + 1}, "NUM_CLIENTS"),
    ({"rounds": 0}, "ROUNDS"),
    ({"clients_per_round": 3}, "clients_per_round"),
    ({"timeout": 0}, "timeout"),
    ({"round_timeout": -1.0}, "round_timeout"),
])
def test_bad_settings_are_a_value_error_before_any_process(small, change, message, monkeypatch):
    from data_utils.clients import ClientArrays

    clients, init, x_test, y_test = small
    n = change.get("num_clients", 2)
    if n != 2:
        idx = np.array_split(np.arange(len(clients.x)), max(n, 1)) if n else []
        clients = ClientArrays(clients.x, clients.y, idx) if n else None
    cfg = FedAvgConfig(rounds=change.get("rounds", 1), client_fraction=None if "clients_per_round" in change else 1.0,
                       clients_per_round=change.get("clients_per_round"))
    started = []
    monkeypatch.setattr(flower_fl.FlowerProcesses, "start", lambda self, *a: started.append(a))
    with pytest.raises(ValueError, match=message):
        if clients is None:
            flower_fl.check_flower_run(0, cfg, 10, 10)
        else:
            flower_fl.run_flower_fedavg(clients, init, x_test, y_test, cfg, progress=False,
                                        timeout=change.get("timeout", 10), round_timeout=change.get("round_timeout", 10))
    assert started == []
