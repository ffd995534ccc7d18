import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def live_worker_binaries(orphans_only: bool = False, parent: int | None = None) -> list[int]:
    """PIDs of running (not zombie) TFF worker_binary processes; with ``orphans_only``, only those
    whose Python process has exited (re-parented to PID 1) or is this test process: the ones that
    would be leaked when the session ends; with ``parent``, only the children of that process."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,stat=,args="], capture_output=True,
                         text=True).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [int(pid) for pid, ppid, stat, args in (r for r in rows if len(r) == 4)
            if args.split()[0].endswith("worker_binary") and not stat.startswith("Z")
            and (not orphans_only or ppid in ("1", str(os.getpid())))
            and (parent is None or ppid == str(parent))]


def run_python_child(code: str, args: list, tmp_path: Path, timeout: float = 600,
                     artifacts: bool = True, env: dict | None = None) -> tuple[int, str, int]:
    """Run ``python -c code *args`` from the repository root in its own session (its output in
    ``tmp_path/child.log``; with ``artifacts``, its build/ artifacts under ``tmp_path``), then kill
    its whole process group: a TFF worker_binary it started is in that group. Returns the exit
    code, the log's last 4,000 characters and the child's pid (its process group id). ``env``:
    extra environment variables for the child."""
    log_path = tmp_path / "child.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    if artifacts:
        env["COURSE_ARTIFACTS_DIR"] = str(tmp_path / "artifacts")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(ROOT), env=env,
                                start_new_session=True)
        try:
            code_ = proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the child's worker_binary is in this group
            except ProcessLookupError:
                pass
    return code_, log_path.read_text()[-4000:], proc.pid


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_worker_binary():
    """TFF's worker_binary outlives the process that imported TFF (see ENVIRONMENT.md). At the end
    of the session, end the orphaned ones that appeared during it (never another job's live one)."""
    before = set(live_worker_binaries())
    yield
    for pid in set(live_worker_binaries(orphans_only=True)) - before:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


# The tests that take 20 s or more, longest first (pytest --durations, 2026-11-30; .venv and
# .venv313). make test hands tests to its workers in collection order (xdist "load", a few at a
# time), so these go first: each starts while the other worker still has short tests to take.
# Collected in file order, the longest started last and left a worker idle for up to 90 s at the
# end of a stage. A stale entry only changes the order, never what runs.
LONGEST_FIRST = (
    "tests/test_evaluation.py::test_notebook_05_table_matches_notebooks_02_03_and_04",
    "tests/test_bench.py::test_bench_smoke_end_to_end",
    "tests/test_py313.py::test_notebook_runs_in_python313_with_keras3[10_scaling]",
    "tests/test_py313.py::test_notebook_runs_in_python313_with_keras3[05_evaluation]",
    "tests/test_tff.py::test_tff_fedavg_equals_manual_fedavg",
    "tests/test_notebooks.py::test_notebook_runs_alone_in_smoke_mode[09_federated_core]",
    "tests/test_flower.py::test_flower_over_real_processes_matches_the_manual_loop_and_leaves_nothing",
    "tests/test_py313.py::test_notebook_runs_in_python313_with_keras3[04_tff_fedavg]",
    "tests/test_notebooks.py::test_notebook_runs_alone_in_smoke_mode[06_privacy_and_secure_aggregation]",
    "tests/test_notebooks.py::test_notebook_runs_alone_in_smoke_mode[08_heterogeneity_remedies]",
    "tests/test_notebooks.py::test_notebook_runs_alone_in_smoke_mode[07_robustness]",
    "tests/test_notebooks.py::test_notebook_runs_alone_in_smoke_mode[10_scaling]",
    "tests/test_fedcore.py::test_lesson_cells_package_and_tff_agree",
    "tests/test_py313.py::test_notebook_runs_in_python313_with_keras3[03_manual_weight_averaging]",
    "tests/test_tff.py::test_notebook_04_lesson_cells_train_like_the_package",
    "tests/test_remedies.py::test_tff_fedprox_and_server_optimizers_match_the_hand_written_ones",
    "tests/test_privacy.py::test_epsilon_shrinks_with_noise_and_grows_with_rounds_and_sampling",
    "tests/test_py313.py::test_notebook_runs_in_python313_with_keras3[02_local_training]",
    "tests/test_exercises.py::test_tff_checks",
    "tests/test_py313.py::test_notebook_04_training_runs_through_the_side_environment",
)


def pytest_collection_modifyitems(config, items):
    """Run :data:`LONGEST_FIRST` first, in its order; everything else keeps pytest's order."""
    rank = {nodeid: i for i, nodeid in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid, len(rank)))  # stable
