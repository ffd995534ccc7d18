"""Run TensorFlow Federated work in a Python 3.11 *side environment*, from any Python (notebooks
00, 04, 06 and 07 run their TFF jobs through :func:`run_job`).

TFF 0.87 (the newest release) needs Python 3.9-3.11 and Keras 2; Colab's default runtime is
Python 3.13 with Keras 3. A notebook there keeps its own TensorFlow for everything else and hands
the TFF part, a job written as ``module:function``, to a Python 3.11 interpreter that has the
course's pinned stack (``/content/tff-venv`` made by ``colab_setup.sh`` in Colab, ``.venv/``
locally)::

    from data_utils.sidecar import run_job
    result = run_job("data_utils.jobs:tff_fedavg_job", {"ROUNDS": 5, "SEED": 0})

A job is a function ``job(params: dict, progress=None) -> dict``. ``params`` arrive as JSON
values (NumPy arrays are allowed too); each ``progress({...})`` call in the job reaches the
notebook at once (a dict with ``round`` and ``rounds`` drives a progress bar, any other is
printed); the returned dict may hold JSON values and NumPy arrays (history, weights) and comes
back as the same structure. The job runs in its own process group, which is ended when the job
returns, fails, times out or the learner interrupts the cell, TFF's ``worker_binary`` included.

``mode="auto"`` runs the job in this process when TFF works here (the Python 3.11 stack), so a
notebook has one code path for both Colab runtimes. When no side environment can be found,
:class:`SideEnvUnavailable` says so plainly; notebooks catch it and carry on without TFF.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .env import repo_root
from .validate import check_choice, check_positive

SIDE_PYTHON_ENV_VAR = "COURSE_SIDE_PYTHON"   # a Python 3.11 interpreter with the course stack
SIDE_VENV_ENV_VAR = "COURSE_SIDE_VENV"       # or the virtual environment that holds one
COLAB_SIDE_VENV = Path("/content/tff-venv")  # where colab_setup.sh builds it in Colab
EVENT_PREFIX = "@@course-sidecar "           # marks the job's progress lines in its output
MODES = ("auto", "inprocess", "sidecar")
_ARRAY_KEY = "__ndarray__"
_TUPLE_KEY = "__tuple__"


class SideEnvUnavailable(RuntimeError):
    """No Python 3.11 side environment with TensorFlow Federated could be found or started."""


class SidecarJobError(RuntimeError):
    """The job raised an exception (or its process died); carries the side's traceback."""

    def __init__(self, message: str, remote_type: str = "", remote_traceback: str = ""):
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class SidecarTimeout(TimeoutError):
    """The job ran longer than its ``timeout``; it was stopped."""


# ---- results and parameters across the process boundary ----------------------------------------
def encode(value: Any, arrays: dict[str, np.ndarray] | None = None) -> tuple[Any, dict]:
    """Split ``value`` into JSON-able data and a dict of NumPy arrays (for a ``.npz`` file).

    Arrays become ``{"__ndarray__": key}`` references; tuples ``{"__tuple__": [...]}``; NumPy
    scalars Python numbers. Anything else that JSON cannot hold is a ValueError naming its path."""
    arrays = {} if arrays is None else arrays

    def walk(v, path):
        if isinstance(v, np.ndarray):
            if v.dtype == object:
                raise ValueError(f"{path}: object arrays cannot be sent; use numeric arrays")
            key = f"a{len(arrays)}"
            arrays[key] = v
            return {_ARRAY_KEY: key}
        if isinstance(v, dict):
            out = {}
            for k, item in v.items():
                if not isinstance(k, str):
                    raise ValueError(f"{path}: dict keys must be strings, got {k!r}")
                if k in (_ARRAY_KEY, _TUPLE_KEY):
                    raise ValueError(f"{path}: the key {k!r} is reserved")
                out[k] = walk(item, f"{path}.{k}")
            return out
        if isinstance(v, tuple):
            return {_TUPLE_KEY: [walk(item, f"{path}[{i}]") for i, item in enumerate(v)]}
        if isinstance(v, list):
            return [walk(item, f"{path}[{i}]") for i, item in enumerate(v)]
        if isinstance(v, (np.bool_, bool)):
            return bool(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.floating):
            return float(v)
        if v is None or isinstance(v, (str, int, float)):
            return v
        if isinstance(v, Path):
            return str(v)
        if hasattr(v, "numpy"):  # a TensorFlow tensor
            return walk(np.asarray(v.numpy()), path)
        raise ValueError(f"{path}: a {type(v).__name__} cannot be sent between processes; "
                         "use JSON values (dict, list, str, number, bool, None) or NumPy arrays")

    return walk(value, "result"), arrays


