"""Partitioning: properties that must hold for any valid parameters (hypothesis), the
ValueErrors for invalid ones, and notebook 01's hand-written Dirichlet split against the package's."""
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_utils import partition as P

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def labelled(draw, min_per_class=1, max_classes=10, min_n=1, max_n=400):
    """A label array with k classes, every class present at least ``min_per_class`` times."""
    k = draw(st.integers(1, max_classes))
    extra = draw(st.integers(max(0, min_n - k * min_per_class), max_n))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.repeat(np.arange(k), min_per_class), rng.integers(0, k, extra)])
    return rng.permutation(labels).astype(np.int64)


def assignment_counts(clients, n):
    return np.bincount(np.concatenate(clients).astype(int), minlength=n) if clients else np.zeros(n)


def check_common(clients, labels, num_clients, exactly_once):
    assert len(clients) == num_clients
    counts = assignment_counts(clients, len(labels))
    assert counts.max() <= 1, "an example was given to two clients"
    if exactly_once:
        assert counts.min() == 1, "an example was given to no client"
    assert all(len(c) > 0 for c in clients), "a client is empty"
    for c in clients:
        assert np.all(np.diff(c) > 0), "client indices must be sorted and unique"


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# ---- properties ------------------------------------------------------------------------------
@SETTINGS
@given(labels=labelled(), data=st.data())
def test_iid_properties(labels, data):
    k = data.draw(st.integers(1, len(labels)))
    seed = data.draw(st.integers(0, 2**20))
    clients = P.partition_iid(labels, k, seed)
    check_common(clients, labels, k, exactly_once=True)
    sizes = [len(c) for c in clients]
    assert max(sizes) - min(sizes) <= 1
    assert same(clients, P.partition_iid(labels, k, seed))


@SETTINGS
@given(labels=labelled(min_n=40), data=st.data())
def test_iid_other_seed_other_split(labels, data):
    k = data.draw(st.integers(2, 8))
    seed = data.draw(st.integers(0, 2**20))
    # 40+ examples into 2+ clients: two seeds agree with probability < 1e-10
    assert not same(P.partition_iid(labels, k, seed), P.partition_iid(labels, k, seed + 1))


@SETTINGS
@given(labels=labelled(min_per_class=3, min_n=60), data=st.data())
def test_dirichlet_properties(labels, data):
    k = data.draw(st.integers(1, 6))
    min_size = data.draw(st.integers(1, 5))
    alpha = data.draw(st.sampled_from([0.3, 1.0, 10.0, 100.0]))
    seed = data.draw(st.integers(0, 2**20))
    try:
        clients = P.partition_dirichlet(labels, k, alpha, seed, min_size)
    except ValueError as err:  # allowed only when the minimum size cannot be met
        assert "min_size" in str(err)
        return
    check_common(clients, labels, k, exactly_once=True)
    assert min(len(c) for c in clients) >= min_size
    assert same(clients, P.partition_dirichlet(labels, k, alpha, seed, min_size))
    if k >= 2 and len(labels) >= 60:
        other = P.partition_dirichlet(labels, k, alpha, seed + 1, min_size)
        assert not same(clients, other)


@SETTINGS
@given(data=st.data())
def test_pathological_properties(data):
    num_classes = data.draw(st.integers(2, 10))
    per_class = data.draw(st.integers(20, 60))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    cpc = data.draw(st.integers(1, num_classes))
    k = data.draw(st.integers(1, 20))
    seed = data.draw(st.integers(0, 2**20))
    clients = P.partition_pathological(labels, k, cpc, seed)
    check_common(clients, labels, k, exactly_once=False)
    for c in clients:
        assert len(np.unique(labels[c])) <= cpc
    assert same(clients, P.partition_pathological(labels, k, cpc, seed))
    if k * cpc > num_classes:
        # some class is cut into 2+ random shards of 20+ examples: two seeds agree with tiny
        # probability. (With one shard per class, a split can only move whole classes between
        # clients, and two seeds may well agree: 2 clients x 1 of 2 classes agree half the time.)
        assert not same(clients, P.partition_pathological(labels, k, cpc, seed + 1))


@SETTINGS
@given(labels=labelled(min_n=50), data=st.data())
def test_quantity_properties(labels, data):
    k = data.draw(st.integers(1, 8))
    min_size = data.draw(st.integers(1, 5))
    exponent = data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    seed = data.draw(st.integers(0, 2**20))
    clients = P.partition_quantity(labels, k, seed, exponent, min_size)
    check_common(clients, labels, k, exactly_once=True)
    assert min(len(c) for c in clients) >= min_size
    assert same(clients, P.partition_quantity(labels, k, seed, exponent, min_size))
    if k >= 2:
        assert not same(clients, P.partition_quantity(labels, k, seed + 1, exponent, min_size))


@SETTINGS
@given(labels=labelled(min_per_class=5, min_n=100),
       scheme=st.sampled_from(P.SCHEMES), fraction=st.sampled_from([0.0, 0.1, 0.25]),
       data=st.data())
