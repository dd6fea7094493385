#!/usr/bin/env python3
"""Speed of the binary linear op, per kernel and numeric mode, next to numpy
fp32 in the same run, and the share of the hardware limit each reaches.

For each layer shape of the paper's models (``in x out``: x is ``(M, in)``, W
is ``(out, in)``) and M = 1 and 64, it times

- ``bitnn._core.binary_gemm`` (raw ``x @ W_b.T + b_b``) and
- ``bitnn._core.linear`` (the fused op: GEMM, Normalize, activation),

for every kernel this CPU runs, in both precisions (``fp32``: exact;
``int8``: activations quantized per row, integer sums; the int8 kernel a
kernel name runs is printed, e.g. avx512 -> avx512-gfni), and numpy's fp32
``x @ W.T`` of the same shape with numpy (its BLAS) limited to the same
number of threads. The rate is in binary weights per second,
``M * in * out / seconds`` (for numpy: weights used per second, the same
count), and the ratio is ``numpy seconds / bitnn seconds``. Each figure is the
median over several timed repeats after warm-up calls; a repeat loops the
call enough times to last a few milliseconds.

Share of the hardware limit, measured rather than assumed (labelled as such
in the output):

- in-cache peak: each kernel and precision on ``PEAK_SHAPE`` (in 2048 x out
  1024, M = 1: 256 KB of weights, which stay in L2 across repeats), the rate
  the kernel's own instruction mix reaches when memory does not limit it.
  Each shape's rate is then given as a share of it. The instruction mix
  of the AVX-512 int8 kernels per 64 weights of a row (vnni: a mask load and
  a masked byte move; gfni: a broadcast load and a gf2p8affineqb; then one
  vpdpbusd) is described in csrc/kernels/kernel_q8_avx512.h; the int8 kernel a
  kernel name runs is printed with the results. The fixed cost of one call
  (argument checks, output allocation, thread hand-off), measured on a 64 x 16
  layer, is printed next to it: it is part of every call, the peak's too.
- memory: the weight bytes a call reads (``out * ceil(in / 64) * 8``) per
  second, against the one-thread copy bandwidth of this machine (numpy
  ``copyto`` of a 256 MB array, counted as bytes read + bytes written).

    python3 tools/bench_kernels.py                  # full run, one thread
    python3 tools/bench_kernels.py --quick          # the issue's two shapes, ~1 minute
    python3 tools/bench_kernels.py --threads 2 --json out.json

Machine notes: OpenBLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE; for a
numpy figure that reflects this CPU unset both in the benchmark command, e.g.
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 tools/bench_kernels.py``.
The values seen are printed with the results.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from functools import partial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (ROOT, os.path.join(ROOT, "tools")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# common imports no numpy (limit_blas_threads must run before numpy is imported)
from common import cpu_identity, fmt_load, load_average, now, verdict, write_json  # noqa: E402

# (in, out) of the paper's layers: BLM small (emb 768, ff 1536, MLP head
# 4096-2048, vocab 30522).
SHAPES = [(768, 768), (768, 1536), (1536, 768), (768, 4096), (4096, 2048), (2048, 30522)]
BATCHES = (1, 64)
PRECISIONS = ("fp32", "int8")
# Issue 7 targets: M = 1, the default kernel, fused op, one thread.
TARGET_SHAPES = [(2048, 30522), (768, 4096)]
TARGET_RATE = {"int8": 200e9, "fp32": 120e9}  # binary weights / s
TARGET_PEAK_SHARE = {"int8": 0.85}  # of the in-cache peak ("the limit the kernel's mix allows")
PEAK_SHAPE = (2048, 1024)  # (in, out): 256 KB of weights, L2-resident
CALL_SHAPE = (64, 16)  # a layer so small that a call is nearly all fixed cost
# bitnn's ops are timed REPEAT calls at a time from C (binary_gemm's repeat=):
# a loaded model calls its layers from C, so the rates are those of the op
# itself; what one call from Python adds is the "call us" column (repeat 1).
REPEAT = 8
COPY_BYTES = 256 << 20
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _csv(kind, text):
    try:
        vals = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("empty list")
    return vals


def _shape(text):
    parts = text.lower().split("x")
    if len(parts) != 2:
        raise ValueError(text)
    k_in, n_out = int(parts[0]), int(parts[1])
    if k_in < 1 or n_out < 1:
        raise ValueError(text)
    return (k_in, n_out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="only the issue's two shapes (2048x30522, 768x4096), fewer repeats "
                        "and shorter timing windows")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for bitnn and for numpy's BLAS (default 1)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--kernels", type=partial(_csv, str),
                   help="comma-separated kernels (default: all supported)")
    p.add_argument("--precisions", type=partial(_csv, str), default=list(PRECISIONS),
                   help="comma-separated numeric modes (default fp32,int8)")
    p.add_argument("--shapes", type=partial(_csv, _shape),
                   help="comma-separated INxOUT shapes (default: the paper's; --quick: the "
                        "issue's two)")
    p.add_argument("--batches", type=partial(_csv, int), default=list(BATCHES),
                   help="comma-separated M values (default 1,64)")
    p.add_argument("--ref-limit", type=float, default=1e8,
                   help="skip the scalar ref kernel above this many M*in*out weights per "
                        "call (default 1e8; it runs at about 0.1 G/s)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    if min(args.batches) < 1:
        p.error("--batches values must be at least 1")
    bad = [v for v in args.precisions if v not in PRECISIONS]
    if bad:
        p.error(f"unknown precision {', '.join(bad)}; known: {', '.join(PRECISIONS)}")
    if args.shapes is None:
        args.shapes = list(TARGET_SHAPES if args.quick else SHAPES)
    return args


def limit_blas_threads(n: int):
    """Must run before numpy is imported: BLAS reads these once at load."""
    if "numpy" in sys.modules:
        print("warning: numpy was imported before its BLAS thread count could be set; "
              "the numpy figures may use more threads", file=sys.stderr)
    for var in BLAS_ENV:
        os.environ[var] = str(n)


# ------------------------------------------------------------------ machine

def blas_info(np) -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy: no dict mode
        return "unknown"


# ------------------------------------------------------------------- timing

def time_call(fn, quick: bool, cpu_clock, per: int = 1) -> dict:
    """Seconds per call: median and min wall-clock time over repeats after
    warm-up calls, and the median CPU time of the calling thread (cpu_clock,
    or None when other threads do part of the work).

    Each repeat loops fn for about `window` seconds so that short calls are
    timed over many iterations; calls longer than a second get 3 repeats.
    The CPU time is what the call costs when it has a core to itself: on a
    machine shared with other jobs the wall time also counts the time the
    scheduler gave the core to someone else.
    """
    t0 = time.perf_counter()
    fn()  # warm-up: page in, allocate, spin up the pool
    once = max(time.perf_counter() - t0, 1e-7)
    if once < 1.0:
        fn()
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
    window = 0.01 if quick else 0.05          # seconds per repeat
    inner = max(1, int(window / once))
    repeats = 3 if (quick or once > 1.0) else 9
    wall, cpu = [], []
    for _ in range(repeats):
        c0 = cpu_clock() if cpu_clock else 0.0
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        wall.append((time.perf_counter() - t0) / inner)
        if cpu_clock:
            cpu.append((cpu_clock() - c0) / inner)
    # fn may run the op `per` times from C (core's repeat=): seconds per op
    return {"s": statistics.median(wall) / per, "min_s": min(wall) / per,
            "cpu_s": statistics.median(cpu) / per if cpu else None}


def copy_bandwidth(np, quick: bool) -> dict:
    """One-thread memory bandwidth: numpy copyto of a COPY_BYTES array into
    another, bytes read + bytes written per second (median of repeats), from
    the wall clock and from the calling thread's CPU time."""
    src = np.ones(COPY_BYTES, dtype=np.uint8)
    dst = np.empty_like(src)
    dst.fill(0)  # both touched: no page faults in the timed copies
    wall, cpu = [], []
    for _ in range(3 if quick else 7):
        c0, t0 = time.thread_time(), time.perf_counter()
        np.copyto(dst, src)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    out = {"bytes": COPY_BYTES, "what": "numpy copyto of a 256 MiB array, "
                                        "(read + written bytes) / s, one thread"}
    for clock, ts in (("s", wall), ("cpu_s", cpu)):
        out[clock] = statistics.median(ts)
        out["bytes_per_" + clock] = 2 * COPY_BYTES / out[clock] if out[clock] > 0 else None
    return out


