"""Turn ``report.json`` into the goals table, one PNG per section and ``benchmarks.md``.

Every sentence that states a result is built from the numbers in the report, and says so when a
goal is missed (by how much) or a section failed."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import niid

FIGURES = {"overhead": "bench_overhead.png", "rounds": "bench_rounds.png",
           "scale": "bench_scale.png", "budget": "bench_budget.png", "niid": "bench_niid.png"}
TITLES = {"overhead": "1. Orchestration overhead", "rounds": "2. Rounds to a target accuracy",
          "scale": "3. Scale: number of simulated clients",
          "budget": "4. Best accuracy within a CPU-time budget",
          "niid": "5. Flower's niid_bench table, side by side"}
NUMBERS = {"overhead": "1", "rounds": "2", "scale": "3", "budget": "4", "niid": "5"}
ENGINE_NAMES = {"tff": "TFF FedAvg round", "tff_datasets": "TFF round, datasets shipped",
                "manual": "manual FedAvg round",
                "keras_epoch": "plain Keras epoch", "compiled_epoch": "one compiled loop"}


def _autograph_sentence(ts: dict) -> str:
    """Section 1's sentence on the course's AutoGraph rule, from the interleaved default runs."""
    d = ts["tff_default"]
    course, default = ts["build_seconds"] + ts["initialize_seconds"], d["build_seconds"] + d["initialize_seconds"]
    return (f" Most of the build is AutoGraph rewriting TFF's Python functions into graph code; the "
            f"course tells it to leave TFF's pure-Python helpers alone "
            f"(`data_utils.tff_fedavg.AUTOGRAPH_SKIPPED`; the same model, a test checks it). With "
            f"TFF's default, in {len(d['runs'])} processes interleaved with these, build + initialize "
            f"took {default:.1f} s (build {d['build_seconds']:.1f} s): the rule saves "
            f"{default - course:.1f} s ({(default - course) / default:.0%}).")


def _ok(payload: dict, section: str) -> dict | None:
    entry = payload.get("sections", {}).get(section)
    return entry["result"] if entry and entry.get("ok") else None


def _num(x: float) -> str:
    """A number with sensible digits: 1.23, 0.891, 2978."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} CPU-minutes" if seconds >= 60 else f"{seconds:.0f} CPU-seconds"


def _goal(section, goal, measured, limit, met, unit="", lower_is_better=True, note=""):
    if measured is None:
        summary = "not measured"
    else:
        cmp = "<=" if lower_is_better else ">"
        summary = f"{_num(measured)}{unit} (goal {cmp} {_num(limit)}{unit})"
        if not met:
            gap = (measured - limit) if lower_is_better else (limit - measured)
            summary += f", missed by {_num(abs(gap))}{unit}"
            if limit:
                summary += f" ({abs(gap) / limit * 100:.0f}%)"
    return {"section": section, "goal": goal, "measured": measured, "limit": limit,
            "met": met, "summary": summary + (f"; {note}" if note else "")}


def scale_growth(result: dict) -> dict:
    """Per engine: median seconds per round at the most clients / at the fewest."""
    out = {}
    for engine in sorted({c["engine"] for c in result["configs"] if c.get("ok")}):
        rows = sorted((c for c in result["configs"] if c.get("ok") and c["engine"] == engine),
                      key=lambda c: c["num_clients"])
        if len(rows) >= 2:
            out[engine] = {"from": rows[0]["num_clients"], "to": rows[-1]["num_clients"],
                           "ratio": rows[-1]["median_seconds"] / rows[0]["median_seconds"]}
    return out


def speedups(runs: list[dict]) -> dict:
    """Per "partition/algorithm": FedSGD's rounds to the target over FedAvg's, exact when both
    reached it, a lower bound ("at least") when only FedAvg did, an upper bound ("less than")
    when only FedSGD did."""
    out = {}
    for scheme in dict.fromkeys(x["partition"] for x in runs):
        by = {x["algorithm"]: x for x in runs if x["partition"] == scheme}
        sgd = by.get("FedSGD")
        for name, x in by.items():
            if name == "FedSGD" or not sgd:
                continue
            key = f"{scheme}/{name}"
            if x["reached"] and sgd["reached"]:
                out[key] = {"value": sgd["rounds_to_target"] / x["rounds_to_target"], "kind": "exact"}
            elif x["reached"]:
                out[key] = {"value": sgd["rounds_run"] / x["rounds_to_target"], "kind": "at least"}
            elif sgd["reached"]:
                out[key] = {"value": sgd["rounds_to_target"] / x["rounds_run"], "kind": "less than"}
    return out


def derive(payload: dict) -> dict:
    """Add what is computed from the measurements (speed-ups, the goals) to ``payload``."""
    r = _ok(payload, "rounds")
    if r:
        r["speedups"] = speedups(r["runs"])
    r = _ok(payload, "scale")
    if r:
        r["growth"] = scale_growth(r)
    payload["goals"] = evaluate_goals(payload)
    return payload


