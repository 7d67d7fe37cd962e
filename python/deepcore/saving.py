"""Weights files in the safetensors format, written atomically.

Layout (https://github.com/huggingface/safetensors): 8-byte little-endian
header length N, N bytes of JSON {name: {"dtype", "shape", "data_offsets"}},
then the raw little-endian tensor bytes. Never pickle.

A write goes to a temporary file in the target directory, is fsynced, then
renamed over the target: a failed or interrupted save leaves the previous
file untouched.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile

import numpy as np

_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64, "U8": np.uint8}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


def atomic_write(path, write_fn) -> None:
    """Call write_fn(fileobj) on a temp file beside path, fsync, rename over path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save to {path!r}: directory {directory!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save_safetensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write {name: array} to path atomically."""
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        arr = np.require(arr, requirements="C")  # keeps 0-d shapes (ascontiguousarray makes them (1,))
        if arr.dtype not in _CODES:
            raise TypeError(f"save_safetensors: tensor {name!r} has unsupported dtype {arr.dtype}")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _CODES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # align the data section to 8 bytes

    def write(f):
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)

    atomic_write(path, write)


def load_safetensors(path) -> tuple[dict, dict]:
    """Read a safetensors file -> ({name: array}, metadata). Raises ValueError
    naming the file for anything malformed."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: not a safetensors file (only {len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"{path}: corrupt safetensors header (header length {n} exceeds the file size {len(raw)})")
    try:
        header = json.loads(raw[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", {}) or {}
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            shape = tuple(int(s) for s in info["shape"])
            start, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: corrupt entry for tensor {name!r}: {info!r}") from None
        if not (0 <= start <= end <= len(data)) or end - start != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name!r} of shape {shape} has data offsets [{start}, {end}] "
                             f"that do not fit its size or the file ({len(data)} data bytes)")
        out[name] = np.frombuffer(data[start:end], dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    return out, metadata
