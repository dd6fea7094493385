"""Smoke test: tools/bench_classifier.py --quick runs end to end on a small input.

Checks that the benchmark runs every engine (bitnn fp32 and int8, PyTorch
fp32, ONNX Runtime fp32 and static int8), that the exact engines agree, that
the int8 engines stay close, and that every issue-7 target is evaluated;
without onnxruntime the ORT engines are left out with a note. The speed
numbers themselves are not tested.
"""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench_classifier.py"
QUICK = ["--quick", "--sizes", "32", "--repeats", "2", "--budget", "1"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_classifier", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_small_input_runs(bench, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bench.json"
    report = bench.run(bench.parse_args(QUICK + ["--json", str(out)]))
    text = capsys.readouterr().out
    assert "| f | batch | threads |" in text and "## What each engine's timed call includes" in text
    engines = ["bitnn_fp32", "bitnn_int8", "torch_fp32", "ort_fp32", "ort_int8"]
    assert report["config"]["engines"] == engines
    assert [(r["f"], r["batch"], r["threads"]) for r in report["results"]] == [(3, 1, 1), (3, 1, 2)]
    for r in report["results"]:
        for e in engines:
            assert r[e]["median_ms"] > 0
        assert len(r["ratios"]) == 6
        k = "ort_int8 / bitnn_int8"
        want = r["ort_int8"]["median_ms"] / r["bitnn_int8"]["median_ms"]
        assert r["ratios"][k] == pytest.approx(want)
    (p,) = report["parity"]
    assert p["argmax_equal"] and p["top5_equal"]
    assert set(p["max_abs_diff"]) == {"bitnn_fp32", "torch_fp32", "ort_fp32"}
    assert max(p["max_abs_diff"].values()) < 1e-3
    assert set(p["int8"]) == {"bitnn_int8", "ort_int8"}
    # 8-bit activations move the probabilities (max 0.1 here, 101 classes) a
    # little, never to garbage; bitnn's int8 really ran (it differs from fp32).
    q = p["int8"]["bitnn_int8"]
    assert 0 < q["max_abs_diff"] < 0.02 and q["top1_agreement"] >= 0.5
    q = p["int8"]["ort_int8"]
    assert q["max_abs_diff"] < 0.2 and 0 <= q["top1_agreement"] <= 1
    assert len(q["max_abs_diff_per_image"]) == p["images"] == 4
    (settings,) = report["ort_int8_settings"].values()
    assert settings["format"] == "QDQ" and isinstance(settings["per_channel"], bool)
    (s,) = report["sizes"]
    assert 0 < s["bnb_bytes"] < s["fp32_bytes"]
    # 3 speed targets at batch 1 on one thread, 2 thread-scaling ones, the size one
    assert len(report["targets"]) == 3 + 2 + 1
    assert "## Targets" in text
    assert json.loads(out.read_text())["results"]


def test_without_onnxruntime_the_ort_engines_are_skipped(bench, monkeypatch, capsys):
    monkeypatch.setattr(bench, "ort_available", lambda: "No module named 'onnxruntime'")
    report = bench.run(bench.parse_args(QUICK + ["--threads", "1", "--no-parity"]))
    text = capsys.readouterr().out
    assert "note: ONNX Runtime engines skipped" in text
    assert report["config"]["engines"] == ["bitnn_fp32", "bitnn_int8", "torch_fp32"]
    (r,) = report["results"]
    assert set(r["ratios"]) == {"torch_fp32 / bitnn_fp32", "torch_fp32 / bitnn_int8"}


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--kernel-sizes", "4"],
                                  ["--engines", "nope"], ["--budget", "0"]])
def test_bad_arguments_are_one_line_errors(bench, argv, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_nothing_left_to_run_is_an_error(bench, monkeypatch):
    monkeypatch.setattr(bench, "ort_available", lambda: "No module named 'onnxruntime'")
    with pytest.raises(SystemExit, match="no engine left to run"):
        bench.run(bench.parse_args(QUICK + ["--engines", "ort_int8"]))
