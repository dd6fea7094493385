"""A reader and forward pass of .bnb models in numpy, written from the documents alone:
docs/format.md (the file), docs/packing.md (bits and the sum order of the binary layer)
and docs/arithmetic.md (the precision and order of every other step), in both numeric
modes (precision "fp32" and "int8", packing.md "The int8 mode"). It imports
nothing from bitnn. tests/test_numpy_reference.py checks that it gives the runtime's
bits for classifiers and language decoders.

numpy's float32 and float64 element-wise operations are single IEEE operations, so
they give the documents' roundings; sums whose order matters are written out (never
np.sum, whose order is numpy's own). The f64 exp is the C library's, as the runtime
uses it (math.exp calls it). gelu and attention's float32 exp are the runtime's own
arithmetic (arithmetic.md), from the coefficient tables of csrc/kernels/erf_table.h.
"""
from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import numpy as np

F32, F64 = np.float32, np.float64
NORM_CHUNK = 4096

_exp = np.vectorize(math.exp, otypes=[F64])


def _gelu_tables() -> dict:
    """The coefficient tables of csrc/kernels/erf_table.h (hexadecimal float32 values)."""
    text = (Path(__file__).resolve().parent.parent / "csrc" / "kernels" / "erf_table.h").read_text()
    out = {}
    for name in ("erfc", "exp"):
        body = re.search(rf"bitnn_gelu_{name}\[\d+\] = \{{(.*?)\}};", text, re.S).group(1)
        out[name] = [F32(float.fromhex(v.rstrip("f"))) for v in body.replace(",", " ").split()]
    return out


_GELU = _gelu_tables()


def _horner(c, x):
    """c[0] + x (c[1] + x (... + x c[-1])), from the highest coefficient down, in x's dtype."""
    r = np.full_like(x, c[-1])
    for ci in reversed(c[:-1]):
        r = r * x + ci
    return r


def exp32(y):
    """bitnn's float32 exp (arithmetic.md, BITNN_EXP16 in csrc/kernels/erf.h), -87 <= y:
    k = y / ln 2 rounded half to even, r = (y - k ln2_hi) - k ln2_lo, the degree-7 Taylor
    polynomial of r times 2^k made from k's bits."""
    y = np.asarray(y, F32)
    magic = F32(float.fromhex("0x1.8p+23"))
    tk = y * F32(float.fromhex("0x1.715476p+0")) + magic
    k = tk - magic
    s = ((tk.view(np.int32) - np.array(magic).view(np.int32) + 127) << 23).view(F32)
    r = (y - k * F32(float.fromhex("0x1.63p-1"))) - k * F32(float.fromhex("-0x1.bd0106p-13"))
    return _horner(_GELU["exp"], r) * s


def gelu(v):
    """gelu of float32 values as arithmetic.md states it (float32 operations throughout)."""
    v = np.asarray(v, F32)
    x = v * F32(0.70710678118654752440)
    a = np.abs(x)
    a = np.where(a < F32(9.0), a, F32(9.0))  # NaN -> 9, as the C select does
    t = F32(1.0) / (F32(1.0) + F32(0.5) * a)
    y = -(a * a) + _horner(_GELU["erfc"], t)
    h = F32(0.5) * (t * exp32(y))
    return v * np.where(x < 0, h, F32(1.0) - h)


# ------------------------------------------------------------------ the file
def read_bnb(raw: bytes):
    """(header dict, {name: array}) of a .bnb file: bits tensors as uint8 {0,1} arrays
    of their logical shape, f32 tensors as float32. Checks only what it needs."""
    magic, version, flags, header_len, data_offset, data_len, _ = struct.unpack_from(
        "<8sIIQQQQ", raw, 0)
    assert magic == b"BITNNBNB" and version == 1 and flags == 0
    assert data_offset == (48 + header_len + 63) // 64 * 64 and data_offset + data_len == len(raw)
    header = json.loads(raw[48:48 + header_len].decode("utf-8"))
    data = raw[data_offset:]
    tensors = {}
    for name, e in header["tensors"].items():
        shape = e["shape"]
        buf = data[e["offset"]:e["offset"] + e["nbytes"]]
        if e["dtype"] == "f32":
            tensors[name] = np.frombuffer(buf, "<f4").reshape(shape).astype(F32)
            continue
        rows, cols = (1, shape[0]) if len(shape) == 1 else (shape[0], math.prod(shape[1:]))
        words = (cols + 63) // 64
        b = np.unpackbits(np.frombuffer(buf, np.uint8).reshape(rows, words * 8), axis=1,
                          bitorder="little")  # bit k of a row = bit k%64 of LE word k//64
        tensors[name] = b[:, :cols].reshape(shape)
    return header, tensors


