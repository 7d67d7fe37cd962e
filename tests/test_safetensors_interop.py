"""safetensors interop both ways, against the real `safetensors` package (in the test extra).

deepcore -> safetensors: what deepcore writes (saving.save_safetensors, Model.save_weights)
loads with safetensors.numpy.load_file and safe_open: the same names, shapes, dtypes, bytes and
metadata, and the header follows the format's rules (starts with "{", padded with spaces to a
multiple of 8 bytes, the data section covered back to back).

safetensors -> deepcore: what safetensors.numpy.save_file writes loads with
saving.load_safetensors and Model.load_weights; load_weights rejects a wrong dtype, a wrong
shape, a missing or an unexpected tensor with a ValueError that names the file and the tensor,
and leaves the model's weights as they were. A malformed file that the package rejects, deepcore
rejects too, with a ValueError naming the file.

Edge cases: 0-d and empty tensors, every dtype NumPy and safetensors share, non-ASCII and odd
names, metadata with non-ASCII text, tensors whose data are not in the header's order.
"""
import json
import struct

import numpy as np
import pytest
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

import deepcore
from deepcore import BatchNormalization, Dense, Input, Sequential, Swish, saving

# The dtypes NumPy and safetensors share, with safetensors' codes.
DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I8": np.int8, "I16": np.int16,
          "I32": np.int32, "I64": np.int64, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32,
          "U64": np.uint64, "BOOL": np.bool_}

NAMES = ["plain", "layer/kernel", "Gewicht/äöü", "層/カーネル", "emoji 😀", 'quote"back\\slash',
         "tab\tnewline\n", "", "é" * 200]


def sample(dtype, shape, seed=0):
    """Values spread over the dtype's range (for floats: also inf, -0.0 and NaN)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    if dtype == np.bool_:
        flat = rng.integers(0, 2, n).astype(bool)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        flat = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
        flat[:2] = [info.min, info.max][:n]
    else:
        flat = rng.normal(scale=1e3, size=n).astype(dtype)
        flat[:4] = np.array([np.inf, -0.0, np.nan, np.finfo(dtype).tiny], dtype=dtype)[:n]
    return flat.reshape(shape)


def assert_same_tensors(got, want):
    assert list(sorted(got)) == list(sorted(want))
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype, name
        assert g.shape == w.shape, name
        # Bytes, not values: NaN payloads and -0.0 must survive too.
        assert g.tobytes() == np.ascontiguousarray(w).tobytes(), name


def raw_header(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw, n, raw[8:8 + n]


def assert_follows_the_format(path):
    """The format's rules (safetensors' README): the header is JSON that starts with "{",
    may be padded with spaces, and the data section is covered by the tensors back to back."""
    raw, n, head = raw_header(path)
    assert head[:1] == b"{"
    assert n % 8 == 0, "deepcore aligns the data section to 8 bytes, as safetensors does"
    stripped = head.rstrip(b" ")
    assert stripped.endswith(b"}") and len(head) - len(stripped) < 8
    header = json.loads(head)
    header.pop("__metadata__", None)
    spans = sorted(tuple(info["data_offsets"]) for info in header.values())
    pos = 0
    for start, end in spans:
        assert start == pos
        pos = end
    assert pos == len(raw) - 8 - n


def mlp(seed=0):
    """Dense, BatchNormalization (non-trainable weights) and Swish (a 0-d weight)."""
    deepcore.set_random_seed(seed)
    return Sequential([Input(shape=(5,)), Dense(8, name="hidden"), BatchNormalization(name="bn"),
                       Swish(beta=1.5, name="swish"), Dense(3, activation="softmax", name="out")])


def data(n=32):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 3, n).astype(np.int64)


def trained(seed=0):
    m = mlp(seed)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = data()
    m.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return m


def weights_of(model):
    return {v.path: np.array(v.value) for v in model.weights}


# ------------------------------------------------------- deepcore -> safetensors


@pytest.mark.parametrize("code", DTYPES)
def test_every_dtype_deepcore_writes_loads_with_safetensors(tmp_path, code):
    path = tmp_path / "t.safetensors"
    base = np.asfortranarray(sample(DTYPES[code], (3, 4)))  # not C-contiguous: deepcore must copy it
    tensors = {"matrix": base, "column": base[:, 1], "scalar": sample(DTYPES[code], ()),
               "empty": sample(DTYPES[code], (2, 0, 3))}
    saving.save_safetensors(path, tensors)
    got = load_file(str(path))
    assert_same_tensors(got, tensors)
    with safe_open(str(path), framework="np") as f:
        header_dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}
    assert header_dtypes == {name: code for name in tensors}
    assert_follows_the_format(path)


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_names_deepcore_writes_are_the_names_safetensors_reads(tmp_path, name):
    path = tmp_path / "n.safetensors"
    tensors = {name: sample(np.float32, (2, 3)), name + "/bias": sample(np.float32, (3,), seed=1)}
    saving.save_safetensors(path, tensors, {"Schlüssel": "Wert ✓", "format": "x"})
    assert_same_tensors(load_file(str(path)), tensors)
    with safe_open(str(path), framework="np") as f:
        assert f.metadata() == {"Schlüssel": "Wert ✓", "format": "x"}
    assert_follows_the_format(path)


def test_no_tensors_and_no_metadata_is_a_file_safetensors_reads(tmp_path):
    path = tmp_path / "empty.safetensors"
    saving.save_safetensors(path, {})
    assert load_file(str(path)) == {}
    with safe_open(str(path), framework="np") as f:
        assert f.metadata() is None
    assert_follows_the_format(path)


def test_header_padding_for_every_header_length_mod_8(tmp_path):
    """Names of 1..8 characters move the header's length through every remainder mod 8."""
    for k in range(1, 9):
        path = tmp_path / f"pad{k}.safetensors"
        tensors = {"w" * k: sample(np.uint8, (k,))}
        saving.save_safetensors(path, tensors)
        assert_follows_the_format(path)
        assert_same_tensors(load_file(str(path)), tensors)


