"""Writing and inspecting .bnb model files (the format: docs/format.md).

    >>> from bitnn.format import Bits, write_bnb, read_header
    >>> write_bnb("m.bnb", {"model": {"kind": "classifier", "name": "tiny"}},
    ...           {"fc.weight": Bits.from_array(w01), "scale": np.ones(3, np.float32)})
    >>> read_header("m.bnb")["tensors"]["fc.weight"]
    {'dtype': 'bits', 'shape': [10, 784], 'offset': 0, 'nbytes': 1040}

Reading a file for use goes through the C loader, which validates all of it:
``bitnn._core.BnbFile.open(path)``. :func:`read_header` here only parses the
preamble and the JSON (no checksum, no tensor checks), for tools that want a
look without the compiled core.

:func:`pack_file` and :func:`fix_checksum` build raw file bytes from parts
that may be deliberately wrong; the tests use them to craft invalid files
whose checksum is still right.
"""
from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from typing import NamedTuple

import numpy as np

from bitnn.errors import FormatError

MAGIC = b"BITNNBNB"
VERSION = 1
PREAMBLE_SIZE = 48
ALIGN = 64
MAX_HEADER = 64 << 20      # bytes of JSON
MAX_DIMS = 4
MAX_DIM = 1 << 40          # largest extent of one dimension
MAX_JSON_DEPTH = 64        # nested arrays/objects (csrc/format/json.h BJSON_MAX_DEPTH)
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_U64 = (1 << 64) - 1
# magic, version, flags, header_len, data_offset, data_len, checksum
_PREAMBLE = struct.Struct("<8sIIQQQQ")
assert _PREAMBLE.size == PREAMBLE_SIZE

__all__ = ["Bits", "Preamble", "write_bnb", "encode_bnb", "write_atomic", "read_header",
           "read_preamble", "encode_tensors", "pack_file", "fix_checksum", "fnv1a64", "align64"]


def align64(n: int) -> int:
    """n rounded up to a multiple of 64."""
    return (n + ALIGN - 1) // ALIGN * ALIGN


def fnv1a64(data, h: int = FNV_OFFSET) -> int:
    """64-bit FNV-1a of a bytes-like object, continuing from ``h`` (docs/format.md)."""
    try:
        from bitnn import _core
    except ImportError:  # pure Python: slow, but correct
        for byte in memoryview(data).cast("B"):
            h = ((h ^ byte) * FNV_PRIME) & _U64
        return h
    return _core.fnv1a64(data, h)


# ------------------------------------------------------------------ tensors
class Bits:
    """A packed binary tensor and its logical shape.

    ``words``: uint64 array ``(rows, ceil(cols/64))`` packed as in
    docs/packing.md, where ``rows = shape[0]`` and ``cols = prod(shape[1:])``;
    a 1-D ``shape = (n,)`` is one row of n bits (``words`` may then be 1-D,
    as :func:`bitnn.pack_bits` returns for a bias). Padding bits must be 0.
    """

    __slots__ = ("words", "shape")

    def __init__(self, words, shape):
        shape = _check_shape(shape)
        rows, cols = _rows_cols(shape)
        w = words
        if not isinstance(w, np.ndarray) or w.dtype != np.uint64:
            raise TypeError("Bits words must be a numpy uint64 array (see bitnn.pack_bits)")
        wpr = (cols + 63) // 64
        if w.ndim == 1 and rows == 1:
            w = w.reshape(1, -1)
        if w.shape != (rows, wpr):
            raise ValueError(f"Bits words have shape {w.shape}, expected ({rows}, {wpr}) "
                             f"for shape {list(shape)} ({rows} rows of {cols} bits)")
        w = np.ascontiguousarray(w, dtype="<u8")
        if cols % 64 and (w[:, -1] >> np.uint64(cols % 64)).any():
            raise ValueError(f"Bits words have non-zero padding bits (beyond bit {cols} of a row)")
        self.words = w
        self.shape = shape

    @classmethod
    def from_array(cls, bits) -> Bits:
        """Pack a {0,1} array of 1 to 4 dimensions (its shape is kept)."""
        from bitnn.ops import pack_bits

        a = np.asarray(bits)
        shape = _check_shape(a.shape)
        rows, cols = _rows_cols(shape)
        return cls(pack_bits(a.reshape(rows, cols)), shape)

    @property
    def rows(self) -> int:
        return _rows_cols(self.shape)[0]

    @property
    def cols(self) -> int:
        return _rows_cols(self.shape)[1]

    def unpack(self) -> np.ndarray:
        """The {0,1} uint8 array of shape ``self.shape``."""
        from bitnn.ops import unpack_bits

        return unpack_bits(self.words, self.cols).reshape(self.shape)

    def __repr__(self):
        return f"Bits(shape={list(self.shape)}, words={self.words.shape})"


