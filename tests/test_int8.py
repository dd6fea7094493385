"""The int8 numeric mode (precision="int8", docs/packing.md "int8 mode").

* numpy states the contract independently of C: per-row symmetric
  quantization (amax / 127, fp32 product, round half to even), an exact
  integer sum over the set bits, then ``float(S) * scale + bias`` in fp32.
  The reference kernel must equal it bit for bit, and every SIMD kernel and
  thread count must equal the reference (``np.array_equal``).
* The mode is an approximation of fp32: its error is bounded and the
  shipped models' predictions barely move.
"""
import numpy as np
import pytest

import bitnn
from bitnn import _core

KERNELS = _core.kernels_supported()


def quantize(x):
    """numpy statement of the shared quantizer (csrc/kernels/ops.c)."""
    x = np.asarray(x, dtype=np.float32)
    amax = np.abs(x).max(axis=1).astype(np.float32)
    q = np.zeros(x.shape, dtype=np.int64)
    nz = amax > 0
    inv = np.float32(127.0) / amax[nz]
    v = (x[nz] * inv[:, None]).astype(np.float32)
    q[nz] = np.clip(np.rint(v), -127, 127).astype(np.int64)
    return q, (amax / np.float32(127.0)).astype(np.float32)


def gemm_int8_numpy(x, W, b):
    q, scale = quantize(x)
    S = q @ W.astype(np.int64).T
    z = S.astype(np.float32) * scale[:, None]
    if b is not None:
        z = (z + b.astype(np.float32)[None, :]).astype(np.float32)
    return z


def case(rng, M, N, K, density=0.5, bias=True, scale=1.0):
    x = (rng.standard_normal((M, K)) * scale).astype(np.float32)
    W = (rng.random((N, K)) < density).astype(np.uint8)
    b = rng.integers(0, 2, N, dtype=np.uint8) if bias else None
    return x, W, b


def gemm(x, W, b, kernel, threads=1):
    return _core.binary_gemm(x, bitnn.pack_bits(W), W.shape[0],
                             None if b is None else bitnn.pack_bits(b), threads=threads,
                             kernel=kernel, precision="int8")


SHAPES = [(1, 1, 1), (1, 17, 63), (1, 16, 64), (1, 33, 65), (3, 7, 100), (4, 4, 128),
          (5, 19, 129), (4, 16, 1000), (9, 130, 300), (17, 5, 2049), (1, 1000, 768),
          (2, 3, 65537), (33, 64, 97), (64, 48, 256)]


@pytest.mark.parametrize("M,N,K", SHAPES)
def test_reference_equals_the_numpy_statement(M, N, K):
    rng = np.random.default_rng(M * 1000003 + N * 101 + K)
    x, W, b = case(rng, M, N, K, bias=(K % 2 == 0))
    assert np.array_equal(gemm(x, W, b, "ref"), gemm_int8_numpy(x, W, b))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_every_kernel_equals_the_reference(kernel, M, N, K):
    rng = np.random.default_rng(7 + M * 31 + N * 7 + K)
    x, W, b = case(rng, M, N, K, density=[0.5, 0.05, 0.95][K % 3])
    ref = gemm(x, W, b, "ref")
    for threads in (1, 2, 3):
        assert np.array_equal(gemm(x, W, b, kernel, threads), ref), (kernel, threads)


@pytest.mark.parametrize("kernel", KERNELS)
def test_extremes_zero_rows_constant_rows_and_all_ones(kernel):
    rng = np.random.default_rng(3)
    x, W, b = case(rng, 6, 40, 200)
    x[0] = 0.0                      # amax 0: scale 0, z = bias
    x[1] = -2.5                     # every q = -127
    x[2, ::2] = 1e30                # huge values still quantize to +-127
    W[3] = 1
    W[4] = 0
    z = gemm(x, W, b, kernel)
    assert np.array_equal(z, gemm_int8_numpy(x, W, b))
    assert np.array_equal(z[0], b.astype(np.float32))


