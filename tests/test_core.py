"""Tests of the C core through its binding (bitnn._core) and bitnn.ops.

Two kinds of check, as docs/packing.md asks:

* every kernel this CPU can run gives exactly the bits of the scalar
  reference kernel ``ref`` (``np.array_equal``: the summation order is part of
  the contract), for every thread count;
* the reference itself is right: it agrees with a float64 numpy version of
  the same maths (``x @ W.T + b``, Normalize, activation) within a rounding
  bound derived from that summation order.

The suite also passes with BITNN_KERNEL=ref (or BITNN_NUM_THREADS) set in the
environment: tests that depend on the default kernel or thread count set or
clear those variables themselves, everything else names its kernel.
"""

import json
import math
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bitnn
from bitnn import KernelError, _core

ALL_KERNEL_NAMES = ["ref", "avx2", "avx512", "neon"]
KERNELS = _core.kernels_supported()
SIMD_KERNELS = [k for k in KERNELS if k != "ref"]
ACTIVATIONS = [None, "linear", "relu", "gelu", "softmax"]
U32 = 2.0 ** -24  # unit roundoff of float32


# ------------------------------------------------------------------ helpers

def make_case(rng, M, N, K, density=0.5, bias="random", scale=1.0):
    """x (M, K) float32, W bits (N, K) uint8, bias bits (N,) uint8 or None."""
    x = (rng.standard_normal((M, K)) * scale).astype(np.float32)
    if density in (0.0, 1.0):
        W = np.full((N, K), int(density), dtype=np.uint8)
    else:
        W = (rng.random((N, K)) < density).astype(np.uint8)
    if bias is None:
        b = None
    elif bias == "random":
        b = rng.integers(0, 2, N, dtype=np.uint8)
    else:
        b = np.full(N, int(bias), dtype=np.uint8)
    return x, W, b


def packed(W, b):
    return bitnn.pack_bits(W), (None if b is None else bitnn.pack_bits(b))


def gemm64(x, W, b):
    """float64 z = x @ W.T + b and a tolerance for the fp32 z of the kernels.

    Each group of 4 inputs is summed (3 adds), then the n = ceil(K/4) group sums
    in one chain, then the bias add (docs/packing.md). The rigorous bound is
    (n + 4) u sum|x_k| (u = 2^-24) over the set bits; it is far too loose for
    large K to catch anything, so the tolerance is the smaller of it and
    8 u (sqrt(n) + 4) (|z| + 3 sqrt(sum x_k^2)): rounding errors of random-sign
    data add like a random walk, and the lane partial sums are bounded by the
    drift (|z|) plus a few standard deviations. Measured worst case over 1500
    random cases (K up to 65537, all-positive x included) with the former
    16-lane order (n = ceil(K/16)): 0.27 of the unscaled heuristic, a margin of
    about 30; with the chain of groups n is 4x larger and the bound 2x looser.
    """
    x64 = x.astype(np.float64)
    Wf = W.astype(np.float64)
    bf = np.zeros(W.shape[0]) if b is None else b.astype(np.float64)
    z = x64 @ Wf.T + bf
    n = math.ceil(x.shape[1] / 4)
    rigorous = (n + 4) * U32 * (np.abs(x64) @ Wf.T + bf)
    heuristic = 8 * U32 * (math.sqrt(n) + 4) * (np.abs(z) + 3 * np.sqrt((x64 ** 2) @ Wf.T))
    return z, np.minimum(rigorous, heuristic) + 1e-30


def act64(v, activation):
    if activation in (None, "linear"):
        return v
    if activation == "relu":
        return np.maximum(v, 0.0)
    if activation == "gelu":
        erf = np.vectorize(math.erf, otypes=[np.float64])
        return 0.5 * v * (1.0 + erf(v / math.sqrt(2.0)))
    if activation == "softmax":
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise AssertionError(activation)


def linear64(x, W, b, activation, eps):
    """float64 act(Normalize(x @ W.T + b)) and a tolerance for the fp32 result.

    y = (z - mean) / S with S = sqrt(var + eps). Errors e_n in z move z_n - mean
    by <= e_n + mean(e) and S by <= rms(e), so v by <= (e_n + mean(e) +
    |v| rms(e)) / S (first order, doubled); relu and gelu are (about)
    1-Lipschitz and softmax 2-Lipschitz in the max norm. Plus the final fp32
    roundings.
    """
    z, err = gemm64(x, W, b)
    mean = z.mean(axis=1, keepdims=True)
    S = np.sqrt(((z - mean) ** 2).mean(axis=1, keepdims=True) + eps)
    v = (z - mean) / S
    e_mean = err.mean(axis=1, keepdims=True)
    e_rms = np.sqrt((err ** 2).mean(axis=1, keepdims=True))
    tol_v = 2.0 * (err + e_mean + np.abs(v) * e_rms) / S
    y = act64(v, activation)
    if activation == "softmax":
        return y, 2.0 * tol_v.max(axis=1, keepdims=True) + 8 * U32 + 1e-7 + 0 * y
    return y, 1.2 * tol_v + 8 * U32 * (1.0 + np.abs(y)) + 1e-7


