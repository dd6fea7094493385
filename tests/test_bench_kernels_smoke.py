"""Smoke test: tools/bench_kernels.py --quick runs end to end on small shapes.

Checks that every kernel is timed in both precisions, that the limits
(in-cache peak, call cost, copy bandwidth) are measured and turned into
shares, and that the issue-7 targets are evaluated on a target shape; the
speed numbers themselves are not tested.
"""

import importlib.util
import json
from pathlib import Path

import pytest

import bitnn

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench_kernels.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def blas_env(bench, monkeypatch):
    """run() sets the BLAS thread variables; put them back afterwards."""
    for var in bench.BLAS_ENV:
        monkeypatch.setenv(var, "1")


def test_quick_runs_every_kernel_in_both_precisions(bench, blas_env, tmp_path, capsys):
    kernel = bitnn.system_info()["kernel"]  # "ref" under BITNN_KERNEL=ref (CI)
    kernels = sorted({kernel, "ref"})
    # With a SIMD default, the ref kernel is skipped above 1e6 weights per call;
    # when ref is the default it runs everything.
    ref_limit = 1e8 if kernel == "ref" else 1e6
    out = tmp_path / "k.json"
    # 100 inputs: not a multiple of 64
    args = bench.parse_args(["--quick", "--shapes", "100x40,768x4096", "--batches", "1,3",
                             "--kernels", ",".join(kernels), "--ref-limit", str(ref_limit),
                             "--json", str(out)])
    report = bench.run(args)
    text = capsys.readouterr().out
    assert "| in x out | M | kernel | precision |" in text and "## Measured limits" in text
    assert text.startswith("cpu: ") and "microarchitecture" in text
    assert [(r["in"], r["out"], r["M"]) for r in report["results"]] == [
        (100, 40, 1), (100, 40, 3), (768, 4096, 1), (768, 4096, 3)]
    peaks = report["in_cache_peaks"]
    for M in (1, 3):
        has_ref_peak = M * 2048 * 1024 <= ref_limit
        assert set(peaks) >= {f"{kernel}/int8/{M}", f"{kernel}/fp32/{M}"}
        assert (f"ref/fp32/{M}" in peaks) == has_ref_peak
    assert peaks[f"{kernel}/int8/1"]["call_s"] > 0
    for r in report["results"]:
        expect = set(kernels) if r["weights"] <= ref_limit else set(kernels) - {"ref"}
        assert set(r["kernels"]) == expect
        for kern in r["kernels"]:
            for prec in ("fp32", "int8"):
                for op in ("gemm", "linear"):
                    k = r["kernels"][kern][prec][op]
                    assert k["rate_s"] > 0 and k["weight_bytes_per_s"] > 0
                    assert k["bandwidth_share_s"] > 0
                    has_peak = f"{kern}/{prec}/{r['M']}" in peaks
                    assert (k.get("peak_share_s", 0) > 0) == has_peak
    assert report["copy_bandwidth"]["bytes_per_s"] > 0
    assert report["machine"]["int8_kernels"][kernel] == bitnn._core.int8_kernel(kernel)
    # 768x4096 is a target shape: both precisions, wall and CPU clocks; int8
    # also gets the share of its in-cache peak
    targets = report["targets"]
    assert {(t["precision"], t["clock"]) for t in targets} == {
        ("fp32", "wall"), ("fp32", "cpu"), ("int8", "wall"), ("int8", "cpu")}
    assert all(("peak_share_ok" in t) == (t["precision"] == "int8") for t in targets)
    assert "## Targets" in text
    assert json.loads(out.read_text())["results"]


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--shapes", "12"], ["--shapes", "0x5"],
                                  ["--precisions", "fp16"], ["--batches", "0"]])
def test_bad_arguments_are_usage_errors(bench, argv, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err