# -------------------------------------------------------------------- bench

class Layer:
    """Random packed weights and bias of one (in, out) shape, and inputs per M."""

    def __init__(self, np, bitnn, rng, k_in: int, n_out: int):
        self.k_in, self.n_out, self._np, self._rng = k_in, n_out, np, rng
        self.w = bitnn.pack_bits(rng.integers(0, 2, (n_out, k_in), dtype=np.uint8))
        # prepared once, as a loaded model prepares its layers (docs/packing.md)
        self.pw = bitnn.PackedWeights(self.w, n_out, k_in)
        self.b = bitnn.pack_bits(rng.integers(0, 2, n_out, dtype=np.uint8))
        self.weight_bytes = self.w.nbytes
        self._w32 = None

    def x(self, M: int):
        return self._rng.standard_normal((M, self.k_in), dtype=self._np.float32)

    def w32(self):
        """A float32 weight matrix of the same shape for numpy (made on first use)."""
        if self._w32 is None:
            self._w32 = self._rng.standard_normal((self.n_out, self.k_in),
                                                  dtype=self._np.float32)
        return self._w32

    def ops(self, core, x, kernel: str, precision: str, threads: int, repeat: int = REPEAT) -> dict:
        """{"gemm": fn, "linear": fn}: no-argument calls of the two ops, each
        running the op `repeat` times from C (time_call's per=)."""
        common = {"bias": self.b, "threads": threads, "kernel": kernel, "precision": precision,
                  "repeat": repeat}
        return {"gemm": partial(core.binary_gemm, x, self.pw, self.n_out, **common),
                "linear": partial(core.linear, x, self.pw, self.n_out, activation=None, **common)}


