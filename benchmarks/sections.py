"""The four measurements. Each function runs inside its own worker process (see
:mod:`benchmarks.worker`) and returns a plain dict for the report. They use the course's own code:
``data_utils.fedavg.run_fedavg`` (the manual loop), ``data_utils.tff_fedavg.build_fedavg`` /
``run_tff_fedavg`` (TFF), ``data_utils.partition``, ``data_utils.models`` and the course's dataset
loader; nothing here re-implements FedAvg."""
from __future__ import annotations

import os

import time
from dataclasses import replace

import numpy as np

from . import common
from .settings import Algorithm, Settings


# What a profile breaks a round into: label -> substring of "file:line(function)".
WATCH = {
    "tff": {"whole round": "(run_tff_fedavg)", "writing the round's orders (client ids)": "(round_ids)",
            "process.next (worker_binary)": "computation_impl.py:143(__call__)",
            "reading weights back": "(state_weights)"},
    "tff_datasets": {"whole round": "(run_tff_fedavg)", "building client datasets": "(federated_data)",
                     "process.next (worker_binary)": "computation_impl.py:143(__call__)",
                     "reading weights back": "(state_weights)"},
    "manual": {"whole round": "(run_fedavg)", "building client batches": "(client_batches)",
               "Trainer.run (set weights, compiled SGD loop, get weights)": ("data_utils/training.py", "(run)"),
               "averaging": "(weighted_average)"},
    "keras_epoch": {"model.fit": "training.py:1431(fit)",
                    "building the dataset": "(from_tensor_slices)"},
    "compiled_epoch": {"Trainer.run": ("data_utils/training.py", "(run)"), "building the batches": "(client_batches)"},
}


# ---- shared set-up -------------------------------------------------------------------------------
def _data(s: Settings):
    from data_utils.env import set_seed
    from data_utils.experiment import Experiment, load_data

    set_seed(s.data.seed)
    exp = Experiment(seed=s.data.seed, model=s.data.model, train_limit=s.data.train_limit,
                     test_limit=s.data.test_limit)
    return load_data(exp)


def _initial_weights(s: Settings, data) -> list:
    """The course's common starting point: the model's initial weights for the seed (not saved to
    build/artifacts, so a benchmark never changes what the notebooks reuse)."""
    from data_utils.models import build_model

    return build_model(s.data.model, data.input_shape, data.num_classes, seed=s.data.seed).get_weights()


def _trainer(s: Settings, data, lr: float):
    """The course's client trainer (:func:`data_utils.training.client_trainer`, plain SGD)."""
    from data_utils.training import client_trainer

    return client_trainer(s.data.model, data.input_shape, data.num_classes, lr)


def _keras_model(s: Settings, data, lr: float):
    """A plain compiled Keras model (SGD), for the ``model.fit`` floor."""
    from data_utils.models import build_model, compile_model

    return compile_model(build_model(s.data.model, data.input_shape, data.num_classes), lr)


def _build_tff(s: Settings, data, lr: float, weights) -> tuple:
    """Build TFF's FedAvg process, initialize it, load ``weights``; with the seconds each took
    (TFF imported first: its import is timed apart, by :func:`fresh_setup`)."""
    from data_utils.tff_fedavg import build_fedavg, import_tff, set_state_weights

    import_tff()
    clock = common.Clock()
    process = build_fedavg(s.data.model, data.input_shape, data.num_classes, client_lr=lr)
    build = clock.lap()
    state = process.initialize()
    init = clock.lap()
    state = set_state_weights(process, state, weights)
    return process, state, {"build_seconds": build[0], "build_cpu_seconds": build[1],
                            "initialize_seconds": init[0], "initialize_cpu_seconds": init[1]}


