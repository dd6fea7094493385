"""Every rule the model builders enforce (csrc/graph/model.c, csrc/graph/lm.c and the
Python side of bitnn.load) has a test that breaks exactly that rule in an
otherwise valid file and names it; plus the eps stored in a file is the eps
the runtime uses, classify's top_k check and the grey conversion of images.

The files are written by hand with bitnn.format (no torch needed): a small
valid classifier and a small valid language model, then one edit each.
"""
import copy

import numpy as np
import pytest

import bitnn
from bitnn import FormatError, _core
from bitnn.format import Bits, write_bnb

RNG = np.random.default_rng(0)


def bits(*shape):
    return Bits.from_array(RNG.integers(0, 2, shape, dtype=np.uint8))


# A valid classifier: 1x8x8 -> conv 3x3 (2) -> maxpool 2 -> conv 1x1 (3, chw)
# -> global average pool -> linear 3 -> 4 (softmax).
CNN_META = {
    "model": {"kind": "classifier", "name": "rules"},
    "eps": 1e-5,
    "input": {"channels": 1, "height": 8, "width": 8},
    "labels": ["a", "b", "c", "d"],
    "layers": [
        {"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3,
         "activation": "relu", "norm": "c", "weight": "c1.w", "bias": "c1.b"},
        {"type": "maxpool2d", "size": 2},
        {"type": "conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 1,
         "activation": "gelu", "norm": "chw", "weight": "c2.w", "bias": "c2.b"},
        {"type": "global_avg_pool"},
        {"type": "linear", "in_features": 3, "out_features": 4, "activation": "softmax",
         "weight": "fc.w", "bias": "fc.b"},
    ],
}
CNN_TENSORS = {"c1.w": bits(2, 3, 3, 1), "c1.b": bits(2), "c2.w": bits(3, 1, 1, 2),
               "c2.b": bits(3), "fc.w": bits(4, 3), "fc.b": bits(4)}

# A valid decoder: vocab 6, max_len 5, emb_dim 4, 2 heads, 1 block, ff 8, head (3,).
V, L, D, FF = 6, 5, 4, 8
LM_META = {"model": {"kind": "lm", "name": "rules"}, "eps": 1e-5,
           "lm": {"vocab_size": V, "max_len": L, "emb_dim": D, "num_heads": 2, "num_blocks": 1,
                  "ff_dim": FF, "mlp_units": [3]}}


def lm_tensors():
    t = {"embed.token.weight": bits(V, D), "embed.token.bias": bits(D),
         "embed.position.weight": bits(L, D), "embed.position.bias": bits(D)}
    for name, (o, i) in {"q": (D, D), "k": (D, D), "v": (D, D), "out": (D, D)}.items():
        t[f"blocks.0.attn.{name}.weight"], t[f"blocks.0.attn.{name}.bias"] = bits(o, i), bits(o)
    t["blocks.0.ff1.weight"], t["blocks.0.ff1.bias"] = bits(FF, D), bits(FF)
    t["blocks.0.ff2.weight"], t["blocks.0.ff2.bias"] = bits(D, FF), bits(D)
    t["head.0.weight"], t["head.0.bias"] = bits(3, D), bits(3)
    t["output.weight"], t["output.bias"] = bits(V, 3), bits(V)
    return t


LM_TENSORS = lm_tensors()


def write(tmp_path, meta, tensors, name="m.bnb"):
    path = tmp_path / name
    write_bnb(path, meta, tensors)
    return path


def test_the_base_files_are_valid(tmp_path):
    with bitnn.load(write(tmp_path, CNN_META, CNN_TENSORS)) as m:
        p = m.predict(np.zeros((1, 8, 8), dtype=np.uint8))
        assert p.shape == (1, 4) and abs(float(p.sum()) - 1) < 1e-6
    with bitnn.load(write(tmp_path, LM_META, LM_TENSORS, "lm.bnb")) as m:
        assert m.predict([[1, 2]]).shape == (1, V)