def assert_close64(got, want, tol):
    assert got.dtype == np.float32
    assert got.shape == want.shape
    bad = np.abs(got.astype(np.float64) - want) > tol
    assert not bad.any(), (
        f"{bad.sum()} of {bad.size} values off; worst "
        f"{np.max(np.abs(got - want) - tol)} beyond tolerance")


def assert_same(got, want):
    """Bit-identical up to the sign of zero (docs/packing.md allows +0.0 adds)."""
    assert got.dtype == want.dtype == np.float32
    assert got.shape == want.shape
    assert np.array_equal(got, want), (
        f"{np.count_nonzero(got != want)} of {got.size} values differ, "
        f"max |diff| {np.max(np.abs(got - want))}")


def check_gemm_all_kernels(x, W, b, threads=1, kernels=KERNELS, vs64=True):
    w, bp = packed(W, b)
    N = W.shape[0]
    want = _core.binary_gemm(x, w, N, bias=bp, threads=threads, kernel="ref")
    if vs64:
        z, err = gemm64(x, W, b)
        assert_close64(want, z, err)
    for k in kernels:
        assert_same(_core.binary_gemm(x, w, N, bias=bp, threads=threads, kernel=k), want)
    return want


def check_linear_all_kernels(x, W, b, activation, eps=1e-5, threads=1, kernels=KERNELS,
                             vs64=True):
    w, bp = packed(W, b)
    N = W.shape[0]
    want = _core.linear(x, w, N, bias=bp, activation=activation, eps=eps, threads=threads,
                        kernel="ref")
    if vs64:
        y, tol = linear64(x, W, b, activation, eps)
        assert_close64(want, y, tol)
    for k in kernels:
        got = _core.linear(x, w, N, bias=bp, activation=activation, eps=eps, threads=threads,
                           kernel=k)
        assert_same(got, want)
    return want


def best_kernel():
    for k in ["avx512", "avx2", "neon", "ref"]:
        if k in KERNELS:
            return k
    raise AssertionError("no kernel at all")


@pytest.fixture
def rng(request):
    # A seed per test, stable across runs, so a failure reproduces.
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def clean_env(monkeypatch):
    """No BITNN_KERNEL / BITNN_NUM_THREADS from the outer environment."""
    monkeypatch.delenv("BITNN_KERNEL", raising=False)
    monkeypatch.delenv("BITNN_NUM_THREADS", raising=False)
    return monkeypatch


# ------------------------------------------------------- kernel list, sanity

def test_ref_always_supported_and_lists_consistent():
    assert "ref" in KERNELS
    assert set(KERNELS) <= set(_core.kernels_compiled()) <= set(ALL_KERNEL_NAMES)
    info = bitnn.system_info()
    assert info["kernels_supported"] == KERNELS
    assert info["available_cpus"] >= 1


def test_x86_simd_kernels_follow_cpu_features():
    feats = set(_core.cpu_features())
    if "avx512" in _core.kernels_compiled():
        assert ("avx512" in KERNELS) == ("avx512f" in feats)
    if "avx2" in _core.kernels_compiled():
        assert ("avx2" in KERNELS) == ("avx2" in feats)


# -------------------------------------------------- packing: layout, round trip

