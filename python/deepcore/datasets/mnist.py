"""MNIST and Fashion-MNIST loaders.

Files are looked up locally; nothing is downloaded unless the caller asks
(``download=True`` or ``DEEPCORE_ALLOW_DOWNLOAD=1``). Downloads are verified
against the checksum table ``CHECKSUMS`` before they are kept.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .idx import load_idx

__all__ = ["DatasetNotFoundError", "load_fashion_mnist", "load_mnist"]


class DatasetNotFoundError(FileNotFoundError):
    """No directory holding the dataset files was found (and download is off)."""


# Debian/Ubuntu package dataset-fashion-mnist installs the .gz files here.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# Role -> file stem; each file may exist as <stem> or <stem>.gz.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class Checksum(NamedTuple):
    algo: str  # any hashlib name
    of: str  # "decompressed" (IDX bytes) or "compressed" (the .gz as served)
    hexdigest: str


# Decompressed SHA-256 is preferred (independent of gzip settings); for MNIST
# only torchvision's MD5 of the served .gz files is available.
CHECKSUMS = {
    "fashion-mnist": {
        "train-images-idx3-ubyte": Checksum("sha256", "decompressed", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte": Checksum("sha256", "decompressed", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte": Checksum("sha256", "decompressed", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte": Checksum("sha256", "decompressed", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
    "mnist": {
        "train-images-idx3-ubyte": Checksum("md5", "compressed", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte": Checksum("md5", "compressed", "d53e105ee54ea40749a09fcbcd1e9432"),
        "t10k-images-idx3-ubyte": Checksum("md5", "compressed", "9fb629c4189551a2d022fa330f9573f3"),
        "t10k-labels-idx1-ubyte": Checksum("md5", "compressed", "ec29112dd5afa0611ce80d1b7f02629c"),
    },
}

BASE_URLS = {
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
}

_TITLES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}
_FUNCS = {"fashion-mnist": "load_fashion_mnist", "mnist": "load_mnist"}


# --------------------------------------------------------------------- search

def _cache_dir(name: str) -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/deepcore/<name>``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore empty or relative values.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "deepcore" / name


def _candidates(name: str, path) -> list[tuple[Path | None, str]]:
    """(directory, label) pairs in search order; directory None = not configured."""
    if path is not None:
        return [(Path(path), "path argument")]
    out: list[tuple[Path | None, str]] = []
    root = os.environ.get("DEEPCORE_DATA")
    # Only $DEEPCORE_DATA/<name>, never $DEEPCORE_DATA itself: MNIST and
    # Fashion-MNIST use identical file names and must not be confused.
    out.append((Path(root) / name if root else None, "$DEEPCORE_DATA/" + name))
    out.append((_cache_dir(name), "user cache"))
    if name == "fashion-mnist":
        out.append((Path(DEBIAN_FASHION_MNIST_DIR), "Debian package dataset-fashion-mnist"))
    return out


def _find_file(directory: Path, stem: str) -> Path | None:
    # Prefer the raw file when both exist: it loads without decompression.
    for fname in (stem, stem + ".gz"):
        p = directory / fname
        if p.is_file():
            return p
    return None


def _missing(directory: Path) -> list[str]:
    return [s for s in FILES.values() if _find_file(directory, s) is None]


def _describe(directory: Path | None, label: str) -> str:
    if directory is None:
        return f"{label} (DEEPCORE_DATA is not set)"
    if not directory.is_dir():
        return f"{directory} ({label}): no such directory"
    miss = _missing(directory)
    return f"{directory} ({label}): missing " + ", ".join(m + "[.gz]" for m in miss)


def _not_found(name: str, searched: list[tuple[Path | None, str]]) -> DatasetNotFoundError:
    title, func = _TITLES[name], _FUNCS[name]
    lines = [
        f"{title} not found. Each place must hold all four files "
        + ", ".join(s + "[.gz]" for s in FILES.values()) + ". Searched:",
        *("  - " + _describe(d, lbl) for d, lbl in searched),
        "To get the files, either:",
    ]
    if name == "fashion-mnist":
        lines.append("  - install the Debian/Ubuntu package: sudo apt-get install dataset-fashion-mnist")
    lines += [
        f"  - put the four files in $DEEPCORE_DATA/{name}",
        f"  - call {func}(download=True) (or set DEEPCORE_ALLOW_DOWNLOAD=1) to download "
        f"them from {BASE_URLS[name]} into {_cache_dir(name)}",
    ]
    return DatasetNotFoundError("\n".join(lines))


# ------------------------------------------------------------------- download

def _fetch(url: str, dest: str) -> None:
    """Download ``url`` to the local file ``dest`` (verification is done by the caller)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as f:
            shutil.copyfileobj(resp, f, 1 << 20)
    except urllib.error.URLError as e:
        raise OSError(f"downloading {url} failed: {e}") from e


