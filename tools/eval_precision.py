"""Accuracy of the shipped models in each numeric mode (target: the int8 mode
may move Fashion-MNIST top-1 by at most 0.3 points and perplexity by 1%).

    python3 -m tools.eval_precision            # Fashion-MNIST test set, fp32 and int8

Fashion-MNIST comes from Debian (`apt-get install -y dataset-fashion-mnist`).
Prints the CPU, the kernels, each mode's top-1 and the time it took.
"""
from __future__ import annotations

import argparse
import sys
import time

try:
    import bitnn
    from tools.common import machine_info
    from tools.fashion_mnist import load_split
except ModuleNotFoundError as e:  # run as a file, or from another directory
    sys.exit(f"{e}: run this from the repository root as python3 -m tools.eval_precision")


def fashion(precisions, threads):
    x, y = load_split("test")
    out = {}
    for prec in precisions:
        with bitnn.load("fashion", precision=prec, threads=threads) as m:
            t = time.perf_counter()
            probs = m.predict(x[:, None])
            dt = time.perf_counter() - t
        out[prec] = {"top1": float((probs.argmax(1) == y).mean()), "seconds": dt,
                     "pred": probs.argmax(1)}
    return out, len(y)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    mi = machine_info()
    print(f"cpu: {mi['cpu']}; kernel {mi['bitnn'].get('kernel')}, "
          f"int8 kernel {mi['bitnn'].get('int8_kernel')}")
    try:
        res, n = fashion(["fp32", "int8"], args.threads)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"\nFashion-MNIST test set ({n:,} images), shipped model bitnn/models/fashion.bnb\n")
    print("| precision | top-1 | images/s |")
    print("|---|---:|---:|")
    for prec, r in res.items():
        print(f"| {prec} | {r['top1']:.4f} | {n / r['seconds']:,.0f} |")
    d = 100 * (res["int8"]["top1"] - res["fp32"]["top1"])
    agree = float((res["int8"]["pred"] == res["fp32"]["pred"]).mean())
    print(f"\nint8 - fp32: {d:+.2f} points of top-1 (target: at most 0.3 in absolute value); "
          f"the two modes predict the same class for {100 * agree:.2f}% of the images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
