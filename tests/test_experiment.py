"""Every notebook's parameters, checked in one place before any work
(data_utils.experiment.check_notebook_params, issue 13): the defaults each notebook's parameters
cell commits pass, and a bad value of any parameter (wrong type, out of range, bad choice, a bad
combination) is a ValueError that names the parameter and the value given."""
import ast
import json
import os
from pathlib import Path

import pytest

from data_utils.experiment import (NOTEBOOK_PARAMS, ROBUST_AGGREGATORS, SMOKE_TRAIN_EXAMPLES, Experiment,
                                   check_notebook_params)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = {p.name[:2]: p for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))}


def notebook_defaults(key: str) -> dict:
    """The values the notebook's parameters cell assigns, read with ast (an expression that is
    not a literal, such as SMOKE's, is evaluated with only ``os`` at hand)."""
    nb = json.loads(NOTEBOOKS[key].read_text())
    (cell,) = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    values = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign):
            (target,) = node.targets
            try:
                values[target.id] = ast.literal_eval(node.value)
            except ValueError:
                values[target.id] = eval(compile(ast.Expression(node.value), "<parameters>", "eval"),
                                         {"os": os})
    return values


def test_every_notebook_has_its_parameters_listed():
    assert set(NOTEBOOK_PARAMS) == set(NOTEBOOKS)
    for key in NOTEBOOKS:
        names = set(notebook_defaults(key))
        assert set(NOTEBOOK_PARAMS[key]) == names, (key, set(NOTEBOOK_PARAMS[key]) ^ names)


@pytest.mark.parametrize("smoke", [False, True])
@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_the_committed_defaults_pass(key, smoke):
    checked = check_notebook_params(key, dict(notebook_defaults(key), SMOKE=smoke))
    assert (checked.exp.test_limit is not None) == smoke   # a smoke run tests on a subset
    assert checked.params["SEED"] == checked.exp.seed == 0


def test_notebook_07s_aggregators_are_the_robust_modules():
    from data_utils.robust import AGGREGATORS

    assert ROBUST_AGGREGATORS == AGGREGATORS + ("tff_robust",)


def test_a_notebook_namespace_is_read_by_name():
    namespace = dict(notebook_defaults("03"), __name__="__main__", os=os, np=None, notebook_start=0.0)
    assert check_notebook_params("03", namespace).exp.num_clients == 10
    del namespace["POLYAK_K"]
    with pytest.raises(ValueError, match="missing parameter.*POLYAK_K"):
        check_notebook_params("03", namespace)


def test_unknown_names_and_notebooks_are_errors():
    with pytest.raises(ValueError, match="unknown parameter.*'NUM_CLIENT'"):
        check_notebook_params("01", dict(notebook_defaults("01"), NUM_CLIENT=5))
    with pytest.raises(ValueError, match="notebook must be one of"):
        check_notebook_params("99", {})


def test_what_the_notebooks_get_back():
    d = notebook_defaults("07")
    checked = check_notebook_params("07", dict(d, SMOKE=True))
    limit = min(d["TRAIN_LIMIT"], SMOKE_TRAIN_EXAMPLES)  # a smoke run never uses more than the workshop
    assert checked.exp == Experiment.from_params(smoke=True, train_limit=limit,
                                                 **{k: d[k] for k in ("DATASET", "NUM_CLIENTS", "PARTITION",
                                                                      "ALPHA", "CLASSES_PER_CLIENT",
                                                                      "LOCAL_TEST_FRACTION", "MODEL", "SEED")})
    assert checked.job_params["TRAIN_LIMIT"] == limit
    assert set(checked.job_params) == {"DATASET", "NUM_CLIENTS", "PARTITION", "ALPHA", "CLASSES_PER_CLIENT",
                                       "LOCAL_TEST_FRACTION", "MODEL", "SEED", "SMOKE", "TRAIN_LIMIT", "ROUNDS",
                                       "CLIENTS_PER_ROUND", "LOCAL_EPOCHS", "BATCH_SIZE", "CLIENT_LR"}
    for spelling in ("none", "", None):
        assert check_notebook_params("01", dict(notebook_defaults("01"), FEATURE_SKEW=spelling))["FEATURE_SKEW"] is None
    tutorial = check_notebook_params("04", dict(notebook_defaults("04"), PRESET="tf_tutorial", SMOKE=True))
    assert tutorial.exp.num_clients == SMOKE_TRAIN_EXAMPLES // 100
    assert tutorial.job_params["CLIENTS_PER_ROUND"] is None and tutorial.job_params["CLIENT_LR"] == 0.02


