#!/usr/bin/env python3
"""Speed and size of the BCVNN image classifier (docs/maths.md): bitnn in
both numeric modes against PyTorch fp32 eager, ONNX Runtime fp32 and ONNX
Runtime static int8, side by side in one run.

The model is ``bitnn.nn.BinaryCNN(3, 101, (32, 64, 64, 128, 256), f, (256, 256))``
with seeded random weights and biases, for f = 3 and 5, on 256x256x3 input.

Engines, and what each timed call includes (``TIMED_CALL``, printed with the
results):

- bitnn fp32 / bitnn int8: the model exported with ``bitnn.export`` to a
  temporary .bnb, opened with ``bitnn.load(path, threads=t, precision=p)``,
  timed as ``model.predict(x, layout="NCHW", preprocessed=True)`` on float32
  NCHW input: the input checks of ``predict`` (dtype, shape, NaN, value range),
  the NCHW -> NHWC copy (in the C graph), the network and the softmax; int8 also quantizes the
  activations entering each binary layer (inside the C graph).
- torch fp32: a plain ``nn.Sequential`` twin whose Conv2d/Linear weights and
  biases are the 0/1 floats of the binary model, with parameter-free
  LayerNorm as Normalize (over C,H,W for convolutions, over features for
  linear layers), so that the per-call quantization (``p > mean(p)``) of
  BinaryCNN.forward is not timed. It is checked against BinaryCNN.forward.
  ``torch.set_num_threads(t)``, ``torch.inference_mode()``, NCHW (PyTorch's
  default layout), input wrapped without a copy.
- ORT fp32: that twin exported with ``torch.onnx.export(dynamo=False)`` (opset
  17, dynamic batch), ``intra_op_num_threads=t``, ``inter_op_num_threads=1``,
  ``ORT_ENABLE_ALL`` graph optimizations, CPU execution provider, NCHW numpy
  input.
- ORT int8: the same ONNX model after ``quant_pre_process`` and
  ``quantize_static`` (QDQ format, uint8 activations and int8 weights, MinMax
  calibration over ``calibration_inputs``: 8 images from the same
  distributions as the parity and timing inputs; per-channel weights on Conv
  and Gemm, falling back to per-tensor if ORT refuses), same session options.
  The graph quantizes its input and dequantizes its output itself.

Every configuration (f, batch, threads) warms the engines up, then times them
in interleaved rounds (one call each per round, rotating order) so that
background load hits them alike; the tables give the median per engine of the
wall time and, for one thread, of the calling thread's CPU time, and the
ratios of ``RATIOS`` (another engine's time over a bitnn precision's time:
above 1, bitnn is faster). The issue-7 targets (``TARGETS``, ``THREAD_TARGET``)
are printed with met / NOT met. Parity comes first: the exact engines against
BinaryCNN.forward (PyTorch), and the int8 engines' max |prob diff| and top-1
agreement with it on the same images. Sizes: the .bnb file next to
``torch.save`` of the fp32 state_dict of the same model. ``--profile`` times
each layer alone instead. Without onnxruntime (or onnx) the ORT engines are
left out with a note.

    python3 tools/bench_classifier.py                 # full run
    python3 tools/bench_classifier.py --quick         # f=3, batch 1: about a minute
    python3 tools/bench_classifier.py --quick --sizes 32 --json out.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# The engines alternate in one process: set before torch is imported.
from common import set_engine_env  # noqa: E402

set_engine_env()

import numpy as np  # noqa: E402

from common import (  # noqa: E402
    begin_report,
    close_report,
    load_now,
    machine_info,
    md_table,
    now,
    ratio_key,
    stop_report_clock,
    time_rounds,
    verdict,
    write_json,
)

ENGINES = ("bitnn_fp32", "bitnn_int8", "torch_fp32", "ort_fp32", "ort_int8")
ORT_ENGINES = ("ort_fp32", "ort_int8")
EXACT = ("bitnn_fp32", "torch_fp32", "ort_fp32")  # agree with BinaryCNN.forward to rounding
TIMED_CALL = {
    "bitnn_fp32": "model.predict(x, layout='NCHW', preprocessed=True): input checks (dtype, "
                  "shape, NaN, value range), "
                  "the C graph (NCHW -> NHWC copy included), softmax",
    "bitnn_int8": "the same with precision='int8' (activations quantized inside the C graph)",
    "torch_fp32": "twin(torch.from_numpy(x)) under inference_mode (no input copy, no checks), "
                  ".numpy() of the result",
    "ort_fp32": "session.run(None, {'x': x}) on the fp32 ONNX export",
    "ort_int8": "session.run(None, {'x': x}) on the static QDQ int8 model (quantizes its "
                "input, dequantizes its output)",
}
# (other engine, bitnn engine): other's time / bitnn's time, above 1: bitnn is faster.
RATIOS = (("ort_fp32", "bitnn_fp32"), ("ort_int8", "bitnn_fp32"), ("torch_fp32", "bitnn_fp32"),
          ("ort_fp32", "bitnn_int8"), ("ort_int8", "bitnn_int8"), ("torch_fp32", "bitnn_int8"))
# Issue 7, stated for f=3, 256x256, batch 1, one thread: (other, bitnn, minimum ratio).
TARGETS = (("ort_fp32", "bitnn_int8", 3.0), ("ort_int8", "bitnn_int8", 2.0),
           ("ort_fp32", "bitnn_fp32", 2.0))
THREAD_TARGET = 1.8  # bitnn batch-1 speed with 2 threads over 1 thread, each precision
CHANNELS = (32, 64, 64, 128, 256)
FC_UNITS = (256, 256)
NUM_CLASSES = 101


# ----------------------------------------------------------------- models

def build_binary_cnn(f: int, seed: int):
    """The paper's BCVNN with seeded random float weights and biases."""
    import torch

    from bitnn import nn as bnn

    torch.manual_seed(seed * 1000 + f)
    model = bnn.BinaryCNN(in_channels=3, num_classes=NUM_CLASSES, channels=CHANNELS,
                          kernel_size=f, fc_units=FC_UNITS)
    # Biases start at zero (which quantizes to all-zero bits); draw them too so
    # that the bias bits are a real mix of 0 and 1.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (bnn.BinaryConv2d, bnn.BinaryLinear)):
                m.bias.normal_()
    return model.eval()


