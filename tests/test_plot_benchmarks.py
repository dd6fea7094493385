"""tools/plot_benchmarks.py: the figure of the benchmark results.

The inputs are small files in the layouts that tools/bench_kernels.py,
tools/bench_lm.py and tools/bench_classifier.py write with --json (trimmed
from real runs: one or two rows each, only some of the keys). Checked: every
bar's value is the file's number, the PNG is written (when matplotlib is
installed), a panel whose file lacks its fields is left out with a note, and
a malformed file is one line on stderr with exit status 2, never a traceback.
"""

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools import plot_benchmarks as pb  # noqa: E402

CPU = ("Intel(R) Xeon(R) Processor [x86_64; GenuineIntel family 6 model 167 stepping 1; "
       "microarchitecture unknown (from family/model)]; caches: L1d 96 KiB (2 instances)")
IDENT = {"model_name": "Intel(R) Xeon(R) Processor", "summary": CPU}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def linear(rate):
    return {"gemm": {"s": 1e-3, "rate_s": rate * 1.02}, "linear": {"s": 1e-3, "rate_s": rate}}


def kernels_report():
    """bench_kernels --json, trimmed: two shapes at M = 1, one at M = 64."""
    def row(k_in, n_out, M, numpy, fp32, int8):
        return {"in": k_in, "out": n_out, "M": M, "weights": k_in * n_out * M,
                "numpy": {"s": 1e-2, "rate_s": numpy},
                "kernels": {"avx2": {"fp32": linear(fp32 / 3), "int8": linear(int8 / 3)},
                            "avx512": {"fp32": linear(fp32), "int8": linear(int8)}}}

    return {
        "command": "python3 tools/bench_kernels.py --quick --json bk.json",
        "date": "2026-12-02T15:18:52+00:00",
        "machine": {"cpu": CPU, "cpu_identity": IDENT, "kernels_supported": ["ref", "avx2",
                                                                             "avx512"],
                    "int8_kernels": {"avx2": "avx2", "avx512": "avx512-gfni"},
                    "blas": "scipy-openblas 0.3.31.188.0"},
        "threads": 1, "quick": True,
        "results": [row(2048, 30522, 1, 3.75e9, 129.05e9, 194.93e9),
                    row(2048, 30522, 64, 43.8e9, 119.0e9, 252.8e9),
                    row(768, 4096, 1, 7.15e9, 129.40e9, 217.59e9)],
        "targets": [{"shape": "2048x30522", "M": 1, "kernel": "avx512", "precision": p,
                     "op": "linear", "clock": "wall", "rate": r, "rate_goal": g,
                     "rate_ok": r >= g}
                    for p, r, g in (("fp32", 129.05e9, 120e9), ("int8", 194.93e9, 200e9))],
    }


LM_ENGINES = ("bitnn_fp32", "bitnn_int8", "torch_fp32", "torch_int8")


def lm_report(threads=(1,)):
    """bench_lm --json, trimmed: decode at two contexts and the prefill."""
    cells = (("decode @ ctx 16", "decode", 16, (579.9, 728.8, 23.82, 63.62)),
             ("decode @ ctx 200", "decode", 200, (388.3, 445.0, 23.02, 55.63)),
             ("prefill 128", "prefill", 128, (1018.6, 1365.8, 728.7, 1684.9)))
    results = []
    for t in threads:
        for measure, kind, ctx, speeds in cells:
            row = {"config": "small", "threads": t, "measure": measure, "kind": kind,
                   "context": ctx}
            for e, v in zip(LM_ENGINES, speeds):
                row[e] = {"tok_s": v * (1.6 if t == 2 else 1), "ms_per_tok": 1000 / v}
            results.append(row)
    return {"date": "2026-12-02T15:19:42+00:00",
            "machine": {"cpu": "Intel(R) Xeon(R) Processor (family 6, model 167)",
                        "cpu_identity": IDENT},
            "engines": list(LM_ENGINES), "results": results, "thread_scaling": [],
            "targets": []}


CLS_ENGINES = ("bitnn_fp32", "bitnn_int8", "torch_fp32", "ort_fp32", "ort_int8")


def classifier_report(engines=CLS_ENGINES):
    """bench_classifier --json, trimmed: f=3, 256x256, batches 1 and 32, one thread."""
    ms = {1: (38.07, 25.57, 70.38, 41.13, 36.77), 32: (1144.96, 721.90, 4575.42, 1599.29,
                                                      1242.66)}
    results = []
    for b, times in ms.items():
        row = {"f": 3, "size": 256, "batch": b, "threads": 1}
        for e, v in zip(CLS_ENGINES, times):
            if e in engines:
                row[e] = {"median_ms": v, "images_per_s": b * 1000 / v}
        results.append(row)
    return {"date": "2026-12-02T15:20:27+00:00",
            "machine": {"cpu": "Intel(R) Xeon(R) Processor (family 6, model 167)",
                        "cpu_identity": IDENT},
            "config": {"sizes": [256], "kernel_sizes": [3], "batches": [1, 32], "threads": [1],
                       "engines": list(engines)},
            "results": results, "thread_scaling": [], "targets": []}


