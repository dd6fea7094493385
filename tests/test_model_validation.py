"""The C validator of the model description (docs/format.md 3.2, 3.3): each broken rule
is a FormatError whose message starts with the key path; Python reads nothing before."""
import copy
import json

import pytest

import bitnn
import header_fuzz as hf
from bitnn import _core
from bitnn.errors import FormatError
from bitnn.format import pack_file
from bitnn.model import _from_file


@pytest.fixture(scope="module")
def base():
    return hf.bases()


def load(base, name, edit):
    header, data, _ = base[name]
    h = copy.deepcopy(header)
    edit(h)
    return _from_file(_core.BnbFile.from_bytes(pack_file(json.dumps(h).encode(), data)))


def setp(path, value):
    """An edit that sets header[path...] = value (a path of keys and indices)."""
    def edit(h):
        for k in path[:-1]:
            h = h[k]
        h[path[-1]] = value
    return edit


def delp(*path):
    def edit(h):
        for k in path[:-1]:
            h = h[k]
        del h[path[-1]]
    return edit


CLASSIFIER = [
    (delp("eps"), r"^eps is missing"),
    (setp(["eps"], 1e-46), r"^eps must be a number in \(0, 1\)"),
    (setp(["eps"], 1), r"^eps must be"),
    (setp(["eps"], "1e-5"), r"^eps must be .*a string"),
    (setp(["model"], 3), r"^model must be an object, not a number"),
    (setp(["model", "kind"], 5), r"^model\.kind must be a string"),
    (setp(["model", "name"], []), r"^model\.name must be a string"),
    (setp(["model", "version"], 2), r"^model has an unknown key \"version\""),
    (setp(["model", "kind"], "toaster"), r"model\.kind 'toaster' is not supported"),
    (delp("input"), r"^input is missing"),
    (setp(["input", "channels"], 2.5),
     r"^input\.channels must be an integer from 1 to 65536, not 2\.5"),
    (setp(["input", "colour"], True), r"^input has an unknown key \"colour\""),
    (setp(["input", "preprocess", "std", 0], 0), r"^input\.preprocess\.std\[0\] = 0 must be > 0"),
    (setp(["input", "preprocess", "std", 0], 1e-50),
     r"^input\.preprocess\.std\[0\] = 1e-50 must be > 0"),
    (setp(["input", "preprocess", "mean"], []),
     r"^input\.preprocess\.mean must be an array of 1 numbers"),
    (setp(["input", "preprocess", "mean"], ["a"]),
     r"^input\.preprocess\.mean\[0\] must be a number, not a string"),
    (setp(["input", "preprocess", "scale"], 1e39),
     r"^input\.preprocess\.scale = 1e\+39 is out of the float32 range"),
    (setp(["input", "preprocess", "scale"], 3e38),
     r"^input\.preprocess: channel 0 maps pixel values outside"),
    (delp("input", "preprocess", "scale"), r"^input\.preprocess\.scale is missing"),
    (setp(["labels"], ["a"]),
     r"^labels must be an array of 10 strings \(one per class\), not an array of another length"),
    (setp(["labels", 3], 7), r"^labels\[3\] must be a string, not a number"),
    (setp(["layers"], []), r"^layers must be an array of 1 to 4096 layer objects"),
    (setp(["layers", 5], "x"), r"^layers\[5\] must be an object, not a string"),
    (setp(["layers", 0, "type"], None), r"^layers\[0\]\.type must be a string, not null"),
    (setp(["layers", 0, "type"], "deconv"), r"^layers\[0\]\.type: unknown layer type \"deconv\""),
    (setp(["layers", 0, "kernel_size"], 4), r"^layers\[0\]\.kernel_size must be odd, not 4"),
    (setp(["layers", 0, "kernel_size"], 33),
     r"^layers\[0\]\.kernel_size must be an integer from 1 to 31"),
    (setp(["layers", 0, "activaton"], "relu"), r"^layers\[0\] has an unknown key \"activaton\""),
    (setp(["layers", 0, "activation"], "swish"), r"^layers\[0\]\.activation must be"),
    (setp(["layers", 0, "norm"], "hw"), r"^layers\[0\]\.norm must be \"chw\" or \"c\""),
    (setp(["layers", 0, "in_channels"], 2),
     r"^layers\[0\]\.in_channels 2 does not match the 1 channels"),
    (setp(["layers", 2, "size"], 100), r"^layers\[2\]\.size 100 is larger than the 28 x 28 input"),
    (setp(["layers", 0, "weight"], 3),
     r"^layers\[0\]\.weight must be a string naming a tensor, not a number"),
    (setp(["layers", 0, "weight"], "layers.1.weight"),
     r"^layers\[0\]\.weight: tensor 'layers\.1\.weight' has shape \[16, 3, 3, 16\], "
     r"expected \[16, 3, 3, 1\]"),
    (setp(["layers", 0, "bias"], "nope"), r"^layers\[0\]\.bias: tensor 'nope' is not in the file"),
    (lambda h: h["layers"].pop(14), r"^layers\[14\] \(linear\): needs a vector input"),
    (lambda h: h["layers"].pop(), r"^labels must be an array of 128 strings"),
    (lambda h: h["layers"].append({"type": "global_avg_pool"}),
     r"^layers\[18\] \(global_avg_pool\): only linear layers may follow a linear layer"),
    (setp(["layers", 15, "in_features"], 127),
     r"^layers\[15\]\.in_features 127 does not match the 128"),
]


