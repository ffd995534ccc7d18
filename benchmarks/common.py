"""What every benchmark section shares: the machine's description, CPU time and peak memory of a
process *and* its TFF ``worker_binary`` children (TFF runs the computation there, so the Python
process alone would hide most of the work), running one section in its own process group, a
short cProfile summary, and the clients of a fixed size that the overhead and scale sections use.

Linux only (reads ``/proc``): the benchmarks describe the machine they ran on.
"""
from __future__ import annotations

import cProfile
import datetime as _dt
import io
import json
import os
import platform
import pstats
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")
WORKER_BINARY = "worker_binary"


# ---- processes: who is ours, how much CPU and memory ---------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _cmd_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for p in _all_pids():
        fields = _stat_fields(p)
        if fields:
            children.setdefault(int(fields[1]), []).append(p)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def session_pids(sid: int) -> list[int]:
    """Live, non-zombie processes of session ``sid`` (a child started with
    ``start_new_session=True`` leads a session whose id is its pid; TFF's worker_binary stays in
    it even after the child exits and it is re-parented)."""
    out = []
    for p in _all_pids():
        fields = _stat_fields(p)
        if fields and int(fields[3]) == sid and fields[0] != "Z":
            out.append(p)
    return out


def worker_binaries(pids) -> list[int]:
    return [p for p in pids if _cmd_name(p).startswith(WORKER_BINARY)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (all its threads); 0 if it is gone."""
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds of ``pid`` (default: this process) plus its live descendants, TFF's
    worker_binary included."""
    pid = os.getpid() if pid is None else pid
    return cpu_seconds(pid) + sum(cpu_seconds(p) for p in descendants(pid))


def worker_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds of the TFF worker_binary processes below ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    return sum(cpu_seconds(p) for p in worker_binaries(descendants(pid)))


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_mb(pid: int | None = None) -> dict:
    """Peak (VmHWM) and current (VmRSS) resident memory in MB of this process and of its
    worker_binary descendants. ``peak_total_mb`` adds the two peaks: an upper bound on the peak
    of their sum, which is what the machine had to provide."""
    pid = os.getpid() if pid is None else pid
    workers = worker_binaries(descendants(pid))
    out = {
        "python_peak_mb": _status_kb(pid, "VmHWM") / 1024,
        "python_rss_mb": _status_kb(pid, "VmRSS") / 1024,
        "worker_binary_peak_mb": sum(_status_kb(p, "VmHWM") for p in workers) / 1024,
        "worker_binary_rss_mb": sum(_status_kb(p, "VmRSS") for p in workers) / 1024,
        "worker_binary_processes": len(workers),
    }
    out["peak_total_mb"] = out["python_peak_mb"] + out["worker_binary_peak_mb"]
    return out


class Clock:
    """Wall-clock and CPU seconds (this process tree) since creation or the last ``lap``."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), tree_cpu_seconds()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), tree_cpu_seconds()
        out = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return out


# ---- running one section in its own process group ------------------------------------------------
def end_session(sid: int, grace: float = 3.0) -> list[int]:
    """Terminate every process left in session ``sid`` (the section's Python process and TFF's
    worker_binary), by pid; SIGKILL what survives ``grace`` seconds. Returns the pids ended."""
    pids = session_pids(sid)
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + grace
    while time.time() < deadline and session_pids(sid):
        time.sleep(0.1)
    for p in session_pids(sid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def run_isolated(args: list[str], log_path: Path, timeout: float,
                 on_poll: Callable[[], None] | None = None, poll_seconds: float = 5.0,
                 env: dict | None = None) -> dict:
    """Run ``python -m benchmarks.worker <args>`` in a new session (its own process group) with
    output to ``log_path`` (never a pipe: worker_binary would hold it open), wait up to
    ``timeout`` seconds calling ``on_poll`` every ``poll_seconds``, then end whatever is left of
    the session. ``env``: variables to set in the worker's environment on top of this one's.
    Returns the exit code, wall seconds and the pids that had to be ended."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **(env or {}),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker", *args], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        timed_out = False
        try:
            while True:
                try:
                    proc.wait(timeout=poll_seconds)
                    break
                except subprocess.TimeoutExpired:
                    if on_poll:
                        on_poll()
                    if time.perf_counter() - start > timeout:
                        timed_out = True
                        break
        finally:
            ended = end_session(proc.pid)
            proc.wait()
    return {"pid": proc.pid, "returncode": None if timed_out else proc.returncode,
            "timed_out": timed_out,
            "seconds": time.perf_counter() - start,
            "leftover_processes_ended": len([p for p in ended if p != proc.pid])}