def test_quantization_error_is_bounded():
    """|z_int8 - z_fp32| <= (sum of per-element rounding errors) <= (#ones) * scale / 2."""
    rng = np.random.default_rng(11)
    x, W, b = case(rng, 8, 300, 777)
    z8 = gemm(x, W, b, "ref")
    z32 = x.astype(np.float64) @ W.T.astype(np.float64) + b
    _, scale = quantize(x)
    bound = W.sum(1)[None, :] * scale[:, None] / 2 * (1 + 1e-5) + 1e-3 * np.abs(z32)
    assert np.all(np.abs(z8 - z32) <= bound)


@pytest.mark.parametrize("activation", ["linear", "relu", "gelu", "softmax"])
def test_linear_int8_is_close_to_fp32(activation):
    rng = np.random.default_rng(5)
    x, W, b = case(rng, 16, 200, 512)
    y32 = bitnn.linear(x, W, b, activation=activation)
    y8 = bitnn.linear(x, W, b, activation=activation, precision="int8")
    # measured max 0.0128 (linear) on this case; Normalize puts values at unit scale
    assert np.abs(y8 - y32).max() < 0.05


def test_bad_precision_is_value_error():
    x = np.ones((1, 8), np.float32)
    w = bitnn.pack_bits(np.ones((2, 8), np.uint8))
    for bad in ["int4", "FP32", None, 8]:
        with pytest.raises(ValueError, match="precision"):
            _core.binary_gemm(x, w, 2, precision=bad)
        with pytest.raises(ValueError, match="precision"):
            bitnn.load("fashion", precision=bad)


# ------------------------------------------------------------ shipped models

@pytest.fixture(scope="module")
def fashion_samples():
    from pathlib import Path

    from bitnn import imageio

    d = Path(bitnn.__file__).parent / "models" / "samples"
    paths = sorted(d.glob("*.png"))
    assert paths
    return np.stack([imageio.read_image(str(p)) for p in paths]), [p.stem for p in paths]


def test_classifier_int8_same_classes_and_kernel_thread_invariant(fashion_samples):
    images, names = fashion_samples
    with bitnn.load("fashion") as m32:
        p32 = m32.predict(images)
    outs = []
    for kernel in KERNELS:
        for threads in (1, 2):
            with bitnn.load("fashion", precision="int8", kernel=kernel, threads=threads) as m8:
                assert m8.precision == "int8" and "precision int8" in m8.summary()
                outs.append(m8.predict(images))
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])
    assert np.array_equal(outs[0].argmax(1), p32.argmax(1))
    assert np.abs(outs[0] - p32).max() < 0.05


def test_lm_int8_kernel_thread_and_batch_invariant():
    ids = [5, 17, 300, 2, 99, 1000, 7, 8]
    res = []
    for kernel in KERNELS:
        for threads in (1, 2):
            with bitnn.load("shakespeare", precision="int8", kernel=kernel, threads=threads) as lm:
                assert lm.precision == "int8"
                res.append(lm.predict([ids]))
                # the prompt as one batch of rows or token by token: same bits
                st = lm._graph.new_state()
                for t in ids[:-1]:
                    st.forward([t], scores=False, threads=threads, kernel=kernel)
                one = st.forward([ids[-1]], threads=threads, kernel=kernel)
                st2 = lm._graph.new_state()
                batch = st2.forward(ids, threads=threads, kernel=kernel)
                assert np.array_equal(one, batch)
    for r in res[1:]:
        assert np.array_equal(r, res[0])
    with bitnn.load("shakespeare") as lm32:
        p32 = lm32.predict([ids])
    assert np.abs(res[0] - p32).max() < 0.02