def edit_layer(i, **kw):
    def f(meta, tensors):
        meta["layers"][i].update(kw)
        for k, v in kw.items():
            if v is None:
                del meta["layers"][i][k]
    return f


def set_meta(path, value):
    """meta[path[0]][path[1]]... = value (None deletes)."""
    def f(meta, tensors):
        d = meta
        for k in path[:-1]:
            d = d[k]
        if value is None:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return f


def layers(new):
    def f(meta, tensors):
        meta["layers"] = new(meta["layers"])
    return f


def tensor(name, value):
    def f(meta, tensors):
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
    return f


GAP = {"type": "global_avg_pool"}
CNN_RULES = {  # rule: (edit, message the loader must give)
    "kind must be classifier": (set_meta(["model", "kind"], "lm"),
                                "model.kind is \"lm\", expected \"classifier\""),
    "eps present": (set_meta(["eps"], None), "eps is missing"),
    "eps positive": (set_meta(["eps"], 0.0), "eps must be a number in \\(0, 1\\)"),
    "eps below 1": (set_meta(["eps"], 1.0), "eps must be a number in \\(0, 1\\)"),
    "eps a number": (set_meta(["eps"], "1e-5"), "eps must be a number in \\(0, 1\\).*not a string"),
    "input sizes": (set_meta(["input", "height"], 0), "input.height must be an integer from 1"),
    "input size cap": (set_meta(["input"], {"channels": 65536, "height": 65536, "width": 2}),
                       "too large"),
    "layers non-empty": (set_meta(["layers"], []), "layers must be an array of 1 to 4096"),
    "layers a list": (set_meta(["layers"], {"type": "linear"}),
                      "layers must be an array of 1 to 4096 layer objects, not an object"),
    "layer type a string": (edit_layer(1, type=3), "layers\\[1\\].type must be a string"),
    "unknown layer type": (edit_layer(1, type="dropout"), "unknown layer type \"dropout\""),
    "conv kernel odd": (edit_layer(0, kernel_size=2), "layers\\[0\\].kernel_size must be odd"),
    "conv sizes present": (edit_layer(0, out_channels=None),
                           "layers\\[0\\].out_channels is missing"),
    "conv in_channels match": (edit_layer(2, in_channels=5), "in_channels 5 does not match"),
    "conv activation known": (edit_layer(0, activation="tanh"), "layers\\[0\\].activation must be"),
    "conv norm known": (edit_layer(0, norm="hw"), "norm must be"),
    "conv activation size cap": (lambda m, t: (m["input"].update(height=4096, width=4096),
                                               m["layers"][0].update(out_channels=65536)),
                                 "layers\\[0\\] \\(conv2d\\): its output .* is too large"),
    "conv on an image only": (layers(lambda ls: [GAP, ls[0]] + ls[4:]),
                              "layers\\[1\\] \\(conv2d\\): the input is no longer an image"),
    "maxpool size positive": (edit_layer(1, size=0),
                              "layers\\[1\\].size must be an integer from 1"),
    "maxpool window fits": (edit_layer(1, size=9), "larger than the 8 x 8 input"),
    "maxpool on an image only": (layers(lambda ls: [GAP, {"type": "maxpool2d", "size": 1}]
                                        + ls[4:]),
                                 "no longer an image"),
    "pool on an image only": (layers(lambda ls: [GAP, GAP] + ls[4:]), "no longer an image"),
    "linear needs a vector": (layers(lambda ls: [ls[4]]), "needs a vector input"),
    "linear sizes present": (edit_layer(4, in_features=None),
                             "layers\\[4\\].in_features is missing"),
    "linear in_features match": (edit_layer(4, in_features=7), "in_features 7 does not match"),
    "linear activation known": (edit_layer(4, activation="swish"),
                                "layers\\[4\\].activation must be"),
    "only linear after linear": (layers(lambda ls: ls + [GAP]), "only linear layers may follow"),
    "last layer linear": (layers(lambda ls: ls[:4]), "last layer must be a linear"),
    "labels one per class": (set_meta(["labels"], ["a", "b"]),
                             "labels must be an array of 4 strings"),
    "labels not more than classes": (set_meta(["labels"], list("abcde")),
                                     "labels must be an array of 4 strings"),
    "weight names a tensor": (edit_layer(0, weight=5),
                              "layers\\[0\\].weight must be a string naming a tensor"),
    "tensor present": (tensor("c1.w", None), "tensor 'c1.w' is not in the file"),
    "tensor is bits": (tensor("c1.b", np.zeros(2, dtype=np.float32)), "must be bits"),
    "tensor shape": (tensor("fc.w", bits(4, 4)), "has shape \\[4, 4\\], expected \\[4, 3\\]"),
    "preprocess per channel": (set_meta(["input", "preprocess"],
                                        {"scale": 0.5, "mean": [0.0, 1.0], "std": [1.0]}),
                               "input.preprocess.mean must be an array of 1 numbers"),
    "preprocess std positive": (set_meta(["input", "preprocess"],
                                         {"scale": 0.5, "mean": [0.0], "std": [0.0]}),
                                "input.preprocess.std\\[0\\] = 0.0 must be > 0"),
}


