"""Export trained binary PyTorch models (bitnn.nn) to .bnb files.

Only the bits are written: each layer's weight and bias go through Eq. 1 of
docs/maths.md, Binary parameters (``p > mean(p)``) exactly as the layer's forward pass uses them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bitnn.format import Bits, encode_bnb, write_atomic
from bitnn.ops import pack_bits


def _bits_of(t) -> np.ndarray:
    """0/1 float torch tensor -> uint8 numpy."""
    return t.detach().cpu().numpy().astype(np.uint8)


def _classifier_graph(model):
    """[(kind, module)] in forward order for a BinaryCNN or a plain Sequential."""
    import torch.nn as tnn

    from bitnn import nn as bnn

    if hasattr(model, "ops"):
        return model.ops()
    if isinstance(model, tnn.Sequential):
        out = []
        for m in model:
            if isinstance(m, bnn.BinaryConv2d):
                out.append(("conv", m))
            elif isinstance(m, tnn.MaxPool2d):
                out.append(("maxpool", m))
            elif isinstance(m, bnn.GlobalAvgPool2d):
                out.append(("gap", m))
            elif isinstance(m, bnn.BinaryLinear):
                out.append(("linear", m))
            elif isinstance(m, tnn.Flatten):
                if m.start_dim != 1 or m.end_dim != -1:
                    raise ValueError(f"only nn.Flatten(start_dim=1, end_dim=-1) can be exported, "
                                     f"got {m}")
                out.append(("flatten", m))
            elif isinstance(m, (tnn.Dropout, tnn.Identity)):
                continue
            else:
                raise ValueError(f"cannot export a {type(m).__name__}: the runtime runs "
                                 "BinaryConv2d, MaxPool2d(2), GlobalAvgPool2d, Flatten and "
                                 "BinaryLinear")
        return out
    raise TypeError(f"cannot export a {type(model).__name__}; expected a BinaryCNN or an "
                    "nn.Sequential of bitnn.nn layers")


def _maxpool_size(m) -> int:
    k, s = m.kernel_size, m.stride
    k = k if isinstance(k, int) else (k[0] if k[0] == k[1] else None)
    s = s if isinstance(s, int) else (s[0] if s[0] == s[1] else None)
    pad = m.padding if isinstance(m.padding, int) else max(m.padding)
    dil = m.dilation if isinstance(m.dilation, int) else max(m.dilation)
    if k is None or s != k or pad != 0 or dil != 1 or m.ceil_mode:
        raise ValueError("only square max-pools with stride == window, no padding, floor mode "
                         f"can be exported, got {m}")
    return k


def export(model, path, *, input_shape: Sequence[int] | None = None, labels=None,
           preprocess: dict | None = None, name: str | None = None,
           training: dict | None = None, tokenizer=None, calibration=None) -> int:
    """Write a binary classifier or language model to ``path`` (.bnb); returns
    the file's size in bytes.

    Before anything is written, the file is built in memory and opened with
    the loader's own checks (``bitnn.load``'s): a model that would not load
    raises ValueError naming the layer, and nothing is written.

    A :class:`bitnn.nn.BinaryLM` goes to :func:`_export_lm` (keywords
    ``tokenizer``, ``name``, ``training``; ``input_shape``, ``labels``,
    ``preprocess`` and ``calibration`` do not apply). Everything else is a
    classifier:

    ``model`` is a :class:`bitnn.nn.BinaryCNN` (binary) or an ``nn.Sequential``
    of BinaryConv2d, MaxPool2d, GlobalAvgPool2d, nn.Flatten and BinaryLinear
    layers (Dropout and Identity are skipped). ``input_shape`` is ``(C, H, W)``
    (for a BinaryCNN, ``(H, W)`` is enough). ``labels``: one name per class.
    ``preprocess``: ``{"scale", "mean", "std"}`` applied by ``Model.predict``
    to pixels as ``(x * scale - mean[c]) / std[c]``; default scale 1/255,
    mean 0, std 1. ``training``: free-form provenance stored in the file.
    ``calibration``: ``(x_val, y_val)`` held-out images (pixels, as
    ``predict`` takes them) and class indices to fit a softmax temperature on
    (minimum negative log-likelihood), or the temperature itself (a number >
    0). It is stored in the file and used only by ``predict(...,
    calibrated=True)``; the class ranking never changes.
    """
    if _is_lm(model):
        if (input_shape is not None or labels is not None or preprocess is not None
                or calibration is not None):
            raise ValueError("input_shape, labels, preprocess and calibration are for "
                             "classifiers; a language model takes tokenizer, name and training")
        return _export_lm(model, path, tokenizer=tokenizer, name=name, training=training)
    if tokenizer is not None:
        raise ValueError("tokenizer is for language models (BinaryLM)")
    graph = _classifier_graph(model)
    if getattr(model, "binary", True) is False or any(getattr(m, "binary", True) is False
                                                     for _, m in graph):
        raise ValueError("only binary models can be exported (this is the fp32 baseline)")
    convs = [m for k, m in graph if k == "conv"]
    lins = [m for k, m in graph if k == "linear"]
    if not lins:
        raise ValueError("the model needs at least one BinaryLinear layer (the class scores)")
    first = convs[0].in_channels if convs else lins[0].in_features
    if input_shape is None:
        raise ValueError("input_shape=(C, H, W) is required: the file records the image size")
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) == 2:
        input_shape = (first,) + input_shape
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W), got {input_shape}")
    C, H, W = input_shape
    eps_values = {float(m.eps) for _, m in graph if hasattr(m, "eps")}
    if len(eps_values) != 1:
        raise ValueError(f"all layers must share one eps to export, got {sorted(eps_values)}")
    eps = eps_values.pop()
    classes = lins[-1].out_features
    if labels is None:
        labels = [str(i) for i in range(classes)]
    labels = [str(v) for v in labels]
    if len(labels) != classes:
        raise ValueError(f"{len(labels)} labels for {classes} classes")
    if preprocess is None:
        preprocess = {"scale": 1.0 / 255.0, "mean": [0.0] * C, "std": [1.0] * C}
    preprocess = {"scale": float(preprocess.get("scale", 1.0 / 255.0)),
                  "mean": [float(v) for v in preprocess.get("mean", [0.0] * C)],
                  "std": [float(v) for v in preprocess.get("std", [1.0] * C)]}
    if len(preprocess["mean"]) == 1 and C > 1:
        preprocess["mean"] *= C
    if len(preprocess["std"]) == 1 and C > 1:
        preprocess["std"] *= C
    if (len(preprocess["mean"]) != C or len(preprocess["std"]) != C
            or not all(math.isfinite(v) and v > 0 for v in preprocess["std"])
            or not all(math.isfinite(v) for v in preprocess["mean"] + [preprocess["scale"]])):
        raise ValueError(f"preprocess needs finite mean and positive std for each of {C} channels")

    layers: list[dict[str, Any]] = []
    tensors: dict[str, Bits] = {}
    shape: tuple = (C, H, W)  # what comes into the layer: (C, H, W), or (features,)
    unflatten = None  # (C, H, W) that a flatten just turned into a vector (torch: C,H,W order)
    for i, (kind, m) in enumerate(graph):
        if kind == "flatten":
            if len(shape) == 3:  # after global_avg_pool the input is a vector already
                layers.append({"type": "flatten"})
                unflatten, shape = shape, (math.prod(shape),)
            continue
        if kind == "linear":
            wbits = _bits_of(m.binary_weight())
            if unflatten is not None and wbits.shape[1] == math.prod(unflatten):
                # torch flattens (C, H, W); the runtime's activations are (H, W, C)
                rows = wbits.shape[0]
                wbits = wbits.reshape(rows, *unflatten).transpose(0, 2, 3, 1).reshape(rows, -1)
            unflatten = None
            wname, bname = f"layers.{i}.weight", f"layers.{i}.bias"
            tensors[wname] = Bits(pack_bits(np.ascontiguousarray(wbits)),
                                  [m.out_features, m.in_features])
            tensors[bname] = Bits(pack_bits(_bits_of(m.binary_bias())), [m.out_features])
            layers.append({"type": "linear", "in_features": m.in_features,
                           "out_features": m.out_features, "activation": m.activation,
                           "weight": wname, "bias": bname})
            shape = (m.out_features,)
            continue
        unflatten = None
        if kind == "conv":
            wname, bname = f"layers.{i}.weight", f"layers.{i}.bias"
            wb = _bits_of(m.binary_weight()).transpose(0, 2, 3, 1)  # -> (Cout, kh, kw, Cin)
            tensors[wname] = Bits(pack_bits(np.ascontiguousarray(wb).reshape(wb.shape[0], -1)),
                                  list(wb.shape))
            tensors[bname] = Bits(pack_bits(_bits_of(m.binary_bias())), [m.out_channels])
            layers.append({"type": "conv2d", "in_channels": m.in_channels,
                           "out_channels": m.out_channels, "kernel_size": m.kernel_size,
                           "activation": m.activation, "norm": m.norm,
                           "weight": wname, "bias": bname})
            shape = (m.out_channels,) + shape[1:]
        elif kind == "maxpool":
            size = _maxpool_size(m)
            layers.append({"type": "maxpool2d", "size": size})
            shape = shape[:1] + tuple(v // size for v in shape[1:])
        elif kind == "gap":
            layers.append({"type": "global_avg_pool"})
            shape = shape[:1]
    meta = {
        "model": {"kind": "classifier", "name": name or "classifier"},
        "eps": eps,
        "input": {"channels": C, "height": H, "width": W, "preprocess": preprocess},
        "labels": labels,
        "layers": layers,
    }
    if training is not None:
        meta["training"] = training
    data = _validated(meta, tensors)
    if calibration is not None:
        meta["calibration"] = _fit_calibration(data, calibration)
        data = _validated(meta, tensors)
    write_atomic(path, [data])
    return len(data)


def _validated(meta: dict, tensors: dict) -> bytes:
    """The file's bytes, after ``bitnn.load``'s checks passed on them (else ValueError)."""
    from bitnn import _core
    from bitnn.model import open_model

    data = encode_bnb(meta, tensors)
    try:
        open_model(_core.BnbFile.from_bytes(data)).close()
    except ValueError as e:  # bitnn.FormatError included
        raise ValueError(f"cannot export: the file would not load: {e}") from None
    return data


def _fit_calibration(data: bytes, calibration) -> dict:
    """The header's "calibration" object: a temperature given, or fitted on (x, y)."""
    if isinstance(calibration, (int, float, np.number)) and not isinstance(calibration, bool):
        t = float(calibration)
        if not (math.isfinite(t) and 0 < t <= 1e6):
            raise ValueError(f"calibration temperature must be in (0, 1e6], got {calibration!r}")
        return {"temperature": t}
    if not (isinstance(calibration, (tuple, list)) and len(calibration) == 2):
        raise TypeError("calibration must be (x_val, y_val) or a temperature (a number > 0)")
    from bitnn import _core
    from bitnn.model import open_model

    x, y = calibration
    with open_model(_core.BnbFile.from_bytes(data)) as model:
        probs = model.predict(x).astype(np.float64)
        classes = model.num_classes
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or y.shape != (probs.shape[0],):
        raise ValueError(f"calibration y_val must be {probs.shape[0]} integer class indices, "
                         f"got {y.dtype} of shape {y.shape}")
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"calibration y_val has class indices outside 0..{classes - 1}")
    with np.errstate(divide="ignore"):
        logp = np.log(probs)
    logp = np.maximum(logp, np.log(np.finfo(np.float64).tiny))
    rows = np.arange(len(y))

    def nll(log_beta):  # mean -log softmax(logp * beta)[y]; convex in beta = 1/T
        z = logp * math.exp(log_beta)
        zmax = z.max(axis=1)
        lse = zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1))
        return float(np.mean(lse - z[rows, y]))

    lo, hi = math.log(1e-3), math.log(1e3)  # golden-section search on log(1/T)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    log_beta = (lo + hi) / 2
    return {"temperature": math.exp(-log_beta), "method": "temperature scaling (min NLL)",
            "examples": int(len(y)), "nll": nll(log_beta), "nll_uncalibrated": nll(0.0)}


