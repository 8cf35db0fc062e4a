"""Flattening a model's arrays into one vector and back."""

import numpy as np
import pytest

from bflsim.vectors import flatten, unflatten


def test_flatten_then_unflatten_gives_the_arrays_back():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7.0], dtype=np.float32),
              np.arange(8, dtype=np.float32).reshape(2, 2, 2)]

    vector, shapes = flatten(arrays)
    restored = unflatten(vector, shapes, [a.dtype for a in arrays])

    assert vector.shape == (15,) and vector.dtype == np.float32
    assert vector[:7].tolist() == [0, 1, 2, 3, 4, 5, 7]
    assert shapes == ((2, 3), (1,), (2, 2, 2))
    assert all(np.array_equal(a, b) and a.dtype == b.dtype
               for a, b in zip(arrays, restored, strict=True))


def test_unflatten_casts_to_the_given_dtypes_and_copies():
    vector = np.array([1.5, 2.5, 3.5])
    vector.flags.writeable = False

    restored = unflatten(vector, [(1,), (2,)], [np.float32, np.float64])
    restored[1][0] = 0.0

    assert [a.dtype for a in restored] == [np.float32, np.float64]
    assert vector.tolist() == [1.5, 2.5, 3.5]


def test_unflatten_refuses_a_vector_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"1-D vector of 6 values for shapes \[\(2, 3\)\]"):
        unflatten(np.zeros(5), [(2, 3)])
