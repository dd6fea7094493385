"""Image classifier end to end: runtime vs PyTorch, export/load, predict input handling, CLI."""
import os
import subprocess
import sys

import numpy as np
import pytest

import bitnn
from bitnn.imageio import fit_image, read_image, read_png, write_png

torch = pytest.importorskip("torch")
from bitnn.nn import BinaryCNN  # noqa: E402
from conftest import random_cnn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


CASES = [
    dict(in_channels=3, num_classes=11, channels=(8, 16), kernel_size=3, fc_units=(33,),
         norm="chw", size=(13, 11)),
    dict(in_channels=1, num_classes=5, channels=(5, 7, 9), kernel_size=5, fc_units=(17, 6),
         norm="c", size=(17, 19)),
    dict(in_channels=2, num_classes=3, channels=(3,), kernel_size=1, fc_units=(),
         norm="chw", size=(4, 5)),
    dict(in_channels=3, num_classes=101, channels=(32, 64, 64, 128, 256), kernel_size=3,
         fc_units=(256, 256), norm="c", size=(32, 32)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("threads", [1, 2])
def test_runtime_matches_pytorch(tmp_path, case, threads):
    kw = dict(CASES[case])
    size = kw.pop("size")
    m = random_cnn(case, **kw)
    path = tmp_path / "m.bnb"
    bitnn.export(m, path, input_shape=(kw["in_channels"],) + size, name="t")
    x = torch.randn(5, kw["in_channels"], *size)
    with torch.no_grad():
        ref = m(x).numpy()
    with bitnn.load(path, threads=threads) as model:
        out = model.predict(x.numpy(), preprocessed=True)  # NCHW float
        out_nhwc = model.predict(x.numpy().transpose(0, 2, 3, 1), layout="NHWC",
                                     preprocessed=True)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, out_nhwc)
    # measured: at most 9.0e-7 over these cases and thread counts
    assert np.abs(out - ref).max() <= 4e-6
    assert (out.argmax(1) == ref.argmax(1)).all()
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)


def test_kernels_and_threads_bit_identical(tmp_path):
    m = random_cnn(7, in_channels=3, num_classes=9, channels=(6, 10), kernel_size=3,
                   fc_units=(12,), norm="chw")
    path = tmp_path / "m.bnb"
    bitnn.export(m, path, input_shape=(3, 15, 9))
    x = np.random.default_rng(0).standard_normal((3, 3, 15, 9)).astype(np.float32)
    outs = []
    for kernel in bitnn._core.kernels_supported():
        for threads in (1, 2, 3):
            with bitnn.load(path, threads=threads, kernel=kernel) as model:
                outs.append(model.predict(x, preprocessed=True))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_nchw_input_is_transposed_in_c(tmp_path, precision):
    """Preprocessed NCHW float batches go to the C graph as they are (it makes
    them NHWC image by image): the same bits as the NHWC batch, odd sizes and
    channel counts included, and the graph checks the NCHW shape."""
    m = random_cnn(11, in_channels=5, num_classes=3, channels=(4,), kernel_size=3,
                   fc_units=(), norm="chw")
    path = tmp_path / "c5.bnb"
    bitnn.export(m, path, input_shape=(5, 67, 13))
    x = np.random.default_rng(2).standard_normal((3, 5, 67, 13)).astype(np.float32)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    with bitnn.load(path, precision=precision) as model:
        a = model.predict(x, layout="NCHW", preprocessed=True)
        np.testing.assert_array_equal(a, model.predict(nhwc, layout="NHWC", preprocessed=True))
        np.testing.assert_array_equal(a, model._graph.forward(x, layout="NCHW"))
        with pytest.raises(ValueError, match="shape"):
            model._graph.forward(nhwc, layout="NCHW")
        with pytest.raises(ValueError, match="layout"):
            model._graph.forward(x, layout="CHWN")


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    m = random_cnn(3, in_channels=1, num_classes=4, channels=(4, 6), kernel_size=3,
                   fc_units=(8,), norm="c")
    path = tmp_path_factory.mktemp("m") / "small.bnb"
    bitnn.export(m, path, input_shape=(1, 10, 12), labels=["a", "b", "c", "d"],
                 preprocess={"scale": 1 / 255, "mean": [0.5], "std": [0.25]}, name="small")
    return m, path