def test_make_partition_local_test_split(labels, scheme, fraction, data):
    k = data.draw(st.integers(1, 5))
    part = P.make_partition(labels, scheme, k, seed=3, alpha=5.0, min_size=2,
                            classes_per_client=1, local_test_fraction=fraction)
    assert part.num_clients == k
    for train, test in zip(part.train, part.test):
        assert len(train) >= 1
        assert len(np.intersect1d(train, test)) == 0
        assert abs(len(test) - fraction * (len(train) + len(test))) <= 1
    everything = np.concatenate(part.train + part.test)
    assert len(np.unique(everything)) == len(everything)


# ---- the rules on concrete cases -----------------------------------------------------------------
LABELS = np.repeat(np.arange(10), 100)


def test_quantity_sizes_follow_power_law():
    clients = P.partition_quantity(LABELS, 5, seed=0, exponent=1.0, min_size=10)
    sizes = np.sort([len(c) for c in clients])[::-1]
    assert sizes[0] > 3 * sizes[-1]  # 1 : 1/5 of the rest, plus 10 each
    # same label mix: every client holds every class in roughly its share
    for c in clients:
        counts = np.bincount(LABELS[c], minlength=10)
        assert counts.min() >= 0.5 * counts.mean()


def test_pathological_two_shards_per_client_like_mcmahan():
    clients = P.partition_pathological(LABELS, 10, classes_per_client=2, seed=0)
    assert [len(np.unique(LABELS[c])) for c in clients] == [2] * 10
    assert sorted(len(c) for c in clients) == [100] * 10  # 20 shards of 50 examples


def test_dirichlet_small_alpha_means_few_classes():
    big = np.repeat(np.arange(10), 600)
    few = P.partition_dirichlet(big, 10, alpha=0.05, seed=0, min_size=1)
    many = P.partition_dirichlet(big, 10, alpha=100.0, seed=0, min_size=1)
    share = lambda cs: np.mean([np.bincount(big[c], minlength=10).max() / len(c) for c in cs])  # noqa: E731
    assert share(few) > 0.6 > 0.2 > share(many)


