"""Colab-first: colab_setup.sh on stand-ins for Colab's runtimes, the notebook header template,
learner-facing messages, and the side-environment runner (data_utils.sidecar).

Stand-ins: a fake ``google.colab`` package on PYTHONPATH makes a Python look like Colab's; a fake
``tensorflow-<version>.dist-info`` makes it look like it has Colab's TensorFlow; the Python's
version is real (pyenv's interpreters)."""
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_utils import colab, sidecar

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "colab_setup.sh"
CLICK = "Runtime -> Change runtime type -> Runtime version 2025.07 (Python 3.11), then Runtime -> Run all"
spec = importlib.util.spec_from_file_location("notebook_header", ROOT / "scripts" / "notebook_header.py")
header = importlib.util.module_from_spec(spec)
spec.loader.exec_module(header)


def pyenv_python(version: str) -> str | None:
    """A real interpreter of ``version`` (e.g. "3.10") from pyenv or the PATH, or None."""
    roots = [os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")]
    for root in roots:
        for path in sorted(glob.glob(f"{root}/versions/{version}*/bin/python3")):
            return path
    return shutil.which(f"python{version}")


# What Colab's default runtime has preinstalled that the course uses (besides TensorFlow).
COLAB_PREINSTALLED = {"matplotlib": "3.10.0", "scikit-learn": "1.6.1", "tqdm": "4.67.1"}


def fake_colab(tmp_path: Path, tensorflow: str | None = None, preinstalled: dict | None = None) -> Path:
    """A folder that, on PYTHONPATH, makes any Python 3 look like a Colab runtime: the
    ``google.colab`` module, and package metadata for TensorFlow and ``preinstalled``."""
    site = tmp_path / "fake_colab"
    (site / "google" / "colab").mkdir(parents=True, exist_ok=True)
    (site / "google" / "colab" / "__init__.py").write_text("# stand-in for Colab's module\n")
    dists = dict(preinstalled or {})
    if tensorflow:
        dists["tensorflow"] = tensorflow
    for name, version in dists.items():
        dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
        dist.mkdir(exist_ok=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return site


# The course's own uv, which `make setup` installs into .venv: the only uv the tests may use.
COURSE_UV = ROOT / ".venv" / "bin" / "uv"


def path_without_uv() -> str:
    """This machine's PATH minus every folder that holds a ``uv``: a new machine has none, so a
    test must not pass because this one does."""
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not os.access(os.path.join(d, "uv"), os.X_OK))


def colab_path(tmp_path: Path) -> str:
    """A PATH as on Colab, which preinstalls ``uv``: the course's own uv first, no other."""
    assert COURSE_UV.is_file(), "the course's uv is missing: run `make setup` first"
    bin_dir = tmp_path / "colab_bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "uv").exists():
        (bin_dir / "uv").symlink_to(COURSE_UV)
    return os.pathsep.join([str(bin_dir), path_without_uv()])


def colab_venv(base: str, venv: Path, pip: bool = True) -> str:
    """A fresh virtual environment of ``base`` standing in for a Colab runtime's Python, which
    has pip (``pip=False``: a Python without it, for the no-installer path)."""
    args = [base, "-m", "venv"] + ([] if pip else ["--without-pip"]) + [str(venv)]
    subprocess.run(args, check=True)
    return str(venv / "bin" / "python")


def run_setup(python: str, site: Path | None, timeout: float = 600, path: str | None = None,
              **env) -> subprocess.CompletedProcess:
    """colab_setup.sh for the Python ``python``; ``path`` is its PATH (default: this machine's
    without any uv; give ``colab_path(...)`` for a runtime that has Colab's uv)."""
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    full.update(COURSE_PYTHON=python, PATH=path if path is not None else path_without_uv(),
                **{k: str(v) for k, v in env.items()})
    if site is not None:
        full["PYTHONPATH"] = str(site)
    return subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, env=full,
                          timeout=timeout, stdin=subprocess.DEVNULL)


