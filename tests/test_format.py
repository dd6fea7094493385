"""The .bnb format: writer (bitnn/format.py), loader (csrc/format/bnb.c, csrc/format/json.c)
and its binding (bitnn._core.BnbFile). docs/format.md is the specification.

Most malformed-file tests build the file bytes with bitnn.format.pack_file,
which fills in every field correctly unless told otherwise, so that each test
breaks exactly one thing (and the checksum still matches, unless that is the
thing being broken). `spec_valid` below is an independent Python reading of
docs/format.md; the fuzz tests check that the C loader agrees with it.
"""
import decimal
import gc
import json
import math
import os
import struct

import numpy as np
import pytest

from bitnn import FormatError, _core
from bitnn import format as F
from bitnn.format import Bits, align64, fix_checksum, pack_file, write_bnb

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BnbFile = _core.BnbFile
TWO64 = 1 << 64


# ---------------------------------------------------------------- helpers
def sample_tensors(seed=0):
    """A small model's worth of tensors with every awkward case: padding bits
    (cols % 64 != 0), a 1-D bias, a 4-D conv kernel, several words a row,
    a 64-multiple row, f32 of 1 and 3 dims."""
    rng = np.random.default_rng(seed)
    return {
        "conv1.weight": Bits.from_array(rng.integers(0, 2, (4, 3, 3, 2))),  # 4 rows x 18 bits
        "conv1.bias": Bits.from_array(rng.integers(0, 2, (4,))),  # 1 row x 4 bits
        "fc.weight": Bits.from_array(rng.integers(0, 2, (10, 70))),  # 2 words a row
        "fc.bias": Bits.from_array(rng.integers(0, 2, (10,))),
        "full": Bits.from_array(rng.integers(0, 2, (2, 64))),  # no padding bits
        "mean": rng.standard_normal(3).astype(np.float32),
        "stats": rng.standard_normal((2, 3, 2)).astype(np.float32),
    }


SAMPLE_META = {
    "model": {"kind": "classifier", "name": "tiny-\u00e9"},
    "eps": 1e-5,
    "input": {"channels": 2, "height": 4, "width": 4,
              "preprocess": {"scale": 1 / 255, "mean": [0.5, 0.5], "std": [0.25, 0.25]}},
    "labels": ["a", "b", "\u732b"],
    "layers": [{"type": "conv2d", "in_channels": 2, "out_channels": 4, "kernel_size": 3,
                "activation": "relu", "norm": "chw", "weight": "conv1.weight",
                "bias": "conv1.bias"},
               {"type": "global_avg_pool"}],
    "training": {"command": "train --epochs 1", "metrics": {"val_acc": 0.5}},
}


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.bnb"
    size = write_bnb(path, SAMPLE_META, sample_tensors())
    raw = path.read_bytes()
    assert size == len(raw)
    return path, raw


@pytest.fixture(scope="module")
def raw_sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("bnb") / "sample.bnb"
    write_bnb(path, SAMPLE_META, sample_tensors())
    return path.read_bytes()


def bad(raw, match=None):
    """raw must be rejected with FormatError (whose message matches `match`)."""
    with pytest.raises(FormatError, match=match) as ei:
        BnbFile.from_bytes(raw)
    assert str(ei.value)
    return str(ei.value)


def preamble_fields(raw):
    return list(struct.unpack("<8sIIQQQQ", raw[:48]))


def with_field(raw, index, value):
    """raw with one preamble field replaced (0 magic .. 6 checksum)."""
    f = preamble_fields(raw)
    f[index] = value
    return struct.pack("<8sIIQQQQ", *f) + raw[48:]


def file_with(entries, data, meta=None, **kw):
    """A file from tensor entries + data region (checksum right unless given)."""
    doc = dict(meta or {})
    doc["tensors"] = entries
    return pack_file(doc, data, **kw)


def one_tensor(entry, data):
    return file_with({"t": entry}, data)


INVALID = object()


def spec_json(text: bytes):
    """The JSON header as docs/format.md defines it, or INVALID if it breaks a rule.
    Numbers: int for integer literals, Decimal otherwise (exact)."""
    def pairs(ps):
        d = {}
        for k, v in ps:
            if k in d:
                raise ValueError("duplicate")
            d[k] = v
        return d

    def reject(_):
        raise ValueError("constant")

    def number(s):
        try:
            return decimal.Decimal(s)
        except decimal.InvalidOperation:
            # an exponent beyond Decimal's range (1e18446744073709551616): what a
            # double parser reads, infinity (rejected below) or zero
            return decimal.Decimal(float(s))

    try:
        doc = json.loads(text.decode("utf-8"), object_pairs_hook=pairs,
                         parse_float=number, parse_constant=reject)
    except (ValueError, RecursionError):
        return INVALID

    def ok(v, depth):
        if isinstance(v, (dict, list)):
            if depth + 1 > 64:
                return False
            items = v.items() if isinstance(v, dict) else enumerate(v)
            return all((not isinstance(k, str) or ok(k, depth)) and ok(x, depth + 1)
                       for k, x in items)
        if isinstance(v, str):
            if "\0" in v:
                return False
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogate from a \\uD800 escape
                return False
            return True
        if isinstance(v, bool) or v is None:
            return True
        try:
            return math.isfinite(float(v))
        except OverflowError:
            return False

    return doc if ok(doc, 0) else INVALID


def spec_int(v, lo, hi):
    if isinstance(v, bool):
        return None
    if isinstance(v, decimal.Decimal):
        if not v.is_finite() or v != v.to_integral_value():
            return None
        v = int(v)
    if not isinstance(v, int) or not lo <= v <= hi:
        return None
    return v


