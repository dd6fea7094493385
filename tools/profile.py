#!/usr/bin/env python3
"""Where bitnn's time goes: the per-function profile tables of BENCHMARKS.md.

    python3 tools/profile.py classifier   # BCVNN (tools/bench_classifier.py), f=3, 256x256, batch 1
    python3 tools/profile.py lm           # small decoder (tools/bench_lm.py), single-token decode
    python3 tools/profile.py all          # both
      [--threads 1] [--seconds 8] [--size 256] [--kernel-size 3] [--config small]
      [--contexts 16 200] [--workdir DIR] [--no-perf]

With ``perf`` (Linux; ``apt-get install linux-perf``) the workload runs
under ``perf record`` with sampling switched on only around the timed calls
(``perf record -D -1 --control fifo:...``: model building, export, loading
and the decoder's prefill are left out), and the table is ``perf report
--no-children --sort symbol``'s share of samples per function (functions of
at least 0.5%). Without perf (or with ``--no-perf``) it prints a coarser
profile measured by the runtime itself: per layer for the classifier (each
layer alone, as ``tools/bench_classifier.py --profile`` does, bitnn only),
and for the decoder the blocks (``forward(..., scores=False)``) against the
head and output layer.

The models are the benchmarks' own (seeded random weights, needs torch to
build and export them once; ``--workdir`` keeps the files between runs). The
CPU model, the kernel and the thread count are printed first; the timings are
CPU time of the process (``time.process_time``) per call, medians of rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file's name is also the standard library's `profile` (which cProfile
# imports): keep tools/ behind the standard library on sys.path.
if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
    sys.path.pop(0)
sys.path.insert(0, str(HERE.parent))
sys.path.append(str(HERE))

import numpy as np  # noqa: E402

from common import cpu_identity  # noqa: E402


# ---------------------------------------------------------------- workloads
def classifier_file(workdir: Path, f: int, size: int) -> Path:
    path = workdir / f"bcvnn_f{f}_{size}.bnb"
    if not path.exists():
        import bitnn
        from bench_classifier import build_binary_cnn

        bitnn.export(build_binary_cnn(f, 0), path, input_shape=(3, size, size), name=path.stem)
    return path


def lm_file(workdir: Path, config: str) -> Path:
    path = workdir / f"lm_{config}.bnb"
    if not path.exists():
        import bitnn
        from bench_lm import CONFIGS, build_binary_lm

        bitnn.export(build_binary_lm(CONFIGS[config], 0), path, name=path.stem)
    return path


class Recorder:
    """Switches perf sampling on and off through its control fifo (no-op without)."""

    def __init__(self):
        ctl, ack = os.environ.get("PROFILE_PERF_CTL"), os.environ.get("PROFILE_PERF_ACK")
        self.ctl = open(ctl, "w") if ctl else None
        self.ack = open(ack) if ack else None

    def _send(self, cmd):
        if self.ctl:
            self.ctl.write(cmd + "\n")
            self.ctl.flush()
            self.ack.readline()

    def on(self):
        self._send("enable")

    def off(self):
        self._send("disable")


def timed(fn, seconds: float) -> list:
    """CPU seconds per call of fn, called for about `seconds` of wall time (at least 5 calls)."""
    fn()  # warm-up
    out, t_end = [], time.perf_counter() + seconds
    while len(out) < 5 or time.perf_counter() < t_end:
        c0 = time.process_time()
        fn()
        out.append(time.process_time() - c0)
    return out


def work_classifier(args, rec: Recorder) -> dict:
    import bitnn

    path = classifier_file(Path(args.workdir), args.kernel_size, args.size)
    x = np.random.default_rng(0).standard_normal((1, args.size, args.size, 3)).astype(np.float32)
    with bitnn.load(path, threads=args.threads, precision=args.precision) as model:
        graph = model._graph  # NHWC float32 straight into the C graph: no layout conversion
        graph.forward(x, threads=args.threads)
        rec.on()
        times = timed(lambda: graph.forward(x, threads=args.threads), args.seconds)
        rec.off()
    return {"what": f"BCVNN f={args.kernel_size} {args.size}x{args.size} batch 1",
            "ms_per_call": 1000 * statistics.median(times), "calls": len(times)}


def work_lm(args, rec: Recorder, ctx: int) -> dict:
    from bitnn import _core

    path = lm_file(Path(args.workdir), args.config)
    f = _core.BnbFile(str(path))
    g = _core.LMGraph(f)
    g.precision = args.precision
    vocab, max_len = g.config["vocab_size"], g.config["max_len"]
    steps = min(32, max_len - ctx)
    ids = np.random.default_rng(ctx).integers(0, vocab, ctx + steps)
    state = g.new_state(max_len)
    times = []
    t_end = time.perf_counter() + args.seconds
    while len(times) < 3 or time.perf_counter() < t_end:
        state.reset()
        state.forward(ids[:ctx], scores=False, threads=args.threads)  # prefill: not recorded
        rec.on()
        c0 = time.process_time()
        for i in range(ctx, ctx + steps):
            state.forward(ids[i:i + 1], threads=args.threads)
        times.append((time.process_time() - c0) / steps)
        rec.off()
    return {"what": f"{args.config} decoder, one token at context {ctx}..{ctx + steps - 1}",
            "ms_per_call": 1000 * statistics.median(times), "calls": len(times) * steps}


def child(args) -> int:
    """Run one workload (under perf when PROFILE_PERF_CTL is set); print its JSON summary."""
    rec = Recorder()
    res = work_classifier(args, rec) if args.what == "classifier" else work_lm(args, rec, args.ctx)
    print("PROFILE_RESULT " + json.dumps(res))
    return 0


# ---------------------------------------------------------------- perf
def perf_usable() -> bool:
    if not shutil.which("perf"):
        return False
    p = subprocess.run(["perf", "record", "-q", "-o", "/dev/null", "--", "true"],
                       capture_output=True, text=True)
    return p.returncode == 0


def perf_profile(args, what: str, ctx: int | None) -> tuple[dict, list]:
    """(workload summary, [(share %, symbol, dso)]) of one workload under perf record."""
    with tempfile.TemporaryDirectory(prefix="bitnn-profile-") as tmp:
        ctl, ack, data = f"{tmp}/ctl", f"{tmp}/ack", f"{tmp}/perf.data"
        os.mkfifo(ctl)
        os.mkfifo(ack)
        cmd = [sys.executable, __file__, "_child", what, "--threads", str(args.threads),
               "--seconds", str(args.seconds), "--size", str(args.size),
               "--kernel-size", str(args.kernel_size), "--config", args.config,
               "--workdir", args.workdir, "--ctx", str(ctx or 0), "--precision", args.precision]
        env = dict(os.environ, PROFILE_PERF_CTL=ctl, PROFILE_PERF_ACK=ack)
        p = subprocess.run(["perf", "record", "-q", "-F", "999", "-D", "-1", "--control",
                            f"fifo:{ctl},{ack}", "-o", data, "--", *cmd],
                           env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"profile: perf record failed:\n{p.stderr[-2000:]}")
        summary = next(json.loads(line.split(" ", 1)[1]) for line in p.stdout.splitlines()
                       if line.startswith("PROFILE_RESULT "))
        rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                              "--sort", "dso,symbol", "--percent-limit", "0.5"],
                             capture_output=True, text=True)
    rows = []  # lines: "  60.40%  <dso>  [.] <symbol>  ..."
    for line in rep.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].endswith("%") and parts[2] in ("[.]", "[k]"):
            rows.append((float(parts[0][:-1]), parts[3], parts[1]))
    return summary, rows


def print_perf_table(columns: list) -> None:
    """columns: [(heading, summary, rows)]: one share column per workload."""
    symbols = []
    for _, _, rows in columns:
        for _, sym, _ in rows:
            if sym not in symbols:
                symbols.append(sym)
    print("| function | " + " | ".join(f"{h} ({s['ms_per_call']:.2f} ms CPU/call)"
                                        for h, s, _ in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for sym in symbols:
        cells = []
        for _, _, rows in columns:
            share = next((r[0] for r in rows if r[1] == sym), None)
            cells.append(f"{share:.1f}%" if share is not None else "<0.5%")
        dso = next(r[2] for _, _, rows in columns for r in rows if r[1] == sym)
        where = "" if dso.startswith("_core") else f" ({dso})"
        print(f"| `{sym}`{where} | " + " | ".join(cells) + " |")


# ---------------------------------------------------------------- without perf
def runtime_classifier_layers(args) -> None:
    """Each layer alone (followed by GAP + a 2-unit linear layer), bitnn only."""
    import bitnn
    from bench_classifier import layer_models

    print("| layer | ms CPU |\n|---|---:|")
    total = 0.0
    for i, (name, seq, cin, h) in enumerate(layer_models(args.kernel_size, args.size, 0)):
        path = Path(args.workdir) / f"layer{i}_f{args.kernel_size}_{args.size}.bnb"
        if not path.exists():
            bitnn.export(seq, path, input_shape=(cin, h, h))
        x = np.random.default_rng(i).standard_normal((1, h, h, cin)).astype(np.float32)
        with bitnn.load(path, threads=args.threads, precision=args.precision) as model:
            forward = partial(model._graph.forward, x, threads=args.threads)
            ms = 1000 * statistics.median(timed(forward, args.seconds / 8))
        total += ms
        print(f"| {name} | {ms:.2f} |")
    print(f"| sum | {total:.1f} |")


def _next_token_cpu_s(st, ids, ctx: int, scores: bool, threads: int) -> float:
    """CPU seconds of one token's forward after a prefill of ctx tokens (not timed)."""
    st.reset()
    st.forward(ids[:ctx], scores=False, threads=threads)
    c0 = time.process_time()
    st.forward(ids[ctx:ctx + 1], scores=scores, threads=threads)
    return time.process_time() - c0


