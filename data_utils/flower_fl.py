"""The course's FedAvg over a real network with Flower (notebook 10): a SuperLink (the server)
and one SuperNode per client, each a separate process talking HTTP on 127.0.0.1 ports.

TFF (notebooks 04-07) *simulates* federated learning inside one process and its worker. Flower
(``flwr``, https://flower.ai) *deploys* it: the SuperLink receives a run, starts the course's
ServerApp, which sends each round's global weights to the SuperNodes; each SuperNode starts the
course's ClientApp on the partition it holds and sends back its trained weights. This module
trains the course's Keras model that way, with the same split, initial weights, client sampling
and local training as the hand-written loop (:func:`data_utils.fedavg.run_fedavg`), so the two
can be compared round by round (:func:`compare_with_manual`).

Flower cannot share TFF 0.87's environment (its grpcio/protobuf need newer releases than
TensorFlow 2.14 allows); it lives in the Python 3.13 environment (``.venv313``, ``make py313``).
``flwr`` is imported only inside functions, so this module imports everywhere;
:func:`flower_available` says whether a run can start here.

What runs where (``run_flower_fedavg``)::

    this process ── writes ──> app/ (a Flower App: pyproject.toml + course_flower_app.py)
                               data/client_<k>.npz (client k's training arrays), data/server.npz
    flower-superlink --insecure --host 127.0.0.1 --port P          (one process group)
    flower-supernode --insecure --superlink 127.0.0.1:P --port Q_k
                     --node-config 'partition-id=k data-file="data/client_k.npz"'   (one per client)
    flwr run app course   (FLWR_HOME=<workdir>/flwr_home: connection "course" = 127.0.0.1:P)
      -> SuperLink starts flwr-serverapp: :func:`server_main` (asks every node its partition-id,
         then FedAvg rounds; evaluates on the test set after each round, writes events.jsonl)
      -> each SuperNode starts one flwr-clientapp per message: :func:`client_train`

Every process started is ended afterwards (``finally``: SIGTERM, then SIGKILL, to each process
group); a SuperNode or SuperLink that stops mid-run is a :class:`FlowerRunError` at once, and a
run that makes no progress for ``round_timeout`` seconds a :class:`FlowerTimeout`.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .clients import ClientArrays, client_batches, num_sampled, sample_clients
from .env import repo_root
from .fedavg import FedAvgConfig, fedavg_round, run_fedavg
from .models import WeightsEvaluator
from .sidecar import session_members, stop_session
from .training import client_trainer
from .validate import check_int, check_positive

FLOWER_VERSION = "1.42.0"       # the release scripts/setup_py313.sh installs (flags checked against it)
MAX_CLIENTS = 8                 # each SuperNode is two processes plus one per message
APP_MODULE = "course_flower_app"
CONNECTION = "course"           # the SuperLink connection's name in FLWR_HOME/config.toml
EVENTS_FILE = "events.jsonl"


class FlowerRunError(RuntimeError):
    """A Flower run failed: a process stopped, or the ServerApp raised (the message says which,
    and where its log is)."""


class FlowerTimeout(FlowerRunError, TimeoutError):
    """A Flower run made no progress in time (every process it started has been ended)."""


def flower_available() -> tuple[bool, str]:
    """(True, "flwr X") when Flower's package and command-line programs are installed for this
    Python, else (False, one line saying why and what to do). Nothing is imported: this process
    only starts Flower's programs, so installing flwr into a running kernel (Colab) is enough."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("flwr") if importlib.util.find_spec("flwr") else None
    except PackageNotFoundError:
        found = None
    if found is None:
        return False, (f"Flower (flwr) is not installed in this Python ({sys.version.split()[0]}); it "
                       f"lives in the Python 3.13 environment (make py313, .venv313) because it cannot "
                       f"share TFF 0.87's packages")
    missing = [p for p in ("flower-superlink", "flower-supernode", "flwr") if not _program(p)]
    if missing:
        return False, f"flwr {found} is installed but its programs are missing: {', '.join(missing)}"
    return True, f"flwr {found}"


