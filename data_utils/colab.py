"""Which runtime is this, what can run here, and what to tell the learner when it cannot.

Google Colab offers two ways to run the course:

1. the **Python 3.11 runtime** (Runtime -> Change runtime type -> Runtime version 2025.07):
   ``colab_setup.sh`` installs the pinned stack (TensorFlow 2.14 with Keras 2, TFF 0.87) and every
   notebook runs as it does locally;
2. the **default runtime** (Python 3.12/3.13, TensorFlow with Keras 3): the notebooks that do
   not need TFF run on Colab's own TensorFlow; the TFF notebooks run their TFF work in a Python
   3.11 side environment (:mod:`data_utils.sidecar`).

This module (the setup cell of every notebook calls :func:`check_runtime`) checks which case
applies (without importing TensorFlow), prints one clear message for it, and turns the failures
learners meet in public TFF and Colab threads (wrong Python, pip falling back to an ancient TFF,
TFF under Keras 3, a download with no internet, TensorBoard's extension missing) into sentences
that say what to do. Its command line is used by ``colab_setup.sh`` to decide whether an install
needs a runtime restart.
"""
from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Only the standard library at the top: colab_setup.sh runs this file as a plain script
# (``python -P data_utils/colab.py restart-check ...``) in a Python that may lack NumPy.

TFF_PYTHON = (3, 11)
TFF_VERSION = "0.87.0"
SIDECAR_PYTHONS = ((3, 12), (3, 13))
COLAB_TFF_RUNTIME = "2025.07"
# The exact clicks; colab_setup.sh prints the same words (a test checks they agree).
CHANGE_RUNTIME = (f"Runtime -> Change runtime type -> Runtime version {COLAB_TFF_RUNTIME} (Python "
                  "3.11), then Runtime -> Run all")
LOADED_MODULES_ENV_VAR = "COURSE_LOADED_MODULES"
RESTART_EXIT_CODE = 3


# ---- learner-facing messages -------------------------------------------------------------------
def message(kind: str, **facts) -> str:
    """One learner-facing message. ``kind`` is one of :data:`MESSAGE_KINDS`; ``facts`` fill in
    what was found (``python``, ``tff``, ``tensorflow``, ``keras``, ``dataset``, ``reason``)."""
    python = facts.get("python") or platform.python_version()
    texts = {
        "wrong_python": (
            f"This is Python {python}; TensorFlow Federated 0.87 (the newest release) needs "
            f"Python 3.9-3.11, and this course installs it for 3.11. In Colab: {CHANGE_RUNTIME}. "
            "On your machine: `make setup` builds the Python 3.11 environment in .venv/."),
        "ancient_tff": (
            f"TensorFlow Federated {facts.get('tff', '?')} is installed, but the course needs "
            f"{TFF_VERSION}. pip fell back to an ancient release because TFF 0.87 cannot be "
            "installed on this Python (it needs 3.9-3.11), or because its jaxlib==0.4.14 pin is gone "
            "from PyPI (the 'absl-py 0.9.0 ... metadata-generation-failed' error is the same cause). "
            f"Don't `pip install tensorflow-federated` by hand: in Colab, {CHANGE_RUNTIME} (the setup "
            "cell installs the pinned stack); locally, `make setup`."),
        "tff_keras3": (
            f"TensorFlow Federated cannot work with TensorFlow {facts.get('tensorflow', '?')}: it "
            f"brings Keras {facts.get('keras', '3')}, and TFF 0.87 needs Keras 2 (TensorFlow 2.14). "
            "Run the TFF work in the Python 3.11 side environment (data_utils.sidecar.run_job; the "
            f"setup cell builds it), or in Colab {CHANGE_RUNTIME}."),
        "offline_download": (
            f"The dataset {facts.get('dataset', '')!r} has to be downloaded, and this machine has "
            "no internet connection. Fashion-MNIST works offline: `make setup` installs Debian's "
            "dataset-fashion-mnist (or run `apt-get install dataset-fashion-mnist`); use "
            "DATASET='fashion_mnist', or run this notebook where it is online (Colab is)."),
        "tensorboard_missing": (
            "TensorBoard's notebook extension is not available here (`%load_ext tensorboard` "
            "failed). The event files are still written; open them with `tensorboard --logdir "
            "build/tensorboard` in a terminal, or install it (`pip install tensorboard`) and "
            "run the cell again. The notebook's matplotlib plots show the same curves."),
        "side_env_missing": (
            "The Python 3.11 side environment for TensorFlow Federated is not available"
            + (f" ({facts['reason']})" if facts.get("reason") else "") + ". The cells that need TFF "
            "will say so and be skipped; everything else runs. To run them too: in Colab, "
            f"{CHANGE_RUNTIME}; locally, `make setup`."),
        "no_tensorflow": (
            f"TensorFlow is not installed in this Python ({python}). Locally: `make setup` (or "
            "`make py313` for the Keras 3 environment); in Colab it is preinstalled, so this "
            "runtime is unusual: Runtime -> Disconnect and delete runtime, then Run all."),
    }
    if kind not in texts:
        raise ValueError(f"unknown message kind {kind!r}; known: {', '.join(sorted(texts))}")
    return texts[kind]