# ---- colab_setup.sh ----------------------------------------------------------------------------
def test_the_click_path_is_the_same_in_the_script_and_the_notebooks():
    assert colab.CHANGE_RUNTIME == CLICK
    assert f'CLICK="{CLICK}"' in SETUP.read_text()


def test_wrong_python_in_colab_says_exactly_what_to_click(tmp_path):
    python = pyenv_python("3.10") or pyenv_python("3.9")
    if python is None:
        pytest.skip("no Python 3.9/3.10 interpreter to stand in for a wrong Colab runtime")
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    out = run_setup(python, fake_colab(tmp_path), timeout=60)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"[colab_setup] This runtime has Python {version}. The course runs on Python 3.11 "
        "(TensorFlow Federated's last release needs 3.9-3.11),",
        f"[colab_setup] or on Colab's default Python 3.12/3.13 with TFF in a side environment; not on {version}.",
        f"[colab_setup] Click: {CLICK}",
    ]


def test_outside_colab_it_refuses_and_points_at_make_setup(tmp_path):
    out = run_setup(sys.executable, None, timeout=60)
    assert out.returncode == 1
    assert "not a Google Colab runtime" in out.stdout and "make setup" in out.stdout


def default_runtime_standin(tmp_path, with_dp_accounting: bool = True, pip: bool = True):
    """Colab's default runtime: a fresh Python 3.13 (or 3.12) virtual environment (so that an
    install can only touch it) that looks like Colab with TensorFlow 2.21 and Colab's packages.
    Like Colab's, it has pip; run it with ``path=colab_path(tmp_path)`` for Colab's uv."""
    base = pyenv_python("3.13") or pyenv_python("3.12")
    if base is None:
        pytest.skip("no Python 3.12/3.13 interpreter to stand in for Colab's default runtime")
    python = colab_venv(base, tmp_path / "colab313", pip=pip)
    pre = dict(COLAB_PREINSTALLED, **({"dp-accounting": "0.6.0"} if with_dp_accounting else {}))
    return python, fake_colab(tmp_path, tensorflow="2.21.0", preinstalled=pre)


def test_default_runtime_without_tff_leaves_colab_alone(tmp_path):
    python, site = default_runtime_standin(tmp_path)
    out = run_setup(python, site, timeout=60, COURSE_NEEDS_TFF=0, COURSE_SIDE_VENV=tmp_path / "never")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "TensorFlow 2.21.0" in out.stdout and "no side environment needed" in out.stdout
    assert "Installing" not in out.stdout and not (tmp_path / "never").exists()


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="run once, by the Python 3.11 test run")
def test_default_runtime_installs_missing_course_packages_and_restarts_only_if_loaded(tmp_path):
    """Colab's default runtime lacks dp-accounting (data_utils.privacy): it is installed there."""
    python, site = default_runtime_standin(tmp_path, with_dp_accounting=False)
    path = colab_path(tmp_path)
    out = run_setup(python, site, path=path, COURSE_NEEDS_TFF=0, COURSE_LOADED_MODULES="os,sys")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Installing what the course needs besides TensorFlow: dp-accounting" in out.stdout
    check = subprocess.run([python, "-c", "import dp_accounting"], capture_output=True)
    assert check.returncode == 0
    again = run_setup(python, site, path=path, COURSE_NEEDS_TFF=0,
                      COURSE_LOADED_MODULES="os,sys,dp_accounting")
    assert again.returncode == 0 and "Installing" not in again.stdout


def test_without_uv_or_pip_it_says_which_is_missing_and_what_to_do(tmp_path):
    """Somewhere that is not quite Colab: no uv on PATH and a Python without pip. Nothing can be
    installed, and the message names both and the way out."""
    python, site = default_runtime_standin(tmp_path, with_dp_accounting=False, pip=False)
    out = run_setup(python, site, timeout=60, path=path_without_uv(), COURSE_NEEDS_TFF=0)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"neither uv (not on PATH) nor pip (not in {python}) is here" in out.stdout
    assert "Disconnect and delete runtime" in out.stdout and "ensurepip" in out.stdout
    assert "ERROR: installing dp-accounting failed" in out.stdout
    assert not (tmp_path / "colab313" / "bin" / "uv").exists()


