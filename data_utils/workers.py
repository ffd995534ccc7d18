"""TFF's worker service as processes the course starts, connects to and ends itself.

TensorFlow Federated 0.87 runs every computation in a C++ worker, ``worker_binary`` (shipped in
its wheel), reached over gRPC. On import TFF points its default context at a worker it starts
itself at the first computation, then polls for it once a second: the first ``initialize()`` of a
process waits a whole second for a worker that is ready in about 0.1 s (issue 15's setup goal).
This module starts the same binary itself, waits for it in 20 ms steps, and makes the context
from TFF's public framework API (``tff.framework.RemoteExecutorGrpcStub``, ``RemoteExecutor``,
``ResourceManagingExecutorFactory``, ``SyncExecutionContext``), so the same code also talks to
workers on other machines (``host:port`` addresses; notebook 10).

A worker the course starts dies with the Python process that started it (Linux parent-death
signal), so a crashed kernel leaves none behind. It has no authentication and no encryption: bind
it to 127.0.0.1, or reach another machine only over a private network or an SSH tunnel.
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000  # what TFF's own local context allows
CONNECT_TIMEOUT = 20.0  # seconds a worker at an address may take to answer before it is an error
_STARTED: list["Worker"] = []   # every worker this process started and has not stopped yet
_LOCAL: dict = {}               # the course's local worker and its context, once made


def worker_binary_path() -> Path:
    """Where TFF's wheel keeps ``worker_binary`` (a RuntimeError if TFF is not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("tensorflow_federated")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("TensorFlow Federated is not installed in this Python, so there is no "
                           "worker_binary; use the course's Python 3.11 environment (.venv).")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "worker_binary"
    if not path.is_file():
        raise RuntimeError(f"TensorFlow Federated has no worker binary at {path}")
    return path


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; a ValueError that says what is wrong otherwise."""
    if not isinstance(address, str) or address.count(":") != 1:
        raise ValueError(f"a worker address must be 'host:port' (e.g. '127.0.0.1:8001'), got {address!r}")
    host, _, port = address.partition(":")
    if not host or any(ch.isspace() for ch in host):
        raise ValueError(f"a worker address needs a host name or IP before ':', got {address!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"a worker address needs a port from 1 to 65535 after ':', got {address!r}")
    return host, int(port)


def check_addresses(addresses) -> list[str]:
    """A non-empty list of distinct ``host:port`` strings, or a ValueError naming the bad one."""
    if isinstance(addresses, str) or not hasattr(addresses, "__iter__"):
        raise ValueError(f"addresses must be a list of 'host:port' strings, got {addresses!r}")
    out = list(addresses)
    if not out:
        raise ValueError("addresses must name at least one worker ('host:port'), got an empty list")
    for a in out:
        parse_address(a)
    if len(set(out)) != len(out):
        raise ValueError(f"addresses must be distinct, got {out!r}")
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _check_port_free(host: str, port: int) -> int:
    """``port`` if nothing listens on it, else a RuntimeError: gRPC servers share ports
    (SO_REUSEPORT), so a second worker there would start and silently take half the calls."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as err:
            raise RuntimeError(f"cannot start a TFF worker on {host}:{port}: the port is in use "
                               f"({err.strerror}); pick another port or leave port=None") from None
    return port


def _die_with_parent_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL --`` (util-linux, on every Linux the course runs on, Colab too):
    the worker gets SIGKILL when the Python that started it dies. Not from Python code between
    fork and exec (unsafe once gRPC's threads run), and only from the main thread: Linux sends the
    signal when the creating THREAD ends."""
    import shutil
    import threading

    setpriv = shutil.which("setpriv")
    if not sys.platform.startswith("linux") or setpriv is None or \
            threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "KILL", "--"]


@dataclass
class Worker:
    """One ``worker_binary`` process this Python started, serving on ``address``."""
    process: subprocess.Popen
    port: int
    host: str = "127.0.0.1"
    started_seconds: float | None = None  # from start to accepting gRPC calls (None: not yet)
    timeout: float = 30.0
    _start: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self) -> "Worker":
        """Block until the worker accepts gRPC calls (at most ``timeout`` s from its start)."""
        if self.started_seconds is None:
            left = self.timeout - (time.perf_counter() - self._start)
            wait_ready(self.address, max(left, 0.05), self.process)
            self.started_seconds = time.perf_counter() - self._start
        return self

    def stop(self, grace: float = 3.0) -> None:
        """End the process (SIGINT as TFF does, SIGKILL after ``grace`` seconds); idempotent."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGINT)
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self in _STARTED:
            _STARTED.remove(self)


def wait_ready(address: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> float:
    """Wait until a gRPC channel to ``address`` is ready; seconds waited. A TimeoutError after
    ``timeout`` s (or a RuntimeError as soon as ``process`` has exited) says which worker."""
    import grpc

    start = time.perf_counter()
    with grpc.insecure_channel(address) as channel:
        future = grpc.channel_ready_future(channel)
        while True:
            try:
                future.result(timeout=0.02)
                return time.perf_counter() - start
            except grpc.FutureTimeoutError:
                pass
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the TFF worker for {address} exited with code {process.returncode} "
                                   "before it accepted connections (is the port taken?)")
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"no TFF worker answered at {address} within {timeout:g} s")