# ------------------------------------------------------------------ arithmetic
def binary_linear_raw(x, w, b):
    """z[m, n] = sum of x[m, k] over w[n, k] = 1, plus b[n] (packing.md): per group of 4
    inputs the subset sum in increasing input order from +0.0, then one chain over the
    groups in increasing order from +0.0, then + b."""
    x = np.asarray(x, F32)
    M, K = x.shape
    N = w.shape[0]
    G = -(-K // 32) * 8  # groups of 4 inputs in whole 32-input chunks
    xp = np.zeros((M, 4 * G), F32)
    xp[:, :K] = x
    wp = np.zeros((N, 4 * G), bool)
    wp[:, :K] = w.reshape(N, K).astype(bool)
    acc = np.zeros((M, N), F32)
    for g in range(G):
        t = np.zeros((M, N), F32)  # a clear bit adds +0.0, which never changes t
        for k in range(4 * g, 4 * g + 4):
            t = t + np.where(wp[None, :, k], xp[:, None, k], F32(0))
        acc = acc + t
    return acc + b.reshape(N).astype(F32)


def quantize_rows(x):
    """int8 mode's quantizer (packing.md): per row amax = max |x|; q = round half to even
    of the fp32 product x * (127 / amax) (both fp32), clamped to [-127, 127]; scale =
    amax / 127 (fp32). A row of zeros: q = 0, scale = 0."""
    x = np.asarray(x, F32)
    amax = np.abs(x).max(axis=-1).astype(F32)
    q = np.zeros(x.shape, np.int64)
    nz = amax > 0
    inv = (F32(127.0) / amax[nz]).astype(F32)
    q[nz] = np.clip(np.rint((x[nz] * inv[..., None]).astype(F32)), -127, 127).astype(np.int64)
    return q, (amax / F32(127.0)).astype(F32)


def binary_linear_raw_int8(x, w, b):
    """int8 mode's raw sum: z = fp32(fp32(S) * scale) + b, S the exact integer sum of the
    row's quantized values over the set bits."""
    q, scale = quantize_rows(x)
    S = q @ np.asarray(w, np.int64).reshape(w.shape[0], -1).T
    z = (S.astype(F32) * scale[:, None]).astype(F32)
    return (z + b.reshape(-1).astype(F32)).astype(F32)


def _seq_sum(v, axis=-1):
    """Sum in increasing index order, one rounding per addition (np.cumsum is sequential)."""
    return np.cumsum(v, axis=axis).take(-1, axis=axis)


def _sum8(v):
    """The sum over axis 0 of float64 values v (T, ...): value t into partial t % 8, each
    sequential in increasing t, combined ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))
    (attention's softmax total; Normalize's sums per chunk)."""
    pad = -v.shape[0] % 8
    v = np.concatenate([v, np.zeros((pad,) + v.shape[1:], F64)]).reshape((-1, 8) + v.shape[1:])
    a = _seq_sum(v, axis=0)
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))


def _chunk_sum8(v):
    """Normalize's sum of float64 rows v (M, N): chunks of 4096 values in order, each
    summed as _sum8 sums (value n into partial (n - c0) % 8)."""
    M, N = v.shape
    total = np.zeros(M, F64)
    for c0 in range(0, N, NORM_CHUNK):
        total = total + _sum8(v[:, c0:c0 + NORM_CHUNK].T)
    return total


