import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def live_worker_binaries() -> list[int]:
    """PIDs of running (not zombie) TFF worker_binary processes."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    return [int(pid) for pid, stat, args in (r for r in rows if len(r) == 3)
            if args.split()[0].endswith("worker_binary") and not stat.startswith("Z")]


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_worker_binary():
    """TFF's worker_binary outlives the process that imported TFF (see ENVIRONMENT.md): a test
    session that imported TFF in-process ends the ones it started."""
    before = set(live_worker_binaries())
    yield
    for pid in set(live_worker_binaries()) - before:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