def install_flower_in_colab(timeout: float = 600.0) -> tuple[bool, str]:
    """In Colab's default runtime (Python 3.12/3.13), ``pip install flwr==FLOWER_VERSION`` into
    the kernel's Python (notebook 10). Elsewhere it installs nothing: locally Flower comes with
    ``make py313``. Returns (installed or already there, what happened)."""
    from .env import in_colab

    ok, why = flower_available()
    if ok:
        return True, why
    if not in_colab():
        return False, why
    if sys.version_info[:2] < (3, 12):  # Colab's 3.11 runtime holds TFF's stack (protobuf < 5)
        return False, (f"Flower runs in Colab's default runtime (Python 3.12/3.13); this Python "
                       f"{sys.version.split()[0]} runtime holds TFF's packages, which Flower's would replace")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"flwr=={FLOWER_VERSION}"],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        return False, f"pip install flwr=={FLOWER_VERSION} failed: {(done.stderr or done.stdout)[-300:]}"
    return flower_available()


def _program(name: str) -> str | None:
    """The path of Flower's command-line program ``name`` next to this Python, or on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


# ---- parameters --------------------------------------------------------------------------------
def check_flower_run(num_clients: int, cfg: FedAvgConfig, timeout: float, round_timeout: float) -> None:
    """Check a run's settings before any process starts (a bad one is a ``ValueError``)."""
    check_int("NUM_CLIENTS (Flower SuperNodes)", num_clients, 1, MAX_CLIENTS)
    if not isinstance(cfg, FedAvgConfig):
        raise ValueError(f"cfg must be a data_utils.fedavg.FedAvgConfig, got {type(cfg).__name__}")
    check_int("ROUNDS", cfg.rounds, low=1)
    num_sampled(num_clients, cfg.client_fraction, cfg.clients_per_round)  # CLIENTS_PER_ROUND <= clients
    check_positive("timeout (seconds)", timeout)
    check_positive("round_timeout (seconds)", round_timeout)


# ---- the Flower App: ServerApp and ClientApp -----------------------------------------------------
def _settings(context) -> dict:
    return json.loads(context.run_config["course-settings"])


