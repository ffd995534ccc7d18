"""Arrays that one notebook makes and a later one reuses (the partition, initial weights, trained
models), saved with the parameters that made them. Notebook 01 saves the partition here and
notebooks 02-07 reuse it and their trained models (through :mod:`data_utils.experiment`).

A notebook asks for an artifact *with its own parameters*: a missing artifact, or one made with
other parameters, is reported as such, so the caller recomputes it instead of silently using the
wrong one."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .env import repo_root

ARTIFACTS_ENV_VAR = "COURSE_ARTIFACTS_DIR"


def artifacts_dir() -> Path:
    """Where artifacts are kept: ``$COURSE_ARTIFACTS_DIR``, else ``<repo>/build/artifacts``
    (relative paths are taken from the repository root)."""
    chosen = Path(os.environ.get(ARTIFACTS_ENV_VAR) or "build/artifacts")
    return chosen if chosen.is_absolute() else repo_root() / chosen


def artifact_path(name: str) -> Path:
    """The ``.npz`` file of the artifact ``name`` (a plain file stem: no ``/``, no leading dot)."""
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file stem (no '/', no leading '.'), got {name!r}")
    return artifacts_dir() / f"{name}.npz"


def _canonical(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=lambda v: v.item() if hasattr(v, "item") else str(v))


def save_arrays(name: str, params: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Save ``arrays`` with ``params`` to ``<artifacts>/<name>.npz`` atomically."""
    path = artifact_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, __params__=_canonical(params), **arrays)
    os.replace(tmp, path)
    return path


def load_arrays(name: str, params: dict) -> tuple[dict | None, str]:
    """The arrays saved under ``name`` if they were made with ``params``, else None, and a
    status: "loaded", "missing", or why they cannot be used."""
    path = artifact_path(name)
    if not path.is_file():
        return None, "missing"
    try:
        with np.load(path, allow_pickle=False) as data:
            saved = json.loads(str(data["__params__"]))
            if saved != json.loads(_canonical(params)):
                changed = sorted(k for k in set(saved) | set(params)
                                 if saved.get(k) != json.loads(_canonical(params)).get(k))
                return None, "made with other parameters (" + ", ".join(changed) + ")"
            return {k: data[k] for k in data.files if k != "__params__"}, "loaded"
    except Exception as err:  # noqa: BLE001 - a corrupt file is recomputed, not fatal
        return None, f"unreadable ({type(err).__name__})"


def pack_weights(weight_lists: Sequence[Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
    """Several models' weights as flat ``{"m{i}_l{j}": array}`` for :func:`save_arrays`."""
    return {f"m{i}_l{j}": np.asarray(w) for i, ws in enumerate(weight_lists) for j, w in enumerate(ws)}


def unpack_weights(arrays: dict[str, np.ndarray]) -> list[list[np.ndarray]]:
    """The inverse of :func:`pack_weights`: a list of models' weights."""
    keys = [k for k in arrays if k.startswith("m") and "_l" in k]
    n_models = 1 + max(int(k[1:].split("_")[0]) for k in keys)
    n_layers = 1 + max(int(k.split("_l")[1]) for k in keys)
    return [[arrays[f"m{i}_l{j}"] for j in range(n_layers)] for i in range(n_models)]


def cached_weights(name: str, params: dict, compute: Callable[[], list],
                   log: Callable[[str], None] = print) -> list[list[np.ndarray]]:
    """Load a list of models' weights saved as ``name`` with ``params``, or ``compute()`` them
    (a list of weight lists), save them and return them. Says which happened."""
    arrays, status = load_arrays(name, params)
    if arrays is not None:
        log(f"{name}: reused the saved artifact ({artifact_path(name).name})")
        return unpack_weights(arrays)
    log(f"{name}: {status}; computing it now")
    weights = compute()
    save_arrays(name, params, pack_weights(weights))
    return weights
