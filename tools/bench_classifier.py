#!/usr/bin/env python3
"""Speed and size of the BCVNN image classifier (PAPER.md section 4): bitnn
against PyTorch fp32 eager and ONNX Runtime fp32, side by side in one run.

The model is ``bitnn.nn.BinaryCNN(3, 101, (32, 64, 64, 128, 256), f, (256, 256))``
with seeded random weights and biases, for f = 3 and 5, on 256x256x3 input.

- bitnn: the model exported with ``bitnn.export`` to a temporary .bnb, opened
  with ``bitnn.load(path, threads=t)``, timed as
  ``model.predict(x, layout="NCHW")`` on float32 NCHW input (so the
  NCHW -> NHWC copy and the input checks of ``predict`` are included).
- torch: a plain ``nn.Sequential`` twin whose Conv2d/Linear weights and biases
  are the 0/1 floats of the binary model, with parameter-free LayerNorm as
  Normalize (over C,H,W for convolutions, over features for linear layers),
  so that the per-call quantization (``p > mean(p)``) of BinaryCNN.forward is
  not timed. It is checked against BinaryCNN.forward. ``torch.set_num_threads(t)``,
  ``torch.inference_mode()``, NCHW (PyTorch's default layout).
- ort: that twin exported with ``torch.onnx.export(dynamo=False)`` (opset 17,
  dynamic batch), ``intra_op_num_threads=t``, ``inter_op_num_threads=1``,
  ``ORT_ENABLE_ALL`` graph optimizations, CPU execution provider.

Every configuration (f, batch, threads) warms the three engines up, then
times them in interleaved rounds (one call each per round, rotating order) so
that background load hits them alike; the tables give the median per engine
of the wall time and, for one thread, of the calling thread's CPU time.
Sizes: the .bnb file next to ``torch.save`` of the fp32 state_dict of the
same model. ``--profile`` times each layer alone instead.

    python3 tools/bench_classifier.py                 # full run (~5 min on 2 cores)
    python3 tools/bench_classifier.py --quick         # f=3, batch 1: under half a minute
    python3 tools/bench_classifier.py --quick --sizes 32 --json out.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from common import machine_info as _base_machine_info  # noqa: E402

ENGINES = ("bitnn", "torch", "ort")
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
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def state_dict_bytes(model) -> int:
    """Bytes of torch.save(state_dict) of the float parameters of the model."""
    import torch

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "fp32.pt")
        torch.save({k: v.detach().float().clone() for k, v in model.state_dict().items()}, p)
        return os.path.getsize(p)


# ----------------------------------------------------------------- timing

class Engines:
    """The three engines for one model (one f), with per-thread-count handles."""

    def __init__(self, binary, size: int, name: str, workdir: str, engines, in_channels: int = 3):
        import torch

        self.size, self.engines, self.in_channels = size, engines, in_channels
        self.binary = binary.eval()
        self.twin = plain_twin(self.binary, size)
        self.params = sum(p.numel() for p in self.binary.parameters())
        self.bnb_path = os.path.join(workdir, f"{name}.bnb")
        self.onnx_path = os.path.join(workdir, f"{name}.onnx")
        self.fp32_bytes = state_dict_bytes(self.binary)
        self.bnb_bytes = None
        self._bitnn, self._ort = {}, {}
        if "bitnn" in engines:
            import bitnn

            classes = graph_of(self.binary)[-1][1].out_features
            bitnn.export(self.binary, self.bnb_path, input_shape=(in_channels, size, size),
                         labels=[f"class_{i}" for i in range(classes)], name=name)
            self.bnb_bytes = os.path.getsize(self.bnb_path)
        if "ort" in engines:
            export_onnx(self.twin, size, self.onnx_path, in_channels)
        self._torch = torch

    def bitnn_model(self, threads: int):
        if threads not in self._bitnn:
            import bitnn

            self._bitnn[threads] = bitnn.load(self.bnb_path, threads=threads)
        return self._bitnn[threads]

    def ort(self, threads: int):
        if threads not in self._ort:
            self._ort[threads] = ort_session(self.onnx_path, threads)
        return self._ort[threads]

    def runner(self, engine: str, threads: int, x: np.ndarray, raw: bool = False):
        """A no-argument callable returning probabilities (numpy) for x (NCHW).

        ``raw=True`` (per-layer profile): bitnn gets x already in NHWC and runs
        its graph directly, without predict's layout conversion and checks,
        which would dominate the time of a single layer on a wide input."""
        torch = self._torch
        if engine == "bitnn":
            m = self.bitnn_model(threads)
            if raw and hasattr(m, "_graph"):
                xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
                return lambda: m._graph.forward(xh, threads=threads)
            return lambda: m.predict(x, layout="NCHW")
        if engine == "torch":
            xt = torch.from_numpy(x)
            torch.set_num_threads(threads)  # torch is the only user of its thread setting

            def run():
                with torch.inference_mode():
                    return self.twin(xt).numpy()
            return run
        if engine == "ort":
            s = self.ort(threads)
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
    """Probabilities of the engines (and BinaryCNN.forward itself) on parity_inputs."""
    torch = eng._torch
    x = parity_inputs(eng.in_channels, eng.size, seed)
    torch.set_num_threads(1)
    with torch.inference_mode():
        ref = eng.binary(torch.from_numpy(x)).numpy()
    probs = {"BinaryCNN.forward": ref}
    for e in eng.engines:
        probs[e] = eng.runner(e, 1, x)()
    am = {k: v.argmax(1).tolist() for k, v in probs.items()}
    top5 = {k: np.argsort(-v, axis=1, kind="stable")[:, :5].tolist() for k, v in probs.items()}
    out = {"reference": "BinaryCNN.forward", "argmax": am,
           "argmax_equal": all(v == am["BinaryCNN.forward"] for v in am.values()),
           "top5_equal": all(v == top5["BinaryCNN.forward"] for v in top5.values()),
           "max_prob": float(ref.max()),
           # how much the probabilities differ between the images (for scale)
           "spread_between_images": float(np.abs(ref - ref[:1]).max()),
           "max_abs_diff": {k: float(np.abs(v - ref).max()) for k, v in probs.items()
                            if k != "BinaryCNN.forward"}}
    names = list(probs)
    out["max_abs_diff_pairs"] = {f"{a} vs {b}": float(np.abs(probs[a] - probs[b]).max())
                                 for i, a in enumerate(names) for b in names[i + 1:]}
    return out


def time_interleaved(fns: dict, warmup: int, repeats: int, budget_s: float) -> dict:
    """Warm each engine up, then time them in rounds (one call of each per round,
    the order rotating), so that every engine sees the same background load.
    Up to `repeats` rounds; at least 2, and no new round once the timed calls
    took more than budget_s per engine."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times = {name: [] for name in names}
    cpu = {name: [] for name in names}
    t_start = time.perf_counter()
    for r in range(repeats):
        if r >= 2 and time.perf_counter() - t_start > budget_s * len(names):
            break
        for name in names[r % len(names):] + names[:r % len(names)]:
            c0, t0 = time.thread_time(), time.perf_counter()
            fns[name]()
            t1, c1 = time.perf_counter(), time.thread_time()
            times[name].append(t1 - t0)
            cpu[name].append(c1 - c0)
    times["_cpu"] = cpu
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
                    head = "| layer | " + " | ".join(engines) + " |"
                    if "bitnn" in engines and "ort" in engines:
                        head += " bitnn/ORT |"
                    print(head)
                    print("|" + "---|" * (head.count("|") - 1))
                    totals = dict.fromkeys(engines, 0.0)
                    for i, (name, seq, cin, h) in enumerate(layer_models(f, size, args.seed)):
                        eng = Engines(seq, h, f"layer{i}_f{f}", workdir, engines, in_channels=cin)
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
                        if "bitnn" in engines and "ort" in engines:
                            line += f" {row['bitnn'] / row['ort']:.2f} |"
                        print(line)
                        sys.stdout.flush()
                    print("| sum | " + " | ".join(f"{totals[e]:.1f}" for e in engines) + " |")
    return rows