_SETUP_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
from data_utils.tff_fedavg import build_fedavg, import_tff
import_tff()
t1 = time.perf_counter()
process = build_fedavg(sys.argv[1], (28, 28, 1), 10, client_lr=float(sys.argv[2]))
t2 = time.perf_counter()
process.initialize()
t3 = time.perf_counter()
print("SETUP " + json.dumps({"import_seconds": t1 - t0, "build_seconds": t2 - t1, "initialize_seconds": t3 - t2}))
"""


def fresh_setup(s: Settings, lr: float) -> dict:
    """What a learner waits for the first time: in ``s.overhead.setup_processes`` fresh Python
    processes, importing TFF (with the course's worker started), building FedAvg's process and
    ``initialize()``, each timed; medians, and every run. (A second build in the same process
    is about 3x faster: TensorFlow's autograph caches the functions it converted.) The same number
    of processes, interleaved with those, time TFF's default, where AutoGraph also rewrites the
    pure-Python helpers the course leaves alone (``$COURSE_AUTOGRAPH_ALL=1``; see
    ``data_utils.tff_fedavg.AUTOGRAPH_SKIPPED``): ``tff_default`` in the result."""
    import json
    import subprocess
    import sys

    def one(autograph_all: str) -> dict:
        out = subprocess.run([sys.executable, "-c", _SETUP_SCRIPT, s.data.model, str(lr)], capture_output=True,
                             text=True, timeout=600, cwd=str(common.ROOT),
                             env=dict(os.environ, PYTHONPATH=str(common.ROOT), COURSE_AUTOGRAPH_ALL=autograph_all))
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("SETUP ")), None)
        if line is None:
            raise RuntimeError(f"the setup timing process failed: {out.stderr.strip()[-500:]}")
        return json.loads(line[6:])

    runs, default_runs = [], []
    for _ in range(s.overhead.setup_processes):
        runs.append(one("0"))
        if s.overhead.setup_tff_default:
            default_runs.append(one("1"))
    med = {k: common.median([r[k] for r in runs]) for k in runs[0]}
    out = {**med, "build_cpu_seconds": None, "initialize_cpu_seconds": None, "runs": runs,
           "processes": len(runs)}
    if default_runs:
        out["tff_default"] = {**{k: common.median([r[k] for r in default_runs]) for k in default_runs[0]},
                              "runs": default_runs}
    return out


class _Stop(Exception):
    """Raised from the evaluation callback to end ``run_fedavg`` (or section 5's
    ``run_remedy``) early: target or budget."""


def train_until(model, w0, clients, cfg, evaluator, eval_every: int, stop,
                label: str = "", log_every: int = 10) -> dict:
    """``run_fedavg`` for up to ``cfg.rounds`` rounds, scoring the global model with ``evaluator``
    every ``eval_every`` rounds (and after the last), and ending early when
    ``stop(point)`` returns a reason. A point is ``{"round", "test_accuracy" (None between
    evaluations), "seconds", "train_cpu_seconds", "eval_cpu_seconds"}``, cumulative; training
    and evaluation CPU (whole process tree) are counted apart. Returns the evaluated points
    ("curve"), the rounds run and why it stopped."""
    from data_utils.fedavg import run_fedavg

    curve: list = []
    point = {"round": 0, "test_accuracy": None, "seconds": 0.0, "train_cpu_seconds": 0.0,
             "eval_cpu_seconds": 0.0}
    why = {"stop": f"round cap ({cfg.rounds})"}
    clock = common.Clock()

    def evaluate(weights):
        wall, cpu = clock.lap()
        point.update(round=point["round"] + 1, test_accuracy=None,
                     seconds=point["seconds"] + wall,
                     train_cpu_seconds=point["train_cpu_seconds"] + cpu)
        if point["round"] % eval_every == 0 or point["round"] == cfg.rounds:
            acc = evaluator(weights)["test_accuracy"]
            wall, cpu = clock.lap()
            point.update(test_accuracy=acc, seconds=point["seconds"] + wall,
                         eval_cpu_seconds=point["eval_cpu_seconds"] + cpu)
            curve.append(dict(point))
            if label and len(curve) % log_every == 0:
                print(f"  [{label}] round {point['round']}: test accuracy {acc:.4f}, "
                      f"{point['train_cpu_seconds']:.0f} training CPU s, {point['seconds']:.0f} s",
                      flush=True)
        reason = stop(point)
        if reason:
            why["stop"] = reason
            raise _Stop
        return {} if point["test_accuracy"] is None else {"test_accuracy": point["test_accuracy"]}

    try:
        run_fedavg(model, w0, clients, cfg, evaluate=evaluate, progress=False)
    except _Stop:
        pass
    return {"curve": curve, "rounds_run": point["round"], "stop_reason": why["stop"],
            "seconds": point["seconds"], "train_cpu_seconds": point["train_cpu_seconds"],
            "eval_cpu_seconds": point["eval_cpu_seconds"]}


# ---- 1. orchestration overhead --------------------------------------------------------------------
def overhead(s: Settings) -> dict:
    """TFF round vs manual round vs one plain Keras epoch over the same examples, interleaved
    round by round (so a busy machine slows all three alike), medians after a warm-up."""
    import tensorflow as tf

    from data_utils.clients import ClientArrays, ClientBatches, client_batches, epoch_orders
    from data_utils.fedavg import FedAvgConfig, run_fedavg
    from data_utils.tff_fedavg import run_tff_fedavg

    o = s.overhead
    data = _data(s)
    clients = ClientArrays(data.x_train, data.y_train, common.fixed_size_clients(
        len(data.x_train), o.num_clients, o.per_client, s.data.seed))
    w0 = _initial_weights(s, data)
    # Keras 2: building a TFF computation invalidates Keras models made before it, so TFF first.
    process, state, in_process = _build_tff(s, data, o.client_lr, w0)
    tff_setup = {**fresh_setup(s, o.client_lr), "in_process": in_process}
    manual_model = _trainer(s, data, o.client_lr)
    plain_model = _keras_model(s, data, o.client_lr)
    plain_model.set_weights(w0)
    compiled_model = _trainer(s, data, o.client_lr)
    compiled_weights = [np.array(w) for w in w0]
    manual_weights = [np.array(w) for w in w0]
    cfg = FedAvgConfig(rounds=1, client_fraction=1.0, local_epochs=o.local_epochs,
                       batch_size=o.batch_size, client_lr=o.client_lr, seed=s.data.seed)

    def tff_round(c):
        """Seconds as ``run_tff_fedavg`` records them (client ids; the worker reads the data)."""
        nonlocal state
        state, hist = run_tff_fedavg(process, state, clients, c, progress=False)
        return hist[0].seconds

    def tff_datasets_round(c):
        """The same, with each client's dataset built in Python and shipped to the worker."""
        nonlocal state
        state, hist = run_tff_fedavg(process, state, clients, c, progress=False, data_path="datasets")
        return hist[0].seconds

    def manual_round(c):
        """Seconds as ``run_fedavg`` records them (datasets, local training, averaging)."""
        nonlocal manual_weights
        manual_weights, hist = run_fedavg(manual_model, manual_weights, clients, c, progress=False)
        return hist[0].seconds

    def plain_epoch(c):
        """The floor: one ``model.fit`` over the round's examples in the round's order, as one
        ``tf.data`` pipeline (Keras's leanest input path; fitting NumPy arrays adds its data
        adapter's fixed cost, which would flatter the ratios)."""
        start = time.perf_counter()
        idx = np.concatenate([clients.indices[k][np.concatenate(
            epoch_orders(len(clients.indices[k]), c.local_epochs, c.seed, 1, k))]
            for k in range(len(clients))])
        ds = tf.data.Dataset.from_tensor_slices(
            (data.x_train[idx], data.y_train[idx].astype("int32"))).batch(c.batch_size)
        plain_model.fit(ds, epochs=1, verbose=0)
        return time.perf_counter() - start

    def compiled_epoch(c):
        """A second floor: the round's batches, all of them, in one call of the manual loop's
        compiled SGD loop (what the manual loop does per client, done once): training without
        any per-client work."""
        nonlocal compiled_weights
        start = time.perf_counter()
        parts = [client_batches(*clients[k], c.local_epochs, c.batch_size, c.seed, 1, k)
                 for k in range(len(clients))]
        offsets = np.cumsum([0] + [len(b.x) for b in parts[:-1]])
        batches = ClientBatches(np.concatenate([b.x for b in parts]), np.concatenate([b.y for b in parts]),
                                np.concatenate([b.bounds + off for b, off in zip(parts, offsets)]),
                                sum(len(b.x) for b in parts), c.batch_size)
        compiled_weights = compiled_model.run(compiled_weights, batches)
        return time.perf_counter() - start

    engines = {"tff": tff_round, "tff_datasets": tff_datasets_round, "manual": manual_round,
               "keras_epoch": plain_epoch, "compiled_epoch": compiled_epoch}
    names = list(engines)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    worker_cpu = {"tff": [], "tff_datasets": []}
    for i in range(o.warmup + o.repeats):
        c = replace(cfg, seed=s.data.seed + i)  # new batches each repeat, same amount of work
        for n in names[i % len(names):] + names[:i % len(names)]:  # rotate who goes first
            clock = common.Clock()
            before = common.worker_cpu_seconds() if n in worker_cpu else 0.0
            wall[n].append(engines[n](c))
            cpu[n].append(clock.lap()[1])
            if n in worker_cpu:
                worker_cpu[n].append(common.worker_cpu_seconds() - before)
    kept = slice(o.warmup, None)
    out = {"setup": {"num_clients": o.num_clients, "per_client": o.per_client,
                     "examples_per_round": o.num_clients * o.per_client,
                     "batch_size": o.batch_size, "local_epochs": o.local_epochs,
                     "warmup": o.warmup, "repeats": o.repeats},
           "tff_setup": tff_setup, "engines": {}}
    for n in names:
        out["engines"][n] = {"seconds": wall[n][kept], "cpu_seconds": cpu[n][kept],
                             "warmup_seconds": wall[n][:o.warmup],
                             "median_seconds": common.median(wall[n][kept]),
                             "median_cpu_seconds": common.median(cpu[n][kept])}
    for n in worker_cpu:
        out["engines"][n]["median_worker_cpu_seconds"] = common.median(worker_cpu[n][kept])
        out["engines"][n]["ratio_to_manual"] = (out["engines"][n]["median_seconds"]
                                                / out["engines"]["manual"]["median_seconds"])
        out["engines"][n]["median_paired_ratio_to_manual"] = common.median(
            [a / b for a, b in zip(wall[n][kept], wall["manual"][kept])])
    out["engines"]["tff"]["goal_ratio_to_manual"] = o.goal_tff_vs_manual
    out["engines"]["tff"]["goal_met_vs_manual"] = bool(out["engines"]["tff"]["ratio_to_manual"] <= o.goal_tff_vs_manual)
    floor = out["engines"]["keras_epoch"]
    compiled = out["engines"]["compiled_epoch"]
    for n in ("tff", "tff_datasets", "manual"):
        out["engines"][n]["ratio_to_compiled"] = (out["engines"][n]["median_seconds"]
                                                  / compiled["median_seconds"])
    for n, goal in (("tff", o.goal_tff), ("tff_datasets", None), ("manual", o.goal_manual), ("compiled_epoch", None)):
        e = out["engines"][n]
        e["ratio_to_keras"] = e["median_seconds"] / floor["median_seconds"]
        e["cpu_ratio_to_keras"] = (e["median_cpu_seconds"] / floor["median_cpu_seconds"]
                                   if floor["median_cpu_seconds"] else None)
        # the ratio of medians, and the median of the per-repeat ratios (robust to a slow repeat)
        e["median_paired_ratio"] = common.median(
            [a / b for a, b in zip(e["seconds"], floor["seconds"])])
        if goal is not None:
            e["goal_ratio"] = goal
            e["goal_met"] = bool(e["ratio_to_keras"] <= goal)
    # Where the time goes: one more round of each, under cProfile.
    c = replace(cfg, seed=s.data.seed + o.warmup + o.repeats)
    profiles: dict = {}
    for n in names:
        with common.profiled(profiles, n, watch=WATCH[n]):
            engines[n](c)
    out["profiles"] = profiles
    out["worker_settings"] = worker_settings(s, data, clients, w0, cfg)
    out["memory"] = common.memory_mb()
    return out


def worker_settings(s: Settings, data, clients, w0, cfg) -> list[dict]:
    """1b. TFF's round (client ids) under each of ``s.overhead.worker_settings``: the local worker's
    ``max_concurrent_computation_calls``, the client loop (``tff.learning.LoopImplementation``) and
    TensorFlow's thread counts in the worker's environment; each gets a new worker and a new
    process, ``worker_repeats`` rounds after one warm-up, median seconds and CPU (worker included).
    The default context is restored afterwards."""
    from data_utils.tff_fedavg import build_fedavg, import_tff, run_tff_fedavg, set_state_weights
    from data_utils.workers import use_local_worker

    tff = import_tff()
    o = s.overhead
    rows = []
    saved = dict(os.environ)
    try:
        for name, calls, loop, env in o.worker_settings:
            os.environ.update(dict(env))
            use_local_worker(max_concurrent_computation_calls=calls, env=dict(env))
            process = build_fedavg(s.data.model, data.input_shape, data.num_classes, client_lr=o.client_lr,
                                   loop_implementation=getattr(tff.learning.LoopImplementation, loop))
            state = set_state_weights(process, process.initialize(), w0)
            walls, cpus = [], []
            for i in range(1 + o.worker_repeats):
                clock = common.Clock()  # CPU of this process tree: the worker included
                state, hist = run_tff_fedavg(process, state, clients, replace(cfg, seed=s.data.seed + i), progress=False)
                cpu = clock.lap()[1]
                if i:
                    walls.append(hist[0].seconds)
                    cpus.append(cpu)
            rows.append({"name": name, "max_concurrent_computation_calls": calls, "loop_implementation": loop,
                         "environment": dict(env), "median_seconds": common.median(walls),
                         "median_cpu_seconds": common.median(cpus), "seconds": walls})
            os.environ.clear()
            os.environ.update(saved)
            print(f"  [worker] {name}: {rows[-1]['median_seconds']:.3f} s/round", flush=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        use_local_worker()
    return rows


# ---- 2. rounds to a target accuracy ---------------------------------------------------------------
PAPER_TABLE2 = {
    # McMahan et al. 2017, Table 2 (MNIST CNN, rounds to 99% test accuracy, C=0.1, 100 clients)
    "target": 0.99, "dataset": "MNIST", "model": "CNN (McMahan et al.)",
    "rounds": {"FedSGD": {"iid": 626, "pathological": 483},
               "FedAvg E=1 B=10": {"iid": 34, "pathological": 350},
               "FedAvg E=5 B=10": {"iid": 20, "pathological": 229}},
}


def _run_to_target(s: Settings, data, clients, w0, alg: Algorithm, target: float,
                   cpu_cap: float, evaluator) -> dict:
    from data_utils.fedavg import FedAvgConfig

    cfg = FedAvgConfig(rounds=alg.max_rounds, client_fraction=s.rounds.client_fraction,
                       local_epochs=alg.local_epochs, batch_size=alg.batch_size,
                       client_lr=alg.client_lr, seed=s.data.seed)

    def stop(p):
        if p["test_accuracy"] is not None and p["test_accuracy"] >= target:
            return "target reached"
        if p["train_cpu_seconds"] + p["eval_cpu_seconds"] >= cpu_cap:
            return f"CPU cap ({cpu_cap:.0f} s)"
        return None

    run = train_until(_trainer(s, data, alg.client_lr), w0, clients, cfg, evaluator,
                      alg.eval_every, stop, label=alg.name)
    accs = [p["test_accuracy"] for p in run["curve"]]
    reached = run["stop_reason"] == "target reached"
    return dict(run, algorithm=alg.name, local_epochs=alg.local_epochs,
                batch_size=alg.batch_size, client_lr=alg.client_lr, eval_every=alg.eval_every,
                max_rounds=alg.max_rounds, reached=reached,
                rounds_to_target=run["rounds_run"] if reached else None,
                best_accuracy=max(accs) if accs else None,
                final_accuracy=accs[-1] if accs else None,
                cpu_seconds=run["train_cpu_seconds"] + run["eval_cpu_seconds"],
                seconds_per_round=run["seconds"] / max(run["rounds_run"], 1))


def rounds(s: Settings) -> dict:
    """Rounds to ``target`` test accuracy for FedSGD and FedAvg (E=1, E=5; B=10), IID and
    pathological non-IID, 100 clients, C=0.1; stop at the target, the round cap or the CPU cap."""
    from data_utils.clients import ClientArrays
    from data_utils.models import WeightsEvaluator
    from data_utils.partition import make_partition

    r = s.rounds
    data = _data(s)
    w0 = _initial_weights(s, data)
    evaluator = WeightsEvaluator(s.data.model, data.input_shape, data.num_classes,
                                 data.x_test, data.y_test)
    runs = []
    for scheme in r.partitions:
        part = make_partition(data.y_train, scheme, r.num_clients, s.data.seed,
                              classes_per_client=r.classes_per_client, local_test_fraction=0.0)
        clients = ClientArrays(data.x_train, data.y_train, part.train)
        for alg in r.algorithms:
            res = _run_to_target(s, data, clients, w0, alg, r.target, r.cpu_cap_seconds, evaluator)
            res["partition"] = scheme
            runs.append(res)
            print(f"[rounds] {scheme:12s} {alg.name:16s} reached={res['reached']} "
                  f"rounds={res['rounds_run']} best={res['best_accuracy']} "
                  f"({res['seconds']:.0f} s)", flush=True)
    return {"setup": {"num_clients": r.num_clients, "client_fraction": r.client_fraction,
                      "target": r.target, "classes_per_client": r.classes_per_client,
                      "cpu_cap_seconds": r.cpu_cap_seconds, "model": s.data.model,
                      "train_examples": len(data.x_train), "test_examples": len(data.x_test)},
            "runs": runs, "paper": PAPER_TABLE2,
            "memory": common.memory_mb()}


# ---- 3. scale ---------------------------------------------------------------------------------------
def scale(s: Settings, engine: str, client_counts) -> dict:
    """Seconds per round with ``clients_per_round`` clients of ``per_client`` examples, for each
    number of clients in ``client_counts``, and this process's peak memory after each. The full
    benchmark gives each configuration its own process (one count per call), so each peak is its
    own; TFF's process is built once per call (it does not depend on the number of clients)."""
    from data_utils.clients import ClientArrays
    from data_utils.fedavg import FedAvgConfig, run_fedavg

    if engine not in ("tff", "manual"):
        raise ValueError(f"engine must be 'tff' or 'manual', got {engine!r}")
    c = s.scale
    data = _data(s)
    mem_data = common.memory_mb()
    w0 = _initial_weights(s, data)
    setup: dict = {}
    if engine == "tff":
        from data_utils.tff_fedavg import run_tff_fedavg, set_state_weights

        process, state0, setup = _build_tff(s, data, c.client_lr, w0)
    else:
        model = _trainer(s, data, c.client_lr)
    configs = []
    for num_clients in client_counts:
        clock = common.Clock()
        clients = ClientArrays(data.x_train, data.y_train, common.fixed_size_clients(
            len(data.x_train), int(num_clients), c.per_client, s.data.seed))
        partition_seconds = clock.lap()[0]
        cfg = FedAvgConfig(rounds=c.warmup + c.repeats, client_fraction=None,
                           clients_per_round=c.clients_per_round, local_epochs=c.local_epochs,
                           batch_size=c.batch_size, client_lr=c.client_lr, seed=s.data.seed)
        profile: dict = {}
        if engine == "tff":
            state = set_state_weights(process, state0, w0)
            clock.lap()
            state, hist = run_tff_fedavg(process, state, clients, cfg, progress=False)
            rounds_wall, rounds_cpu = clock.lap()
            with common.profiled(profile, watch=WATCH["tff"]):
                run_tff_fedavg(process, state, clients, replace(cfg, rounds=1), progress=False)
        else:
            clock.lap()
            weights, hist = run_fedavg(model, w0, clients, cfg, progress=False)
            rounds_wall, rounds_cpu = clock.lap()
            with common.profiled(profile, watch=WATCH["manual"]):
                run_fedavg(model, weights, clients, replace(cfg, rounds=1), progress=False)
        secs = [h.seconds for h in hist[c.warmup:]]
        configs.append({
            "engine": engine, "num_clients": int(num_clients), "ok": True,
            "isolated": len(client_counts) == 1,
            "clients_per_round": c.clients_per_round, "per_client": c.per_client,
            "examples_per_round": int(np.mean([h.num_examples for h in hist])),
            "seconds": secs, "warmup_seconds": [h.seconds for h in hist[:c.warmup]],
            "median_seconds": common.median(secs),
            "cpu_seconds_per_round": rounds_cpu / len(hist),
            "wall_seconds_per_round_incl_bookkeeping": rounds_wall / len(hist),
            "client_index_mb": sum(i.nbytes for i in clients.indices) / 2**20,
            "eager_copy_mb": int(num_clients) * c.per_client * data.x_train[0].nbytes / 2**20,
            "partition_seconds": partition_seconds, "tff_setup": setup,
            "memory_after_data": mem_data, "memory": common.memory_mb(),
            "profile": profile["profile"]})
        print(f"[scale] {engine} {num_clients} clients: {configs[-1]['median_seconds']:.3f} s/round, "
              f"peak {configs[-1]['memory']['peak_total_mb']:.0f} MB", flush=True)
    return {"configs": configs, "train_examples": len(data.x_train)}


# ---- 4. best accuracy in a CPU budget -----------------------------------------------------------------
def budget(s: Settings) -> dict:
    """FedAvg with 10 clients (all every round), IID and Dirichlet(alpha): test accuracy after every
    round until the training CPU time reaches the budget. Evaluation CPU is measured apart and not
    charged to the budget."""
    from data_utils.clients import ClientArrays
    from data_utils.fedavg import FedAvgConfig, run_fedavg
    from data_utils.models import WeightsEvaluator
    from data_utils.partition import make_partition

    b = s.budget
    data = _data(s)
    w0 = _initial_weights(s, data)
    evaluator = WeightsEvaluator(s.data.model, data.input_shape, data.num_classes,
                                 data.x_test, data.y_test)
    runs = []
    for scheme in b.partitions:
        part = make_partition(data.y_train, scheme, b.num_clients, s.data.seed, alpha=b.alpha,
                              local_test_fraction=0.0)
        clients = ClientArrays(data.x_train, data.y_train, part.train)
        cfg = FedAvgConfig(rounds=b.max_rounds, client_fraction=b.client_fraction,
                           local_epochs=b.local_epochs, batch_size=b.batch_size,
                           client_lr=b.client_lr, seed=s.data.seed)
        model = _trainer(s, data, b.client_lr)
        run = train_until(model, w0, clients, cfg, evaluator, 1,
                          lambda p: (f"CPU budget ({b.cpu_budget_seconds:.0f} s)"
                                     if p["train_cpu_seconds"] >= b.cpu_budget_seconds else None),
                          label=f"budget {scheme}")
        curve = run["curve"]
        within = [p for p in curve if p["train_cpu_seconds"] <= b.cpu_budget_seconds] or curve[:1]
        best = max(within, key=lambda p: p["test_accuracy"])
        ref = b.references.get(scheme)
        beat = next((p for p in curve if ref is not None and p["test_accuracy"] > ref), None)
        runs.append({"partition": scheme, "alpha": b.alpha if scheme == "dirichlet" else None,
                     "reference": ref, "best_accuracy": best["test_accuracy"],
                     "best_round": best["round"], "final_accuracy": curve[-1]["test_accuracy"],
                     "rounds_run": len(curve), "rounds_within_budget": len(within),
                     "train_cpu_seconds": run["train_cpu_seconds"],
                     "eval_cpu_seconds": run["eval_cpu_seconds"],
                     "seconds": run["seconds"], "stop_reason": run["stop_reason"],
                     "beat_reference": bool(ref is not None and best["test_accuracy"] > ref),
                     "first_beat": beat, "client_sizes": [len(i) for i in part.train],
                     "curve": curve})
        print(f"[budget] {scheme}: best {best['test_accuracy']:.4f} (ref {ref}) in "
              f"{len(curve)} rounds, {run['train_cpu_seconds']:.0f} CPU s", flush=True)
        # a short profile of one more round: where a round's time goes
        prof: dict = {}
        with common.profiled(prof, watch=WATCH["manual"]):
            run_fedavg(model, w0, clients, replace(cfg, rounds=1), progress=False)
        runs[-1]["profile"] = prof["profile"]
    return {"setup": {"num_clients": b.num_clients, "client_fraction": b.client_fraction,
                      "local_epochs": b.local_epochs, "batch_size": b.batch_size,
                      "client_lr": b.client_lr, "cpu_budget_seconds": b.cpu_budget_seconds,
                      "model": s.data.model, "train_examples": len(data.x_train),
                      "test_examples": len(data.x_test)},
            "runs": runs, "memory": common.memory_mb()}