MESSAGE_KINDS = ("wrong_python", "ancient_tff", "tff_keras3", "offline_download",
                 "tensorboard_missing", "side_env_missing", "no_tensorflow")


def explain(err: BaseException | str) -> str | None:
    """The learner-facing message for a known failure (an exception or an error text, e.g. pip's
    output), or None when it is not one of them."""
    text = f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else str(err)
    low = text.lower()
    if "jaxlib==0.4.14" in low or ("absl-py" in low and "metadata-generation-failed" in low) \
            or "absl-py~=0.9" in low:
        return message("ancient_tff", tff="(an old release, or none)")
    if "no module named 'tensorflow_federated'" in low:
        info = describe_runtime(needs_tff=True, probe_side_env=False)
        return message("wrong_python" if info.python_tuple != TFF_PYTHON else "side_env_missing",
                       reason="tensorflow_federated is not installed in this Python")
    if "url fetch failure" in low or "temporary failure in name resolution" in low or \
            ("must be downloaded" in low and "no internet" in low):
        match = re.search(r"dataset '([\w-]+)'", text)
        urls = {"-idx": "fashion_mnist", "mnist.npz": "mnist", "cifar-10": "cifar10"}
        name = match.group(1) if match else next((v for k, v in urls.items() if k in text), "")
        return message("offline_download", dataset=name)
    if "not an ipython extension" in low or "no module named 'tensorboard'" in low:
        return message("tensorboard_missing")
    if "keras" in low and ("tensorflow_federated" in low or "tff" in low or "from_keras_model" in low):
        info = describe_runtime(needs_tff=True, probe_side_env=False)
        if info.keras3:
            return message("tff_keras3", tensorflow=info.tensorflow, keras=info.keras)
    return None


# ---- what this runtime is ----------------------------------------------------------------------
def installed_version(*dists: str) -> str | None:
    """The installed version of the first of ``dists`` that is installed (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in dists:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def _major_minor(v: str | None) -> tuple[int, int] | None:
    if not v:
        return None
    m = re.match(r"(\d+)\.(\d+)", v)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass
class RuntimeInfo:
    """What :func:`describe_runtime` found: versions (None when not installed), whether this is
    Colab, and how TFF work runs here (``tff_mode``), with learner-facing ``notes``."""

    python: str
    in_colab: bool
    tensorflow: str | None
    keras: str | None
    keras3: bool
    tff: str | None
    tff_here: bool              # TFF 0.87 can run in this process
    tff_mode: str               # "here", "sidecar", "unavailable" or "not needed"
    side_python: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def python_tuple(self) -> tuple[int, int]:
        return _major_minor(self.python)


def describe_runtime(needs_tff: bool = True, probe_side_env: bool = True) -> RuntimeInfo:
    """Facts about this Python (read from package metadata; TensorFlow is not imported) and how
    TFF work will run: in this process, in the side environment, or not at all."""
    py = sys.version_info[:2]
    tf_version = installed_version("tensorflow", "tensorflow-cpu", "tf-nightly")
    keras_version = installed_version("keras")
    tf_mm = _major_minor(tf_version)
    legacy = os.environ.get("TF_USE_LEGACY_KERAS") == "1" and installed_version("tf-keras")
    keras3 = bool(tf_mm and tf_mm >= (2, 16) and not legacy)
    shown_keras = keras_version or (("3" if keras3 else "2") if tf_mm else None)
    tff_version = installed_version("tensorflow-federated")
    tff_ok = bool(tff_version and _major_minor(tff_version) >= (0, 80))
    tff_here = py == TFF_PYTHON and tff_ok and not keras3
    from .env import in_colab

    notes = []
    if tf_version is None:
        notes.append(message("no_tensorflow"))
    if tff_version and not tff_ok:
        notes.append(message("ancient_tff", tff=tff_version))
    elif tff_version and keras3:
        notes.append(message("tff_keras3", tensorflow=tf_version, keras=keras_version))
    info = RuntimeInfo(platform.python_version(), in_colab(), tf_version, shown_keras, keras3,
                       tff_version, tff_here, "not needed", notes=notes)
    if not needs_tff:
        return info
    if tff_here:
        info.tff_mode = "here"
    elif probe_side_env:
        from .sidecar import SideEnvUnavailable, find_side_python

        try:
            info.side_python = str(find_side_python())
            info.tff_mode = "sidecar"
        except SideEnvUnavailable as err:
            info.tff_mode = "unavailable"
            info.notes.append(message("side_env_missing", reason=str(err).split(" (")[0]))
            if py not in (TFF_PYTHON, *SIDECAR_PYTHONS):
                info.notes.append(message("wrong_python"))
    else:
        info.tff_mode = "unavailable"
    return info


def check_runtime(needs_tff: bool = True, setup_code: int | None = None,
                  quiet: bool = False) -> RuntimeInfo:
    """The setup cell's version check: print what this runtime is and how this notebook will run
    here (one short block, with what to do when something is missing); return the facts.

    ``setup_code`` is colab_setup.sh's exit code when it ran (Colab)."""
    info = describe_runtime(needs_tff=needs_tff)
    keras = f"Keras {info.keras.split('.')[0] if info.keras else '?'}"
    lines = [f"Runtime: Python {info.python}"
             + (f", TensorFlow {info.tensorflow} ({keras})" if info.tensorflow else ", no TensorFlow")
             + (f", TFF {info.tff}" if info.tff else "") + (" · Google Colab" if info.in_colab else "")]
    if not needs_tff:
        lines.append("This notebook does not need TensorFlow Federated: it runs on this TensorFlow.")
    elif info.tff_mode == "here":
        lines.append("TensorFlow Federated runs in this runtime.")
    elif info.tff_mode == "sidecar":
        lines.append("TensorFlow Federated cannot run in this Python, so this notebook runs its TFF "
                     "work in the Python 3.11 side environment through data_utils.sidecar; "
                     "everything else runs here.")
        lines.append(f"Side environment: {info.side_python}")
    if setup_code not in (None, 0, RESTART_EXIT_CODE):
        lines.append(f"colab_setup.sh reported a problem (exit code {setup_code}, see above).")
    lines += info.notes
    if not quiet:
        print("\n".join(lines))
    return info