def graph_of(model):
    """[(kind, module)] of a BinaryCNN, or of an nn.Sequential of bitnn.nn layers."""
    from torch import nn

    from bitnn import nn as bnn

    if hasattr(model, "ops"):
        return model.ops()
    kinds = ((bnn.BinaryConv2d, "conv"), (nn.MaxPool2d, "maxpool"),
             (bnn.GlobalAvgPool2d, "gap"), (bnn.BinaryLinear, "linear"))
    return [(next(k for c, k in kinds if isinstance(m, c)), m) for m in model]


def plain_twin(model, size: int):
    """An ordinary torch model computing BinaryCNN.forward with 0/1 float weights."""
    import torch
    from torch import nn

    from bitnn import nn as bnn

    class GAP(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    layers = []
    h = w = size
    for kind, m in graph_of(model):
        if kind == "conv":
            conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size,
                             padding=m.kernel_size // 2, bias=True)
            with torch.no_grad():
                conv.weight.copy_(m.binary_weight())
                conv.bias.copy_(m.binary_bias())
            layers.append(conv)
            if m.norm != "chw":
                raise ValueError("the twin implements norm='chw' only")
            layers.append(nn.LayerNorm((m.out_channels, h, w), eps=m.eps,
                                       elementwise_affine=False))
        elif kind == "maxpool":
            layers.append(nn.MaxPool2d(2, 2))
            h, w = h // 2, w // 2
            continue
        elif kind == "gap":
            layers.append(GAP())
            continue
        else:  # linear
            lin = nn.Linear(m.in_features, m.out_features, bias=True)
            with torch.no_grad():
                lin.weight.copy_(m.binary_weight())
                lin.bias.copy_(m.binary_bias())
            layers.append(lin)
            layers.append(nn.LayerNorm(m.out_features, eps=m.eps, elementwise_affine=False))
        act = m.activation
        if act == "relu":
            layers.append(nn.ReLU())
        elif act == "softmax":
            layers.append(nn.Softmax(dim=-1))
        elif act == "gelu":
            layers.append(nn.GELU())
        assert isinstance(m, (bnn.BinaryConv2d, bnn.BinaryLinear))
    return nn.Sequential(*layers).eval()


def export_onnx(twin, size: int, path: str, in_channels: int = 3) -> None:
    import torch

    x = torch.zeros(1, in_channels, size, size)
    kwargs = {"input_names": ["x"], "output_names": ["probs"], "opset_version": 17,
              "dynamic_axes": {"x": {0: "batch"}, "probs": {0: "batch"}}}
    # The legacy TorchScript exporter: the dynamo one needs onnxscript.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(twin, (x,), path, dynamo=False, **kwargs)
        except TypeError:  # a torch without the dynamo switch
            torch.onnx.export(twin, (x,), path, **kwargs)


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The engines alternate in one process: ORT's idle intra-op threads must not
    # spin on the cores the next engine runs on.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_available() -> str | None:
    """None when onnxruntime and onnx import, else why not (the ORT engines are skipped)."""
    try:
        import onnx  # noqa: F401 - torch.onnx.export and the quantizer need it
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return str(e)
    return None


def calibration_inputs(c: int, size: int, seed: int) -> np.ndarray:
    """8 images for ORT's static calibration: the four kinds of parity_inputs
    (other noise draws) and four standard-normal images like the timed input."""
    rng = np.random.default_rng(seed + 100)
    return np.concatenate([parity_inputs(c, size, seed + 100),
                           rng.standard_normal((4, c, size, size)).astype(np.float32)])


def quantize_onnx_int8(src: str, dst: str, images: np.ndarray, workdir: str) -> dict:
    """ONNX Runtime static int8 (QDQ) of the fp32 model at ``src``, written to ``dst``.

    ``quant_pre_process`` (shape inference and graph clean-up, as ORT
    recommends; skipped if it fails), then ``quantize_static`` with uint8
    activations, int8 weights and MinMax calibration over ``images``. Weights
    per channel on Conv and Gemm (the only ops with weights; quantizing the
    LayerNormalization constants per channel breaks the model, and ORT's
    int32-bias scale adjustment fails on per-channel Gemm, so it is turned
    off); per tensor if ORT still refuses. Returns the settings used."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": img[None]} for img in images])

        def get_next(self):
            return next(self.it, None)

    settings = {"format": "QDQ", "activations": "uint8", "weights": "int8",
                "calibration": f"MinMax over {len(images)} images", "op_types": ["Conv", "Gemm"]}
    model_in = os.path.join(workdir, os.path.basename(src) + ".pre.onnx")
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(src, model_in)
        settings["pre_process"] = True
    except Exception as e:  # noqa: BLE001 - optional step; say so in the report
        model_in, settings["pre_process"] = src, f"skipped: {type(e).__name__}: {e}"
    last = None
    for per_channel in (True, False):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(model_in, dst, Reader(), quant_format=QuantFormat.QDQ,
                                per_channel=per_channel, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax,
                                op_types_to_quantize=settings["op_types"],
                                extra_options={"QDQDisableWeightAdjustForInt32Bias": True})
            settings["per_channel"] = per_channel
            return settings
        except Exception as e:  # noqa: BLE001 - try per tensor, then give up
            last = e
    raise RuntimeError(f"onnxruntime static quantization failed: {last}")


def state_dict_bytes(model) -> int:
    """Bytes of torch.save(state_dict) of the float parameters of the model."""
    import torch

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "fp32.pt")
        torch.save({k: v.detach().float().clone() for k, v in model.state_dict().items()}, p)
        return os.path.getsize(p)


# ----------------------------------------------------------------- timing

class Engines:
    """The engines for one model (one f), with per-thread-count handles."""

    def __init__(self, binary, size: int, name: str, workdir: str, engines, in_channels: int = 3,
                 seed: int = 0):
        import torch

        self.size, self.engines, self.in_channels = size, engines, in_channels
        self.binary = binary.eval()
        self.twin = plain_twin(self.binary, size)
        self.params = sum(p.numel() for p in self.binary.parameters())
        self.bnb_path = os.path.join(workdir, f"{name}.bnb")
        self.onnx = {"ort_fp32": os.path.join(workdir, f"{name}.onnx"),
                     "ort_int8": os.path.join(workdir, f"{name}.int8.onnx")}
        self.fp32_bytes = state_dict_bytes(self.binary)
        self.bnb_bytes = None
        self.ort_int8_settings = None
        self._bitnn, self._ort = {}, {}
        if any(e.startswith("bitnn") for e in engines):
            import bitnn

            classes = graph_of(self.binary)[-1][1].out_features
            bitnn.export(self.binary, self.bnb_path, input_shape=(in_channels, size, size),
                         labels=[f"class_{i}" for i in range(classes)], name=name)
            self.bnb_bytes = os.path.getsize(self.bnb_path)
        if any(e in ORT_ENGINES for e in engines):
            export_onnx(self.twin, size, self.onnx["ort_fp32"], in_channels)
        if "ort_int8" in engines:
            self.ort_int8_settings = quantize_onnx_int8(
                self.onnx["ort_fp32"], self.onnx["ort_int8"],
                calibration_inputs(in_channels, size, seed), workdir)
        self._torch = torch

    def bitnn_model(self, engine: str, threads: int):
        if (engine, threads) not in self._bitnn:
            import bitnn

            self._bitnn[engine, threads] = bitnn.load(self.bnb_path, threads=threads,
                                                      precision=engine.split("_")[1])
        return self._bitnn[engine, threads]

    def ort(self, engine: str, threads: int):
        if (engine, threads) not in self._ort:
            self._ort[engine, threads] = ort_session(self.onnx[engine], threads)
        return self._ort[engine, threads]

    def runner(self, engine: str, threads: int, x: np.ndarray, raw: bool = False):
        """A no-argument callable returning probabilities (numpy) for x (NCHW).

        ``raw=True`` (per-layer profile): bitnn gets x already in NHWC and runs
        its graph directly, without predict's layout conversion and checks,
        which would dominate the time of a single layer on a wide input."""
        torch = self._torch
        if engine.startswith("bitnn"):
            m = self.bitnn_model(engine, threads)
            if raw and hasattr(m, "_graph"):
                xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
                return lambda: m._graph.forward(xh, threads=threads)
            return lambda: m.predict(x, layout="NCHW", preprocessed=True)
        if engine == "torch_fp32":
            xt = torch.from_numpy(x)
            torch.set_num_threads(threads)  # torch is the only user of its thread setting

            def run():
                with torch.inference_mode():
                    return self.twin(xt).numpy()
            return run
        if engine in ORT_ENGINES:
            s = self.ort(engine, threads)
            return lambda: s.run(None, {"x": x})[0]
        raise ValueError(engine)

    def close(self):
        for m in self._bitnn.values():
            m.close()
        self._bitnn.clear()
        self._ort.clear()


def parity_inputs(c: int, size: int, seed: int = 0) -> np.ndarray:
    """Four differently distributed images: normal noise, uniform [0, 1), a smooth
    gradient pattern, and normal noise of scale 5 shifted by 2."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    smooth = np.stack([np.sin(3 * (k + 1) * xx + 2 * yy * k) for k in range(c)])
    return np.stack([rng.standard_normal((c, size, size)), rng.random((c, size, size)), smooth,
                     2 + 5 * rng.standard_normal((c, size, size))]).astype(np.float32)


def parity(eng: Engines, seed: int = 0) -> dict:
    """Probabilities of the engines and BinaryCNN.forward (PyTorch, the
    reference) on parity_inputs: the exact engines must give the same top-1
    and top-5; the int8 engines get their max |prob diff| and top-1 agreement."""
    torch = eng._torch
    x = parity_inputs(eng.in_channels, eng.size, seed)
    torch.set_num_threads(1)
    with torch.inference_mode():
        ref = eng.binary(torch.from_numpy(x)).numpy()
    probs = {"BinaryCNN.forward": ref}
    for e in eng.engines:
        probs[e] = eng.runner(e, 1, x)()
    exact = ["BinaryCNN.forward"] + [e for e in EXACT if e in probs]
    am = {k: v.argmax(1).tolist() for k, v in probs.items()}
    top5 = {k: np.argsort(-v, axis=1, kind="stable")[:, :5].tolist() for k, v in probs.items()}
    out = {"reference": "BinaryCNN.forward", "images": len(x), "argmax": am,
           "argmax_equal": all(am[k] == am["BinaryCNN.forward"] for k in exact),
           "top5_equal": all(top5[k] == top5["BinaryCNN.forward"] for k in exact),
           "max_prob": float(ref.max()),
           # how much the probabilities differ between the images (for scale)
           "spread_between_images": float(np.abs(ref - ref[:1]).max()),
           "max_abs_diff": {k: float(np.abs(probs[k] - ref).max()) for k in exact[1:]},
           "int8": {e: {"max_abs_diff": float(np.abs(probs[e] - ref).max()),
                        "max_abs_diff_per_image": np.abs(probs[e] - ref).max(1).tolist(),
                        "top1_agreement": float(np.mean(probs[e].argmax(1) == ref.argmax(1)))}
                    for e in probs if e.endswith("int8")}}
    names = list(probs)
    out["max_abs_diff_pairs"] = {f"{a} vs {b}": float(np.abs(probs[a] - probs[b]).max())
                                 for i, a in enumerate(names) for b in names[i + 1:]}
    return out


def time_interleaved(fns: dict, warmup: int, repeats: int, budget_s: float) -> dict:
    """Warm each engine up, then time them in rounds (common.time_rounds: one
    call of each per round, the order rotating), so that every engine sees the
    same background load. Up to `repeats` rounds; at least 2, and no new round
    once the timed calls took more than budget_s per engine. Returns
    {engine: wall seconds per call} and, under "_cpu", the calling thread's
    CPU seconds per call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()

    def timed(name):
        c0, t0 = time.thread_time(), time.perf_counter()
        fns[name]()
        t1, c1 = time.perf_counter(), time.thread_time()
        return t1 - t0, c1 - c0

    rounds = time_rounds(timed, fns, repeats, budget_s)
    times = {name: [w for w, _ in ts] for name, ts in rounds.items()}
    times["_cpu"] = {name: [c for _, c in ts] for name, ts in rounds.items()}
    return times


# ----------------------------------------------------------------- per layer

def layer_models(f: int, size: int, seed: int):
    """[(name, binary Sequential, input channels, input size)]: each conv and
    max-pool of the BCVNN alone (followed by global average pooling and a
    2-unit linear layer, which every runtime needs to end in class scores),
    and the head (global average pooling and the three linear layers)."""
    import torch
    from torch import nn

    from bitnn import nn as bnn

    torch.manual_seed(seed * 1000 + f + 7)
    out = []
    c_in, h = 3, size
    for i, c in enumerate(CHANNELS):
        for j, (a, b) in enumerate(((c_in, c), (c, c))):
            conv = bnn.BinaryConv2d(a, b, f, "relu")
            with torch.no_grad():
                conv.bias.normal_()
            seq = nn.Sequential(conv, bnn.GlobalAvgPool2d(), bnn.BinaryLinear(b, 2, "softmax"))
            out.append((f"conv{i}.{j} {a}->{b} @{h}x{h}", seq, a, h))
        if i < len(CHANNELS) - 1:
            seq = nn.Sequential(nn.MaxPool2d(2, 2), bnn.GlobalAvgPool2d(),
                                bnn.BinaryLinear(c, 2, "softmax"))
            out.append((f"maxpool{i} {c} @{h}x{h}", seq, c, h))
            h //= 2
        c_in = c
    head = [bnn.GlobalAvgPool2d()]
    f_in = c_in
    for u in FC_UNITS:
        head.append(bnn.BinaryLinear(f_in, u, "relu"))
        f_in = u
    head.append(bnn.BinaryLinear(f_in, NUM_CLASSES, "softmax"))
    out.append((f"gap+head {c_in} @{h}x{h}", nn.Sequential(*head), c_in, h))
    return out


def profile(args, fs, sizes, threads, engines) -> list:
    """Batch-1 time of each layer alone, per engine."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_classifier_prof_") as workdir:
        for size in sizes:
            for f in fs:
                for t in threads:
                    what = "CPU time of the calling thread" if t == 1 else "wall time"
                    print(f"\n## Per layer, f={f}, {size}x{size}, batch 1, {t} thread(s): "
                          f"median ms ({what}) of the layer alone (+ GAP + 2-unit linear)\n")
                    print("bitnn: the graph run directly on NHWC float32 input (no layout "
                          "conversion; one finiteness check of the input remains)\n")
                    head = "| layer | " + " | ".join(_label(e) for e in engines) + " |"
                    if "bitnn_fp32" in engines and "ort_fp32" in engines:
                        head += " ORT fp32 / bitnn fp32 (time) |"
                    print(head)
                    print("|" + "---|" * (head.count("|") - 1))
                    totals = dict.fromkeys(engines, 0.0)
                    for i, (name, seq, cin, h) in enumerate(layer_models(f, size, args.seed)):
                        eng = Engines(seq, h, f"layer{i}_f{f}", workdir, engines, in_channels=cin,
                                      seed=args.seed)
                        x = np.random.default_rng(i).standard_normal((1, cin, h, h))
                        x = x.astype(np.float32)
                        row = {"f": f, "size": size, "threads": t, "layer": name}
                        fns = {e: eng.runner(e, t, x, raw=True) for e in engines}
                        times = time_interleaved(fns, 2, args.repeats or 11, args.budget or 4.0)
                        for e in engines:
                            row[e + "_wall"] = 1000 * statistics.median(times[e])
                            row[e + "_cpu"] = 1000 * statistics.median(times["_cpu"][e])
                            row[e] = row[e + "_cpu"] if t == 1 else row[e + "_wall"]
                            totals[e] += row[e]
                        eng.close()
                        rows.append(row)
                        line = f"| {name} | " + " | ".join(f"{row[e]:.2f}" for e in engines) + " |"
                        if "bitnn_fp32" in engines and "ort_fp32" in engines:
                            line += f" {row['ort_fp32'] / row['bitnn_fp32']:.2f}x |"
                        print(line)
                        sys.stdout.flush()
                    print("| sum | " + " | ".join(f"{totals[e]:.1f}" for e in engines) + " |")
    return rows