def decode(data: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(data, dict):
        if set(data) == {_ARRAY_KEY}:
            return arrays[data[_ARRAY_KEY]]
        if set(data) == {_TUPLE_KEY}:
            return tuple(decode(v, arrays) for v in data[_TUPLE_KEY])
        return {k: decode(v, arrays) for k, v in data.items()}
    if isinstance(data, list):
        return [decode(v, arrays) for v in data]
    return data


def save_payload(stem: str | os.PathLike, value: Any) -> None:
    """Write ``value`` to ``<stem>.json`` and ``<stem>.npz``."""
    data, arrays = encode(value)
    stem = Path(stem)
    np.savez(stem.with_suffix(".npz"), **arrays)
    stem.with_suffix(".json").write_text(json.dumps(data, allow_nan=True), encoding="utf-8")


def load_payload(stem: str | os.PathLike) -> Any:
    """The value :func:`save_payload` wrote to ``<stem>.json`` and ``<stem>.npz``."""
    stem = Path(stem)
    data = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    with np.load(stem.with_suffix(".npz"), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return decode(data, arrays)


# ---- finding the side environment --------------------------------------------------------------
_PROBE = ("import sys, importlib.util as u; "
          "print(sys.version_info[0], sys.version_info[1], "
          "u.find_spec('tensorflow_federated') is not None)")
_probe_cache: dict[str, tuple] = {}


def probe_python(python: str | os.PathLike) -> tuple[tuple[int, int] | None, bool, str]:
    """(version, has_tff, problem) for an interpreter, without importing TensorFlow."""
    python = str(python)
    if python in _probe_cache:
        return _probe_cache[python]
    if not Path(python).is_file():
        result = (None, False, f"{python} does not exist")
    else:
        try:
            out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True,
                                 timeout=60, env=_child_env(), stdin=subprocess.DEVNULL)
            major, minor, has = out.stdout.split()
            result = ((int(major), int(minor)), has == "True", "")
        except (OSError, ValueError, subprocess.SubprocessError) as err:
            result = (None, False, f"{python} could not be started ({type(err).__name__}: {err})")
    _probe_cache[python] = result
    return result


def side_python_candidates() -> list[Path]:
    """Where a side environment is looked for, in order: ``$COURSE_SIDE_PYTHON``,
    ``$COURSE_SIDE_VENV/bin/python``, Colab's ``/content/tff-venv``, the repository's ``.venv``."""
    out = []
    if os.environ.get(SIDE_PYTHON_ENV_VAR):
        out.append(Path(os.environ[SIDE_PYTHON_ENV_VAR]))
    if os.environ.get(SIDE_VENV_ENV_VAR):
        out.append(Path(os.environ[SIDE_VENV_ENV_VAR]) / "bin" / "python")
    out += [COLAB_SIDE_VENV / "bin" / "python", repo_root() / ".venv" / "bin" / "python"]
    return out


def find_side_python(python: str | os.PathLike | None = None) -> Path:
    """The first Python 3.11 interpreter with TensorFlow Federated installed among ``python`` (if
    given) or :func:`side_python_candidates`. Raises :class:`SideEnvUnavailable` saying what was
    tried and how to make one."""
    candidates = [Path(python)] if python else side_python_candidates()
    tried = []
    for cand in candidates:
        version, has_tff, problem = probe_python(cand)
        if version == (3, 11) and has_tff:
            return cand
        if problem:
            tried.append(problem)
        elif version != (3, 11):
            tried.append(f"{cand} is Python {version[0]}.{version[1]}, not 3.11")
        else:
            tried.append(f"{cand} has no tensorflow_federated")
    raise SideEnvUnavailable(
        "No Python 3.11 side environment with TensorFlow Federated was found ("
        + "; ".join(tried) + "). In Colab, the setup cell builds one with colab_setup.sh "
        "(or switch to the Python 3.11 runtime: Runtime -> Change runtime type -> Runtime "
        "version 2025.07); locally, run `make setup`.")


def tff_available_here() -> bool:
    """True when TFF 0.87 can run in this process: Python 3.11 with tensorflow_federated
    installed (checked without importing it)."""
    import importlib.util

    return sys.version_info[:2] == (3, 11) and importlib.util.find_spec("tensorflow_federated") is not None


# ---- process groups ----------------------------------------------------------------------------
def _proc_table() -> list[tuple[int, str, int, str]]:
    """(pid, state, session id, command name) of every process, from /proc (Linux)."""
    rows = []
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.find("(") + 1:stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2:].split()
        rows.append((int(entry.name), fields[0], int(fields[3]), name))  # state, ..., session
    return rows


