"""What a new user meets (issue 11): inputs as people have them, an exporter that
never writes an unloadable file, a CLI without tracebacks, documented defaults.

Most tests use the bundled Fashion-MNIST model and its sample images; the
export tests need torch, the WordPiece test HF tokenizers.
"""
import inspect
import json
import os
import signal
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

import bitnn
from bitnn.imageio import read_image

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "bitnn" / "models" / "samples"
NAMES = {"ankle-boot": "Ankle boot", "bag": "Bag", "shirt": "Shirt", "sneaker": "Sneaker",
         "trouser": "Trouser"}


def cli(*args, stdin=None, env=None, timeout=120):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "bitnn.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=e)


def one_line_error(r):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("bitnn-run")


@pytest.fixture(scope="module")
def fashion():
    with bitnn.load("fashion") as m:
        yield m


@pytest.fixture(scope="module")
def grey():
    """(5, 28, 28) uint8 sample images, as Fashion-MNIST's idx files give them, and labels."""
    names = sorted(NAMES)
    return (np.stack([read_image(SAMPLES / f"{n}.png")[:, :, 0] for n in names]),
            [NAMES[n] for n in names])


def top1(model, x, **kw):
    return [row[0][0] for row in model.classify(x, top_k=1, **kw)]


# ---------------------------------------------------------------- 1. batches
def test_grey_batch_without_channel_axis(fashion, grey):
    x, labels = grey
    np.testing.assert_array_equal(fashion.predict(x), fashion.predict(x[:, None]))
    assert top1(fashion, x) == labels


def test_empty_grey_batch_says_empty(fashion):
    with pytest.raises(ValueError, match="empty batch"):
        fashion.predict(np.zeros((0, 28, 28), np.uint8))


# ------------------------------------------------------- 2. input contract
def test_float_pixels_get_the_stored_preprocessing(fashion, grey):
    x, labels = grey
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(fashion.predict(x.astype(np.float32)), fashion.predict(x),
                                   atol=1e-6)


def test_float_pixels_in_unit_range_warn(fashion, grey):
    x, _ = grey
    with pytest.warns(UserWarning, match="0..255"):
        fashion.predict(x.astype(np.float32) / 255)


def test_preprocessed_switch(fashion, grey):
    x, labels = grey
    p = fashion.preprocess
    pre = (x.astype(np.float32) * p["scale"] - p["mean"][0]) / p["std"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(fashion.predict(pre, preprocessed=True), fashion.predict(x),
                                   atol=1e-5)
    with pytest.warns(UserWarning, match="preprocessed=True"):
        fashion.predict(pre)                        # normalized tensors without the switch
    with pytest.warns(UserWarning, match="raw pixels"):
        fashion.predict(x.astype(np.float32), preprocessed=True)
    with pytest.raises(TypeError, match="uint8"):
        fashion.predict(x, preprocessed=True)


def test_cli_npy_is_pixels(tmp_path):
    img = read_image(SAMPLES / "ankle-boot.png")[:, :, 0]
    np.save(tmp_path / "px.npy", img.astype(np.float32))
    np.save(tmp_path / "unit.npy", img.astype(np.float32) / 255)
    r = cli("classify", "-k", "1", str(tmp_path / "px.npy"))
    assert r.returncode == 0, r.stderr
    assert "Ankle boot" in r.stdout and "warning" not in r.stderr
    r = cli("classify", "-k", "1", str(tmp_path / "unit.npy"))
    assert "warning" in r.stderr and "0..255" in r.stderr


# ---------------------------------------------------- 3. paths and pictures
def test_paths_and_pil_images(fashion):
    Image = pytest.importorskip("PIL.Image")
    path = SAMPLES / "bag.png"
    assert top1(fashion, str(path)) == ["Bag"]
    assert top1(fashion, path) == ["Bag"]
    assert top1(fashion, [str(SAMPLES / "shirt.png"), path]) == ["Shirt", "Bag"]
    with Image.open(path) as im:
        rgb = im.convert("RGB").resize((100, 80))
    assert top1(fashion, rgb) == ["Bag"]
    with pytest.raises(FileNotFoundError):
        fashion.predict(str(SAMPLES / "missing.png"))


def _png(path, pixels, depth, interlace):
    """A grey PNG of 8- or 16-bit pixels, Adam7-interlaced or not (filter 0)."""
    h, w = pixels.shape
    dt = ">u2" if depth == 16 else "u1"
    if interlace:
        passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2),
                  (0, 1, 2, 2), (1, 0, 2, 1)]  # (y0, x0, dy, dx)
        raw = b""
        for y0, x0, dy, dx in passes:
            sub = pixels[y0::dy, x0::dx]
            if sub.size:
                raw += b"".join(b"\0" + row.astype(dt).tobytes() for row in sub)
    else:
        raw = b"".join(b"\0" + row.astype(dt).tobytes() for row in pixels)

    def chunk(t, body):
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, interlace)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("depth, interlace", [(16, 0), (8, 1)])
def test_png_fallback_to_pillow(tmp_path, monkeypatch, depth, interlace):
    import bitnn.imageio as imageio

    pytest.importorskip("PIL.Image")
    img = read_image(SAMPLES / "sneaker.png")[:, :, 0]
    _png(tmp_path / "a.png", img.astype(np.uint16) * 257 if depth == 16 else img, depth, interlace)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png")[:, :, 0], img)
    monkeypatch.setattr(imageio, "_pillow", lambda: None)  # as if Pillow were not installed
    with pytest.raises(ValueError, match="install Pillow"):
        read_image(tmp_path / "a.png")