# ----------------------------------------------------------------- report

def machine_info() -> dict:
    info = _base_machine_info()
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
    except ImportError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def fmt_table(results, engines, key: str = "median_ms") -> str:
    head = ["f", "batch", "threads"]
    for e in engines:
        head += [f"{e} ms/batch", f"{e} img/s"]
    if "bitnn" in engines and "ort" in engines:
        head.append("bitnn vs ORT")
    if "bitnn" in engines and "torch" in engines:
        head.append("bitnn vs torch")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [str(r["f"]), str(r["batch"]), str(r["threads"])]
        for e in engines:
            ms = r[e][key]
            row += [f"{ms:.1f}", f"{r['batch'] * 1000.0 / ms:.1f}"]
        if "bitnn" in engines and "ort" in engines:
            row.append(f"{r['ort'][key] / r['bitnn'][key]:.2f}x")
        if "bitnn" in engines and "torch" in engines:
            row.append(f"{r['torch'][key] / r['bitnn'][key]:.2f}x")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def fmt_sizes(sizes) -> str:
    lines = ["| f | parameters | .bnb bytes | fp32 state_dict bytes | fp32 / .bnb |",
             "|---|---|---|---|---|"]
    for s in sizes:
        ratio = s["fp32_bytes"] / s["bnb_bytes"] if s["bnb_bytes"] else float("nan")
        lines.append(f"| {s['f']} | {s['params']:,} | {s['bnb_bytes'] or 0:,} | "
                     f"{s['fp32_bytes']:,} | {ratio:.1f}x |")
    return "\n".join(lines)