def start_worker(port: int | None = None, host: str = "127.0.0.1",
                 max_concurrent_computation_calls: int = -1, timeout: float = 30.0,
                 env: dict | None = None, log_path: str | os.PathLike | None = None,
                 wait: bool = True) -> Worker:
    """Start ``worker_binary`` on ``host:port`` (a free port if None) and, with ``wait``, wait
    until it serves (else :meth:`Worker.wait` does, at first use: the binary loads meanwhile).

    ``max_concurrent_computation_calls``: TFF's limit on client computations run at once
    (-1: none). ``env``: extra environment variables for the worker (e.g. TensorFlow's thread
    counts). Its output goes to ``log_path`` (default: discarded)."""
    from .validate import check_int

    if port is not None:
        check_int("port", port, low=1, high=65535)
    check_int("max_concurrent_computation_calls", max_concurrent_computation_calls, low=-1)
    if max_concurrent_computation_calls == 0:
        raise ValueError("max_concurrent_computation_calls must be -1 (no limit) or >= 1, got 0")
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a host name or IP address, got {host!r}")
    port = free_port(host) if port is None else _check_port_free(host, int(port))
    args = [*_die_with_parent_prefix(), str(worker_binary_path()), f"--port={port}",
            f"--max_concurrent_computation_calls={max_concurrent_computation_calls}"]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT if log_path else subprocess.DEVNULL,
                               env={**os.environ, **(env or {})})
    if log_path:
        out.close()
    worker = Worker(process, port, host, timeout=timeout)
    _STARTED.append(worker)
    if wait:
        try:
            worker.wait()
        except BaseException:
            worker.stop()
            raise
    return worker


def stop_all() -> None:
    """Stop every worker this Python started (also run at exit)."""
    for w in list(_STARTED):
        w.stop()
    _LOCAL.clear()


atexit.register(stop_all)


def _stub(address: str, worker: Worker | None = None):
    """TFF's gRPC stub for the worker at ``address``, except that freeing values and executors
    there (``dispose``, ``dispose_executor``: TFF calls them from garbage-collection finalizers)
    is a no-op once the worker cannot be reached. Else a worker that stopped mid-run leaves
    "Exception ignored in: <finalize object ...>" tracebacks in the output long after the clear
    error (a ``worker`` this Python started: only once it has stopped)."""
    import grpc
    import tensorflow_federated as tff

    class Stub(tff.framework.RemoteExecutorGrpcStub):
        def _free(self, call, request):
            try:
                return call(request)
            except tff.framework.RetryableError:  # UNAVAILABLE: nothing is left there to free
                if worker is not None and worker.alive():
                    raise
                return None

        def dispose(self, request):
            return self._free(super().dispose, request)

        def dispose_executor(self, request):
            return self._free(super().dispose_executor, request)

    options = [("grpc.max_message_length", GRPC_MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES)]
    return Stub(grpc.insecure_channel(address, options))


def _executor_factory(address: str, default_num_clients: int = 0, worker: Worker | None = None):
    """A TFF executor factory whose executors run on the worker at ``address`` (``worker``: one
    this Python started, waited for at first use)."""
    import tensorflow_federated as tff

    stub = _stub(address, worker)

    def stack_fn(cardinalities):  # TFF calls it for a new executor, also to retry after an error
        if worker is not None:
            worker.wait()
            if not worker.alive():  # else TFF would retry the lost connection forever
                raise RuntimeError(f"the TFF worker at {address} has stopped (exit code "
                                   f"{worker.process.returncode}); start it again and re-run")
        else:
            wait_ready(address, timeout=CONNECT_TIMEOUT)
        cardinalities.setdefault(tff.CLIENTS, default_num_clients)
        executor = tff.framework.RemoteExecutor(stub)
        executor.set_cardinalities(cardinalities)
        return executor

    return tff.framework.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)


