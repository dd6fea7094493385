#!/usr/bin/env python3
"""Speed of the binary linear op, per kernel, next to numpy fp32 in the same run.

For each layer shape of the paper's models (``in x out``: x is ``(M, in)``, W
is ``(out, in)``) and M = 1 and 64, it times

- ``bitnn._core.binary_gemm`` (raw ``x @ W_b.T + b_b``) and
- ``bitnn._core.linear`` (the fused op: GEMM, Normalize, activation),

for every kernel this CPU runs, and numpy's fp32 ``x @ W.T`` of the same shape
with numpy (its BLAS) limited to the same number of threads. The rate is in
binary weights per second, ``M * in * out / seconds`` (for numpy: weights used
per second, the same count), and the ratio is ``numpy seconds / bitnn seconds``.
Each figure is the median over several timed repeats after warm-up calls;
a repeat loops the call enough times to last a few milliseconds.

    python3 tools/bench_kernels.py                  # full run, one thread
    python3 tools/bench_kernels.py --quick          # fewer repeats, ~1 minute
    python3 tools/bench_kernels.py --threads 2 --json out.json

Machine notes: OpenBLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE; for a
numpy figure that reflects this CPU unset both in the benchmark command, e.g.
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 tools/bench_kernels.py``.
The values seen are printed with the results.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from functools import partial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (in, out) of the paper's layers: BLM small (emb 768, ff 1536, MLP head
# 4096-2048, vocab 30522).
SHAPES = [(768, 768), (768, 1536), (1536, 768), (768, 4096), (4096, 2048), (2048, 30522)]
BATCHES = (1, 64)
# Targets of issue "Core": M = 1, avx512, fused op, one thread.
TARGET_SHAPES = [(2048, 30522), (768, 4096)]
TARGET_RATE = 40e9
TARGET_RATIO = 25.0
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats and shorter timing windows")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for bitnn and for numpy's BLAS (default 1)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--kernels", help="comma-separated kernels (default: all supported)")
    p.add_argument("--shapes", help="comma-separated INxOUT shapes (default: the paper's)")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)),
                   help="comma-separated M values (default 1,64)")
    p.add_argument("--ref-limit", type=float, default=1e8,
                   help="skip the scalar ref kernel above this many M*in*out weights per "
                        "call (default 1e8; it runs at about 0.1 G/s)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def limit_blas_threads(n: int):
    """Must run before numpy is imported: BLAS reads these once at load."""
    if "numpy" in sys.modules:
        print("warning: numpy was imported before its BLAS thread count could be set; "
              "the numpy figures may use more threads", file=sys.stderr)
    for var in BLAS_ENV:
        os.environ[var] = str(n)


# ------------------------------------------------------------------ machine

def cpu_model() -> str:
    """Model name from /proc/cpuinfo, with x86 family/model (the name can be vague)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # first processor only
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def load_average():
    try:
        return os.getloadavg()
    except OSError:
        return None


def blas_info(np) -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy: no dict mode
        return "unknown"


# ------------------------------------------------------------------- timing

def time_call(fn, quick: bool, cpu_clock) -> dict:
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
    return {"s": statistics.median(wall), "min_s": min(wall),
            "cpu_s": statistics.median(cpu) if cpu else None}


# -------------------------------------------------------------------- bench

def run(args):
    limit_blas_threads(args.threads)
    import numpy as np

    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import bitnn
    from bitnn import _core

    info = bitnn.system_info()
    kernels = args.kernels.split(",") if args.kernels else list(info["kernels_supported"])
    shapes = SHAPES if not args.shapes else [
        tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
    batches = [int(v) for v in args.batches.split(",")]
    # With one thread everything runs on the calling thread, so its CPU clock
    # measures the whole call.
    cpu_clock = time.thread_time if args.threads == 1 else None
    started = _dt.datetime.now().astimezone()
    load_before = load_average()

    rng = np.random.default_rng(0)
    results = []
    for (k_in, n_out) in shapes:
        bits = rng.integers(0, 2, (n_out, k_in), dtype=np.uint8)
        w = bitnn.pack_bits(bits)
        b = bitnn.pack_bits(rng.integers(0, 2, n_out, dtype=np.uint8))
        del bits
        w32 = rng.standard_normal((n_out, k_in), dtype=np.float32)
        for M in batches:
            x = rng.standard_normal((M, k_in), dtype=np.float32)
            row = {"in": k_in, "out": n_out, "M": M, "weights": M * k_in * n_out,
                   "numpy": time_call(partial(np.matmul, x, w32.T), args.quick, cpu_clock),
                   "kernels": {}}
            for kern in kernels:
                if kern == "ref" and row["weights"] > args.ref_limit:
                    continue  # the scalar reference runs at ~0.1 G/s: minutes per call
                row["kernels"][kern] = {
                    "gemm": time_call(partial(_core.binary_gemm, x, w, n_out, bias=b,
                                              threads=args.threads, kernel=kern),
                                      args.quick, cpu_clock),
                    "linear": time_call(partial(_core.linear, x, w, n_out, bias=b,
                                                activation=None, threads=args.threads,
                                                kernel=kern),
                                        args.quick, cpu_clock),
                }
            add_rates(row)
            results.append(row)
            print_row(row, kernels, "s", header=len(results) == 1)

    report = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": started.isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "arch": platform.machine(),
            "available_cpus": info["available_cpus"],
            "kernels_supported": info["kernels_supported"],
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
        "results": results,
        "targets": check_targets(results, args.threads),
    }
    if cpu_clock:
        print("\nThe same, from the CPU time of the calling thread (what a call costs on a "
              "core of its own):\n")
        for i, row in enumerate(results):
            print_row(row, kernels, "cpu_s", header=i == 0)
    print_summary(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.json}")
    return report