def test_default_runtime_side_env_failure_is_exit_2_with_the_way_out(tmp_path):
    python, site = default_runtime_standin(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = run_setup(python, site, timeout=120, COURSE_NEEDS_TFF=1, COURSE_SIDE_VENV=blocker / "venv")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "will be skipped" in out.stdout and CLICK in out.stdout


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="run once, by the Python 3.11 test run")
def test_default_runtime_builds_the_side_env_and_the_runner_uses_it(tmp_path):
    """The whole default-runtime path: colab_setup.sh builds a Python 3.11 side environment with
    the pinned stack (from uv's cache when warm), a second run finds it ready, and the runner
    starts jobs in it."""
    python, site = default_runtime_standin(tmp_path)
    venv = tmp_path / "tff-venv"
    start = time.perf_counter()
    path = colab_path(tmp_path)
    out = run_setup(python, site, path=path, COURSE_NEEDS_TFF=1, COURSE_SIDE_VENV=venv)
    print(f"side environment built in {time.perf_counter() - start:.1f} s")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (venv / "bin" / "python").is_file()
    version, has_tff, problem = sidecar.probe_python(venv / "bin" / "python")
    assert (version, has_tff, problem) == ((3, 11), True, "")
    again = run_setup(python, site, path=path, timeout=60, COURSE_NEEDS_TFF=1, COURSE_SIDE_VENV=venv)
    assert again.returncode == 0 and "ready" in again.stdout
    result = sidecar.run_job("tests.sidecar_jobs:selftest_job", {"steps": 1}, mode="sidecar",
                             python=venv / "bin" / "python", show=False, echo=False)
    assert result["python"] == [3, 11]


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="run once, by the Python 3.11 test run")
def test_python311_runtime_installs_the_pinned_stack_and_asks_for_a_restart_only_when_needed(tmp_path):
    """Colab's Python 3.11 runtime, stood in for by a fresh 3.11 virtual environment."""
    python311 = pyenv_python("3.11") or sys.executable
    py = colab_venv(python311, tmp_path / "colab311")
    site, path = fake_colab(tmp_path), colab_path(tmp_path)
    # 1. nothing the kernel had loaded is replaced: ready, no restart
    first = run_setup(py, site, path=path, COURSE_LOADED_MODULES="os,sys,IPython")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installed: TensorFlow 2.14.1, TensorFlow Federated 0.87.0" in first.stdout
    # 2. an install replaces a package the kernel had loaded (tqdm here): restart (exit 3)
    subprocess.run([str(COURSE_UV), "pip", "uninstall", "-q", "--python", py, "tqdm"], check=True)
    second = run_setup(py, site, path=path, COURSE_LOADED_MODULES="os,sys,tqdm")
    assert second.returncode == 3, second.stdout + second.stderr
    assert "tqdm" in second.stdout and "Restart needed" in second.stdout
    # 3. after the restart: everything in place, nothing changes, exit 0
    third = run_setup(py, site, path=path, COURSE_LOADED_MODULES="os,sys,tqdm,numpy,tensorflow")
    assert third.returncode == 0, third.stdout + third.stderr


def test_restart_needed_maps_distributions_to_loaded_modules():
    before = "numpy==2.0.2\nscikit-learn==1.6.1\ntqdm==4.67.1\n"
    after = "numpy==1.25.2\nscikit-learn==1.6.1\ntqdm==4.67.1\ntensorflow==2.14.1\n"
    assert colab.changed_distributions(colab.parse_freeze(before), colab.parse_freeze(after)) == \
        {"numpy", "tensorflow"}
    assert colab.restart_needed(before, after, "os,sys,numpy") == (True, ["numpy"])
    assert colab.restart_needed(before, after, "os,sys,sklearn") == (False, [])
    assert colab.restart_needed(before, before, None) == (False, [])
    assert colab.restart_needed(before, after, None)[0] is True  # unknown kernel: be safe
    assert "sklearn" in colab.modules_of({"scikit-learn"})