# At least one bad value of every parameter of every notebook; a value bad only in some notebooks
# (ROUNDS=0: notebooks 03 and 07 plot a curve per round) is in BAD_IN.
NAN = float("nan")
BAD = {
    "DATASET": ["imagenet", None, 3],
    "SEED": [-1, "0", 1.5, True],
    "RESULTS_DIR": ["", None, 3],
    "SMOKE": ["yes", 1, None],
    "TFF_MODE": ["remote", None],
    "NUM_CLIENTS": [0, -3, 100000, "ten", 2.5, True],
    "PARTITION": ["by_writer", None],
    "ALPHA": [-1, 0, "0.5", NAN, float("inf")],
    "CLASSES_PER_CLIENT": [0, 11, "2", 2.5],
    "LOCAL_TEST_FRACTION": [1.5, 1.0, -0.1, "0.1"],
    "FEATURE_SKEW": ["blur", 3],
    "MODEL": ["resnet", None],
    "EPOCHS": [0, "5", 2.5],
    "BATCH_SIZE": [0, -1, "20", 2.5],
    "OPTIMIZER": ["rmsprop", 1],
    "LEARNING_RATE": [0, -0.1, "0.01"],
    "NON_IID_ALPHA": [0, -1, "0.1"],
    "DIFFERENT_INIT_CLIENTS": [1, 11, "3"],            # 11: more than NUM_CLIENTS
    "POLYAK_K": [-0.1, 1.5, "0.5"],
    "ROUNDS": [-1, "ten", 2.5],
    "CLIENT_FRACTION": [0, 1.5, "0.3"],
    "LOCAL_EPOCHS": [0, "5", 1.5],
    "CLIENT_LR": [0, -0.1, "0.1"],
    "FEDSGD_LR": [0, "0.1"],
    "NON_IID_PARTITION": ["iid", "by_writer"],
    "CLIENTS_PER_ROUND": [0, 11, "2"],                 # 11: more than NUM_CLIENTS
    "CLIENT_LR_SCHEDULE": ["linear", None],
    "CLIENT_MOMENTUM": [1.0, -0.1, "0.9"],
    "SERVER_LR": [0, "1"],
    "PRESET": ["tutorial", 1],
    "HETERO_ROUNDS": [0, "10"],
    "HETERO_TRAIN_EXAMPLES": [0, 50, "6000"],          # 50: fewer than 10 per client
    "BINARY_CLASSES": [(0, 0), (0, 10), [1], "0,6", (0, -1)],
    "BINARY_EPOCHS": [0, "10"],
    "BINARY_BATCH_SIZE": [0, 2.5],
    "TRAIN_LIMIT": [0, 50, "6000"],                    # 50: fewer than 10 per client
    "LEAK_PARTITION": ["by_writer", None],
    "SECAGG_CLIP": [0, -0.5, "0.5"],
    "SECAGG_VALUE_BITS": [1, 32, "20"],                # 32: not below SECAGG_MODULUS_BITS
    "SECAGG_MODULUS_BITS": [2, 64, 20, 21, "32"],      # 20: not above SECAGG_VALUE_BITS; 21: overflows
    "SECAGG_DROPOUTS": [-1, 10, "2"],                  # 10: every client
    "DP_NUM_CLIENTS": [0, 29, 100000, "600"],          # 29: fewer than DP_CLIENTS_PER_ROUND
    "DP_CLIENTS_PER_ROUND": [0, 601, "30"],            # 601: more than DP_NUM_CLIENTS
    "DP_ROUNDS": [0, "10"],
    "DP_RUNS": [0, 11, "2"],
    "DP_LAST_ROUNDS": [0, 4, "2"],
    "DP_CLIP": [0, -1, "0.5"],
    "DP_DELTA": [0, 1, 1.5, "1e-5"],
    "NOISE_MULTIPLIERS": [[], [0.0, -1.0], [0.0, "1"], 1.0, None],
    "DROP_FRACTIONS": [[], [0.0, 1.0], [-0.1], 0.3],
    "NUM_FLIPPERS": [-1, 10, "3"],                     # 10: every client
    "NUM_ATTACKERS": [-1, 10, 1.0],
    "BACKDOOR_TARGET": [-1, 10, "0", 1.5],
    "POISON_FRACTION": [0, 1.5, "0.5"],
    "BOOST": [0, -10, "10"],
    "TRIM_FRACTION": [0.5, -0.1, "0.1"],
    "AGGREGATORS": [[], ["mean", "krum"], "mean", None],
    "ALGORITHMS": [[], ["fedavg", "fedsgd"], "fedavg", None],
    "TEST_IMAGES": [0, "1000"],
    "MU": [-0.01, "0.01", None],
    "SERVER_MOMENTUM": [1.0, -0.1, "0.9"],
    "ADAPTIVE_SERVER_LR": [0, -0.01, "0.01"],
    "LAST_ROUNDS": [0, 6, "2"],                        # 6: more than ROUNDS
    "DRIFT_CLASSES": [[], [0], [11], 2],
    "DRIFT_EPOCHS": [[], [0], ["1"], 1],
    "FINE_TUNE_EPOCHS": [0, "2"],
    "LOCAL_ONLY_EPOCHS": [0, 2.5],
    "TFF_ALGORITHMS": [[], ["scaffold"], "fedprox", None],
    "TFF_ROUNDS": [0, 6, "2"],                         # 6: more than ROUNDS
    "PROXIMAL_STRENGTH": [0, -0.5, "0.5", None],
    "BITS": [[], [32, 0], [32, 33], [8, 4], [32, "8"], 32],   # [8, 4]: no uncompressed baseline
    "AGGREGATOR_BITS": [0, 33, "4", 2.5],
    "TFF_BITS": [[], [17], [0], ["8"], 8],
    "TFF_ENCODERS": [[], ["kashin"], "uniform", None],
    "COMPRESSION_AGGREGATOR": ["yes", 1, None],
    "WORKER_COUNTS": [[], [0], [9], ["2"], 2],
    "WORKER_ADDRESSES": [[], ["localhost"], ["h:0"], ["a:1", "a:1"], "a:1"],
    "FLOWER_CLIENTS": [0, 9, "2"],
    "FLOWER_ROUNDS": [0, "2"],
    "FLOWER_TRAIN_EXAMPLES": [0, 9, "2000"],
    "FLOWER_TEST_EXAMPLES": [0, "2000"],
    "FLOWER_TIMEOUT": [0, -1, "300"],
}
BAD_IN = {"03": {"ROUNDS": [0], "NUM_CLIENTS": [1]}, "06": {"NUM_CLIENTS": [1]}, "07": {"ROUNDS": [0]},
          "08": {"ROUNDS": [0], "NUM_CLIENTS": [1]}, "09": {"ROUNDS": [0]},
          "10": {"ROUNDS": [0], "FLOWER_TRAIN_EXAMPLES": [19]}}