def normalize_act(z, eps, act="linear"):
    """act(Normalize(z)) of each row of z (M, N) float32; eps is the model's float32."""
    z = np.asarray(z, F32)
    M, N = z.shape
    zd = z.astype(F64)
    mean = _chunk_sum8(zd) / F64(N)
    d = zd - mean[:, None]
    inv = 1.0 / np.sqrt(_chunk_sum8(d * d) / F64(N) + F64(F32(eps)))
    v = (d * inv[:, None]).astype(F32)
    if act == "linear":
        return v
    if act == "relu":
        return np.where(v > 0, v, F32(0))
    if act == "gelu":
        return gelu(v)
    if act == "softmax":
        mx = v.max(axis=1)
        e = _exp(v.astype(F64) - mx.astype(F64)[:, None]).astype(F32)
        total = np.zeros(M, F64)
        for c0 in range(0, N, NORM_CHUNK):  # sequential within a chunk, chunks in order
            total = total + _seq_sum(e[:, c0:c0 + NORM_CHUNK].astype(F64), axis=1)
        return (e.astype(F64) * (1.0 / total)[:, None]).astype(F32)
    raise ValueError(act)


def linear(x, w, b, eps, act, precision="fp32"):
    raw = binary_linear_raw_int8 if precision == "int8" else binary_linear_raw
    return normalize_act(raw(x, w, b), eps, act)


# ------------------------------------------------------------------ classifier
def preprocess(img_u8, pre):
    """uint8 (H, W, C) -> float32: (x * scale - mean[c]) / std[c], all in float32."""
    x = img_u8.astype(F32)
    return (x * F32(pre["scale"]) - np.asarray(pre["mean"], F32)) / np.asarray(pre["std"], F32)


def conv2d(x, w, b, eps, act, norm, precision="fp32"):
    """x (H, W, C) float32; w bits (Cout, f, f, C); 'same' zero padding, stride 1. int8:
    the whole input map is quantized with one scale (quantize_rows of the map as one
    row), then the exact integer sums over the taps and int8 mode's epilogue."""
    H, W, C = x.shape
    Cout, f = w.shape[0], w.shape[1]
    pad = f // 2
    scale = None
    if precision == "int8":
        q, scale = quantize_rows(x.reshape(1, -1))
        x, scale = q.reshape(H, W, C), scale[0]
    xp = np.zeros((H + 2 * pad, W + 2 * pad, C), x.dtype)
    xp[pad:pad + H, pad:pad + W] = x
    cols = np.empty((H, W, f, f, C), x.dtype)  # taps in (dy, dx, c) order
    for dy in range(f):
        for dx in range(f):
            cols[:, :, dy, dx] = xp[dy:dy + H, dx:dx + W]
    cols = cols.reshape(H * W, f * f * C)
    if precision == "int8":
        S = cols @ np.asarray(w, np.int64).reshape(Cout, -1).T
        z = ((S.astype(F32) * scale).astype(F32) + b.reshape(-1).astype(F32)).astype(F32)
    else:
        z = binary_linear_raw(cols, w.reshape(Cout, -1), b)  # (P, Cout)
    if norm == "c":
        return normalize_act(z, eps, act).reshape(H, W, Cout)
    return normalize_act(z.reshape(1, -1), eps, act).reshape(H, W, Cout)  # one row, HWC order


def maxpool2d(x, k):
    H, W, C = x.shape
    Ho, Wo = H // k, W // k  # the rows and columns left over are dropped
    return x[:Ho * k, :Wo * k].reshape(Ho, k, Wo, k, C).max(axis=(1, 3))


def global_avg_pool(x):
    H, W, C = x.shape
    acc = _seq_sum(x.reshape(H * W, C).astype(F64), axis=0)  # positions in row-major order
    return (acc / F64(H * W)).astype(F32)


def classifier_forward(header, tensors, images, precision="fp32"):
    """Probabilities (N, classes) of float32 NHWC images (already preprocessed)."""
    eps = header["eps"]
    out = []
    for x in np.asarray(images, F32):
        for ly in header["layers"]:
            t = ly["type"]
            if t == "conv2d":
                x = conv2d(x, tensors[ly["weight"]], tensors[ly["bias"]], eps,
                           ly.get("activation", "linear"), ly.get("norm", "chw"), precision)
            elif t == "maxpool2d":
                x = maxpool2d(x, ly["size"])
            elif t == "global_avg_pool":
                x = global_avg_pool(x)
            else:
                x = linear(x.reshape(1, -1), tensors[ly["weight"]], tensors[ly["bias"]], eps,
                           ly.get("activation", "linear"), precision)[0]
        out.append(x)
    return np.stack(out)