# ---- the machine -----------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """Cores, memory, CPU model, OS, package versions, date and load of the machine now."""
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = _status_like("/proc/meminfo", "MemTotal")
    mem_avail = _status_like("/proc/meminfo", "MemAvailable")
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "os": platform.platform(),
        "cpu_model": cpu_model,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_total_gb": round(mem_total / 2**20, 2) if mem_total else None,
        "memory_available_gb": round(mem_avail / 2**20, 2) if mem_avail else None,
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in
                     ("tensorflow", "tensorflow-federated", "keras", "numpy", "matplotlib")},
        "loadavg": list(os.getloadavg()),
        "niceness": os.nice(0),
    }


def _status_like(path: str, key: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class LoadSampler:
    """Samples the 1-minute load average while a section runs (how busy the machine was)."""

    def __init__(self):
        self.samples: list[float] = []

    def __call__(self):
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        s = self.samples or [os.getloadavg()[0]]
        return {"min": min(s), "mean": float(np.mean(s)), "max": max(s), "samples": len(s)}


# ---- profiles --------------------------------------------------------------------------------------
@contextmanager
def profiled(out: dict, key: str = "profile", top: int = 12, watch: dict | None = None):
    """Profile the body with cProfile; put the ``top`` functions by cumulative and by own time
    into ``out[key]`` as plain rows (function, calls, own s, cumulative s), and the cumulative
    seconds of each ``watch`` label's function (``{label: substring of "file:line(name)"}``, or
    a tuple of substrings that must all be in it)."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        out[key] = profile_rows(prof, top, watch)


def profile_rows(prof: cProfile.Profile, top: int = 12, watch: dict | None = None) -> dict:
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (filename, line, name), (cc, nc, tt, ct, _) in stats.stats.items():
        where = filename
        for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
            if marker in where:
                where = where.split(marker, 1)[1]
        rows.append({"function": f"{where}:{line}({name})" if line else name,
                     "calls": nc, "own_s": round(tt, 4), "cumulative_s": round(ct, 4)})
    total = max((r["cumulative_s"] for r in rows), default=0.0)
    breakdown = {}
    for label, pattern in (watch or {}).items():
        parts = pattern if isinstance(pattern, tuple) else (pattern,)
        hits = [r for r in rows if all(p in r["function"] for p in parts)]
        breakdown[label] = max((r["cumulative_s"] for r in hits), default=0.0)
    return {"total_s": total, "breakdown": breakdown,
            "by_cumulative": sorted(rows, key=lambda r: -r["cumulative_s"])[:top],
            "by_own_time": sorted(rows, key=lambda r: -r["own_s"])[:top]}


# ---- data --------------------------------------------------------------------------------------------
def fixed_size_clients(num_examples: int, num_clients: int, per_client: int,
                       seed: int) -> list[np.ndarray]:
    """``num_clients`` clients of exactly ``per_client`` training examples each, so the work of a
    round does not change with the number of clients. Clients are consecutive chunks of seeded
    random permutations of the training set: disjoint while ``num_clients * per_client`` fits in
    it (100 x 600 = 60,000 is an IID partition), and beyond that every example is shared by the
    same number of clients (3,000 x 600 uses each image 30 times). Nothing is copied: these are
    indices for :class:`data_utils.clients.ClientArrays`."""
    for name, value in (("num_examples", num_examples), ("num_clients", num_clients),
                        ("per_client", per_client)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if per_client > num_examples:
        raise ValueError(f"per_client={per_client} is more than the {num_examples} examples")
    rng = np.random.default_rng([int(seed), 11])
    per_perm = num_examples // per_client  # whole clients that fit in one permutation
    clients: list[np.ndarray] = []
    while len(clients) < num_clients:
        perm = rng.permutation(num_examples)
        for k in range(min(per_perm, num_clients - len(clients))):
            clients.append(np.sort(perm[k * per_client:(k + 1) * per_client]))
    return clients


def write_json(path: Path, payload: dict) -> Path:
    from data_utils.env import _jsonable, atomic_write_text

    return atomic_write_text(path, json.dumps(_jsonable(payload), indent=2) + "\n")


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None
