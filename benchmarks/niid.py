"""5. Flower's niid_bench table, side by side: the course's FedAvg, SCAFFOLD, FedProx, FedNova and
a server-optimizer remedy (:mod:`data_utils.remedies`) on the niid_bench grid of Fashion-MNIST
partitions (IID, Dirichlet(0.5), #C = 1, 2, 3 classes per client), with niid_bench's 10 clients
(all in every round), batch 64, client SGD lr 0.01 with momentum 0.9 and its LeNet-style CNN
(``data_utils.models`` "lenet5"), each cell within a stated budget of training CPU seconds
(as many rounds of a fixed number of local epochs as fit, up to niid_bench's 50).

The run (:func:`run`) happens in a worker process, one process per cell in the full
benchmark (:func:`jobs`); :func:`goals`, :func:`plot` and :func:`markdown` turn its result into
the report's goals, figure and text. Flower's numbers are cited constants (:data:`FLOWER`)."""
from __future__ import annotations

import os

import numpy as np

from . import common

FLOWER_URL = "https://github.com/adap/flower/tree/main/baselines/niid_bench"
# Flower baseline niid_bench, README "Expected Results", Fashion-MNIST rows: best test accuracy
# over 50 rounds (%), mean and standard deviation over seeds (read at adap/flower commit
# 73ec95c83270a5a16d1e37d28b2b41b3dc9ad92f). Columns FedAvg, SCAFFOLD, FedProx, FedNova.
FLOWER_COLUMNS = ("FedAvg", "SCAFFOLD", "FedProx", "FedNova")
FLOWER = {
    "IID": ((89.23, 0.45), (89.33, 0.27), (89.42, 0.09), (89.36, 0.09)),
    "Dirichlet(0.5)": ((88.09, 0.29), (88.44, 0.25), (88.15, 0.42), (88.22, 0.12)),
    "#C=1": ((28.39, 17.09), (10.00, 0.00), (32.65, 6.68), (16.86, 9.30)),
    "#C=2": ((78.10, 2.51), (33.80, 41.22), (78.05, 0.99), (71.67, 2.34)),
    "#C=3": ((82.43, 1.52), (80.32, 5.03), (82.99, 0.48), (81.97, 1.34)),
}
FLOWER_SETUP = ("10 clients, all in every round; 50 rounds of 10 local epochs; batch 64; client "
                "SGD lr 0.01, momentum 0.9, weight decay 1e-5; FedProx mu 0.01; the LeNet-style "
                "CNN; best test accuracy over the rounds on the 10,000 test images")
COLORS = {"FedAvg": "#4c72b0", "SCAFFOLD": "#dd8452", "FedProx": "#55a868", "FedNova": "#c44e52",
          "FedAvgM": "#8172b3", "FedAdam": "#937860", "FedYogi": "#da8bc3"}


def flower(row: str, column: str) -> float | None:
    """Flower's mean best accuracy (%) for ``row`` and ``column``, or None if it has no such cell."""
    if row not in FLOWER or column not in FLOWER_COLUMNS:
        return None
    return FLOWER[row][FLOWER_COLUMNS.index(column)][0]


# How a cell's stop reason begins, written by :func:`run` and read by :func:`stopped_by`.
BUDGET, CAP, FAILED = "CPU budget", "round cap", "failed"


# ---- the measurement (inside a worker process) -----------------------------------------------------
def over_budget(spent: float, rounds: int, budget: float | None) -> bool:
    """Whether one more round, estimated as the mean of the ``rounds`` so far, would take the
    training CPU seconds ``spent`` past ``budget`` (None: no budget)."""
    if budget is None or rounds < 1:
        return False
    return spent + spent / rounds > budget


def _remedies():
    """``data_utils.remedies.run_remedy``, or None (with the reason) if the module is missing."""
    try:
        from data_utils.remedies import ALGORITHMS, run_remedy
    except ImportError as err:
        return None, None, f"data_utils.remedies is not available ({err})"
    return ALGORITHMS, run_remedy, None


