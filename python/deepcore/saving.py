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

# The safetensors dtypes that NumPy can hold (BF16 and the FP8 codes it cannot).
_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I8": np.int8, "I16": np.int16,
           "I32": np.int32, "I64": np.int64, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32,
           "U64": np.uint64, "BOOL": np.bool_}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_METADATA = "__metadata__"


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
    data = safetensors_bytes(tensors, metadata)
    atomic_write(path, lambda f: f.write(data))


def safetensors_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    """{name: array} (and string metadata) as the bytes of a safetensors file."""
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"save_safetensors: tensor names must be strings, got {name!r}")
        if name == _METADATA:
            raise ValueError(f"save_safetensors: a tensor cannot be named {_METADATA!r}: the header keeps "
                             "the file's metadata under that key")
        arr = np.require(arr, requirements="C")  # keeps 0-d shapes (ascontiguousarray makes them (1,))
        if arr.dtype not in _CODES:
            raise TypeError(f"save_safetensors: tensor {name!r} has unsupported dtype {arr.dtype}")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _CODES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    if metadata:
        header[_METADATA] = {str(k): str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # align the data section to 8 bytes

    return b"".join([struct.pack("<Q", len(head)), head, *blobs])


def load_safetensors(path) -> tuple[dict, dict]:
    """Read a safetensors file -> ({name: array}, metadata). Raises ValueError
    naming the file for anything malformed, checked as the safetensors package
    checks it: shapes and offsets are non-negative integers, each tensor's bytes
    fit its dtype and shape, the tensors cover the data section back to back
    (no gap, no overlap, nothing after them), metadata maps strings to strings."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    return safetensors_from_bytes(raw, path)


def safetensors_from_bytes(raw: bytes, path="safetensors data") -> tuple[dict, dict]:
    """load_safetensors on bytes already read (``path`` names them in errors)."""
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
    metadata = header.pop(_METADATA, None)
    if metadata is None:
        metadata = {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise ValueError(f"{path}: corrupt safetensors header ({_METADATA} must map strings to strings, "
                         f"got {metadata!r})")
    data = memoryview(raw)[8 + n:]

    def count(v):  # a JSON integer >= 0 (not a float, string or bool)
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    entries = []
    for name, info in header.items():
        if not (isinstance(info, dict) and isinstance(info.get("shape"), list)
                and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
                and all(count(v) for v in info["shape"] + info["data_offsets"])):
            raise ValueError(f"{path}: corrupt entry for tensor {name!r}: {info!r} (expected "
                             '{"dtype": ..., "shape": [sizes >= 0], "data_offsets": [start, end]})')
        code = info.get("dtype")
        if code not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {code}, which deepcore cannot read "
                             f"(it reads {', '.join(_DTYPES)})")
        dtype = np.dtype(_DTYPES[code]).newbyteorder("<")
        shape = tuple(info["shape"])
        start, end = info["data_offsets"]
        if end < start or end - start != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name!r} of shape {shape} and dtype {code} has data offsets "
                             f"[{start}, {end}], which do not span its {int(np.prod(shape)) * dtype.itemsize} bytes")
        entries.append((start, end, name, dtype, shape))
    pos = 0
    for start, end, name, _, _ in sorted(entries, key=lambda e: e[:2]):
        if start != pos:
            raise ValueError(f"{path}: tensor {name!r} has data offsets [{start}, {end}], but the data before it "
                             f"end at {pos}: the tensors must cover the data section back to back")
        pos = end
    if pos != len(data):
        raise ValueError(f"{path}: the tensors cover {pos} bytes of the {len(data)}-byte data section "
                         f"(a truncated or padded file)")
    out = {}
    for start, end, name, dtype, shape in entries:
        out[name] = np.frombuffer(data[start:end], dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    return out, metadata


def register_serializable(package="Custom", name=None):
    """Register a custom layer or model class for model files (see
    deepcore.models.serialization.register_serializable)."""
    from .models.serialization import register_serializable as register
    return register(package, name)


def load_model(filepath, custom_objects=None, compile=True):  # noqa: A002
    """deepcore.models.load_model."""
    from .models.serialization import load_model as load
    return load(filepath, custom_objects, compile)
