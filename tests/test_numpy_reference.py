"""tests/numpy_reference.py, written from the docs, agrees bit for bit with the runtime
(every kernel, one and two threads) on random classifiers and language decoders."""
import numpy as np
import pytest

import bitnn
import numpy_reference as ref
from bitnn import _core
from bitnn.format import Bits, write_bnb


def _bits(rng, *shape):
    return rng.integers(0, 2, size=shape, dtype=np.uint8)


def _kernels():
    return _core.kernels_supported()


def make_classifier(path, seed, C, H, W, convs, fcs, pool, final_act="softmax"):
    """convs: [(Cout, f, act, norm)]; a maxpool of `pool` after the first conv;
    global_avg_pool; fcs: [(out, act)]; the last layer gets final_act."""
    rng = np.random.default_rng(seed)
    layers, tensors, c = [], {}, C
    for i, (cout, f, act, norm) in enumerate(convs):
        tensors[f"c{i}.w"] = Bits.from_array(_bits(rng, cout, f, f, c))
        tensors[f"c{i}.b"] = Bits.from_array(_bits(rng, cout))
        layers.append({"type": "conv2d", "in_channels": c, "out_channels": cout, "kernel_size": f,
                       "activation": act, "norm": norm, "weight": f"c{i}.w", "bias": f"c{i}.b"})
        c = cout
        if i == 0 and pool:
            layers.append({"type": "maxpool2d", "size": pool})
    layers.append({"type": "global_avg_pool"})
    for i, (out, act) in enumerate(fcs):
        tensors[f"f{i}.w"] = Bits.from_array(_bits(rng, out, c))
        tensors[f"f{i}.b"] = Bits.from_array(_bits(rng, out))
        layers.append({"type": "linear", "in_features": c, "out_features": out,
                       "activation": final_act if i == len(fcs) - 1 else act,
                       "weight": f"f{i}.w", "bias": f"f{i}.b"})
        c = out
    meta = {"model": {"kind": "classifier", "name": "ref"},
            "eps": float(rng.choice([1e-5, 1e-3, 0.1])),
            "input": {"channels": C, "height": H, "width": W,
                      "preprocess": {"scale": 1 / 255, "mean": list(rng.random(C)),
                                     "std": list(0.2 + rng.random(C))}},
            "labels": [f"class {i}" for i in range(c)], "layers": layers}
    write_bnb(path, meta, tensors)


CLASSIFIERS = [
    # C, H, W, convs, fcs, pool
    (1, 9, 7, [(8, 3, "relu", "c"), (12, 1, "gelu", "chw")], [(10, "relu")], 2),
    (3, 12, 12, [(32, 3, "gelu", "chw"), (40, 5, "relu", "c")], [(33, "gelu"), (150, "relu")], 3),
    # a "chw" row of 15 * 15 * 24 = 5400 values spans two Normalize chunks
    (2, 15, 15, [(24, 3, "linear", "chw")], [(70, "relu"), (5, "linear")], 0),
    # 16 * 23 * 48 = 17664 values: 4 whole chunks summed together, then a partial one
    (3, 16, 23, [(48, 3, "gelu", "chw")], [(9, "relu"), (4, "linear")], 0),
    # 32 input channels (each pixel's tables made once) and fewer rows than the
    # kernel: every output row reads all 3 input rows of the ring
    (32, 3, 7, [(16, 5, "relu", "chw"), (32, 3, "relu", "c")], [(6, "linear")], 0),
    # a relu "chw" convolution then a max-pool: pooled before its normalization
    # (model.c, relu_pool), on a map the 2x2 windows do not cover (9 x 11) and on
    # one of several Normalize chunks (24 x 30 x 32, threaded statistics)
    (3, 9, 11, [(16, 3, "relu", "chw"), (20, 3, "relu", "chw")], [(7, "linear")], 2),
    (2, 24, 30, [(32, 3, "relu", "chw"), (8, 1, "gelu", "chw")], [(5, "linear")], 3),
]