def _check_shape(shape) -> tuple:
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"a shape is a sequence of ints, got {shape!r}") from None
    if not 1 <= len(dims) <= MAX_DIMS:
        raise ValueError(f"a tensor has 1 to {MAX_DIMS} dimensions, got shape {list(dims)}")
    out = []
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"shape entries must be ints, got {d!r} in {list(dims)}")
        if not 1 <= int(d) <= MAX_DIM:
            raise ValueError(f"each dimension must be from 1 to 2^40, got shape {list(dims)}")
        out.append(int(d))
    return tuple(out)


def _rows_cols(shape) -> tuple:
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


def _layout(tensors: dict):
    """(entries for the header, chunks of the data region, data_len)."""
    if not isinstance(tensors, dict):
        raise TypeError("tensors must be a dict: name -> Bits or float32 array")
    entries, chunks, end = {}, [], 0
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
        _check_text(name, "tensor name")
        if isinstance(t, Bits):
            dtype, shape, arr = "bits", t.shape, t.words
        elif isinstance(t, np.ndarray) and t.dtype == np.float32:
            dtype, shape = "f32", _check_shape(t.shape)
            arr = np.ascontiguousarray(t, dtype="<f4")
        elif isinstance(t, np.ndarray) and t.dtype == np.uint64:
            raise TypeError(f"tensor {name!r}: wrap packed bits as Bits(words, shape) so that "
                            "the logical shape is recorded")
        else:
            of = f" of {t.dtype}" if hasattr(t, "dtype") else ""
            raise TypeError(f"tensor {name!r}: expected Bits or a float32 numpy array, got "
                            f"{type(t).__name__}{of}")
        offset = align64(end)
        if offset > end:
            chunks.append(bytes(offset - end))
        raw = memoryview(arr).cast("B")
        entries[name] = {"dtype": dtype, "shape": list(shape), "offset": offset,
                         "nbytes": raw.nbytes}
        chunks.append(raw)
        end = offset + raw.nbytes
    return entries, chunks, end


def encode_tensors(tensors: dict):
    """(the header's "tensors" entries, the data region as bytes) for ``tensors``."""
    entries, chunks, _ = _layout(tensors)
    return entries, b"".join(chunks)


# --------------------------------------------------------------------- meta
def _check_text(s: str, what: str):
    if "\0" in s:
        raise ValueError(f"{what} {s!r} contains a NUL character, which .bnb headers do not allow")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} {s!r} is not valid Unicode ({e.reason})") from None