def client_train(msg, context):
    """The ClientApp's ``train``: load this node's partition (its ``data-file``), train the
    received global weights exactly as the manual loop's client does (same seeded batches for
    (seed, round, partition-id), same SGD and learning rate), reply with the new weights and the
    example count FedAvg weights them by."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    from .env import set_seed

    settings = _settings(context)
    cfg = FedAvgConfig(**settings["fedavg"])
    set_seed(cfg.seed)
    pid = int(context.node_config["partition-id"])
    with np.load(str(context.node_config["data-file"])) as f:
        x, y = f["x"], f["y"]
    r = int(msg.content["config"]["server-round"])
    trainer = client_trainer(settings["model"], x.shape[1:], settings["num_classes"],
                             cfg.client_lr_for_round(r), cfg.client_momentum)
    weights = msg.content["arrays"].to_numpy_ndarrays()
    new = trainer.run(weights, client_batches(x, y, cfg.local_epochs, cfg.batch_size, cfg.seed, r, pid))
    metrics = MetricRecord({"num-examples": int(len(x)), "partition-id": pid})
    return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": metrics}), reply_to=msg)


def client_query(msg, context):
    """The ClientApp's ``query``: which partition this SuperNode holds (the server maps the
    course's client ids to Flower's random node ids with it)."""
    from flwr.app import Message, MetricRecord, RecordDict

    pid = int(context.node_config["partition-id"])
    return Message(RecordDict({"info": MetricRecord({"partition-id": pid})}), reply_to=msg)


def _course_fedavg_class():
    """Flower's FedAvg, with the course's client sampling and server step (built on first use:
    it subclasses a flwr class)."""
    from flwr.app import Message, MessageType, RecordDict
    from flwr.serverapp.strategy import FedAvg

    class CourseFedAvg(FedAvg):
        """Flower's FedAvg (example-weighted mean of the replies) with two course rules: round r
        trains the clients :func:`data_utils.clients.sample_clients` picks for (seed, r), not a
        random sample of node ids; and the server steps ``w + server_lr * (mean - w)``."""

        def __init__(self, node_of_client: dict, cfg: FedAvgConfig, log: Callable[[dict], None]):
            n = len(node_of_client)
            super().__init__(fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=n)
            self.node_of_client, self.cfg, self.log = node_of_client, cfg, log
            self.m = num_sampled(n, cfg.client_fraction, cfg.clients_per_round)
            self.current, self.sampled, self.started, self.examples = None, [], 0.0, 0

        def configure_train(self, server_round, arrays, config, grid):
            self.current, self.started = arrays, time.perf_counter()
            self.sampled = [int(c) for c in sample_clients(len(self.node_of_client), self.m,
                                                           server_round, self.cfg.seed)]
            config["server-round"] = server_round
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
            return [Message(content=record, message_type=MessageType.TRAIN,
                            dst_node_id=self.node_of_client[c]) for c in self.sampled]

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            failed = [m.metadata.src_node_id for m in replies if m.has_error()]
            if failed or len(replies) < len(self.sampled):
                reasons = "; ".join(m.error.reason for m in replies if m.has_error())
                raise FlowerRunError(f"round {server_round}: {len(replies) - len(failed)} of "
                                     f"{len(self.sampled)} clients replied ({reasons or 'timed out'})")
            self.examples = sum(int(m.content["metrics"]["num-examples"]) for m in replies)
            arrays, metrics = super().aggregate_train(server_round, replies)
            if arrays is not None and self.cfg.server_lr != 1.0:
                from flwr.app import ArrayRecord

                old = self.current.to_numpy_ndarrays()
                mean = arrays.to_numpy_ndarrays()
                arrays = ArrayRecord([(g + self.cfg.server_lr * (a - g)).astype(g.dtype)
                                      for g, a in zip(old, mean)])
            return arrays, metrics

    return CourseFedAvg


def server_main(grid, context) -> None:
    """The ServerApp's ``main``: wait for every SuperNode, ask each its partition-id, run
    ``rounds`` rounds of FedAvg from the course's initial weights, evaluate the global model on
    the test set after each round (on the server), and write each step to ``events.jsonl``
    (read by :func:`run_flower_fedavg`); round r's global weights go to ``weights_<r>.npz``."""
    from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict

    settings = _settings(context)
    out = Path(settings["workdir"])

    def log(event: dict) -> None:
        with open(out / EVENTS_FILE, "a") as f:
            f.write(json.dumps(event) + "\n")

    try:
        from .env import set_seed

        cfg = FedAvgConfig(**settings["fedavg"])
        set_seed(cfg.seed)
        n, wait = int(settings["num_clients"]), float(settings["round_timeout"])
        deadline = time.monotonic() + wait
        while len(nodes := list(grid.get_node_ids())) < n:
            if time.monotonic() > deadline:
                raise FlowerRunError(f"only {len(nodes)} of {n} SuperNodes connected in {wait:.0f} s")
            time.sleep(0.2)
        queries = [Message(RecordDict({}), dst_node_id=i, message_type=MessageType.QUERY) for i in nodes]
        replies = list(grid.send_and_receive(queries, timeout=wait))
        node_of_client = {int(m.content["info"]["partition-id"]): m.metadata.src_node_id
                          for m in replies if not m.has_error()}
        if sorted(node_of_client) != list(range(n)):
            raise FlowerRunError(f"the SuperNodes hold partitions {sorted(node_of_client)}, "
                                 f"expected 0..{n - 1}")
        log({"event": "nodes", "partitions": {str(k): str(v) for k, v in node_of_client.items()}})
        with np.load(out / "data" / "server.npz") as f:
            init = [f[f"w{i}"] for i in range(int(f["num_weights"]))]
            x_test, y_test = f["x_test"], f["y_test"]
        evaluator = WeightsEvaluator(settings["model"], x_test.shape[1:], settings["num_classes"],
                                     x_test, y_test)
        strategy = _course_fedavg_class()(node_of_client, cfg, log)

        def evaluate(server_round: int, arrays) -> MetricRecord:
            weights = arrays.to_numpy_ndarrays()
            acc = evaluator(weights)["test_accuracy"]
            if server_round > 0:
                np.savez(out / f"weights_{server_round}.npz", *weights)
                log({"event": "round", "round": server_round, "clients": strategy.sampled,
                     "num_examples": strategy.examples,
                     "seconds": time.perf_counter() - strategy.started, "test_accuracy": acc})
            return MetricRecord({"test_accuracy": acc})

        strategy.start(grid=grid, initial_arrays=ArrayRecord(init), num_rounds=cfg.rounds,
                       timeout=wait, evaluate_fn=evaluate)
        log({"event": "done"})
    except BaseException as err:  # noqa: BLE001 - reported to the launcher, then re-raised
        log({"event": "error", "message": f"{type(err).__name__}: {err}",
             "traceback": traceback.format_exc()[-2000:]})
        raise