# ----------------------------------------------------------------- report

LABELS = {"bitnn_fp32": "bitnn fp32", "bitnn_int8": "bitnn int8", "torch_fp32": "torch fp32",
          "ort_fp32": "ORT fp32", "ort_int8": "ORT int8"}


def _label(name: str) -> str:
    """"ort_int8 / bitnn_int8" -> "ORT int8 / bitnn int8"."""
    return " / ".join(LABELS.get(p, p) for p in name.split(" / "))


def present_ratios(engines) -> list:
    return [(a, b) for a, b in RATIOS if a in engines and b in engines]


def fmt_table(results, engines, key: str = "median_ms") -> str:
    """ms per batch (images/s) of each engine."""
    head = ["f", "batch", "threads"] + [f"{_label(e)} ms (img/s)" for e in engines]
    rows = []
    for r in results:
        row = [str(r["f"]), str(r["batch"]), str(r["threads"])]
        for e in engines:
            ms = r[e][key]
            row.append(f"{ms:.1f} ({r['batch'] * 1000.0 / ms:.1f})")
        rows.append(row)
    return md_table(head, rows, "lrr" + "r" * len(engines))


def fmt_ratio_table(results, engines) -> str:
    """Other engines' time over each bitnn precision's time (wall; CPU time for 1 thread)."""
    pairs = present_ratios(engines)
    head = ["f", "batch", "threads"] + [_label(ratio_key(a, b)) for a, b in pairs]
    rows = []
    for r in results:
        row = [str(r["f"]), str(r["batch"]), str(r["threads"])]
        for a, b in pairs:
            k = ratio_key(a, b)
            cell = f"**{r['ratios'][k]:.2f}x**"
            if r["threads"] == 1:
                cell += f" ({r['cpu_ratios'][k]:.2f}x)"
            row.append(cell)
        rows.append(row)
    return md_table(head, rows, "lrr" + "r" * len(pairs))