@pytest.mark.parametrize("case", range(len(CLASSIFIERS)))
def test_classifier_bit_for_bit(tmp_path, case):
    C, H, W, convs, fcs, pool = CLASSIFIERS[case]
    path = tmp_path / "c.bnb"
    make_classifier(path, case, C, H, W, convs, fcs, pool,
                    final_act="linear" if case >= 2 else "softmax")
    header, tensors = ref.read_bnb(path.read_bytes())
    rng = np.random.default_rng(100 + case)
    raw = rng.integers(0, 256, size=(3, H, W, C), dtype=np.uint8)
    floats = rng.standard_normal((2, H, W, C)).astype(np.float32) * 3
    pre = header["input"]["preprocess"]
    want_raw = ref.classifier_forward(
        header, tensors, np.stack([ref.preprocess(im, pre) for im in raw]))
    want_float = ref.classifier_forward(header, tensors, floats)
    for kernel in _kernels():
        for threads in (1, 2):
            with bitnn.load(path, threads=threads, kernel=kernel) as m:
                np.testing.assert_array_equal(m.predict(raw, layout="NHWC"), want_raw,
                                              err_msg=f"{kernel}, {threads} threads")
                got = m.predict(floats, layout="NHWC", preprocessed=True)
                np.testing.assert_array_equal(got, want_float,
                                              err_msg=f"{kernel}, {threads} threads")


CLASSIFIERS_INT8 = [
    # C, H, W, convs, fcs, pool: input channels not a multiple of 4 (padded to 4 in the
    # direct int8 kernels), output channels in 1, 2, 3, 4 and 5 blocks of 16 with partial
    # blocks, rows that are not a multiple of any position block, f 1, 3, 5, images
    # narrower than the kernel
    (1, 9, 7, [(8, 3, "relu", "c"), (12, 1, "gelu", "chw")], [(10, "relu")], 2),
    (3, 13, 26, [(17, 3, "relu", "chw"), (40, 5, "linear", "c")], [(33, "gelu"), (6, "relu")], 2),
    (5, 6, 31, [(64, 3, "relu", "c"), (80, 3, "gelu", "chw")], [(7, "linear")], 0),
    (32, 5, 5, [(48, 3, "relu", "chw"), (16, 5, "relu", "c")], [(5, "relu")], 0),
    (2, 3, 2, [(20, 5, "relu", "c")], [(4, "linear")], 0),
    # relu convolutions normalized over the map feed the next convolution's int8 map
    # directly (case 3 too), through a 2x2 max-pool, and one after the other
    (4, 8, 10, [(24, 3, "relu", "chw"), (20, 3, "relu", "chw"), (8, 1, "linear", "c")],
     [(6, "relu")], 2),
    # larger maps: 64 channels in rows of 64 (5 Normalize chunks: the threaded statistics
    # of a fused layer), 32 channels in rows of 256 through a max-pool
    (3, 5, 64, [(64, 3, "relu", "chw"), (16, 3, "relu", "chw"), (8, 1, "linear", "c")],
     [(5, "linear")], 0),
    (2, 4, 256, [(32, 3, "relu", "chw"), (16, 3, "relu", "chw"), (4, 1, "linear", "c")],
     [(3, "linear")], 2),
]


@pytest.mark.parametrize("case", range(len(CLASSIFIERS_INT8)))
def test_classifier_int8_bit_for_bit(tmp_path, case):
    """precision="int8": every kernel (the direct int8 convolution where the CPU has
    VNNI, tables or im2col rows elsewhere) equals the numpy statement, 1 and 2 threads."""
    C, H, W, convs, fcs, pool = CLASSIFIERS_INT8[case]
    path = tmp_path / "c8.bnb"
    make_classifier(path, 50 + case, C, H, W, convs, fcs, pool, final_act="linear")
    header, tensors = ref.read_bnb(path.read_bytes())
    x = (np.random.default_rng(200 + case).standard_normal((2, H, W, C)) * 3).astype(np.float32)
    x[1, 0, 0, 0] = 0.0
    want = ref.classifier_forward(header, tensors, x, precision="int8")
    for kernel in _kernels():
        for threads in (1, 2):
            with bitnn.load(path, threads=threads, kernel=kernel, precision="int8") as m:
                for _ in range(2):  # the second call reuses the state's buffers
                    got = m.predict(x, layout="NHWC", preprocessed=True)
                    np.testing.assert_array_equal(got, want, err_msg=f"{kernel}, {threads} threads")