def test_save_weights_file_loads_with_safetensors_with_its_metadata(tmp_path):
    m = trained()
    path = tmp_path / "w.safetensors"
    m.save_weights(path)
    got = load_file(str(path))
    want = weights_of(m)
    want.update({"optimizer/" + k: np.asarray(v) for k, v in m.optimizer.get_state().items()})
    assert_same_tensors(got, want)
    assert got["swish/beta"].shape == ()  # the 0-d weight stays 0-d
    with safe_open(str(path), framework="np") as f:
        metadata = f.metadata()
    assert metadata == saving.load_safetensors(path)[1]
    assert metadata["format"] == "deepcore-weights" and metadata["model"] == m.name
    assert json.loads(metadata["optimizer"])["class"] == type(m.optimizer).__name__
    assert_follows_the_format(path)


# ------------------------------------------------------- safetensors -> deepcore


@pytest.mark.parametrize("code", DTYPES)
def test_every_dtype_safetensors_writes_loads_with_deepcore(tmp_path, code):
    path = tmp_path / "t.safetensors"
    tensors = {"matrix": sample(DTYPES[code], (3, 4)), "scalar": sample(DTYPES[code], ()),
               "empty": sample(DTYPES[code], (0,)), "cube": sample(DTYPES[code], (2, 1, 2), seed=3)}
    save_file(tensors, str(path), metadata={"k": "v"})
    got, metadata = saving.load_safetensors(path)
    assert_same_tensors(got, tensors)
    assert metadata == {"k": "v"}