def session_members(sid: int) -> list[tuple[int, str]]:
    """Live (not zombie) processes of session ``sid``: (pid, command name)."""
    return [(pid, name) for pid, state, session, name in _proc_table()
            if session == sid and state != "Z" and pid != os.getpid()]


def stop_session(sid: int, grace: float = 3.0) -> list[str]:
    """End every process of the session/process group ``sid`` (the job and what it started, TFF's
    worker_binary included): SIGTERM, then SIGKILL after ``grace`` seconds. Returns the names
    of the processes that were still running."""
    found = [name for _, name in session_members(sid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(sid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for pid, _ in session_members(sid):  # members that left the group but kept the session
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and session_members(sid):
            time.sleep(0.05)
        if not session_members(sid):
            break
    return found


# ---- showing progress --------------------------------------------------------------------------
class ProgressDisplay:
    """Shows a job's progress events: a tqdm bar for ``{"round": r, "rounds": n, ...}`` events
    (the other numbers as its postfix), a printed line for any other event."""

    def __init__(self, desc: str = "job"):
        self.desc, self.bar = desc, None

    def __call__(self, event: dict) -> None:
        if isinstance(event, dict) and "round" in event and "rounds" in event:
            if self.bar is None:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=int(event["rounds"]), desc=self.desc, unit="round",
                                bar_format="{desc}: {n_fmt}/{total_fmt} rounds |{bar}| "
                                           "[{elapsed}] {postfix}")
            self.bar.n = int(event["round"])
            self.bar.set_postfix({k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in event.items()
                                  if k not in ("round", "rounds") and isinstance(v, (int, float))})
            self.bar.refresh()
        else:
            print(event if isinstance(event, str) else json.dumps(event), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---- running a job -----------------------------------------------------------------------------
def _check_target(target: str) -> tuple[str, str]:
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    module, name = target.split(":")
    return module, name


def _resolve(target: str) -> Callable:
    module, name = _check_target(target)
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"target must name a function of {module}, got {target!r}")
    return fn


def _call(fn: Callable, params: dict, progress: Callable) -> Any:
    try:
        takes_progress = "progress" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_progress = False
    return fn(params, progress=progress) if takes_progress else fn(params)


def _child_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "MPLBACKEND")}
    env.update(PYTHONPATH=str(repo_root()), PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
               TQDM_DISABLE="1",  # the notebook draws the progress bar, not the job
               # tensorboard 2.14 imports pkg_resources; its deprecation notice is noise here
               PYTHONWARNINGS="ignore:pkg_resources is deprecated:UserWarning")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update(extra or {})
    return env


last_run: dict = {}  # facts about the latest sidecar run (python, pid, seconds, leftovers ended)


def run_job(target: str, params: dict | None = None, *, mode: str = "auto",
            python: str | os.PathLike | None = None, timeout: float | None = None,
            on_progress: Callable[[dict], None] | None = None, show: bool = True,
            echo: bool = True, desc: str | None = None, cwd: str | os.PathLike | None = None,
            keep_dir: bool = False) -> Any:
    """Run ``target`` (``"package.module:function"``) with ``params`` and return its result.

    mode: ``"auto"`` (in this process when TFF works here, else in the side environment),
        ``"inprocess"`` or ``"sidecar"``.
    python: the side interpreter (default: :func:`find_side_python`).
    timeout: seconds before a side-environment job is stopped and :class:`SidecarTimeout`
        raised (a job in this process cannot be stopped from outside: it has no timeout).
    on_progress: called with every progress dict (e.g. to collect a live history);
    show: draw them (progress bar / printed lines); echo: print the job's other output lines.

    Raises :class:`SideEnvUnavailable` (no side environment), :class:`SidecarJobError` (the job
    failed; its traceback is in the message) or :class:`SidecarTimeout`. KeyboardInterrupt stops
    the job's whole process group before it propagates."""
    check_choice("mode", mode, MODES)
    _check_target(target)
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict, got {type(params).__name__}")
    timeout = check_positive("timeout", timeout, allow_none=True)  # seconds
    encode(params)  # fail here, with the path of the bad value, not in the other process
    display = ProgressDisplay(desc or target.split(":")[-1]) if show else None

    def progress(event):
        event = decode(*encode(event))  # plain values, whichever side the event came from
        if on_progress:
            on_progress(event)
        if display:
            display(event)

    try:
        if mode == "inprocess" or (mode == "auto" and python is None and tff_available_here()):
            result = _call(_resolve(target), params, progress)
            return decode(*encode(result))  # the same types as from the side environment
        return _run_in_side_env(target, params, find_side_python(python), timeout, progress,
                                echo, cwd, keep_dir)
    finally:
        if display:
            display.close()