def _plain(obj, depth: int, where: str):
    """obj as plain JSON values, checked against what the C parser accepts."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    elif isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        try:
            float(obj)
        except OverflowError:
            raise ValueError(f"{where}: integer {obj} is too large for a JSON number") from None
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where}: {obj} is not allowed (JSON has no NaN or infinity)")
        return obj
    if isinstance(obj, str):
        _check_text(obj, f"{where}: string")
        return obj
    if isinstance(obj, (dict, list, tuple)):
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                if not isinstance(k, str):
                    raise TypeError(f"{where}: JSON object keys must be str, got {k!r}")
                _check_text(k, f"{where}: key")
                out[k] = _plain(v, depth + 1, f"{where}[{k!r}]")
            return out
        return [_plain(v, depth + 1, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where}: {type(obj).__name__} cannot be stored in a JSON header")


def _header_bytes(meta: dict, entries: dict) -> bytes:
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    if "tensors" in meta:
        raise ValueError('meta must not contain "tensors": write_bnb writes that key itself')
    doc = _plain(meta, 1, "meta")  # depth = nesting level of a container; the top-level object is 1
    doc["tensors"] = entries
    text = json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(text) > MAX_HEADER:
        raise ValueError(f"the JSON header is {len(text)} bytes, more than the 64 MiB limit")
    return text


# ------------------------------------------------------------------- writing
def write_bnb(path, meta: dict, tensors: dict) -> int:
    """Write a .bnb file atomically; returns its size in bytes.

    ``meta``: the header's keys other than "tensors" (docs/format.md: model,
    eps, input, labels, layers, tokenizer, calibration, training); numpy
    scalars and arrays are converted to JSON numbers and lists. ``tensors``:
    name -> :class:`Bits` or float32 numpy array, stored in this order. The
    file is written to a temporary file in the same directory, fsync'ed and
    renamed over ``path``, so readers never see a partial file.
    """
    entries, chunks, data_len = _layout(tensors)
    header = _header_bytes(meta, entries)
    data_offset = align64(PREAMBLE_SIZE + len(header))
    pad = bytes(data_offset - PREAMBLE_SIZE - len(header))
    h = fnv1a64(pad, fnv1a64(header))
    for c in chunks:
        h = fnv1a64(c, h)
    preamble = _PREAMBLE.pack(MAGIC, VERSION, 0, len(header), data_offset, data_len, h)
    write_atomic(path, [preamble, header, pad] + chunks)
    return data_offset + data_len


def encode_bnb(meta: dict, tensors: dict) -> bytes:
    """The bytes :func:`write_bnb` would write, in memory (to validate before writing)."""
    entries, chunks, _ = _layout(tensors)
    return pack_file(_header_bytes(meta, entries), b"".join(chunks))


def write_atomic(path, pieces) -> None:
    """Write bytes-like ``pieces`` to ``path`` through a temporary file in the same
    directory, fsync'ed and renamed over ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: the directory {directory!r} does not "
                                "exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a directory")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in pieces:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _new_file_mode(path) -> int:
    """Keep the mode of a file being replaced, else 0o666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    umask = 0o022
    try:
        with open("/proc/self/status") as f:  # Linux: read the umask without changing it
            for line in f:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o666 & ~umask


def _fsync_dir(directory):
    """Make the rename durable (POSIX); best effort elsewhere."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    try:
        fd = os.open(directory, os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------- reading
class Preamble(NamedTuple):
    magic: bytes
    version: int
    flags: int
    header_len: int
    data_offset: int
    data_len: int
    checksum: int


def read_preamble(source) -> Preamble:
    """The 48-byte preamble of a file (a path) or of file bytes, as stored.

    Raises FormatError for bad magic, an unsupported version or flags, or a
    header_len / data_offset that break docs/format.md. Does not check the
    file size or the checksum.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:PREAMBLE_SIZE])
        name = "data"
    else:
        name = os.fspath(source)
        with open(name, "rb") as f:
            head = f.read(PREAMBLE_SIZE)
    if head[:8] != MAGIC[:len(head[:8])]:
        raise FormatError(f"{name}: not a .bnb file (the first bytes are {head[:8]!r}, "
                          f"expected {MAGIC!r})")
    if len(head) < PREAMBLE_SIZE:
        raise FormatError(f"{name}: truncated: {len(head)} bytes, shorter than the "
                          f"{PREAMBLE_SIZE}-byte preamble")
    p = Preamble(*_PREAMBLE.unpack(head))
    if p.version != VERSION:
        raise FormatError(f"{name}: unsupported .bnb version {p.version} "
                          f"(this bitnn reads {VERSION})")
    if p.flags != 0:
        raise FormatError(f"{name}: unsupported flags 0x{p.flags:08x} (must be 0)")
    if not 1 <= p.header_len <= MAX_HEADER:
        raise FormatError(f"{name}: header_len {p.header_len} is not from 1 to 64 MiB")
    if p.data_offset != align64(PREAMBLE_SIZE + p.header_len):
        raise FormatError(f"{name}: data_offset {p.data_offset}, expected "
                          f"{align64(PREAMBLE_SIZE + p.header_len)}")
    return p


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise FormatError(f"duplicate key {k!r} in the JSON header")
        d[k] = v
    return d


def read_header(path) -> dict:
    """The parsed JSON header of a .bnb file, without the C core.

    Checks the preamble (see :func:`read_preamble`) and that the JSON parses
    with no duplicate keys; does NOT verify the checksum or the tensors (the
    C loader, ``bitnn._core.BnbFile``, does all of that).
    """
    p = read_preamble(path)
    with open(os.fspath(path), "rb") as f:
        f.seek(PREAMBLE_SIZE)
        text = f.read(p.header_len)
    if len(text) < p.header_len:
        raise FormatError(f"{os.fspath(path)}: truncated inside the JSON header")
    try:
        doc = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        if isinstance(e, FormatError):
            raise FormatError(f"{os.fspath(path)}: {e}") from None
        raise FormatError(f"{os.fspath(path)}: invalid JSON header: {e}") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{os.fspath(path)}: the JSON header must be an object")
    return doc


def _reject_constant(name):
    raise FormatError(f"{name} is not valid JSON")


# --------------------------------------------------- raw files (for tests)
def pack_file(header, data=b"", *, magic: bytes = MAGIC, version: int = VERSION, flags: int = 0,
              header_len: int | None = None, data_offset: int | None = None,
              data_len: int | None = None, checksum: int | None = None,
              padding: bytes | None = None) -> bytes:
    """Raw file bytes: preamble + header + padding + data, with any field overridden.

    ``header`` is a dict (JSON-encoded here, as write_bnb would) or the exact
    bytes/str to store. Fields left as None get their correct values
    (header_len = len(header), data_offset = align64(48 + header_len),
    data_len = len(data), zero padding up to align64(48 + len(header)), and
    the checksum of everything after the preamble), so a test can break one
    thing at a time.
    """
    if isinstance(header, dict):
        header = json.dumps(header, ensure_ascii=False).encode("utf-8")
    elif isinstance(header, str):
        header = header.encode("utf-8")
    header = bytes(header)
    data = bytes(data)
    if padding is None:
        padding = bytes(align64(PREAMBLE_SIZE + len(header)) - PREAMBLE_SIZE - len(header))
    body = header + bytes(padding) + data
    pre = _PREAMBLE.pack(
        bytes(magic),
        version,
        flags,
        len(header) if header_len is None else header_len,
        align64(PREAMBLE_SIZE + len(header)) if data_offset is None else data_offset,
        len(data) if data_len is None else data_len,
        fnv1a64(body) if checksum is None else checksum,
    )
    return pre + body


def fix_checksum(raw) -> bytes:
    """``raw`` with the preamble's checksum recomputed over bytes 48 to the end."""
    raw = bytes(raw)
    if len(raw) < PREAMBLE_SIZE:
        return raw
    return raw[:40] + struct.pack("<Q", fnv1a64(raw[PREAMBLE_SIZE:])) + raw[PREAMBLE_SIZE:]


def __getattr__(name):
    # BnbFile lives in the compiled core; import it only when asked for
    if name == "BnbFile":
        from bitnn._core import BnbFile

        return BnbFile
    raise AttributeError(f"module 'bitnn.format' has no attribute {name!r}")
