"""data_utils.workers: TFF's worker_binary started, reached and ended by the course."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import live_worker_binaries
from data_utils import workers

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("bad", ["localhost", "host:port", ":80", "a b:80", "h:0", "h:70000", "h:1:2", 80, None])
def test_parse_address_names_what_is_wrong(bad):
    with pytest.raises(ValueError, match="address"):
        workers.parse_address(bad)


def test_parse_and_check_addresses():
    assert workers.parse_address("10.0.0.7:8001") == ("10.0.0.7", 8001)
    assert workers.check_addresses(("a:1", "b:2")) == ["a:1", "b:2"]
    for bad, match in (([], "at least one"), ("a:1", "list"), (["a:1", "a:1"], "distinct"),
                       (["a:1", "b"], "host:port")):
        with pytest.raises(ValueError, match=match):
            workers.check_addresses(bad)


@pytest.mark.tff
@pytest.mark.parametrize("kwargs, match", [({"port": 0}, "port"), ({"port": 70000}, "port"),
                                           ({"max_concurrent_computation_calls": 0}, "max_concurrent"),
                                           ({"max_concurrent_computation_calls": -2}, "max_concurrent"),
                                           ({"host": ""}, "host")])
def test_start_worker_rejects_bad_input_before_starting(kwargs, match):
    # what this process started, not every worker_binary on the machine: under pytest-xdist
    # another test process may start one meanwhile (a spurious failure, 2026-11-30)
    started = list(workers._STARTED)
    children = set(live_worker_binaries(parent=os.getpid()))
    with pytest.raises(ValueError, match=match):
        workers.start_worker(**kwargs)
    assert workers._STARTED == started and set(live_worker_binaries(parent=os.getpid())) <= children


def test_wait_ready_times_out_with_the_address():
    port = workers.free_port()  # nobody listens there
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
        workers.wait_ready(f"127.0.0.1:{port}", timeout=0.5)
    assert time.perf_counter() - start < 5


@pytest.mark.tff
def test_a_started_worker_serves_a_computation_and_stops():
    tff = pytest.importorskip("tensorflow_federated")
    worker = workers.start_worker()
    try:
        assert worker.alive() and worker.started_seconds is not None and worker.started_seconds < 30

        @tff.tensorflow.computation(tff.TensorType(np.float32, [3]))
        def double(x):
            return x * 2.0

        with tff.framework.get_context_stack().install(workers.remote_context(worker.address)):
            assert np.allclose(double(np.array([1, 2, 3], np.float32)), [2, 4, 6])
    finally:
        worker.stop()
    assert not worker.alive() and worker not in workers._STARTED
    worker.stop()  # idempotent


@pytest.mark.tff
def test_a_worker_that_cannot_start_is_a_clear_error():
    busy = workers.start_worker()
    try:  # a second worker on the same port exits at once: said in a sentence, within the timeout
        start = time.perf_counter()
        with pytest.raises((RuntimeError, TimeoutError), match=str(busy.port)):
            workers.start_worker(port=busy.port, timeout=20)
        assert time.perf_counter() - start < 25
    finally:
        busy.stop()


@pytest.mark.tff
def test_use_local_worker_reuses_one_worker_and_a_new_setting_replaces_it():
    pytest.importorskip("tensorflow_federated")
    a = workers.use_local_worker()
    assert workers.use_local_worker() is a
    b = workers.use_local_worker(max_concurrent_computation_calls=1)
    try:
        assert b is not a and not a.alive() and b.alive()
    finally:
        workers.use_local_worker()  # back to the default for the rest of this process
    assert not b.alive()


@pytest.mark.tff
def test_a_worker_dies_with_the_python_that_started_it(tmp_path):
    """A SIGKILLed Python (a crashed kernel) leaves no worker behind (parent-death signal)."""
    pytest.importorskip("tensorflow_federated")
    script = tmp_path / "start.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from data_utils import workers
        w = workers.start_worker()
        print(w.process.pid, flush=True)
        time.sleep(120)
    """))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(child.stdout.readline())
        os.kill(pid, 0)  # the worker runs
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # a zombie until reaped by init: gone from the process table's running states
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return
        except FileNotFoundError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the worker outlived the Python process that started it")


def _small_fedavg(num_clients=4, per_client=60, rounds=1):
    from data_utils.clients import ClientArrays
    from data_utils.experiment import Experiment, load_data
    from data_utils.fedavg import FedAvgConfig
    from data_utils.models import build_model
    from data_utils.tff_fedavg import build_fedavg, set_state_weights

    data = load_data(Experiment(train_limit=num_clients * per_client, test_limit=100))
    clients = ClientArrays(data.x_train, data.y_train,
                           [np.arange(k * per_client, (k + 1) * per_client) for k in range(num_clients)])
    process = build_fedavg("cnn_small", data.input_shape, data.num_classes, client_lr=0.05)
    w0 = build_model("cnn_small", data.input_shape, data.num_classes, seed=0).get_weights()
    workers.use_local_worker()
    state = set_state_weights(process, process.initialize(), w0)
    cfg = FedAvgConfig(rounds=rounds, client_fraction=1.0, local_epochs=1, batch_size=20,
                       client_lr=0.05, seed=0)
    return process, state, clients, cfg