# ----------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="f=3, batch 1, threads 1 and 2, few repeats (under half a minute)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, metavar="S",
                    help="input height = width (default 256); several values run each in turn")
    ap.add_argument("--kernel-sizes", type=int, nargs="+", default=None, metavar="F",
                    help="filter sizes f (default 3 5; --quick: 3)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 32; --quick: 1")
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="default 1 2")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
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
    return ap.parse_args(argv)


def run(args) -> dict:
    quick = args.quick
    sizes = args.sizes or [256]
    fs = args.kernel_sizes or ([3] if quick else [3, 5])
    batches = args.batches or ([1] if quick else [1, 32])
    threads = args.threads or [1, 2]
    engines = [e for e in ENGINES if e in args.engines]
    reps1 = args.repeats or (5 if quick else 15)
    budget = args.budget or (3.0 if quick else 12.0)

    import torch

    t0 = time.time()
    report = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": machine_info(), "loadavg_start": list(os.getloadavg()),
              "config": {"channels": CHANNELS, "fc_units": FC_UNITS, "classes": NUM_CLASSES,
                         "sizes": sizes, "kernel_sizes": fs, "batches": batches,
                         "threads": threads, "engines": engines, "seed": args.seed},
              "sizes": [], "parity": [], "results": []}
    m = report["machine"]
    print(f"# BCVNN benchmark  {report['date']}")
    print(f"cpu: {m['cpu']} ({m['cpus']} logical CPUs)  torch {m.get('torch')}  "
          f"onnxruntime {m.get('onnxruntime')}")
    print(f"bitnn.system_info(): {m['bitnn']}")
    print("load average at start: " + " ".join(f"{v:.2f}" for v in report["loadavg_start"]))
    sys.stdout.flush()

    with tempfile.TemporaryDirectory(prefix="bench_classifier_") as workdir:
        for size in sizes:
            for f in fs:
                eng = Engines(build_binary_cnn(f, args.seed), size, f"bcvnn_f{f}", workdir, engines)
                report["sizes"].append({"f": f, "size": size, "params": eng.params,
                                        "bnb_bytes": eng.bnb_bytes, "fp32_bytes": eng.fp32_bytes})
                if not args.no_parity:
                    p = parity(eng, seed=args.seed)
                    p.update(f=f, size=size)
                    report["parity"].append(p)
                    diffs = ", ".join(f"{k} {v:.2e}" for k, v in p["max_abs_diff"].items())
                    print(f"\nparity f={f} {size}x{size} (4 images, vs BinaryCNN.forward): "
                          f"argmax equal: {p['argmax_equal']} {p['argmax']['BinaryCNN.forward']}; "
                          f"top-5 equal: {p['top5_equal']}; "
                          f"max |prob diff|: {diffs}; max prob {p['max_prob']:.3f}; "
                          f"max |prob diff| between the images: {p['spread_between_images']:.2e}")
                    sys.stdout.flush()
                for b in batches:
                    x = np.random.default_rng(args.seed + 1).standard_normal(
                        (b, 3, size, size)).astype(np.float32)
                    reps = reps1 if b == 1 else max(3, reps1 // 3)
                    warm = 2 if b == 1 else 1
                    for t in threads:
                        row = {"f": f, "size": size, "batch": b, "threads": t}
                        fns = {e: eng.runner(e, t, x) for e in engines}
                        if "torch" in engines:
                            torch.set_num_threads(t)
                        times = time_interleaved(fns, warm, reps, budget)
                        for e in engines:
                            ts = times[e]
                            row[e] = {"median_ms": 1000 * statistics.median(ts),
                                      # CPU time of the calling thread: with one
                                      # thread every engine computes on it
                                      "cpu_median_ms": 1000 * statistics.median(times["_cpu"][e]),
                                      "min_ms": 1000 * min(ts), "repeats": len(ts),
                                      "images_per_s": b / statistics.median(ts)}
                        report["results"].append(row)
                        cells = "  ".join(f"{e} {row[e]['median_ms']:8.1f} ms" for e in engines)
                        print(f"f={f} {size}x{size} batch {b:2d} threads {t}: {cells}  "
                              f"(load {os.getloadavg()[0]:.2f})")
                        sys.stdout.flush()
                eng.close()
    torch.set_num_threads(max(threads))
    report["loadavg_end"] = list(os.getloadavg())
    report["wall_s"] = time.time() - t0

    print("\n## Images/s and ms per batch (median)\n")
    for size in sizes:
        if len(sizes) > 1:
            print(f"input {size}x{size}x3\n")
        print(fmt_table([r for r in report["results"] if r["size"] == size], engines))
        print()
    print("`bitnn vs X` = X's time / bitnn's time (above 1: bitnn is faster).\n")
    one = [r for r in report["results"] if r["threads"] == 1]
    if one:
        print("## One thread: CPU time of the calling thread per batch (median ms)\n")
        print("With one thread each engine computes on the calling thread, so this is "
              "what a batch costs when it has a core (less sensitive to other load).\n")
        print(fmt_table(one, engines, key="cpu_median_ms"))
        print()
    print("## Model size\n")
    print(fmt_sizes([s for s in report["sizes"] if s["size"] == sizes[0]]))
    b1 = [r for r in report["results"] if r["batch"] == 1 and r["threads"] == 1]
    if b1 and "bitnn" in engines and "ort" in engines:
        print("\n## Target: batch-1 latency on one thread no worse than ONNX Runtime fp32\n")
        for r in b1:
            ok = r["bitnn"]["median_ms"] <= r["ort"]["median_ms"]
            print(f"- f={r['f']} {r['size']}x{r['size']}: bitnn {r['bitnn']['median_ms']:.1f} ms, "
                  f"ORT {r['ort']['median_ms']:.1f} ms (CPU time {r['bitnn']['cpu_median_ms']:.1f}"
                  f" vs {r['ort']['cpu_median_ms']:.1f} ms) -> {'met' if ok else 'NOT met'}")
    s3 = [s for s in report["sizes"] if s["f"] == 3 and s["bnb_bytes"]]
    for s in s3:
        ok = s["bnb_bytes"] * 30 <= s["fp32_bytes"]
        print(f"- size target (.bnb <= fp32/30, f=3, {s['size']}): "
              f"{s['fp32_bytes'] / s['bnb_bytes']:.1f}x -> {'met' if ok else 'NOT met'}")
    print("\nload average at end: " + " ".join(f"{v:.2f}" for v in report["loadavg_end"])
          + f"; wall time {report['wall_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
        print(f"wrote {args.json}")
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.profile:
        engines = [e for e in ENGINES if e in args.engines]
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        rows = profile(args, args.kernel_sizes or [3], args.sizes or [256], args.threads or [1],
                       engines)
        print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                           "machine": machine_info(), "layers": rows}, fh, indent=1, default=str)
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
