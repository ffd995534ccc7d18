import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def live_worker_binaries(orphans_only: bool = False) -> list[int]:
    """PIDs of running (not zombie) TFF worker_binary processes; with ``orphans_only``, only those
    whose Python process has exited (re-parented to PID 1) or is this test process: the ones that
    would be leaked when the session ends."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,stat=,args="], capture_output=True,
                         text=True).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [int(pid) for pid, ppid, stat, args in (r for r in rows if len(r) == 4)
            if args.split()[0].endswith("worker_binary") and not stat.startswith("Z")
            and (not orphans_only or ppid in ("1", str(os.getpid())))]


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