def evaluate_goals(payload: dict) -> list[dict]:
    """The issue's goals, each with the measured value and met / missed by how much."""
    goals = []
    s = payload["settings"]
    r = _ok(payload, "overhead")
    for engine, name in (("tff", "TFF"), ("manual", "manual loop")):
        limit = s["overhead"][f"goal_{engine}"]
        measured = r["engines"][engine]["ratio_to_keras"] if r else None
        goals.append(_goal("1", f"{name} seconds per round <= {limit}x one plain Keras epoch",
                           measured, limit, None if measured is None else measured <= limit, "x"))
    limit = s["overhead"].get("goal_tff_vs_manual")
    if limit is not None:
        measured = r["engines"]["tff"].get("ratio_to_manual") if r else None
        goals.append(_goal("1", f"TFF seconds per round <= {limit}x the hand-written round",
                           measured, limit, None if measured is None else measured <= limit, "x"))
        limit = s["overhead"]["goal_tff_setup_seconds"]
        ts = r["tff_setup"] if r else None
        measured = ts["build_seconds"] + ts["initialize_seconds"] if ts else None
        goals.append(_goal("1", f"TFF build + initialize <= {limit:g} s", measured, limit,
                           None if measured is None else measured <= limit, " s"))
    r = _ok(payload, "scale")
    growth = scale_growth(r) if r else {}
    for engine, name in (("tff", "TFF"), ("manual", "manual loop")):
        g = growth.get(engine)
        limit = s["scale"]["goal_growth"]
        goals.append(_goal("3", f"{name} seconds per round grows <= {limit}x from the fewest to "
                                f"the most clients", g["ratio"] if g else None, limit,
                           None if not g else g["ratio"] <= limit, "x"))
    if r:
        peak = max(c["memory"]["peak_total_mb"] for c in r["configs"] if c.get("ok"))
        limit = s["scale"]["goal_memory_mb"]
        goals.append(_goal("3", f"peak resident memory < {limit / 1024:.0f} GB in every "
                                "configuration (Python process + worker_binary)", peak, limit,
                           peak < limit, " MB"))
    else:
        goals.append(_goal("3", "peak resident memory < 3 GB", None, None, None))
    r = _ok(payload, "budget")
    budget_s = s["budget"]["cpu_budget_seconds"]
    for scheme in s["budget"]["partitions"]:
        run = next((x for x in r["runs"] if x["partition"] == scheme), None) if r else None
        ref = s["budget"]["references"].get(scheme)
        goals.append(_goal("4", f"FedAvg best test accuracy, {scheme}, beats Flower niid_bench "
                                f"({ref:.1%}) within {_minutes(budget_s)}",
                           run["best_accuracy"] if run else None, ref,
                           None if not run else run["beat_reference"], "",
                           lower_is_better=False))
    if "niid" in s:
        goals += niid.goals(s, payload.get("sections", {}).get("niid"), _goal)
    return goals


