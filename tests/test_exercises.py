"""The exercises that check themselves (data_utils.exercises): every check passes its reference
solution, fails plausible wrong answers with its own sentence (never a traceback), and says
"Not done yet" for the stub cells exactly as the notebooks ship them. The two TFF checks (04, 09)
run in one child process in its own session, killed with its worker_binary at the end."""
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from data_utils import exercises as ex
from conftest import run_python_child

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = {p.stem[:2]: p for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}
SOLUTIONS = {p.stem[:2]: p for p in sorted((ROOT / "solutions").glob("[0-9][0-9]_*_solutions.ipynb"))}
NUMPY_CHECKS = [nb for nb in ex.CHECKS if nb not in ("04", "09")]


def stub_cells(nb: str) -> list[str]:
    cells = json.loads(NOTEBOOKS[nb].read_text())["cells"]
    return ["".join(c["source"]) for c in cells if "exercise-stub" in c.get("metadata", {}).get("tags", [])]


def checks_after_stubs(nb: str) -> list[str]:
    cells = json.loads(NOTEBOOKS[nb].read_text())["cells"]
    tags = [c.get("metadata", {}).get("tags", []) for c in cells]
    return ["".join(cells[i + 1]["source"]) for i, t in enumerate(tags) if "exercise-stub" in t]


def run_check(nb: str, fn) -> str:
    out = ex.CHECKS[nb][1](fn)
    assert isinstance(out, str) and "Traceback" not in out and "\n" not in out, out
    return out


@pytest.mark.parametrize("nb", NUMPY_CHECKS)
def test_reference_solution_passes(nb):
    assert run_check(nb, ex.SOLUTIONS[nb]).startswith("Correct"), nb


@pytest.mark.parametrize("nb", sorted(ex.CHECKS))
def test_stub_as_shipped_says_not_done_yet(nb):
    sources = stub_cells(nb)
    assert len(sources) == 1, f"notebook {nb} has {len(sources)} exercise-stub cells"
    name, check = ex.CHECKS[nb]
    follow = checks_after_stubs(nb)[0]
    assert f"print({check.__name__}({name}))" in follow, follow   # the check cell right after
    scope = {}
    exec(sources[0], scope)
    name = ex.CHECKS[nb][0]
    assert "raise NotImplementedError" in sources[0] and name in scope
    assert run_check(nb, scope[name]).startswith("Not done yet:"), nb


def _flat_wrong_shape(*args):
    return np.zeros(7)


def _raises_key_error(*args):
    return {}["oops"]


WRONG = {  # notebook -> [(plausible wrong answer, words the check's own sentence must contain)]
    "00": [(lambda n, m, s: np.arange(m), "same 10 of 100"),
           (lambda n, m, s: np.random.default_rng(s).integers(0, n, size=m), "appears twice"),
           (lambda n, m, s: np.sort(np.random.default_rng().choice(n, m, replace=False)), "different clients")],
    "01": [(lambda labels, k, s: np.array_split(np.arange(len(labels)), k), "contiguous block"),
           (lambda labels, k, s: np.array_split(np.random.default_rng(s).integers(0, len(labels), len(labels)), k),
            "exactly one client"),
           (lambda labels, k, s: np.array_split(np.random.default_rng(s).permutation(len(labels)), k + 1),
            "expected")],
    "02": [(lambda cm: np.trace(cm) / np.sum(cm), "that is the accuracy"),
           (lambda cm: float(np.mean(2 * np.diag(cm) / np.maximum(np.sum(cm, 0) + np.sum(cm, 1), 1))), "absent")],
    "03": [(lambda wl, n: [np.mean([w[j] for w in wl], axis=0) for j in range(len(wl[0]))], "plain mean"),
           (lambda wl, n: [sum(c * w[j] for w, c in zip(wl, n)) for j in range(len(wl[0]))], "not normalised"),
           (_flat_wrong_shape, "one array of shape")],
    "05": [(lambda f, l: ([None if a is None else b - a for a, b in zip(f, l)], [], []), "sign is flipped"),
           (lambda f, l: [0.0] * len(f), "three things")],
    "06": [(lambda n, d, s: np.zeros((n, d)), "hide nothing"),
           (lambda n, d, s: np.random.default_rng(s).normal(size=(n, d)), "do not cancel"),
           (lambda n, d, s: np.random.default_rng(s).normal(size=(n, d)).T, "shape")],
    "07": [(lambda u, k: np.asarray(u).mean(axis=0), "plain mean"),
           (lambda u, k: np.asarray(sorted(np.asarray(u), key=np.linalg.norm)[k:len(u) - k]).mean(axis=0),
            "differs from the reference")],
    "08": [(lambda g, w, w0, mu: [a - mu * (b - c) for a, b, c in zip(g, w, w0)], "wrong sign"),
           (lambda g, w, w0, mu: [a + (b - c) for a, b, c in zip(g, w, w0)], "differs from the reference"),
           (_raises_key_error, "raised KeyError")],
    "10": [(lambda hosts, port: [f"{h}-{port}" for h in hosts], "refuses"),
           (lambda hosts, port: [(h, port) for h in hosts], "refuses"),
           (lambda hosts, port: [f"{h}:{port}" for h in reversed(hosts)], "expected")],
}


@pytest.mark.parametrize("nb", NUMPY_CHECKS)
def test_plausible_wrong_answers_fail_with_the_checks_own_sentence(nb):
    for fn, words in WRONG[nb]:
        out = run_check(nb, fn)
        assert out.startswith("Not yet right:") and words in out, (nb, words, out)


def test_a_check_given_something_else_than_a_function_says_so():
    assert ex.check_trimmed_mean(3).startswith("Not yet right: pass your function")


