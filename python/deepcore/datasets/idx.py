"""Reader for the IDX format used by MNIST and Fashion-MNIST.

Layout: two zero bytes, a dtype code, the number of dimensions, one
big-endian uint32 per dimension, then the data in C order (big-endian for
multi-byte types). Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

__all__ = ["load_idx"]

_GZIP_MAGIC = b"\x1f\x8b"

# IDX dtype code -> on-disk (big-endian) numpy dtype.
_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: str) -> bytes:
    """Whole file contents, gunzipped if it starts with the gzip magic."""
    with open(path, "rb") as f:
        # Detect by content, not by name: a mirror may serve raw data under a
        # .gz name or vice versa.
        compressed = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if not compressed:
            return f.read()
        try:
            with gzip.GzipFile(fileobj=f) as gz:
                return gz.read()
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise ValueError(
                f"{path}: expected a complete gzip stream, found corrupt or "
                f"truncated data ({e})"
            ) from e


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a numpy array.

    Compression is detected from the gzip magic bytes, not the file name.
    The header and the payload size are checked strictly.

    Returns:
        A new, writable, C-contiguous array in native byte order whose dtype
        is given by the file (uint8, int8, int16, int32, float32 or float64).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: bad magic, unknown dtype code, truncated header, corrupt
            gzip data, or a payload whose size is not ``prod(dims) * itemsize``.
            The message names the file, what was expected and what was found.
    """
    path = os.fspath(path)
    data = _read_bytes(path)

    if len(data) < 4:
        raise ValueError(
            f"{path}: expected an IDX header of at least 4 bytes, found {len(data)} bytes"
        )
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path}: expected IDX magic 00 00 in the first two bytes, "
            f"found {data[:2].hex(' ')} (not an IDX file?)"
        )
    code, ndim = data[2], data[3]
    dtype = _DTYPES.get(code)
    if dtype is None:
        known = ", ".join(f"0x{c:02X} ({d.name})" for c, d in _DTYPES.items())
        raise ValueError(f"{path}: expected an IDX dtype code in {known}, found 0x{code:02X}")

    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{path}: expected a {header}-byte header for {ndim} dimensions, "
            f"found only {len(data)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    count = math.prod(shape)  # Python int: no overflow for hostile dims
    expected = count * dtype.itemsize
    found = len(data) - header
    if found != expected:
        raise ValueError(
            f"{path}: expected {expected} bytes of {dtype.name} data for shape "
            f"{shape}, found {found}"
        )

    arr = np.frombuffer(data, dtype, count=count, offset=header).reshape(shape)
    # astype copies: the result owns its memory (frombuffer over bytes is
    # read-only) and is in native byte order.
    return arr.astype(dtype.newbyteorder("="), order="C")
