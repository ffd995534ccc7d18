"""Where am I, and how do I make this run repeatable? (used by every notebook)

Colab detection, the repository root from any working directory, one seed for Python, NumPy
and TensorFlow, the per-notebook results writer, and a stopwatch for named steps.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .validate import check_int

PACKAGE_NAME = "data_utils"
RESULTS_ENV_VAR = "COURSE_RESULTS_DIR"
DEFAULT_RESULTS_DIR = "build/results"  # the notebooks' RESULTS_DIR default


def in_colab() -> bool:
    """True inside a Google Colab runtime (the ``google.colab`` module is importable and loaded)."""
    if "google.colab" in sys.modules:
        return True
    try:  # pragma: no cover - only true in Colab
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True  # pragma: no cover


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The course repository's root: the first folder, walking up from ``start`` (default: the
    working directory), that holds the ``data_utils`` package. Falls back to this file's parent.

    Works under Jupyter (cwd = notebooks/), papermill and nbval (cwd = wherever they were started)
    and in Colab after ``git clone`` (cwd = /content).
    """
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PACKAGE_NAME / "__init__.py").is_file():
            return folder
    return Path(__file__).resolve().parent.parent


def set_seed(seed: int, deterministic_ops: bool = True) -> None:
    """Seed Python's ``random``, NumPy and TensorFlow with one number, and (by default) turn on
    TensorFlow's op determinism, so that the same seed gives the same weights and the same run."""
    seed = check_int("seed", seed, low=0, high=2**32 - 1)
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    tf.keras.utils.set_random_seed(seed)  # Python, NumPy and TF in both Keras 2 and 3
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder results JSON files go to: ``path`` if given, else ``$COURSE_RESULTS_DIR``, else
    ``<repo>/build/results``. Relative paths are taken from the repository root. The notebooks'
    default, ``"build/results"``, also follows ``$COURSE_RESULTS_DIR`` when it is set (the setup
    cell's ``KEEP_BUILD_IN`` sets it: :func:`data_utils.colab.keep_build_in`)."""
    if path is not None and Path(path) == Path(DEFAULT_RESULTS_DIR):
        path = None
    chosen = path or os.environ.get(RESULTS_ENV_VAR) or DEFAULT_RESULTS_DIR
    chosen = Path(chosen)
    if not chosen.is_absolute():
        chosen = repo_root() / chosen
    return chosen


def _jsonable(value: Any) -> Any:
    """Convert NumPy scalars/arrays, paths and tuples to plain JSON; NaN/inf become None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, then rename)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_results(notebook: str, results: Mapping[str, Any],
                  directory: str | os.PathLike | None = None) -> Path:
    """Write one notebook's key numbers to ``<results dir>/<notebook stem>.json`` atomically.

    ``notebook`` is the notebook's file name or stem (``"00_environment_check"``)."""
    stem = Path(str(notebook)).stem
    if not stem:
        raise ValueError(f"notebook must be a notebook name such as '00_environment_check', got "
                         f"{notebook!r}")
    if not isinstance(results, Mapping):
        raise ValueError(f"results must be a mapping (dict), got {type(results).__name__}")
    text = json.dumps(_jsonable(results), indent=2, sort_keys=True) + "\n"
    return atomic_write_text(results_dir(directory) / f"{stem}.json", text)


def read_results(notebook: str, directory: str | os.PathLike | None = None) -> dict | None:
    """The results a notebook wrote, or None if it has not written any."""
    path = results_dir(directory) / f"{Path(str(notebook)).stem}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def say(*parts, width: int = 100) -> None:
    """``print`` for sentences: each line longer than ``width`` characters is wrapped at word
    boundaries, so a computed conclusion reads at Colab's width (shorter lines, such as table
    rows, are printed as they are).

        >>> say("short line")
        short line
        >>> say("word " * 30, width=40)
        word word word word word word word word
        word word word word word word word word
        word word word word word word word word
        word word word word word word
    """
    import textwrap

    text = " ".join(str(p) for p in parts)
    print("\n".join(textwrap.fill(line, width) if len(line) > width else line
                    for line in text.split("\n")))


class Stopwatch:
    """Wall-clock seconds of named steps: ``with watch("baseline"): ...``; ``watch.seconds``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def __call__(self, name: str):
        watch = self

        class _Step:
            def __enter__(self):
                self.t = time.perf_counter()
                return self

            def __exit__(self, *exc):
                watch.seconds[name] = watch.seconds.get(name, 0.0) + time.perf_counter() - self.t
                return False

        return _Step()

    def total(self) -> float:
        """Seconds since the stopwatch was made."""
        return time.perf_counter() - self._start