def measure_peaks(np, bitnn, core, kernels, precisions, batches, args, cpu_clock) -> dict:
    """Per kernel, precision and M: the rate on PEAK_SHAPE (weights in cache),
    keyed "kernel/precision/M", and the fixed cost of one M = 1 call on
    CALL_SHAPE. The ref kernel obeys --ref-limit here too."""
    rng = np.random.default_rng(1)
    peak, tiny = Layer(np, bitnn, rng, *PEAK_SHAPE), Layer(np, bitnn, rng, *CALL_SHAPE)
    n_weights = PEAK_SHAPE[0] * PEAK_SHAPE[1]
    out = {}
    for M in batches:
        x = peak.x(M)
        for kern in kernels:
            if kern == "ref" and M * n_weights > args.ref_limit:
                continue
            for prec in precisions:
                cell = {}
                for op, fn in peak.ops(core, x, kern, prec, args.threads).items():
                    t = time_call(fn, args.quick, cpu_clock, per=REPEAT)
                    cell[op] = {**t, "rate_s": M * n_weights / t["s"]}
                    if t["cpu_s"]:
                        cell[op]["rate_cpu_s"] = M * n_weights / t["cpu_s"]
                if M == 1:
                    fn = tiny.ops(core, tiny.x(1), kern, prec, args.threads, repeat=1)["gemm"]
                    cell["call_s"] = time_call(fn, args.quick, cpu_clock)["s"]
                out[f"{kern}/{prec}/{M}"] = cell
    return out


def measure_row(np, core, layer: Layer, M: int, kernels, precisions, args, cpu_clock) -> dict:
    """numpy and every kernel x precision x op on one (shape, M)."""
    x, w32 = layer.x(M), layer.w32()
    row = {"in": layer.k_in, "out": layer.n_out, "M": M, "weights": M * layer.k_in * layer.n_out,
           "weight_bytes": layer.weight_bytes,
           "numpy": time_call(partial(np.matmul, x, w32.T), args.quick, cpu_clock),
           "kernels": {}}
    for kern in kernels:
        if kern == "ref" and row["weights"] > args.ref_limit:
            continue  # the scalar reference runs at ~0.1 G/s: minutes per call
        row["kernels"][kern] = {
            prec: {op: time_call(fn, args.quick, cpu_clock, per=REPEAT)
                   for op, fn in layer.ops(core, x, kern, prec, args.threads).items()}
            for prec in precisions}
    return row


def add_rates(row, peaks, bandwidth):
    """Rates (weights/s), ratios (numpy time / bitnn time), weight bytes/s and
    the shares of the in-cache peak and of the copy bandwidth, for each clock
    (against the peak and the copy timed with the same clock; the wall-clock
    copy for min_s)."""
    for clock in ("s", "min_s", "cpu_s"):
        t_np = row["numpy"][clock]
        if t_np is None:
            continue
        row["numpy"]["rate_" + clock] = row["weights"] / t_np
        for kern, by_prec in row["kernels"].items():
            for prec, ops in by_prec.items():
                for op, k in ops.items():
                    k["rate_" + clock] = row["weights"] / k[clock]
                    k["vs_numpy_" + clock] = t_np / k[clock]
                    k["weight_bytes_per_" + clock] = row["weight_bytes"] / k[clock]
                    peak = (peaks.get(f"{kern}/{prec}/{row['M']}", {}).get(op, {})
                            .get("rate_" + clock))
                    if peak:
                        k["peak_share_" + clock] = k["rate_" + clock] / peak
                    copy = bandwidth.get("bytes_per_" + clock) or bandwidth["bytes_per_s"]
                    k["bandwidth_share_" + clock] = k["weight_bytes_per_" + clock] / copy