def run(s, rows=None, columns=None) -> dict:
    """Each column of ``columns`` (labels of ``s.niid.columns``; default all) on each row of
    ``rows`` (labels of ``s.niid.rows``; default all): train from the common initial weights,
    score the global model on the test set after every round, and stop after ``s.niid.rounds``
    rounds or before a round that would take the cell's training past
    ``s.niid.cpu_budget_seconds`` CPU seconds (the mean round so far is the estimate). Keeps the
    curve, the best and the last accuracy, why it stopped, and the CPU seconds of training and
    evaluation apart (evaluation is not charged to the budget)."""
    from data_utils.clients import ClientArrays
    from data_utils.fedavg import FedAvgConfig, run_fedavg
    from data_utils.models import WeightsEvaluator, build_model
    from data_utils.partition import make_partition
    from data_utils.training import client_trainer

    from .sections import _Stop, _data

    n = s.niid
    start_cpu = common.tree_cpu_seconds()
    data = _data(s)
    w0 = build_model(n.model, data.input_shape, data.num_classes, seed=s.data.seed).get_weights()
    evaluator = WeightsEvaluator(n.model, data.input_shape, data.num_classes, data.x_test, data.y_test)
    algorithms, run_remedy, missing = _remedies()
    cfg = FedAvgConfig(rounds=n.rounds, client_fraction=1.0, local_epochs=n.local_epochs,
                       batch_size=n.batch_size, client_lr=n.client_lr,
                       client_momentum=n.client_momentum, seed=s.data.seed)
    trainers: dict = {}
    chosen = [r for r in n.rows if rows is None or r[0] in rows]
    out_rows, cells = [], []
    for label, scheme, k in chosen:
        part = make_partition(data.y_train, scheme, n.num_clients, s.data.seed, alpha=n.alpha,
                              classes_per_client=k or 2, local_test_fraction=0.0)
        clients = ClientArrays(data.x_train, data.y_train, part.train)
        counts = part.label_counts(data.y_train, data.num_classes)
        out_rows.append({"row": label, "scheme": scheme, "classes_per_client": k,
                         "client_sizes": [len(i) for i in part.train],
                         "classes_held": [int(c) for c in (counts > 0).sum(axis=1)]})
        for column, algorithm, kwargs in n.columns:
            if columns is not None and column not in columns:
                continue
            kwargs = dict(kwargs)
            cell = {"row": label, "column": column, "algorithm": algorithm, "kwargs": kwargs,
                    "flower": flower(label, column)}
            if algorithm != "fedavg" and (run_remedy is None or algorithm not in algorithms):
                cells.append(dict(cell, ok=False, error=missing or f"no algorithm {algorithm!r}"))
                print(f"[niid] {label} {column}: skipped ({cells[-1]['error']})", flush=True)
                continue
            if algorithm not in trainers:
                trainers[algorithm] = client_trainer(n.model, data.input_shape, data.num_classes,
                                                     n.client_lr, n.client_momentum)
            trainer = trainers[algorithm]
            curve, train_cpu, eval_cpu, stop = [], [0.0], [0.0], [f"{CAP} ({n.rounds})"]
            clock = common.Clock()

            def evaluate(weights):
                train_cpu[0] += clock.lap()[1]
                acc = evaluator(weights)["test_accuracy"]
                eval_cpu[0] += clock.lap()[1]
                curve.append(acc)
                print(f"  [niid] {label} {column} round {len(curve)}: test accuracy {acc:.4f}, "
                      f"{train_cpu[0]:.0f} training CPU s", flush=True)
                if over_budget(train_cpu[0], len(curve), n.cpu_budget_seconds) and len(curve) < n.rounds:
                    stop[0] = f"{BUDGET} ({n.cpu_budget_seconds:g} s)"
                    raise _Stop
                return {"test_accuracy": acc}

            wall = common.Clock()
            try:
                if run_remedy is None:  # FedAvg without the remedies module: the course's loop
                    run_fedavg(trainer, w0, clients, cfg, evaluate=evaluate, progress=False)
                else:
                    run_remedy(algorithm, trainer, w0, clients, cfg, evaluate=evaluate,
                               progress=False, **kwargs)
            except _Stop:
                pass
            except Exception as err:  # noqa: BLE001 - one failed cell must not lose the others
                error = f"{type(err).__name__}: {err}"
                if not curve:
                    cells.append(dict(cell, ok=False, error=error))
                    print(f"[niid] {label} {column}: FAILED {error}", flush=True)
                    continue
                # diverged after some rounds (e.g. NaN weights): niid_bench scores the best round
                # too, so the rounds before count, and the cell says where and why it ended
                where = (f"in round {len(curve) + 1}" if len(curve) < n.rounds
                         else f"after round {len(curve)}")
                stop[0] = f"{FAILED} {where} ({error[:120]})"
            seconds = wall.lap()[0]
            best = int(np.argmax(curve))
            cells.append(dict(cell, ok=True, curve=curve, best_accuracy=curve[best],
                              best_round=best + 1, final_accuracy=curve[-1], rounds=len(curve),
                              stop_reason=stop[0], seconds=seconds, train_cpu_seconds=train_cpu[0],
                              eval_cpu_seconds=eval_cpu[0]))
            print(f"[niid] {label:15s} {column:9s} best {curve[best]:.4f} (round {best + 1}), "
                  f"last {curve[-1]:.4f}, {len(curve)} rounds ({stop[0]}), {seconds:.0f} s, "
                  f"{train_cpu[0]:.0f} training CPU s", flush=True)
    return {"setup": {"model": n.model, "num_clients": n.num_clients, "max_rounds": n.rounds,
                      "cpu_budget_seconds": n.cpu_budget_seconds,
                      "local_epochs": n.local_epochs, "batch_size": n.batch_size,
                      "client_lr": n.client_lr, "client_momentum": n.client_momentum,
                      "alpha": n.alpha, "train_examples": len(data.x_train),
                      "test_examples": len(data.x_test),
                      "tf_intraop_threads": os.environ.get("TF_NUM_INTRAOP_THREADS")},
            "rows": out_rows, "cells": cells, "cpu_seconds": common.tree_cpu_seconds() - start_cpu,
            "memory": common.memory_mb()}


