"""Jobs that exist only to test the side-environment runner (data_utils.sidecar): started by the
tests as ``tests.sidecar_jobs:selftest_job`` in the side environment or in-process."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np


def selftest_job(params: dict, progress: Callable | None = None) -> dict:
    """The runner's own check (no TensorFlow): sends ``steps`` progress events, prints a line,
    returns ``params`` with every array doubled, and on request fails (``fail``: a message),
    starts a child process that would outlive it (``spawn_sleep``: seconds, like TFF's
    worker_binary) or hangs (``sleep``: seconds). It leaves a temporary file behind, as
    AutoGraph does in a process that ends without its exit handlers, and returns its path."""
    steps = int(params.get("steps", 3))
    for step in range(1, steps + 1):
        if progress:
            progress({"round": step, "rounds": steps, "value": step / steps})
    print("selftest: a plain line of output", flush=True)
    if params.get("spawn_sleep"):
        child = subprocess.Popen(["sleep", str(params["spawn_sleep"])], stdout=sys.stdout)
        if progress:
            progress({"spawned": child.pid})
    if params.get("sleep"):
        time.sleep(float(params["sleep"]))
    if params.get("fail"):
        raise ValueError(str(params["fail"]))

    def doubled(v):
        if isinstance(v, np.ndarray):
            return v * 2
        if isinstance(v, dict):
            return {k: doubled(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(doubled(x) for x in v)
        return v

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as left:
        left.write("# left behind\n")
    return {"echo": doubled(params), "python": list(sys.version_info[:2]), "pid": os.getpid(),
            "temp_file": left.name}