def fmt_scaling_table(rows, engines) -> str:
    return md_table(["f", "batch"] + [_label(e) for e in engines],
                    [[str(s["f"]), str(s["batch"])] + [f"{s[e]:.2f}x" for e in engines]
                     for s in rows], "lr" + "r" * len(engines))


def fmt_sizes(sizes) -> str:
    rows = []
    for s in sizes:
        ratio = s["fp32_bytes"] / s["bnb_bytes"] if s["bnb_bytes"] else float("nan")
        rows.append([str(s["f"]), f"{s['params']:,}", f"{s['bnb_bytes'] or 0:,}",
                     f"{s['fp32_bytes']:,}", f"{ratio:.1f}x"])
    return md_table(["f", "parameters", ".bnb bytes", "fp32 state_dict bytes", "fp32 / .bnb"],
                    rows, "lllll")


def thread_scaling(results, engines) -> list:
    """Each engine's speed with 2 threads over 1 thread, per (size, f, batch)."""
    one = {(r["size"], r["f"], r["batch"]): r for r in results if r["threads"] == 1}
    rows = []
    for r in results:
        base = one.get((r["size"], r["f"], r["batch"]))
        if r["threads"] == 2 and base is not None:
            rows.append({"size": r["size"], "f": r["f"], "batch": r["batch"],
                         **{e: base[e]["median_ms"] / r[e]["median_ms"] for e in engines}})
    return rows