def check_targets(results, peaks, kernel, threads) -> list:
    """Issue 7: M = 1 linear of the default kernel on one thread, each precision."""
    out = []
    if threads != 1 or kernel is None:
        return out
    for (k_in, n_out) in TARGET_SHAPES:
        for r in results:
            if (r["in"], r["out"], r["M"]) != (k_in, n_out, 1) or kernel not in r["kernels"]:
                continue
            for prec, ops in r["kernels"][kernel].items():
                lin = ops["linear"]
                for clock in ("s", "cpu_s"):
                    if lin[clock] is None:
                        continue
                    t = {"shape": f"{k_in}x{n_out}", "M": 1, "kernel": kernel, "precision": prec,
                         "op": "linear", "clock": "wall" if clock == "s" else "cpu",
                         "rate": lin["rate_" + clock], "rate_goal": TARGET_RATE[prec],
                         "rate_ok": lin["rate_" + clock] >= TARGET_RATE[prec]}
                    share = lin.get("peak_share_" + clock)
                    if prec in TARGET_PEAK_SHARE and share is not None:
                        t.update(peak_share=share, peak_share_goal=TARGET_PEAK_SHARE[prec],
                                 peak_share_ok=share >= TARGET_PEAK_SHARE[prec])
                    out.append(t)
    return out


