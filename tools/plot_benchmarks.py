#!/usr/bin/env python3
"""One PNG figure of the side-by-side benchmark results, from the JSON that
the benchmark tools write with ``--json PATH``:

- ``--kernels``: ``tools.bench_kernels``. Linear kernels at M = 1: G binary
  weights/s per layer shape of bitnn fp32 and int8 with the default kernel
  (the ``linear`` op, wall-clock median) and of numpy fp32 (BLAS) for scale,
  with the issue-7 target rates as horizontal lines;
- ``--lm``: ``tools.bench_lm``. The BLM decoder: tokens/s of decode at each
  context and of the prefill for bitnn fp32 / int8, PyTorch fp32 and PyTorch
  dynamic int8 (log scale), each bar labelled with its tokens/s and its
  speed-up over PyTorch fp32 at the same thread count;
- ``--classifier``: ``tools.bench_classifier``. The BCVNN classifier: ms per
  image (a batch's median time over its size) at each batch for bitnn fp32 /
  int8, ONNX Runtime fp32 / int8 and PyTorch fp32, when the run has them.

Every number drawn is read from the files. In every panel the first thread
count is drawn as plain bars and further ones (2 threads) as hatched bars. The
figure's title names the CPU from the files (each file's when they differ).

Each input is optional. A panel whose file lacks what it needs is left out
with a note (printed, and in the figure where the panel would be); a file that
cannot be read, is not JSON or holds values of the wrong type is an error
(one line on stderr, exit status 2, no figure written). With no panel left, or
without matplotlib, the exit status is 1. matplotlib (the ``bench`` extra)
draws with the Agg backend; the figure replaces the output file only once it
is complete.

    python3 -m tools.plot_benchmarks --kernels bk.json --lm blm.json \\
        --classifier bc.json -o docs/benchmarks.png
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from numbers import Real

# One colour per engine in every panel: bitnn in blues, the peers in their own hues.
COLORS = {
    "bitnn_fp32": "#5B9BD5", "bitnn_int8": "#1F4E79",
    "torch_fp32": "#F4A261", "torch_int8": "#B5541B",
    "ort_fp32": "#7BC77E", "ort_int8": "#2E7D32",
    "numpy_fp32": "#9E9E9E",
}
LABELS = {
    "bitnn_fp32": "bitnn fp32", "bitnn_int8": "bitnn int8",
    "torch_fp32": "PyTorch fp32", "torch_int8": "PyTorch dynamic int8",
    "ort_fp32": "ORT fp32", "ort_int8": "ORT int8", "numpy_fp32": "numpy fp32",
}
LM_ENGINES = ("bitnn_fp32", "bitnn_int8", "torch_fp32", "torch_int8")
CLASSIFIER_ENGINES = ("bitnn_fp32", "bitnn_int8", "ort_fp32", "ort_int8", "torch_fp32")
HATCHES = ("", "///", "...", "xxx")  # first, second, ... thread count
TARGET_COLOR = "#C62828"
TARGET_STYLES = {"fp32": "--", "int8": "-."}


class Malformed(Exception):
    """A file that is not what a benchmark tool writes (exit status 2)."""


class Skip(Exception):
    """A panel that its file lacks the fields for (drawn as a note)."""


# ----------------------------------------------------------------- reading

def load_report(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except OSError as e:
        raise Malformed(f"{path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise Malformed(f"{path}: not a text file ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise Malformed(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: "
                        f"{e.msg})") from None
    if not isinstance(report, dict):
        raise Malformed(f"{path}: expected a JSON object at the top level, found "
                        f"{_kind(report)}")
    return report


def _kind(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    return {dict: "an object", list: "a list", str: "a string"}.get(
        type(v), "a number" if isinstance(v, Real) else type(v).__name__)


def get(obj: dict, key: str, kind: type, where: str, required: bool = True):
    """obj[key] checked to be of ``kind``. A missing key or null: Skip
    (required) or None; another type: Malformed."""
    if key not in obj:
        if required:
            raise Skip(f"no '{key}' in {where}")
        return None
    v = obj[key]
    if v is None:
        if required:
            raise Skip(f"{where}.{key} is null")
        return None
    ok = isinstance(v, kind) and (kind is bool or not isinstance(v, bool))
    if not ok:
        want = {Real: "a number", dict: "an object", list: "a list", str: "a string",
                int: "an integer"}.get(kind, str(kind))
        raise Malformed(f"{where}.{key} is {_kind(v)}, expected {want}")
    return v


def number(obj, *keys: str, where: str):
    """The number at obj[k0][k1]..., None where a key or value is missing."""
    for i, k in enumerate(keys):
        here = where + "".join(f".{p}" for p in keys[:i])
        if not isinstance(obj, dict):
            raise Malformed(f"{here} is {_kind(obj)}, expected an object")
        obj = get(obj, k, Real if i == len(keys) - 1 else dict, here, required=False)
        if obj is None:
            return None
    return obj if math.isfinite(obj) and obj > 0 else None


def rows_of(report: dict, name: str) -> list:
    results = get(report, "results", list, name)
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise Malformed(f"{name}.results[{i}] is {_kind(r)}, expected an object")
    if not results:
        raise Skip(f"{name} has no results")
    return results


def cpu_of(report: dict, name: str) -> str | None:
    machine = get(report, "machine", dict, name, required=False) or {}
    ident = get(machine, "cpu_identity", dict, f"{name}.machine", required=False) or {}
    return (get(ident, "summary", str, f"{name}.machine.cpu_identity", required=False)
            or get(machine, "cpu", str, f"{name}.machine", required=False))


def when(report: dict, name: str) -> str:
    date = get(report, "date", str, name, required=False)
    return date.replace("T", " ")[:16] + " UTC" if date and date.endswith("+00:00") else (
        date or "date not recorded")


# ----------------------------------------------------------------- panels

@dataclass
class Bars:
    engine: str
    threads: int | None
    values: list  # one per group; None: not measured
    texts: list
    label: str | None = None  # legend entry; default LABELS[engine]


@dataclass
class Panel:
    title: str
    ylabel: str
    groups: list
    bars: list
    lines: list = field(default_factory=list)  # (y, label, line style)
    log: bool = False
    notes: list = field(default_factory=list)
    thread_counts: list = field(default_factory=list)


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def thread_label(t) -> str:
    return f"{t} thread" + ("" if t == 1 else "s")


def kernels_panel(report: dict, name: str) -> Panel:
    rows = [r for r in rows_of(report, name) if r.get("M") == 1]
    if not rows:
        raise Skip(f"{name} has no M = 1 rows")
    machine = get(report, "machine", dict, name, required=False) or {}
    targets = get(report, "targets", list, name, required=False) or []
    kernel = None
    for i, t in enumerate(targets):
        if not isinstance(t, dict):
            raise Malformed(f"{name}.targets[{i}] is {_kind(t)}, expected an object")
        kernel = kernel or get(t, "kernel", str, f"{name}.targets[{i}]", required=False)
    kernels = set()
    for i, r in enumerate(rows):
        kernels.update(get(r, "kernels", dict, f"{name}.results[{i}]", required=False) or {})
    if kernel is None:
        # bitnn's default is the best supported kernel, the last one listed
        # (unless BITNN_KERNEL chose another; the targets then name it)
        supported = get(machine, "kernels_supported", list, f"{name}.machine", required=False)
        ranked = [k for k in (supported or []) if k in kernels]
        if not ranked:
            raise Skip(f"{name}: cannot tell the default kernel (no targets, no "
                       "machine.kernels_supported among the results' kernels)")
        kernel = ranked[-1]
    int8_names = get(machine, "int8_kernels", dict, f"{name}.machine", required=False) or {}
    int8_name = int8_names.get(kernel) if isinstance(int8_names.get(kernel), str) else kernel

    groups, fp32, int8, blas = [], [], [], []
    for i, r in enumerate(report["results"]):
        if r.get("M") != 1:
            continue
        where = f"{name}.results[{i}]"
        k_in, n_out = get(r, "in", int, where), get(r, "out", int, where)
        groups.append(f"{k_in} x {n_out}")
        fp32.append(number(r, "kernels", kernel, "fp32", "linear", "rate_s", where=where))
        int8.append(number(r, "kernels", kernel, "int8", "linear", "rate_s", where=where))
        blas.append(number(r, "numpy", "rate_s", where=where))
    blas_name = get(machine, "blas", str, f"{name}.machine", required=False)
    series = [("bitnn_fp32", fp32, f"bitnn fp32 ({kernel})"),
              ("bitnn_int8", int8, f"bitnn int8 ({int8_name})"),
              ("numpy_fp32", blas, "numpy fp32" + (f" ({blas_name})" if blas_name else ""))]
    bars = [Bars(e, None, [v / 1e9 if v else None for v in vals],
                 [fmt(v / 1e9) if v else None for v in vals], label)
            for e, vals, label in series if any(v is not None for v in vals)]
    if not bars:
        raise Skip(f"{name} has no linear rates for kernel {kernel}")
    threads = get(report, "threads", int, name, required=False) or 1
    panel = Panel(
        title=f"Linear kernels, M = 1, {thread_label(threads)}: "
              f"bitnn {kernel} kernel (int8: {int8_name}) vs numpy fp32 "
              f"(bench_kernels, {when(report, name)})",
        ylabel="G binary weights/s\n(wall-clock median, higher is better)",
        groups=groups, bars=bars)
    goals = {}
    for i, t in enumerate(targets):
        prec = get(t, "precision", str, f"{name}.targets[{i}]", required=False)
        goal = number(t, "rate_goal", where=f"{name}.targets[{i}]")
        if prec and goal:
            goals.setdefault(prec, goal)
    for prec, goal in sorted(goals.items()):
        panel.lines.append((goal / 1e9, f"issue-7 target, {prec}: {fmt(goal / 1e9)} G/s",
                            TARGET_STYLES.get(prec, ":")))
    if not goals:
        panel.notes.append("no targets in this file (bench_kernels sets them for one thread "
                           "and the default kernel)")
    missing = [LABELS[b.engine] for b in bars if None in b.values]
    if missing:
        panel.notes.append("not measured for some shapes: " + ", ".join(missing))
    return panel


def _engines(report: dict, name: str, key_path: tuple, known: tuple) -> list:
    obj, where = report, name
    for k in key_path[:-1]:
        obj, where = get(obj, k, dict, where, required=False) or {}, f"{where}.{k}"
    listed = get(obj, key_path[-1], list, where, required=False)
    return [e for e in known if listed is None or e in listed]


def _grouped(rows, name, group_key, engines, value, ratio_base=None) -> tuple:
    """(groups, bars, thread counts): one group per group_key(row) in file order,
    one Bars per (threads, engine)."""
    groups, threads = [], []
    for i, r in enumerate(rows):
        t = get(r, "threads", int, f"{name}.results[{i}]")
        g = group_key(r, f"{name}.results[{i}]")
        if g not in groups:
            groups.append(g)
        if t not in threads:
            threads.append(t)
    threads.sort()
    cell = {(group_key(r, ""), r["threads"]): (i, r) for i, r in enumerate(rows)}
    bars = []
    for t in threads:
        for e in engines:
            vals, texts = [], []
            for g in groups:
                i, r = cell.get((g, t), (None, None))
                v = value(r, e, f"{name}.results[{i}]") if r is not None else None
                vals.append(v)
                label = fmt(v) if v else None
                if v and ratio_base and e != ratio_base:
                    base = value(r, ratio_base, f"{name}.results[{i}]")
                    if base:
                        label += f"\n{v / base:.1f}\N{MULTIPLICATION SIGN}"
                texts.append(label)
            if any(v is not None for v in vals):
                bars.append(Bars(e, t, vals, texts))
    return groups, bars, threads


def lm_panel(report: dict, name: str) -> Panel:
    rows = rows_of(report, name)
    engines = _engines(report, name, ("engines",), LM_ENGINES)
    configs = []
    for i, r in enumerate(rows):
        c = get(r, "config", str, f"{name}.results[{i}]")
        if c not in configs:
            configs.append(c)

    def group(r, where):
        measure = get(r, "measure", str, where)
        return measure if len(configs) == 1 else f"{r['config']}: {measure}"

    def tok_s(r, e, where):
        return number(r, e, "tok_s", where=where)

    groups, bars, threads = _grouped(rows, name, group, engines, tok_s,
                                     ratio_base="torch_fp32" if "torch_fp32" in engines
                                     else None)
    if not bars:
        raise Skip(f"{name} has no tokens/s of the engines {', '.join(engines)}")
    what = f"config {configs[0]}" if len(configs) == 1 else "configs " + ", ".join(configs)
    panel = Panel(
        title=f"BLM decoder ({what}), {' and '.join(thread_label(t) for t in threads)}: "
              f"tokens/s; labels: tokens/s and speed-up over PyTorch fp32 at the same "
              f"thread count "
              f"(bench_lm, {when(report, name)})",
        ylabel="tokens/s (log scale,\nhigher is better)", groups=groups, bars=bars, log=True,
        thread_counts=threads)
    absent = [LABELS[e] for e in LM_ENGINES if e not in {b.engine for b in bars}]
    if absent:
        panel.notes.append("not in this run: " + ", ".join(absent))
    return panel


def classifier_panel(report: dict, name: str) -> Panel:
    rows = rows_of(report, name)
    engines = _engines(report, name, ("config", "engines"), CLASSIFIER_ENGINES)
    models = []
    for i, r in enumerate(rows):
        where = f"{name}.results[{i}]"
        m = (get(r, "f", int, where), get(r, "size", int, where))
        get(r, "batch", int, where)
        if m not in models:
            models.append(m)

    def group(r, where):
        b = f"batch {r['batch']}"
        return b if len(models) == 1 else f"f={r['f']}, {r['size']}x{r['size']}: {b}"

    def ms_per_image(r, e, where):
        ms = number(r, e, "median_ms", where=where)
        return ms / r["batch"] if ms and r["batch"] > 0 else None

    groups, bars, threads = _grouped(rows, name, group, engines, ms_per_image)
    if not bars:
        raise Skip(f"{name} has no timings of the engines {', '.join(engines)}")
    what = (f"f={models[0][0]}, {models[0][1]}x{models[0][1]} input" if len(models) == 1
            else f"{len(models)} models")
    panel = Panel(
        title=f"BCVNN classifier ({what}), {' and '.join(thread_label(t) for t in threads)}: "
              f"ms per image (median time of a batch / batch size) "
              f"(bench_classifier, {when(report, name)})",
        ylabel="ms per image\n(lower is better)", groups=groups, bars=bars,
        thread_counts=threads)
    absent = [LABELS[e] for e in CLASSIFIER_ENGINES if e not in {b.engine for b in bars}]
    if absent:
        panel.notes.append("not in this run: " + ", ".join(absent))
    return panel


PANELS = (("kernels", "linear kernels", kernels_panel), ("lm", "decoder", lm_panel),
          ("classifier", "classifier", classifier_panel))


def build(inputs: dict) -> tuple:
    """([(what, Panel or skip note)], title lines). Malformed propagates."""
    panels, cpus = [], []
    for key, what, make in PANELS:
        path = inputs.get(key)
        if not path:
            continue
        report = load_report(path)
        name = os.path.basename(path)
        cpu = cpu_of(report, name)
        if cpu:
            cpus.append((what, cpu))
        try:
            panels.append((what, make(report, name)))
        except Skip as e:
            panels.append((what, f"{what} panel skipped: {e}"))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            # a shape that the checks above let through: still one line, not a traceback
            raise Malformed(f"{name}: not the layout of a {what} benchmark file "
                            f"({type(e).__name__}: {e})") from None
    distinct = list(dict.fromkeys(c for _, c in cpus))
    if not distinct:
        cpu_line = "CPU: not recorded in the files"
    elif len(distinct) == 1:
        cpu_line = f"CPU: {distinct[0]}"
    else:
        cpu_line = "CPUs: " + "; ".join(f"{w}: {c}" for w, c in cpus)
    return panels, cpu_line


# ----------------------------------------------------------------- drawing

def draw(panels: list, cpu_line: str, out: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    heights = [1.0 if isinstance(p, str) else 4.6 for _, p in panels]
    fig = Figure(figsize=(15, 1.3 + sum(heights)), layout="constrained")
    FigureCanvasAgg(fig)
    # the CPU summary's cache sizes on a line of their own
    lines = [w for part in cpu_line.replace("; caches: ", "\ncaches: ").split("\n")
             for w in textwrap.wrap(part, 150)]
    fig.suptitle("\n".join(["bitnn benchmarks"] + lines), fontsize=11)
    axes = fig.subplots(len(panels), 1, squeeze=False,
                        gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (_, p) in zip(axes, panels):
        if isinstance(p, str):
            ax.set_axis_off()
            ax.text(0.5, 0.5, p, ha="center", va="center", fontsize=10, style="italic",
                    transform=ax.transAxes, wrap=True)
            continue
        draw_panel(ax, p, Patch)
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".plot_benchmarks_", suffix=".png", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def draw_panel(ax, p: Panel, Patch) -> None:
    n = len(p.bars)
    width = 0.84 / n
    top = max(v for b in p.bars for v in b.values if v is not None)
    bottom = min(v for b in p.bars for v in b.values if v is not None)
    hatch_of = {t: HATCHES[min(i, len(HATCHES) - 1)] for i, t in enumerate(p.thread_counts)}
    # bars narrower than about a quarter of an inch get their labels on one
    # line, turned upright, so that neighbours' labels do not overlap
    fig_w = ax.figure.get_figwidth()
    upright = fig_w * 0.75 / len(p.groups) * 0.84 / n < 0.26
    for j, b in enumerate(p.bars):
        xs = [g + (j - (n - 1) / 2) * width for g in range(len(p.groups))]
        pts = [(x, v, t) for x, v, t in zip(xs, b.values, b.texts) if v is not None]
        ax.bar([x for x, _, _ in pts], [v for _, v, _ in pts], width * 0.92,
               color=COLORS.get(b.engine, "grey"), edgecolor="black", linewidth=0.5,
               hatch=hatch_of.get(b.threads, ""))
        for x, v, t in pts:
            if upright and "\n" in t:
                t = t.replace("\n", " (") + ")"
            ax.annotate(t, (x, v), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom",
                        rotation=90 if upright else 0, fontsize=7, linespacing=0.95,
                        bbox={"boxstyle": "square,pad=0.1", "facecolor": "white",
                              "edgecolor": "none"})
    for y, label, style in p.lines:
        ax.axhline(y, color=TARGET_COLOR, linestyle=style, linewidth=1.2, label=label, zorder=1.5)
    ax.set_xticks(range(len(p.groups)), p.groups, fontsize=9)
    ax.set_xlim(-0.5, len(p.groups) - 0.5)
    # room for the labels above the bars
    if p.log:
        ax.set_yscale("log")
        ax.set_ylim(bottom / 2.5, top * (20 if upright else 6))
    else:
        ax.set_ylim(0, (1.35 if upright else 1.2) * max([top] + [y for y, _, _ in p.lines]))
    ax.set_ylabel(p.ylabel, fontsize=9)
    ax.set_title(p.title, fontsize=10, loc="left")
    ax.grid(axis="y", alpha=0.3, which="major")
    ax.set_axisbelow(True)
    seen, handles = set(), []
    for b in p.bars:
        if b.engine not in seen:
            seen.add(b.engine)
            handles.append(Patch(facecolor=COLORS.get(b.engine, "grey"), edgecolor="black",
                                 linewidth=0.5, label=b.label or LABELS.get(b.engine, b.engine)))
    if len(p.thread_counts) > 1:
        for t in p.thread_counts:
            handles.append(Patch(facecolor="white", edgecolor="black", linewidth=0.5,
                                 hatch=hatch_of[t], label=thread_label(t)))
    line_handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + line_handles, loc="upper left", bbox_to_anchor=(1.005, 1.0),
              fontsize=8, frameon=False)
    if p.notes:  # as the x label, so that the layout makes room for it
        ax.set_xlabel("note: " + "; ".join(p.notes), fontsize=8, style="italic", loc="left")


# ----------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", metavar="JSON", help="bench_kernels --json output")
    ap.add_argument("--lm", metavar="JSON", help="bench_lm --json output")
    ap.add_argument("--classifier", metavar="JSON", help="bench_classifier --json output")
    ap.add_argument("-o", "--output", metavar="PNG", default="docs/benchmarks.png",
                    help="the figure to write (default docs/benchmarks.png)")
    args = ap.parse_args(argv)
    if not (args.kernels or args.lm or args.classifier):
        ap.error("give at least one of --kernels, --lm, --classifier")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        panels, cpu_line = build({"kernels": args.kernels, "lm": args.lm,
                                  "classifier": args.classifier})
    except Malformed as e:
        print(f"plot_benchmarks: {e}", file=sys.stderr)
        return 2
    for _, p in panels:
        notes = [p] if isinstance(p, str) else [f"{p.title.split(':')[0]}: {n}" for n in p.notes]
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
    if all(isinstance(p, str) for _, p in panels):
        print("plot_benchmarks: nothing to plot; no figure written", file=sys.stderr)
        return 1
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot_benchmarks: needs matplotlib (pip install matplotlib, or the bench "
              "extra: pip install -e '.[bench]')", file=sys.stderr)
        return 1
    draw(panels, cpu_line, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