def test_mixed_dtypes_whose_data_are_not_in_header_order_load_with_deepcore(tmp_path):
    """safetensors lays the data out by dtype alignment, then name: not in the order of the dict."""
    path = tmp_path / "mixed.safetensors"
    tensors = {"a_u8": sample(np.uint8, (5,)), "b_f64": sample(np.float64, (2, 2)), "c_bool": sample(np.bool_, (3,)),
               "d_i16": sample(np.int16, (7,)), "e_f32": sample(np.float32, (1, 3))}
    save_file(tensors, str(path))
    header = json.loads(raw_header(path)[2])
    assert sorted(tensors, key=lambda name: header[name]["data_offsets"]) != list(tensors)  # really mixed
    got, metadata = saving.load_safetensors(path)
    assert_same_tensors(got, tensors)
    assert metadata == {}


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_names_safetensors_writes_are_the_names_deepcore_reads(tmp_path, name):
    path = tmp_path / "n.safetensors"
    tensors = {name: sample(np.float32, (2,)), name + "x": sample(np.int64, (1,))}
    save_file(tensors, str(path), metadata={"ключ": "значение"})
    got, metadata = saving.load_safetensors(path)
    assert_same_tensors(got, tensors)
    assert metadata == {"ключ": "значение"}


def test_weights_written_by_safetensors_load_into_the_model(tmp_path):
    source = trained(seed=3)
    path = tmp_path / "external.safetensors"
    save_file(weights_of(source), str(path))
    m = mlp(seed=4)
    m.load_weights(path)
    assert_same_tensors(weights_of(m), weights_of(source))
    x, _ = data()
    np.testing.assert_array_equal(m.predict(x, verbose=0), source.predict(x, verbose=0))


def test_a_checkpoint_rewritten_by_safetensors_resumes_training_exactly(tmp_path):
    """Weights and Adam's slots and step count go through safetensors' reader and writer (which
    reorders the data) and back into deepcore: training then continues as if never saved."""
    original = trained(seed=5)
    path = tmp_path / "ckpt.safetensors"
    original.save_weights(path)
    with safe_open(str(path), framework="np") as f:
        metadata = f.metadata()
    rewritten = tmp_path / "rewritten.safetensors"
    save_file(load_file(str(path)), str(rewritten), metadata=metadata)

    resumed = mlp(seed=6)
    resumed.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    resumed.load_weights(rewritten)
    assert resumed.optimizer.iterations == original.optimizer.iterations > 0
    x, y = data()
    for model in (original, resumed):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert_same_tensors(weights_of(resumed), weights_of(original))


# ----------------------------------------------------------------- rejections


def _model_and_file(tmp_path, change):
    """A built model, and a safetensors-written file of its weights changed by change(dict)."""
    m = mlp(seed=7)
    tensors = {k: v.copy() for k, v in weights_of(mlp(seed=8)).items()}
    change(tensors)
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    return m, path


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.bool_])
def test_load_weights_rejects_a_wrong_dtype_naming_it(tmp_path, dtype):
    m, path = _model_and_file(tmp_path, lambda t: t.update({"hidden/kernel": t["hidden/kernel"].astype(dtype)}))
    before = weights_of(m)
    with pytest.raises(ValueError) as e:
        m.load_weights(path)
    msg = str(e.value)
    assert "bad.safetensors" in msg and "'hidden/kernel'" in msg
    assert np.dtype(dtype).name in msg and "float32" in msg
    assert_same_tensors(weights_of(m), before)


@pytest.mark.parametrize("name, shape", [("hidden/kernel", (8, 5)), ("swish/beta", (1,)), ("out/bias", (0,))])
def test_load_weights_rejects_a_wrong_shape_naming_both(tmp_path, name, shape):
    m, path = _model_and_file(tmp_path, lambda t: t.update({name: np.zeros(shape, np.float32)}))
    before = weights_of(m)
    with pytest.raises(ValueError) as e:
        m.load_weights(path)
    msg = str(e.value)
    assert "bad.safetensors" in msg and repr(name) in msg
    assert str(shape) in msg and str(before[name].shape) in msg
    assert_same_tensors(weights_of(m), before)