def _digest(path: Path, ck: Checksum) -> str:
    h = hashlib.new(ck.algo)
    with open(path, "rb") as raw:
        f = raw
        if ck.of == "decompressed" and raw.read(2) == b"\x1f\x8b":
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw)
        else:
            raw.seek(0)
        # A corrupt gzip stream raises here; the caller treats it as a mismatch.
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(name: str, target: Path) -> None:
    """Fetch the files missing from ``target``, verifying each before keeping it."""
    target.mkdir(parents=True, exist_ok=True)
    table = CHECKSUMS[name]
    for stem in _missing(target):
        ck = table.get(stem)
        if ck is None:  # never keep an unverified download
            raise ValueError(f"no checksum known for {name}/{stem}; refusing to download it")
        url = BASE_URLS[name] + stem + ".gz"
        # Temp file in the same directory so os.replace is atomic and a crash
        # never leaves a partial file under the real name.
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".part", dir=target)
        os.close(fd)
        try:
            _fetch(url, tmp)
            try:
                got = _digest(Path(tmp), ck)
            except (EOFError, OSError, zlib.error) as e:
                got = f"unreadable data ({e})"
            if got != ck.hexdigest:
                raise ValueError(
                    f"{url}: expected {ck.algo} {ck.hexdigest} of the {ck.of} data, "
                    f"found {got}; the download was deleted"
                )
            with open(tmp, "rb") as f:
                is_gz = f.read(2) == b"\x1f\x8b"
            # Name by content so the file matches what it holds.
            os.replace(tmp, target / (stem + ".gz" if is_gz else stem))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


# --------------------------------------------------------------------- loading

def _load_dir(directory: Path):
    paths = {role: _find_file(directory, stem) for role, stem in FILES.items()}
    arrays = {role: load_idx(p) for role, p in paths.items()}
    out = []
    for split in ("train", "test"):
        ip, lp = paths[split + "_images"], paths[split + "_labels"]
        X, y = arrays[split + "_images"], arrays[split + "_labels"]
        if X.dtype != np.uint8 or X.ndim != 3:
            raise ValueError(f"{ip}: expected 3-D uint8 images, found {X.ndim}-D {X.dtype}")
        if y.dtype != np.uint8 or y.ndim != 1:
            raise ValueError(f"{lp}: expected 1-D uint8 labels, found {y.ndim}-D {y.dtype}")
        if len(X) != len(y):
            raise ValueError(f"{ip} holds {len(X)} images but {lp} holds {len(y)} labels")
        if y.size and y.max() > 9:
            raise ValueError(f"{lp}: expected labels in 0..9, found {int(y.max())}")
        out.append((X, y))
    return tuple(out)


def _load(name: str, path, download: bool):
    searched = _candidates(name, path)
    for directory, _ in searched:
        if directory is not None and directory.is_dir() and not _missing(directory):
            return _load_dir(directory)
    if not (download or os.environ.get("DEEPCORE_ALLOW_DOWNLOAD") == "1"):
        raise _not_found(name, searched)
    target = Path(path) if path is not None else _cache_dir(name)
    _download(name, target)
    return _load_dir(target)


def load_fashion_mnist(path=None, download=False):
    """Load Fashion-MNIST as ``(X_train, y_train), (X_test, y_test)``.

    Images are uint8 arrays of shape (n, 28, 28) (60000 train, 10000 test),
    labels uint8 of shape (n,) in 0..9. Each file may be raw or ``.gz``.

    Args:
        path: directory holding the four IDX files. Default None searches, in
            order, ``$DEEPCORE_DATA/fashion-mnist``, the user cache
            ``${XDG_CACHE_HOME:-~/.cache}/deepcore/fashion-mnist`` and
            ``/usr/share/datasets/fashion-mnist`` (Debian package
            dataset-fashion-mnist). If given, only ``path`` is used.
        download: default False. If True (or ``DEEPCORE_ALLOW_DOWNLOAD=1``)
            and nothing is found, download the missing files into ``path``
            (or the user cache) and verify their SHA-256.

    Raises:
        DatasetNotFoundError: not found and download not allowed; the message
            lists the places searched and how to get the files.
        ValueError: malformed files, inconsistent counts, labels outside 0..9,
            or a download whose checksum does not match.
    """
    return _load("fashion-mnist", path, download)


def load_mnist(path=None, download=False):
    """Load MNIST handwritten digits as ``(X_train, y_train), (X_test, y_test)``.

    Same shapes, dtypes and arguments as :func:`load_fashion_mnist`; the
    search order is ``$DEEPCORE_DATA/mnist`` then
    ``${XDG_CACHE_HOME:-~/.cache}/deepcore/mnist`` (there is no Debian
    package). Downloads (default False) are checked against the MD5 of the
    compressed files published by torchvision.
    """
    return _load("mnist", path, download)