def evaluate_targets(report, engines) -> list:
    """Every issue-7 target this run measured (batch 1), with its value and met/not."""
    out = []
    for r in report["results"]:
        if r["batch"] != 1 or r["threads"] != 1:
            continue
        for a, b, goal in TARGETS:
            k = ratio_key(a, b)
            if k in r["ratios"]:
                out.append({"target": f"f={r['f']} {r['size']}x{r['size']} batch 1, 1 thread: "
                                      f"{_label(b)} >= {goal:g}x faster than {_label(a)}",
                            "value": r["ratios"][k], "cpu_value": r["cpu_ratios"][k],
                            "goal": goal, "met": r["ratios"][k] >= goal})
    for s in report["thread_scaling"]:
        if s["batch"] != 1:
            continue
        for e in engines:
            if e.startswith("bitnn"):
                out.append({"target": f"f={s['f']} {s['size']}x{s['size']} batch 1: {_label(e)} "
                                      f"2 threads >= {THREAD_TARGET:g}x 1 thread",
                            "value": s[e], "goal": THREAD_TARGET, "met": s[e] >= THREAD_TARGET})
    for s in report["sizes"]:
        if s["f"] == 3 and s["bnb_bytes"]:
            ratio = s["fp32_bytes"] / s["bnb_bytes"]
            out.append({"target": f"f=3 {s['size']}x{s['size']}: fp32 state_dict / .bnb >= 30x",
                        "value": ratio, "goal": 30.0, "met": ratio >= 30.0})
    return out