def threads(s, cores: int | None = None) -> int:
    """TensorFlow intra-op threads for each job process: ``s.niid.threads``, else the usable cores
    shared among the :attr:`~benchmarks.settings.Niid.parallel` jobs that run at once."""
    if s.niid.threads is not None:
        return int(s.niid.threads)
    cores = len(os.sched_getaffinity(0)) if cores is None else cores
    return max(1, cores // max(1, s.niid.parallel))


def jobs(s, cores: int | None = None) -> list[dict]:
    """The worker jobs of the section, each its own process: one per cell (``job_unit`` "cell")
    or per row ("row"), or one for the whole grid (``isolate`` False); each with its share of
    the cores as TensorFlow's intra-op threads (:func:`threads`)."""
    labels = [r[0] for r in s.niid.rows]
    env = {"TF_NUM_INTRAOP_THREADS": str(threads(s, cores))}
    if not s.niid.isolate:
        return [{"section": "niid", "rows": labels, "env": env}]
    if s.niid.job_unit == "row":
        return [{"section": "niid", "rows": [label], "env": env} for label in labels]
    if s.niid.job_unit != "cell":
        raise ValueError(f"niid.job_unit must be 'cell' or 'row', got {s.niid.job_unit!r}")
    return [{"section": "niid", "rows": [label], "columns": [c[0]], "env": env}
            for label in labels for c in s.niid.columns]


def combine(results: list[dict]) -> dict:
    """One section result from the per-row jobs' results."""
    ok = [r for r in results if r.get("ok")]
    out = {"ok": len(ok) == len(results) and bool(ok),
           "setup": ok[0]["setup"] if ok else None,
           "rows": list({x["row"]: x for r in ok for x in r["rows"]}.values()),  # cell jobs repeat rows
           "cells": [c for r in ok for c in r["cells"]],
           "cpu_seconds": sum(r.get("cpu_seconds", 0.0) for r in results),
           "processes": [r["process"] for r in results]}
    if not out["ok"]:
        out["error"] = "; ".join(r.get("error", "") for r in results if not r.get("ok")) or "no rows"
    return out


# ---- goals, figure, text (from report.json) -------------------------------------------------------
def table(r: dict) -> dict:
    """{row: {column: cell}} of the cells that ran, and per row the best remedy (any column but
    FedAvg) as ``"best remedy"``."""
    out: dict = {}
    for c in r["cells"]:
        if c.get("ok"):
            out.setdefault(c["row"], {})[c["column"]] = c
    for row, cols in out.items():
        remedies = [c for name, c in cols.items() if name != "FedAvg"]
        if remedies:
            cols["best remedy"] = max(remedies, key=lambda c: c["best_accuracy"])
    return out


def goals(settings: dict, entry: dict | None, make_goal) -> list[dict]:
    """The issue's goals for this section, made with ``report._goal``."""
    n = settings["niid"]
    r = entry["result"] if entry and entry.get("ok") else None
    t = table(r) if r else {}
    expected = [c[0] for c in n["columns"] if c[0] in FLOWER_COLUMNS]
    out = []
    failed = {(c["row"], c["column"]): c.get("error", "") for c in (r["cells"] if r else [])
              if not c.get("ok")}
    for row in n["goal_rows"]:
        cols = t.get(row, {})
        gaps = {c: flower(row, c) - cols[c]["best_accuracy"] * 100 for c in expected if c in cols}
        broken = [c for c in expected if (row, c) in failed]  # ran and failed (e.g. diverged)
        complete = bool(cols) and len(gaps) + len(broken) == len(expected)
        worst = max(gaps, key=gaps.get) if complete and gaps else None
        note = (f"worst cell {worst}" if worst else "") + "".join(
            f"; {c} failed ({failed[(row, c)][:80]})" for c in broken) + "".join(
            f"; {c} {cols[c]['stop_reason'][:80]}, its earlier rounds count" for c in expected
            if c in cols and failed_part_way(cols[c]))
        out.append(make_goal("5", f"{row}: every course cell within {n['goal_points']:g} points "
                                  "of Flower's niid_bench cell or above it (largest shortfall)",
                             gaps[worst] if worst else None, n["goal_points"],
                             None if not complete else (not broken and gaps[worst] <= n["goal_points"]),
                             " points", note=note.lstrip("; ")))
    non_iid = [x[0] for x in n["rows"] if x[1] != "iid"]
    margins = {row: t[row]["best remedy"]["best_accuracy"] * 100 - flower(row, "FedAvg")
               for row in non_iid if "best remedy" in t.get(row, {})}
    complete = len(margins) == len(non_iid) and bool(margins)
    worst = min(margins, key=margins.get) if complete else None
    out.append(make_goal("5", "on every non-IID row the course's best remedy beats Flower's FedAvg "
                              "cell (smallest margin)", margins[worst] if complete else None, 0.0,
                         None if not complete else margins[worst] > 0, " points",
                         lower_is_better=False,
                         note=(f"row {worst}, {t[worst]['best remedy']['column']}" if complete else "")))
    ran_rows = {x["row"] for x in r["rows"]} if r else set()
    whole = r is not None and all(x[0] in ran_rows for x in n["rows"])
    minutes = entry["seconds"] / 60 if whole else None  # a partial section's time says nothing
    note = f"only {len(ran_rows)} of {len(n['rows'])} rows ran" if r and not whole else ""
    if whole:
        note = (f"{r['cpu_seconds'] / 60:.0f} CPU-minutes; mean 1-minute load "
                f"{entry['load']['mean']:.1f} on the machine's cores")
    out.append(make_goal("5", f"the section's wall time <= {n['goal_minutes']:g} minutes on 2 cores",
                         minutes, n["goal_minutes"], None if minutes is None else minutes <= n["goal_minutes"],
                         " min", note=note))
    return out


def plot(r: dict, path, plt) -> None:
    """Best accuracy per row and column (bars), Flower's cells as black ticks."""
    t = table(r)
    rows = [x["row"] for x in r["rows"]]
    columns = list(dict.fromkeys(c["column"] for c in r["cells"]))
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(len(columns), 1)
    for j, col in enumerate(columns):
        xs = np.arange(len(rows)) + (j - (len(columns) - 1) / 2) * width
        vals = [t.get(row, {}).get(col, {}).get("best_accuracy", np.nan) * 100 for row in rows]
        ax.bar(xs, vals, width, color=COLORS.get(col, "#999999"), label=f"course {col}")
        refs = [flower(row, col) for row in rows]
        if any(v is not None for v in refs):
            ax.plot(xs, [np.nan if v is None else v for v in refs], "_", color="k", ms=12, mew=2,
                    label="Flower niid_bench" if j == 0 else None)
    ax.set_xticks(np.arange(len(rows)), rows)
    ax.set_ylabel("best test accuracy over the rounds (%)")
    ax.set_ylim(0, 100)
    st = r["setup"]
    ax.set_title(f"{st['num_clients']} clients, {budget_words(st)}: {round_span(r)} rounds of "
                 f"{epochs_words(st)}, B={st['batch_size']}, SGD lr {st['client_lr']} "
                 f"momentum {st['client_momentum']}, {st['model']}", fontsize=10)
    ax.legend(fontsize=7, ncol=len(columns) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stopped_by(c: dict, *kinds: str, missing: str = "") -> bool:
    """Whether cell ``c``'s stop reason is one of ``kinds`` (:data:`BUDGET`, :data:`CAP`,
    :data:`FAILED`); ``missing``: the reason assumed for a cell of a report from before stop
    reasons."""
    return str(c.get("stop_reason", missing)).startswith(kinds)


def failed_part_way(c: dict) -> bool:
    """Whether cell ``c`` ran some rounds and then failed (its earlier rounds are its result)."""
    return bool(c.get("ok")) and stopped_by(c, FAILED)


def round_range(r: dict) -> tuple[int, int]:
    """The fewest and the most rounds a cell of ``r`` ran to its budget or round cap (0, 0 if
    none did; a cell that failed part way says nothing about what fits)."""
    rounds = [c["rounds"] for c in r["cells"] if c.get("ok") and not failed_part_way(c)]
    return (min(rounds), max(rounds)) if rounds else (0, 0)


def round_span(r: dict) -> str:
    """:func:`round_range` as words: "25-32", or "27" when every cell ran as many rounds."""
    lo, hi = round_range(r)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def epochs_words(st: dict) -> str:
    """"1 local epoch" or "N local epochs" (``st``: the section's setup)."""
    e = st["local_epochs"]
    return f"{e} local epoch{'s' * (e != 1)}"


def budget_words(st: dict) -> str:
    """"at most N training CPU s per cell" (or the round cap of a run without a budget; report.json
    files from before the budget have a fixed number of rounds)."""
    if st.get("cpu_budget_seconds") is not None:
        return f"at most {st['cpu_budget_seconds']:g} training CPU s per cell"
    return f"at most {st.get('max_rounds', st.get('rounds'))} rounds per cell"


def chance_rows(r: dict, rounds: int = 5, level: float = 0.11) -> dict:
    """{row: ([(column, first round above ``level``)], [columns never above it])} for each row
    where some cell stayed at chance accuracy (at most ``level``) for its first ``rounds`` rounds."""
    out: dict = {}
    for c in r["cells"]:
        curve = c.get("curve") or []
        if not c.get("ok") or len(curve) < rounds or max(curve[:rounds]) > level:
            continue
        left, stayed = out.setdefault(c["row"], ([], []))
        above = next((i + 1 for i, a in enumerate(curve) if a > level), None)
        (stayed.append(c["column"]) if above is None else left.append((c["column"], above)))
    return out


def largest_drops(r: dict, points: float = 2.0) -> dict:
    """{row: (drop in points, column, round)} for each row where some cell's test accuracy fell by
    more than ``points`` from one round to the next: the largest such fall per row."""
    out: dict = {}
    for c in r["cells"]:
        if not c.get("ok") or len(c.get("curve", [])) < 2:
            continue
        falls = [(c["curve"][i - 1] - c["curve"][i]) * 100 for i in range(1, len(c["curve"]))]
        i = int(np.argmax(falls))
        if falls[i] > points and falls[i] > out.get(c["row"], (0.0,))[0]:
            out[c["row"]] = (falls[i], c["column"], i + 2)
    return out


def _cell(c: dict | None, row: str, column: str) -> str:
    ref = flower(row, column)
    flw = "—" if ref is None else f"{ref:.2f} ± {FLOWER[row][FLOWER_COLUMNS.index(column)][1]:.2f}"
    if c is None:
        return "— / " + flw
    acc = c["best_accuracy"] * 100
    if ref is None:
        return f"{acc:.2f}"
    return f"{acc:.2f} / {flw} ({acc - ref:+.1f})"


def markdown(payload: dict, r: dict, fig: str) -> list[str]:
    """The section's text: what was run and how it differs from Flower's setup, both tables side
    by side, the goals' sentences computed from the cells, and each cell's cost."""
    n = payload["settings"]["niid"]
    st = r["setup"]
    t = table(r)
    columns = list(dict.fromkeys(c["column"] for c in r["cells"]))
    extra = [c for c in columns if c not in FLOWER_COLUMNS]
    kw = {c[0]: dict(c[2]) for c in n["columns"]}
    hi = round_range(r)[1]
    examples = st["train_examples"] * st["local_epochs"] * hi
    flower_examples = 60000 * 10 * 50
    cap = st.get("max_rounds", st.get("rounds"))
    budget = st.get("cpu_budget_seconds")
    tf_threads = st.get("tf_intraop_threads")
    ran = [c for c in r["cells"] if c.get("ok")]
    budget_ended = any(stopped_by(c, BUDGET) for c in ran)
    whole = [c for c in ran if not failed_part_way(c)]  # the cells that ran to a stop
    capped_all = bool(whole) and all(stopped_by(c, CAP) for c in whole)
    failed = len(r["cells"]) - len(whole)  # failed part way, or without any result
    thread_words = (f"{tf_threads} TensorFlow thread{'s' * (str(tf_threads) != '1')}; "
                    if tf_threads else "")
    lines = [
        f"Flower's baseline [`niid_bench`]({FLOWER_URL}) reproduces Li et al. 2022, *Federated "
        "Learning on Non-IID Data Silos: An Experimental Study* (NIID-Bench, ICDE 2022, "
        "[arXiv:2102.02079](https://arxiv.org/abs/2102.02079)), "
        f"with {FLOWER_SETUP}. Here the course's own implementations (`data_utils.fedavg` and "
        "`data_utils.remedies`, run by hand as in notebook 08) run the same grid: "
        f"{st['num_clients']} clients, all in every round, batch {st['batch_size']}, client SGD lr "
        f"{st['client_lr']} with momentum {st['client_momentum']} (a fresh momentum per client "
        f"and round), the same CNN (`{st['model']}`: 5x5 conv 6 -> pool -> 5x5 conv 16 -> pool -> "
        f"Dense 120 -> Dense 84 -> Dense 10, ReLU), all {st['train_examples']:,} training images, "
        f"best accuracy over the rounds on {st['test_examples']:,} test images. What differs: "
        + (f"**each cell trains for at most {budget:g} CPU seconds** ({thread_words}"
           f"evaluation not counted), as many rounds of {epochs_words(st)} as fit, up to {cap}"
           + (f": **{round_span(r)} round{'s' * (hi != 1)}** on this machine" if hi else "")
           + ", instead of 50 rounds of 10 local epochs "
           if budget is not None else
           f"**{hi} round{'s' * (hi != 1)} of {epochs_words(st)}** instead of 50 of 10 ")
        + (f"(at most {examples:,} example visits per cell instead of {flower_examples:,}: "
           f"{examples / flower_examples:.1%} of the work"
           + (f"; the budget is sized for {len(n['rows']) * len(n['columns'])} cells in the "
              f"section's {n['goal_minutes']:g} minutes on {payload['machine']['usable_cores']} "
              "cores" if budget is not None else "")
           + ("; a faster machine fits more rounds in the same CPU seconds" if budget_ended else
              f"; every cell{' that did not fail' if failed else ''} reached the {cap}-round cap "
              "before its budget ran out (on a slower machine the budget could end cells first)"
              if budget is not None and capped_all else "")
           + "); " if hi else "(no cell ran); ")
        + "no weight decay (the course's client trainer has none; Flower's 1e-5 is small); one seed "
        "(Flower: mean over seeds, its standard deviations are in `benchmarks/niid.py`); the "
        "course's partitions (`data_utils.partition`: Dirichlet(0.5) with at least 10 images per "
        "client; #C=k is the sort-and-shard split, each client k shards of different classes, "
        "where niid_bench draws k labels at random per client and splits each label among the "
        f"clients holding it); TensorFlow instead of PyTorch. FedProx uses mu "
        f"{kw.get('FedProx', {}).get('mu', 0.01)} like Flower's default."
        + (" The extra column" + ("s " if len(extra) > 1 else " ") + ", ".join(
            f"{c} ({', '.join(f'{k} {v}' for k, v in kw.get(c, {}).items()) or 'defaults'})"
            for c in extra) + " has no Flower counterpart; *best remedy* is the best course "
           "column other than FedAvg in each row." if extra else ""), "",
        f"![niid_bench side by side]({fig})", "",
        "Each cell: course / Flower's mean ± standard deviation over seeds (difference in points), "
        "best test accuracy over the rounds in %.", "",
        "| partition | " + " | ".join(columns) + " | best remedy (course) |",
        "|---|" + "---:|" * (len(columns) + 1)]
    for x in r["rows"]:
        row = x["row"]
        cols = t.get(row, {})
        best = cols.get("best remedy")
        cells = [_cell(cols.get(c), row, c) for c in columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " | "
                     + (f"{best['column']} {best['best_accuracy'] * 100:.2f}" if best else "—") + " |")
    lines.append("")
    for c in r["cells"]:
        if not c.get("ok"):
            lines.append(f"- {c['row']}, {c['column']}: no result ({c.get('error')}).")
        elif failed_part_way(c):
            lines.append(f"- {c['row']}, {c['column']}: {c['stop_reason']}; its best of the "
                         f"{c['rounds']} round{'s' * (c['rounds'] != 1)} before counts, as "
                         "niid_bench's best round would.")
    absent = [x[0] for x in n["rows"] if x[0] not in {y["row"] for y in r["rows"]}]
    if absent:
        lines.append(f"- Rows not in this report (not run, or their process did not finish): "
                     f"{', '.join(absent)}.")
    lines.append("")
    text = []
    for row in n["goal_rows"]:
        cols = t.get(row, {})
        gaps = {c: flower(row, c) - cols[c]["best_accuracy"] * 100 for c in FLOWER_COLUMNS if c in cols}
        if not gaps:
            continue
        worst = max(gaps, key=gaps.get)
        below = [c for c, g in gaps.items() if g > n["goal_points"]]
        pair = f"{worst}, {cols[worst]['best_accuracy'] * 100:.2f} vs {flower(row, worst):.2f}"
        if gaps[worst] < 0:
            text.append(f"{row}: every course cell is above Flower's (smallest margin "
                        f"{-gaps[worst]:.1f} points, {pair}).")
            continue
        text.append(f"{row}: the course's cells are at most {gaps[worst]:.1f} points under "
                    f"Flower's (worst {pair})"
                    + (f"; more than {n['goal_points']:g} points under: {', '.join(below)}."
                       if below else f", within the {n['goal_points']:g}-point goal."))
    for x in r["rows"]:
        row, cols = x["row"], t.get(x["row"], {})
        best, avg = cols.get("best remedy"), flower(x["row"], "FedAvg")
        if x["scheme"] == "iid" or best is None or avg is None:
            continue
        diff = best["best_accuracy"] * 100 - avg
        sd = FLOWER[x["row"]][FLOWER_COLUMNS.index("FedAvg")][1]
        text.append(f"{row}: the course's best remedy, {best['column']} "
                    f"({best['best_accuracy'] * 100:.2f}), is {abs(diff):.2f} points "
                    + ("above" if diff > 0 else "below") + f" Flower's FedAvg ({avg:.2f}"
                    + (f" ± {sd:.2f}; the margin is within Flower's spread over seeds)"
                       if abs(diff) < sd else ")")
                    + (f"; the course's own FedAvg scores {cols['FedAvg']['best_accuracy'] * 100:.2f}."
                       if "FedAvg" in cols else "."))
    lines += [f"- {s}" for s in text] + [""]
    enders = {BUDGET: "the budget", CAP: "the round cap"}
    rising = [c for c in ran if c["best_round"] == c["rounds"] and c["rounds"] > 1
              and stopped_by(c, *enders, missing=BUDGET)]
    if ran and rising:
        gains = [(c["curve"][-1] - c["curve"][-2]) * 100 for c in rising]
        ended = [w for k, w in enders.items() if any(stopped_by(c, k, missing=BUDGET) for c in rising)]
        added = (f"{min(gains):.1f}" if f"{min(gains):.1f}" == f"{max(gains):.1f}"
                 else f"{min(gains):.1f} to {max(gains):.1f}")
        their, them, they = ("their", "them", "they") if len(rising) != 1 else ("its", "it", "it")
        lines += [f"{len(rising)} of {len(ran)} cell{'s' * (len(ran) != 1)} scored {their} best "
                  f"accuracy in {their} last round (the last round added {added} "
                  f"point{'s' * (added != '1.0')}): {' or '.join(ended)}, not the algorithm, "
                  f"ended {them} while {they} still rose.", ""]
    for row, (left, stayed) in chance_rows(r).items():
        def names(xs):
            return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]

        lines += [f"{row}: " + (f"{names([c for c, _ in left])} left chance accuracy (10%) only in "
                                f"round{'s' * (len(left) > 1)} {names([str(k) for _, k in left])}"
                                if left else "")
                  + ("; " if left and stayed else "")
                  + (f"{names(stayed)} never left {'it' if left else 'chance accuracy (10%)'}"
                     if stayed else "")
                  + ". 10% is what a model scores that names the same class for every image; a "
                  "cell's best round there is an escape late in the run, not a steady level.", ""]
    drops = largest_drops(r)
    if drops:
        lines += ["Unsteady rows, where a cell lost more than 2 points from one round to the next "
                  "(largest fall): " + "; ".join(f"{row} {d:.1f} points ({col}, round {k})"
                                                 for row, (d, col, k) in drops.items())
                  + ". There a cell's best round depends on where the run happened to be, and one "
                  "seed is a rough estimate of the setting.", ""]
    if t:
        lines += ["With fewer local epochs per round, each client drifts less from the average "
                  "between aggregations than with niid_bench's 10, so the course's skewed rows "
                  "are not the same test of the remedies; read a cell above Flower's as "
                  "\"this budget's setting\", not as a better algorithm.", ""]
    if n.get("isolate", True):
        unit, par = n.get("job_unit", "row"), n.get("parallel", 1)
        lines += [f"Each {unit} ran in its own process, {par} process{'es' * (par != 1)} at a "
                  f"time on the machine's {payload['machine']['usable_cores']} cores"
                  + (f", each with {tf_threads} TensorFlow intra-op thread"
                     f"{'s' * (str(tf_threads) != '1')} (`TF_NUM_INTRAOP_THREADS`)" if tf_threads else
                     " (one process keeps about one core busy)")
                  + "; a cell's wall seconds include waiting for the CPU.", ""]
    lines += ["| partition | column | best (round) | last | rounds (stopped by) | wall s | training CPU s | evaluation CPU s |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in r["cells"]:
        if c.get("ok"):
            lines.append(f"| {c['row']} | {c['column']} | {c['best_accuracy']:.4f} ({c['best_round']}) | "
                         f"{c['final_accuracy']:.4f} | {c['rounds']} ({c.get('stop_reason', CAP)}) | "
                         f"{c['seconds']:.0f} | {c['train_cpu_seconds']:.0f} | {c['eval_cpu_seconds']:.0f} |")
    lines += ["", "Clients per partition (training images; classes held): " + "; ".join(
        f"{x['row']}: {min(x['client_sizes'])}-{max(x['client_sizes'])} images, "
        f"{min(x['classes_held'])}-{max(x['classes_held'])} classes" for x in r["rows"]) + ".", ""]
    return lines