def test_bundled_classifier_bit_for_bit():
    """The shipped Fashion-MNIST model (a real export) on its sample images."""
    from bitnn.imageio import read_image

    path = bitnn.model.resolve("fashion")
    header, tensors = ref.read_bnb(path.read_bytes())
    samples = sorted((path.parent / "samples").glob("*.png"))[:2]
    imgs = np.stack([np.asarray(read_image(str(p))).reshape(28, 28, 1) for p in samples])
    pre = header["input"]["preprocess"]
    want = ref.classifier_forward(
        header, tensors, np.stack([ref.preprocess(im, pre) for im in imgs]))
    with bitnn.load(path) as m:
        np.testing.assert_array_equal(m.predict(imgs, layout="NHWC"), want)


def make_lm(path, seed, V, L, D, H, NB, FF, MLP):
    rng = np.random.default_rng(seed)
    t = {"embed.token.weight": _bits(rng, V, D), "embed.token.bias": _bits(rng, D),
         "embed.position.weight": _bits(rng, L, D), "embed.position.bias": _bits(rng, D)}

    def lin(prefix, out, inp):
        t[prefix + ".weight"], t[prefix + ".bias"] = _bits(rng, out, inp), _bits(rng, out)

    for i in range(NB):
        for nm in ("q", "k", "v", "out"):
            lin(f"blocks.{i}.attn.{nm}", D, D)
        lin(f"blocks.{i}.ff1", FF, D)
        lin(f"blocks.{i}.ff2", D, FF)
    width = D
    for j, u in enumerate(MLP):
        lin(f"head.{j}", u, width)
        width = u
    lin("output", V, width)
    meta = {"model": {"kind": "lm", "name": "ref"}, "eps": float(rng.choice([1e-5, 1e-2])),
            "lm": {"vocab_size": V, "max_len": L, "emb_dim": D, "num_heads": H, "num_blocks": NB,
                   "ff_dim": FF, "mlp_units": MLP}}
    write_bnb(path, meta, {k: Bits.from_array(v) for k, v in t.items()})