def remote_context(address: str, worker: Worker | None = None, asynchronous: bool = False,
                   plain_secure_sums: bool = False):
    """A TFF execution context (synchronous, or asynchronous for :func:`split_context`) that runs
    computations on the worker at ``address``, compiled as TFF's own local context compiles them.
    ``plain_secure_sums``: first replace each secure-sum intrinsic by an ordinary sum of the same
    quantized integers, as TFF's test runtime (``tff.backends.test``) compiles; that runtime
    would start a worker of its own, which does not die with this Python."""
    import tensorflow_federated as tff

    parse_address(address)
    native = tff.backends.native.desugar_and_transform_to_native

    def compile_plain(comp):
        return native(tff.backends.test.replace_secure_intrinsics_with_bodies(comp))

    kind = tff.framework.AsyncExecutionContext if asynchronous else tff.framework.SyncExecutionContext
    return kind(
        executor_fn=_executor_factory(address, worker=worker),
        compiler_fn=compile_plain if plain_secure_sums else native,
        transform_args=tff.tensorflow.transform_args,
        transform_result=tff.tensorflow.transform_result)


def use_local_worker(max_concurrent_computation_calls: int = -1, env: dict | None = None) -> Worker:
    """Make a worker this Python starts (or the one it started before with the same settings)
    TFF's default context; returns it at once (it loads while the caller builds computations;
    the first computation waits for it). What ``data_utils.tff_fedavg.import_tff`` does."""
    import tensorflow_federated as tff

    key = (max_concurrent_computation_calls, tuple(sorted((env or {}).items())))
    hit = _LOCAL.get("worker")
    if hit is None or _LOCAL.get("key") != key or not hit.alive():
        if hit is not None:
            hit.stop()
        hit = start_worker(max_concurrent_computation_calls=max_concurrent_computation_calls, env=env,
                           wait=False)
        _LOCAL.update(worker=hit, key=key, context=remote_context(hit.address, hit))
    tff.framework.set_default_context(_LOCAL["context"])
    return hit


def split_context(addresses, workers_started: list[Worker] | None = None):
    """One TFF context over the workers at ``addresses``: with one address, that worker's; with
    several, TFF's mergeable-computation context
    (``tff.backends.native.create_mergeable_comp_execution_context``), which compiles a
    computation into the part before its aggregation, the merge and the part after, and runs the
    first part on each worker with its share of the clients (notebook 10)."""
    import tensorflow_federated as tff

    addresses = check_addresses(addresses)
    by_address = {w.address: w for w in workers_started or []}
    if len(addresses) == 1:
        return remote_context(addresses[0], by_address.get(addresses[0]))
    return tff.backends.native.create_mergeable_comp_execution_context(
        [remote_context(a, by_address.get(a), asynchronous=True) for a in addresses])


def use_workers(addresses, timeout: float = 30.0) -> list[str]:
    """Make the workers at ``addresses`` (``"host:port"``, here or on other machines) TFF's default
    context, after checking each answers within ``timeout`` s (a TimeoutError naming the first
    that does not). Returns the addresses. :func:`use_local_worker` goes back to the local one."""
    addresses = check_addresses(addresses)  # before importing TFF: a bad list is a ValueError anywhere
    import tensorflow_federated as tff

    for a in addresses:
        mine = next((w for w in _STARTED if w.address == a), None)
        wait_ready(a, timeout, mine.process if mine else None)
    tff.framework.set_default_context(split_context(addresses, list(_STARTED)))
    return addresses


def start_local_workers(count: int, **kwargs) -> list[Worker]:
    """``count`` workers on free 127.0.0.1 ports, started together and waited for."""
    from .validate import check_int

    count = check_int("count", count, low=1, high=64)
    started = [start_worker(wait=False, **kwargs) for _ in range(count)]
    try:
        return [w.wait() for w in started]
    except BaseException:
        for w in started:
            w.stop()
        raise
