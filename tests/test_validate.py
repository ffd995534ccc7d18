"""data_utils.validate: the one family of parameter checks (NAME must be ..., got VALUE), and the
runnable examples in the docstrings of the modules that have them."""
import doctest
import importlib
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_utils import validate as V

BOUNDS = st.one_of(st.none(), st.integers(-1000, 1000))
NOT_INTS = st.one_of(st.booleans(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
                     st.none(), st.lists(st.integers(), max_size=2), st.just(np.bool_(True)),
                     st.just(np.float64(2.0)), st.just(2 + 0j))


def message_names(err: pytest.ExceptionInfo, name: str, value) -> None:
    text = str(err.value)
    assert text.startswith(f"{name} must be "), text
    assert text.endswith(f", got {value!r}"), text


# ---- is_int / is_number ------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, -3, 2**80, np.int8(3), np.int64(-1), np.uint64(7)])
def test_is_int_accepts_python_and_numpy_integers(value):
    assert V.is_int(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1.0, np.float32(2), "1", None, [1], 1 + 0j])
def test_is_int_rejects_bools_floats_and_the_rest(value):
    assert not V.is_int(value)


@pytest.mark.parametrize("value", [0, -2.5, 1e300, np.float32(0.1), np.int16(4), 10**300])
def test_is_number_accepts_finite_reals(value):
    assert V.is_number(value)


@pytest.mark.parametrize("value", [True, np.bool_(False), float("nan"), float("inf"), -np.inf, 10**400,
                                   "1.0", None, 1j, np.array([1.0])])
def test_is_number_rejects_bools_non_finite_and_non_numbers(value):
    assert not V.is_number(value)


# ---- check_int ---------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(value=st.integers(-2000, 2000), low=BOUNDS, high=BOUNDS, numpy=st.booleans())
def test_check_int_accepts_exactly_the_integers_in_range(value, low, high, numpy):
    given_value = np.int64(value) if numpy else value
    inside = (low is None or value >= low) and (high is None or value <= high)
    if inside:
        got = V.check_int("ROUNDS", given_value, low=low, high=high)
        assert got == value and type(got) is int
    else:
        with pytest.raises(ValueError) as err:
            V.check_int("ROUNDS", given_value, low=low, high=high)
        message_names(err, "ROUNDS", given_value)
        assert "an integer" in str(err.value)
        for bound in (low, high):
            if bound is not None:
                assert str(bound) in str(err.value)


@settings(max_examples=100, deadline=None)
@given(value=NOT_INTS, low=BOUNDS)
def test_check_int_rejects_bools_floats_and_other_types(value, low):
    with pytest.raises(ValueError) as err:
        V.check_int("NUM_CLIENTS", value, low=low)
    message_names(err, "NUM_CLIENTS", value)


def test_check_int_messages_say_the_range():
    for kwargs, allowed in [({}, "an integer"), ({"low": 1}, "an integer >= 1"),
                            ({"high": 9}, "an integer <= 9"), ({"low": 1, "high": 9}, "an integer in [1, 9]")]:
        with pytest.raises(ValueError, match=re.escape(f"K must be {allowed}, got 1.5")):
            V.check_int("K", 1.5, **kwargs)


def test_allow_none():
    assert V.check_int("SEED", None, allow_none=True) is None
    assert V.check_number("X", None, allow_none=True) is None
    assert V.check_positive("X", None, allow_none=True) is None
    assert V.check_fraction("X", None, allow_none=True) is None
    assert V.check_choice("X", None, ("a",), allow_none=True) is None
    with pytest.raises(ValueError, match=r"SEED must be an integer >= 0 or None, got -1"):
        V.check_int("SEED", -1, low=0, allow_none=True)
    with pytest.raises(ValueError, match=r"SEED must be an integer >= 0, got None"):
        V.check_int("SEED", None, low=0)


# ---- check_number / check_positive / check_fraction ----------------------------------------------
@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6)),
       low=st.one_of(st.none(), st.floats(-100, 100)), high=st.one_of(st.none(), st.floats(-100, 100)),
       low_open=st.booleans(), high_open=st.booleans())
def test_check_number_accepts_exactly_the_finite_numbers_in_range(value, low, high, low_open, high_open):
    inside = math.isfinite(value) and \
        (low is None or (value > low if low_open else value >= low)) and \
        (high is None or (value < high if high_open else value <= high))
    if inside:
        got = V.check_number("LR", value, low, high, low_open=low_open, high_open=high_open)
        assert got == value and type(got) is float
    else:
        with pytest.raises(ValueError) as err:
            V.check_number("LR", value, low, high, low_open=low_open, high_open=high_open)
        message_names(err, "LR", value)
        assert "a finite number" in str(err.value)


