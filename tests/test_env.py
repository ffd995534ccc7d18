"""data_utils.env: seeding, the results writer, the repository root, the one smoke switch."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from data_utils import env

ROOT = Path(__file__).resolve().parent.parent


def test_set_seed_gives_identical_model_weights():
    from data_utils.models import build_model

    def weights(seed):
        env.set_seed(seed)
        model = build_model("cnn_small")  # no seed argument: only set_seed decides
        return model.get_weights() + [np.random.rand(3)]

    a, b, c = weights(5), weights(5), weights(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0", True, None])
def test_set_seed_rejects_bad_seeds(seed):
    with pytest.raises(ValueError, match="seed"):
        env.set_seed(seed)


def test_write_results_json_atomic(tmp_path):
    results = {"accuracy": np.float32(0.5), "count": np.int64(3), "arr": np.arange(3),
               "nan": float("nan"), "nested": {"t": (1, 2)}, "smoke": np.bool_(True)}
    path = env.write_results("02_local_training.ipynb", results, tmp_path)
    assert path == tmp_path / "02_local_training.json"
    loaded = json.loads(path.read_text())
    assert loaded == {"accuracy": 0.5, "count": 3, "arr": [0, 1, 2], "nan": None,
                      "nested": {"t": [1, 2]}, "smoke": True}
    assert env.read_results("02_local_training", tmp_path) == loaded
    assert env.read_results("nope", tmp_path) is None
    # overwriting leaves exactly one file, no temporary files behind
    env.write_results("02_local_training", {"a": 1}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["02_local_training.json"]


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    env.write_results("x", {"a": 1}, tmp_path)

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        env.write_results("x", {"a": 2}, tmp_path)
    monkeypatch.undo()
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_write_results_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="mapping"):
        env.write_results("x", [1, 2], tmp_path)
    with pytest.raises(ValueError, match="notebook"):
        env.write_results("", {}, tmp_path)


def test_results_dir_relative_to_repo(tmp_path, monkeypatch):
    monkeypatch.delenv(env.RESULTS_ENV_VAR, raising=False)
    assert env.results_dir("build/x") == env.repo_root() / "build" / "x"
    monkeypatch.setenv(env.RESULTS_ENV_VAR, str(tmp_path))
    assert env.results_dir() == tmp_path
    # the notebooks' default follows the variable (KEEP_BUILD_IN); any other path wins over it
    assert env.results_dir("build/results") == tmp_path
    assert env.results_dir("build/x") == env.repo_root() / "build" / "x"


def test_repo_root_from_a_subfolder(tmp_path, monkeypatch):
    repo = tmp_path / "course"
    (repo / "data_utils").mkdir(parents=True)
    (repo / "data_utils" / "__init__.py").write_text("")
    (repo / "notebooks" / "deep").mkdir(parents=True)
    assert env.repo_root(repo / "notebooks" / "deep") == repo.resolve()
    monkeypatch.chdir(repo / "notebooks")
    assert env.repo_root() == repo.resolve()
    # the real repository, from its notebooks folder
    real = env.repo_root(os.path.dirname(__file__))
    assert (real / "data_utils" / "__init__.py").is_file()
    assert env.repo_root(real / "notebooks") == real


SMOKE_LINE = 'SMOKE = os.environ.get("COURSE_SMOKE", "0") in ("1", "true")'


@pytest.mark.parametrize("nb_path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_notebook_reads_the_one_smoke_switch(nb_path):
    """One smoke switch: every parameters cell reads COURSE_SMOKE the same way (make test sets
    it to 1; papermill's SMOKE=... overrides it), and CONTRIBUTING.md documents that line."""
    import nbformat

    cells = [c for c in nbformat.read(nb_path, as_version=4).cells
             if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    smoke = [line for line in cells[0].source.splitlines() if line.startswith("SMOKE")]
    assert len(smoke) == 1 and smoke[0].startswith(SMOKE_LINE), smoke
    assert SMOKE_LINE in (ROOT / "CONTRIBUTING.md").read_text()
