"""Smoke test: tools/bench_lm.py --quick runs end to end on a tiny decoder.

Checks that the benchmark runs, that its torch twin agrees with bitnn and
BinaryLM.forward, and that the peak-RSS child works; the speed numbers
themselves are not tested.
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
    for r in report["results"]:
        for e in ("bitnn", "torch"):
            assert r[e]["tok_s"] > 0 and r[e]["rounds"] == 2
    (p,) = report["parity"]
    assert p["argmax_equal"] and p["generate"]["equal"]
    assert max(p["max_abs_diff"].values()) < 1e-3
    (s,) = report["sizes"]
    assert 0 < s["bnb_bytes"] < s["fp32_bytes"]
    assert 0.4 < s["ones_fraction"] < 0.6
    (r,) = report["rss"]
    assert r["generated"] == 64 and r["torch_imported"] is False
    assert r["hwm_kb"] >= r["rss_before_load_kb"] > 0
    assert json.loads(out.read_text())["results"]


def test_torch_twin_cache_matches_full_pass(bench):
    """Chunked prefill (p0 > 0 with n > 1: the explicit mask) equals one pass."""
    import numpy as np
    import torch

    model = bench.build_binary_lm(TINY, seed=3)
    twin = bench.TorchLM(model)
    ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], 20).tolist()
    with torch.inference_mode():
        ref = model(torch.tensor([ids]))[0, -1]
        c = twin.new_cache()
        twin.forward(ids[:7], c)
        twin.forward(ids[7:12], c)
        got = twin.forward(ids[12:], c)
    assert c.pos == 20
    assert torch.allclose(got, ref, atol=1e-4)