# ------------------------------------------------------------------ language decoder
def _dot8(q, k):
    """q . k over the last axis: fp32 products, value e into partial e % 8 in increasing
    e, partials combined ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7))."""
    prod = q * k
    n = prod.shape[-1]
    prod = np.concatenate([prod, np.zeros(prod.shape[:-1] + (-n % 8,), F32)], axis=-1)
    p = _seq_sum(prod.reshape(prod.shape[:-1] + (-1, 8)), axis=-2)
    return ((p[..., 0] + p[..., 4]) + (p[..., 2] + p[..., 6])) + \
        ((p[..., 1] + p[..., 5]) + (p[..., 3] + p[..., 7]))


def attention(q, k, v, heads, precision="fp32"):
    """Causal attention of rows q (T, D) over k, v (T, D); head h is columns h*hd...
    In int8 mode every (position, head) query, key and value is quantized
    (quantize_rows): a score is the exact integer dot of the query's and the key's int8
    values, as f32, times the key's scale (f32), then times the query's scale and
    1 / sqrt(hd) (their product in f64); each softmax weight is multiplied by its value's
    scale (packing.md)."""
    T, D = q.shape
    hd = D // heads
    scale = 1.0 / math.sqrt(hd)
    qh, kh, vh = (a.reshape(T, heads, hd) for a in (q, k, v))
    if precision == "int8":
        qq, qs = quantize_rows(qh)
        kq, ks = quantize_rows(kh)
        vq, vs = quantize_rows(vh)
        vh = vq.astype(F32)
    out = np.empty((T, heads, hd), F32)
    for r in range(T):
        if precision == "int8":  # (r+1, heads)
            d = ((qq[r][None] * kq[:r + 1]).sum(axis=-1).astype(F32) * ks[:r + 1]).astype(F32)
            s = (d.astype(F64) * (qs[r].astype(F64) * scale)).astype(F32)
        else:
            s = (_dot8(qh[r][None], kh[:r + 1]).astype(F64) * scale).astype(F32)
        e = exp32(np.maximum(s - s.max(axis=0), F32(-87.0)))
        inv = (1.0 / _sum8(e.astype(F64))).astype(F32)
        w = e * inv
        if precision == "int8":
            w = (w * vs[:r + 1]).astype(F32)
        out[r] = _seq_sum(w[:, :, None] * vh[:r + 1], axis=0)  # fp32, t increasing
    return out.reshape(T, D)


def lm_scores(header, tensors, ids, precision="fp32"):
    """The normalized output scores (vocab,) after the last of ids (positions 0..n-1)."""
    c, eps = header["lm"], header["eps"]
    T = len(ids)
    t = lambda n: tensors[n]  # noqa: E731

    def lin(x, prefix, act="linear"):
        return linear(x, t(prefix + ".weight"), t(prefix + ".bias"), eps, act, precision)

    tok = (t("embed.token.weight")[ids] + t("embed.token.bias").reshape(1, -1)).astype(F32)
    pos = (t("embed.position.weight")[:T] + t("embed.position.bias").reshape(1, -1)).astype(F32)
    x = normalize_act(normalize_act(tok, eps) + normalize_act(pos, eps), eps)
    for i in range(c["num_blocks"]):
        p = f"blocks.{i}"
        att = attention(lin(x, p + ".attn.q"), lin(x, p + ".attn.k"), lin(x, p + ".attn.v"),
                        c["num_heads"], precision)
        h = normalize_act(lin(att, p + ".attn.out") + x, eps)
        x = normalize_act(lin(lin(h, p + ".ff1", "gelu"), p + ".ff2") + h, eps)
    y = x[-1:]
    for j in range(len(c["mlp_units"])):
        y = lin(y, f"head.{j}", "gelu")
    return lin(y, "output")[0]


def lm_probs(scores):
    """predict()'s next-token distribution: exp(s - max) in float64, divided by their
    exactly rounded sum (math.fsum), rounded once to float32."""
    s = np.asarray(scores, F32).astype(F64)
    e = _exp(s - s.max())
    return (e / math.fsum(e)).astype(F32)