def test_round_trip_metadata(small_model):
    _, path = small_model
    with bitnn.load(path) as model:
        assert model.labels == ["a", "b", "c", "d"]
        assert model.input_shape == (1, 10, 12)
        assert model.name == "small" and model.kind == "classifier"
        assert "conv2d 3x3 1->4" in model.summary()
        assert "small" in repr(model)
    assert model.closed
    with pytest.raises(ValueError, match="closed"):
        model.predict(np.zeros((1, 10, 12), np.uint8))


def test_uint8_preprocessing_matches_float(small_model):
    m, path = small_model
    img = np.random.default_rng(1).integers(0, 256, (3, 10, 12), dtype=np.uint8)
    pre = (img.astype(np.float32) / 255 - 0.5) / 0.25
    with bitnn.load(path, mmap=False) as model:
        a = model.predict(img[:, None])           # uint8 NCHW, preprocessing applied
        b = model.predict(pre[:, None], preprocessed=True)  # float used as is
        c = model.predict(img[0])                 # a single (H, W) image
        d = model.predict(img[:, :, :, None])     # NHWC
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_array_equal(c, a[:1])  # one image or a batch: the same bits
    np.testing.assert_array_equal(a, d)
    with torch.no_grad():
        ref = m(torch.from_numpy(pre[:, None])).numpy()
    # measured: 6.0e-8
    assert np.abs(a - ref).max() <= 3e-7


@pytest.mark.parametrize("bad, exc", [
    (np.zeros((2, 1, 10, 11), np.float32), ValueError),     # wrong size
    (np.zeros((2, 3, 10, 12), np.float32), ValueError),     # wrong channels
    (np.zeros((0, 1, 10, 12), np.float32), ValueError),     # empty batch
    (np.zeros((10,), np.float32), ValueError),               # wrong rank
    (np.full((1, 1, 10, 12), np.nan, np.float32), ValueError),
    (np.full((1, 1, 10, 12), np.inf, np.float32), ValueError),
    (np.zeros((1, 1, 10, 12), np.int32), TypeError),         # neither uint8 nor float
    (np.zeros((1, 1, 10, 12), np.complex64), TypeError),
    (np.array([["a"]]), TypeError),
])
def test_predict_rejects_bad_input(small_model, bad, exc):
    _, path = small_model
    with bitnn.load(path) as model:
        with pytest.raises(exc):
            model.predict(bad)


def test_ambiguous_layout_needs_argument(tmp_path):
    m = random_cnn(4, in_channels=3, num_classes=2, channels=(3,), kernel_size=3, fc_units=())
    path = tmp_path / "sq.bnb"
    bitnn.export(m, path, input_shape=(3, 3, 3))
    x = np.random.default_rng(2).standard_normal((2, 3, 3, 3)).astype(np.float32)
    with bitnn.load(path) as model:
        with pytest.raises(ValueError, match="ambiguous"):
            model.predict(x, preprocessed=True)
        a = model.predict(x, layout="NCHW", preprocessed=True)
        b = model.predict(x.transpose(0, 2, 3, 1), layout="NHWC", preprocessed=True)
        with pytest.raises(ValueError, match="layout"):
            model.predict(x, layout="CHWN")
    np.testing.assert_array_equal(a, b)


def test_export_rejects_fp32_and_missing_shape(tmp_path):
    fm = BinaryCNN(in_channels=1, num_classes=3, channels=(4,), fc_units=(), binary=False)
    with pytest.raises(ValueError, match="binary"):
        bitnn.export(fm, tmp_path / "f.bnb", input_shape=(1, 8, 8))
    bm = BinaryCNN(in_channels=1, num_classes=3, channels=(4,), fc_units=())
    with pytest.raises(ValueError, match="input_shape"):
        bitnn.export(bm, tmp_path / "f.bnb")
    with pytest.raises(ValueError, match="labels"):
        bitnn.export(bm, tmp_path / "f.bnb", input_shape=(1, 8, 8), labels=["a"])


