"""Tests for deepcore.datasets (IDX reader, MNIST/Fashion-MNIST loaders, fallback).

Everything runs on tiny files in tmp_path; the network is never touched
(the fetcher is replaced by one that fails, or copies local files).
"""

import gzip
import hashlib
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from deepcore.datasets import (
    DatasetNotFoundError,
    load_digits_fallback,
    load_fashion_mnist,
    load_idx,
    load_mnist,
)
from deepcore.datasets import mnist as mnist_mod

CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}
STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(arr, code=None):
    """Encode arr as IDX, written independently of the reader under test."""
    arr = np.asarray(arr)
    code = CODES[arr.dtype.name] if code is None else code
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path, data, gz):
    Path(path).write_bytes(gzip.compress(data) if gz else data)
    return Path(path)


def make_dataset(directory, n_train=20, n_test=10, gz=True, seed=0):
    """Write a tiny MNIST-shaped dataset; returns the arrays written."""
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for i, (stem, a) in enumerate(arrays.items()):
        use_gz = gz if gz != "mixed" else bool(i % 2)
        write(directory / (stem + (".gz" if use_gz else "")), idx_bytes(a), use_gz)
    return arrays


def check_loaded(result, arrays):
    (Xtr, ytr), (Xte, yte) = result
    for got, stem in zip((Xtr, ytr, Xte, yte), STEMS):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[stem])


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real env, cache, Debian dir or network leaks into a test."""
    monkeypatch.delenv("DEEPCORE_DATA", raising=False)
    monkeypatch.delenv("DEEPCORE_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(mnist_mod, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "no-debian"))

    def no_network(url, dest):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(mnist_mod, "_fetch", no_network)


# ------------------------------------------------------------------ load_idx

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", list(CODES))
def test_idx_round_trip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    if dtype == "uint8":
        a = np.arange(30, dtype=np.uint8).reshape(2, 3, 5) * 8
    p = write(tmp_path / "a.idx", idx_bytes(a), gz)
    got = load_idx(p)
    assert got.shape == a.shape and got.dtype == np.dtype(dtype)
    assert got.dtype.isnative and got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_array_equal(got, a)


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    raw_named_gz = write(tmp_path / "raw.gz", idx_bytes(a), gz=False)
    gz_named_raw = write(tmp_path / "packed-ubyte", idx_bytes(a), gz=True)
    np.testing.assert_array_equal(load_idx(raw_named_gz), a)
    np.testing.assert_array_equal(load_idx(str(gz_named_raw)), a)


def test_idx_bad_magic(tmp_path):
    p = write(tmp_path / "bad-magic.gz", b"\x01\x00" + idx_bytes(np.zeros(3, np.uint8))[2:], gz=True)
    with pytest.raises(ValueError, match=r"bad-magic\.gz.*expected IDX magic 00 00.*found 01 00"):
        load_idx(p)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_truncated_payload(tmp_path, gz):
    data = idx_bytes(np.zeros((5, 4, 4), np.uint8))
    p = write(tmp_path / "train-images-idx3-ubyte", data[:-3], gz)
    with pytest.raises(ValueError) as e:
        load_idx(p)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg
    assert "expected 80 bytes of uint8 data for shape (5, 4, 4), found 77" in msg


def test_idx_trailing_bytes(tmp_path):
    p = write(tmp_path / "long", idx_bytes(np.zeros(4, np.int16)) + b"\0", gz=False)
    with pytest.raises(ValueError, match=r"long: expected 8 bytes of int16 data for shape \(4,\), found 9"):
        load_idx(p)


def test_idx_truncated_header(tmp_path):
    full = idx_bytes(np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"short.*12-byte header.*found only 9"):
        load_idx(write(tmp_path / "short", full[:9], gz=False))
    with pytest.raises(ValueError, match=r"tiny.*at least 4 bytes.*found 2"):
        load_idx(write(tmp_path / "tiny", b"\0\0", gz=False))


def test_idx_truncated_gzip_stream(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(1000, dtype=np.float64)))
    p = tmp_path / "cut.gz"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"cut\.gz.*gzip"):
        load_idx(p)


def test_idx_wrong_dtype_code(tmp_path):
    p = write(tmp_path / "weird-code", idx_bytes(np.zeros(3, np.uint8), code=0x0A), gz=True)
    with pytest.raises(ValueError, match=r"weird-code.*expected an IDX dtype code.*found 0x0A"):
        load_idx(p)


def test_idx_missing_file(tmp_path):
    p = tmp_path / "nope-idx1-ubyte.gz"
    with pytest.raises(FileNotFoundError, match="nope-idx1-ubyte.gz"):
        load_idx(p)


# -------------------------------------------------------------- search order

@pytest.mark.parametrize("gz", [True, False, "mixed"], ids=["gz", "raw", "mixed"])
def test_explicit_path(tmp_path, gz):
    arrays = make_dataset(tmp_path / "explicit", gz=gz)
    result = load_fashion_mnist(path=tmp_path / "explicit")
    check_loaded(result, arrays)
    (Xtr, ytr), (Xte, yte) = result
    assert Xtr.shape == (20, 28, 28) and ytr.shape == (20,)
    assert Xte.shape == (10, 28, 28) and yte.shape == (10,)


def test_explicit_path_is_the_only_place_searched(tmp_path, monkeypatch):
    make_dataset(tmp_path / "data" / "fashion-mnist")
    monkeypatch.setenv("DEEPCORE_DATA", str(tmp_path / "data"))
    with pytest.raises(DatasetNotFoundError) as e:
        load_fashion_mnist(path=tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value)


def test_deepcore_data_beats_cache_beats_debian(tmp_path, monkeypatch):
    env = make_dataset(tmp_path / "data" / "fashion-mnist", seed=1)
    cache = make_dataset(tmp_path / "xdg-cache" / "deepcore" / "fashion-mnist", seed=2)
    debian = make_dataset(tmp_path / "debian", seed=3)
    monkeypatch.setattr(mnist_mod, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "debian"))

    monkeypatch.setenv("DEEPCORE_DATA", str(tmp_path / "data"))
    check_loaded(load_fashion_mnist(), env)
    monkeypatch.delenv("DEEPCORE_DATA")
    check_loaded(load_fashion_mnist(), cache)
    shutil.rmtree(tmp_path / "xdg-cache")
    check_loaded(load_fashion_mnist(), debian)


def test_incomplete_directory_is_skipped(tmp_path, monkeypatch):
    make_dataset(tmp_path / "data" / "fashion-mnist", seed=1)
    (tmp_path / "data" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    cache = make_dataset(tmp_path / "xdg-cache" / "deepcore" / "fashion-mnist", seed=2)
    monkeypatch.setenv("DEEPCORE_DATA", str(tmp_path / "data"))
    check_loaded(load_fashion_mnist(), cache)


def test_mnist_uses_its_own_directories(tmp_path, monkeypatch):
    make_dataset(tmp_path / "data" / "fashion-mnist", seed=1)
    digits = make_dataset(tmp_path / "data" / "mnist", seed=4)
    monkeypatch.setenv("DEEPCORE_DATA", str(tmp_path / "data"))
    check_loaded(load_mnist(), digits)
    shutil.rmtree(tmp_path / "data" / "mnist")
    cached = make_dataset(tmp_path / "xdg-cache" / "deepcore" / "mnist", seed=5)
    check_loaded(load_mnist(), cached)


def test_default_cache_is_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    arrays = make_dataset(tmp_path / "home" / ".cache" / "deepcore" / "mnist")
    check_loaded(load_mnist(), arrays)


# ---------------------------------------------------------------- validation

def test_count_mismatch_names_both_files(tmp_path):
    make_dataset(tmp_path / "d")
    write(tmp_path / "d" / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(19, np.uint8)), gz=True)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz holds 20 images but .*train-labels-idx1-ubyte\.gz holds 19 labels"):
        load_fashion_mnist(path=tmp_path / "d")


def test_label_out_of_range(tmp_path):
    make_dataset(tmp_path / "d")
    write(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.full(10, 10, np.uint8)), gz=True)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: expected labels in 0\.\.9, found 10"):
        load_mnist(path=tmp_path / "d")


def test_images_must_be_3d_uint8(tmp_path):
    make_dataset(tmp_path / "d")
    write(tmp_path / "d" / "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros((10, 784), np.uint8)), gz=True)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: expected 3-D uint8 images, found 2-D"):
        load_mnist(path=tmp_path / "d")


# ----------------------------------------------------------------- not found

def test_not_found_message_fashion(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPCORE_DATA", str(tmp_path / "data"))
    with pytest.raises(DatasetNotFoundError) as e:
        load_fashion_mnist()
    assert isinstance(e.value, FileNotFoundError)
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "DEEPCORE_DATA" in msg and "download=True" in msg
    for place in (tmp_path / "data" / "fashion-mnist", tmp_path / "xdg-cache" / "deepcore" / "fashion-mnist", tmp_path / "no-debian"):
        assert str(place) in msg


def test_not_found_message_mnist(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_mnist()
    msg = str(e.value)
    assert "DEEPCORE_DATA is not set" in msg and "$DEEPCORE_DATA/mnist" in msg
    assert "load_mnist(download=True)" in msg
    assert "apt-get" not in msg  # no Debian package for MNIST


# ------------------------------------------------------------------ download

@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local "server" directory plus a fetcher that copies from it."""
    src = tmp_path / "mirror"
    arrays = make_dataset(src, gz=True, seed=7)
    fetched = []

    def fake_fetch(url, dest):
        fetched.append(url)
        shutil.copyfile(src / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(mnist_mod, "_fetch", fake_fetch)
    return src, arrays, fetched


def table(src, algo, of):
    out = {}
    for stem in STEMS:
        blob = (src / (stem + ".gz")).read_bytes()
        data = gzip.decompress(blob) if of == "decompressed" else blob
        out[stem] = mnist_mod.Checksum(algo, of, hashlib.new(algo, data).hexdigest())
    return out


def test_download_with_good_checksums(tmp_path, monkeypatch, mirror):
    src, arrays, fetched = mirror
    monkeypatch.setitem(mnist_mod.CHECKSUMS, "fashion-mnist", table(src, "sha256", "decompressed"))
    check_loaded(load_fashion_mnist(download=True), arrays)
    cache = tmp_path / "xdg-cache" / "deepcore" / "fashion-mnist"
    assert sorted(os.listdir(cache)) == sorted(s + ".gz" for s in STEMS)  # no temp files left
    assert fetched == [mnist_mod.BASE_URLS["fashion-mnist"] + s + ".gz" for s in mnist_mod.FILES.values()]
    # Second call finds the cache and fetches nothing more.
    check_loaded(load_fashion_mnist(download=True), arrays)
    assert len(fetched) == 4


def test_download_via_env_and_compressed_md5(tmp_path, monkeypatch, mirror):
    src, arrays, fetched = mirror
    monkeypatch.setitem(mnist_mod.CHECKSUMS, "mnist", table(src, "md5", "compressed"))
    monkeypatch.setenv("DEEPCORE_ALLOW_DOWNLOAD", "1")
    check_loaded(load_mnist(), arrays)
    assert all(u.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for u in fetched)
    assert (tmp_path / "xdg-cache" / "deepcore" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_download_bad_checksum_removes_file(tmp_path, monkeypatch, mirror):
    src, _, _ = mirror
    bad = table(src, "sha256", "decompressed")
    bad["train-labels-idx1-ubyte"] = mnist_mod.Checksum("sha256", "decompressed", "0" * 64)
    monkeypatch.setitem(mnist_mod.CHECKSUMS, "fashion-mnist", bad)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: expected sha256 0{64}.*found [0-9a-f]{64}"):
        load_fashion_mnist(download=True)
    cache = tmp_path / "xdg-cache" / "deepcore" / "fashion-mnist"
    # Only the file verified before the failure is kept; nothing partial remains.
    assert os.listdir(cache) == ["train-images-idx3-ubyte.gz"]


def test_shipped_checksum_table_is_well_formed():
    for name, entries in mnist_mod.CHECKSUMS.items():
        assert set(entries) == set(STEMS), name
        for ck in entries.values():
            assert ck.of in ("decompressed", "compressed")
            assert len(ck.hexdigest) == hashlib.new(ck.algo).digest_size * 2


# ------------------------------------------------------------------ real data

def test_real_fashion_mnist_from_debian_package():
    if not all((DEBIAN_DIR / (s + ".gz")).is_file() for s in STEMS):
        pytest.skip(f"Fashion-MNIST not installed in {DEBIAN_DIR} (apt-get install dataset-fashion-mnist)")
    (Xtr, ytr), (Xte, yte) = load_fashion_mnist(path=DEBIAN_DIR)
    assert Xtr.shape == (60000, 28, 28) and ytr.shape == (60000,)
    assert Xte.shape == (10000, 28, 28) and yte.shape == (10000,)
    for a in (Xtr, ytr, Xte, yte):
        assert a.dtype == np.uint8 and a.flags.c_contiguous
    assert ytr.min() == 0 and ytr.max() == 9 and yte.min() == 0 and yte.max() == 9
    # Balanced classes: 6000 / 1000 of each.
    assert (np.bincount(ytr) == 6000).all() and (np.bincount(yte) == 1000).all()
    # The shipped SHA-256 constants match the packaged files.
    for stem, ck in mnist_mod.CHECKSUMS["fashion-mnist"].items():
        assert mnist_mod._digest(DEBIAN_DIR / (stem + ".gz"), ck) == ck.hexdigest, stem


# ------------------------------------------------------------------- fallback

def test_digits_fallback():
    pytest.importorskip("sklearn", reason="scikit-learn not installed")
    (Xtr, ytr), (Xte, yte) = load_digits_fallback()
    assert Xtr.shape == (1438, 8, 8) and Xte.shape == (359, 8, 8)
    assert ytr.shape == (1438,) and yte.shape == (359,)
    for a in (Xtr, ytr, Xte, yte):
        assert a.dtype == np.uint8
    assert Xtr.max() == 255 and Xtr.min() == 0
    assert set(np.unique(ytr)) == set(range(10))
    (Xtr2, _), (Xte2, _) = load_digits_fallback()
    np.testing.assert_array_equal(Xtr, Xtr2)  # deterministic split
    np.testing.assert_array_equal(Xte, Xte2)