def lm_set(key, value):
    return set_meta(["lm", key], value)


LM_RULES = {
    "kind must be lm": (set_meta(["model", "kind"], "classifier"),
                        "model.kind is \"classifier\", expected \"lm\""),
    "eps in (0, 1)": (set_meta(["eps"], 2.0), "eps must be a number in \\(0, 1\\)"),
    "eps present": (set_meta(["eps"], None), "eps is missing"),
    "vocab at least 2": (lm_set("vocab_size", 1), "lm.vocab_size must be an integer from 2"),
    "sizes present": (lm_set("ff_dim", None), "lm.ff_dim is missing"),
    "heads positive": (lm_set("num_heads", 0), "lm.num_heads must be an integer from 1"),
    "heads divide emb_dim": (lm_set("num_heads", 3),
                             "emb_dim 4 is not divisible by lm.num_heads 3"),
    "mlp_units a list": (lm_set("mlp_units", 3), "lm.mlp_units must be an array of at most 64"),
    "mlp_units at most 64": (lm_set("mlp_units", [3] * 65),
                             "lm.mlp_units must be an array of at most 64"),
    "mlp_units positive": (lm_set("mlp_units", [0]),
                           "lm.mlp_units\\[0\\] must be an integer from 1"),
    "token table present": (tensor("embed.token.weight", None), "'embed.token.weight' is not in"),
    "token table shape": (tensor("embed.token.weight", bits(D, V)), "has shape \\[4, 6\\]"),
    "position table shape": (tensor("embed.position.weight", bits(L + 1, D)),
                             "'embed.position.weight' has shape"),
    "block tensor shape": (tensor("blocks.0.ff1.weight", bits(FF, D + 1)), "'blocks.0.ff1.weight'"),
    "head tensor shape": (tensor("head.0.weight", bits(4, D)),
                          "'head.0.weight' has shape \\[4, 4\\], expected \\[3, 4\\]"),
    "output tensor present": (tensor("output.bias", None), "'output.bias' is not in the file"),
}


# kind: (base meta, base tensors, the C builder, whether bitnn.load has rules
# of its own to try when the builder accepts the file)
BASES = {"classifier": (CNN_META, CNN_TENSORS, _core.Classifier, True),
         "lm": (LM_META, LM_TENSORS, _core.LMGraph, False)}
RULES = {"classifier": CNN_RULES, "lm": LM_RULES}


def edited(tmp_path, kind, edit):
    """The valid base file of ``kind`` after ``edit(meta, tensors)``."""
    meta, tensors = copy.deepcopy(BASES[kind][0]), dict(BASES[kind][1])
    edit(meta, tensors)
    return write(tmp_path, meta, tensors)