# --------------------------------------------------------------------------
# Language decoder (csrc/graph/lm.c: bitnn_lm_build)
# --------------------------------------------------------------------------

def _is_lm(model) -> bool:
    try:
        from bitnn.nn import BinaryLM
    except ImportError:  # pragma: no cover - no torch: cannot be a torch model
        return False
    return isinstance(model, BinaryLM)


def _tokenizer_spec(tokenizer):
    """A tokenizer spec dict (bitnn.tokenizer's schema) from what the caller passed.

    Accepts the spec itself (a dict), a :class:`bitnn.tokenizer.Tokenizer`
    (its ``spec``), or a Hugging Face ``tokenizers.Tokenizer`` (through
    :func:`bitnn.tokenizer.spec_from_hf`).
    """
    if tokenizer is None or isinstance(tokenizer, dict):
        return tokenizer
    spec = getattr(tokenizer, "spec", None)
    if isinstance(spec, dict):
        return spec
    from bitnn.tokenizer import spec_from_hf

    return spec_from_hf(tokenizer)


def _linear_bits(m, prefix: str, tensors: dict) -> None:
    tensors[f"{prefix}.weight"] = Bits(pack_bits(_bits_of(m.binary_weight())),
                                       [m.out_features, m.in_features])
    tensors[f"{prefix}.bias"] = Bits(pack_bits(_bits_of(m.binary_bias())), [m.out_features])