def _app_source() -> str:
    return ('"""Notebook 10\'s Flower App (written by data_utils.flower_fl; the code is there)."""\n'
            "from flwr.clientapp import ClientApp\nfrom flwr.serverapp import ServerApp\n\n"
            "from data_utils.flower_fl import client_query, client_train, server_main\n\n"
            "client_app = ClientApp()\nclient_app.train()(client_train)\nclient_app.query()(client_query)\n"
            "server_app = ServerApp()\nserver_app.main()(server_main)\n")


_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "course-fedavg"
version = "1.0.0"
description = "The course's FedAvg (cnn_small on Fashion-MNIST) as a Flower App"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fl-course"

[tool.flwr.app.components]
serverapp = "{module}:server_app"
clientapp = "{module}:client_app"

[tool.flwr.app.config]
course-settings = "{{}}"
"""


def write_app(workdir: Path, port: int) -> Path:
    """Write the Flower App (``app/``) and the CLI's connection file (``flwr_home/config.toml``:
    the connection ``course`` to the SuperLink on 127.0.0.1:``port``, insecure)."""
    app = workdir / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "pyproject.toml").write_text(_PYPROJECT.format(module=APP_MODULE))
    (app / f"{APP_MODULE}.py").write_text(_app_source())
    home = workdir / "flwr_home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    return app


def write_data(workdir: Path, clients: ClientArrays, init_weights, x_test, y_test) -> list[Path]:
    """Each client's training arrays to ``data/client_<k>.npz`` (what its SuperNode holds), and the
    initial weights and the test set to ``data/server.npz`` (what the ServerApp holds)."""
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(len(clients)):
        x, y = clients[k]
        paths.append(data / f"client_{k}.npz")
        np.savez(paths[-1], x=x, y=y)
    np.savez(data / "server.npz", x_test=x_test, y_test=y_test, num_weights=len(init_weights),
             **{f"w{i}": np.asarray(w) for i, w in enumerate(init_weights)})
    return paths


# ---- processes ---------------------------------------------------------------------------------
def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (the OS picks them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen
    log: Path


class FlowerProcesses:
    """The processes of one run, each in its own process group (session); :meth:`stop` ends
    every one of them and everything they started (SIGTERM, then SIGKILL)."""

    def __init__(self, workdir: Path, env: dict):
        self.workdir, self.env, self.procs = workdir, env, []
        self.seen: dict[int, float] = {}  # every descendant met so far: pid -> start time
        self.cpu: dict[tuple, float] = {}  # (pid, start time, name) -> CPU seconds last seen

    def track(self) -> None:
        """Remember every process the programs have started so far: Flower's SuperExec starts
        its ServerApp/ClientApp processes in sessions of their own, which outlive their parent
        if nobody ends them."""
        import psutil

        for p in self.procs:
            try:
                top = psutil.Process(p.popen.pid)
                for proc in [top, *top.children(recursive=True)]:
                    if proc is not top:
                        self.seen.setdefault(proc.pid, proc.create_time())
                    t = proc.cpu_times()
                    self.cpu[(proc.pid, proc.create_time(), proc.name())] = t.user + t.system
            except psutil.Error:
                continue

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) the run's processes had used when last looked at."""
        return float(sum(self.cpu.values()))

    def cpu_by_program(self) -> dict[str, float]:
        """:meth:`cpu_seconds` per program name (flower-superlink, flwr-clientapp, ...)."""
        out: dict[str, float] = {}
        for (_, _, name), seconds in self.cpu.items():
            out[name] = out.get(name, 0.0) + seconds
        return {k: round(v, 1) for k, v in sorted(out.items())}

    def start(self, name: str, args: Sequence[str]) -> _Proc:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as f:
            popen = subprocess.Popen([str(a) for a in args], stdout=f, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env, cwd=self.workdir,
                                     start_new_session=True)
        self.procs.append(_Proc(name, popen, log))
        return self.procs[-1]

    def stopped(self) -> list[_Proc]:
        """The long-running processes (SuperLink, SuperNodes) that have exited."""
        return [p for p in self.procs if p.name != "flwr-run" and p.popen.poll() is not None]

    def pids(self) -> list[int]:
        """Every live process of the run: the programs' sessions and every descendant seen."""
        return sorted({pid for p in self.procs for pid, _ in session_members(p.popen.pid)}
                      | {p.pid for p in self._descendants()})

    def _descendants(self) -> list:
        """The live processes this run started, besides the programs themselves."""
        import psutil

        self.track()
        alive = []
        for pid, created in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.Error:
                continue
        return alive

    def stop(self, grace: float = 5.0) -> list[str]:
        """End every process of the run: the programs' sessions, then every descendant seen
        (SIGTERM, then SIGKILL after ``grace`` seconds); returns the names still running."""
        import psutil

        left = [p.name() for p in self._descendants()]
        sessions = {p.popen.pid for p in self.procs}
        for proc in self._descendants():
            try:
                sessions.add(os.getsid(proc.pid))
            except OSError:
                continue
        for p in reversed(self.procs):
            left += [name for _, name in session_members(p.popen.pid)]
        for sid in sessions - {os.getsid(0)}:
            stop_session(sid, grace=grace)
        rest = self._descendants()
        for proc in rest:
            try:
                proc.terminate()
            except psutil.Error:
                continue
        _, rest = psutil.wait_procs(rest, timeout=grace)
        for proc in rest:
            try:
                proc.kill()
            except psutil.Error:
                continue
        for p in self.procs:
            try:
                p.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
                pass
        return left


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(line[-180:] for line in text[-lines:])


