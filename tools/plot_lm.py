"""Validation bits per byte against training time, from tools.train_lm metrics files.

    python3 -m tools.plot_lm binary=bitnn/models/shakespeare.metrics.json \\
        "fp32 twin=tools/results/shakespeare_fp32_v4096.metrics.json" --out docs/lm_curves.png
    python3 -m tools.plot_lm --table run1=a.json run2=b.json   # the figures, no plot

The training script's validation scores every held-out token once in
non-overlapping windows of max_len tokens, as ``bitnn-run perplexity
--stride max_len`` does; bits per byte = val_loss * val_tokens / (ln 2 *
bytes of the held-out plays), so models with different vocabularies compare.
The points are the evaluations after each epoch and every --eval-every steps,
at their wall-clock training time (evaluation time included).
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def bits_per_byte(rec: dict, valid_bytes: int) -> float:
    return rec["val_loss"] * rec["val_tokens"] / (math.log(2) * valid_bytes)


def curve(metrics: dict) -> list[tuple[float, int, float]]:
    """(wall seconds, step, bits per byte) of every evaluation, by step."""
    nbytes = metrics["dataset"]["valid_chars"]  # the held-out plays are ASCII
    recs = {r["step"]: r for r in metrics.get("evals", []) + metrics.get("history", [])}
    return [(recs[s]["wall_time_s"], s, bits_per_byte(recs[s], nbytes)) for s in sorted(recs)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=METRICS_JSON")
    p.add_argument("--out", help="PNG to write")
    p.add_argument("--table", action="store_true", help="print each run's last point")
    p.add_argument("--title", default="Shakespeare, held-out plays")
    args = p.parse_args(argv)
    runs = []
    for spec in args.runs:
        label, _, path = spec.partition("=")
        with open(path) as f:
            runs.append((label, json.load(f)))
    for label, m in runs:
        c = curve(m)
        if c:
            t, s, b = c[-1]
            print(f"{label}: step {s}, {t:.0f} s, val bits/byte {b:.4f} "
                  f"(best {min(x[2] for x in c):.4f})")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for label, m in runs:
            c = curve(m)
            ax.plot([x[0] / 60 for x in c], [x[2] for x in c], marker="o", ms=3, label=label)
        ax.set_xlabel("training time on one CPU core (minutes)")
        ax.set_ylabel("validation bits per byte")
        ax.set_title(args.title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