def test_pack_bits_layout_single_bits():
    K = 200
    for k in [0, 1, 15, 16, 31, 32, 63, 64, 65, 127, 128, 199]:
        row = np.zeros(K, dtype=np.uint8)
        row[k] = 1
        w = bitnn.pack_bits(row)
        assert w.dtype == np.uint64 and w.shape == (4,)
        expect = np.zeros(4, dtype=np.uint64)
        expect[k // 64] = np.uint64(1) << np.uint64(k % 64)
        assert np.array_equal(w, expect), k


def test_pack_bits_little_endian_bytes():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, (3, 150), dtype=np.uint8)
    w = bitnn.pack_bits(bits)
    raw = np.frombuffer(w.astype("<u8").tobytes(), dtype=np.uint8).reshape(3, -1)
    assert raw.shape == (3, 24)
    for n in range(3):
        for k in range(150):
            assert (raw[n, k // 8] >> (k % 8)) & 1 == bits[n, k]
        for k in range(150, 192):  # padding bits are zero
            assert (raw[n, k // 8] >> (k % 8)) & 1 == 0


def test_pack_bits_known_words():
    assert bitnn.pack_bits([1, 0, 1]).tolist() == [5]
    assert bitnn.pack_bits([1] * 64).tolist() == [2 ** 64 - 1]
    assert bitnn.pack_bits([0] * 64 + [1]).tolist() == [0, 1]
    assert bitnn.pack_bits([[0, 1], [1, 1]]).tolist() == [[2], [3]]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 5), k=st.integers(1, 300), seed=st.integers(0, 2 ** 32 - 1),
       kind=st.sampled_from(["uint8", "bool", "int64", "float32", "float64"]))
def test_pack_unpack_round_trip(n, k, seed, kind):
    bits = np.random.default_rng(seed).integers(0, 2, (n, k)).astype(kind)
    w = bitnn.pack_bits(bits)
    assert w.dtype == np.uint64 and w.shape == (n, (k + 63) // 64)
    if k % 64 and n:
        assert not (w[:, -1] >> np.uint64(k % 64)).any()  # padding zero
    back = bitnn.unpack_bits(w, k)
    assert back.dtype == np.uint8 and back.shape == (n, k)
    assert np.array_equal(back, bits.astype(np.uint8))
    # 1-D (a bias) works the same
    if n:
        assert np.array_equal(bitnn.pack_bits(bits[0]), w[0])
        assert np.array_equal(bitnn.unpack_bits(w[0], k), bits[0].astype(np.uint8))


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("bad", [[0, 2], [-1, 0], [0.5, 1.0], [np.nan, 1.0], [1, 256]])
def test_pack_bits_rejects_non_bits(bad):
    with pytest.raises(ValueError):
        bitnn.pack_bits(np.array(bad))


def test_pack_unpack_bad_shapes_and_types():
    with pytest.raises(ValueError):
        bitnn.pack_bits(np.zeros((2, 0)))
    with pytest.raises(ValueError):
        bitnn.pack_bits(np.zeros((2, 2, 2)))
    with pytest.raises(TypeError):
        bitnn.pack_bits(np.array(["1", "0"]))
    with pytest.raises(TypeError):
        bitnn.unpack_bits(np.zeros(2, dtype=np.int64), 100)
    with pytest.raises(ValueError):
        bitnn.unpack_bits(np.zeros(2, dtype=np.uint64), 200)
    with pytest.raises(ValueError):
        bitnn.unpack_bits(np.zeros(2, dtype=np.uint64), 0)


# ------------------------------------------------ every kernel == ref, awkward K

@pytest.mark.parametrize("M,N", [(1, 1), (3, 7), (9, 17), (4, 8)])
def test_gemm_every_K_1_to_300(M, N, rng):
    for K in range(1, 301):
        x, W, b = make_case(rng, M, N, K)
        check_gemm_all_kernels(x, W, b)


@pytest.mark.parametrize("M,N", [(2, 5), (7, 9)])
def test_linear_every_K_1_to_300(M, N, rng):
    for K in range(1, 301):
        x, W, b = make_case(rng, M, N, K)
        check_linear_all_kernels(x, W, b, ACTIVATIONS[K % len(ACTIVATIONS)])


# (M, N, K): the large K values crossing word and 16-lane chunk boundaries, each
# M of the issue at least once, N small and odd to hit the row-block tails.
BIG_K_CASES = [
    (1, 3, 511), (2, 17, 512), (3, 9, 513), (7, 130, 511), (8, 33, 513), (9, 5, 512),
    (17, 12, 513), (33, 20, 511),
    (1, 64, 4095), (2, 7, 4096), (3, 1, 4097), (7, 13, 4097), (8, 9, 4095), (9, 4, 4096),
    (17, 3, 4097), (33, 6, 4095),
    (1, 9, 65537), (3, 5, 65537), (8, 2, 65537), (17, 1, 65537),
]


@pytest.mark.parametrize("M,N,K", BIG_K_CASES)
def test_gemm_large_K(M, N, K, rng):
    x, W, b = make_case(rng, M, N, K)
    check_gemm_all_kernels(x, W, b)


@pytest.mark.parametrize("M,N,K", BIG_K_CASES[::2])
@pytest.mark.parametrize("activation", ["linear", "relu", "gelu", "softmax"])
def test_linear_large_K(M, N, K, activation, rng):
    x, W, b = make_case(rng, M, N, K)
    check_linear_all_kernels(x, W, b, activation)


@pytest.mark.parametrize("M", [1, 5, 17])
@pytest.mark.parametrize("K", [33, 200])
def test_gemm_every_N_1_to_130(M, K, rng):
    for N in range(1, 131):
        x, W, b = make_case(rng, M, N, K, bias=None if N % 3 == 0 else "random")
        check_gemm_all_kernels(x, W, b)


@pytest.mark.parametrize("M", [1, 8])
def test_linear_every_N_1_to_130(M, rng):
    for N in range(1, 131):
        x, W, b = make_case(rng, M, N, 70)
        check_linear_all_kernels(x, W, b, ACTIVATIONS[N % len(ACTIVATIONS)])


@pytest.mark.parametrize("M,N,K", [(2, 2049, 513), (9, 2049, 64), (1, 30522, 768),
                                   (3, 30522, 65)])
def test_large_N(M, N, K, rng):
    x, W, b = make_case(rng, M, N, K)
    check_gemm_all_kernels(x, W, b)
    check_linear_all_kernels(x, W, b, "softmax")


@pytest.mark.parametrize("M", [1, 2, 3, 7, 8, 9, 17, 33])
def test_every_M(M, rng):
    x, W, b = make_case(rng, M, 37, 129)
    check_gemm_all_kernels(x, W, b)
    check_linear_all_kernels(x, W, b, "gelu")


@pytest.mark.parametrize("density,bias", [(0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1), (0.03, None),
                                          (0.97, "random")])
def test_extreme_bit_patterns(density, bias, rng):
    for M, N, K in [(5, 13, 1), (5, 13, 16), (5, 13, 100), (3, 66, 1000)]:
        x, W, b = make_case(rng, M, N, K, density=density, bias=bias)
        check_gemm_all_kernels(x, W, b)
        for act in ["linear", "relu", "gelu", "softmax"]:
            check_linear_all_kernels(x, W, b, act)


def test_all_zero_weights_give_bias_and_constant_rows_normalize_to_zero():
    x = np.random.default_rng(2).standard_normal((4, 70)).astype(np.float32)
    W = np.zeros((5, 70), np.uint8)
    b = np.array([1, 0, 1, 1, 0], np.uint8)
    for k in KERNELS:
        z = _core.binary_gemm(x, *[bitnn.pack_bits(W)], 5, bias=bitnn.pack_bits(b), kernel=k,
                              threads=1)
        assert np.array_equal(z, np.tile(b.astype(np.float32), (4, 1)))
        y = _core.linear(x, bitnn.pack_bits(W), 5, kernel=k, threads=1)  # z == 0: y == 0
        assert np.array_equal(y, np.zeros((4, 5), np.float32))
        y = _core.linear(x, bitnn.pack_bits(W), 5, activation="softmax", kernel=k, threads=1)
        assert np.array_equal(y, np.full((4, 5), 0.2, np.float32))


@pytest.mark.parametrize("M,N,K", [(6, 21, 333), (3, 9, 4097), (2, 5, 65537)])
def test_exact_small_integers(M, N, K):
    # Small integers sum exactly in fp32 whatever the order (|z| < 2^24 here),
    # so a single wrong bit anywhere shows, even at K = 65537.
    rng = np.random.default_rng(K)
    x = rng.integers(-50, 51, (M, K)).astype(np.float32)
    W = rng.integers(0, 2, (N, K), dtype=np.uint8)
    b = rng.integers(0, 2, N, dtype=np.uint8)
    want = (x.astype(np.int64) @ W.T.astype(np.int64) + b).astype(np.float32)
    w, bp = packed(W, b)
    for k in KERNELS:
        assert np.array_equal(_core.binary_gemm(x, w, N, bias=bp, kernel=k, threads=2), want)


def test_summation_order_is_the_documented_one():
    # docs/packing.md: each group of 4 inputs is summed first (its table entry),
    # then the groups in one chain. Group 1 = (-1e8, 1) rounds to -1e8 on its own,
    # so the documented order gives 1e8 + (-1e8) = 0, where a plain sequential sum
    # or the former 16-lane order would keep the 1.
    K = 32
    x = np.zeros((1, K), np.float32)
    x[0, 0] = 1e8
    x[0, 4] = -1e8
    x[0, 5] = 1.0
    W = np.ones((1, K), np.uint8)
    acc = np.float32(0)
    for g in range(K // 4):
        t = np.float32(0)
        for k in range(4 * g, 4 * g + 4):
            t = np.float32(t + x[0, k])
        acc = np.float32(acc + t)
    assert acc == 0.0
    for k in KERNELS:
        z = _core.binary_gemm(x, bitnn.pack_bits(W), 1, kernel=k, threads=1)
        assert z[0, 0] == acc, k


# ------------------------------------------------------------------ threads

@pytest.mark.parametrize("M,N,K", [(33, 17, 300), (33, 2049, 65), (2, 130, 513), (1, 1000, 97),
                                   (17, 64, 4097), (9, 3, 31)])
def test_threads_bit_identical(M, N, K, rng):
    x, W, b = make_case(rng, M, N, K)
    w, bp = packed(W, b)
    for k in KERNELS:
        z1 = _core.binary_gemm(x, w, N, bias=bp, threads=1, kernel=k)
        y1 = {a: _core.linear(x, w, N, bias=bp, activation=a, threads=1, kernel=k)
              for a in ["linear", "relu", "gelu", "softmax"]}
        for t in (2, 3, 4):
            assert_same(_core.binary_gemm(x, w, N, bias=bp, threads=t, kernel=k), z1)
            for a, y in y1.items():
                assert_same(_core.linear(x, w, N, bias=bp, activation=a, threads=t, kernel=k), y)


def test_threads_none_uses_default_and_matches(clean_env, rng):
    x, W, b = make_case(rng, 20, 300, 100)
    w, bp = packed(W, b)
    want = _core.linear(x, w, 300, bias=bp, threads=1, kernel="ref")
    assert_same(_core.linear(x, w, 300, bias=bp, kernel="ref"), want)
    clean_env.setenv("BITNN_NUM_THREADS", "3")
    assert _core.default_threads() == 3
    assert_same(_core.linear(x, w, 300, bias=bp, kernel="ref"), want)


def test_pool_is_shared_per_size():
    assert _core.get_pool(3) is _core.get_pool(3)
    assert _core.get_pool(3).size == 3


# ------------------------------------------------------ property-based cases

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(M=st.integers(0, 40), N=st.integers(1, 200), K=st.integers(1, 700),
       density=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
       has_bias=st.booleans(),
       eps=st.one_of(st.just(1e-5), st.floats(1e-8, 10.0)),
       activation=st.sampled_from(ACTIVATIONS),
       kernel=st.sampled_from(KERNELS),
       threads=st.integers(1, 4),
       scale=st.sampled_from([1e-3, 1.0, 1e3]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_property_random_cases(M, N, K, density, has_bias, eps, activation, kernel, threads,
                               scale, seed):
    rng = np.random.default_rng(seed)
    x, W, b = make_case(rng, M, N, K, density=density, bias="random" if has_bias else None,
                        scale=scale)
    w, bp = packed(W, b)
    z_ref = _core.binary_gemm(x, w, N, bias=bp, threads=1, kernel="ref")
    z = _core.binary_gemm(x, w, N, bias=bp, threads=threads, kernel=kernel)
    assert z.shape == (M, N)
    assert_same(z, z_ref)
    z64, err = gemm64(x, W, b)
    assert_close64(z, z64, err)

    y_ref = _core.linear(x, w, N, bias=bp, activation=activation, eps=eps, threads=1,
                         kernel="ref")
    y = _core.linear(x, w, N, bias=bp, activation=activation, eps=eps, threads=threads,
                     kernel=kernel)
    assert y.shape == (M, N)
    assert_same(y, y_ref)
    y64, tol = linear64(x, W, b, activation, eps)
    assert_close64(y, y64, tol)


# -------------------------------------------------------------- input forms

def test_input_dtypes_and_layouts_are_converted(rng):
    x, W, b = make_case(rng, 6, 11, 90)
    w, bp = packed(W, b)
    want = _core.linear(x, w, 11, bias=bp, threads=1, kernel="ref")
    # float64 input holding float32 values, Fortran order, a strided view
    assert_same(_core.linear(x.astype(np.float64), w, 11, bias=bp, threads=1), want)
    assert_same(_core.linear(np.asfortranarray(x), w, 11, bias=bp, threads=1), want)
    big = np.zeros((12, 180), np.float32)
    big[::2, ::2] = x
    assert_same(_core.linear(big[::2, ::2], w, 11, bias=bp, threads=1), want)
    # Fortran-ordered and read-only weights
    wf = np.asfortranarray(w)
    wf.flags.writeable = False
    assert_same(_core.linear(x, wf, 11, bias=bp, threads=1), want)
    # integer and boolean inputs
    xi = rng.integers(-3, 4, (6, 90))
    zi = _core.binary_gemm(xi, w, 11, bias=bp, threads=1, kernel="ref")
    assert np.array_equal(zi, (xi @ W.T.astype(np.int64) + b).astype(np.float32))
    xb = xi > 0
    zb = _core.binary_gemm(xb, w, 11, threads=1)
    assert np.array_equal(zb, (xb.astype(np.int64) @ W.T.astype(np.int64)).astype(np.float32))


def test_empty_batch_returns_0_by_N():
    w = bitnn.pack_bits(np.ones((5, 70)))
    x = np.zeros((0, 70), np.float32)
    for k in KERNELS:
        z = _core.binary_gemm(x, w, 5, kernel=k, threads=2)
        assert z.shape == (0, 5) and z.dtype == np.float32
        for a in ACTIVATIONS:
            y = _core.linear(x, w, 5, activation=a, kernel=k, threads=2)
            assert y.shape == (0, 5) and y.dtype == np.float32
    assert bitnn.linear(x, np.ones((5, 70))).shape == (0, 5)


# --------------------------------------------------------------- bad input

@pytest.fixture
def good():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 70)).astype(np.float32)
    w = bitnn.pack_bits(rng.integers(0, 2, (5, 70)))
    b = bitnn.pack_bits(rng.integers(0, 2, 5))
    return x, w, b


OPS = [_core.binary_gemm, _core.linear]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("bad_w", [
    lambda w: w.astype(np.int64), lambda w: w.astype(np.float64), lambda w: w.view(np.int64),
    lambda w: w.astype(np.uint32), lambda w: w.tolist(), lambda w: None,
])
def test_weight_wrong_dtype_is_type_error(op, good, bad_w):
    x, w, b = good
    with pytest.raises(TypeError, match="uint64"):
        op(x, bad_w(w), 5)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("bad_w,n", [
    (lambda w: w[:4], 5),                        # too few rows
    (lambda w: np.vstack([w, w[:1]]), 5),        # too many rows
    (lambda w: np.hstack([w, w]), 5),            # too many words per row
    (lambda w: w[:, :1], 5),                     # too few words per row
    (lambda w: w.reshape(-1), 5),                # 1-D
    (lambda w: w[None], 5),                      # 3-D
    (lambda w: w, 4),                            # out_features disagrees
    (lambda w: w, 6),
])
def test_weight_wrong_shape_is_value_error(op, good, bad_w, n):
    x, w, b = good
    with pytest.raises(ValueError, match="weight"):
        op(x, bad_w(w), n)


@pytest.mark.parametrize("op", OPS)
def test_weight_nonzero_padding_is_value_error(op, good):
    x, w, b = good
    bad = w.copy()
    bad[2, 1] |= np.uint64(1) << np.uint64(70 - 64)  # bit 70 of row 2: first padding bit
    with pytest.raises(ValueError, match="padding"):
        op(x, bad, 5)
    bad = w.copy()
    bad[4, 1] |= np.uint64(1) << np.uint64(63)
    with pytest.raises(ValueError, match="padding"):
        op(x, bad, 5)


@pytest.mark.parametrize("op", OPS)
def test_bias_errors(op, good):
    x, w, b = good
    with pytest.raises(TypeError, match="bias"):
        op(x, w, 5, bias=b.astype(np.int64))
    with pytest.raises(TypeError, match="bias"):
        op(x, w, 5, bias=[1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="bias"):
        op(x, w, 5, bias=np.zeros(2, np.uint64))
    with pytest.raises(ValueError, match="bias"):
        op(x, w, 5, bias=np.zeros((1, 1), np.uint64))
    with pytest.raises(ValueError, match="padding"):
        op(x, w, 5, bias=np.array([1 << 5], np.uint64))


@pytest.mark.parametrize("op", OPS)
def test_x_errors(op, good):
    x, w, b = good
    with pytest.raises(ValueError):
        op(x[0], w, 5)                                  # 1-D
    with pytest.raises(ValueError):
        op(x[None], w, 5)                               # 3-D
    with pytest.raises(ValueError, match="weight"):
        op(x[:, :60], w, 5)                             # K=60 wants ... same words but
    # K mismatch that changes the word count
    with pytest.raises(ValueError, match="weight"):
        op(np.zeros((3, 130), np.float32), w, 5)
    with pytest.raises(ValueError, match="feature"):
        op(np.zeros((3, 0), np.float32), np.zeros((5, 0), np.uint64), 5)
    with pytest.raises(TypeError):
        op(x.astype(np.complex64), w, 5)
    with pytest.raises(TypeError):
        op(np.array([["a"] * 70] * 3), w, 5)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_x_is_value_error(op, good, value):
    x, w, b = good
    bad = x.copy()
    bad[1, 33] = value
    with pytest.raises(ValueError, match="NaN or infinity"):
        op(bad, w, 5)
    # a float64 value that overflows float32 is caught after the conversion
    big = x.astype(np.float64)
    big[0, 0] = 1e39
    with pytest.raises(ValueError, match="NaN or infinity"):
        op(big, w, 5)


@pytest.mark.parametrize("op", OPS)
def test_out_features_zero_is_value_error(op, good):
    x, w, b = good
    with pytest.raises(ValueError, match="out_features"):
        op(x, np.zeros((0, 2), np.uint64), 0)


@pytest.mark.parametrize("activation", ["tanh", "RELU", "", 3, 1.5, ["relu"]])
def test_unknown_activation(good, activation):
    x, w, b = good
    with pytest.raises(ValueError, match="activation"):
        _core.linear(x, w, 5, activation=activation)
    with pytest.raises(ValueError, match="activation"):
        bitnn.linear(x, w, activation=activation)


@pytest.mark.parametrize("eps", [0.0, -0.0, -1e-5, np.nan, np.inf, -np.inf])
def test_bad_eps(good, eps):
    x, w, b = good
    with pytest.raises(ValueError, match="eps"):
        _core.linear(x, w, 5, eps=eps)


@pytest.mark.parametrize("eps", [1e-50, 1e39])
def test_eps_out_of_float32_range_is_value_error(good, eps):
    x, w, b = good
    with pytest.raises(ValueError, match="eps"):
        _core.linear(x, w, 5, eps=eps)


def test_eps_out_of_float32_range_never_crashes(good):
    x, w, b = good
    for eps in [1e-50, 1e39]:
        with pytest.raises((ValueError, RuntimeError)):
            _core.linear(x, w, 5, eps=eps)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("threads", [0, -1, 1025, 2000])
def test_bad_thread_count(op, good, threads):
    x, w, b = good
    with pytest.raises(ValueError, match="threads"):
        op(x, w, 5, threads=threads)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("threads", [1.5, "2", True])
def test_thread_count_wrong_type(op, good, threads):
    x, w, b = good
    with pytest.raises(TypeError, match="threads"):
        op(x, w, 5, threads=threads)


@pytest.mark.parametrize("op", OPS)
def test_unknown_kernel_name(op, good):
    x, w, b = good
    for name in ["bogus", "AVX512", "", "sse"]:
        with pytest.raises(ValueError, match="unknown kernel"):
            op(x, w, 5, kernel=name)
    with pytest.raises(TypeError, match="kernel"):
        op(x, w, 5, kernel=3)


@pytest.mark.parametrize("op", OPS)
def test_unsupported_kernel_is_kernel_error(op, good):
    x, w, b = good
    missing = [k for k in ALL_KERNEL_NAMES if k not in KERNELS]
    if not missing:
        pytest.skip("every kernel runs here")
    for name in missing:
        with pytest.raises(KernelError, match=name):
            op(x, w, 5, kernel=name)


def test_kernel_error_is_runtime_error():
    assert issubclass(KernelError, RuntimeError)


# ---------------------------------------------------- environment variables

def test_default_kernel_is_best_supported(clean_env):
    assert _core.default_kernel() == best_kernel()
    assert bitnn.system_info()["kernel"] == best_kernel()
    for value in ["auto", ""]:
        clean_env.setenv("BITNN_KERNEL", value)
        assert _core.default_kernel() == best_kernel()


def test_env_kernel_read_at_each_call(clean_env, good):
    x, w, b = good
    clean_env.setenv("BITNN_KERNEL", "ref")
    assert _core.default_kernel() == "ref"
    want = _core.linear(x, w, 5, bias=b, threads=1)
    assert_same(want, _core.linear(x, w, 5, bias=b, threads=1, kernel="ref"))
    clean_env.setenv("BITNN_KERNEL", "bogus")
    with pytest.raises(KernelError, match="bogus"):
        _core.default_kernel()
    with pytest.raises(KernelError, match="BITNN_KERNEL"):
        _core.linear(x, w, 5, bias=b, threads=1)
    with pytest.raises(KernelError, match="BITNN_KERNEL"):
        bitnn.linear(x, w, b, threads=1)
    # a named kernel does not look at the variable
    assert_same(_core.linear(x, w, 5, bias=b, threads=1, kernel="ref"), want)
    info = bitnn.system_info()
    assert info["kernel"] is None and "bogus" in info["kernel_error"]
    clean_env.delenv("BITNN_KERNEL")
    assert _core.default_kernel() == best_kernel()


def test_env_threads_read_at_each_call(clean_env, good):
    x, w, b = good
    assert _core.default_threads() == _core.available_cpus()
    clean_env.setenv("BITNN_NUM_THREADS", "3")
    assert _core.default_threads() == 3 and bitnn.system_info()["threads"] == 3
    for bad in ["abc", "0", "-2", "1025", "2.5", "3x", " "]:
        clean_env.setenv("BITNN_NUM_THREADS", bad)
        with pytest.raises(ValueError, match="BITNN_NUM_THREADS"):
            _core.default_threads()
        with pytest.raises(ValueError, match="BITNN_NUM_THREADS"):
            _core.linear(x, w, 5, kernel="ref")
        info = bitnn.system_info()
        assert info["threads"] is None and "BITNN_NUM_THREADS" in info["threads_error"]
        _core.linear(x, w, 5, kernel="ref", threads=2)  # explicit count: fine


_PROBE = r"""
import json, numpy as np, bitnn
from bitnn import _core
out = {"info": bitnn.system_info()}
x = np.ones((2, 70), np.float32)
w = bitnn.pack_bits(np.ones((3, 70)))
try:
    out["y"] = _core.linear(x, w, 3).tolist()
except Exception as e:
    out["error"] = [type(e).__name__, str(e), isinstance(e, bitnn.KernelError)]
print(json.dumps(out))
"""


def run_probe(**env_vars):
    env = {k: v for k, v in os.environ.items()
           if k not in ("BITNN_KERNEL", "BITNN_NUM_THREADS")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(bitnn.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_vars)
    p = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stderr}"  # never a crash / SIGILL
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_subprocess_kernel_ref():
    out = run_probe(BITNN_KERNEL="ref")
    assert out["info"]["kernel"] == "ref"
    assert "error" not in out and np.allclose(out["y"], 0.0)


def test_subprocess_kernel_bogus():
    out = run_probe(BITNN_KERNEL="bogus")
    assert out["info"]["kernel"] is None
    assert "BITNN_KERNEL=bogus" in out["info"]["kernel_error"]
    name, msg, is_kernel_error = out["error"]
    assert is_kernel_error and name == "KernelError" and "bogus" in msg


def test_subprocess_kernel_unsupported_here():
    missing = [k for k in ALL_KERNEL_NAMES if k not in KERNELS]
    if not missing:
        pytest.skip("every kernel runs here")
    for name in missing:  # e.g. neon on x86: a clear error, never SIGILL
        out = run_probe(BITNN_KERNEL=name)
        assert out["info"]["kernel"] is None
        assert name in out["info"]["kernel_error"]
        ename, msg, is_kernel_error = out["error"]
        assert is_kernel_error and f"BITNN_KERNEL={name}" in msg
        assert "no " + name + " kernel" in msg or "cannot run" in msg


def test_subprocess_num_threads():
    out = run_probe(BITNN_NUM_THREADS="3")
    assert out["info"]["threads"] == 3 and "error" not in out
    out = run_probe(BITNN_NUM_THREADS="abc")
    assert out["info"]["threads"] is None
    name, msg, is_kernel_error = out["error"]
    assert name == "ValueError" and "BITNN_NUM_THREADS=abc" in msg


def test_subprocess_defaults():
    out = run_probe()
    assert out["info"]["kernel"] == best_kernel()
    assert out["info"]["threads"] == out["info"]["available_cpus"]


# ------------------------------------------------------ bitnn.linear (ops.py)

@pytest.mark.parametrize("wdtype", [np.uint8, np.bool_, np.int32, np.float32])
def test_ops_linear_unpacked_weights(wdtype, rng):
    x, W, b = make_case(rng, 4, 19, 100)
    w, bp = packed(W, b)
    want = _core.linear(x, w, 19, bias=bp, activation="relu", threads=1, kernel="ref")
    got = bitnn.linear(x, W.astype(wdtype), b.astype(wdtype), activation="relu", threads=1,
                       kernel="ref")
    assert_same(got, want)
    # packed weights, unpacked bias, and the other way round
    assert_same(bitnn.linear(x, w, b, activation="relu", threads=1, kernel="ref"), want)
    assert_same(bitnn.linear(x, W, bp, activation="relu", threads=1, kernel="ref"), want)
    assert_same(bitnn.linear(x, w, bp, out_features=19, activation="relu", threads=1,
                             kernel="ref"), want)


def test_ops_linear_1d_x(rng):
    x, W, b = make_case(rng, 1, 23, 77)
    want = bitnn.linear(x, W, b, activation="gelu", kernel="ref", threads=1)
    assert want.shape == (1, 23)
    for k in KERNELS:
        y = bitnn.linear(x[0], W, b, activation="gelu", kernel=k, threads=1)
        assert y.shape == (23,) and y.dtype == np.float32
        assert_same(y, want[0])
    y64, tol = linear64(x, W, b, "gelu", 1e-5)
    assert_close64(want, y64, tol)
    # a python list works too
    assert_same(bitnn.linear(x[0].tolist(), W, b, activation="gelu", kernel="ref",
                             threads=1), want[0])


def test_ops_linear_bad_unpacked_input():
    x = np.ones((2, 10), np.float32)
    with pytest.raises(ValueError):
        bitnn.linear(x, np.full((3, 10), 2))
    with pytest.raises(ValueError):
        bitnn.linear(x, np.ones((3, 12)))         # extra ones: caught as padding bits
    with pytest.raises(ValueError):
        bitnn.linear(x, np.ones((3, 10)), out_features=4)
    with pytest.raises(ValueError):
        bitnn.linear(x, np.ones((0, 10)))
    with pytest.raises(ValueError):
        bitnn.linear(x, np.ones((3, 10)), bias=[1, 0, 1, 1])  # caught as padding bits


def test_ops_linear_unpacked_width_must_match_x():
    x = np.ones((2, 10), np.float32)
    w = np.zeros((3, 12))
    w[:, :10] = 1
    with pytest.raises(ValueError):
        bitnn.linear(x, w)


def test_ops_linear_unpacked_bias_length_must_match_n():
    x = np.ones((2, 10), np.float32)
    with pytest.raises(ValueError):
        bitnn.linear(x, np.ones((3, 10)), bias=[1, 0])


def test_packed_weights_give_the_same_bits_as_raw_weights():
    """bitnn.PackedWeights (the weights prepared once for the kernels) in place of the
    packed array: the same results in both precisions, every kernel; a mismatched
    shape is refused; it pickles."""
    import pickle

    rng = np.random.default_rng(11)
    x, W, b = make_case(rng, 5, 37, 101)
    wp, bp = packed(W, b)
    pw = bitnn.PackedWeights(wp, 37, 101)
    assert (pw.out_features, pw.in_features) == (37, 101)
    for prec in ("fp32", "int8"):
        for k in KERNELS:
            raw = _core.linear(x, wp, 37, bias=bp, activation="gelu", kernel=k, precision=prec)
            pre = _core.linear(x, pw, 37, bias=bp, activation="gelu", kernel=k, precision=prec)
            assert np.array_equal(raw, pre), (k, prec)
    assert np.array_equal(bitnn.linear(x, pw, b), bitnn.linear(x, W, b))
    with pytest.raises(ValueError, match="PackedWeights are 37 x 101"):
        _core.linear(x, pw, 36, bias=bp)
    with pytest.raises(ValueError):
        bitnn.PackedWeights(wp, 38, 101)
    with pytest.raises(TypeError):
        bitnn.PackedWeights(W, 37, 101)  # unpacked {0,1} bytes, not uint64 words
    again = pickle.loads(pickle.dumps(pw))
    assert np.array_equal(_core.linear(x, again, 37, bias=bp), _core.linear(x, pw, 37, bias=bp))


def test_repeat_runs_the_op_that_many_times_with_the_same_result():
    rng = np.random.default_rng(12)
    x, W, b = make_case(rng, 3, 20, 70)
    wp, bp = packed(W, b)
    one = _core.binary_gemm(x, wp, 20, bias=bp)
    assert np.array_equal(_core.binary_gemm(x, wp, 20, bias=bp, repeat=3), one)
    with pytest.raises(ValueError, match="repeat"):
        _core.binary_gemm(x, wp, 20, bias=bp, repeat=0)
