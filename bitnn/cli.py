"""bitnn-run: run bitnn models from the command line.

    bitnn-run classify [-m MODEL] [-k TOP_K] [-t THREADS] [--json] IMAGE...
    bitnn-run info          # version, CPU features, kernels, threads, bundled models
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _classify(args) -> int:
    import bitnn
    from bitnn.imageio import fit_image, read_image

    try:
        model = bitnn.load(args.model, threads=args.threads)
    except (FileNotFoundError, bitnn.FormatError, ValueError) as e:
        print(f"bitnn-run: {e}", file=sys.stderr)
        return 2
    with model:
        if getattr(model, "kind", None) != "classifier":
            print(f"bitnn-run: {args.model} is not an image classifier", file=sys.stderr)
            return 2
        C, H, W = model.input_shape
        status = 0
        results = []
        for path in args.images:
            try:
                img = fit_image(read_image(path), C, H, W)
            except (OSError, ValueError) as e:
                print(f"bitnn-run: {path}: {e}", file=sys.stderr)
                status = 1
                continue
            t0 = time.perf_counter()
            top = model.classify(img, top_k=args.top_k, layout="NHWC")[0]
            ms = (time.perf_counter() - t0) * 1e3
            results.append({"image": path, "top": [{"label": l, "prob": p} for l, p in top],
                            "ms": ms})
            if not args.json:
                print(f"{path}:")
                for label, p in top:
                    print(f"  {p:7.2%}  {label}")
                print(f"  ({ms:.2f} ms)", file=sys.stderr)
        if args.json:
            print(json.dumps(results, indent=2))
    return status


def _info(args) -> int:
    import bitnn
    from bitnn.model import bundled_models

    info = bitnn.system_info()
    info["bundled_models"] = {k: str(v) for k, v in bundled_models().items()}
    for k, v in info.items():
        print(f"{k:18} {', '.join(v) if isinstance(v, list) else v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bitnn-run",
                                description="Run binary normalized neural networks on the CPU.")
    from bitnn._version import __version__

    p.add_argument("--version", action="version", version=f"bitnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    c = sub.add_parser("classify", help="classify image files (PNG, PGM/PPM, .npy; others "
                       "with Pillow)")
    c.add_argument("images", nargs="+", metavar="IMAGE")
    c.add_argument("-m", "--model", default="fashion",
                   help="a .bnb file or the name of a bundled model (default: fashion)")
    c.add_argument("-k", "--top-k", type=int, default=3, help="labels to print per image")
    c.add_argument("-t", "--threads", type=int, default=None,
                   help="compute threads (default: BITNN_NUM_THREADS, else all usable CPUs)")
    c.add_argument("--json", action="store_true", help="print results as JSON")
    c.set_defaults(func=_classify)
    i = sub.add_parser("info", help="show version, CPU features, kernels and bundled models")
    i.set_defaults(func=_info)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "top_k", 1) < 1:
        parser.error("--top-k must be at least 1")
    if getattr(args, "threads", None) is not None and not 1 <= args.threads <= 1024:
        parser.error("--threads must be from 1 to 1024")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
