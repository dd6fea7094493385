"""Dispatch and threading are observable, not assumed.

* Every GEMM kernel counts its own calls (``_core.kernel_calls()``), so the
  kernel that really ran is seen: forcing each supported kernel runs that one
  and no other, for the linear op, the classifier (convolutions included) and
  the language decoder; the default is the best supported kernel.
* The pool counts the distinct threads that ran part of a job
  (``ThreadPool.threads_used``): work is really shared out.
* Normalize of one long row (16,384+ values, 2+ threads) takes a separate,
  chunk-parallel path (csrc/kernels/ops.c): it must give the same bits as the serial
  path and match an exact float64 reference.
"""
import math
import os

import numpy as np
import pytest

import bitnn
from bitnn import _core

KERNELS = _core.kernels_supported()
ACTS = [None, "relu", "gelu", "softmax"]


def ran(fn):
    """The kernels whose call counters moved while fn() ran."""
    before = _core.kernel_calls()
    fn()
    after = _core.kernel_calls()
    return {k for k in after if after[k] != before[k]}


def random_layer(rng, M, K, N):
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = bitnn.pack_bits(rng.integers(0, 2, (N, K), dtype=np.uint8))
    b = bitnn.pack_bits(rng.integers(0, 2, N, dtype=np.uint8))
    return x, w, b


# ---------------------------------------------------------------- dispatch

@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("threads", [1, 2])
def test_forcing_a_kernel_runs_that_kernel(kernel, threads):
    x, w, b = random_layer(np.random.default_rng(0), 5, 200, 70)
    assert ran(lambda: _core.linear(x, w, 70, b, "relu", threads=threads,
                                    kernel=kernel)) == {kernel}
    assert ran(lambda: _core.binary_gemm(x, w, 70, b, threads=threads, kernel=kernel)) == {kernel}


def test_default_kernel_is_the_best_supported_and_is_what_runs(monkeypatch):
    monkeypatch.delenv("BITNN_KERNEL", raising=False)
    best = next(k for k in ("avx512", "avx2", "neon", "ref") if k in KERNELS)
    assert _core.default_kernel() == best
    x, w, b = random_layer(np.random.default_rng(1), 3, 64, 16)
    assert ran(lambda: _core.linear(x, w, 16, b)) == {best}


@pytest.mark.parametrize("kernel", KERNELS)
def test_env_kernel_is_what_runs(monkeypatch, kernel):
    monkeypatch.setenv("BITNN_KERNEL", kernel)
    x, w, b = random_layer(np.random.default_rng(2), 3, 64, 16)
    assert ran(lambda: _core.linear(x, w, 16, b)) == {kernel}


@pytest.fixture(scope="module")
def cnn_path(tmp_path_factory):
    pytest.importorskip("torch")
    from conftest import random_cnn

    m = random_cnn(1, in_channels=2, num_classes=5, channels=(4, 6), kernel_size=3,
                   fc_units=(9,), norm="chw")
    path = tmp_path_factory.mktemp("cnn") / "m.bnb"
    bitnn.export(m, path, input_shape=(2, 12, 10))
    return path


@pytest.mark.parametrize("kernel", KERNELS)
def test_classifier_runs_the_forced_kernel(cnn_path, kernel):
    x = np.random.default_rng(3).standard_normal((2, 2, 12, 10)).astype(np.float32)
    with bitnn.load(cnn_path, threads=2, kernel=kernel) as model:
        assert ran(lambda: model.predict(x)) == {kernel}


@pytest.mark.parametrize("kernel", KERNELS)
def test_decoder_runs_the_forced_kernel(lm_path, kernel):
    _, path, _ = lm_path
    with bitnn.load(path, threads=2, kernel=kernel) as model:
        assert ran(lambda: model.predict([[1, 2, 3, 4]])) == {kernel}
        assert ran(lambda: model.generate([1, 2], 3, temperature=0)) == {kernel}


def test_kernel_results_identical_when_each_really_ran():
    """Each kernel is seen to run, and all give the reference's bits."""
    x, w, b = random_layer(np.random.default_rng(4), 7, 333, 45)
    outs = {}
    for kernel in KERNELS:
        def run(kernel=kernel):
            outs[kernel] = _core.linear(x, w, 45, b, "gelu", kernel=kernel)

        assert ran(run) == {kernel}
    for kernel in KERNELS:
        assert np.array_equal(outs[kernel], outs["ref"]), kernel


# ------------------------------------------------------------------ the pool

@pytest.mark.parametrize("size", [2, 3, 4])
def test_pool_runs_work_on_every_thread(size):
    pool = _core.ThreadPool(size)  # a private pool: its counter starts at 0
    assert pool.threads_used == 0
    x, w, b = random_layer(np.random.default_rng(5), 2, 100, 64 * size)
    # get_pool(size) is the shared pool the op uses: check it the same way
    shared = _core.get_pool(size)
    _core.linear(x, w, 64 * size, b, threads=size)
    assert shared.threads_used == size
    assert pool.threads_used == 0  # untouched pools stay at 0


def test_single_thread_pool_never_hands_out_work():
    x, w, b = random_layer(np.random.default_rng(6), 4, 100, 300)
    _core.linear(x, w, 300, b, threads=1)
    assert _core.get_pool(1).threads_used == 0


def test_classifier_and_decoder_use_both_threads(cnn_path, lm_path):
    x = np.random.default_rng(7).standard_normal((4, 2, 12, 10)).astype(np.float32)
    with bitnn.load(cnn_path, threads=5) as model:
        model.predict(x)
    assert _core.get_pool(5).threads_used == 5
    _, path, _ = lm_path
    with bitnn.load(path, threads=6) as model:
        model.generate([1, 2, 3], 4, temperature=0)
    assert _core.get_pool(6).threads_used >= 2


