"""Smoke test: tools/bench_lm.py --quick runs end to end on a tiny decoder.

Checks that the benchmark runs all four engines (bitnn fp32 and int8, torch
fp32 and dynamic int8), that its torch twin agrees with bitnn and
BinaryLM.forward, that the int8 engines stay close, that every issue-7
target is evaluated, and that the peak-RSS child works in both precisions;
the speed numbers themselves are not tested.
"""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench_lm.py"
TINY = {"vocab_size": 300, "max_len": 64, "emb_dim": 64, "num_heads": 4, "num_blocks": 2,
        "mlp_units": [96, 48]}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_lm", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_tiny_config_runs(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = bench.parse_args(["--quick", "--configs", "tiny", "--contexts", "16,200",
                             "--prefill", "32", "--json", str(out)])
    report = bench.run(args, {"tiny": TINY})
    text = capsys.readouterr().out
    assert "| config | threads | measure |" in text
    # context 200 is clamped to max_len - steps for this 64-position model
    assert [(r["threads"], r["measure"]) for r in report["results"]] == [
        (1, "decode @ ctx 16"), (1, "decode @ ctx 60"), (1, "prefill 32"),
        (2, "decode @ ctx 16"), (2, "decode @ ctx 60"), (2, "prefill 32")]
    engines = ("bitnn_fp32", "bitnn_int8", "torch_fp32", "torch_int8")
    assert tuple(report["engines"]) == engines
    for r in report["results"]:
        for e in engines:
            assert r[e]["tok_s"] > 0 and r[e]["rounds"] == 2
        assert set(r["ratios"]) == {"bitnn_int8 / torch_fp32", "bitnn_int8 / torch_int8",
                                    "bitnn_fp32 / torch_fp32", "bitnn_fp32 / torch_int8"}
        k = "bitnn_int8 / torch_int8"
        assert r["ratios"][k] == pytest.approx(r["bitnn_int8"]["tok_s"] / r["torch_int8"]["tok_s"])
    (p,) = report["parity"]
    assert p["argmax_equal"] and p["generate"]["equal"]
    assert max(p["max_abs_diff"].values()) < 1e-3
    for e in ("bitnn_int8", "torch_int8"):
        q = p["int8"][e]
        # int8 activations move the scores (std 1 after the last Normalize) a
        # little, never to garbage, and never not at all (that would mean the
        # int8 mode silently ran fp32)
        assert 0 < q["max_abs_diff_vs_BinaryLM.forward"] < 0.5
        assert q["argmax_agreement"] >= 0.5
    (s,) = report["sizes"]
    assert 0 < s["bnb_bytes"] < s["fp32_bytes"]
    assert 0.4 < s["ones_fraction"] < 0.6
    assert [r["precision"] for r in report["rss"]] == ["fp32", "int8"]
    for r in report["rss"]:
        assert r["generated"] == 64 and r["torch_imported"] is False
        assert r["hwm_kb"] >= r["rss_before_load_kb"] > 0
    # thread scaling for every engine and measure; targets for each 1-thread
    # cell (3 per decode context, 1 for the prefill), each bitnn precision's
    # decode scaling, and the two peak-RSS checks
    assert len(report["thread_scaling"]) == 3 * 4
    assert len(report["targets"]) == 2 * 3 + 1 + 2 * 2 + 2
    assert all(isinstance(t["met"], bool) for t in report["targets"])
    assert "## Targets" in text and ("-> met" in text or "-> NOT met" in text)
    assert json.loads(out.read_text())["results"]


def test_torch_twin_cache_matches_full_pass(bench):
    """Chunked prefill (p0 > 0 with n > 1: the explicit mask) equals one pass."""
    import numpy as np
    import torch

    model = bench.build_binary_lm(TINY, seed=3)
    twin = bench.torch_twin(model)
    ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], 20).tolist()
    with torch.inference_mode():
        ref = model(torch.tensor([ids]))[0, -1]
        c = twin.new_cache()
        twin.forward(ids[:7], c)
        twin.forward(ids[7:12], c)
        got = twin.forward(ids[12:], c)
    assert c.pos == 20
    assert torch.allclose(got, ref, atol=1e-4)


def test_torch_int8_twin_is_quantized_and_close(bench):
    """quantize_dynamic converted every linear layer, and the scores stay close."""
    import numpy as np
    import torch

    model = bench.build_binary_lm(TINY, seed=3)
    fp32, int8 = bench.torch_twin(model), bench.torch_twin(model, int8=True)
    assert not any(type(m) is torch.nn.Linear for m in int8.modules())
    n_linear = sum(type(m) is torch.nn.Linear for m in fp32.modules())
    assert n_linear == 6 * TINY["num_blocks"] + len(TINY["mlp_units"]) + 1
    ids = np.random.default_rng(1).integers(0, TINY["vocab_size"], 12).tolist()
    with torch.inference_mode():
        a = fp32(ids, fp32.new_cache())
        b = int8(ids, int8.new_cache())
    assert 0 < float((a - b).abs().max()) < 0.5


def test_bad_config_name_is_one_line_error(bench, capsys):
    assert bench.main(["--quick", "--configs", "nope", "--no-rss"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench_lm: unknown config nope") and "\n" not in err
