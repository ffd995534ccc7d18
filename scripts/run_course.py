"""Execute the course's notebooks in order with papermill and print what each one found.

    python scripts/run_course.py                    # workshop defaults (make course)
    python scripts/run_course.py --smoke            # the small CI setting
    python scripts/run_course.py -p NUM_CLIENTS=7 -p PARTITION=dirichlet 01 02

Executed copies go to build/notebooks/ (git-ignored); each notebook writes its key numbers to
build/results/<notebook>.json, summarized here. Exit code 1 if any notebook fails.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "scripts"))
import check_notebooks  # noqa: E402
from data_utils.env import read_results, results_dir  # noqa: E402


def ipc_kernel_manager():
    """Jupyter's kernel manager talking to the kernel over local IPC sockets instead of TCP
    ports: nothing is listening on the network, and ipykernel stops printing its "Kernel is
    running over TCP without encryption" warning before every notebook."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self):
            return "ipc"

    return IPCKernelManager


def parse_param(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"parameter {text!r} must look like NAME=value")
    name, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a bare string such as PARTITION=dirichlet
    return name.strip(), value


def notebooks(selection: list[str]) -> list[Path]:
    found = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return found
    chosen = [nb for nb in found if any(nb.name.startswith(s) for s in selection)]
    if not chosen:
        raise SystemExit(f"no notebook matches {selection}; have {[nb.name for nb in found]}")
    return chosen


def summarize(results: dict, limit: int = 8) -> str:
    """A few of the scalar numbers of a results JSON (nested dicts flattened to dotted names),
    accuracies first."""
    def flat(d: dict, prefix: str = "", depth: int = 0):
        for key, value in d.items():
            if isinstance(value, dict) and depth < 1 and key != "params":
                yield from flat(value, f"{prefix}{key}.", depth + 1)
            elif (isinstance(value, (int, float, str)) and not isinstance(value, bool)
                  and len(str(value)) < 40):
                yield f"{prefix}{key}", value

    items = sorted(flat(results), key=lambda kv: "accuracy" not in kv[0])  # stable: accuracies first
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in items[:limit])


def print_course_table(results: dict | None) -> None:
    """Notebook 05's summary table: accuracy and macro F1 of each model, in the IID setting
    (``accuracy_iid``, ``f1_iid``) beside the course's main setting (``accuracy``, ``f1``), whose
    names come from the results' ``summary_settings`` (``{"iid": ..., "main": ...}``)."""
    if not results or not results.get("summary_table"):
        return
    rows = results["summary_table"]
    names = results.get("summary_settings") or {}
    columns = [("", names.get("main", "this run"))]
    if any("accuracy_iid" in row for row in rows):
        columns.insert(0, ("_iid", names.get("iid", "IID")))
    print("\nCourse summary (notebook 05, this run): test accuracy and macro F1 on the shared test set")
    print(f"  {'':<42}" + "".join(f" {title[:19]:>19}" for _, title in columns))
    print(f"  {'model':<42}" + f" {'accuracy':>9} {'macro F1':>9}" * len(columns))
    for row in rows:
        cells = ""
        for key, _ in columns:
            acc, f1 = row.get(f"accuracy{key}"), row.get(f"f1{key}")
            cells += (f" {acc:>9.4f} {f1:>9.4f}" if acc is not None and f1 is not None
                      else f" {'n/a':>9} {'n/a':>9}")
        print(f"  {row['model']:<42}{cells}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("select", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--smoke", action="store_true", help="run the small CI setting")
    parser.add_argument("-p", "--param", action="append", type=parse_param, default=[],
                        help="papermill parameter NAME=value (repeatable)")
    parser.add_argument("--out", default=str(ROOT / "build" / "notebooks"))
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)

    import papermill as pm

    params = dict(args.param)
    if args.smoke:
        params["SMOKE"] = True
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    failures, timings = [], {}
    kernel_manager = ipc_kernel_manager()
    for nb in notebooks(args.select):
        print(f"==> {nb.name}" + (f"  {params}" if params else ""), flush=True)
        start = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params,
                                cwd=str(nb.parent), kernel_name="python3",
                                progress_bar=False, execution_timeout=args.timeout,
                                kernel_manager_class=kernel_manager)
        except Exception as err:  # noqa: BLE001 - report every failing notebook, then fail
            failures.append(nb.name)
            print(f"    FAILED: {type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}")
            print(f"    executed copy with the traceback: {out_dir / nb.name}")
            continue
        timings[nb.name] = time.perf_counter() - start
        results = read_results(nb.stem, params.get("RESULTS_DIR"))
        print(f"    {timings[nb.name]:.0f} s; " + (summarize(results) if results
                                                  else "wrote no results JSON"), flush=True)
    print(f"\nresults JSON in {results_dir(params.get('RESULTS_DIR'))}; executed notebooks in {out_dir}")
    if "05_evaluation.ipynb" in timings:  # only this run's table, never a stale one
        print_course_table(read_results("05_evaluation", params.get("RESULTS_DIR")))
    problems = check_notebooks.check([out_dir / name for name in timings], outputs=True)
    if problems:  # warnings, tracebacks, long lines or cells: what a learner should not read past
        print(f"\n{len(problems)} problem(s) in the executed notebooks (scripts/check_notebooks.py):")
        print("\n".join(f"  {p}" for p in problems))
    if failures:
        print(f"\n{len(failures)} notebook(s) failed: {', '.join(failures)}")
        return 1
    if problems:
        return 1
    print(f"\nall {len(timings)} notebooks ran in {sum(timings.values()):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