# ---- the header template ------------------------------------------------------------------------
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_header_points_badges_and_clone_at_the_given_repo_and_is_idempotent(tmp_path):
    config = {"github_repo": "someone/their-fork", "ref": "v2.0"}
    nb_path = tmp_path / "00_environment_check.ipynb"
    shutil.copy(ROOT / "notebooks" / "00_environment_check.ipynb", nb_path)
    assert header.apply_header(nb_path, config) is True
    once = nb_path.read_text()
    assert header.apply_header(nb_path, config) is False and nb_path.read_text() == once
    nb = nbformat.reads(once, as_version=4)
    assert "colab.research.google.com/github/someone/their-fork/blob/v2.0/notebooks/" \
           "00_environment_check.ipynb" in nb.cells[0].source
    assert 'COURSE_REPO, COURSE_REF, NEEDS_TFF = "someone/their-fork", "v2.0", True' in nb.cells[1].source
    assert len(nb.cells[1].source.rstrip("\n").splitlines()) <= 12   # issue 14: a setup cell of at most 12 lines
    assert nb.cells[0].source.startswith("# 00 · Environment check\n")
    assert [c.metadata.get("tags") for c in nb.cells[:2]] == [["course-header"], ["course-setup"]]
    compile(nb.cells[1].source, "setup-cell", "exec")  # the template renders to valid Python
    # the table for the README lists it with the fork's badge
    table = header.colab_table([nb_path], config)
    assert "someone/their-fork/blob/v2.0/notebooks/00_environment_check.ipynb" in table


def test_an_untagged_title_cell_becomes_the_header_once(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 09 · Something new"),
                                         nbformat.v4.new_code_cell("x = 1")])
    path = tmp_path / "09_something_new.ipynb"
    nbformat.write(nb, path)
    header.apply_header(path, {"github_repo": "a/b", "ref": "main"})
    cells = nbformat.read(path, as_version=4).cells
    assert len(cells) == 3 and cells[0].source.startswith("# 09 · Something new")
    assert cells[2].source == "x = 1"
    assert '"a/b", "main", False' in cells[1].source   # COURSE_REPO, COURSE_REF, NEEDS_TFF


@pytest.mark.parametrize("repo", ["", "noslash", "a/b/c", "a b/c", "../x"])
def test_bad_repo_names_are_rejected(repo):
    with pytest.raises(ValueError, match="owner/name"):
        header.load_config(repo or "/", None)


SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("nb_path", NOTEBOOKS + SOLUTIONS, ids=[p.stem for p in NOTEBOOKS + SOLUTIONS])
def test_committed_notebooks_have_current_headers_and_no_outputs(nb_path):
    config = header.load_config(None, None)
    text = nb_path.read_text(encoding="utf-8")
    assert header.render_any(nb_path, config) == text, \
        f"{nb_path.name}: run `make headers` (scripts/notebook_header.py) and commit the result"
    nb = json.loads(text)
    assert "colab" not in nb["metadata"] and "widgets" not in nb["metadata"]
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


def test_the_colab_tables_in_the_docs_are_current():
    config = header.load_config(None, None)
    stale = header.update_tables(header.colab_table(NOTEBOOKS, config), check=True)
    assert stale == [], f"{stale}: run `make headers` and commit the result"