def runtime_lm_parts(args) -> None:
    from bitnn import _core

    f = _core.BnbFile(str(lm_file(Path(args.workdir), args.config)))
    g = _core.LMGraph(f)
    g.precision = args.precision
    print("| context | blocks only (ms CPU/token) | whole token (ms CPU/token) | head + output |")
    print("|---:|---:|---:|---:|")
    for ctx in args.contexts:
        ids = np.random.default_rng(ctx).integers(0, g.config["vocab_size"], ctx + 1)
        res = {}
        for scores in (False, True):
            step = partial(_next_token_cpu_s, g.new_state(), ids, ctx, scores, args.threads)
            step()
            vals, t_end = [], time.perf_counter() + args.seconds / 4
            while len(vals) < 5 or time.perf_counter() < t_end:
                vals.append(step())
            res[scores] = 1000 * statistics.median(vals)
        print(f"| {ctx} | {res[False]:.2f} | {res[True]:.2f} | {res[True] - res[False]:.2f} |")


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["classifier", "lm", "all", "_child"])
    ap.add_argument("child_what", nargs="?", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                    help="numeric mode of the binary layers")
    ap.add_argument("--seconds", type=float, default=8.0, help="recorded seconds per workload")
    ap.add_argument("--size", type=int, default=256, help="classifier input size (16..1024)")
    ap.add_argument("--kernel-size", type=int, default=3, choices=[3, 5])
    ap.add_argument("--config", default="small", choices=["small", "large"])
    ap.add_argument("--contexts", type=int, nargs="+", default=[16, 200])
    ap.add_argument("--ctx", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help="keep the model files here between runs")
    ap.add_argument("--no-perf", action="store_true", help="the runtime's own timings only")
    args = ap.parse_args(argv)
    if not 16 <= args.size <= 1024:
        ap.error("--size must be from 16 to 1024 (four 2x2 max-pools)")
    if args.what == "_child":
        args.what = args.child_what
        return child(args)

    import bitnn
    from bitnn import _core

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bitnn-profile-models-")
        args.workdir = tmp.name
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    use_perf = not args.no_perf and perf_usable()
    print(f"CPU: {cpu_identity()['summary']}")
    profiler = "perf record (share of samples)" if use_perf else "runtime timings (no perf)"
    print(f"bitnn {bitnn.__version__}, kernel {_core.default_kernel()}, threads {args.threads}, "
          f"profiler: {profiler}")
    whats = ["classifier", "lm"] if args.what == "all" else [args.what]
    for what in whats:
        if what == "classifier":
            print(f"\n## BCVNN f={args.kernel_size}, {args.size}x{args.size}x3, batch 1\n")
            if use_perf:
                summary, rows = perf_profile(args, "classifier", None)
                print_perf_table([("classifier", summary, rows)])
            else:
                runtime_classifier_layers(args)
        else:
            print(f"\n## {args.config} decoder, single-token decode (prefill not recorded)\n")
            if use_perf:
                cols = []
                for ctx in args.contexts:
                    summary, rows = perf_profile(args, "lm", ctx)
                    cols.append((f"ctx {ctx}", summary, rows))
                print_perf_table(cols)
            else:
                runtime_lm_parts(args)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