def bad_cases():
    for key in sorted(NOTEBOOKS):
        for name in notebook_defaults(key):
            for value in BAD.get(name, []) + BAD_IN.get(key, {}).get(name, []):
                yield pytest.param(key, name, value, id=f"{key}-{name}={value!r}")


def test_every_parameter_has_bad_values_to_try():
    missing = {name for key in NOTEBOOKS for name in notebook_defaults(key) if not BAD.get(name)}
    assert not missing, f"add bad values of {sorted(missing)} to BAD"


@pytest.mark.parametrize("key, name, value", list(bad_cases()))
def test_a_bad_value_is_a_clear_error(key, name, value):
    params = dict(notebook_defaults(key), SMOKE=False)
    params[name] = value
    with pytest.raises(ValueError) as info:
        check_notebook_params(key, params)
    message = str(info.value)
    assert name in message and repr(value) in message, message


# The cases of the issue, as papermill passes them to notebook 01 in a smoke run.
@pytest.mark.parametrize("name, value", [
    ("NUM_CLIENTS", 0), ("NUM_CLIENTS", 100000), ("NUM_CLIENTS", "ten"), ("LOCAL_TEST_FRACTION", 1.5),
    ("ALPHA", -1), ("DATASET", "imagenet"), ("PARTITION", "by_writer"), ("CLASSES_PER_CLIENT", 11),
])
def test_the_issues_cases_on_notebook_01(name, value):
    with pytest.raises(ValueError) as info:
        check_notebook_params("01", dict(notebook_defaults("01"), SMOKE=True, **{name: value}))
    message = str(info.value)
    assert message.startswith(f"{name} must be ") and message.endswith(f"got {value!r}"), message


