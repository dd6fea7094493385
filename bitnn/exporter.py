"""Export trained binary PyTorch models (bitnn.nn) to .bnb files.

Only the bits are written: each layer's weight and bias go through Eq. 1 of
PAPER.md (``p > mean(p)``) exactly as the layer's forward pass uses them.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from bitnn.format import Bits, write_bnb
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
            elif isinstance(m, (tnn.Dropout, tnn.Identity)):
                continue
            else:
                raise ValueError(f"cannot export a {type(m).__name__}: the runtime runs "
                                 "BinaryConv2d, MaxPool2d(2), GlobalAvgPool2d and BinaryLinear")
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
           training: dict | None = None) -> dict:
    """Write a binary classifier to ``path`` (.bnb) and return its header.

    ``model`` is a :class:`bitnn.nn.BinaryCNN` (binary) or an ``nn.Sequential``
    of bitnn.nn layers. ``input_shape`` is ``(C, H, W)`` (for a BinaryCNN,
    ``(H, W)`` is enough). ``labels``: one name per class. ``preprocess``:
    ``{"scale", "mean", "std"}`` applied by ``Model.predict`` to uint8 input as
    ``(x * scale - mean[c]) / std[c]``; default scale 1/255, mean 0, std 1.
    ``training``: free-form provenance stored in the file.
    """
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
    for i, (kind, m) in enumerate(graph):
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
        elif kind == "linear":
            wname, bname = f"layers.{i}.weight", f"layers.{i}.bias"
            tensors[wname] = Bits(pack_bits(_bits_of(m.binary_weight())),
                                  [m.out_features, m.in_features])
            tensors[bname] = Bits(pack_bits(_bits_of(m.binary_bias())), [m.out_features])
            layers.append({"type": "linear", "in_features": m.in_features,
                           "out_features": m.out_features, "activation": m.activation,
                           "weight": wname, "bias": bname})
        elif kind == "maxpool":
            layers.append({"type": "maxpool2d", "size": _maxpool_size(m)})
        elif kind == "gap":
            layers.append({"type": "global_avg_pool"})
    meta = {
        "model": {"kind": "classifier", "name": name or "classifier"},
        "eps": eps,
        "input": {"channels": C, "height": H, "width": W, "preprocess": preprocess},
        "labels": labels,
        "layers": layers,
    }
    if training is not None:
        meta["training"] = training
    return write_bnb(path, meta, tensors)