def _run_in_side_env(target, params, python, timeout, progress, echo, cwd, keep_dir):
    workdir = Path(tempfile.mkdtemp(prefix="course-sidecar-"))
    save_payload(workdir / "params", params)
    cmd = [str(python), "-u", "-m", "data_utils.sidecar", "worker", target, str(workdir)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            cwd=str(cwd or os.getcwd()), env=_child_env())
    last_run.clear()
    last_run.update(python=str(python), pid=proc.pid, target=target, workdir=str(workdir))
    lines: queue.Queue = queue.Queue()

    def reader():  # a thread, so the main thread can watch the clock and the process
        for raw in iter(proc.stdout.readline, b""):
            lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        lines.put(None)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    tail: list[str] = []

    def handle(line: str) -> None:
        if line.startswith(EVENT_PREFIX):
            try:
                event = json.loads(line[len(EVENT_PREFIX):])
            except json.JSONDecodeError:
                event = None
            if event is not None:
                progress(event)
                return
        tail.append(line)
        del tail[:-40]
        if echo and line.strip():
            print(line, flush=True)

    outcome = "stopped"
    try:
        # TFF's worker_binary keeps the pipe open after the job exits, so wait for the job
        # process, not for the end of its output.
        while proc.poll() is None:
            if timeout is not None and time.monotonic() - start > timeout:
                outcome = "timeout"
                break
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is not None:
                handle(line)
        else:
            outcome = "exited"
    finally:
        leftovers = stop_session(proc.pid)  # the job's process group: worker_binary included
        proc.wait()
        thread.join(timeout=5)
        while True:  # what the job printed before it ended
            try:
                line = lines.get_nowait()
            except queue.Empty:
                break
            if line is not None and outcome == "exited":
                handle(line)
        last_run.update(seconds=time.monotonic() - start, returncode=proc.returncode,
                        ended=leftovers, outcome=outcome)
        result_ready = outcome == "exited" and (workdir / "result.json").is_file()
        error = (json.loads((workdir / "error.json").read_text())
                 if outcome == "exited" and (workdir / "error.json").is_file() else None)
        result = load_payload(workdir / "result") if result_ready else None
        if not keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    if outcome == "timeout":
        raise SidecarTimeout(f"{target} ran longer than {timeout:g} s in the side environment "
                             "and was stopped (its processes, worker_binary included, are ended)")
    if error is not None:
        raise SidecarJobError(
            f"{target} failed in the side environment ({python}): {error['type']}: "
            f"{error['message']}\n--- traceback from the side environment ---\n{error['traceback']}",
            error["type"], error["traceback"])
    if result_ready:
        return result
    raise SidecarJobError(
        f"{target} ended without a result (exit code {proc.returncode}) in the side environment "
        f"({python}). Its last output lines:\n" + "\n".join(tail[-15:]))


# ---- the side of the job -----------------------------------------------------------------------
def _worker_main(target: str, workdir: str) -> int:
    """Entry point in the side environment: run the job, write result.* or error.json."""
    workdir = Path(workdir)

    def progress(event):
        data, _ = encode(event)  # small dicts of numbers; arrays do not belong in progress
        print(EVENT_PREFIX + json.dumps(data), flush=True)

    try:
        params = load_payload(workdir / "params")
        result = _call(_resolve(target), params, progress)
        save_payload(workdir / "partial", result)
        for suffix in (".npz", ".json"):  # result.json last: its presence means "complete"
            os.replace(workdir / f"partial{suffix}", workdir / f"result{suffix}")
        return 0
    except BaseException as err:  # noqa: BLE001 - report everything, KeyboardInterrupt included
        (workdir / "error.json").write_text(json.dumps({
            "type": type(err).__name__, "message": str(err),
            "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
        }), encoding="utf-8")
        return 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        # AutoGraph writes every function it converts to a file in the temporary folder and
        # removes them at exit, which os._exit below skips: about 100 files per TFF job were left
        # in /tmp. This process's temporary files go to the job's folder, which the parent removes
        # (also after a timeout or Ctrl-C).
        tempfile.tempdir = str(Path(sys.argv[3]) / "tmp")
        os.makedirs(tempfile.tempdir, exist_ok=True)
        code = _worker_main(sys.argv[2], sys.argv[3])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # skip interpreter teardown: the parent ends worker_binary anyway
    print("usage: python -m data_utils.sidecar worker package.module:function WORKDIR", file=sys.stderr)
    sys.exit(2)