def test_tff_checks_skip_without_tff():
    if importlib.util.find_spec("tensorflow_federated") is not None:
        pytest.skip("TFF is here: test_tff_checks runs the real checks")
    assert ex.check_momentum_process(lambda *a: object()) == ex.NEEDS_TFF
    assert ex.check_mean_square(lambda: object()) == ex.NEEDS_TFF


# ---- the solutions/ notebooks: one per lesson, their solution passes the lesson's own check --------
def solution_scope(nb: str) -> dict:
    """Run the solutions notebook's code cells (not its setup cell, not the check cell) and return
    their namespace: what a learner has after "run all" up to the check."""
    cells = json.loads(SOLUTIONS[nb].read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code" and "course-setup" not in c["metadata"].get("tags", [])]
    name, check = ex.CHECKS[nb]
    calls = [c for c in code if f"print({check.__name__}({name}))" in "".join(c["source"])]
    assert len(calls) == 1, f"solutions {nb}: one cell must print {check.__name__}({name})"
    scope: dict = {}
    for c in code:
        if c is not calls[0]:
            exec("".join(c["source"]), scope)  # noqa: S102 - the course's own notebook
    assert callable(scope.get(name)), f"solutions {nb} defines no {name}"
    return scope


def test_every_lesson_has_a_solutions_notebook():
    assert sorted(SOLUTIONS) == sorted(NOTEBOOKS) == sorted(ex.CHECKS)


@pytest.mark.parametrize("nb", NUMPY_CHECKS)
def test_solutions_notebook_passes_the_lessons_check(nb):
    name = ex.CHECKS[nb][0]
    assert run_check(nb, solution_scope(nb)[name]).startswith("Correct"), nb


EXERCISE_ITEM = re.compile(r"^(\d+)\. (\*\*)?", re.M)


def exercise_numbers(nb: str) -> dict[str, list[int]]:
    """The lesson's exercise lists ({heading: [number, ...]}) without its coding exercise(s)."""
    out = {}
    for c in json.loads(NOTEBOOKS[nb].read_text())["cells"]:
        text = "".join(c["source"])
        head = re.match(r"#{2,3} (Exercises.*)", text)
        if c["cell_type"] == "markdown" and head:
            items = re.split(r"(?m)^(?=\d+\. )", text)[1:]
            out[head.group(1).strip()] = [int(i.split(".")[0]) for i in items
                                         if "(coding" not in i.split("\n")[0] and "(coding" not in i[:200]]
    return out


@pytest.mark.parametrize("nb", sorted(NOTEBOOKS))
def test_solutions_answer_every_other_exercise(nb):
    text = "\n".join("".join(c["source"]) for c in json.loads(SOLUTIONS[nb].read_text())["cells"]
                     if c["cell_type"] == "markdown")
    assert "## Answers to the other exercises" in text, f"solutions {nb}: no answers section"
    for heading, numbers in exercise_numbers(nb).items():
        prefix = "Flower exercise" if "Flower" in heading else "Exercise"
        found = [int(n) for n in re.findall(rf"(?m)^\*\*{prefix} (\d+)\.\*\*", text)]
        assert found == numbers, f"solutions {nb}: answers to {prefix.lower()}s {found}, the lesson has {numbers}"


CHILD = r"""
import json, sys
import numpy as np
from data_utils import exercises as ex

def plain_fedavg(model_fn, client_lr, server_lr, momentum):
    import tensorflow_federated as tff
    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=client_lr),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=server_lr))

def unweighted(model_fn, client_lr, server_lr, momentum):
    import tensorflow_federated as tff
    return tff.learning.algorithms.build_unweighted_fed_avg(
        model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=client_lr),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=server_lr, momentum=momentum))

def mean_not_squared():
    import tensorflow_federated as tff
    return tff.federated_computation(lambda r: tff.federated_mean(r), tff.FederatedType(np.float32, tff.CLIENTS))

def on_clients():
    import tensorflow_federated as tff
    sq = tff.tensorflow.computation(lambda x: x * x, np.float32)
    return tff.federated_computation(lambda r: tff.federated_map(sq, r), tff.FederatedType(np.float32, tff.CLIENTS))

sys.path.insert(0, sys.argv[2])
from test_exercises import solution_scope
out = {"04": [ex.check_momentum_process(f) for f in (ex.solution_momentum_process, plain_fedavg, unweighted)],
       "09": [ex.check_mean_square(f) for f in (ex.solution_mean_square, mean_not_squared, on_clients)],
       "solutions": [ex.check_momentum_process(solution_scope("04")["my_momentum_process"]),
                     ex.check_mean_square(solution_scope("09")["my_mean_square"])]}
json.dump(out, open(sys.argv[1], "w"))
"""


@pytest.mark.tff  # imports TFF in a child of this Python: not in the Python 3.13 run
def test_tff_checks(tmp_path):
    out_path = tmp_path / "out.json"
    code, log, _ = run_python_child(CHILD, [out_path, Path(__file__).parent], tmp_path, artifacts=False)
    assert code == 0, log
    out = json.loads(out_path.read_text())
    right, no_momentum, not_weighted = out["04"]
    assert right.startswith("Correct"), right
    assert no_momentum.startswith("Not yet right") and "no momentum" in no_momentum, no_momentum
    assert not_weighted.startswith("Not yet right") and "examples-weighted" in not_weighted, not_weighted
    right, not_squared, wrong_place = out["09"]
    assert right.startswith("Correct"), right
    assert "not the mean of the squares" in not_squared, not_squared
    assert "type signature" in wrong_place and "{float32}@CLIENTS" in wrong_place, wrong_place
    assert all(v.startswith("Correct") for v in out["solutions"]), out["solutions"]  # solutions/ 04, 09