@pytest.mark.parametrize("i", range(len(CLASSIFIER)))
def test_classifier_rules(base, i):
    edit, match = CLASSIFIER[i]
    with pytest.raises(FormatError, match=match):
        load(base, "fashion", edit)


def _replace_token(h, old, new):
    h["tokenizer"]["vocab"][h["tokenizer"]["vocab"].index(old)] = new


LM = [
    (setp(["lm", "dropout"], 0.1), r"^lm has an unknown key \"dropout\""),
    (delp("lm"), r"^lm is missing"),
    (setp(["lm", "emb_dim"], 15), r"^lm\.emb_dim 15 is not divisible by lm\.num_heads 2"),
    (setp(["lm", "vocab_size"], 1), r"^lm\.vocab_size must be an integer from 2 to"),
    (delp("lm", "ff_dim"), r"^lm\.ff_dim is missing"),
    (setp(["lm", "mlp_units"], 5), r"^lm\.mlp_units must be an array"),
    (setp(["lm", "mlp_units", 0], 0), r"^lm\.mlp_units\[0\] must be an integer from 1"),
    (setp(["lm", "mlp_units", 0], 25),
     r"^head\.0: tensor 'head\.0\.weight' has shape \[24, 16\], expected \[25, 16\]"),
    (setp(["tokenizer"], 3), r"^tokenizer: the spec must be a JSON object"),
    (setp(["tokenizer", "merges", 0], ["\u0120", "nope"]),
     r"^tokenizer: merges\[0\] names a token"),
    (setp(["tokenizer", "added_tokens", 0, "id"], 10000),
     r"^tokenizer: added_tokens\[0\]\.id is not an id below 300"),
    (setp(["tokenizer", "template", "prefix"], [99999]),
     r"^tokenizer: template\.prefix\[0\] is not an id"),
    (setp(["tokenizer", "use_regex"], "yes"), r"^tokenizer: \"use_regex\" must be true or false"),
    (lambda h: h["tokenizer"]["vocab"].extend(f"<extra {i}>" for i in range(10)),
     r"^tokenizer: the tokenizer has 310 tokens but the model's lm\.vocab_size is only 304"),
    (lambda h: _replace_token(h, "Q", "<Q>"),
     r"^tokenizer: byte 0x51 is not a model token"),
]


@pytest.mark.parametrize("i", range(len(LM)))
def test_lm_rules(base, i):
    edit, match = LM[i]
    with pytest.raises(FormatError, match=match):
        load(base, "small-lm", edit)


def test_defaults_and_what_python_reads(base):
    """Optional keys take their documented defaults; Python's view comes from C."""
    def edit(h):
        del h["input"]["preprocess"], h["labels"]
        for ly in h["layers"]:
            ly.pop("activation", None)
            ly.pop("norm", None)
    with load(base, "fashion", edit) as m:
        assert m.labels == [str(i) for i in range(10)]
        assert m.preprocess == {"scale": pytest.approx(1 / 255, rel=1e-7),
                                "mean": [0.0], "std": [1.0]}
        text = m.summary()
        assert "linear norm=chw" in text and "linear 128->10 linear" in text
    with bitnn.load("fashion") as m:
        assert m.labels[0] == "T-shirt/top" and m.input_shape == (1, 28, 28)
        assert m.preprocess["std"] == [pytest.approx(0.35302424451492254, rel=1e-7)]


def test_lm_tokenizer_is_built_in_c(base):
    with load(base, "small-lm", lambda h: None) as m:
        assert m.tokenizer.spec == base["small-lm"][0]["tokenizer"]
        ids = m.tokenize("To be")
        assert m.detokenize(ids) == "To be"
        assert m.tokenizer.vocab_size == 300 and m.vocab_size == 304
    with load(base, "shakespeare-no-tokenizer", lambda h: None) as m:
        assert m.tokenizer is None