def fmt_target(t) -> str:
    cpu = f" ({t['cpu_value']:.2f}x from CPU time)" if "cpu_value" in t else ""
    return f"- {t['target']}: {t['value']:.2f}x{cpu} -> {verdict(t['met'])}"


def print_tables(report, sizes, engines) -> None:
    results = report["results"]
    print("\n## ms per batch (images/s), median\n")
    for size in sizes:
        if len(sizes) > 1:
            print(f"input {size}x{size}x3\n")
        print(fmt_table([r for r in results if r["size"] == size], engines))
        print()
    if present_ratios(engines):
        print("## Ratios: the other engine's time over bitnn's (above 1: bitnn is faster; "
              "wall clock, CPU time of the calling thread in parentheses for 1 thread)\n")
        print(fmt_ratio_table(results, engines))
        print()
    one = [r for r in results if r["threads"] == 1]
    if one:
        print("## One thread: CPU time of the calling thread per batch, median ms (img/s)\n")
        print("With one thread each engine computes on the calling thread, so this is "
              "what a batch costs when it has a core (less sensitive to other load).\n")
        print(fmt_table(one, engines, key="cpu_median_ms"))
        print()
    if report["thread_scaling"]:
        print("## 2 threads over 1 thread (speed, wall clock)\n")
        print(fmt_scaling_table(report["thread_scaling"], engines))
        print()
    print("## What each engine's timed call includes\n")
    for e in engines:
        print(f"- {_label(e)}: {TIMED_CALL[e]}")
    print("\n## Model size\n")
    print(fmt_sizes([s for s in report["sizes"] if s["size"] == sizes[0]]))


