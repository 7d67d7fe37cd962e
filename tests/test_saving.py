"""save_weights / load_weights: safetensors format, round trips, clear errors
on mismatched or corrupt files, and atomic writes (a failed save leaves the
previous file intact and no temporary files behind)."""
import json
import os
import struct

import numpy as np
import pytest

import deepcore
from deepcore import Dense, Input, Sequential, optimizers, saving


def mlp(hidden=16, names=("hidden", "out"), seed=0, n_in=5):
    deepcore.set_random_seed(seed)
    return Sequential([Input(shape=(n_in,)), Dense(hidden, activation="relu", name=names[0]),
                       Dense(3, activation="softmax", name=names[1])])


def x_data(n=20, n_in=5):
    return np.random.default_rng(0).normal(size=(n, n_in)).astype(np.float32)


def dir_listing(path):
    return sorted(os.listdir(path))


# -------------------------------------------------------------- round trips


def test_save_then_load_into_fresh_model_gives_identical_predictions(tmp_path):
    path = tmp_path / "w.safetensors"
    a, b = mlp(seed=1), mlp(seed=2)
    x = x_data()
    assert not np.allclose(a.predict(x), b.predict(x))
    a.save_weights(path)
    b.load_weights(path)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_round_trip_after_training_and_training_continues_after_load(tmp_path):
    path = str(tmp_path / "trained.safetensors")  # str paths work too
    x = x_data(40)
    y = np.arange(40) % 3
    a = mlp(seed=1)
    a.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    a.fit(x, y, epochs=2, verbose=0)
    a.save_weights(path)
    b = mlp(seed=2)
    b.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    b.fit(x, y, epochs=1, verbose=0)  # weights now live in b's flat training buffer
    b.load_weights(path)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    # Training after load starts from the loaded weights: a model that was
    # trained before loading and a fresh one take identical steps.
    a2 = mlp(seed=3)
    a2.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    a2.load_weights(path)
    b.fit(x, y, epochs=1, shuffle=False, verbose=0)
    a2.fit(x, y, epochs=1, shuffle=False, verbose=0)
    for wb, wa2 in zip(b.get_weights(), a2.get_weights()):
        np.testing.assert_array_equal(wb, wa2)


def test_save_overwrites_existing_file_by_default(tmp_path):
    path = tmp_path / "w.safetensors"
    mlp(seed=1).save_weights(path)
    first = path.read_bytes()
    mlp(seed=2).save_weights(path)
    assert path.read_bytes() != first
    c = mlp(seed=3)
    c.load_weights(path)
    np.testing.assert_array_equal(c.get_weights()[0], mlp(seed=2).get_weights()[0])


def test_overwrite_false_refuses_existing_file(tmp_path):
    path = tmp_path / "w.safetensors"
    mlp().save_weights(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="w.safetensors"):
        mlp(seed=5).save_weights(path, overwrite=False)
    assert path.read_bytes() == before