LMS = [
    # V, L, D, H, NB, FF, MLP: head_dim 8, 12 (a partial group of 8), 24 and 20 (16 at
    # a time plus a tail), no blocks
    (40, 12, 32, 4, 2, 64, [48]),
    (37, 10, 36, 3, 1, 40, []),
    (50, 9, 48, 2, 2, 96, [30, 20]),
    (21, 8, 20, 1, 0, 8, [16]),
    # head_dim 15 (int8 rows padded to 16 bytes) and 70 (two passes of 64 outputs), 4 heads
    (30, 20, 60, 4, 1, 32, []),
    (25, 18, 280, 4, 1, 16, [8]),
]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("case", range(len(LMS)))
def test_decoder_bit_for_bit(tmp_path, case, precision):
    V, L, D, H, NB, FF, MLP = LMS[case]
    path = tmp_path / "lm.bnb"
    make_lm(path, case, V, L, D, H, NB, FF, MLP)
    header, tensors = ref.read_bnb(path.read_bytes())
    rng = np.random.default_rng(200 + case)
    ids = [int(v) for v in rng.integers(0, V, size=L)]
    want = {n: ref.lm_scores(header, tensors, ids[:n], precision) for n in (1, L // 2, L - 1, L)}
    for kernel in _kernels():
        for threads in (1, 2):
            with bitnn.load(path, threads=threads, kernel=kernel, precision=precision) as m:
                g = m._graph
                for n, scores in want.items():  # the prompt as one batch of rows
                    got = g.new_state(L).forward(ids[:n], threads=threads, kernel=kernel)
                    np.testing.assert_array_equal(got, scores, err_msg=f"{kernel} {threads} n={n}")
                st = g.new_state(L)  # then one token at a time through the KV cache
                st.forward(ids[:L // 2], scores=False, threads=threads, kernel=kernel)
                for n in range(L // 2 + 1, L + 1):
                    got = st.forward(ids[n - 1:n], threads=threads, kernel=kernel)
                    if n in want:
                        np.testing.assert_array_equal(got, want[n], err_msg=f"{kernel} step {n}")
                np.testing.assert_array_equal(m.predict([ids[:L // 2], ids]),
                                              np.stack([ref.lm_probs(want[L // 2]),
                                                        ref.lm_probs(want[L])]))


def _gelu64(v):
    import math

    return np.array([0.5 * x * math.erfc(-x * 0.70710678118654752440) for x in v])


def test_gelu_is_within_4e7_of_double_precision():
    """The runtime's float32 gelu (csrc/kernels/erf.h; the same operations here) against
    0.5 v erfc(-v / sqrt 2) in double precision over [-15, 15] and at the clamp edge
    (|x| = 9): at most 3.9e-7 apart (measured on 2,000,001 points when it was written,
    tools/gen_erf.py; PyTorch's own CPU gelu is 1.2e-6 away), and within 2e-5 relative
    wherever |gelu| > 1e-30 (the far negative tail, erfc / 2 without cancellation)."""
    v = np.concatenate([np.linspace(-15, 15, 300001), [0.0, -0.0],
                        np.array([9.0, -9.0]) * np.sqrt(2.0)]).astype(np.float32)
    got = ref.gelu(v).astype(np.float64)
    want = _gelu64(v.astype(np.float64))
    err = np.abs(got - want)
    assert err.max() <= 3.9e-7, v[err.argmax()]
    big = np.abs(want) > 1e-30
    assert (err[big] / np.abs(want[big])).max() <= 2e-5


def test_gelu_of_special_values():
    """NaN stays NaN, +inf stays +inf, zeros and the tiny values keep their sign."""
    v = np.array([np.nan, np.inf, 0.0, -0.0, 1e-30, -1e-30, 100.0, -100.0], np.float32)
    g = ref.gelu(v)
    assert np.isnan(g[0]) and g[1] == np.inf
    assert g[2] == 0 and g[3] == 0 and np.signbit(g[3])
    assert 0 < g[4] <= 1e-30 and -1e-30 <= g[5] < 0
    assert g[6] == 100.0 and -1e-30 < g[7] <= 0


@pytest.mark.parametrize("H,W,C,N,f", [(3, 256, 5, 32, 3), (5, 64, 8, 64, 3), (2, 37, 3, 17, 5),
                                       (4, 13, 16, 48, 1)])
@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_convolution_and_its_max(H, W, C, N, f, precision):
    """A convolution's raw sums (int8: the whole map quantized with one scale, exact
    integer sums) equal the numpy statement for every kernel and thread count, and the
    largest z it reports (the direct int8 kernel takes it as it stores z; a fused relu
    layer's amax comes from it) is the largest z."""
    rng = np.random.default_rng(H * W + C * N + f)
    x = (rng.standard_normal((H, W, C)) * 2).astype(np.float32)
    w = rng.integers(0, 2, (N, f, f, C), dtype=np.uint8)
    b = rng.integers(0, 2, N, dtype=np.uint8)
    if precision == "int8":
        q, scale = ref.quantize_rows(x.reshape(1, -1))
        pad = f // 2
        xp = np.zeros((H + 2 * pad, W + 2 * pad, C), np.int64)
        xp[pad:pad + H, pad:pad + W] = q.reshape(H, W, C)
        S = sum(np.tensordot(xp[dy:dy + H, dx:dx + W], w[:, dy, dx].astype(np.int64), ([2], [1]))
                for dy in range(f) for dx in range(f))
        want = (S.astype(np.float32) * scale[0]).astype(np.float32) + b.astype(np.float32)
    else:
        pad = f // 2
        xp = np.zeros((H + 2 * pad, W + 2 * pad, C), np.float32)
        xp[pad:pad + H, pad:pad + W] = x
        cols = np.stack([xp[dy:dy + H, dx:dx + W] for dy in range(f) for dx in range(f)], 2)
        want = ref.binary_linear_raw(cols.reshape(H * W, -1), w.reshape(N, -1), b)
        want = want.reshape(H, W, N)
    for kernel in _kernels():
        for threads in (1, 2):
            z, zmax = _core._conv2d_raw(x, bitnn.pack_bits(w.reshape(N, -1)), bitnn.pack_bits(b),
                                        f, precision, threads, kernel)
            np.testing.assert_array_equal(z, want, err_msg=f"{kernel}, {threads} threads")
            assert zmax == z.max()