def test_check_number_messages_show_open_and_closed_ends():
    with pytest.raises(ValueError, match=re.escape("delta must be a finite number in (0, 1), got 1")):
        V.check_number("delta", 1, 0, 1, low_open=True, high_open=True)
    with pytest.raises(ValueError, match=re.escape("k must be a finite number in [0, 1], got 2")):
        V.check_number("k", 2, 0, 1)
    with pytest.raises(ValueError, match=re.escape("x must be a finite number > 0, got 0")):
        V.check_number("x", 0, low=0, low_open=True)
    with pytest.raises(ValueError, match=re.escape("x must be a finite number, got True")):
        V.check_number("x", True)


@settings(max_examples=150, deadline=None)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-100, 100), st.booleans()),
       allow_zero=st.booleans())
def test_check_positive(value, allow_zero):
    ok = not isinstance(value, bool) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if ok:
        assert V.check_positive("clip", value, allow_zero=allow_zero) == value
    else:
        with pytest.raises(ValueError) as err:
            V.check_positive("clip", value, allow_zero=allow_zero)
        message_names(err, "clip", value)
        assert ("a non-negative finite number" if allow_zero else "a positive finite number") in str(err.value)


@pytest.mark.parametrize("value, kwargs, ok", [
    (0.0, {}, True), (0.999, {}, True), (1.0, {}, False), (-0.1, {}, False),
    (1.0, {"allow_one": True}, True), (0.0, {"allow_zero": False}, False), (0.5, {"allow_zero": False}, True),
    (float("nan"), {}, False), (True, {}, False), ("0.5", {}, False),
])
def test_check_fraction(value, kwargs, ok):
    if ok:
        assert V.check_fraction("local_test_fraction", value, **kwargs) == value
    else:
        with pytest.raises(ValueError) as err:
            V.check_fraction("local_test_fraction", value, **kwargs)
        message_names(err, "local_test_fraction", value)


# ---- check_choice / check_list / check_known -----------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(value=st.one_of(st.text(max_size=4), st.integers(), st.none(), st.lists(st.integers(), max_size=2)))
def test_check_choice_accepts_only_the_choices(value):
    choices = ("iid", "dirichlet", "")
    if value in choices:
        assert V.check_choice("scheme", value, choices) == value
    else:
        with pytest.raises(ValueError) as err:
            V.check_choice("scheme", value, choices)
        message_names(err, "scheme", value)
        assert "one of 'iid', 'dirichlet', ''" in str(err.value)


def test_check_choice_survives_values_that_cannot_be_compared():
    with pytest.raises(ValueError, match="MODE must be one of 'a', 'b', got array"):
        V.check_choice("MODE", np.array([1, 2]), ("a", "b"))
    with pytest.raises(ValueError, match=r"MODE must be one of 'a', got \{\}"):
        V.check_choice("MODE", {}, iter(["a"]))  # any iterable of choices


def test_check_list_checks_every_item_and_names_its_position():
    item = lambda name, v: V.check_positive(name, v, allow_zero=True)  # noqa: E731
    assert V.check_list("NOISE_MULTIPLIERS", (0, 1.5), item) == [0.0, 1.5]
    with pytest.raises(ValueError, match=re.escape(
            "NOISE_MULTIPLIERS[1] must be a non-negative finite number, got -0.5")):
        V.check_list("NOISE_MULTIPLIERS", [1.0, -0.5], item)
    with pytest.raises(ValueError, match=re.escape("NOISE_MULTIPLIERS must be a non-empty list, got []")):
        V.check_list("NOISE_MULTIPLIERS", [], item)
    assert V.check_list("X", [], item, allow_empty=True) == []
    with pytest.raises(ValueError, match=re.escape("X must be a list, got 'ab'")):
        V.check_list("X", "ab", item, allow_empty=True)


def test_check_known_names_the_unknown_and_the_known():
    V.check_known("parameter", ["ROUNDS"], ["ROUNDS", "SEED"])
    V.check_known("parameter", [], ["ROUNDS"])
    with pytest.raises(ValueError, match=re.escape("unknown parameter 'ROUND', 'SEEDS'; known: ROUNDS, SEED")):
        V.check_known("parameter", ["SEEDS", "ROUND", "ROUNDS"], ["SEED", "ROUNDS"])


# ---- the runnable examples in the docstrings -----------------------------------------------------
@pytest.mark.parametrize("module", ["validate", "partition", "robust", "secure_agg", "privacy"])
def test_docstring_examples_run(module):
    """Each module's examples (module and function docstrings) run and print what they show;
    none of these modules needs TensorFlow for them."""
    mod = importlib.import_module(f"data_utils.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"data_utils.{module} has no examples"
    assert result.failed == 0, f"{result.failed} of data_utils.{module}'s examples failed (see above)"