# ----------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="f=3, batch 1, threads 1 and 2, few repeats (about a minute)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, metavar="S",
                    help="input height = width (default 256); several values run each in turn")
    ap.add_argument("--kernel-sizes", type=int, nargs="+", default=None, metavar="F",
                    help="filter sizes f (default 3 5; --quick: 3)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 32; --quick: 1")
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="default 1 2")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES,
                    help="default: all (the ORT ones only when onnxruntime and onnx import)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed calls per cell for batch 1 (default 15; --quick 5); "
                         "batches > 1 use fewer")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of timed calls per engine and cell, at most (default 12)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--no-parity", action="store_true", help="skip the agreement check")
    ap.add_argument("--profile", action="store_true",
                    help="instead of the whole model, time each layer alone at batch 1 "
                         "(default threads: 1)")
    args = ap.parse_args(argv)
    for flag in ("sizes", "kernel_sizes", "batches", "threads"):
        vals = getattr(args, flag)
        if vals is not None and min(vals) < 1:
            ap.error(f"--{flag.replace('_', '-')} values must be at least 1")
    if args.kernel_sizes and any(f % 2 == 0 for f in args.kernel_sizes):
        ap.error("--kernel-sizes must be odd ('same' padding)")
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.budget is not None and not args.budget > 0:
        ap.error("--budget must be positive")
    return args


def select_engines(requested) -> list:
    """The requested engines in ENGINES order, without the ORT ones when ORT is missing."""
    engines = [e for e in ENGINES if e in requested]
    why = ort_available() if any(e in ORT_ENGINES for e in engines) else None
    if why:
        print(f"note: ONNX Runtime engines skipped ({why})")
        engines = [e for e in engines if e not in ORT_ENGINES]
    if not engines:
        raise SystemExit("bench_classifier: no engine left to run")
    return engines


def start_report(config: dict) -> dict:
    """The report skeleton; prints the header (date, CPU, versions, load)."""
    return begin_report("BCVNN benchmark", machine_info(), ("torch", "onnxruntime", "python"),
                        config=config,
                        timed_call={e: TIMED_CALL[e] for e in config["engines"]},
                        sizes=[], parity=[], results=[])


def record_parity(eng: Engines, f: int, size: int, seed: int, report) -> None:
    p = parity(eng, seed=seed)
    p.update(f=f, size=size)
    report["parity"].append(p)
    diffs = ", ".join(f"{_label(k)} {v:.2e}" for k, v in p["max_abs_diff"].items())
    print(f"\nparity f={f} {size}x{size} ({p['images']} images, vs BinaryCNN.forward): "
          f"argmax equal: {p['argmax_equal']} {p['argmax']['BinaryCNN.forward']}; "
          f"top-5 equal: {p['top5_equal']}; max |prob diff|: {diffs}; "
          f"max prob {p['max_prob']:.3f}; max |prob diff| between the images: "
          f"{p['spread_between_images']:.2e}")
    for e, q in p["int8"].items():
        print(f"int8 parity f={f} {size}x{size}, {_label(e)} vs BinaryCNN.forward: max |prob diff| "
              f"{q['max_abs_diff']:.2e} (per image: "
              + ", ".join(f"{v:.1e}" for v in q["max_abs_diff_per_image"])
              + f"), top-1 agrees on {100 * q['top1_agreement']:.0f}% of the {p['images']} images")
    sys.stdout.flush()