DRIVE_ROOT = "/content/drive"


def keep_build_in(folder) -> Path:
    """Keep this notebook's artifacts and results in ``folder`` (``folder/artifacts`` and
    ``folder/results``) instead of ``build/`` in the course's clone.

    In Colab every notebook gets a fresh runtime, so what notebook 02 or 04 saved in ``build/`` is
    gone when notebook 05 starts and 05 recomputes it. Give every notebook the same folder on
    Google Drive (``/content/drive/MyDrive/...``; Drive is mounted here when the path is under
    ``/content/drive`` and it is not mounted yet) and each reuses what the earlier ones saved;
    artifacts are only reused when their parameters match, so a shared folder cannot mix runs.
    Anywhere else any writable absolute folder works the same way (tests use a temporary one).
    Sets ``$COURSE_ARTIFACTS_DIR`` and ``$COURSE_RESULTS_DIR``, so jobs run in the side
    environment or a child process use the folder too. Returns the folder."""
    if not isinstance(folder, (str, os.PathLike)) or not str(folder).strip():
        raise ValueError(f"keep_build_in must be a folder path (a non-empty string), got {folder!r}")
    path = Path(folder).expanduser()
    if not path.is_absolute():
        raise ValueError(f"keep_build_in must be an absolute path (for Google Drive: "
                         f"'{DRIVE_ROOT}/MyDrive/fl-course'), got {str(folder)!r}")
    on_drive = path == Path(DRIVE_ROOT) or Path(DRIVE_ROOT) in path.parents
    if on_drive:
        if "google.colab" not in sys.modules:
            raise ValueError(f"keep_build_in={str(folder)!r} is on Google Drive, which only Colab "
                             "mounts; outside Colab use a local folder (or leave it None for build/)")
        if not (Path(DRIVE_ROOT) / "MyDrive").is_dir():
            from google.colab import drive  # Colab asks the learner to allow access once
            drive.mount(DRIVE_ROOT)
    for sub in ("artifacts", "results"):
        try:
            (path / sub).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"keep_build_in={str(folder)!r}: cannot create {path / sub} ({err})") from None
    os.environ["COURSE_ARTIFACTS_DIR"] = str(path / "artifacts")  # data_utils.artifacts
    os.environ["COURSE_RESULTS_DIR"] = str(path / "results")  # data_utils.env.results_dir
    print(f"Artifacts and results: {path} (kept across notebooks)")
    return path