def write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def run(argv, capsys):
    try:
        rc = pb.main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def bars_by_label(panel):
    return {(b.label or pb.LABELS[b.engine], b.threads): b for b in panel.bars}


# ----------------------------------------------------------------- the data drawn

def test_panels_hold_the_files_numbers(tmp_path):
    paths = {"kernels": write(tmp_path, "bk.json", kernels_report()),
             "lm": write(tmp_path, "blm.json", lm_report()),
             "classifier": write(tmp_path, "bc.json", classifier_report())}
    panels, cpu_line = pb.build(paths)
    assert cpu_line == f"CPU: {CPU}"  # the same CPU in all three files: named once
    (_, k), (_, lm), (_, c) = panels

    # kernels: M = 1 only, the default kernel (the targets'), G weights / s
    assert k.groups == ["2048 x 30522", "768 x 4096"]
    bars = bars_by_label(k)
    assert bars[("bitnn fp32 (avx512)", None)].values == pytest.approx([129.05, 129.40])
    assert bars[("bitnn int8 (avx512-gfni)", None)].values == pytest.approx([194.93, 217.59])
    assert bars[("numpy fp32 (scipy-openblas 0.3.31.188.0)", None)].values == pytest.approx(
        [3.75, 7.15])
    assert [(y, style) for y, _, style in k.lines] == [(120.0, "--"), (200.0, "-.")]
    assert "avx512" in k.title and "1 thread" in k.title

    # decoder: one group per measure, tokens/s and the speed-up over torch fp32
    assert lm.groups == ["decode @ ctx 16", "decode @ ctx 200", "prefill 128"] and lm.log
    assert [b.engine for b in lm.bars] == list(LM_ENGINES)
    assert lm.bars[1].values == pytest.approx([728.8, 445.0, 1365.8])
    assert lm.bars[1].texts[0] == "729\n30.6\N{MULTIPLICATION SIGN}"  # 728.8 / 23.82
    assert lm.bars[2].texts[0] == "23.8"  # the base has no ratio

    # classifier: ms per image = a batch's median / its size
    assert c.groups == ["batch 1", "batch 32"]
    assert [b.engine for b in c.bars] == ["bitnn_fp32", "bitnn_int8", "ort_fp32", "ort_int8",
                                         "torch_fp32"]
    assert c.bars[1].values == pytest.approx([25.57, 721.90 / 32])
    assert not (k.notes or lm.notes or c.notes)


def test_targets_and_default_kernel_come_from_the_file(tmp_path):
    report = kernels_report()
    report["targets"][0]["rate_goal"] = 111e9
    (_, k), = pb.build({"kernels": write(tmp_path, "bk.json", report)})[0]
    assert [y for y, _, _ in k.lines] == [111.0, 200.0]
    # no targets (e.g. 2 threads): the default kernel is the best supported one, no lines
    report.update(targets=[], threads=2)
    report["machine"]["kernels_supported"] = ["ref", "avx2"]
    (_, k), = pb.build({"kernels": write(tmp_path, "bk.json", report)})[0]
    assert k.lines == [] and "2 threads" in k.title
    assert bars_by_label(k)[("bitnn fp32 (avx2)", None)].values == pytest.approx(
        [129.05 / 3, 129.40 / 3])
    assert any("no targets" in n for n in k.notes)


def test_two_threads_and_missing_engines(tmp_path):
    (_, lm), = pb.build({"lm": write(tmp_path, "blm.json", lm_report(threads=(1, 2)))})[0]
    assert lm.thread_counts == [1, 2] and len(lm.bars) == 8
    assert [b.threads for b in lm.bars] == [1] * 4 + [2] * 4
    assert lm.bars[4].values[0] == pytest.approx(579.9 * 1.6)
    # a classifier run without ONNX Runtime: its engines are left out, with a note
    no_ort = classifier_report(engines=("bitnn_fp32", "bitnn_int8", "torch_fp32"))
    (_, c), = pb.build({"classifier": write(tmp_path, "bc.json", no_ort)})[0]
    assert [b.engine for b in c.bars] == ["bitnn_fp32", "bitnn_int8", "torch_fp32"]
    assert c.notes == ["not in this run: ORT fp32, ORT int8"]