def time_cell(eng: Engines, engines, f: int, size: int, b: int, t: int, x, reps: int,
              budget: float) -> dict:
    """One (f, size, batch, threads) cell: every engine timed in interleaved rounds."""
    row = {"f": f, "size": size, "batch": b, "threads": t}
    fns = {e: eng.runner(e, t, x) for e in engines}
    if "torch_fp32" in engines:
        eng._torch.set_num_threads(t)
    times = time_interleaved(fns, 2 if b == 1 else 1, reps, budget)
    for e in engines:
        ts = times[e]
        row[e] = {"median_ms": 1000 * statistics.median(ts),
                  # CPU time of the calling thread: with one thread every engine computes on it
                  "cpu_median_ms": 1000 * statistics.median(times["_cpu"][e]),
                  "min_ms": 1000 * min(ts), "repeats": len(ts),
                  "images_per_s": b / statistics.median(ts)}
    pairs = present_ratios(engines)
    row["ratios"] = {ratio_key(o, m): row[o]["median_ms"] / row[m]["median_ms"] for o, m in pairs}
    row["cpu_ratios"] = {ratio_key(o, m): row[o]["cpu_median_ms"] / row[m]["cpu_median_ms"]
                         for o, m in pairs}
    cells = "  ".join(f"{_label(e)} {row[e]['median_ms']:.1f} ms" for e in engines)
    print(f"f={f} {size}x{size} batch {b:2d} threads {t}: {cells}  (load {load_now()})")
    sys.stdout.flush()
    return row


def bench_model(args, f: int, size: int, batches, threads, engines, reps1, budget, workdir,
                report) -> None:
    """Everything measured for one model (f, input size): size, parity, speed."""
    eng = Engines(build_binary_cnn(f, args.seed), size, f"bcvnn_f{f}", workdir, engines,
                  seed=args.seed)
    try:
        report["sizes"].append({"f": f, "size": size, "params": eng.params,
                                "bnb_bytes": eng.bnb_bytes, "fp32_bytes": eng.fp32_bytes})
        if eng.ort_int8_settings is not None:
            report.setdefault("ort_int8_settings", {})[f"f={f} {size}"] = eng.ort_int8_settings
            print(f"ONNX Runtime static int8 (f={f}, {size}x{size}): {eng.ort_int8_settings}")
        if not args.no_parity:
            record_parity(eng, f, size, args.seed, report)
        for b in batches:
            x = np.random.default_rng(args.seed + 1).standard_normal(
                (b, 3, size, size)).astype(np.float32)
            reps = reps1 if b == 1 else max(3, reps1 // 3)
            for t in threads:
                report["results"].append(time_cell(eng, engines, f, size, b, t, x, reps, budget))
    finally:
        eng.close()


def run(args) -> dict:
    quick = args.quick
    sizes = args.sizes or [256]
    fs = args.kernel_sizes or ([3] if quick else [3, 5])
    batches = args.batches or ([1] if quick else [1, 32])
    threads = args.threads or [1, 2]
    engines = select_engines(args.engines)
    reps1 = args.repeats or (5 if quick else 15)
    budget = args.budget or (3.0 if quick else 12.0)

    import torch

    t0 = time.time()
    report = start_report({"channels": CHANNELS, "fc_units": FC_UNITS, "classes": NUM_CLASSES,
                           "sizes": sizes, "kernel_sizes": fs, "batches": batches,
                           "threads": threads, "engines": engines, "seed": args.seed})
    with tempfile.TemporaryDirectory(prefix="bench_classifier_") as workdir:
        for size in sizes:
            for f in fs:
                bench_model(args, f, size, batches, threads, engines, reps1, budget, workdir,
                            report)
    torch.set_num_threads(max(threads))
    stop_report_clock(report, t0)
    report["thread_scaling"] = thread_scaling(report["results"], engines)
    print_tables(report, sizes, engines)
    report["targets"] = evaluate_targets(report, engines)
    if report["targets"]:
        print("\n## Targets (issue 7: stated for f=3, 256x256; other shapes for reference)\n")
        for t in report["targets"]:
            print(fmt_target(t))
    close_report(report, args.json)
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.profile:
        engines = select_engines(args.engines)
        print(f"load average at start: {load_now()}")
        rows = profile(args, args.kernel_sizes or [3], args.sizes or [256], args.threads or [1],
                       engines)
        print(f"\nload average at end: {load_now()}")
        if args.json:
            write_json(args.json, {"date": now(), "machine": machine_info(), "layers": rows},
                       log=None, indent=1, default=str)
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