def test_lm_int8_generate_is_deterministic():
    with bitnn.load("shakespeare", precision="int8") as lm:
        a = lm.generate("ROMEO:", 20, seed=3)
        b = lm.generate("ROMEO:", 20, seed=3)
    assert a == b and len(a) > 0


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("N", [2048, 3001, 20000])
def test_single_row_normalize_paths_are_thread_invariant(precision, N):
    """One row of 2048+ values: the activation is shared out between threads
    (and from 16384 values the statistics too); bits must not change."""
    rng = np.random.default_rng(N)
    x = rng.standard_normal((1, 300)).astype(np.float32)
    W = (rng.random((N, 300)) < 0.5).astype(np.uint8)
    for act in ["gelu", "relu", "linear", "softmax"]:
        ys = [bitnn.linear(x, W, activation=act, threads=t, precision=precision)
              for t in (1, 2, 3)]
        assert all(np.array_equal(y, ys[0]) for y in ys), act


def test_cli_precision_on_every_model_command():
    import subprocess
    import sys
    from pathlib import Path

    sample = str(Path(bitnn.__file__).parent / "models" / "samples" / "ankle-boot.png")
    run = lambda *a: subprocess.run([sys.executable, "-m", "bitnn.cli", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    r = run("classify", "--precision", "int8", "--json", sample)
    assert r.returncode == 0 and "Ankle boot" in r.stdout, r.stderr
    with bitnn.load("shakespeare", precision="int8") as lm:
        want = lm.generate("ROMEO:", 12, seed=5)
    r = run("-p", "ROMEO:", "-n", "12", "-s", "5", "--precision", "int8")
    assert r.returncode == 0 and r.stdout.rstrip("\n").endswith(want.rstrip("\n")), (r.stdout, want)
    r = run("classify", "--precision", "int4", sample)
    assert r.returncode != 0 and "precision" in r.stderr and "Traceback" not in r.stderr


def test_lm_state_refuses_a_cache_of_the_other_precision():
    """int8 mode keeps the KV cache in int8 (docs/packing.md): a state filled in one mode
    must not be continued in the other (a clear error, not wrong attention), and works
    again after reset()."""
    with bitnn.load("shakespeare") as lm:
        g = lm._graph
        st = g.new_state()
        st.forward([5, 17, 300], scores=False)
        g.precision = "int8"
        with pytest.raises(ValueError, match="reset"):
            st.forward([2])
        with pytest.raises(ValueError, match="reset"):
            st.logprobs([2, 3])
        st.reset()
        fresh = g.new_state()
        assert np.array_equal(st.forward([5, 17, 300]), fresh.forward([5, 17, 300]))


def test_amx_can_be_declined_and_gives_the_same_bits():
    """BITNN_AMX=0 keeps the AMX tile kernel (GEMMs of 16+ rows on CPUs that
    have it) out; the sums are exact either way, so the bits are the same."""
    import os
    import subprocess
    import sys
    import tempfile

    code = ("import numpy as np, bitnn, sys\n"
            "from bitnn import _core\n"
            "rng = np.random.default_rng(7)\n"
            "x = rng.standard_normal((70, 300)).astype(np.float32)\n"
            "W = (rng.random((40, 300)) < 0.5).astype(np.uint8)\n"
            "z = _core.binary_gemm(x, bitnn.pack_bits(W), 40, threads=2, precision='int8')\n"
            "np.save(sys.argv[1], z)\n"
            "print(bitnn.system_info()['int8_kernel'])\n")
    with tempfile.TemporaryDirectory() as d:
        outs = {}
        for amx in ("1", "0"):
            env = dict(os.environ, BITNN_AMX=amx)
            p = subprocess.run([sys.executable, "-c", code, f"{d}/{amx}.npy"], env=env,
                               capture_output=True, text=True, check=True)
            outs[amx] = (p.stdout.strip(), np.load(f"{d}/{amx}.npy"))
    assert "amx" not in outs["0"][0]
    assert np.array_equal(outs["0"][1], outs["1"][1])