@pytest.mark.tff
def test_clients_split_across_workers_give_the_single_worker_model():
    """TFF's mergeable context over 2 workers: the same global model as one worker (float
    tolerance: the partial sums are added in another order)."""
    pytest.importorskip("tensorflow_federated")
    from data_utils.tff_fedavg import run_tff_fedavg, state_weights

    process, state, clients, cfg = _small_fedavg()
    one, _ = run_tff_fedavg(process, state, clients, cfg, progress=False)
    started = workers.start_local_workers(2)
    try:
        assert workers.use_workers([w.address for w in started]) == [w.address for w in started]
        two, _ = run_tff_fedavg(process, state, clients, cfg, progress=False)
    finally:
        workers.use_local_worker()
        for w in started:
            w.stop()
    diff = max(float(np.max(np.abs(a - b))) for a, b in
               zip(state_weights(process, one), state_weights(process, two)))
    assert diff < 1e-5, diff


@pytest.mark.tff
def test_a_worker_killed_mid_run_is_a_clear_error_not_a_hang():
    pytest.importorskip("tensorflow_federated")
    import threading

    from data_utils.tff_fedavg import run_tff_fedavg

    process, state, clients, cfg = _small_fedavg(rounds=200)
    started = workers.start_local_workers(2)
    killer = threading.Timer(3.0, started[1].process.kill)
    try:
        workers.use_workers([w.address for w in started])
        killer.start()
        begin = time.perf_counter()
        with pytest.raises(RuntimeError, match=f"{started[1].address} has stopped"):
            run_tff_fedavg(process, state, clients, cfg, progress=False)
        assert time.perf_counter() - begin < 60
    finally:
        killer.cancel()
        workers.use_local_worker()
        for w in started:
            w.stop()
    assert not any(w.alive() for w in started)


def test_freeing_values_on_a_stopped_worker_is_silent():
    # TFF frees remote values from garbage-collection finalizers; after a worker died (the test
    # above) each one printed "Exception ignored in: <finalize object ...>" with a gRPC traceback
    tff = pytest.importorskip("tensorflow_federated")
    import grpc
    from tensorflow_federated.proto.v0 import executor_pb2

    (worker,) = workers.start_local_workers(1)
    try:
        worker.wait()
        stub = workers._stub(worker.address, worker)
    finally:
        worker.stop()
    assert not worker.alive()
    assert stub.dispose(executor_pb2.DisposeRequest()) is None
    assert stub.dispose_executor(executor_pb2.DisposeExecutorRequest()) is None
    assert workers._stub(worker.address).dispose(executor_pb2.DisposeRequest()) is None  # not ours
    plain = tff.framework.RemoteExecutorGrpcStub(grpc.insecure_channel(worker.address))
    with pytest.raises(tff.framework.RetryableError):  # what TFF's own stub does
        plain.dispose(executor_pb2.DisposeRequest())


def test_use_workers_checks_addresses_before_connecting():
    with pytest.raises(ValueError, match="host:port"):
        workers.use_workers(["127.0.0.1"])


@pytest.mark.tff
def test_tff_secure_sum_runs_on_the_course_worker_without_a_worker_of_tffs_own(monkeypatch):
    """notebook 06's TFF secure sum: the test runtime's compilation on the course's worker. TFF's
    test context would start a worker_binary of its own, which does not die with this Python."""
    pytest.importorskip("tensorflow_federated")
    from tensorflow_federated.python.core.impl.executor_stacks import executor_factory

    from data_utils.jobs import tff_secure_sum_job

    def tffs_own(*args, **kwargs):
        raise AssertionError("TFF's local_cpp_executor_factory was used: a second worker_binary")

    mine = workers.use_local_worker()
    monkeypatch.setattr(executor_factory, "local_cpp_executor_factory", tffs_own)
    values = [np.array([0.5, -1.0, 0.25], np.float32), np.array([1.0, 0.5, -0.75], np.float32)]
    out = tff_secure_sum_job({"VALUES": values, "BOUND": 2.0})
    assert np.allclose(out["test_runtime_sum"], out["plain_sum"], atol=1e-3)
    assert np.allclose(out["plain_sum"], [1.5, -0.5, -0.5])
    assert out["default_runtime_error"] is None or "federated" in out["default_runtime_error"]
    assert workers.use_local_worker() is mine and mine.alive()  # the course's context, unchanged