def test_combinations():
    d06, d07 = notebook_defaults("06"), notebook_defaults("07")
    with pytest.raises(ValueError, match=r"DP_CLIENTS_PER_ROUND must be at most DP_NUM_CLIENTS \(40\), got 50"):
        check_notebook_params("06", dict(d06, DP_NUM_CLIENTS=40, DP_CLIENTS_PER_ROUND=50))
    with pytest.raises(ValueError, match=r"NUM_FLIPPERS must be below NUM_CLIENTS \(5\), got 5"):
        check_notebook_params("07", dict(d07, NUM_CLIENTS=5, NUM_FLIPPERS=5))
    with pytest.raises(ValueError, match=r"CLIENTS_PER_ROUND must be an integer in \[1, 4\]"):
        check_notebook_params("07", dict(d07, NUM_CLIENTS=4, CLIENTS_PER_ROUND=5))
    with pytest.raises(ValueError, match=r"NUM_CLIENTS must be .* TRAIN_LIMIT=900\), got 100"):
        check_notebook_params("07", dict(d07, NUM_CLIENTS=100, TRAIN_LIMIT=900, SMOKE=False))
    # 400 clients fit 6,000 images of TRAIN_LIMIT, not the 3,000 of a smoke run
    check_notebook_params("07", dict(d07, NUM_CLIENTS=400, TRAIN_LIMIT=6000, SMOKE=False))
    with pytest.raises(ValueError, match=r"NUM_CLIENTS must .*as in a smoke run\), got 400"):
        check_notebook_params("07", dict(d07, NUM_CLIENTS=400, TRAIN_LIMIT=6000, SMOKE=True))
    # the DP job draws its clients from the whole training set, as DP_NUM_CLIENTS
    with pytest.raises(ValueError, match=r"DP_NUM_CLIENTS must be an integer in \[1, 6000\], got 7000"):
        check_notebook_params("06", dict(d06, DP_NUM_CLIENTS=7000))


@pytest.mark.notebooks
def test_notebook_01_stops_at_a_bad_parameter_before_any_work(tmp_path, monkeypatch):
    """Through papermill, in a smoke run: NUM_CLIENTS=0 stops the setup cell with the clear
    ValueError, not a matplotlib error far below, and no data or partition was touched."""
    import papermill as pm

    nb_path = NOTEBOOKS["01"]
    monkeypatch.setenv("COURSE_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("COURSE_SMOKE", "0")  # smoke comes from the injected parameter
    out = tmp_path / nb_path.name
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(nb_path), str(out), cwd=str(nb_path.parent), kernel_name="python3",
                            progress_bar=False,
                            parameters={"SMOKE": True, "NUM_CLIENTS": 0, "RESULTS_DIR": str(tmp_path / "results")})
    assert info.value.ename == "ValueError", (info.value.ename, info.value.evalue)
    assert info.value.evalue.startswith("NUM_CLIENTS must be an integer in [1, 300]"), info.value.evalue
    assert info.value.evalue.endswith("got 0"), info.value.evalue
    failed = [c for c in json.loads(out.read_text())["cells"]
              if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "check_notebook_params" in "".join(failed[0]["source"])
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())
