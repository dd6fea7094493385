"""Smoke test: tools/bench_classifier.py --quick runs end to end on a small input.

Checks only that the benchmark runs and that its engines agree; the numbers
themselves are not tested.
"""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench_classifier.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_classifier", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_small_input_runs(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = bench.parse_args(["--quick", "--sizes", "32", "--repeats", "2", "--budget", "1",
                             "--json", str(out)])
    report = bench.run(args)
    text = capsys.readouterr().out
    assert "| f | batch | threads |" in text
    assert [(r["f"], r["batch"], r["threads"]) for r in report["results"]] == [(3, 1, 1), (3, 1, 2)]
    for r in report["results"]:
        for e in ("bitnn", "torch", "ort"):
            assert r[e]["median_ms"] > 0
    (p,) = report["parity"]
    assert p["argmax_equal"]
    assert max(p["max_abs_diff"].values()) < 1e-3
    (s,) = report["sizes"]
    assert 0 < s["bnb_bytes"] < s["fp32_bytes"]
    assert json.loads(out.read_text())["results"]