def test_setup_cell_outside_colab_finds_the_course_and_checks_the_runtime(tmp_path):
    cell = header.render(ROOT / "notebooks" / "00_environment_check.ipynb",
                         {"github_repo": "a/b", "ref": "main"})
    source = nbformat.reads(cell, as_version=4).cells[1].source
    script = tmp_path / "setup_cell.py"
    script.write_text(source + "\nprint('MODE', RUNTIME.tff_mode, COURSE_DIR)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT / "notebooks", capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert f"MODE {'here' if sidecar.tff_available_here() else 'sidecar'} {ROOT}" in out.stdout
    assert out.stdout.startswith(f"Runtime: Python {sys.version.split()[0]}")


def run_setup_cell_in_fake_colab(tmp_path, stub_exit: int, notebook="01_data_preparation.ipynb"):
    """Execute a notebook's setup cell as Colab would: google.colab loaded, the course already
    cloned under a stand-in for /content, and colab_setup.sh replaced by a stub that records its
    environment and exits with ``stub_exit``."""
    content = tmp_path / "content"
    course = content / "fork"
    course.mkdir(parents=True)
    for name in ("data_utils", "notebooks"):
        (course / name).symlink_to(ROOT / name)
    record = tmp_path / "env.json"
    (course / "colab_setup.sh").write_text(
        "echo '[colab_setup] stub'\n"
        f"python3 -c 'import json, os; json.dump(dict(os.environ), open(\"{record}\", \"w\"))'\n"
        f"exit {stub_exit}\n")
    nb_path = ROOT / "notebooks" / notebook
    if not nb_path.is_file():
        nb_path = ROOT / "notebooks" / "00_environment_check.ipynb"
    source = nbformat.reads(header.render(nb_path, {"github_repo": "someone/fork", "ref": "main"}),
                            as_version=4).cells[1].source
    assert 'Path("/content")' in source
    script = tmp_path / "cell.py"
    script.write_text("import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"
                      + source.replace('Path("/content")', f'Path("{content}")')
                      + "\nprint('CWD', __import__('os').getcwd())\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env=env)
    recorded = json.loads(record.read_text()) if record.is_file() else {}
    return out, recorded, course


def test_setup_cell_in_colab_runs_colab_setup_with_the_kernels_facts_and_goes_on(tmp_path):
    out, env, course = run_setup_cell_in_fake_colab(tmp_path, 0)
    assert out.returncode == 0, out.stderr
    assert "[colab_setup] stub" in out.stdout and f"CWD {(course / 'notebooks').resolve()}" in out.stdout
    assert env["COURSE_PYTHON"] == sys.executable and env["COURSE_NEEDS_TFF"] in ("0", "1")
    assert {"os", "sys", "subprocess"} <= set(env["COURSE_LOADED_MODULES"].split(","))


def test_setup_cell_in_colab_restarts_only_on_exit_3(tmp_path):
    out, _, _ = run_setup_cell_in_fake_colab(tmp_path, 3)
    assert out.returncode == -9, (out.returncode, out.stdout, out.stderr)  # the kernel killed itself
    assert "Restarting the runtime" in out.stdout


@pytest.mark.parametrize("code, expect", [(1, "cannot run the course"), (2, "reported a problem")])
def test_setup_cell_in_colab_stops_on_1_and_goes_on_after_2(tmp_path, code, expect):
    out, _, _ = run_setup_cell_in_fake_colab(tmp_path, code)
    assert expect in out.stdout + out.stderr
    assert (out.returncode != 0) == (code == 1)


# ---- learner-facing messages ---------------------------------------------------------------------
@pytest.mark.parametrize("text, kind", [
    ("ERROR: No matching distribution found for jaxlib==0.4.14", "ancient_tff"),
    ("Collecting absl-py~=0.9.0 ... error: metadata-generation-failed", "ancient_tff"),
    ("Exception: URL fetch failure on https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
     "train-labels-idx1-ubyte.gz: None -- [Errno -3] Temporary failure in name resolution", "offline_download"),
    ("The tensorboard module is not an IPython extension.", "tensorboard_missing"),
    ("ModuleNotFoundError: No module named 'tensorboard'", "tensorboard_missing"),
])
def test_known_failures_get_the_learner_facing_message(text, kind):
    assert colab.explain(text) == colab.message(kind, **({"tff": "(an old release, or none)"}
                                                        if kind == "ancient_tff" else
                                                        {"dataset": "fashion_mnist"}
                                                        if kind == "offline_download" else {}))


def test_missing_tff_is_explained_for_this_runtime():
    text = colab.explain(ModuleNotFoundError("No module named 'tensorflow_federated'"))
    if sys.version_info[:2] == (3, 11):
        assert "side environment" in text and "make setup" in text
    else:
        assert f"This is Python {sys.version.split()[0]}" in text and CLICK in text


def test_messages_say_what_to_do():
    assert CLICK in colab.message("wrong_python", python="3.13.0")
    assert "0.87.0" in colab.message("ancient_tff", tff="0.1.0") and CLICK in colab.message("ancient_tff")
    assert "Keras 3" in colab.message("tff_keras3", tensorflow="2.21.0", keras="3")
    assert "fashion_mnist" in colab.message("offline_download", dataset="cifar10")
    assert "tensorboard --logdir" in colab.message("tensorboard_missing")
    assert colab.explain(RuntimeError("something else entirely")) is None
    with pytest.raises(ValueError, match="unknown message kind"):
        colab.message("nope")


def test_describe_runtime_matches_this_python():
    info = colab.describe_runtime(needs_tff=False)
    assert info.python == ".".join(map(str, sys.version_info[:3]))
    assert info.tff_mode == "not needed"
    keras3 = int(info.tensorflow.split(".")[1]) >= 16
    assert info.keras3 is keras3 and info.keras.startswith("3" if keras3 else "2")
    assert colab.describe_runtime(needs_tff=True).tff_mode == \
        ("here" if sidecar.tff_available_here() else "sidecar")


def test_tensorboard_extension_missing_prints_the_message(capsys):
    class NoExtension:
        def run_line_magic(self, *args):
            raise ModuleNotFoundError("No module named 'tensorboard'")

    assert colab.load_tensorboard_extension(NoExtension()) is False
    assert "tensorboard --logdir" in capsys.readouterr().out


# ---- the side-environment runner ----------------------------------------------------------------
arrays = st.builds(lambda shape, seed, dtype: np.random.default_rng(seed).normal(size=shape).astype(dtype),
                   st.lists(st.integers(0, 4), max_size=3), st.integers(0, 1000),
                   st.sampled_from(["float32", "float64", "int64"]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.text(max_size=10),
                    st.floats(allow_nan=False))
values = st.recursive(st.one_of(scalars, arrays), lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner),
    st.dictionaries(st.text(max_size=6).filter(lambda k: not k.startswith("__")), inner, max_size=4)),
    max_leaves=12)


def same(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=60, deadline=None)
@given(values)
def test_payloads_survive_the_trip_between_processes_exactly(tmp_path_factory, value):
    stem = tmp_path_factory.mktemp("payload") / "p"
    sidecar.save_payload(stem, {"v": value})
    assert same(sidecar.load_payload(stem), {"v": value})


@pytest.mark.parametrize("bad, where", [({"x": object()}, "result.x"), ({"a": [1, {2: 3}]}, "result.a[1]"),
                                        ({"__ndarray__": 1}, "reserved"),
                                        ({"o": np.array([None])}, "object arrays")])
def test_values_that_cannot_cross_are_rejected_with_their_path(bad, where):
    with pytest.raises(ValueError, match=where.replace("[", r"\[")):
        sidecar.encode(bad)


@pytest.mark.parametrize("kwargs, match", [
    (dict(target="no_colon"), "package.module:function"),
    (dict(target="tests.sidecar_jobs:selftest_job", mode="cloud"), "mode must be"),
    (dict(target="tests.sidecar_jobs:selftest_job", params=[1]), "params must be a dict"),
    (dict(target="tests.sidecar_jobs:selftest_job", timeout=0), "timeout"),
    (dict(target="tests.sidecar_jobs:selftest_job", params={"x": object()}), "cannot be sent"),
])
def test_run_job_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sidecar.run_job(**kwargs)


def side_python():
    try:
        return sidecar.find_side_python()
    except sidecar.SideEnvUnavailable as err:
        pytest.skip(f"no side environment here: {err}")


def test_round_trip_through_the_side_environment_streams_progress_and_returns_arrays():
    python = side_python()
    events, params = [], {"steps": 4, "w": [np.arange(6.0).reshape(2, 3), np.int64(7)],
                          "pair": (1, "two")}
    result = sidecar.run_job("tests.sidecar_jobs:selftest_job", params, mode="sidecar",
                             on_progress=events.append, show=False, echo=False)
    assert [e["round"] for e in events] == [1, 2, 3, 4] and events[-1]["value"] == 1.0
    assert same(result["echo"]["w"][0], np.arange(6.0).reshape(2, 3) * 2)
    assert result["echo"]["pair"] == (1, "two") and result["echo"]["w"][1] == 7
    assert result["python"] == [3, 11] and result["pid"] != os.getpid()
    assert sidecar.last_run["python"] == str(python) and sidecar.last_run["outcome"] == "exited"
    assert sidecar.session_members(sidecar.last_run["pid"]) == []
    # the job's temporary files (AutoGraph's, in a TFF job) went to its folder, removed with it
    assert result["temp_file"].startswith(sidecar.last_run["workdir"] + os.sep)
    assert not os.path.exists(sidecar.last_run["workdir"])


def test_inprocess_mode_gives_the_same_types():
    result = sidecar.run_job("tests.sidecar_jobs:selftest_job", {"pair": (1, 2), "a": np.ones(2)},
                             mode="inprocess", show=False)
    os.remove(result["temp_file"])  # in this process's temporary folder: not the runner's to remove
    assert result["echo"]["pair"] == (1, 2) and same(result["echo"]["a"], np.full(2, 2.0))


def test_a_failing_job_raises_with_the_side_traceback():
    side_python()
    with pytest.raises(sidecar.SidecarJobError, match="ValueError: no luck") as info:
        sidecar.run_job("tests.sidecar_jobs:selftest_job", {"fail": "no luck"}, mode="sidecar",
                        show=False, echo=False)
    assert "selftest_job" in info.value.remote_traceback and info.value.remote_type == "ValueError"


def test_a_job_that_outlives_its_timeout_is_stopped_with_everything_it_started():
    side_python()
    with pytest.raises(sidecar.SidecarTimeout, match="longer than 3 s"):
        sidecar.run_job("tests.sidecar_jobs:selftest_job", {"spawn_sleep": 120, "sleep": 120},
                        mode="sidecar", timeout=3, show=False, echo=False)
    assert sidecar.last_run["outcome"] == "timeout"
    assert "sleep" in sidecar.last_run["ended"]
    assert sidecar.session_members(sidecar.last_run["pid"]) == []


def test_a_child_left_running_by_a_finished_job_is_ended():
    """What TFF's worker_binary does: outlive the job's process and hold its output open."""
    side_python()
    sidecar.run_job("tests.sidecar_jobs:selftest_job", {"spawn_sleep": 120}, mode="sidecar",
                    show=False, echo=False, timeout=120)
    assert sidecar.last_run["outcome"] == "exited" and "sleep" in sidecar.last_run["ended"]
    assert sidecar.session_members(sidecar.last_run["pid"]) == []


def test_keyboard_interrupt_stops_the_job_and_propagates():
    """Ctrl-C while the job runs (here: raised in the main thread as soon as the job has started a
    child that would outlive it, so the moment is certain) stops the job and everything it
    started, and reaches the caller."""
    side_python()
    seen = []

    def interrupt_once_started(event):
        seen.append(event)
        if "spawned" in event:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sidecar.run_job("tests.sidecar_jobs:selftest_job", {"spawn_sleep": 120, "sleep": 120},
                        mode="sidecar", show=False, echo=False, timeout=60,
                        on_progress=interrupt_once_started)
    assert any("spawned" in e for e in seen)
    assert sidecar.last_run["outcome"] == "stopped"
    assert sidecar.session_members(sidecar.last_run["pid"]) == []


def test_no_side_environment_is_a_clear_error(tmp_path):
    with pytest.raises(sidecar.SideEnvUnavailable, match="make setup") as info:
        sidecar.run_job("tests.sidecar_jobs:selftest_job", {}, mode="sidecar",
                        python=tmp_path / "missing" / "python")
    assert "does not exist" in str(info.value)
    this = pyenv_python("3.13") or pyenv_python("3.12")
    if this:
        with pytest.raises(sidecar.SideEnvUnavailable, match="not 3.11"):
            sidecar.find_side_python(this)


# ---- keeping build/ across notebooks (the setup cell's KEEP_BUILD_IN) ---------------------------
@pytest.fixture
def clean_build_env(monkeypatch):
    for var in ("COURSE_ARTIFACTS_DIR", "COURSE_RESULTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_keep_build_in_puts_artifacts_and_results_in_the_folder(tmp_path, clean_build_env, capsys):
    from data_utils.artifacts import artifacts_dir, load_arrays, save_arrays
    from data_utils.env import results_dir

    kept = tmp_path / "drive-stand-in" / "fl-course"
    assert colab.keep_build_in(str(kept)) == kept
    assert artifacts_dir() == kept / "artifacts" and results_dir() == kept / "results"
    assert results_dir("build/results") == kept / "results"  # the notebooks' RESULTS_DIR default
    assert "kept across notebooks" in capsys.readouterr().out
    # what one notebook saves, the next (a new process: only the folder is shared) finds
    save_arrays("partition_test", {"seed": 1}, {"a": np.arange(3)})
    out = subprocess.run([sys.executable, "-c", (
        "import numpy as np; from data_utils.colab import keep_build_in; "
        "from data_utils.artifacts import load_arrays; keep_build_in(%r); "
        "a, status = load_arrays('partition_test', {'seed': 1}); print(status, a['a'].tolist())") % str(kept)],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert out.returncode == 0 and "loaded [0, 1, 2]" in out.stdout, out.stderr
    assert load_arrays("partition_test", {"seed": 2})[0] is None  # other parameters: not reused


@pytest.mark.parametrize("folder, match", [
    ("", "non-empty"), (None, "folder path"), (3, "folder path"), ("relative/dir", "absolute"),
    ("/content/drive/MyDrive/fl-course", "only Colab mounts"),
])
def test_keep_build_in_refuses_bad_folders_before_any_work(folder, match, clean_build_env):
    with pytest.raises(ValueError, match=match):
        colab.keep_build_in(folder)
    assert "COURSE_ARTIFACTS_DIR" not in os.environ


def test_keep_build_in_mounts_drive_in_colab(tmp_path, clean_build_env, monkeypatch):
    import types

    mounted = []
    drive = types.SimpleNamespace(mount=lambda root: mounted.append(root))
    fake = types.ModuleType("google.colab")
    fake.drive = drive
    monkeypatch.setitem(sys.modules, "google.colab", fake)
    monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
    monkeypatch.setattr(colab, "DRIVE_ROOT", str(tmp_path / "content" / "drive"))
    kept = tmp_path / "content" / "drive" / "MyDrive" / "fl-course"
    colab.keep_build_in(kept)
    assert mounted == [str(tmp_path / "content" / "drive")]
    assert os.environ["COURSE_RESULTS_DIR"] == str(kept / "results")
    colab.keep_build_in(kept)  # MyDrive now exists: mounted once only
    assert len(mounted) == 1


def test_setup_cell_passes_keep_build_in(tmp_path, clean_build_env):
    cell = header.SETUP_TEMPLATE.format(repo="a/b", ref="main", needs_tff=False)
    assert "KEEP_BUILD_IN = None" in cell and "keep_build_in_folder=KEEP_BUILD_IN" in cell
    colab.setup_notebook(ROOT, needs_tff=False, keep_build_in_folder=tmp_path / "kept")
    assert os.environ["COURSE_ARTIFACTS_DIR"] == str(tmp_path / "kept" / "artifacts")