def test_save_and_load_of_unbuilt_model_raise(tmp_path):
    m = Sequential([Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        m.save_weights(tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="not built"):
        m.load_weights(tmp_path / "w.safetensors")


# ------------------------------------------------------------------ format


def test_file_layout_is_safetensors_header_and_little_endian_data(tmp_path):
    """Parse the file by hand, independently of deepcore's reader."""
    path = tmp_path / "w.safetensors"
    m = mlp()
    m.save_weights(path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0  # data section aligned
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    assert meta["format"] == "deepcore-weights"
    assert set(header) == {"hidden/kernel", "hidden/bias", "out/kernel", "out/bias"}
    data = raw[8 + n:]
    ends = []
    for var in m.weights:
        info = header[var.path]
        assert info["dtype"] == "F32"
        assert info["shape"] == list(var.shape)
        start, end = info["data_offsets"]
        arr = np.frombuffer(data[start:end], dtype="<f4").reshape(var.shape)
        np.testing.assert_array_equal(arr, var.value)
        ends.append(end)
    assert max(ends) == len(data)  # no trailing bytes


def test_file_loads_with_the_safetensors_package(tmp_path):
    import safetensors.numpy as st  # in the test extra: a reference, never skipped
    path = tmp_path / "w.safetensors"
    m = mlp()
    m.save_weights(path)
    tensors = st.load_file(str(path))
    assert set(tensors) == {v.path for v in m.weights}
    for var in m.weights:
        assert tensors[var.path].dtype == np.float32
        np.testing.assert_array_equal(tensors[var.path], var.value)


def test_file_written_by_safetensors_package_loads_into_model(tmp_path):
    import safetensors.numpy as st  # in the test extra: a reference, never skipped
    m = mlp(seed=4)
    path = tmp_path / "external.safetensors"
    st.save_file({v.path: v.value.copy() for v in m.weights}, str(path))
    fresh = mlp(seed=5)
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh.predict(x_data()), m.predict(x_data()))


# ------------------------------------------------------------- mismatches


def test_load_into_model_with_different_layer_size_names_weight_file_and_shapes(tmp_path):
    path = tmp_path / "small.safetensors"
    mlp(hidden=16).save_weights(path)
    big = mlp(hidden=32)
    before = big.get_weights()
    with pytest.raises(ValueError) as e:
        big.load_weights(path)
    msg = str(e.value)
    assert "small.safetensors" in msg
    assert "hidden/kernel" in msg
    assert "(5, 16)" in msg and "(5, 32)" in msg
    # Nothing was partially loaded.
    for a, b in zip(before, big.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_load_into_model_with_different_layer_names_lists_missing_and_unexpected(tmp_path):
    path = tmp_path / "w.safetensors"
    mlp(names=("hidden", "out")).save_weights(path)
    other = mlp(names=("encoder", "out"))
    with pytest.raises(ValueError) as e:
        other.load_weights(path)
    msg = str(e.value)
    assert "w.safetensors" in msg
    assert "missing" in msg and "encoder/kernel" in msg and "encoder/bias" in msg
    assert "unexpected" in msg and "hidden/kernel" in msg and "hidden/bias" in msg
    assert "out/kernel" not in msg


def test_load_of_float64_tensor_is_rejected(tmp_path):
    m = mlp()
    path = tmp_path / "f64.safetensors"
    saving.save_safetensors(path, {v.path: v.value.astype(np.float64) for v in m.weights})
    with pytest.raises(ValueError, match="float64"):
        m.load_weights(path)


def test_load_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        mlp().load_weights(tmp_path / "nope.safetensors")


# ---------------------------------------------------------------- corrupt


def _corruptions(raw):
    (n,) = struct.unpack("<Q", raw[:8])
    return {
        "truncated_data": raw[:-10],
        "truncated_header": raw[:8 + n // 2],
        "only_4_bytes": raw[:4],
        "empty": b"",
        "header_length_too_big": struct.pack("<Q", len(raw) * 10) + raw[8:],
        "garbage_header": raw[:8] + b"\xff" * n + raw[8 + n:],
        "header_not_object": struct.pack("<Q", 8) + b"[1,2,3] " + raw[8 + n:],
        "bad_dtype": raw.replace(b'"F32"', b'"Q99"', 1),
    }


@pytest.mark.parametrize("kind", ["truncated_data", "truncated_header", "only_4_bytes", "empty",
                                  "header_length_too_big", "garbage_header", "header_not_object", "bad_dtype"])
def test_corrupt_file_raises_value_error_naming_the_file(tmp_path, kind):
    good = tmp_path / "good.safetensors"
    m = mlp()
    m.save_weights(good)
    bad = tmp_path / f"bad_{kind}.safetensors"
    bad.write_bytes(_corruptions(good.read_bytes())[kind])
    before = m.get_weights()
    with pytest.raises(ValueError) as e:
        m.load_weights(bad)
    assert f"bad_{kind}.safetensors" in str(e.value)
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


# -------------------------------------------------------------- atomicity


def _old_file(tmp_path):
    path = tmp_path / "model.safetensors"
    mlp(seed=1).save_weights(path)
    return path, path.read_bytes(), dir_listing(tmp_path)


def test_failure_midway_through_writing_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path, old, listing = _old_file(tmp_path)
    real_atomic_write = saving.atomic_write

    def write_half_then_fail(target, write_fn):
        def failing_write_fn(f):
            class HalfWriter:
                def write(self, b):
                    f.write(bytes(b)[: len(b) // 2])
                    raise OSError(28, "No space left on device")
            write_fn(HalfWriter())
        real_atomic_write(target, failing_write_fn)

    monkeypatch.setattr(saving, "atomic_write", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        mlp(seed=2).save_weights(path)
    assert path.read_bytes() == old
    assert dir_listing(tmp_path) == listing


def test_failure_of_final_rename_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path, old, listing = _old_file(tmp_path)

    def failing_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(saving.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        mlp(seed=2).save_weights(path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert dir_listing(tmp_path) == listing


def test_failure_of_fsync_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path, old, listing = _old_file(tmp_path)

    def failing_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(saving.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        mlp(seed=2).save_weights(path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert dir_listing(tmp_path) == listing


def test_interrupt_during_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path, old, listing = _old_file(tmp_path)
    real_pack = saving.struct.pack

    class FakeStruct:
        @staticmethod
        def pack(*args):
            raise KeyboardInterrupt

    monkeypatch.setattr(saving, "struct", FakeStruct)
    with pytest.raises(KeyboardInterrupt):
        mlp(seed=2).save_weights(path)
    monkeypatch.undo()
    assert saving.struct.pack is real_pack
    assert path.read_bytes() == old
    assert dir_listing(tmp_path) == listing


def test_failed_first_save_creates_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(saving.os, "replace", lambda s, d: (_ for _ in ()).throw(OSError("nope")))
    with pytest.raises(OSError):
        mlp().save_weights(tmp_path / "new.safetensors")
    monkeypatch.undo()
    assert dir_listing(tmp_path) == []


def test_save_into_nonexistent_directory_names_it(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError) as e:
        mlp().save_weights(missing / "w.safetensors")
    assert "no_such_dir" in str(e.value)
    assert not missing.exists()


def test_save_to_relative_path_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = mlp()
    m.save_weights("rel.safetensors")
    assert dir_listing(tmp_path) == ["rel.safetensors"]
    other = mlp(seed=9)
    other.load_weights("rel.safetensors")
    np.testing.assert_array_equal(other.predict(x_data()), m.predict(x_data()))