# ---- figures -----------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_overhead(r: dict, path: Path):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [n for n in ("keras_epoch", "compiled_epoch", "manual", "tff", "tff_datasets") if n in r["engines"]]
    colors = {"keras_epoch": "#999999", "compiled_epoch": "#cccccc", "manual": "#4c72b0", "tff": "#dd8452",
              "tff_datasets": "#f2b48a"}
    for ax, key, label in ((axes[0], "seconds", "wall-clock seconds per round"),
                           (axes[1], "cpu_seconds", "CPU seconds per round (incl. worker_binary)")):
        meds = [np.median(r["engines"][n][key]) for n in names]
        ax.bar(range(len(names)), meds, color=[colors[n] for n in names])
        for i, n in enumerate(names):
            vals = r["engines"][n][key]
            ax.plot([i] * len(vals), vals, "k.", alpha=0.6)
            ratio = meds[i] / meds[0] if meds[0] else float("nan")
            ax.text(i, max(vals) * 1.03, f"{meds[i]:.2f} s\n{ratio:.2f}x", ha="center",
                    va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), [ENGINE_NAMES[n].replace(" ", "\n", 1) for n in names], fontsize=8)
        ax.set_ylabel(label)
        ax.set_ylim(0, max(max(r["engines"][n][key]) for n in names) * 1.3 or 1)
    st = r["setup"]
    fig.suptitle(f"Seconds per round, {st['num_clients']} clients x {st['per_client']} examples, "
                 f"B={st['batch_size']}, E={st['local_epochs']} (median of {st['repeats']}, dots: repeats)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rounds(r: dict, path: Path):
    plt = _plt()
    parts = list(dict.fromkeys(x["partition"] for x in r["runs"]))
    fig, axes = plt.subplots(1, len(parts), figsize=(5.2 * len(parts), 3.8), squeeze=False)
    target = r["setup"]["target"]
    for ax, scheme in zip(axes[0], parts):
        for x in (x for x in r["runs"] if x["partition"] == scheme):
            rounds = [p["round"] for p in x["curve"]]
            acc = [p["test_accuracy"] for p in x["curve"]]
            label = x["algorithm"] + (f": {x['rounds_to_target']} rounds" if x["reached"]
                                      else f": not reached in {x['rounds_run']}")
            ax.plot(rounds, acc, ".-" if len(rounds) < 30 else "-", label=label, ms=3)
        ax.axhline(target, color="k", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("round (log scale)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{scheme}, {r['setup']['num_clients']} clients, C={r['setup']['client_fraction']}",
                     fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scale(r: dict, path: Path, goal_mb: float):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for engine, color in (("tff", "#dd8452"), ("manual", "#4c72b0")):
        rows = sorted((c for c in r["configs"] if c.get("ok") and c["engine"] == engine),
                      key=lambda c: c["num_clients"])
        if not rows:
            continue
        ks = [c["num_clients"] for c in rows]
        name = ENGINE_NAMES[engine].replace(" round", "")
        axes[0].plot(ks, [c["median_seconds"] for c in rows], "o-", color=color, label=name)
        for c in rows:
            axes[0].plot([c["num_clients"]] * len(c["seconds"]), c["seconds"], ".", color=color, alpha=0.4)
        if engine == "tff":
            axes[1].plot(ks, [c["memory"]["peak_total_mb"] for c in rows], "o-", color=color,
                         label=f"{name}: Python + worker_binary")
            axes[1].plot(ks, [c["memory"]["python_peak_mb"] for c in rows], "x:", color=color,
                         label=f"{name}: Python process only")
        else:
            axes[1].plot(ks, [c["memory"]["peak_total_mb"] for c in rows], "o-", color=color,
                         label=f"{name} (one process)")
    axes[1].axhline(goal_mb, color="r", ls="--", lw=0.8, label=f"goal {goal_mb / 1024:.0f} GB")
    counts = sorted({c["num_clients"] for c in r["configs"] if c.get("ok")})
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(counts, [f"{k:,}" for k in counts])
        ax.minorticks_off()
        ax.set_xlabel("number of simulated clients (log scale)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("seconds per round")
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylabel("peak resident memory (MB)")
    axes[1].set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_budget(r: dict, path: Path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    budget = r["setup"]["cpu_budget_seconds"] / 60
    for x, color in zip(r["runs"], ("#4c72b0", "#dd8452", "#55a868")):
        cpu = [p["train_cpu_seconds"] / 60 for p in x["curve"]]
        acc = [p["test_accuracy"] for p in x["curve"]]
        ax.plot(cpu, acc, ".-", color=color, ms=3,
                label=f"{x['partition']}: best {x['best_accuracy']:.3f}")
        if x["reference"] is not None:
            ax.axhline(x["reference"], color=color, ls="--", lw=0.8,
                       label=f"niid_bench FedAvg {x['partition']} {x['reference']:.3f}")
    ax.axvline(budget, color="k", ls=":", lw=0.8, label=f"budget {budget:.0f} CPU-min")
    ax.set_xlabel("training CPU minutes")
    ax.set_ylabel("test accuracy")
    lo = min([p["test_accuracy"] for x in r["runs"] for p in x["curve"]] + [0.8])
    ax.set_ylim(max(lo, 0.7) if lo > 0.7 else lo, 0.93)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"FedAvg, {r['setup']['num_clients']} clients, E={r['setup']['local_epochs']}, "
                 f"B={r['setup']['batch_size']}, lr={r['setup']['client_lr']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- markdown ------------------------------------------------------------------------------------
def _fmt_s(x):
    return "—" if x is None else f"{x:.2f}"


def _fmt_acc(x):
    return "—" if x is None else f"{x:.4f}"


def _profile_table(p: dict, n: int = 8) -> list[str]:
    lines = [f"| function (cumulative, one profiled round of {p['total_s']:.2f} s) | calls | own s | cumulative s |",
             "|---|---:|---:|---:|"]
    for row in p["by_cumulative"][:n]:
        lines.append(f"| `{row['function']}` | {row['calls']} | {row['own_s']:.3f} | {row['cumulative_s']:.3f} |")
    lines += ["", "| function (own time) | calls | own s | cumulative s |", "|---|---:|---:|---:|"]
    for row in p["by_own_time"][:n]:
        lines.append(f"| `{row['function']}` | {row['calls']} | {row['own_s']:.3f} | {row['cumulative_s']:.3f} |")
    return lines


def _breakdown(p: dict) -> str:
    return "; ".join(f"{k} {v:.3f} s" for k, v in p.get("breakdown", {}).items() if v)


def _section_header(payload, section) -> list[str]:
    entry = payload["sections"].get(section)
    lines = [f"## {TITLES[section]}", ""]
    if entry is None:
        return lines + ["Not run in this report.", ""]
    alone = f"python -m benchmarks --sections {NUMBERS[section]}" + (" --smoke" if payload["smoke"] else "")
    lines += [f"Command: `{entry['command']}` (this section alone: `{alone}`); "
              f"started {entry['started_utc']}, took {entry['seconds'] / 60:.1f} min; 1-minute load "
              f"average during the section {entry['load']['min']:.1f}-{entry['load']['max']:.1f} "
              f"(mean {entry['load']['mean']:.1f}) on {payload['machine']['usable_cores']} cores.", ""]
    if not entry["ok"]:
        lines += [f"**This section failed:** {entry['result'].get('error')}. Its log is "
                  f"`{_rel(entry['result'].get('process', {}).get('log', ''))}`.", ""]
    return lines


def _rel(path) -> str:
    try:
        return os.path.relpath(path, Path(__file__).resolve().parent.parent)
    except ValueError:
        return str(path)


def md_overhead(payload, r, fig) -> list[str]:
    s = payload["settings"]["overhead"]
    st, e = r["setup"], r["engines"]
    tff, man, ker = e["tff"], e["manual"], e["keras_epoch"]
    ts = r["tff_setup"]
    lines = [f"{st['num_clients']} clients x {st['per_client']} Fashion-MNIST training images "
             f"({st['examples_per_round']} examples per round), batch {st['batch_size']}, "
             f"{st['local_epochs']} local epoch, client SGD; the {len(e)} are interleaved round by round "
             f"(which goes first rotates), {st['warmup']} warm-up round(s) dropped, median of "
             f"{st['repeats']}. The floor is `model.fit` over the same examples in the same order. "
             "A second floor, *one compiled loop*, runs the round's batches through the manual "
             "loop's compiled SGD loop (`data_utils.training.Trainer.run`) in one call: the same "
             "training without any per-client work. The manual loop trains each client with that "
             "loop, which skips `fit`'s per-call and per-step Python work, so it can come out "
             "below the `fit` floor; its cost over *one compiled loop* is its orchestration. "
             "CPU seconds include TFF's `worker_binary` process, where TFF actually trains.", "",
             f"![seconds per round]({fig})", "",
             "| | median s/round | ratio to Keras | median of per-repeat ratios | median CPU s/round | CPU ratio | goal |",
             "|---|---:|---:|---:|---:|---:|---|"]
    rows = [("keras_epoch", None), ("compiled_epoch", None), ("manual", s["goal_manual"]),
            ("tff", s["goal_tff"]), ("tff_datasets", None)]
    for key, goal in (row for row in rows if row[0] in e):
        x = e[key]
        ratio = x.get("ratio_to_keras", 1.0)
        lines.append(f"| {ENGINE_NAMES[key]} | {x['median_seconds']:.3f} | {ratio:.2f}x | "
                     f"{x.get('median_paired_ratio', 1.0):.2f}x | {_fmt_s(x['median_cpu_seconds'])} | "
                     f"{(x.get('cpu_ratio_to_keras') or 1.0):.2f}x | "
                     + ("floor" if key == "keras_epoch" else "second floor" if key == "compiled_epoch"
                        else "before (issue 15)" if goal is None
                        else f"<= {goal}x: {'met' if x['goal_met'] else 'missed'}")
                     + " |")
    setup_s = ts["build_seconds"] + ts["initialize_seconds"]
    where = (f"median of {ts['processes']} fresh Python processes" if ts.get("processes")
             else "in the benchmark's process")
    lines += ["", f"TFF's one-time cost ({where}): building the FedAvg process took "
                  f"{ts['build_seconds']:.1f} s and `initialize()` {ts['initialize_seconds']:.1f} s: "
                  f"{setup_s:.1f} s together, "
                  f"{'within' if setup_s <= s['goal_tff_setup_seconds'] else 'over'} the "
                  f"{s['goal_tff_setup_seconds']:g} s goal"
                  + (f"; importing TFF (and starting the course's worker) took {ts['import_seconds']:.1f} s "
                     "before that" if ts.get("import_seconds") is not None else "") + "."
                  + (" Per process (import, build, initialize): " + "; ".join(
                      f"{r['import_seconds']:.1f}, {r['build_seconds']:.1f}, {r['initialize_seconds']:.2f} s"
                      for r in ts["runs"]) + "." if ts.get("runs") else "")
                  + (_autograph_sentence(ts) if ts.get("tff_default") else ""), ""]
    if "ratio_to_manual" in tff:
        lines += [f"TFF's round (client ids, the worker reading each client's files) costs "
                  f"{tff['ratio_to_manual']:.2f}x the hand-written round (median of per-repeat ratios "
                  f"{tff['median_paired_ratio_to_manual']:.2f}x; goal <= {s['goal_tff_vs_manual']}x: "
                  f"{'met' if tff['goal_met_vs_manual'] else 'missed'})."]
        if "tff_datasets" in e:
            old = e["tff_datasets"]
            lines[-1] += (f" With the clients' datasets built in Python and shipped to the worker every "
                          f"round, as before issue 15, the same round costs {old['median_seconds']:.3f} s "
                          f"({old['ratio_to_keras']:.2f}x Keras, {old['ratio_to_manual']:.2f}x the "
                          f"hand-written round): the ids path is {old['median_seconds'] / tff['median_seconds']:.2f}x "
                          "as fast in this run.")
        lines.append("")
    lines += md_worker_settings(r.get("worker_settings"))
    for key, name in (("tff", "TFF"), ("manual", "The manual loop")):
        x = e[key]
        over = (x["median_seconds"] - ker["median_seconds"])
        cpu = (f" By CPU time, which other processes disturb less, the ratio is "
               f"{x['cpu_ratio_to_keras']:.2f}x." if x.get("cpu_ratio_to_keras") else "")
        if x["goal_met"]:
            lines.append(f"{name} costs {x['ratio_to_keras']:.2f}x a plain Keras epoch "
                         f"({over:+.3f} s per round), within its {x['goal_ratio']}x goal.{cpu}")
        else:
            lines.append(f"{name} costs {x['ratio_to_keras']:.2f}x a plain Keras epoch, "
                         f"missing its {x['goal_ratio']}x goal by "
                         f"{x['ratio_to_keras'] - x['goal_ratio']:.2f}x ({over:+.3f} s per round "
                         f"over the floor); see the profile below for where the time goes.{cpu}")
        if x.get("ratio_to_compiled"):
            lines[-1] += (f" Against the same training in one compiled call "
                          f"({e['compiled_epoch']['median_seconds']:.3f} s) it costs "
                          f"{x['ratio_to_compiled']:.2f}x.")
        lines.append("")
    lines += ["", "Where a round's time goes (one extra round of each under cProfile, which adds "
                  "its own overhead to Python-heavy code): "]
    for key in ("tff", "tff_datasets", "manual", "keras_epoch", "compiled_epoch"):
        if key in r["profiles"]:
            lines.append(f"- {ENGINE_NAMES[key]}: {_breakdown(r['profiles'][key])}")
    wcpu = tff.get("median_worker_cpu_seconds")
    if wcpu is not None and tff["median_cpu_seconds"]:
        lines += ["", f"Of TFF's {tff['median_cpu_seconds']:.2f} CPU seconds per round, "
                      f"{wcpu:.2f} ran in `worker_binary` (where TFF trains and aggregates) and "
                      f"{tff['median_cpu_seconds'] - wcpu:.2f} in the Python process (writing the "
                      f"round's example orders, driving the round); the plain Keras epoch "
                      f"needed {ker['median_cpu_seconds']:.2f}."]
    lines += ["", "In TFF's round, the time under `process.next (worker_binary)` is Python waiting "
                  "for the C++ `worker_binary` (building each client's `tf.data` dataset from its "
                  "files, running the local training, aggregating); the rest is the course's Python "
                  "around it.", ""]
    comp = e.get("compiled_epoch")
    if wcpu is not None and comp and comp["median_cpu_seconds"]:
        lines += [f"Inside TFF: its `worker_binary` used {wcpu:.2f} CPU seconds per round for training "
                  f"that takes {comp['median_cpu_seconds']:.2f} CPU seconds as one compiled loop "
                  f"({wcpu / comp['median_cpu_seconds']:.1f}x). What remains once no pixels are shipped "
                  "is TFF's runtime: each client's training runs as its own computation in the worker "
                  "(its dataset built, its loop run, its result returned), then the aggregation.", ""]
    for key in ("tff", "manual"):
        if key not in r["profiles"]:
            continue
        lines += [f"<details><summary>cProfile of one {ENGINE_NAMES[key]}</summary>", ""]
        lines += _profile_table(r["profiles"][key]) + ["", "</details>", ""]
    return lines


def md_worker_settings(rows) -> list[str]:
    """Section 1b: TFF's round under each worker setting tried."""
    if not rows:
        return []
    base = rows[0]["median_seconds"]
    lines = ["### 1b. TFF's worker on 2 cores", "",
             "The same TFF round (client ids) with a new local worker per setting: "
             "`max_concurrent_computation_calls` of `tff.backends.native.set_sync_local_cpp_execution_context`, "
             "the client loop (`loop_implementation=tff.learning.LoopImplementation...`) and TensorFlow's "
             "thread counts in the worker's environment; median after one warm-up round. The first row is the "
             "course's setting; each other row changes one thing from it.", "",
             "| setting | median s/round | vs the course's | median CPU s/round |", "|---|---:|---:|---:|"]
    for row in rows:
        cpu = "n/a" if row.get("median_cpu_seconds") is None else f"{row['median_cpu_seconds']:.2f}"
        lines.append(f"| {row['name']} | {row['median_seconds']:.3f} | {row['median_seconds'] / base:.2f}x | {cpu} |")
    best = min(rows, key=lambda r: r["median_seconds"])
    if best is rows[0] or best["median_seconds"] >= 0.95 * base:
        lines += ["", "No setting beat the course's by 5% or more, so the course keeps its setting."]
    else:
        from .settings import Overhead

        lines += ["", f"Fastest here: {best['name']} ({best['median_seconds'] / base:.2f}x the course's setting)."]
        note = dict(Overhead().worker_notes).get(best["name"])
        lines += ["", note] if note else []
    return lines + [""]


def md_rounds(payload, r, fig) -> list[str]:
    st = r["setup"]
    paper = r["paper"]
    lines = [f"{st['num_clients']} clients, C={st['client_fraction']} "
             f"({int(round(st['num_clients'] * st['client_fraction']))} per round), "
             f"model `{st['model']}`, {st['train_examples']} training and {st['test_examples']} test "
             f"images; target {st['target']:.0%} test accuracy. A run stops at the target, at its round "
             f"cap or after {st['cpu_cap_seconds']:.0f} CPU seconds. FedSGD is one full-batch gradient "
             "step per client per round (E=1, B=all); it is evaluated every few rounds, so its count is "
             "exact to within that interval. The paper's numbers are for MNIST and a 99% target with "
             f"its own CNN (McMahan et al. 2017, Table 2): same protocol, easier dataset, higher bar.", "",
             f"![rounds to target]({fig})", "",
             f"| partition | algorithm | lr | rounds to {st['target']:.0%} | speed-up vs FedSGD | paper: rounds to 99% MNIST (speed-up) | best acc | s/round | CPU s/round | stopped by |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for x in r["runs"]:
        key = f"{x['partition']}/{x['algorithm']}"
        sp = r["speedups"].get(key)
        sp_txt = "—" if x["algorithm"] == "FedSGD" else (
            "unknown (neither reached)" if sp is None else
            {"exact": "", "at least": ">= ", "less than": "< "}[sp["kind"]] + f"{sp['value']:.1f}x")
        pr = paper["rounds"].get(x["algorithm"], {}).get(x["partition"])
        sgd = paper["rounds"]["FedSGD"].get(x["partition"])
        pr_txt = "—" if pr is None else (f"{pr}" if x["algorithm"] == "FedSGD" else f"{pr} ({sgd / pr:.1f}x)")
        rt = (str(x["rounds_to_target"]) if x["reached"]
              else f"not reached in {x['rounds_run']} rounds")
        lines.append(f"| {x['partition']} | {x['algorithm']} | {x['client_lr']} | {rt} | {sp_txt} | {pr_txt} | "
                     f"{_fmt_acc(x['best_accuracy'])} | {x['seconds_per_round']:.2f} | "
                     f"{x['cpu_seconds'] / max(x['rounds_run'], 1):.2f} | {x['stop_reason']} |")
    lines.append("")
    for scheme in dict.fromkeys(x["partition"] for x in r["runs"]):
        by = {x["algorithm"]: x for x in r["runs"] if x["partition"] == scheme}
        reached = [n for n, x in by.items() if x["reached"]]
        def spread(x, k=20):
            tail = [p["test_accuracy"] for p in x["curve"][-k:]]
            return f"; its last {len(tail)} evaluations ranged {min(tail):.3f}-{max(tail):.3f}" \
                if len(tail) > 1 else ""

        missed = [f"{n} (best {x['best_accuracy']:.3f} after {x['rounds_run']} rounds{spread(x)})"
                  for n, x in by.items() if not x["reached"]]
        text = f"**{scheme}:** "
        text += (f"reached {st['target']:.0%}: " + ", ".join(
            f"{n} in {by[n]['rounds_to_target']} rounds" for n in reached) + ". ") if reached else \
            f"no algorithm reached {st['target']:.0%}. "
        if missed:
            text += "Not reached: " + "; ".join(missed) + "."
        for n, x in by.items():
            sp = r["speedups"].get(f"{scheme}/{n}")
            if sp and sp["kind"] == "less than":
                text += (f" {n} stopped after {x['rounds_run']} rounds ({x['stop_reason']}) while "
                         f"FedSGD needed {by['FedSGD']['rounds_to_target']}, so its speed-up over "
                         f"FedSGD is below {sp['value']:.1f}x; whether it is above 1x this run "
                         "cannot say.")
            elif sp and sp["kind"] == "at least":
                text += (f" FedSGD did not reach the target in {by['FedSGD']['rounds_run']} rounds, "
                         f"so {n}'s speed-up is at least {sp['value']:.1f}x.")
        slower = [n for n in by if n != "FedSGD" and (r["speedups"].get(f"{scheme}/{n}") or {}).get("kind")
                  == "exact" and r["speedups"][f"{scheme}/{n}"]["value"] < 1]
        if slower:
            text += (f" Unlike the paper, {' and '.join(slower)} needed more rounds than FedSGD here. "
                     "With two classes per client, many local steps pull each client's model "
                     "toward its own two classes and the average of such models moves less "
                     "directly than an average of gradients (client drift). The paper tuned the "
                     "learning rate for each row; this run uses one rate for all FedAvg rows, so "
                     "read this as one setting's result, not as FedAvg's limit.")
        lines.append(text)
        lines.append("")
    lines += ["", payload["settings"]["rounds"].get("lr_note", "") + " Learning rates were not "
                  "tuned per row as in the paper (which took the best of a grid for each), so our "
                  "speed-ups are those of one reasonable setting.", ""]
    return lines


def md_scale(payload, r, fig) -> list[str]:
    s = payload["settings"]["scale"]
    ok = sorted((c for c in r["configs"] if c.get("ok")), key=lambda c: (c["engine"], c["num_clients"]))
    n_train = payload["sections"]["scale"]["result"].get("train_examples") or \
        (payload["settings"]["data"]["train_limit"] or 60000)
    fits = n_train // s["per_client"]
    isolated = all(c.get("isolated") for c in ok)
    lines = [f"Every client holds exactly {s['per_client']} training images, and "
             f"{s['clients_per_round']} clients train per round (B={s['batch_size']}, "
             f"E={s['local_epochs']}), so a round's work is the same at every scale and only the "
             f"number of clients changes. Clients are chunks of seeded permutations of the "
             f"{n_train:,} training images (disjoint up to {fits} clients, overlapping beyond; the "
             "data is only indexed, never copied per client). "
             + ("Each configuration runs in its own fresh process, so its peak memory is its own"
                if isolated else "All counts of an engine ran in one process (smoke setting), so "
                "its peaks are cumulative")
             + f"; median of {s['repeats']} rounds after {s['warmup']} warm-up.", "",
             f"![scale]({fig})", "",
             "| engine | clients | median s/round | CPU s/round | peak MB: Python | peak MB: worker_binary | peak MB: total | client index MB | a copy per client would be MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in ok:
        m = c["memory"]
        lines.append(f"| {c['engine']} | {c['num_clients']} | {c['median_seconds']:.3f} | "
                     f"{c['cpu_seconds_per_round']:.2f} | {m['python_peak_mb']:.0f} | "
                     f"{m['worker_binary_peak_mb']:.0f} | {m['peak_total_mb']:.0f} | "
                     f"{c['client_index_mb']:.1f} | {c['eager_copy_mb']:.0f} |")
    for c in r["configs"]:
        if not c.get("ok"):
            lines.append(f"| failed | | {c.get('error')} | | | | | | |")
    lines.append("")
    growth = scale_growth(r)
    for engine, g in growth.items():
        verdict = ("within" if g["ratio"] <= s["goal_growth"] else
                   f"missing by {g['ratio'] - s['goal_growth']:.2f}x")
        lines.append(f"- {ENGINE_NAMES[engine].replace(' round', '')}: {g['from']} -> {g['to']} "
                     f"clients changes seconds per round by {g['ratio']:.2f}x ({verdict} the "
                     f"{s['goal_growth']}x goal).")
    if ok:
        peak = max(ok, key=lambda c: c["memory"]["peak_total_mb"])
        lines.append(f"- The largest peak was {peak['memory']['peak_total_mb']:.0f} MB ({peak['engine']}, "
                     f"{peak['num_clients']} clients), "
                     + ("under" if peak["memory"]["peak_total_mb"] < s["goal_memory_mb"] else "over")
                     + f" the {s['goal_memory_mb'] / 1024:.0f} GB goal. Materializing every client's "
                     f"data up front would copy {max(c['eager_copy_mb'] for c in ok) / 1024:.1f} GB "
                     "(arithmetic: clients x examples x bytes per image); the lazy `ClientArrays` "
                     "keep only index arrays, and TFF gets datasets built for the sampled clients only.")
    missed = [e for e, g in growth.items() if g["ratio"] > s["goal_growth"]]
    for engine in missed:
        rows = [c for c in ok if c["engine"] == engine]
        lines += ["", f"Where {engine}'s round time goes at each scale (one profiled round): "]
        for c in rows:
            lines.append(f"- {c['num_clients']} clients: {_breakdown(c['profile'])}")
        big = max(rows, key=lambda c: c["num_clients"])
        lines += ["", f"<details><summary>cProfile, {engine}, {big['num_clients']} clients</summary>", ""]
        lines += _profile_table(big["profile"]) + ["", "</details>"]
    lines.append("")
    return lines


def md_budget(payload, r, fig) -> list[str]:
    st = r["setup"]
    lines = [f"FedAvg with {st['num_clients']} clients, all of them every round, E={st['local_epochs']}, "
             f"B={st['batch_size']}, client SGD lr {st['client_lr']}, model `{st['model']}`, "
             f"on all {st['train_examples']} training images; test accuracy on the "
             f"{st['test_examples']} test images after every round. The budget is "
             f"{_minutes(st['cpu_budget_seconds'])} of training per partition (both together "
             f"{_minutes(2 * st['cpu_budget_seconds'])}; the issue's budget is 30 CPU-minutes), counted as the "
             "process's CPU time (all threads), which a busy machine inflates less than wall-clock "
             "time; evaluation CPU is measured apart and not charged. Flower's niid_bench reference "
             "(Li et al. 2021 setting: 10 clients, 50 rounds of 10 local epochs, B=64, SGD with "
             "momentum 0.9, a LeNet-style CNN) is FedAvg 89.0% IID and 88.4% Dirichlet(0.5).", "",
             f"![accuracy within budget]({fig})", "",
             "| partition | reference | best accuracy (round) | final | rounds | training CPU min | wall min | first beat the reference | result |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for x in r["runs"]:
        fb = x.get("first_beat")
        fb_txt = (f"round {fb['round']}, {fb['train_cpu_seconds'] / 60:.1f} CPU-min" if fb else "never")
        res = ("beat by " if x["beat_reference"] else "missed by ") + \
            f"{abs(x['best_accuracy'] - x['reference']) * 100:.1f} points"
        lines.append(f"| {x['partition']} | {x['reference']:.3f} | {x['best_accuracy']:.4f} ({x['best_round']}) | "
                     f"{x['final_accuracy']:.4f} | {x['rounds_run']} | {x['train_cpu_seconds'] / 60:.1f} | "
                     f"{x['seconds'] / 60:.1f} | {fb_txt} | {res} |")
    lines.append("")
    finals = [x for x in r["runs"] if x["reference"] is not None]
    if finals:
        lines.append("The best round is picked on the test set, which flatters it a little; the "
                     "last round's model, picked by nothing, scores " + ", ".join(
                         f"{x['final_accuracy']:.4f} ({x['partition']}, "
                         f"{'above' if x['final_accuracy'] > x['reference'] else 'not above'} "
                         f"{x['reference']:.3f})" for x in finals) + ".")
        lines.append("")
    for x in r["runs"]:
        if not x["beat_reference"]:
            per_round = x["train_cpu_seconds"] / max(x["rounds_run"], 1)
            lines.append(f"{x['partition']}: the best accuracy {x['best_accuracy']:.4f} stays "
                         f"{(x['reference'] - x['best_accuracy']) * 100:.1f} points under the reference "
                         f"after {x['rounds_run']} rounds ({per_round:.0f} CPU s per round, "
                         f"stopped by: {x['stop_reason']}). One round's time: {_breakdown(x['profile'])}.")
    lines.append("")
    return lines


def _kept_text(payload: dict, md_path: Path) -> tuple[dict, dict]:
    """What a report keeps from the previous ``benchmarks.md`` for the sections this payload does
    not hold (run earlier, their numbers no longer in report.json): their goal rows
    ({section number: [lines]}) and their text ({section: [lines]}), verbatim. A smoke report
    keeps nothing, and nothing is kept from a smoke report."""
    if payload["smoke"] or not md_path.is_file():
        return {}, {}
    text = md_path.read_text()
    if "SMOKE RUN" in text.split("## Machine")[0]:
        return {}, {}
    lines = text.splitlines()
    missing = [s for s in TITLES if s not in payload.get("sections", {})]
    g0 = lines.index("## Goals") if "## Goals" in lines else len(lines)
    goal_table = lines[g0:next((i for i in range(g0 + 1, len(lines)) if lines[i].startswith("## ")),
                               len(lines))]
    blocks, goals = {}, {}
    for section in missing:
        head = f"## {TITLES[section]}"
        if head not in lines:
            continue
        start = lines.index(head)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        blocks[section] = lines[start:end]
        rows = [ln for ln in goal_table if ln.startswith(f"| {NUMBERS[section]} | ")]
        if rows:
            goals[NUMBERS[section]] = rows
    return goals, blocks


def _bench_minutes(payload: dict) -> str:
    """" (this report's: N min on C cores, section 5 M of them)" from the sections' wall seconds,
    or "" if a section is missing (then the total is not this report's)."""
    secs = {k: (v or {}).get("seconds") for k, v in payload.get("sections", {}).items()}
    if payload.get("smoke") or set(secs) != set(NUMBERS) or None in secs.values():
        return ""  # smoke timings say nothing about make bench; a missing section, no total
    cores = (payload.get("machine") or {}).get("usable_cores", "?")
    whose = ("this report's run" if set(payload.get("sections_run") or ()) == set(NUMBERS)
             else "the sum of this report's sections, each from its last run")
    return (f" ({whose}: {sum(secs.values()) / 60:.0f} min on {cores} cores, section 5 "
            f"{secs['niid'] / 60:.0f} of them)")


def write_report(payload: dict, docs: Path, report_path: Path) -> Path:
    docs.mkdir(parents=True, exist_ok=True)
    m = payload["machine"]
    v = m["versions"]
    lines = ["# Benchmarks: how fast and how far the course's federated training goes", ""]
    if payload["smoke"]:
        lines += ["**SMOKE RUN: tiny settings that only exercise the code; these numbers mean "
                  "nothing.**", ""]
    lines += [
        f"Written by `{payload['command']}`"
        + (" (`make bench`)" if payload["command"] == "python -m benchmarks" else "")
        + f" on {payload['finished_utc'][:10]}; raw "
        f"numbers in `{_rel(report_path)}` (git-ignored; re-run to regenerate). The whole run took "
        f"{payload['total_seconds'] / 60:.1f} minutes.", "",
        "## Machine", "",
        "| | |", "|---|---|",
        f"| CPU | {m['cpu_model']} ({m['usable_cores']} usable of {m['logical_cores']} logical cores) |",
        f"| memory | {m['memory_total_gb']} GB ({m['memory_available_gb']} GB available at start) |",
        f"| OS, Python | {m['os']}, Python {m['python']} |",
        f"| versions | TensorFlow {v.get('tensorflow')}, TFF {v.get('tensorflow-federated')}, "
        f"Keras {v.get('keras')}, NumPy {v.get('numpy')} |",
        f"| started | {payload['started_utc']} (niceness {m['niceness']}) |",
        f"| 1/5/15-min load average | at start {', '.join(f'{x:.2f}' for x in m['loadavg'])}; at end "
        f"{', '.join(f'{x:.2f}' for x in payload['loadavg_end'])} |", "",
        "The load average counts runnable processes: above the number of cores, other work was "
        "competing for the CPU and wall-clock times are inflated (ratios measured within one "
        "section, interleaved, are affected less).", "",
        "## Goals", "",
        "| section | goal | result |", "|---|---|---|"]
    kept_goals, kept_blocks = _kept_text(payload, docs / "benchmarks.md")
    for g in payload["goals"]:
        if any(g["section"] == NUMBERS[k] for k in kept_blocks):
            lines += kept_goals.pop(g["section"], [])  # its rows from the previous report, once
            continue
        mark = {True: "met", False: "**missed**", None: "not measured"}[g["met"]]
        lines.append(f"| {g['section']} | {g['goal']} | {mark}: {g['summary']} |")
    lines.append("")
    writers = {"overhead": md_overhead, "rounds": md_rounds, "scale": md_scale, "budget": md_budget}
    plotters = {"overhead": lambda r, p: plot_overhead(r, p),
                "rounds": lambda r, p: plot_rounds(r, p),
                "scale": lambda r, p: plot_scale(r, p, payload["settings"]["scale"]["goal_memory_mb"]),
                "budget": lambda r, p: plot_budget(r, p),
                "niid": lambda r, p: niid.plot(r, p, _plt())}
    writers["niid"] = niid.markdown
    for section in ("overhead", "rounds", "scale", "budget", "niid"):
        if section in kept_blocks:
            lines += kept_blocks[section]
            continue
        lines += _section_header(payload, section)
        r = _ok(payload, section)
        if r is None:
            continue
        fig = docs / FIGURES[section]
        plotters[section](r, fig)
        lines += writers[section](payload, r, FIGURES[section])
    lines += ["## Method notes", "",
              "- Every job (section 1, 2, 4; each scale configuration; each cell of section 5) runs in a fresh Python process "
              "started in its own session, which is ended afterwards together with TFF's "
              "`worker_binary`; its peak memory (VmHWM) and CPU time are read from `/proc` for the "
              "Python process and its `worker_binary`.",
              "- Wall-clock times depend on what else runs on the machine (see the load averages). "
              "CPU times (user + system, all threads, `worker_binary` included) depend on it less, "
              "which is why the caps and the budget are in CPU seconds, but not at all is not "
              "true either: TensorFlow's thread pools spin while they wait for work, so on an idle "
              "machine a round costs more CPU seconds than on a busy one (the spinning uses the "
              "idle core). A CPU cap therefore buys fewer rounds on a quiet machine; the rounds "
              "each run got are in the tables. Per-round seconds in sections 2 and 4 include the "
              "evaluation on the test set.",
              "- The manual loop and TFF run the same algorithm on the same batches "
              "(`data_utils.clients.client_batches`; TFF gets them as `tf.data` datasets), from the same initial weights "
              "(`build_model(..., seed)`); sections 2 and 4 use the manual loop.",
              "- References: McMahan et al. 2017, *Communication-Efficient Learning of Deep "
              "Networks from Decentralized Data* (AISTATS; arXiv:1602.05629), Table 2; Flower "
              "baseline `niid_bench` (github.com/adap/flower, baselines/niid_bench), which "
              "reproduces Li et al. 2021, *Federated Learning on Non-IID Data Silos: An "
              "Experimental Study* (arXiv:2102.02079).", "",
              "## Reproduce", "",
              "```bash", "make bench        # all sections" + _bench_minutes(payload),
              "make bench-smoke  # tiny settings, about a minute (what the test runs)",
              "python -m benchmarks --sections 3   # one section, merged into the existing report",
              "```", ""]
    md = docs / "benchmarks.md"
    from data_utils.env import atomic_write_text

    atomic_write_text(md, "\n".join(lines))
    return md