def run(args):
    limit_blas_threads(args.threads)
    import numpy as np

    import bitnn
    from bitnn import _core

    info = bitnn.system_info()
    kernels = args.kernels or list(info["kernels_supported"])
    unknown = [k for k in kernels if k not in info["kernels_supported"]]
    if unknown:
        raise SystemExit(f"bench_kernels: kernel {', '.join(unknown)} cannot run here; "
                         f"supported: {', '.join(info['kernels_supported'])}")
    precisions = args.precisions
    # With one thread everything runs on the calling thread, so its CPU clock
    # measures the whole call.
    cpu_clock = time.thread_time if args.threads == 1 else None
    started = now()
    load_before = load_average()
    ident = cpu_identity()
    print(f"cpu: {ident['summary']}")
    print("int8 kernels: " + ", ".join(f"{k} -> {_core.int8_kernel(k)}" for k in kernels))
    sys.stdout.flush()

    bandwidth = copy_bandwidth(np, args.quick)
    peaks = measure_peaks(np, bitnn, _core, kernels, precisions, args.batches, args,
                          cpu_clock)
    rng = np.random.default_rng(0)
    results = []
    for (k_in, n_out) in args.shapes:
        layer = Layer(np, bitnn, rng, k_in, n_out)
        for M in args.batches:
            row = measure_row(np, _core, layer, M, kernels, precisions, args, cpu_clock)
            add_rates(row, peaks, bandwidth)
            results.append(row)
            print_row(row, kernels, precisions, "s", header=len(results) == 1)
        del layer

    report = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": started,
        "machine": {
            "cpu": ident["summary"],
            "cpu_identity": ident,
            "arch": platform.machine(),
            "available_cpus": info["available_cpus"],
            "kernels_supported": info["kernels_supported"],
            "int8_kernels": {k: _core.int8_kernel(k) for k in kernels},
            "cpu_features": info["cpu_features"],
            "numpy": np.__version__,
            "blas": blas_info(np),
            "env": {v: os.environ.get(v) for v in
                    BLAS_ENV + ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "threads": args.threads,
        "quick": args.quick,
        "peak_shape": {"in": PEAK_SHAPE[0], "out": PEAK_SHAPE[1], "M": 1},
        "call_shape": {"in": CALL_SHAPE[0], "out": CALL_SHAPE[1], "M": 1},
        "in_cache_peaks": peaks,
        "copy_bandwidth": bandwidth,
        "results": results,
        "targets": check_targets(results, peaks, info.get("kernel"), args.threads),
    }
    if cpu_clock:
        print("\nThe same, from the CPU time of the calling thread (what a call costs on a "
              "core of its own):\n")
        for i, row in enumerate(results):
            print_row(row, kernels, precisions, "cpu_s", header=i == 0)
    print_limits(report, kernels, precisions)
    print_summary(report)
    if args.json:
        print()
        write_json(args.json, report)
    return report


# ------------------------------------------------------------------- output

def g(v):
    return f"{v / 1e9:.2f}"


def pct(v):
    return "-" if v is None else f"{100 * v:.0f}%"


def print_row(row, kernels, precisions, clock, header):
    if header:
        print("| in x out | M | kernel | precision | binary_gemm G/s | linear G/s | "
              "numpy fp32 G/s | linear / numpy | weight GB/s (linear) | "
              "linear % of in-cache peak | weight bytes % of copy bandwidth |")
        print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    np_rate = g(row["numpy"]["rate_" + clock])
    for kern in kernels:
        for prec in precisions:
            k = row["kernels"].get(kern, {}).get(prec)
            shape = f"| {row['in']}x{row['out']} | {row['M']} | {kern} | {prec} "
            if k is None:
                print(shape + f"| - | - | {np_rate} | - | - | - | - |", flush=True)
                continue
            lin = k["linear"]
            print(shape + f"| {g(k['gemm']['rate_' + clock])} | {g(lin['rate_' + clock])} "
                  f"| {np_rate} | {lin['vs_numpy_' + clock]:.1f}x "
                  f"| {lin['weight_bytes_per_' + clock] / 1e9:.2f} "
                  f"| {pct(lin.get('peak_share_' + clock))} "
                  f"| {pct(lin['bandwidth_share_' + clock])} |", flush=True)


def print_limits(report, kernels, precisions):
    bw = report["copy_bandwidth"]
    ps = report["peak_shape"]
    l3 = report["machine"]["cpu_identity"].get("L3_cache", "unknown")
    print(f"\n## Measured limits (threads: {report['threads']})\n")
    cpu_bw = (f", {bw['bytes_per_cpu_s'] / 1e9:.1f} GB/s from CPU time"
              if bw["bytes_per_cpu_s"] else "")
    print(f"memory: {bw['bytes_per_s'] / 1e9:.1f} GB/s{cpu_bw} ({bw['what']}). Repeated calls "
          f"on one shape read its weights from the last-level cache (L3: {l3}) when they fit, so "
          "their share of this bandwidth can pass 100%.")
    print(f"in-cache peak: each kernel and precision on in {ps['in']} x out {ps['out']} "
          f"({ps['in'] * ps['out'] // 8 // 1024} KB of weights, warm in cache) at the same M; "
          "the shares above are of this rate, a measured stand-in for the limit of the "
          "kernel's instruction mix. call: time of one M = 1 binary_gemm on in "
          f"{report['call_shape']['in']} x out {report['call_shape']['out']} (the fixed cost "
          "per call, included in every figure)\n")
    print("| kernel | precision | int8 kernel | M | in-cache binary_gemm G/s | "
          "in-cache linear G/s | call us |")
    print("|---|---|---|---:|---:|---:|---:|")
    for key, c in report["in_cache_peaks"].items():
        kern, prec, M = key.split("/")
        name = report["machine"]["int8_kernels"][kern] if prec == "int8" else "-"
        call = f"{1e6 * c['call_s']:.1f}" if "call_s" in c else "-"
        print(f"| {kern} | {prec} | {name} | {M} | {g(c['gemm']['rate_s'])} | "
              f"{g(c['linear']['rate_s'])} | {call} |")


def print_summary(report):
    m = report["machine"]
    print()
    print(f"date: {report['date']}")
    print(f"command: {report['command']}")
    print(f"cpu: {m['cpu']} ({m['available_cpus']} CPUs available)")
    print(f"kernels: {', '.join(m['kernels_supported'])}; threads: {report['threads']}")
    print(f"numpy {m['numpy']} ({m['blas']}); env: "
          + ", ".join(f"{k}={v}" for k, v in m["env"].items()))
    print(f"load average (1, 5, 15 min) before: {fmt_load(m['load_average_before'], ', ')}, "
          f"after: {fmt_load(m['load_average_after'], ', ')}")
    if report["targets"]:
        print("\n## Targets (issue 7: M = 1, linear, default kernel, one thread)\n")
    for t in report["targets"]:
        line = (f"- {t['shape']} M=1 {t['kernel']} {t['precision']} linear ({t['clock']} time): "
                f"{g(t['rate'])} G/s, >= {g(t['rate_goal'])}: {verdict(t['rate_ok'])}")
        if "peak_share" in t:
            line += (f"; {pct(t['peak_share'])} of the in-cache peak, >= "
                     f"{pct(t['peak_share_goal'])}: {verdict(t['peak_share_ok'])}")
        print(line)


def main(argv=None):
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