def spec_valid(raw: bytes) -> bool:
    """docs/format.md, read independently of the C loader."""
    if len(raw) < 48 or raw[:8] != b"BITNNBNB":
        return False
    _, version, flags, hl, doff, dlen, csum = struct.unpack("<8sIIQQQQ", raw[:48])
    if version != 1 or flags != 0 or not 1 <= hl <= 64 << 20:
        return False
    if doff != align64(48 + hl) or doff + dlen != len(raw):
        return False
    if F.fnv1a64(raw[48:]) != csum or any(raw[48 + hl:doff]):
        return False
    doc = spec_json(raw[48:48 + hl])
    if not isinstance(doc, dict) or not isinstance(doc.get("tensors"), dict):
        return False
    data = raw[doff:]
    spans = []
    for name, e in doc["tensors"].items():
        if not name or not isinstance(e, dict) or set(e) != {"dtype", "shape", "offset", "nbytes"}:
            return False
        if e["dtype"] not in ("bits", "f32") or not isinstance(e["shape"], list):
            return False
        shape = [spec_int(d, 1, 1 << 40) for d in e["shape"]]
        off, nb = spec_int(e["offset"], 0, 2**63 - 1), spec_int(e["nbytes"], 0, 2**63 - 1)
        if not 1 <= len(shape) <= 4 or None in shape or off is None or nb is None:
            return False
        bits = e["dtype"] == "bits"
        rows, cols = (1, shape[0]) if bits and len(shape) == 1 else (shape[0], math.prod(shape[1:]))
        want_nb = rows * -(-cols // 64) * 8 if bits else rows * cols * 4
        if nb != want_nb or off % 64 or off + nb > dlen:
            return False
        spans.append((off, nb, bits, rows, cols))
    end = 0
    for off, nb, bits, rows, cols in sorted(spans):
        if off != align64(end) or any(data[end:off]):
            return False
        end = off + nb
        if bits and cols % 64:
            words = np.frombuffer(data[off:off + nb], "<u8").reshape(rows, -1)
            if (words[:, -1] >> np.uint64(cols % 64)).any():
                return False
    return end == dlen


def c_valid(raw: bytes) -> bool:
    try:
        f = BnbFile.from_bytes(raw)
    except FormatError as e:
        assert str(e)
        return False
    for name in f.tensor_names:  # every tensor is readable
        np.asarray(f.tensor(name)).sum()
    _ = f.meta  # the JSON header is readable too
    return True


# ------------------------------------------------------------ round trip
@pytest.mark.parametrize("how", ["mmap", "read", "bytes"])
def test_round_trip(sample, how):
    path, raw = sample
    f = BnbFile.from_bytes(raw) if how == "bytes" else BnbFile.open(path, mmap=(how == "mmap"))
    tensors = sample_tensors()
    assert f.tensor_names == list(tensors)
    assert f.file_size == len(raw)
    assert f.mmapped == (how == "mmap")
    assert f.path == (None if how == "bytes" else str(path))
    meta = dict(SAMPLE_META)
    meta["tensors"] = json.loads(f.header)["tensors"]
    assert f.meta == meta
    assert f.meta == F.read_header(path)
    for name, t in tensors.items():
        got = f.tensor(name)
        assert not got.flags.writeable
        if isinstance(t, Bits):
            assert got.dtype == np.uint64 and got.shape == (t.rows, -(-t.cols // 64))
            np.testing.assert_array_equal(got, t.words)
            np.testing.assert_array_equal(Bits(np.array(got), t.shape).unpack(), t.unpack())
            assert f.meta["tensors"][name]["dtype"] == "bits"
            assert f.meta["tensors"][name]["shape"] == list(t.shape)
        else:
            assert got.dtype == np.float32 and got.shape == t.shape
            np.testing.assert_array_equal(got, t)
        assert got.ctypes.data % 64 == 0
        assert name in f
    assert "nope" not in f and 3 not in f
    with pytest.raises(KeyError, match="nope"):
        f.tensor("nope")
    with pytest.raises(TypeError):
        f.tensor(b"fc.bias")
    f.close()


def test_bits_from_array_round_trip():
    rng = np.random.default_rng(1)
    for shape in [(1,), (63,), (64,), (65,), (3, 1), (5, 129), (2, 3, 4), (7, 3, 3, 5)]:
        a = rng.integers(0, 2, shape).astype(np.uint8)
        b = Bits.from_array(a)
        np.testing.assert_array_equal(b.unpack(), a)
        rows = 1 if len(shape) == 1 else shape[0]
        assert b.words.shape == (rows, -(-math.prod(shape) // rows // 64))
        f = BnbFile.from_bytes(pack_file({"tensors": F.encode_tensors({"x": b})[0]},
                                         F.encode_tensors({"x": b})[1]))
        np.testing.assert_array_equal(f.tensor("x"), b.words)


def test_one_dimensional_bits_are_one_row(tmp_path):
    w = Bits.from_array(np.ones(100, np.uint8))
    write_bnb(tmp_path / "b.bnb", {}, {"bias": w})
    f = BnbFile(tmp_path / "b.bnb")
    assert f.tensor("bias").shape == (1, 2)
    assert f.meta["tensors"]["bias"] == {"dtype": "bits", "shape": [100], "offset": 0, "nbytes": 16}
    assert int(f.tensor("bias")[0, 1]) == (1 << 36) - 1


def test_empty_file_of_tensors(tmp_path):
    write_bnb(tmp_path / "e.bnb", {"model": {"kind": "lm", "name": "x"}}, {})
    f = BnbFile(tmp_path / "e.bnb")
    assert f.tensor_names == [] and f.meta["tensors"] == {}
    assert F.read_preamble(tmp_path / "e.bnb").data_len == 0
    bad(file_with({}, b"\0" * 64), "no tensors but data_len is 64")


def test_views_outlive_close_and_the_object(sample):
    path, _ = sample
    f = BnbFile(path)
    view = f.tensor("fc.weight")
    expect = sample_tensors()["fc.weight"].words
    f.close()
    assert f.closed
    for op in (lambda g: g.tensor("fc.weight"), lambda g: g.meta, lambda g: g.header,
               lambda g: g.tensor_names, lambda g: g.file_size, lambda g: "fc.weight" in g):
        with pytest.raises(ValueError, match="closed"):
            op(f)
    f.close()  # twice is fine
    del f
    gc.collect()
    np.testing.assert_array_equal(view, expect)  # still mapped: the view holds the file


def test_views_are_read_only(sample):
    f = BnbFile(sample[0])
    v = f.tensor("stats")
    with pytest.raises(ValueError):
        v[0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        v.flags.writeable = True


def test_context_manager_and_repr(sample):
    path, _ = sample
    with BnbFile.open(path) as f:
        assert "7 tensors" in repr(f) and "mmap" in repr(f)
        assert not f.closed
    assert f.closed and "closed" in repr(f)
    with pytest.raises(ValueError, match="closed"):
        with f:
            pass


def test_path_types(sample):
    path, _ = sample
    assert BnbFile(str(path)).tensor_names == BnbFile(os.fsencode(path)).tensor_names
    with pytest.raises(TypeError):
        BnbFile(12.5)
    with pytest.raises(ValueError, match="NUL"):
        BnbFile(str(path) + "\0x")


def test_os_errors(tmp_path):
    missing = tmp_path / "missing.bnb"
    with pytest.raises(FileNotFoundError) as ei:
        BnbFile(missing)
    assert ei.value.filename == str(missing)
    with pytest.raises(FileNotFoundError):
        BnbFile.open(missing, mmap=False)
    with pytest.raises(IsADirectoryError):
        BnbFile(tmp_path)
    with pytest.raises(FileNotFoundError):
        F.read_header(missing)


def test_from_bytes_takes_any_buffer(raw_sample):
    for buf in (raw_sample, bytearray(raw_sample), memoryview(raw_sample),
                np.frombuffer(raw_sample, np.uint8), np.frombuffer(raw_sample, np.uint8)[::1]):
        assert BnbFile.from_bytes(buf).file_size == len(raw_sample)
    doubled = np.frombuffer(raw_sample * 2, np.uint8).reshape(2, -1).T[:, 0]  # non-contiguous
    assert BnbFile.from_bytes(doubled).file_size == len(raw_sample)
    bad(b"", "truncated: file is 0 bytes")


# --------------------------------------------------------------- writer
def test_writer_is_atomic_and_keeps_mode(sample, monkeypatch):
    path, raw = sample
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    os.chmod(path, 0o640)
    write_bnb(path, {"x": 1}, {})
    assert os.stat(path).st_mode & 0o777 == 0o640

    def boom(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="fire"):
        write_bnb(path, SAMPLE_META, sample_tensors())
    assert BnbFile(path).meta == {"x": 1, "tensors": {}}  # the old file, untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["sample.bnb"]  # no temp left


def test_writer_checksum_matches_c(raw_sample):
    stored = struct.unpack("<Q", raw_sample[40:48])[0]
    assert stored == F.fnv1a64(raw_sample[48:]) == _core.fnv1a64(raw_sample[48:])


def test_fnv1a64_vectors_and_python_fallback(monkeypatch):
    vectors = {b"": 0xCBF29CE484222325, b"a": 0xAF63DC4C8601EC8C, b"foobar": 0x85944171F73967E8}
    for data, h in vectors.items():
        assert F.fnv1a64(data) == h == _core.fnv1a64(data)
    data = np.random.default_rng(2).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    assert _core.fnv1a64(data[500:], _core.fnv1a64(data[:500])) == _core.fnv1a64(data)
    import builtins

    real_import = builtins.__import__

    def no_core(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "bitnn" and fromlist and "_core" in fromlist:
            raise ImportError("no core")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_core)
    assert F.fnv1a64(data) == _core.fnv1a64(data)


@pytest.mark.parametrize("meta, tensors, exc, match", [
    ({"tensors": {}}, {}, ValueError, "must not contain"),
    ({"x": float("nan")}, {}, ValueError, "NaN"),
    ({"x": [float("inf")]}, {}, ValueError, "infinity"),
    ({1: "a"}, {}, TypeError, "keys must be str"),
    ({"x": "a\0b"}, {}, ValueError, "NUL"),
    ({"x\0": 1}, {}, ValueError, "NUL"),
    ({"x": "\ud800"}, {}, ValueError, "not valid Unicode"),
    ({"x": 10 ** 400}, {}, ValueError, "too large"),
    ({"x": object()}, {}, TypeError, "cannot be stored"),
    ([], {}, TypeError, "meta must be a dict"),
    ({}, {"w": np.zeros((2, 1), np.uint64)}, TypeError, "Bits"),
    ({}, {"w": np.zeros(3)}, TypeError, "float32"),
    ({}, {"w": [1.0]}, TypeError, "float32"),
    ({}, {"": np.zeros(3, np.float32)}, ValueError, "non-empty"),
    ({}, {"a\0": np.zeros(3, np.float32)}, ValueError, "NUL"),
    ({}, {"w": np.zeros((), np.float32)}, ValueError, "1 to 4 dimensions"),
    ({}, {"w": np.zeros((1, 1, 1, 1, 1), np.float32)}, ValueError, "1 to 4 dimensions"),
    ({}, {"w": np.zeros((2, 0), np.float32)}, ValueError, "from 1 to 2\\^40"),
    ({}, [], TypeError, "dict"),
])
def test_writer_rejects(tmp_path, meta, tensors, exc, match):
    with pytest.raises(exc, match=match):
        write_bnb(tmp_path / "x.bnb", meta, tensors)
    assert list(tmp_path.iterdir()) == []


def test_writer_depth_limit(tmp_path):
    deep = []
    for _ in range(62):  # top-level object + 63 nested levels = 64: allowed
        deep = [deep]
    write_bnb(tmp_path / "ok.bnb", {"x": deep}, {})
    assert BnbFile(tmp_path / "ok.bnb").meta["x"] == deep
    with pytest.raises(ValueError, match="nested deeper"):
        write_bnb(tmp_path / "no.bnb", {"x": [deep]}, {})


def test_writer_numpy_values(tmp_path):
    write_bnb(tmp_path / "n.bnb", {"a": np.float32(0.5), "b": np.int64(3), "c": np.arange(3)}, {})
    assert F.read_header(tmp_path / "n.bnb") == {"a": 0.5, "b": 3, "c": [0, 1, 2], "tensors": {}}


def test_bits_wrapper_checks():
    w = np.zeros((2, 1), np.uint64)
    with pytest.raises(ValueError, match="expected \\(2, 2\\)"):
        Bits(w, (2, 100))
    with pytest.raises(ValueError, match="padding bits"):
        Bits(np.array([[1 << 10]], np.uint64), (1, 10))
    with pytest.raises(TypeError, match="uint64"):
        Bits(w.astype(np.int64), (2, 64))
    with pytest.raises(TypeError, match="ints"):
        Bits(w, (2, 1.0))
    with pytest.raises(ValueError):
        Bits.from_array(np.full((2, 3), 2))
    assert Bits(np.zeros(2, np.uint64), (100,)).words.shape == (1, 2)


def test_read_header_and_preamble(sample, tmp_path):
    path, raw = sample
    p = F.read_preamble(path)
    assert p == F.read_preamble(raw)
    assert (p.magic, p.version, p.flags) == (b"BITNNBNB", 1, 0)
    assert p.data_offset % 64 == 0 and p.data_offset + p.data_len == len(raw)
    cases = {
        b"NOTABNB!" + raw[8:]: "not a .bnb file",
        raw[:20]: "truncated",
        with_field(raw, 1, 2): "version 2",
        with_field(raw, 2, 1): "flags",
        with_field(raw, 3, 0): "header_len",
        with_field(raw, 4, 0): "data_offset",
        pack_file(b'{"a": 1, "a": 2}'): "duplicate",
        pack_file(b'{"a": NaN}'): "NaN",
        pack_file(b'[1]'): "must be an object",
        pack_file(b'{"a": "\xff"}'): "invalid JSON",
        with_field(raw, 3, len(raw)): "data_offset",
    }
    for i, (data, match) in enumerate(cases.items()):
        q = tmp_path / f"{i}.bnb"
        q.write_bytes(data)
        with pytest.raises(FormatError, match=match):
            F.read_header(q)


def test_pack_file_defaults_make_a_valid_file():
    entries, data = F.encode_tensors(sample_tensors())
    raw = file_with(entries, data, {"k": "v"})
    assert spec_valid(raw) and c_valid(raw)
    assert fix_checksum(with_field(raw, 6, 0)) == raw


# ------------------------------------------------------------- preamble
def test_wrong_magic(raw_sample):
    bad(b"GGUF" + raw_sample[4:], "not a .bnb file")
    bad(b"bitnnbnb" + raw_sample[8:], "not a .bnb file")
    bad(b"\x89PNG", "not a .bnb file")
    bad(b"BITNN", "truncated: file is 5 bytes")


@pytest.mark.parametrize("version", [0, 2, 255, 0xFFFFFFFF])
def test_wrong_version(raw_sample, version):
    bad(with_field(raw_sample, 1, version), f"unsupported .bnb version {version}.*reads version 1")


def test_nonzero_flags(raw_sample):
    for flags in (1, 0x80000000):
        bad(with_field(raw_sample, 2, flags), "unsupported flags")


@pytest.mark.parametrize("header_len, match", [
    (0, "header_len is 0"),
    ((64 << 20) + 1, "exceeds the limit"),
    (TWO64 - 1, "exceeds the limit"),
    (1 << 63, "exceeds the limit"),
])
def test_header_len_out_of_range(raw_sample, header_len, match):
    bad(with_field(raw_sample, 3, header_len), match)


def test_header_len_at_the_cap(raw_sample):
    # 64 MiB is allowed: the file is then merely truncated
    raw = with_field(raw_sample, 3, 64 << 20)
    raw = with_field(raw, 4, align64(48 + (64 << 20)))
    bad(raw, "truncated")


@pytest.mark.parametrize("delta", [-64, -1, 1, 64])
def test_data_offset_mismatch(raw_sample, delta):
    off = preamble_fields(raw_sample)[4]
    bad(with_field(raw_sample, 4, off + delta), "data_offset is")


@pytest.mark.parametrize("value", [TWO64 - 1, 1 << 63, TWO64 - 64])
def test_data_offset_huge(raw_sample, value):
    bad(with_field(raw_sample, 4, value), "data_offset is")


def test_data_len_overflow_and_mismatch(raw_sample):
    doff, dlen = preamble_fields(raw_sample)[4:6]
    bad(with_field(raw_sample, 5, TWO64 - 1), "overflows 64 bits")
    bad(with_field(raw_sample, 5, TWO64 - doff), "overflows 64 bits")  # sum would wrap to exactly 0
    bad(with_field(raw_sample, 5, dlen + 1), "truncated: file is")
    bad(with_field(raw_sample, 5, 1 << 62), "truncated")
    bad(with_field(raw_sample, 5, dlen - 1), "1 trailing bytes")
    bad(raw_sample + b"\0", "1 trailing bytes")
    bad(raw_sample + b"\0" * 100, "100 trailing bytes")


def test_checksum_mismatch(raw_sample):
    ck = preamble_fields(raw_sample)[6]
    for v in (ck ^ 1, 0, TWO64 - 1):
        bad(with_field(raw_sample, 6, v), "checksum mismatch")


def test_truncated_at_every_offset(sample):
    path, raw = sample
    for n in range(len(raw)):
        msg = bad(raw[:n])
        assert "truncated" in msg, (n, msg)
    # the same through real files, both ways of reading
    for n in range(0, len(raw), 7):
        path.write_bytes(raw[:n])
        for mm in (True, False):
            with pytest.raises(FormatError, match="truncated"):
                BnbFile(path, mmap=mm)


def test_every_bit_flip_in_the_preamble(raw_sample):
    for i in range(48 * 8):
        raw = bytearray(raw_sample)
        raw[i // 8] ^= 1 << (i % 8)
        bad(bytes(raw))


def test_every_bit_flip_in_the_json(raw_sample):
    hl = preamble_fields(raw_sample)[3]
    accepted = 0
    for i in range(48 * 8, (48 + hl) * 8):
        raw = bytearray(raw_sample)
        raw[i // 8] ^= 1 << (i % 8)
        bad(bytes(raw), "checksum mismatch")  # as stored
        fixed = fix_checksum(raw)  # now the parser and the validator have to catch it
        expect = spec_valid(fixed)
        assert c_valid(fixed) == expect, (i // 8 - 48, chr(raw_sample[i // 8]),
                                          bytes(raw[48:48 + hl]))
        accepted += expect
    # only changes inside free text (names, labels, the training command) can survive
    assert accepted < hl * 8 * 0.4


def test_header_padding_must_be_zero(raw_sample):
    hl, doff = preamble_fields(raw_sample)[3:5]
    assert doff > 48 + hl, "the sample must have header padding"
    for pos in (48 + hl, doff - 1):
        raw = bytearray(raw_sample)
        raw[pos] = 0x20
        bad(fix_checksum(raw), f"non-zero byte 0x20 at file offset {pos} in the padding")


def test_data_region_bit_flips(raw_sample):
    """Flips in the data: padding bits and gap bytes are errors, the rest is data."""
    f = BnbFile.from_bytes(raw_sample)
    doff = preamble_fields(raw_sample)[4]
    owner = {}
    for name in f.tensor_names:
        e = f.meta["tensors"][name]
        for b in range(e["offset"], e["offset"] + e["nbytes"]):
            owner[b] = (name, e)
    for pos in range(doff, len(raw_sample)):
        for bit in (0, 5, 7):
            raw = bytearray(raw_sample)
            raw[pos] ^= 1 << bit
            raw = fix_checksum(raw)
            rel = pos - doff
            if rel not in owner:
                bad(raw, "alignment gap")
                continue
            name, e = owner[rel]
            shape = e["shape"]
            cols = shape[0] if len(shape) == 1 else math.prod(shape[1:])
            # the bit's index within its row
            in_row = (rel - e["offset"]) % (-(-cols // 64) * 8) * 8 + bit
            if e["dtype"] == "bits" and in_row >= cols:
                bad(raw, f"tensor '{name}': non-zero padding bits")
            else:
                g = BnbFile.from_bytes(raw)
                assert not np.array_equal(np.asarray(g.tensor(name)).view(np.uint8),
                                          np.asarray(f.tensor(name)).view(np.uint8))


# --------------------------------------------------------------- tensors
W = {"dtype": "bits", "shape": [3, 5], "offset": 0, "nbytes": 24}


def entry(**kw):
    e = dict(W)
    e.update(kw)
    return {k: v for k, v in e.items() if v is not None}


@pytest.mark.parametrize("e, match", [
    (entry(nbytes=100),
     r"tensor 't': nbytes 100 does not match bits shape \[3, 5\] \(expected 24\)"),
    (entry(nbytes=0), "expected 24"),
    (entry(nbytes=TWO64 - 1), "nbytes must be an integer"),
    (entry(nbytes=2**63), "nbytes must be an integer"),
    (entry(nbytes=-24), "nbytes must be an integer"),
    (entry(nbytes=24.5), "nbytes must be an integer"),
    (entry(nbytes="24"), "nbytes must be an integer"),
    (entry(nbytes=True), "nbytes must be an integer"),
    (entry(offset=TWO64 - 64), "offset must be an integer"),
    (entry(offset=-64), "offset must be an integer"),
    (entry(offset=1e30), "offset must be an integer"),
    (entry(offset=None), 'missing "offset"'),
    (entry(nbytes=None), 'missing "nbytes"'),
    (entry(shape=None), 'missing "shape"'),
    (entry(dtype=None), 'missing "dtype"'),
    (entry(dtype="int8"), "unknown dtype 'int8'"),
    (entry(dtype=1), "dtype must be the string"),
    (entry(shape=[]), "shape must be an array of 1 to 4"),
    (entry(shape=[1, 1, 1, 1, 3]), "shape must be an array of 1 to 4"),
    (entry(shape=3), "shape must be an array"),
    (entry(shape=[3, 0]), r"shape\[1\] must be an integer from 1 to 2\^40"),
    (entry(shape=[-3, 5]), r"shape\[0\] must be"),
    (entry(shape=[3, 2**40 + 1]), r"shape\[1\] must be"),
    (entry(shape=[3, TWO64 + 5]), r"shape\[1\] must be"),
    (entry(shape=[3, 5.5]), r"shape\[1\] must be"),
    (entry(shape=[3, "5"]), r"shape\[1\] must be"),
    (entry(shape=[3, None]), r"shape\[1\] must be"),
    (entry(shape=[2**40] * 4), r"too large \(its size overflows 64 bits\)"),
    (entry(shape=[2**40, 2**40]), "overflows 64 bits"),
    (entry(dtype="f32", shape=[2**40, 2**22]), "overflows 64 bits"),
    (entry(dtype="f32", shape=[2**40, 2**40, 2**40], nbytes=0), "overflows 64 bits"),
    (entry(dtype="f32"), r"does not match f32 shape \[3, 5\] \(expected 60\)"),
    (entry(extra=1), "unknown key 'extra'"),
])
def test_bad_tensor_entries(e, match):
    bad(one_tensor(e, bytes(24)), match)


def test_bad_tensor_entries_more():
    bad(file_with({"t": [1]}, b""), "entry must be an object")
    bad(file_with({"": dict(W)}, bytes(24)), "name must not be empty")
    bad(pack_file({"model": {}}), 'no "tensors" key')
    bad(pack_file({"tensors": []}), '"tensors" in the JSON header must be an object')
    bad(pack_file(b"[]"), "must be an object")
    bad(pack_file(b'"tensors"'), "must be an object")


def test_exact_integers_in_other_spellings_are_accepted():
    # docs/format.md: an integer is any JSON number whose exact value is one
    raw = pack_file(b'{"tensors": {"t": {"dtype": "bits", "shape": [3, 0.5e1], "offset": 0e5,'
                    b' "nbytes": 2.4E1}}}', bytes(24))
    assert BnbFile.from_bytes(raw).meta["tensors"]["t"]["nbytes"] == 24.0
    bad(pack_file(b'{"tensors": {"t": {"dtype": "bits", "shape": [3, 5.000000000000001],'
                  b' "offset": 0, "nbytes": 24}}}', bytes(24)), r"shape\[1\]")


def test_tensor_out_of_bounds():
    bad(one_tensor(entry(), bytes(16)), r"bytes 0..24 lie outside the data region \(data_len 16\)")
    bad(one_tensor(entry(offset=64), bytes(64)), "outside the data region")
    bad(one_tensor(entry(offset=2**62), bytes(24)), "outside")
    bad(one_tensor(entry(offset=2**63 - 64), bytes(24)), "outside")


def test_offset_alignment():
    bad(one_tensor(entry(offset=8), bytes(32)), "offset 8 is not a multiple of 64")
    bad(one_tensor(entry(offset=1), bytes(25)), "not a multiple of 64")


def two(offset_b, data_len, a=None, b=None):
    ents = {"a": dict(a or W), "b": dict(b or W)}
    ents["b"]["offset"] = offset_b
    return file_with(ents, bytes(data_len))


def test_tiling():
    assert c_valid(two(64, 88))  # a at 0..24, gap 24..64, b at 64..88
    bad(two(0, 88), "tensors 'a' .* and 'b' .* overlap")
    bad(two(0, 24), "overlap")
    big = {"dtype": "f32", "shape": [40], "offset": 0, "nbytes": 160}
    bad(two(64, 160 + 24, a=big), r"'a' \(bytes 0..160\) and 'b' \(bytes 64..88\) overlap")
    bad(two(128, 152), "hole: tensor 'a' ends at data offset 24, so the next one must start at 64, "
                       "but 'b' starts at 128")
    bad(two(64, 89), "1 trailing bytes in the data region: the last tensor 'b' ends at 88")
    bad(two(64, 200), "trailing bytes")
    bad(one_tensor(entry(offset=64), bytes(88)),
        "hole: the first tensor 't' starts at data offset 64")
    # order in the header does not matter, offsets do
    e = {"b": dict(W, offset=64), "a": dict(W)}
    raw = file_with(e, bytes(88))
    f = BnbFile.from_bytes(raw)
    assert f.tensor_names == ["b", "a"]


def test_gap_bytes_must_be_zero():
    data = bytearray(88)
    data[30] = 7
    bad(file_with({"a": dict(W), "b": dict(W, offset=64)}, bytes(data)),
        "non-zero byte 0x07 at data offset 30 in the alignment gap before tensor 'b'")


def test_padding_bits_must_be_zero():
    data = bytearray(24)
    data[8 * 2] = 1 << 5  # row 2, bit 5: the shape has 5 columns
    bad(one_tensor(entry(), bytes(data)),
        r"tensor 't': non-zero padding bits in row 2 \(bits 5..63")
    data[8 * 2] = 1 << 4  # bit 4 is data
    assert c_valid(one_tensor(entry(), bytes(data)))
    data = bytearray(16)
    data[15] = 0x80  # bit 127 of a 1-D [100]: padding
    bad(one_tensor(entry(shape=[100], nbytes=16), bytes(data)), "padding bits in row 0")
    # f32 tensors have no padding bits
    assert c_valid(one_tensor(entry(dtype="f32", shape=[6], nbytes=24), b"\xff" * 24))


def test_long_and_odd_names_in_messages():
    name = "\u00e9" * 100 + "\n"
    msg = bad(file_with({name: dict(W, nbytes=1)}, bytes(24)), "does not match")
    assert "..." in msg and "\ufffd" not in msg
    msg = bad(file_with({"a\tb": dict(W, nbytes=1)}, bytes(24)), "tensor 'a\\?b'")


def test_many_tensors_find(tmp_path):
    tensors = {f"t{i:04d}": np.full(1, i, np.float32) for i in range(500)}
    write_bnb(tmp_path / "m.bnb", {}, dict(reversed(list(tensors.items()))))
    f = BnbFile(tmp_path / "m.bnb")
    for name, t in tensors.items():
        assert f.tensor(name)[0] == t[0]
    assert "t0500" not in f and "t" not in f and "" not in f


# ------------------------------------------------------------------ JSON
@pytest.mark.parametrize("text, match", [
    (b'{"tensors": {}, "a": 1, "a": 2}', 'duplicate key "a"'),
    (b'{"tensors": {}, "tensors": {}}', 'duplicate key "tensors"'),
    (b'{"tensors": {}, "m": {"x": 1, "y": 2, "x": 3}}',
     r'byte 38: duplicate key "x" \(first at byte 22\)'),
    (b'{"tensors": {"t": {"dtype": "f32", "dtype": "f32"}}}', "duplicate key"),
    (b'{"tensors": {}, "\\u0061": 1, "a": 2}', 'duplicate key "a"'),  # equal after decoding
    (b'{"tensors": {}} x', "unexpected 'x' after the JSON value"),
    (b'{"tensors": {}},', "unexpected"),
    (b'{"tensors": {},}', "expected a string key"),
    (b'{"tensors": {}, "a": [1,]}', "expected a value"),
    (b'{"tensors": {}, "a": 01}', "leading zeros"),
    (b'{"tensors": {}, "a": -}', "expected a digit"),
    (b'{"tensors": {}, "a": 1.}', "digit after '.'"),
    (b'{"tensors": {}, "a": .5}', "expected a value"),
    (b'{"tensors": {}, "a": 1e}', "exponent"),
    (b'{"tensors": {}, "a": 1e400}', "out of the range of a double"),
    (b'{"tensors": {}, "a": -1e400}', "out of the range"),
    (b'{"tensors": {}, "a": NaN}', "expected a value"),
    (b'{"tensors": {}, "a": Infinity}', "expected a value"),
    (b'{"tensors": {}, "a": tru}', "expected a value"),
    (b"{'tensors': {}}", "expected a string key"),
    (b'{"tensors": {}, "a": "x\ny"}', "control character 0x0a"),
    (b'{"tensors": {}, "a": "\\x"}', r"invalid escape '\\x'"),
    (b'{"tensors": {}, "a": "\\u12"}', "four hex digits"),
    (b'{"tensors": {}, "a": "\\ud800"}', "high surrogate"),
    (b'{"tensors": {}, "a": "\\ud800\\u0041"}', "high surrogate"),
    (b'{"tensors": {}, "a": "\\udc00"}', "unpaired low surrogate"),
    (b'{"tensors": {}, "a": "\\u0000"}', "NUL"),
    (b'{"tensors": {}, "a": "x\x00"}', "NUL byte"),
    (b'{"tensors": {}}\x00', "NUL byte"),
    (b'\xef\xbb\xbf{"tensors": {}}', "byte order mark"),
    (b'{"tensors": {}, "a": "\xff"}', "invalid UTF-8"),
    (b'{"tensors": {}, "a": "\xc0\xaf"}', "invalid UTF-8"),  # overlong '/'
    (b'{"tensors": {}, "a": "\xe0\x80\xaf"}', "invalid UTF-8"),  # overlong
    (b'{"tensors": {}, "a": "\xed\xa0\x80"}', "invalid UTF-8"),  # encoded surrogate
    (b'{"tensors": {}, "a": "\xf4\x90\x80\x80"}', "invalid UTF-8"),  # > U+10FFFF
    (b'{"tensors": {}, "a": "\x80"}', "invalid UTF-8"),  # lone continuation
    (b'{"tensors": {}, "a": "\xe2\x82"}', "invalid UTF-8"),  # cut sequence
    (b'{"tensors": {}, "\xff": 1}', "invalid UTF-8"),
    (b'{"tensors": {}, "a": "abc', "unterminated string"),
    (b'{"tensors": {}, "a": [1, 2', "expected ',' or ']'"),
    (b'{"tensors": {}', "expected ',' or '}'"),
    (b'{"tensors" {}}', "expected ':'"),
    (b"  ", "expected a value, found end of text"),
    (b'{"tensors": {}} // comment', "unexpected"),
    (b'{"tensors": {}, "a": \xc3\xa9}', "expected a value, found byte 0xc3"),
])
def test_bad_json_header(text, match):
    msg = bad(pack_file(text), match)
    assert msg.startswith("invalid JSON header: byte ")


def test_valid_json_oddities_are_accepted():
    text = (b' \t\r\n{"tensors":{},"s":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00'
            b'\xe2\x82\xac\xf0\x9f\x98\x80",'
            b'"n":[-0,0.5e-3,1E+2,-12.25e1,123456789012345678901234567890],"e":[],"o":{},'
            b'"k":[true,false,null]} ')
    f = BnbFile.from_bytes(pack_file(text))
    assert f.meta == json.loads(text)
    assert f.meta["s"] == '"\\/\b\f\n\r\t\u00e9\U0001F600\u20ac\U0001F600'


def test_deep_nesting():
    ok = b'{"tensors": {}, "x": ' + b"[" * 63 + b"]" * 63 + b"}"  # 64 levels in all
    assert BnbFile.from_bytes(pack_file(ok)).meta["x"]
    too_deep = b'{"tensors": {}, "x": ' + b"[" * 64 + b"]" * 64 + b"}"
    bad(pack_file(too_deep), "nested deeper than 64 levels")
    objs = b'{"tensors": {}, "x": ' + b'{"a":' * 64 + b"1" + b"}" * 64 + b"}"
    bad(pack_file(objs), "nested deeper than 64")
    bad(pack_file(b"[" * 1_000_000), "nested deeper than 64")  # no stack overflow, no time


def test_big_headers(tmp_path):
    labels = [f"label {i} \u00e9" for i in range(100_000)]
    write_bnb(tmp_path / "big.bnb", {"labels": labels}, {})
    assert BnbFile(tmp_path / "big.bnb").meta["labels"] == labels
    many = b'{"tensors": {}, "x": [' + b"0," * (1 << 22) + b"0]}"
    bad(pack_file(many), "more than 4194304 values")
    keys = b",".join(b'"k%d": %d' % (i, i) for i in range(50_000))
    wide = b'{"tensors": {}, ' + keys + b', "k7": 0}'
    bad(pack_file(wide), 'duplicate key "k7"')


def test_c_json_parser_matches_json_loads():
    docs = ['{"a": [1, -2, 3.5, 1e-320, 2.5e+300, 0, -0.0], "b": {"c": null}}',
            '"\\u00e9\\ud83d\\ude00"', "[]", "{}", "123", "-5e-1", "true",
            ' [ 1 , { "x" : [ ] } ] ',
            '"' + "x" * 100_000 + '"', "18446744073709551616", "1.7976931348623157e308"]
    for d in docs:
        assert _core._json_parse(d.encode()) == json.loads(d), d


@pytest.mark.parametrize("lit, lo, hi, expect", [
    ("0", 0, 10, 0), ("-0", 0, 10, 0), ("10", 0, 10, 10), ("11", 0, 10, None),
    ("9007199254740993", 0, 2**62, 9007199254740993),
    ("9223372036854775807", 0, 2**63 - 1, 2**63 - 1),
    ("9223372036854775808", 0, 2**63 - 1, None), ("-9223372036854775808", -2**63, 0, -2**63),
    ("18446744073709551615", 0, 2**63 - 1, None), ("1e19", 0, 2**63 - 1, None),
    ("1.5", 0, 10, None), ("1.5e1", 0, 100, 15), ("150e-1", 0, 100, 15), ("1e-1", 0, 100, None),
    ("0.0", 0, 1, 0), ("0e99999999999", 0, 1, 0), ("1e30", 0, 2**63 - 1, None),
    ("100000000000000000000000000000e-28", 0, 1000, 10),
    ("1" + "0" * 70 + "e-70", 0, 10, 1), ("1" + "0" * 69 + "1e-70", 0, 10, None),
    ("0.000000000000000000000000000000000000000000000000000000000000000000000000005e76",
     0, 100, 50),
    ('"5"', 0, 10, None), ("true", 0, 10, None),
])
def test_bjson_get_int(lit, lo, hi, expect):
    assert _core._json_get_int(lit.encode(), lo, hi) == expect


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10 ** 30), 10 ** 30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text().filter(lambda s: "\0" not in s),
    lambda kids: st.lists(kids, max_size=5)
    | st.dictionaries(st.text(max_size=8).filter(lambda s: "\0" not in s), kids, max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_c_json_parser_round_trips(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    assert _core._json_parse(text) == json.loads(text)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64) | st.text(alphabet='{}[]",:0123456789.eE+-\\utn \x00\xe9',
                                        max_size=40)
       .map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_c_json_parser_agrees_with_reference_on_junk(data):
    ref = spec_json(data)
    try:
        got = _core._json_parse(data)
    except FormatError as e:
        assert str(e).startswith("byte ")
        assert ref is INVALID, data
        return
    assert ref is not INVALID, data
    assert got == json.loads(data), data


# ------------------------------------------------------------------ fuzz
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutations(raw_sample, data):
    raw = bytearray(raw_sample)
    n_edits = data.draw(st.integers(1, 8))
    for _ in range(n_edits):
        kind = data.draw(st.sampled_from(["flip", "byte", "insert", "delete", "truncate", "u64"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "byte" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del raw[pos:pos + data.draw(st.integers(1, 8))]
        elif kind == "truncate":
            del raw[pos:]
        elif kind == "u64" and len(raw) >= 48:
            slot = data.draw(st.integers(1, 5)) * 8
            value = data.draw(st.sampled_from([0, 1, 47, 48, 63, 64, 2**63, TWO64 - 1, TWO64 - 64])
                               | st.integers(0, TWO64 - 1))
            raw[slot:slot + 8] = struct.pack("<Q", value)
    if data.draw(st.booleans()):
        raw = bytearray(fix_checksum(raw))
    raw = bytes(raw)
    assert c_valid(raw) == spec_valid(raw)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_header_mutations(raw_sample, data):
    """Edit the JSON text itself, then rebuild a consistent preamble."""
    hl = preamble_fields(raw_sample)[3]
    doff = preamble_fields(raw_sample)[4]
    text = bytearray(raw_sample[48:48 + hl])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(text)))
        kind = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        piece = data.draw(st.sampled_from([b"0", b"64", b"-", b".5", b"e9", b"[", b"]", b"{", b"}",
                                           b",", b'"', b'"x": 1,', b"\\u", b"\xff", b"\x00",
                                           b"1e400", b"18446744073709551616", b"  "])
                          | st.binary(max_size=3))
        if kind == "replace":
            text[pos:pos + len(piece)] = piece
        elif kind == "insert":
            text[pos:pos] = piece
        else:
            del text[pos:pos + data.draw(st.integers(1, 4))]
    raw = pack_file(bytes(text), raw_sample[doff:])
    assert c_valid(raw) == spec_valid(raw)