# --------------------------------------------------------------- 4. export
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _random(torch, model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model.eval()


def test_export_refuses_what_load_would_refuse(torch, tmp_path):
    from bitnn.nn import BinaryCNN, BinaryLinear

    mlp = torch.nn.Sequential(BinaryLinear(64, 16, "relu"), BinaryLinear(16, 3, "softmax"))
    with pytest.raises(ValueError, match=r"layers\[0\] \(linear\).*flatten"):
        bitnn.export(mlp, tmp_path / "a.bnb", input_shape=(1, 8, 8))
    cnn = BinaryCNN(in_channels=3, num_classes=3, channels=(4,), fc_units=())
    with pytest.raises(ValueError, match=r"layers\[0\]\.in_channels 3"):
        bitnn.export(cnn, tmp_path / "b.bnb", input_shape=(1, 12, 12))
    assert os.listdir(tmp_path) == []  # nothing written, no temporary file left


@pytest.mark.parametrize("conv", [False, True])
def test_export_flatten_matches_pytorch(torch, tmp_path, conv):
    from bitnn.nn import BinaryConv2d, BinaryLinear

    nn = torch.nn
    if conv:  # the flatten order (torch: C, H, W; the runtime: H, W, C) matters here
        m = nn.Sequential(BinaryConv2d(2, 5, 3, "relu"), nn.MaxPool2d(2), nn.Flatten(),
                          BinaryLinear(5 * 3 * 4, 7, "relu"), BinaryLinear(7, 3, "softmax"))
        shape = (2, 7, 9)
    else:
        m = nn.Sequential(nn.Flatten(), BinaryLinear(64, 16, "relu"), nn.Dropout(0.1),
                          BinaryLinear(16, 3, "softmax"))
        shape = (1, 8, 8)
    _random(torch, m)
    size = bitnn.export(m, tmp_path / "m.bnb", input_shape=shape)
    assert size == os.path.getsize(tmp_path / "m.bnb")
    x = torch.randn(6, *shape)
    with torch.no_grad():
        ref = m(x).numpy()
    with bitnn.load(tmp_path / "m.bnb") as model:
        out = model.predict(x.numpy(), preprocessed=True)
        assert "flatten" in model.summary()
    assert np.abs(out - ref).max() <= 1e-4


def test_loader_rejects_flatten_of_a_vector(tmp_path):
    from bitnn.format import Bits, write_bnb

    meta = {"model": {"kind": "classifier"}, "eps": 1e-5,
            "input": {"channels": 1, "height": 2, "width": 2},
            "layers": [{"type": "flatten"}, {"type": "flatten"},
                       {"type": "linear", "in_features": 4, "out_features": 2,
                        "weight": "w", "bias": "b"}]}
    tensors = {"w": Bits.from_array(np.ones((2, 4), np.uint8)),
               "b": Bits.from_array(np.ones(2, np.uint8))}
    write_bnb(tmp_path / "f.bnb", meta, tensors)
    with pytest.raises(bitnn.FormatError, match=r"layers\[1\] \(flatten\)"):
        bitnn.load(tmp_path / "f.bnb")


# ------------------------------------------------------------------ 5. CLI
@pytest.mark.parametrize("args, env", [
    (["-m", "bitnn", "-p", "x"], {}),
    (["classify", "-m", "bitnn", str(SAMPLES / "bag.png")], {}),
    (["-p", "x", "-n", "2"], {"BITNN_KERNEL": "foo"}),
    (["-p", "x", "-n", "2"], {"BITNN_NUM_THREADS": "abc"}),
    (["classify", str(SAMPLES / "bag.png")], {"BITNN_KERNEL": "foo"}),
    (["classify", str(SAMPLES / "bag.png")], {"BITNN_NUM_THREADS": "abc"}),
    (["-p", "x", "-c", "100000"], {}),
    (["--top-p", "0", "-p", "x"], {}),
])
def test_cli_user_errors_are_one_line(args, env):
    r = cli(*args, env=env)
    one_line_error(r)
    if "-c" in args:
        assert "-c/--ctx-size" in r.stderr


def test_cli_closed_pipe_is_quiet():
    p = subprocess.Popen([sys.executable, "-m", "bitnn.cli", "-p", "ROMEO:", "-n", "100000",
                          "-c", "32", "-s", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.read(5)
    p.stdout.close()  # like `| head -c 5`
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert p.returncode == 0


# --------------------------------------------------- 6. one set of defaults
def test_cli_and_python_write_the_same_text():
    with bitnn.load("shakespeare") as lm:
        text = lm.generate("ROMEO:", 20, seed=7)
    r = cli("-p", "ROMEO:", "-n", "20", "-s", "7")
    assert r.returncode == 0, r.stderr
    assert r.stdout == text + "\n"
    r = cli("-f", "-", "-n", "20", "-s", "7", stdin="ROMEO:")
    assert r.stdout == text + "\n"


def test_cli_help_lists_commands_and_defaults():
    from bitnn.cli import COMMANDS, build_parser

    r = cli("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert name in r.stdout
    assert "classify image files" in r.stdout
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and set(a.choices) == set(COMMANDS))
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.dest != "help" and not action.required:
                assert "default" in (action.help or ""), (name, action.option_strings)
    assert cli("classify", "--help").stdout.count("default") >= 5


def test_cli_info_text_and_json():
    r = cli("info")
    assert r.returncode == 0 and "kernel in use" in r.stdout and "{" not in r.stdout
    info = json.loads(cli("info", "--json").stdout)
    assert info["version"] == bitnn.__version__ and "fashion" in info["bundled_models"]


# -------------------------------------------------------------- 7. WordPiece
def test_generated_text_continues_the_prompt(torch, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from bitnn.nn import BinaryLM

    corpus = ["def foo(x): return x + 1\nclass Bar: pass\ndefinitely defined deferred\n"] * 40
    wp = tokenizers.BertWordPieceTokenizer()
    wp.train_from_iterator(corpus, vocab_size=200, min_frequency=1, show_progress=False)
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1, show_progress=False)
    for i, tok in enumerate([wp, bpe]):
        m = _random(torch, BinaryLM(tok.get_vocab_size(), max_len=24, emb_dim=16, num_heads=2,
                                    num_blocks=1, mlp_units=()))
        bitnn.export(m, tmp_path / f"{i}.bnb", tokenizer=tok._tokenizer)
        with bitnn.load(tmp_path / f"{i}.bnb") as lm:
            prompt_ids = lm.tokenize("def")
            for seed in range(6):
                text = lm.generate("def", 6, seed=seed)
                new = lm.generate(prompt_ids, 6, seed=seed)
                assert lm.detokenize(prompt_ids) + text == lm.detokenize(prompt_ids + new)
                assert "".join(lm.generate("def", 6, seed=seed, stream=True)) == text


# ------------------------------------------------------------ 8. training docs
def test_hf_quick_tour_bpe_error_says_what_to_use():
    tk = pytest.importorskip("tokenizers")
    from bitnn.tokenizer import spec_from_hf

    tok = tk.Tokenizer(tk.models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = tk.pre_tokenizers.Whitespace()
    tok.train_from_iterator(["hello world, a test"] * 20,
                            tk.trainers.BpeTrainer(special_tokens=["[UNK]"], vocab_size=100,
                                                   show_progress=False))
    with pytest.raises(ValueError, match="ByteLevelBPETokenizer.*BertWordPieceTokenizer"):
        spec_from_hf(tok)


def test_readme_documents_both_model_families():
    readme = (ROOT / "README.md").read_text()
    for needle in ("BinaryLM", "tokenizer=", "docs/tokenizer.md", "ByteLevelBPETokenizer",
                   "BertWordPieceTokenizer", "preprocessed=True", "dark background",
                   "calibration=", "nn.Flatten"):
        assert needle in readme, needle


# -------------------------------------------------------- 9. probabilities
def test_probability_bound_is_stated(fashion, grey):
    x, _ = grey
    bound = fashion.max_probability
    assert 0.75 < bound < 0.76
    assert fashion.predict(x).max() <= bound + 1e-6
    r = cli("classify", str(SAMPLES / "bag.png"))
    assert "cannot exceed 75.7%" in r.stderr


def test_calibration_stored_and_opt_in(torch, tmp_path):
    from bitnn.nn import BinaryCNN

    m = _random(torch, BinaryCNN(in_channels=1, num_classes=4, channels=(4,), fc_units=()))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 1, 8, 8), dtype=np.uint8)
    bitnn.export(m, tmp_path / "u.bnb", input_shape=(1, 8, 8))
    with bitnn.load(tmp_path / "u.bnb") as plain:
        y = plain.predict(x).argmax(1)  # labels the model gets right: the fit sharpens
        y[:8] = (y[:8] + 1) % 4         # ... but not always
        with pytest.raises(ValueError, match="no calibration"):
            plain.predict(x, calibrated=True)
        p0 = plain.predict(x)
    bitnn.export(m, tmp_path / "c.bnb", input_shape=(1, 8, 8), calibration=(x, y))
    with bitnn.load(tmp_path / "c.bnb") as cal:
        t = cal.meta["calibration"]["temperature"]
        assert cal.temperature == t and 0 < t < 1
        np.testing.assert_array_equal(cal.predict(x), p0)  # off unless asked for
        p1 = cal.predict(x, calibrated=True)
    np.testing.assert_array_equal(p1.argmax(1), p0.argmax(1))
    nll = lambda p: -np.log(p[np.arange(len(y)), y]).mean()  # noqa: E731
    assert nll(p1) < nll(p0)
    bitnn.export(m, tmp_path / "t.bnb", input_shape=(1, 8, 8), calibration=2.0)
    with bitnn.load(tmp_path / "t.bnb") as fixed:
        assert fixed.temperature == 2.0
        assert fixed.predict(x, calibrated=True).max() < p0.max()


@pytest.mark.parametrize("cal", [{"temperature": -1}, {"temperature": "2"}, {}, 3.0])
def test_loader_validates_calibration(tmp_path, cal):
    from bitnn.format import Bits, write_bnb

    meta = {"model": {"kind": "classifier"}, "eps": 1e-5,
            "input": {"channels": 1, "height": 1, "width": 1},
            "layers": [{"type": "flatten"},
                       {"type": "linear", "in_features": 1, "out_features": 2,
                        "activation": "softmax", "weight": "w", "bias": "b"}],
            "calibration": cal}
    tensors = {"w": Bits.from_array(np.ones((2, 1), np.uint8)),
               "b": Bits.from_array(np.array([1, 0], np.uint8))}
    write_bnb(tmp_path / "c.bnb", meta, tensors)
    with pytest.raises(bitnn.FormatError, match="calibration"):
        bitnn.load(tmp_path / "c.bnb")


# ------------------------------------------------------------ 10. the rest
def test_bundled_name_with_extension_and_directories(tmp_path):
    with bitnn.load("fashion.bnb") as m:
        assert m.kind == "classifier"
    with pytest.raises(IsADirectoryError, match="is a directory"):
        bitnn.load(tmp_path)


def test_export_into_missing_directory_and_return_type(torch, tmp_path):
    from bitnn.nn import BinaryCNN

    m = _random(torch, BinaryCNN(in_channels=1, num_classes=2, channels=(2,), fc_units=()))
    with pytest.raises(FileNotFoundError) as e:
        bitnn.export(m, tmp_path / "nope" / "m.bnb", input_shape=(1, 4, 4))
    assert "nope" in str(e.value) and ".tmp" not in str(e.value)
    from bitnn.exporter import export

    assert inspect.signature(export).return_annotation in (int, "int")


def test_language_model_type_messages():
    with bitnn.load("shakespeare") as lm:
        with pytest.raises(TypeError, match="tokenize"):
            lm.predict("hello")
        with pytest.raises(TypeError, match="str"):
            lm.generate(b"ROMEO:", 3)


def test_linear_width_mismatch_message():
    x = np.zeros((2, 70), np.float32)
    w = bitnn.pack_bits(np.ones((5, 100), np.uint8))
    with pytest.raises(ValueError, match="wider than x"):
        bitnn.linear(x, w)


def test_nn_without_torch_says_how_to_install():
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import bitnn.nn\nexcept ImportError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert 'pip install "bitnn[torch]"' in r.stdout, r.stdout + r.stderr
    assert "torch==2.13.0" in (ROOT / "pyproject.toml").read_text()


def test_source_tree_without_core_says_so(tmp_path):
    (tmp_path / "bitnn").mkdir()
    for f in (ROOT / "bitnn").glob("*.py"):
        (tmp_path / "bitnn" / f.name).write_bytes(f.read_bytes())
    # An editable install (CI's `pip install -e .`) adds an import hook that would
    # find the built package instead of the copy here: leave it out.
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
            "import bitnn\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode != 0
    assert "build_ext --inplace" in r.stderr and "circular" not in r.stderr


class _CountingGraph:
    """Stands in for the compiled graph: records the batch sizes it is given."""

    def __init__(self, graph, on_call=None):
        self.graph, self.sizes, self.on_call = graph, [], on_call
        self.classes = graph.classes

    def forward(self, x, **kw):
        self.sizes.append(len(x))
        if self.on_call:
            self.on_call()
        return self.graph.forward(x, **kw)


def test_predict_works_in_chunks_and_stops_on_ctrl_c(grey):
    from bitnn import model as model_mod

    x = np.repeat(grey[0], 700, axis=0)  # 3,500 images: more than one chunk
    chunk = model_mod._CHUNK_FLOATS // (28 * 28)
    assert len(x) > 2 * chunk
    with bitnn.load("fashion") as m:
        whole = m.predict(x[:50])
        counting = _CountingGraph(m._graph)
        m._graph = counting
        out = m.predict(x)
        assert counting.sizes[0] == chunk and sum(counting.sizes) == len(x)
        np.testing.assert_array_equal(out[:50], whole)
        m._graph = _CountingGraph(counting.graph,
                                  on_call=lambda: os.kill(os.getpid(), signal.SIGINT))
        # Python's own Ctrl-C handler, whatever this process inherited (a shell
        # without job control starts background jobs with SIGINT ignored)
        old = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with pytest.raises(KeyboardInterrupt):
                m.predict(x)
        finally:
            signal.signal(signal.SIGINT, old)
        assert m._graph.sizes == [chunk]