def _export_lm(model, path, *, tokenizer=None, name: str | None = None,
               training: dict | None = None) -> int:
    """Write a :class:`bitnn.nn.BinaryLM` to ``path`` as csrc/graph/lm.c reads it.

    Tensors (all bits): ``embed.token.weight [vocab, emb_dim]`` (the token
    kernel transposed: row t is token t's column), ``embed.token.bias
    [emb_dim]``, ``embed.position.weight [max_len, emb_dim]``,
    ``embed.position.bias``, ``blocks.{i}.attn.{q,k,v,out}.{weight,bias}``
    (``[D, D]``, ``[D]``), ``blocks.{i}.ff1.*`` (``[ff_dim, D]``),
    ``blocks.{i}.ff2.*`` (``[D, ff_dim]``), ``head.{i}.*``, ``output.*``
    (``[vocab, last width]``). Header: ``model`` (kind "lm"), ``eps``, ``lm``
    (the shape), ``tokenizer`` (when given), ``training``.
    """
    if not getattr(model, "binary", True) or any(getattr(m, "binary", True) is False
                                                 for m in model.modules()):
        raise ValueError("only binary models can be exported (this is the fp32 baseline)")
    c = model.config
    eps_values = {float(m.eps) for m in model.modules() if hasattr(m, "eps")}
    if len(eps_values) != 1:
        raise ValueError(f"all layers must share one eps to export, got {sorted(eps_values)}")
    eps = eps_values.pop()
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1) for the runtime, got {eps}")
    if c["vocab_size"] < 2:
        raise ValueError("the runtime needs a vocabulary of at least 2 tokens")

    tensors: dict[str, Bits] = {}
    emb = model.embedding
    for part, m, rows in (("token", emb.token, c["vocab_size"]),
                          ("position", emb.position, c["max_len"])):
        wt = np.ascontiguousarray(_bits_of(m.binary_weight()).T)  # (rows, emb_dim)
        assert wt.shape == (rows, c["emb_dim"])
        tensors[f"embed.{part}.weight"] = Bits(pack_bits(wt), [rows, c["emb_dim"]])
        tensors[f"embed.{part}.bias"] = Bits(pack_bits(_bits_of(m.binary_bias())),
                                             [c["emb_dim"]])
    for i, block in enumerate(model.blocks):
        for nm in ("q", "k", "v", "out"):
            _linear_bits(getattr(block.attn, nm), f"blocks.{i}.attn.{nm}", tensors)
        _linear_bits(block.ff1, f"blocks.{i}.ff1", tensors)
        _linear_bits(block.ff2, f"blocks.{i}.ff2", tensors)
    for i, layer in enumerate(model.head):
        _linear_bits(layer, f"head.{i}", tensors)
    _linear_bits(model.output, "output", tensors)

    meta: dict[str, Any] = {
        "model": {"kind": "lm", "name": name or "lm"},
        "eps": eps,
        "lm": {"vocab_size": c["vocab_size"], "max_len": c["max_len"], "emb_dim": c["emb_dim"],
               "num_heads": c["num_heads"], "num_blocks": c["num_blocks"],
               "ff_dim": c["ff_dim"], "mlp_units": list(c["mlp_units"])},
    }
    spec = _tokenizer_spec(tokenizer)
    if spec is not None:  # checked with the rest of the file by _validated
        meta["tokenizer"] = spec
    if training is not None:
        meta["training"] = training
    data = _validated(meta, tensors)
    write_atomic(path, [data])
    return len(data)