def test_graph_errors_are_format_errors(small_model):
    """A file whose layer list does not match its tensors is rejected by the builder."""
    from bitnn.format import Bits, read_header, write_bnb

    _, path = small_model
    meta = read_header(path)
    tensors = {}
    with bitnn._core.BnbFile(str(path)) as f:
        for name in f.tensor_names:
            info = meta["tensors"][name]
            tensors[name] = Bits(np.array(f.tensor(name)), info["shape"])
    del meta["tensors"]
    bad = dict(meta, layers=[dict(meta["layers"][0], in_channels=2)] + meta["layers"][1:])
    out = str(path) + ".bad"
    write_bnb(out, bad, tensors)
    with pytest.raises(bitnn.FormatError, match="in_channels"):
        bitnn.load(out)
    bad = dict(meta, layers=meta["layers"][:-1])  # ends on a hidden layer: labels mismatch
    write_bnb(out, bad, tensors)
    with pytest.raises(bitnn.FormatError):
        bitnn.load(out)
    bad = dict(meta, model={"kind": "toaster"})
    write_bnb(out, bad, tensors)
    with pytest.raises(bitnn.FormatError, match="toaster"):
        bitnn.load(out)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="bundled"):
        bitnn.load(tmp_path / "nope.bnb")
    junk = tmp_path / "junk.bnb"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(bitnn.FormatError):
        bitnn.load(junk)
    with pytest.raises(ValueError):
        bitnn.load(junk, threads=0)


def test_png_round_trip_and_fit(tmp_path):
    rng = np.random.default_rng(5)
    for shape in [(7, 9), (5, 4, 3)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        write_png(tmp_path / "a.png", img)
        back = read_image(tmp_path / "a.png")
        np.testing.assert_array_equal(back.reshape(img.shape), img)
    rgb = rng.integers(0, 256, (56, 40, 3), dtype=np.uint8)
    g = fit_image(rgb, 1, 28, 28)
    assert g.shape == (28, 28, 1) and g.dtype == np.uint8
    g3 = fit_image(g, 3, 28, 28)  # grey to three channels: repeated
    assert g3.shape == (28, 28, 3)
    assert all(np.array_equal(g3[:, :, c], g[:, :, 0]) for c in range(3))
    with pytest.raises(ValueError):
        read_png(b"\x89PNG\r\n\x1a\nbroken")


SHIPPED = os.path.join(ROOT, "bitnn", "models", "fashion.bnb")


@pytest.mark.skipif(not os.path.exists(SHIPPED), reason="shipped model not built yet")
def test_shipped_model_classifies_samples():
    samples = os.path.join(ROOT, "bitnn", "models", "samples")
    with bitnn.load("fashion") as model:
        assert model.input_shape == (1, 28, 28) and model.num_classes == 10
        for name in ["ankle-boot", "trouser", "bag", "sneaker"]:
            img = read_image(os.path.join(samples, name + ".png"))
            top = model.classify(img, top_k=1, layout="NHWC")[0][0][0]
            assert top.lower() == name.replace("-", " ")


@pytest.mark.skipif(not os.path.exists(SHIPPED), reason="shipped model not built yet")
def test_cli_classify():
    sample = os.path.join(ROOT, "bitnn", "models", "samples", "trouser.png")
    r = subprocess.run([sys.executable, "-m", "bitnn.cli", "classify", "-k", "2", sample],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Trouser" in r.stdout.splitlines()[1]
    # exactly -k lines, the labels and probabilities of model.classify
    with bitnn.load("fashion") as model:
        C, H, W = model.input_shape
        want = model.classify(fit_image(read_image(sample), C, H, W), top_k=2, layout="NHWC")[0]
    assert r.stdout.splitlines()[1:] == [f"  {p:7.2%}  {label}" for label, p in want]
    r = subprocess.run([sys.executable, "-m", "bitnn.cli", "classify", "missing.png"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "missing.png" in r.stderr