def test_more_threads_than_cpus_gives_the_same_bits(lm_path):
    """A pool larger than the CPUs the process may use (here 4 threads pinned to one
    CPU, in a child process): the waiting threads spin and yield (threadpool.c), the
    job still completes and gives the 1-thread bits (a hang fails on the timeout)."""
    import subprocess
    import sys
    import textwrap

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity on this platform")
    _, path, _ = lm_path
    code = textwrap.dedent(f"""
        import os, numpy as np, bitnn
        os.sched_setaffinity(0, {{sorted(os.sched_getaffinity(0))[0]}})
        ids = np.arange(1, 20, dtype=np.int32) % 50
        out, gen = [], []
        for t in (1, 4):
            with bitnn.load({str(path)!r}, threads=t) as m:
                out.append(m.predict([ids])[0])
                gen.append(m.generate([1, 2, 3], 8, temperature=0))
        assert np.array_equal(out[0], out[1]), "bits differ"
        assert gen[0] == gen[1], gen
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


# ------------------------------------------------- Normalize of a long row

def exact_normalize(z, eps, act):
    """act(Normalize(z)) with exactly rounded mean and variance (math.fsum)."""
    z64 = np.asarray(z, dtype=np.float64)
    n = z64.size
    mean = math.fsum(z64) / n
    var = math.fsum((z64 - mean) ** 2) / n
    v = (z64 - mean) / math.sqrt(var + float(np.float32(eps)))
    v = v.astype(np.float32).astype(np.float64)
    if act == "relu":
        return np.maximum(v, 0.0)
    if act == "gelu":
        return 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))
    if act == "softmax":
        e = np.exp(v - v.max())
        return e / e.sum()
    return v


def identity_rows(N, K):
    """Packed weights whose row n selects input n // (N // K): z[n] = x[n // (N // K)] exactly."""
    W = np.zeros((N, K), dtype=np.uint8)
    W[np.arange(N), np.arange(N) // (N // K)] = 1
    return bitnn.pack_bits(W)


@pytest.mark.parametrize("N", [16384, 20000, 4 * 4096 + 1, 70001])
@pytest.mark.parametrize("act", ACTS)
def test_long_row_threaded_path_is_bit_identical_to_serial(N, act):
    x, w, b = random_layer(np.random.default_rng(N), 1, 96, N)
    serial = _core.linear(x, w, N, b, act, threads=1)
    for threads in (2, 3, 4):
        got = _core.linear(x, w, N, b, act, threads=threads)
        assert np.array_equal(got, serial), (threads, act)
    z = _core.binary_gemm(x, w, N, b)  # the raw sums the layer normalizes
    want = exact_normalize(z[0], 1e-5, act)
    if act in (None, "relu"):  # measured: the exactly rounded values, bit for bit
        assert np.array_equal(serial[0], want.astype(np.float32))
    else:  # measured: at most 4.9e-8 relative (softmax, N=70001): float32 rounding
        assert np.abs(serial[0] - want).max() <= 2e-7 * np.abs(want).max(), act


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_long_row_chunk_order_is_the_documented_one(threads):
    """Chunk sums are added in chunk order (docs/packing.md): with a huge value
    and its negative in chunks 0 and 1, and ones in chunk 3, adding in order
    keeps the ones (exact mean 0.25); any other order loses them."""
    X = np.float32(1e30)
    x = np.array([[X, -X, 0.0, 1.0]], dtype=np.float32)
    w = identity_rows(4 * 4096, 4)
    y = _core.linear(x, w, 4 * 4096, None, threads=threads)[0]
    want = exact_normalize(np.repeat(x[0], 4096), 1e-5, None).astype(np.float32)
    assert np.array_equal(y, want)
    assert y[-1] != 0.0 and y[-1] == want[-1]


@pytest.mark.parametrize("threads", [1, 2])
def test_lanes_within_a_chunk_combine_in_the_documented_order(threads):
    """Within a chunk value n goes to partial sum n % 8 and the eight are added
    as ((0+4)+(2+6)) + ((1+5)+(3+7)) (csrc/kernels/ops.c): with +X in lane 0, -X in
    lane 4 and 1 in lane 1 that keeps the 1 (mean 1/8 exactly); pairing lane 0
    with lane 1 first would lose it."""
    X = np.float32(1e30)
    x = np.array([[X, 1.0, 0.0, 0.0, -X, 0.0, 0.0, 0.0]], dtype=np.float32)
    w = identity_rows(8, 8)
    y = _core.linear(x, w, 8, None, threads=threads)[0]
    assert np.array_equal(y, exact_normalize(x[0], 1e-5, None).astype(np.float32))
    assert y[2] < 0  # (0 - 1/8) / sd: the lost 1 would make this -0.0


@pytest.mark.parametrize("eps", [1e-5, 0.5, 3.0])
def test_long_row_eps_is_used_on_every_path(eps):
    x, w, b = random_layer(np.random.default_rng(8), 1, 50, 20000)
    serial = _core.linear(x, w, 20000, b, eps=eps, threads=1)
    threaded = _core.linear(x, w, 20000, b, eps=eps, threads=2)
    assert np.array_equal(serial, threaded)
    z = _core.binary_gemm(x, w, 20000, b)
    # measured: the exactly rounded values, bit for bit
    assert np.array_equal(threaded[0], exact_normalize(z[0], eps, None).astype(np.float32))
