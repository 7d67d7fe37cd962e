"""Every binding rejects bad arrays with a clear Python exception (never a crash)."""
import numpy as np
import pytest

from deepcore._native import core

f32 = np.float32


def _dense_args():
    return dict(x=np.zeros((4, 3), f32), w=np.zeros((3, 2), f32), b=np.zeros(2, f32),
                z=np.zeros((4, 2), f32), y=np.zeros((4, 2), f32))


def test_float64_input_is_a_type_error_naming_float32():
    a = _dense_args()
    a["x"] = a["x"].astype(np.float64)
    with pytest.raises(TypeError, match="float32"):
        core.dense_forward(a["x"], a["w"], a["b"], a["z"], a["y"], 3)
    with pytest.raises(TypeError, match="float32"):
        core.activation_forward(1, np.zeros((2, 2)), np.zeros((2, 2), f32))
    with pytest.raises(TypeError, match="float32"):
        core.sgd_update(np.zeros(3), np.zeros(3, f32), None, 0.1, 0.0, False)


def test_non_contiguous_input_is_a_value_error_naming_contiguity():
    x = np.zeros((4, 6), f32)[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        core.dense_forward(x, np.zeros((3, 2), f32), None, np.zeros((4, 2), f32), np.zeros((4, 2), f32), 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        core.activation_forward(1, x, np.zeros((4, 3), f32))


def test_wrong_shapes_name_the_argument_and_both_shapes():
    a = _dense_args()
    with pytest.raises(ValueError, match=r"w must have shape \(3, any\), got \(5, 2\)"):
        core.dense_forward(a["x"], np.zeros((5, 2), f32), None, a["z"], a["y"], 0)
    with pytest.raises(ValueError, match=r"b must have shape \(2\), got \(3,\)"):
        core.dense_forward(a["x"], a["w"], np.zeros(3, f32), a["z"], a["y"], 0)
    with pytest.raises(ValueError, match="dy must have the shape of x"):
        core.activation_backward(1, np.zeros((2, 2), f32), np.zeros((2, 2), f32), np.zeros((2, 3), f32),
                                 np.zeros((2, 2), f32))
    with pytest.raises(ValueError, match="labels"):
        core.sparse_categorical_crossentropy(np.zeros((3, 2), f32), np.zeros(2, np.int32), None, True)


def test_lists_and_other_objects_are_type_errors():
    with pytest.raises(TypeError, match="numpy"):
        core.activation_forward(1, [[1.0, 2.0]], np.zeros((1, 2), f32))
    with pytest.raises(TypeError):
        core.gather_rows([1, 2], np.zeros(1, np.int64), np.zeros(1, np.int64))


def test_read_only_outputs_are_value_errors():
    y = np.zeros((2, 2), f32)
    y.setflags(write=False)
    with pytest.raises(ValueError, match="writable"):
        core.activation_forward(1, np.zeros((2, 2), f32), y)


def test_unknown_activation_and_loss_codes_are_value_errors():
    x = np.zeros((2, 2), f32)
    with pytest.raises(ValueError, match="unknown activation"):
        core.activation_forward(99, x, x.copy())
    with pytest.raises(ValueError, match="unknown loss"):
        core.loss_forward_backward(42, x, x, None, 1.0)


def test_index_and_size_errors():
    with pytest.raises(ValueError, match="out of range"):
        core.gather_rows(np.zeros((3, 2), f32), np.array([0, 3], np.int64), np.zeros((2, 2), f32))
    with pytest.raises(ValueError, match="n must be >= 0"):
        core.philox_permutation(-1, 0, 0)
    with pytest.raises(ValueError, match="set_num_threads"):
        core.set_num_threads(0)
    with pytest.raises(TypeError, match="dtype"):
        core.gather_rows(np.zeros((3, 2), f32), np.array([0], np.int64), np.zeros((1, 2), np.int32))
    with pytest.raises(TypeError, match="int32"):
        core.sparse_categorical_crossentropy(np.zeros((2, 2), f32), np.zeros(2, np.int64), None, True)
