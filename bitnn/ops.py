"""Array-level API over the C core: bit packing and the binary linear layer.

The packing convention is the one in docs/packing.md: 64-bit little-endian
words, element k of a row is bit k % 64 of word k // 64, padding bits zero.
"""
from __future__ import annotations

import numpy as np

from bitnn import _core

# Weights prepared once for the kernels (a loaded model prepares its layers the same way).
PackedWeights = _core.PackedWeights


def pack_bits(bits) -> np.ndarray:
    """Pack a {0,1} array into uint64 words along its last axis.

    A 2-D ``(N, K)`` array gives ``(N, ceil(K/64))`` words; a 1-D ``(K,)``
    array (a bias) gives ``(ceil(K/64),)``. Values other than 0 and 1 (and
    NaN) are rejected rather than guessed at.
    """
    a = np.asarray(bits)
    if a.ndim not in (1, 2):
        raise ValueError(f"pack_bits takes a 1-D or 2-D array, got shape {a.shape}")
    if a.shape[-1] == 0:
        raise ValueError("pack_bits needs at least one column")
    if a.dtype == np.bool_:
        b = a.astype(np.uint8)
    else:
        if a.dtype.kind not in "fiu":
            raise TypeError(f"pack_bits takes 0/1 numbers or booleans, got dtype {a.dtype}")
        b = a.astype(np.uint8)
        if not np.array_equal(b, a):
            raise ValueError("pack_bits: every value must be exactly 0 or 1")
        if b.size and b.max() > 1:
            raise ValueError("pack_bits: every value must be exactly 0 or 1")
    two_d = b.reshape(-1, b.shape[-1])
    k = two_d.shape[1]
    words = (k + 63) // 64
    padded = np.zeros((two_d.shape[0], words * 64), dtype=np.uint8)
    padded[:, :k] = two_d
    packed = np.packbits(padded, axis=1, bitorder="little")  # byte j holds bits 8j..8j+7
    out = packed.view("<u8").astype(np.uint64, copy=False)
    out = np.ascontiguousarray(out)
    return out.reshape(words) if a.ndim == 1 else out


def unpack_bits(words, k: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: uint8 {0,1} array with last axis ``k``."""
    w = np.asarray(words)
    if w.ndim == 0:
        raise ValueError("unpack_bits takes an array of words (1-D or more), not a scalar")
    if w.dtype != np.uint64:
        raise TypeError(f"unpack_bits takes uint64 words, got dtype {w.dtype}")
    if k < 1 or w.shape[-1] != (k + 63) // 64:
        raise ValueError(f"{w.shape[-1]} words per row cannot hold {k} bits")
    two_d = np.ascontiguousarray(w.reshape(-1, w.shape[-1])).astype("<u8", copy=False)
    bits = np.unpackbits(two_d.view(np.uint8), axis=1, bitorder="little")[:, :k]
    return bits.reshape(w.shape[:-1] + (k,))


def linear(x, weight, bias=None, *, out_features: int | None = None, activation=None,
           eps: float = 1e-5, threads: int | None = None, kernel: str | None = None,
           precision: str = "fp32") -> np.ndarray:
    """Binary normalized fully connected layer: ``act(Normalize(x @ W.T + b))``.

    ``x`` is ``(M, K)`` or ``(K,)`` (converted to float32); ``weight`` is the
    packed ``(N, ceil(K/64))`` uint64 output of :func:`pack_bits`, a {0,1}
    array ``(N, K)`` that is packed here, or a :class:`PackedWeights` (the
    weights prepared once for the kernels, for repeated calls); ``bias`` likewise ``(N,)`` bits or
    ``ceil(N/64)`` packed words. ``activation`` is None/'linear', 'relu',
    'gelu' or 'softmax'. ``precision`` is ``"fp32"`` (exact) or ``"int8"``
    (each row of x quantized to int8 with one scale; docs/packing.md).
    Returns float32 ``(M, N)`` (or ``(N,)``).
    """
    xa = np.asarray(x)
    single = xa.ndim == 1
    if single:
        xa = xa.reshape(1, -1)
    if isinstance(weight, _core.PackedWeights):
        w = weight
        n = weight.out_features if out_features is None else out_features
    elif (w := np.asarray(weight)).dtype != np.uint64:
        # Unpacked bits: the shapes are known exactly, so check them exactly.
        if w.ndim != 2 or w.shape[1] != xa.shape[-1]:
            raise ValueError(f"weight of shape {w.shape} does not fit x with {xa.shape[-1]} "
                             "features: expected (out_features, in_features)")
        n = w.shape[0] if out_features is None else out_features
        w = pack_bits(w)
    else:
        if out_features is None:
            out_features = w.shape[0] if w.ndim == 2 else 0
        n = out_features
        k = xa.shape[-1]
        if (w.ndim == 2 and k % 64 and w.shape[1] == (k + 63) // 64
                and (w[:, -1] >> np.uint64(k % 64)).any()):
            raise ValueError(f"the packed weight is wider than x: it has bits set beyond column "
                             f"{k}, but x has {k} features (pack a weight of shape "
                             f"(out_features, {k}))")
    b = None
    if bias is not None:
        b = np.asarray(bias)
        if b.dtype != np.uint64:
            if b.shape != (n,):
                raise ValueError(f"bias of shape {b.shape} does not match {n} output features")
            b = pack_bits(b)
    y = _core.linear(xa, w, n, bias=b, activation=activation, eps=eps, threads=threads,
                     kernel=kernel, precision=precision)
    return y[0] if single else y