def add_rates(row):
    """Rates (weights/s) and ratios (numpy time / bitnn time) for each clock."""
    for clock in ("s", "min_s", "cpu_s"):
        t_np = row["numpy"][clock]
        if t_np is None:
            continue
        row["numpy"]["rate_" + clock] = row["weights"] / t_np
        for k in row["kernels"].values():
            for op in ("gemm", "linear"):
                k[op]["rate_" + clock] = row["weights"] / k[op][clock]
                k[op]["vs_numpy_" + clock] = t_np / k[op][clock]


def check_targets(results, threads):
    out = []
    if threads != 1:
        return out
    for (k_in, n_out) in TARGET_SHAPES:
        for r in results:
            if (r["in"], r["out"], r["M"]) == (k_in, n_out, 1) and "avx512" in r["kernels"]:
                lin = r["kernels"]["avx512"]["linear"]
                for clock in ("s", "cpu_s"):
                    if lin[clock] is None:
                        continue
                    rate, ratio = lin["rate_" + clock], lin["vs_numpy_" + clock]
                    out.append({
                        "shape": f"{k_in}x{n_out}", "M": 1, "kernel": "avx512", "op": "linear",
                        "clock": "wall" if clock == "s" else "cpu", "rate": rate,
                        "vs_numpy": ratio, "rate_ok": rate >= TARGET_RATE,
                        "ratio_ok": ratio >= TARGET_RATIO,
                    })
    return out


# ------------------------------------------------------------------- output

def g(v):
    return f"{v / 1e9:.2f}"


def print_row(row, kernels, clock, header):
    if header:
        print("| in x out | M | kernel | binary_gemm G/s | linear G/s | numpy fp32 G/s "
              "| gemm / numpy | linear / numpy |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
    np_rate = g(row["numpy"]["rate_" + clock])
    for kern in kernels:
        k = row["kernels"].get(kern)
        shape = f"| {row['in']}x{row['out']} | {row['M']} | {kern} "
        if k is None:
            print(shape + f"| - | - | {np_rate} | - | - |", flush=True)
            continue
        print(shape + f"| {g(k['gemm']['rate_' + clock])} | {g(k['linear']['rate_' + clock])} "
              f"| {np_rate} | {k['gemm']['vs_numpy_' + clock]:.1f}x "
              f"| {k['linear']['vs_numpy_' + clock]:.1f}x |", flush=True)


def print_summary(report):
    m = report["machine"]
    print()
    print(f"date: {report['date']}")
    print(f"command: {report['command']}")
    print(f"cpu: {m['cpu']} ({m['arch']}, {m['available_cpus']} CPUs available)")
    print(f"kernels: {', '.join(m['kernels_supported'])}; threads: {report['threads']}")
    print(f"numpy {m['numpy']} ({m['blas']}); env: "
          + ", ".join(f"{k}={v}" for k, v in m["env"].items()))
    print(f"load average (1, 5, 15 min) before: {fmt_load(m['load_average_before'])}, "
          f"after: {fmt_load(m['load_average_after'])}")
    for t in report["targets"]:
        ok = t["rate_ok"] and t["ratio_ok"]
        print(f"target {t['shape']} M=1 avx512 linear ({t['clock']} time): {g(t['rate'])} G/s "
              f"(>= {TARGET_RATE / 1e9:.0f}: {'yes' if t['rate_ok'] else 'NO'}), "
              f"{t['vs_numpy']:.1f}x numpy (>= {TARGET_RATIO:.0f}: "
              f"{'yes' if t['ratio_ok'] else 'NO'}) -> {'PASS' if ok else 'FAIL'}")


def fmt_load(load):
    return "?" if load is None else ", ".join(f"{v:.2f}" for v in load)


def main(argv=None):
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