@dataclass
class FlowerResult:
    """A Flower run: per-round rows (round, clients, num_examples, seconds, test_accuracy), the
    global weights after each round, the initial test accuracy, ports and timings."""
    history: list
    round_weights: list
    flwr_version: str
    superlink_port: int
    seconds: float
    startup_seconds: float
    workdir: str
    extra: dict = field(default_factory=dict)

    def accuracies(self) -> list[float]:
        return [float(r["test_accuracy"]) for r in self.history]


def run_flower_fedavg(clients: ClientArrays, init_weights, x_test, y_test, cfg: FedAvgConfig, *,
                      model: str = "cnn_small", num_classes: int = 10,
                      timeout: float = 600.0, round_timeout: float = 180.0,
                      workdir: str | os.PathLike | None = None, keep_workdir: bool = False,
                      on_start: Callable[[FlowerProcesses], None] | None = None,
                      progress: bool = True) -> FlowerResult:
    """Train ``model`` with Flower's FedAvg over loopback: a SuperLink and one SuperNode per
    client (client k holds ``clients[k]``), ``cfg.rounds`` rounds from ``init_weights``, the
    course's client sampling, local training and server step (``cfg``), the global model
    evaluated on (``x_test``, ``y_test``) by the server after each round.

    Raises ``ValueError`` for bad settings before any process starts, :class:`FlowerRunError`
    when a process stops or the ServerApp fails, :class:`FlowerTimeout` after ``timeout``
    seconds in all or ``round_timeout`` seconds without progress. Every process it started is
    ended before it returns or raises. ``on_start(processes)`` is called once the run is
    submitted (tests use it to kill a SuperNode)."""
    check_flower_run(len(clients), cfg, timeout, round_timeout)
    if len(init_weights) == 0 or len(x_test) != len(y_test) or len(x_test) == 0:
        raise ValueError("init_weights must be a non-empty weight list and x_test/y_test a non-empty test set")
    ok, why = flower_available()
    if not ok:
        raise RuntimeError(why)
    say = print if progress else (lambda *a, **k: None)
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="flower-run-")) if own_dir else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / EVENTS_FILE).unlink(missing_ok=True)
    n = len(clients)
    port, *node_ports = free_ports(n + 1)
    app = write_app(work, port)
    paths = write_data(work, clients, init_weights, x_test, y_test)
    settings = {"fedavg": asdict(cfg), "model": model, "num_classes": int(num_classes), "num_clients": n,
                "workdir": str(work), "round_timeout": float(round_timeout)}
    env = dict(os.environ, FLWR_HOME=str(work / "flwr_home"), FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_UPDATE_CHECK="1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               PYTHONPATH=os.pathsep.join([str(repo_root()), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    procs = FlowerProcesses(work, env)
    start = time.monotonic()
    try:
        procs.start("superlink", [_program("flower-superlink"), "--insecure", "--host", "127.0.0.1",
                                  "--port", port, "--disable-runtime-dependency-installation"])
        _wait(lambda: _port_open(port), procs, min(60.0, timeout), "the SuperLink to listen on port %d" % port)
        say(f"[flower] SuperLink listening on 127.0.0.1:{port} (pid {procs.procs[0].popen.pid})")
        for k in range(n):
            procs.start(f"supernode_{k}", [
                _program("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                "--port", node_ports[k], "--node-config", f'partition-id={k} data-file="{paths[k]}"'])
        say(f"[flower] {n} SuperNodes started (ports {node_ports[0]}-{node_ports[-1]}), "
            f"clients hold {', '.join(str(len(clients[k][0])) for k in range(n))} images")
        run_config = work / "run_config.toml"  # a JSON string is a valid TOML basic string
        run_config.write_text(f"course-settings = {json.dumps(json.dumps(settings))}\n")
        run = procs.start("flwr-run", [_program("flwr"), "run", app, CONNECTION, "--run-config", run_config])
        _wait(lambda: run.popen.poll() is not None, procs, min(120.0, timeout), "`flwr run` to submit the run")
        if run.popen.returncode != 0:
            raise FlowerRunError(f"`flwr run` failed (exit code {run.popen.returncode}):\n{_tail(run.log)}")
        say(f"[flower] run submitted: {_tail(run.log, 1).strip()}")
        if on_start is not None:
            on_start(procs)
        history, setup_s = _follow(work, procs, cfg.rounds, start, timeout, round_timeout, say)
        weights = []
        for r in range(1, cfg.rounds + 1):
            with np.load(work / f"weights_{r}.npz") as f:
                weights.append([f[f"arr_{i}"] for i in range(len(f.files))])
        from importlib.metadata import version

        procs.track()
        return FlowerResult(history, weights, version("flwr"), port, time.monotonic() - start, setup_s,
                            str(work), {"cpu_seconds": procs.cpu_seconds(), "cpu_by_program": procs.cpu_by_program(),
                                        "processes_started": len(procs.procs) + len(procs.seen)})
    finally:
        left = procs.stop()
        if progress and left:
            say(f"[flower] stopped {len(left)} processes ({', '.join(sorted(set(left)))})")
        if own_dir and not keep_workdir:
            shutil.rmtree(work, ignore_errors=True)


def _check_processes(procs: FlowerProcesses) -> None:
    procs.track()
    dead = procs.stopped()
    if dead:
        p = dead[0]
        role = "the SuperLink" if p.name == "superlink" else f"the SuperNode of client {p.name.split('_')[-1]}"
        raise FlowerRunError(f"{role} (pid {p.popen.pid}) stopped with exit code {p.popen.returncode} "
                             f"during the run; last lines of {p.log}:\n{_tail(p.log)}")


def _wait(done: Callable[[], bool], procs: FlowerProcesses, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        _check_processes(procs)
        if time.monotonic() > deadline:
            raise FlowerTimeout(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.1)


def _follow(work: Path, procs: FlowerProcesses, rounds: int, start: float, timeout: float,
            round_timeout: float, say) -> tuple[list, float]:
    """Read the ServerApp's events until it is done; fail fast when a process stops."""
    history, seen, setup_s = [], 0, None
    last = time.monotonic()
    while True:
        events = []
        if (work / EVENTS_FILE).exists():
            events = [json.loads(line) for line in (work / EVENTS_FILE).read_text().splitlines() if line]
        for ev in events[seen:]:
            last = time.monotonic()
            if ev["event"] == "nodes":
                setup_s = last - start
                say(f"[flower] ServerApp running; every SuperNode answered ({setup_s:.0f} s after start)")
            elif ev["event"] == "round":
                history.append({k: ev[k] for k in ("round", "clients", "num_examples", "seconds", "test_accuracy")})
                say(f"[flower] round {ev['round']}/{rounds}: clients {ev['clients']}, "
                    f"test accuracy {ev['test_accuracy']:.4f} ({ev['seconds']:.1f} s)")
            elif ev["event"] == "error":
                raise FlowerRunError(f"the ServerApp failed: {ev['message']}")
            elif ev["event"] == "done":
                return history, setup_s or 0.0
        seen = len(events)
        _check_processes(procs)
        now = time.monotonic()
        if now - start > timeout:
            raise FlowerTimeout(f"the Flower run did not finish in {timeout:.0f} s "
                                f"({len(history)} of {rounds} rounds done)")
        if now - last > round_timeout:
            raise FlowerTimeout(f"no progress from the Flower run for {round_timeout:.0f} s "
                                f"({len(history)} of {rounds} rounds done); ServerApp log:\n"
                                f"{_tail(procs.procs[0].log)}")
        time.sleep(0.2)


# ---- Flower beside the hand-written loop -------------------------------------------------------
def _max_difference(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(a, b))


def compare_with_manual(clients: ClientArrays, init_weights, x_test, y_test, cfg: FedAvgConfig, *,
                        model: str = "cnn_small", num_classes: int = 10,
                        flower: FlowerResult | None = None, progress: bool = True,
                        **flower_kwargs) -> dict:
    """Flower's run (``flower``, or a new :func:`run_flower_fedavg` with ``flower_kwargs``) beside
    the course's hand-written FedAvg (:func:`data_utils.fedavg.run_fedavg`) on the same clients,
    initial weights and settings. Returns ``{"rows": [...], "flower": FlowerResult,
    "manual_history": [...], "manual_seconds": s}``, one row per round: round, clients (Flower's
    and the manual loop's), both test accuracies and their difference, ``max_weight_difference``
    (the two global models after this round) and ``round_weight_difference`` (Flower's model
    against one manual round started from Flower's previous model: what this round alone adds;
    the first grows over rounds because Flower averages in float32 and the manual loop in
    float64, and training amplifies rounding differences), and each run's seconds."""
    check_flower_run(len(clients), cfg, flower_kwargs.get("timeout", 1.0), flower_kwargs.get("round_timeout", 1.0))
    if flower is None:
        flower = run_flower_fedavg(clients, init_weights, x_test, y_test, cfg, model=model,
                                   num_classes=num_classes, progress=progress, **flower_kwargs)
    if len(flower.history) != cfg.rounds:
        raise ValueError(f"the Flower run has {len(flower.history)} rounds, cfg has {cfg.rounds}")
    evaluator = WeightsEvaluator(model, np.shape(x_test)[1:], num_classes, x_test, y_test)
    manual_weights = []

    def evaluate(weights):
        manual_weights.append([np.array(w) for w in weights])
        return evaluator(weights)

    from .env import set_seed

    set_seed(cfg.seed)  # TensorFlow's deterministic ops, as in the ClientApp: the same kernels
    trainer = client_trainer(model, np.shape(x_test)[1:], num_classes, cfg.client_lr, cfg.client_momentum)
    start = time.monotonic()
    _, history = run_fedavg(trainer, init_weights, clients, cfg, evaluate=evaluate, progress=progress,
                            desc="manual FedAvg")
    seconds = time.monotonic() - start
    rows = []
    for f_row, m_row, fw, mw in zip(flower.history, history, flower.round_weights, manual_weights):
        r = int(f_row["round"])
        # one manual round from Flower's previous global weights: what this round alone changed
        trainer.set_learning_rate(cfg.client_lr_for_round(r))
        prev = init_weights if r == 1 else flower.round_weights[r - 2]
        step, _ = fedavg_round(trainer, prev, clients, f_row["clients"], cfg, r)
        m_acc = float(m_row.metrics["test_accuracy"])
        rows.append({"round": int(f_row["round"]), "clients": list(f_row["clients"]),
                     "manual_clients": [int(c) for c in m_row.clients],
                     "flower_accuracy": float(f_row["test_accuracy"]), "manual_accuracy": m_acc,
                     "accuracy_difference": abs(float(f_row["test_accuracy"]) - m_acc),
                     "max_weight_difference": _max_difference(fw, mw),
                     "round_weight_difference": _max_difference(fw, step),
                     "flower_seconds": float(f_row["seconds"]), "manual_seconds": float(m_row.seconds)})
    return {"rows": rows, "flower": flower, "manual_history": [r.as_dict() for r in history],
            "manual_seconds": seconds}