def setup_notebook(course_dir, needs_tff: bool = True, keep_build_in_folder=None) -> RuntimeInfo:
    """What every notebook's setup cell does once the course is on ``sys.path``.

    In Colab's own kernel (``google.colab`` loaded; never under Jupyter, papermill or nbval):
    run ``colab_setup.sh`` (it installs what this notebook needs, streaming its output here),
    then restart the kernel if an install replaced a package it has loaded (exit code 3: Colab
    starts a fresh kernel, and the learner runs all again), stop with a clear error if this
    runtime cannot run the course (exit code 1), and work from the course's ``notebooks/``
    folder. Everywhere: :func:`check_runtime` prints what this runtime is and how the notebook
    runs here; its facts are returned. ``keep_build_in_folder`` (the setup cell's
    ``KEEP_BUILD_IN``): see :func:`keep_build_in`."""
    import subprocess

    course_dir = Path(course_dir)
    if keep_build_in_folder is not None:  # checked before anything is installed
        keep_build_in(keep_build_in_folder)
    setup_code = None
    if "google.colab" in sys.modules:
        loaded = ",".join(sorted({m.split(".")[0] for m in sys.modules}))
        setup = subprocess.Popen(
            ["bash", str(course_dir / "colab_setup.sh")], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, COURSE_PYTHON=sys.executable, COURSE_NEEDS_TFF=str(int(needs_tff)),
                     **{LOADED_MODULES_ENV_VAR: loaded}))
        for line in setup.stdout:
            print(line, end="")
        setup_code = setup.wait()
        if setup_code == RESTART_EXIT_CODE:  # an install replaced a package this kernel has loaded
            print("Restarting the runtime to load the new packages. Then: Runtime -> Run all.", flush=True)
            os.kill(os.getpid(), 9)  # Colab starts a fresh kernel; the setup cell then finds all in place
        if setup_code == 1:
            raise RuntimeError("This Colab runtime cannot run the course: follow the message above.")
        os.chdir(course_dir / "notebooks")
    return check_runtime(needs_tff=needs_tff, setup_code=setup_code)


def load_tensorboard_extension(ipython=None) -> bool:
    """``%load_ext tensorboard`` when it works; otherwise print :func:`message`
    ("tensorboard_missing") and return False, so the notebook goes on without it."""
    if ipython is None:
        try:
            from IPython import get_ipython
        except ImportError:
            get_ipython = None
        ipython = get_ipython() if get_ipython else None
    if ipython is None:
        print(message("tensorboard_missing"))
        return False
    try:
        import tensorboard  # noqa: F401
        ipython.run_line_magic("load_ext", "tensorboard")
        return True
    except Exception:  # noqa: BLE001 - any failure here means "no extension"
        print(message("tensorboard_missing"))
        return False


# ---- does an install need a runtime restart? ---------------------------------------------------
def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_freeze(text: str) -> dict[str, str]:
    """``pip freeze``/``uv pip freeze`` output as {normalized name: version or URL}."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for sep in ("==", " @ "):
            if sep in line:
                name, version = line.split(sep, 1)
                out[_norm(name)] = version.strip()
                break
    return out


def changed_distributions(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Distributions installed, removed or changed between two freezes."""
    return {name for name in set(before) | set(after) if before.get(name) != after.get(name)}


def modules_of(distributions: set[str]) -> set[str]:
    """Top-level module names the given distributions provide (installed ones from their
    metadata; for others, the name itself with dashes as underscores)."""
    from importlib.metadata import packages_distributions

    wanted = {_norm(d) for d in distributions}
    modules = {d.replace("-", "_") for d in wanted}
    for module, dists in packages_distributions().items():
        if any(_norm(d) in wanted for d in dists):
            modules.add(module)
    return modules


def restart_needed(before: str, after: str, loaded: str | None) -> tuple[bool, list[str]]:
    """(restart?, why) given freezes before/after an install and the kernel's loaded top-level
    modules (comma-separated, or None when unknown: then any change asks for a restart)."""
    changed = changed_distributions(parse_freeze(before), parse_freeze(after))
    if not changed:
        return False, []
    if loaded is None:
        return True, sorted(changed)
    replaced = modules_of(changed) & {m.strip() for m in loaded.split(",") if m.strip()}
    return bool(replaced), sorted(replaced)


def main(argv=None) -> int:
    """``python -P data_utils/colab.py restart-check BEFORE AFTER``: exit 3 when the install between
    the two freeze files replaced a module the kernel had loaded ($COURSE_LOADED_MODULES)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "restart-check":
        need, why = restart_needed(Path(args[1]).read_text(), Path(args[2]).read_text(),
                                   os.environ.get(LOADED_MODULES_ENV_VAR))
        if need:
            print("[colab_setup] replaced packages the running kernel had loaded: " + ", ".join(why[:12])
                  + (" ..." if len(why) > 12 else ""))
            return RESTART_EXIT_CODE
        return 0
    print("usage: python -P data_utils/colab.py restart-check BEFORE_FREEZE AFTER_FREEZE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
