import numpy as np
import pytest

from graphdiff.checks import check_int, is_integer, is_real


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_integers_of_any_kind_come_back_as_int(value):
    out = check_int("n", value, low=1, high=3)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [True, 3.0, "3", None, np.float32(3)])
def test_non_integers_raise_type_error_naming_argument_and_range(value):
    with pytest.raises(TypeError, match=r"^n must be an integer in \[1, 3\], got "):
        check_int("n", value, low=1, high=3)


@pytest.mark.parametrize(
    "value, message",
    [
        (0, r"^n must be >= 1, got 0$"),
        (-5, r"^n must be >= 1, got -5$"),
    ],
)
def test_below_the_lower_end(value, message):
    with pytest.raises(ValueError, match=message):
        check_int("n", value, low=1)


def test_above_the_upper_end_says_why():
    with pytest.raises(ValueError, match=r"^k must be in \[1, 9\] \(at most n - 1\), got 10$"):
        check_int("k", 10, low=1, high=9, why="at most n - 1")


def test_bounds_are_inclusive():
    assert check_int("k", 1, low=1, high=9) == 1
    assert check_int("k", 9, low=1, high=9) == 9


def test_number_predicates_take_numpy_scalars_and_refuse_bools():
    for value in (3, np.int64(3), np.uint8(3)):
        assert is_integer(value) and is_real(value)
    for value in (0.5, np.float32(0.5), np.float64(0.5), float("inf")):
        assert is_real(value) and not is_integer(value)
    for value in (True, np.bool_(True), "1", None, 1 + 0j):
        assert not is_integer(value) and not is_real(value)