# ----------------------------------------------------------------- the command

def test_writes_one_png_with_every_panel(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "docs" / "benchmarks.png"
    rc, stdout, stderr = run(["--kernels", write(tmp_path, "bk.json", kernels_report()),
                              "--lm", write(tmp_path, "blm.json", lm_report(threads=(1, 2))),
                              "--classifier", write(tmp_path, "bc.json", classifier_report()),
                              "-o", out], capsys)
    assert rc == 0, stderr
    assert stdout.strip() == f"wrote {out}"
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1000 and height > 1000  # three panels stacked
    assert [p.name for p in out.parent.iterdir()] == ["benchmarks.png"]  # no temporary left


def test_a_panel_without_its_fields_is_left_out_with_a_note(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    lm = lm_report()
    del lm["results"]
    out = tmp_path / "fig.png"
    rc, _, stderr = run(["--kernels", write(tmp_path, "bk.json", kernels_report()),
                         "--lm", write(tmp_path, "blm.json", lm), "-o", out], capsys)
    assert rc == 0 and out.read_bytes()[:8] == PNG_MAGIC
    assert "note: decoder panel skipped: no 'results' in blm.json" in stderr


def test_runs_as_a_module(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "fig.png"
    p = subprocess.run([sys.executable, "-m", "tools.plot_benchmarks", "--classifier",
                        write(tmp_path, "bc.json", classifier_report()), "-o", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_nothing_to_plot(tmp_path, capsys):
    out = tmp_path / "fig.png"
    rc, _, stderr = run(["--lm", write(tmp_path, "blm.json", {"date": "x", "results": []}),
                         "-o", out], capsys)
    assert rc == 1 and "nothing to plot" in stderr and not out.exists()
    rc, _, stderr = run(["-o", out], capsys)
    assert rc == 2 and "at least one of --kernels, --lm, --classifier" in stderr


@pytest.mark.parametrize("text, message", [
    ("{not json", "bk.json: not valid JSON (line 1, column 2"),
    ("[1, 2]", "bk.json: expected a JSON object at the top level, found a list"),
    (json.dumps({"results": "none"}), "bk.json.results is a string, expected a list"),
    (json.dumps({"results": [3]}), "bk.json.results[0] is a number, expected an object"),
])
def test_a_malformed_file_is_one_line_and_status_2(tmp_path, capsys, text, message):
    out = tmp_path / "fig.png"
    rc, stdout, stderr = run(["--kernels", write(tmp_path, "bk.json", text), "-o", out], capsys)
    assert rc == 2 and stdout == "" and not out.exists()
    assert stderr.startswith("plot_benchmarks: ") and message in stderr
    assert stderr.count("\n") == 1  # one line, no traceback


def test_wrong_types_deep_inside_are_malformed(tmp_path, capsys):
    lm = lm_report()
    lm["results"][1]["bitnn_int8"]["tok_s"] = "fast"
    rc, _, stderr = run(["--lm", write(tmp_path, "blm.json", lm)], capsys)
    assert rc == 2
    assert "blm.json.results[1].bitnn_int8.tok_s is a string, expected a number" in stderr
    rc, _, stderr = run(["--lm", str(tmp_path / "missing.json")], capsys)
    assert rc == 2 and "missing.json: cannot read it" in stderr


def _mutations(obj, rng, n):
    """n copies of obj, each with one random key deleted or value replaced."""
    paths = []

    def walk(o, path):
        if isinstance(o, dict):
            for k, v in o.items():
                paths.append(path + (k,))
                walk(v, path + (k,))
        elif isinstance(o, list):
            for i, v in enumerate(o):
                paths.append(path + (i,))
                walk(v, path + (i,))

    walk(obj, ())
    for _ in range(n):
        m = copy.deepcopy(obj)
        path = rng.choice(paths)
        parent = m
        for k in path[:-1]:
            parent = parent[k]
        if rng.random() < 0.4 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice([None, "x", -1, 0, 2.5, True, [], {}, [1], {"a": 1},
                                           float("nan")])
        yield m


@pytest.mark.parametrize("key, make", [("kernels", kernels_report), ("lm", lm_report),
                                       ("classifier", classifier_report)])
def test_damaged_files_never_raise(tmp_path, key, make):
    """Every one-edit damage of a good file: a figure, a skipped panel or Malformed."""
    rng = random.Random(0)
    path = tmp_path / "r.json"
    for m in _mutations(make(), rng, 300):
        path.write_text(json.dumps(m))
        try:
            pb.build({key: str(path)})
        except pb.Malformed:
            pass