@pytest.mark.parametrize("edit,named", [
    (lambda t: t.pop("bn/moving_variance"), "missing ['bn/moving_variance']"),
    (lambda t: t.update({"extra/kernel": np.zeros(2, np.float32)}), "unexpected ['extra/kernel']"),
], ids=["missing", "unexpected"])
def test_load_weights_rejects_a_missing_or_unexpected_tensor_naming_it(tmp_path, edit, named):
    m, path = _model_and_file(tmp_path, edit)
    before = weights_of(m)
    with pytest.raises(ValueError) as e:
        m.load_weights(path)
    msg = str(e.value)
    assert "bad.safetensors" in msg and named in msg
    assert_same_tensors(weights_of(m), before)


def test_a_dtype_numpy_cannot_hold_is_named(tmp_path):
    """BF16 (and the FP8 codes) have no NumPy dtype: deepcore names the code rather than
    calling the file corrupt."""
    head = json.dumps({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    head += b" " * (-len(head) % 8)
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"\x80\x3f\x00\x40")
    with pytest.raises(ValueError) as e:
        saving.load_safetensors(path)
    assert "bf16.safetensors" in str(e.value) and "'w'" in str(e.value) and "dtype BF16" in str(e.value)


def _file(header, data, pad=True):
    head = json.dumps(header).encode()
    if pad:
        head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + data


_F32x4 = np.arange(4, dtype="<f4").tobytes()
MALFORMED = {
    # the data section must be covered back to back, from its first byte to its last
    "hole": _file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}}, _F32x4),
    "overlap": _file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, _F32x4[:12]),
    "trailing_bytes": _file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, _F32x4),
    "gap_at_start": _file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, _F32x4),
    # shapes are lists of non-negative integers (two negative sizes multiply to the right count)
    "negative_sizes": _file({"a": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}}, _F32x4),
    "float_size": _file({"a": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}}, _F32x4),
    "string_size": _file({"a": {"dtype": "F32", "shape": ["4"], "data_offsets": [0, 16]}}, _F32x4),
    "string_offsets": _file({"a": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}, _F32x4),
    # metadata is a map of strings to strings
    "metadata_not_strings": _file({"__metadata__": {"optimizer": 1},
                                   "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, _F32x4),
    "metadata_not_a_map": _file({"__metadata__": ["x"],
                                 "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, _F32x4),
    "entry_not_a_map": _file({"a": [0, 16]}, _F32x4),
    "unknown_dtype": _file({"a": {"dtype": "Q99", "shape": [4], "data_offsets": [0, 16]}}, _F32x4),
    "size_mismatch": _file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, _F32x4),
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_what_safetensors_rejects_deepcore_rejects_naming_the_file(tmp_path, kind):
    path = tmp_path / f"malformed_{kind}.safetensors"
    path.write_bytes(MALFORMED[kind])
    with pytest.raises(SafetensorError):
        load_file(str(path))
    with pytest.raises(ValueError) as e:
        saving.load_safetensors(path)
    assert f"malformed_{kind}.safetensors" in str(e.value)


def test_an_unpadded_header_safetensors_accepts_deepcore_reads(tmp_path):
    """Padding is allowed, not required."""
    path = tmp_path / "unpadded.safetensors"
    raw = _file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, _F32x4, pad=False)
    assert struct.unpack("<Q", raw[:8])[0] % 8 != 0
    path.write_bytes(raw)
    assert_same_tensors(load_file(str(path)), {"a": np.arange(4, dtype=np.float32)})
    assert_same_tensors(saving.load_safetensors(path)[0], {"a": np.arange(4, dtype=np.float32)})


def test_deepcore_refuses_to_write_a_tensor_named_like_the_metadata(tmp_path):
    """"__metadata__" is the header's metadata key: such a tensor would be lost (or clobber the
    metadata), and safetensors cannot read the file."""
    path = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="__metadata__"):
        saving.save_safetensors(path, {"__metadata__": np.zeros(2, np.float32)}, {"a": "b"})
    assert not path.exists()
