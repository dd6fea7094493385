"""bitnn-run: run bitnn models from the command line.

    bitnn-run -p "ROMEO:" [-m MODEL] [-n N] [--temp T] ...   # generate text (default)
    bitnn-run classify [-m MODEL] [-k TOP_K] [-t THREADS] [--json] IMAGE...
    bitnn-run info          # version, CPU features, kernels, threads, bundled models
    bitnn-run perplexity [-m MODEL] -f FILE [-c N] [--stride N]   # see bitnn/perplexity.py
    bitnn-run serve [-m MODEL]... [--host H] [--port P]   # HTTP server (bitnn/serve.py)
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _open_model(args, kind, wrong_kind, **load_kw):
    """bitnn.load(args.model, **load_kw) of the wanted kind, or None after an error message."""
    import bitnn

    try:
        model = bitnn.load(args.model, threads=args.threads, **load_kw)
    except (FileNotFoundError, bitnn.FormatError, ValueError) as e:
        print(f"bitnn-run: {e}", file=sys.stderr)
        return None
    if getattr(model, "kind", None) != kind:
        model.close()
        print(f"bitnn-run: {args.model} {wrong_kind}", file=sys.stderr)
        return None
    return model


def _classify(args) -> int:
    from bitnn.imageio import fit_image, read_image

    model = _open_model(args, "classifier", "is not an image classifier")
    if model is None:
        return 2
    with model:
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


DEFAULT_LM = "shakespeare"


def _generate(args) -> int:
    if args.prompt is not None and args.file is not None:
        print("bitnn-run: give -p/--prompt or -f/--file, not both", file=sys.stderr)
        return 2
    if args.file is not None:
        try:
            with open(args.file, encoding="utf-8") as fh:
                prompt = fh.read()
        except (OSError, UnicodeDecodeError) as e:
            print(f"bitnn-run: {args.file}: {e}", file=sys.stderr)
            return 2
    else:
        prompt = args.prompt
    if not prompt:
        print("bitnn-run: the prompt is empty: give -p TEXT or -f FILE", file=sys.stderr)
        return 2
    model = _open_model(args, "lm", "is not a language model (for images use 'bitnn-run classify')")
    if model is None:
        return 2
    with model:
        if args.seed is None:
            seed = int.from_bytes(__import__("os").urandom(4), "little")
            print(f"bitnn-run: seed {seed}", file=sys.stderr)
        else:
            seed = args.seed
        try:
            pieces = model.generate(prompt, args.n_predict, temperature=args.temp,
                                    top_k=args.top_k, top_p=args.top_p,
                                    repetition_penalty=args.repeat_penalty, seed=seed,
                                    stream=True, ctx_size=args.ctx_size)
        except ValueError as e:
            print(f"bitnn-run: {e}", file=sys.stderr)
            return 2
        status = 0
        try:
            for piece in pieces:
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            status = 130
        sys.stdout.write("\n")
        sys.stdout.flush()
        st = model.last_stats or {}
        pt, ps = st.get("prompt_tokens", 0), st.get("prompt_seconds", 0.0)
        gt, gs = st.get("generated_tokens", 0), st.get("generation_seconds", 0.0)
        print(f"bitnn-run: prompt {pt} tokens in {ps * 1e3:.1f} ms "
              f"({pt / ps if ps > 0 else 0:.1f} tokens/s); generated {gt} tokens in "
              f"{gs * 1e3:.1f} ms ({gt / gs if gs > 0 else 0:.1f} tokens/s)", file=sys.stderr)
        return status


def build_generate_parser() -> argparse.ArgumentParser:
    from bitnn._version import __version__

    p = argparse.ArgumentParser(
        prog="bitnn-run",
        description="Generate text with a binary language model (default: the bundled "
                    f"'{DEFAULT_LM}' model). Only generated text goes to stdout; the seed and "
                    "timings go to stderr. Other commands: 'bitnn-run classify IMAGE...' "
                    "(image classifier), 'bitnn-run perplexity -f FILE', 'bitnn-run info'.")
    p.add_argument("--version", action="version", version=f"bitnn {__version__}")
    p.add_argument("-m", "--model", default=DEFAULT_LM,
                   help=f"a .bnb file or a bundled model name (default: {DEFAULT_LM})")
    p.add_argument("-p", "--prompt", help="prompt text")
    p.add_argument("-f", "--file", help="read the prompt from this UTF-8 file")
    p.add_argument("-n", "--n-predict", type=int, default=128,
                   help="tokens to generate (default: 128)")
    p.add_argument("-c", "--ctx-size", type=int, default=None,
                   help="context size in tokens (default: the model's max_len); when it is "
                        "full, the last half is kept and generation goes on")
    p.add_argument("-t", "--threads", type=int, default=None,
                   help="compute threads (default: BITNN_NUM_THREADS, else all usable CPUs)")
    p.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=40, help="top-k sampling, 0 = off (default: 40)")
    p.add_argument("--top-p", type=float, default=0.95,
                   help="top-p (nucleus) sampling, 1 = off (default: 0.95)")
    p.add_argument("-s", "--seed", type=int, default=None,
                   help="random seed (default: random, printed on stderr)")
    p.add_argument("--repeat-penalty", type=float, default=1.1,
                   help="penalty for tokens among the last 64, 1 = off (default: 1.1)")
    return p


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
    from bitnn import perplexity

    perplexity.add_parser(sub, DEFAULT_LM)
    from bitnn import serve  # its options live there; Starlette is imported only when it runs

    serve.add_parser(sub)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("classify", "info", "perplexity", "serve"):
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command == "classify" and args.top_k < 1:
            parser.error("--top-k must be at least 1")
    else:
        parser = build_generate_parser()
        args = parser.parse_args(argv)
        args.func = _generate
        if args.n_predict < 0:
            parser.error("-n/--n-predict must be >= 0")
        if not (args.temp >= 0 and args.temp != float("inf")):
            parser.error("--temp must be a finite number >= 0")
        if args.top_k < 0:
            parser.error("--top-k must be >= 0")
        if not 0 < args.top_p <= 1:
            parser.error("--top-p must be in (0, 1]")
        if not (args.repeat_penalty > 0 and args.repeat_penalty != float("inf")):
            parser.error("--repeat-penalty must be a positive number")
        if args.seed is not None and not 0 <= args.seed < 2**64:
            parser.error("--seed must be from 0 to 2^64-1")
        if args.ctx_size is not None and args.ctx_size < 2:
            parser.error("-c/--ctx-size must be at least 2")
    if getattr(args, "threads", None) is not None and not 1 <= args.threads <= 1024:
        parser.error("--threads must be from 1 to 1024")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