def test_label_entropy_and_client_statistics():
    np.testing.assert_allclose(P.label_entropy([[5, 0], [5, 5], [0, 0], [1, 1]]), [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(P.label_entropy([[1, 1, 1, 1]]), [2.0])
    with pytest.raises(ValueError):
        P.label_entropy([[-1, 2]])
    part = P.make_partition(LABELS, "pathological", 10, seed=0, classes_per_client=2,
                            local_test_fraction=0.1)
    stats = P.client_statistics(part, LABELS, 10)
    assert [s["classes_present"] for s in stats] == [2] * 10
    assert all(s["train_examples"] + s["test_examples"] == 100 for s in stats)
    assert all(0.0 < s["label_entropy_bits"] <= 1.0 for s in stats)


def test_save_load_and_reuse(tmp_path):
    path = tmp_path / "p.npz"
    part, status = P.load_or_make_partition(path, LABELS, scheme="dirichlet", num_clients=4, seed=1, alpha=0.5)
    assert status == "created"
    again, status = P.load_or_make_partition(path, LABELS, scheme="dirichlet", num_clients=4, seed=1, alpha=0.5)
    assert status == "loaded" and same(part.train, again.train) and same(part.test, again.test)
    other, status = P.load_or_make_partition(path, LABELS, scheme="dirichlet", num_clients=4, seed=2, alpha=0.5)
    assert status.startswith("recreated") and "seed" in status and not same(part.train, other.train)
    path.write_bytes(b"not a zip file")
    fixed, status = P.load_or_make_partition(path, LABELS, scheme="dirichlet", num_clients=4, seed=2, alpha=0.5)
    assert status.startswith("recreated") and same(fixed.train, other.train)


# ---- ValueErrors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("num_clients", [0, -1, 1001, 2.5, True, "3"])
@pytest.mark.parametrize("scheme", P.SCHEMES)
def test_bad_num_clients(scheme, num_clients):
    with pytest.raises(ValueError, match="num_clients"):
        P.make_partition(LABELS, scheme, num_clients, min_size=1)


@pytest.mark.parametrize("alpha", [0, -0.5, float("nan"), float("inf")])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        P.partition_dirichlet(LABELS, 5, alpha)


@pytest.mark.parametrize("cpc", [0, 11, -1, 1.5])
def test_bad_classes_per_client(cpc):
    with pytest.raises(ValueError, match="classes_per_client"):
        P.partition_pathological(LABELS, 5, cpc)


def test_unknown_scheme_names_the_allowed_ones():
    with pytest.raises(ValueError, match="scheme must be one of 'iid', 'dirichlet', 'pathological', "
                                         "'quantity', got 'shards'"):
        P.make_partition(LABELS, "shards", 5)


def test_min_size_that_cannot_be_met():
    with pytest.raises(ValueError, match="min_size"):
        P.partition_dirichlet(LABELS, 10, 0.5, min_size=101)  # 10 x 101 > 1000 examples
    with pytest.raises(ValueError, match="min_size"):
        P.partition_quantity(LABELS, 10, min_size=101)
    # possible in total, but not with such a small alpha: every draw leaves some client short
    with pytest.raises(ValueError, match="min_size"):
        P.partition_dirichlet(np.repeat(np.arange(2), 50), 10, 0.01, min_size=10)
    with pytest.raises(ValueError, match="min_size"):
        P.partition_dirichlet(LABELS, 5, 0.5, min_size=0)


def test_bad_labels_and_fraction():
    with pytest.raises(ValueError, match="labels"):
        P.partition_iid(np.array([]), 1)
    with pytest.raises(ValueError, match="labels"):
        P.partition_iid(np.array([0.5, 1.5]), 1)
    with pytest.raises(ValueError, match="local_test_fraction"):
        P.make_partition(LABELS, "iid", 2, local_test_fraction=1.0)
    with pytest.raises(ValueError, match="seed"):
        P.partition_iid(LABELS, 2, seed=-1)


def test_combination_rules_say_name_limit_and_value():
    """Limits that depend on the data (examples, classes) are phrased like every other check:
    the parameter, what is allowed (and why), the value given."""
    with pytest.raises(ValueError,
                       match=r"num_clients must be at most the number of examples \(1000\), got 1001"):
        P.partition_iid(LABELS, 1001)
    with pytest.raises(ValueError, match=r"min_size must be at most 100 .*, got 101"):
        P.partition_quantity(LABELS, 10, min_size=101)
    with pytest.raises(ValueError,
                       match=r"classes_per_client must be at most the number of classes \(10\), got 11"):
        P.partition_pathological(LABELS, 5, 11)
    with pytest.raises(ValueError, match="alpha must be a positive finite number, got nan"):
        P.partition_dirichlet(LABELS, 5, float("nan"))
    with pytest.raises(ValueError, match="split must be one of 'train', 'test', got 'tset'"):
        P.make_partition(LABELS, "iid", 2).label_counts(LABELS, split="tset")


# ---- notebook 01's Dirichlet split, in plain sight ------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent


def _notebook_dirichlet():
    """Execute the cells of notebook 01 tagged ``dirichlet-lesson`` (the hand-written Dirichlet
    split), in order, and return their namespace."""
    nb_path = ROOT / "notebooks" / "01_data_preparation.ipynb"
    cells = [c for c in json.loads(nb_path.read_text())["cells"]
             if "dirichlet-lesson" in c.get("metadata", {}).get("tags", [])]
    assert cells, "notebook 01 must tag its hand-written Dirichlet split cells dirichlet-lesson"
    assert all(c["cell_type"] == "code" for c in cells)
    namespace: dict = {"np": np}  # the notebook imported numpy as np before these cells
    for cell in cells:
        exec(compile("".join(cell["source"]), "notebook-01-dirichlet-lesson", "exec"), namespace)
    return namespace


# imbalanced classes (one class rare), so the rounding and the redraws both matter
_RNG = np.random.default_rng(42)
LESSON_LABELS = _RNG.choice(10, size=3000, p=[0.02] + [0.98 / 9] * 9).astype(np.int64)


@pytest.mark.parametrize("num_clients, alpha, seed, min_size", [
    (10, 0.5, 0, 10), (5, 0.1, 3, 10), (20, 1.0, 7, 10), (3, 100.0, 1, 10), (1, 0.5, 0, 10),
    (20, 0.05, 0, 10), (20, 0.1, 1, 10), (40, 0.3, 11, 30), (7, 2.5, 123, 1)])
def test_notebook_dirichlet_equals_package(num_clients, alpha, seed, min_size):
    split = _notebook_dirichlet()["dirichlet_split"]
    ours = split(LESSON_LABELS, num_clients, alpha, seed, min_size=min_size)
    theirs = P.partition_dirichlet(LESSON_LABELS, num_clients, alpha, seed, min_size)
    assert same(ours, theirs)
    check_common(ours, LESSON_LABELS, num_clients, exactly_once=True)


def test_notebook_dirichlet_redraws_like_the_package():
    """The minimum-size rule is exercised: with 20 clients and alpha 0.05 the first draw leaves a
    client short, so both implementations draw again, identically."""
    split = _notebook_dirichlet()["dirichlet_split"]
    first_draw = P.partition_dirichlet(LESSON_LABELS, 20, 0.05, 0, min_size=1)
    redrawn = P.partition_dirichlet(LESSON_LABELS, 20, 0.05, 0, min_size=10)
    assert min(len(c) for c in first_draw) < 10 and not same(first_draw, redrawn)
    assert same(split(LESSON_LABELS, 20, 0.05, 0, min_size=1), first_draw)
    assert same(split(LESSON_LABELS, 20, 0.05, 0, min_size=10), redrawn)
    with pytest.raises(ValueError, match="min_size"):
        split(np.repeat(np.arange(2), 50), 10, 0.01, 0, min_size=10)


def test_notebook_dirichlet_on_fashion_mnist_sized_labels():
    """The notebook's default: 60,000 balanced labels, 10 clients, alpha 0.5, seed 0."""
    labels = np.repeat(np.arange(10), 6000)
    split = _notebook_dirichlet()["dirichlet_split"]
    assert same(split(labels, 10, 0.5, 0), P.partition_dirichlet(labels, 10, 0.5, 0))