@pytest.mark.parametrize("kind, rule", [(kind, rule) for kind in RULES for rule in RULES[kind]])
def test_builder_rule(tmp_path, kind, rule):
    edit, message = RULES[kind][rule]
    _, _, builder, python_side = BASES[kind]
    path = edited(tmp_path, kind, edit)
    with pytest.raises(FormatError, match=message):
        with _core.BnbFile(str(path)) as f:  # the builder itself, whatever model.kind says
            builder(f)
        if python_side:
            bitnn.load(path)


LOAD_RULES = {  # rules of bitnn.load beyond the builders: (base kind, edit, message)
    "tokenizer type known": ("lm", set_meta(["tokenizer"], {"type": "nonsense"}),
                             "tokenizer: unknown type \"nonsense\""),
    "model kind supported": ("classifier", set_meta(["model", "kind"], "toaster"),
                             "'toaster' is not supported"),
}


@pytest.mark.parametrize("rule", list(LOAD_RULES))
def test_load_rule(tmp_path, rule):
    kind, edit, message = LOAD_RULES[rule]
    with pytest.raises(FormatError, match=message):
        bitnn.load(edited(tmp_path, kind, edit))


# ------------------------------------------------------ eps from the file

@pytest.mark.parametrize("eps", [0.25, 0.9])
def test_classifier_uses_the_files_eps(tmp_path, eps):
    torch = pytest.importorskip("torch")
    from conftest import random_cnn

    m = random_cnn(2, in_channels=1, num_classes=6, channels=(4, 5), kernel_size=3,
                   fc_units=(7,), norm="chw", eps=eps)
    path = tmp_path / "e.bnb"
    bitnn.export(m, path, input_shape=(1, 9, 9))
    x = torch.randn(3, 1, 9, 9)
    with torch.no_grad():
        ref = m(x).numpy()
    with bitnn.load(path) as model:
        assert model.meta["eps"] == eps
        got = model.predict(x.numpy(), preprocessed=True)
    # measured: at most 6.0e-8 (eps 0.9); with eps 1e-5 instead of the file's, 1.9e-2
    assert np.abs(got - ref).max() < 3e-7


@pytest.mark.parametrize("eps", [0.25, 0.9])
def test_language_model_uses_the_files_eps(tmp_path, eps):
    torch = pytest.importorskip("torch")
    from conftest import make_lm, softmax64

    m = make_lm(29, 10, 16, 2, 2, (12,), seed=4, eps=eps)
    path = tmp_path / "e.bnb"
    bitnn.export(m, path)
    ids = torch.randint(0, 29, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(ids)[0, -1].numpy()
    with bitnn.load(path) as model:
        got = model.predict([ids[0].tolist()])[0]
    # measured: at most 4.2e-8 (eps 0.25); with eps 1e-5 instead of the file's, 2.4e-2
    assert np.abs(got - softmax64(ref)).max() < 3e-7


# ------------------------------------------------- classify, image loading

def test_classify_top_k_must_be_positive(tmp_path):
    with bitnn.load(write(tmp_path, CNN_META, CNN_TENSORS)) as m:
        img = np.zeros((8, 8), dtype=np.uint8)
        for bad in (0, -1):
            with pytest.raises(ValueError, match="top_k"):
                m.classify(img, top_k=bad)
        top = m.classify(img, top_k=2)[0]
        assert len(top) == 2 and top[0][1] >= top[1][1]
        assert len(m.classify(img, top_k=99)[0]) == 4


def test_grey_conversion_uses_itu_r_601_weights():
    from bitnn.imageio import fit_image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    want = np.rint(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
    got = fit_image(rgb, 1, 5, 7)
    assert got.shape == (5, 7, 1)
    # float32 arithmetic may round a .5 the other way: at most 1 apart, and
    # the pure primaries give the weights themselves
    assert np.abs(got[..., 0].astype(int) - want).max() <= 1
    for c, weight in enumerate((0.299, 0.587, 0.114)):
        px = np.zeros((1, 1, 3), dtype=np.uint8)
        px[..., c] = 200
        assert fit_image(px, 1, 1, 1)[0, 0, 0] == round(200 * weight)
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(fit_image(rgba, 1, 5, 7), got)  # alpha is dropped
