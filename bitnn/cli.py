"""bitnn-run: run bitnn models from the command line.

    bitnn-run -p "ROMEO:" [-m MODEL] [-n N] [--temp T] ...   # generate text (the default command)
    bitnn-run classify [-m MODEL] [-k TOP_K] [-t THREADS] [--json] IMAGE...
    bitnn-run info [--json]  # version, CPU features, kernels, threads, bundled models
    bitnn-run perplexity [-m MODEL] -f FILE [-c N] [--stride N]   # see bitnn/perplexity.py
    bitnn-run serve [-m MODEL]... [--host H] [--port P]   # HTTP server (bitnn/serve.py)

One argparse parser with a subcommand per entry of COMMANDS: to add a command,
write a function that adds its subparser (and sets ``func``, the function
that runs it and returns the exit status) and list it there; a command that
runs a model takes -m/--model, -t/--threads and --precision from
add_model_arg and add_compute_args, so that they read and check the same
everywhere. User errors are one line on stderr and a non-zero exit, never a
traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

from bitnn._core import PRECISIONS
from bitnn.model import CLASSIFY_TOP_K, SAMPLING_DEFAULTS

DEFAULT_LM = "shakespeare"
DEFAULT_CLASSIFIER = "fashion"
DEFAULT_COMMAND = "generate"  # what runs when the first argument is not a command


class UserError(Exception):
    """A mistake in the command line or its input: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        print(f"{self.prog}: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


def _ranged(kind, ok, what):
    """An argparse type: kind(text), which must be finite and pass ok(value)."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if v != v or v in (float("inf"), float("-inf")) or not ok(v):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {what}")
        return v
    return parse


MAX_THREADS = 1024  # the most compute threads a command takes


def add_model_arg(p, default) -> None:
    """-m/--model: a .bnb file or a bundled model name (generate, classify, perplexity)."""
    p.add_argument("-m", "--model", default=default,
                   help="a .bnb file or a bundled model name (default: %(default)s)")


def add_compute_args(p, precision=True, threads_help="compute threads") -> None:
    """-t/--threads and (unless ``precision=False``) --precision: the options
    every command that runs a model shares, defined once here."""
    p.add_argument("-t", "--threads",
                   type=_ranged(int, lambda v: 1 <= v <= MAX_THREADS, f"from 1 to {MAX_THREADS}"),
                   default=None,
                   help=f"{threads_help} (default: BITNN_NUM_THREADS, else all usable CPUs)")
    if precision:
        p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="numeric mode: fp32 (exact) or int8 (activations quantized to int8, "
                            "faster; docs/packing.md) (default: %(default)s)")


def _check_compute_env(threads) -> None:
    """BITNN_KERNEL / BITNN_NUM_THREADS errors now, as one line, not at the first forward pass."""
    from bitnn import KernelError, _core

    try:
        _core.default_kernel()
        if threads is None:
            _core.default_threads()
    except (KernelError, ValueError) as e:
        raise UserError(str(e)) from None


def _open_model(args, kind, wrong_kind, **load_kw):
    """bitnn.load(args.model, **load_kw) of the wanted kind; UserError otherwise."""
    import bitnn

    _check_compute_env(args.threads)
    try:
        model = bitnn.load(args.model, threads=args.threads, **load_kw)
    except (OSError, ValueError) as e:  # missing, a directory, unreadable, malformed
        raise UserError(str(e)) from None
    if getattr(model, "kind", None) != kind:
        model.close()
        raise UserError(f"{args.model} {wrong_kind}")
    return model


# ------------------------------------------------------------------ generate
def _read_prompt(args) -> str:
    if args.prompt is not None and args.file is not None:
        raise UserError("give -p/--prompt or -f/--file, not both")
    if args.file is None:
        prompt = args.prompt
    else:
        try:
            if args.file == "-":
                prompt = sys.stdin.buffer.read().decode("utf-8")
            else:
                with open(args.file, encoding="utf-8") as fh:
                    prompt = fh.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{'stdin' if args.file == '-' else args.file}: {e}") from None
    if not prompt:
        raise UserError("the prompt is empty: give -p TEXT, -f FILE or -f - (stdin)")
    return prompt


def _generate(args) -> int:
    prompt = _read_prompt(args)
    model = _open_model(args, "lm", "is not a language model (for images use 'bitnn-run classify')",
                        precision=args.precision)
    with model:
        if args.ctx_size is not None and args.ctx_size > model.max_len:
            raise UserError(f"-c/--ctx-size {args.ctx_size} is larger than the model's max_len "
                            f"({model.max_len})")
        if model.tokenizer is None:
            raise UserError(f"{args.model} has no tokenizer, so it cannot take a text prompt")
        if args.seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
            print(f"bitnn-run: seed {seed}", file=sys.stderr)
        else:
            seed = args.seed
        try:
            pieces = model.generate(prompt, args.n_predict, temperature=args.temp,
                                    top_k=args.top_k, top_p=args.top_p,
                                    repetition_penalty=args.repeat_penalty, seed=seed,
                                    stream=True, ctx_size=args.ctx_size)
        except ValueError as e:
            raise UserError(str(e)) from None
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


def add_generate(sub) -> None:
    d = SAMPLING_DEFAULTS
    p = sub.add_parser(
        "generate", help=f"generate text with a language model (the default command; "
                         f"model: {DEFAULT_LM})",
        description="Generate text with a binary language model. Only the generated text "
                    "goes to stdout; the seed and the timings go to stderr. 'bitnn-run -p TEXT' "
                    "is short for 'bitnn-run generate -p TEXT'. The defaults are those of "
                    "LanguageModel.generate, so the same seed writes the same text.")
    add_model_arg(p, DEFAULT_LM)
    p.add_argument("-p", "--prompt", help="prompt text (default: none; give -p or -f)")
    p.add_argument("-f", "--file", help="read the prompt from this UTF-8 file, '-' for stdin "
                                        "(default: none)")
    p.add_argument("-n", "--n-predict", type=_ranged(int, lambda v: v >= 0, ">= 0"),
                   default=d["max_new_tokens"], help="tokens to generate (default: %(default)s)")
    p.add_argument("-c", "--ctx-size", type=_ranged(int, lambda v: v >= 2, "at least 2"),
                   default=None,
                   help="context size in tokens, 2 to the model's max_len (default: max_len); "
                        "when it is full, the last half is kept and generation goes on")
    add_compute_args(p)
    p.add_argument("--temp", type=_ranged(float, lambda v: v >= 0, "a finite number >= 0"),
                   default=d["temperature"], help="temperature; 0 = greedy (default: %(default)s)")
    p.add_argument("--top-k", type=_ranged(int, lambda v: v >= 0, ">= 0"), default=d["top_k"],
                   help="top-k sampling, 0 = off (default: %(default)s)")
    p.add_argument("--top-p", type=_ranged(float, lambda v: 0 < v <= 1, "in (0, 1]"),
                   default=d["top_p"],
                   help="top-p (nucleus) sampling, 1 = off (default: %(default)s)")
    p.add_argument("-s", "--seed", type=_ranged(int, lambda v: 0 <= v < 2**64, "from 0 to 2^64-1"),
                   default=None, help="random seed (default: random, printed on stderr)")
    p.add_argument("--repeat-penalty", type=_ranged(float, lambda v: v > 0, "a positive number"),
                   default=d["repetition_penalty"],
                   help="penalty for tokens among the last 64, 1 = off (default: %(default)s)")
    p.set_defaults(func=_generate)


# ------------------------------------------------------------------ classify
def _classify(args) -> int:
    from bitnn.imageio import load_image

    model = _open_model(args, "classifier", "is not an image classifier",
                        precision=args.precision)
    with model:
        if args.calibrated and model.temperature is None:
            raise UserError(f"{args.model} has no calibration (export it with "
                            "bitnn.export(..., calibration=(x_val, y_val)))")
        C, H, W = model.input_shape
        status = 0
        results = []
        for path in args.images:
            try:
                img = load_image(path, C, H, W)
                t0 = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    top = model.classify(img, top_k=args.top_k, layout="NHWC",
                                         preprocessed=args.preprocessed,
                                         calibrated=args.calibrated)[0]
                ms = (time.perf_counter() - t0) * 1e3
            except (OSError, ValueError, TypeError) as e:
                print(f"bitnn-run: {path}: {e}", file=sys.stderr)
                status = 1
                continue
            for w in caught:
                print(f"bitnn-run: {path}: warning: {w.message}", file=sys.stderr)
            results.append({"image": path, "top": [{"label": lab, "prob": p} for lab, p in top],
                            "ms": ms})
            if not args.json:
                print(f"{path}:")
                for label, p in top:
                    print(f"  {p:7.2%}  {label}")
                print(f"  ({ms:.2f} ms)", file=sys.stderr)
        if args.json:
            print(json.dumps(results, indent=2))
        elif results and not args.calibrated and model.max_probability is not None:
            print(f"bitnn-run: note: this model's probabilities cannot exceed "
                  f"{model.max_probability:.1%} (its last layer normalizes the scores); they "
                  "rank the classes but are not confidences"
                  + (" (--calibrated gives calibrated ones)" if model.temperature else ""),
                  file=sys.stderr)
    return status


def add_classify(sub) -> None:
    p = sub.add_parser(
        "classify", help="classify image files (PNG, PGM/PPM, .npy; other formats with Pillow)",
        description="Classify image files. Images are converted to the model's channels "
                    "(RGB to grey with ITU-R 601 weights, grey repeated for RGB models; alpha "
                    "dropped) and resized to its input size (area averaging when shrinking, "
                    "bilinear when growing); see bitnn.imageio. A .npy file holds pixels "
                    "0..255 (uint8 or float) unless --preprocessed is given. The bundled "
                    "'fashion' model expects a light object on a dark background, like "
                    "Fashion-MNIST.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_model_arg(p, DEFAULT_CLASSIFIER)
    p.add_argument("-k", "--top-k", type=_ranged(int, lambda v: v >= 1, "at least 1"),
                   default=CLASSIFY_TOP_K, help="labels to print per image (default: %(default)s)")
    add_compute_args(p)
    p.add_argument("--json", action="store_true", help="print results as JSON (default: off)")
    p.add_argument("--preprocessed", action="store_true",
                   help=".npy inputs are float tensors already normalized for the model "
                        "(default: off: pixels)")
    p.add_argument("--calibrated", action="store_true",
                   help="calibrated probabilities, for models exported with calibration "
                        "(default: off)")
    p.set_defaults(func=_classify)


# ---------------------------------------------------------------------- info
def _info(args) -> int:
    import bitnn
    from bitnn.model import bundled_models

    info = bitnn.system_info()
    info["bundled_models"] = {k: str(v) for k, v in bundled_models().items()}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0

    def text(v):
        if isinstance(v, (list, tuple)):
            return ", ".join(map(str, v)) or "none"
        return "none" if v is None else str(v)

    shown = {"version", "bundled_models", "kernel_error", "threads_error", "available_cpus"}
    print(f"bitnn {info['version']}")
    for key, value in info.items():
        if key in shown:
            continue
        if key == "kernel" and value is None:
            value = f"none ({info.get('kernel_error')})"
        elif key == "threads":
            value = (f"{value} (usable CPUs: {info['available_cpus']})" if value is not None
                     else f"none ({info.get('threads_error')})")
        label = {"cpu_features": "CPU features", "kernel": "kernel in use",
                 "threads": "default threads"}.get(key, key.replace("_", " "))
        print(f"  {label + ':':<20}{text(value)}")
    print("  bundled models:" + ("" if info["bundled_models"] else "     none"))
    for name, path in info["bundled_models"].items():
        print(f"    {name:<16}  {path}")
    return 0


def add_info(sub) -> None:
    p = sub.add_parser("info", help="show version, CPU features, kernels and bundled models",
                       description="Show the version, the CPU features, the kernels compiled in "
                                   "and the one in use, the default thread count and the "
                                   "bundled models.")
    p.add_argument("--json", action="store_true", help="print as JSON (default: off)")
    p.set_defaults(func=_info)


def add_perplexity(sub) -> None:
    from bitnn import perplexity

    perplexity.add_parser(sub, DEFAULT_LM)


def add_serve(sub) -> None:
    from bitnn import serve  # its options live there; Starlette is imported only when it runs

    serve.add_parser(sub)


# Subcommands: name -> function adding its parser to the subparsers object.
COMMANDS = {"generate": add_generate, "classify": add_classify, "info": add_info,
            "perplexity": add_perplexity, "serve": add_serve}


def build_parser() -> argparse.ArgumentParser:
    from bitnn._version import __version__

    p = _Parser(prog="bitnn-run",
                description="Run binary normalized neural networks on the CPU. With no command, "
                            f"bitnn-run runs '{DEFAULT_COMMAND}': bitnn-run -p \"ROMEO:\" -n 100. "
                            "'bitnn-run COMMAND --help' shows a command's options.")
    p.add_argument("--version", action="version", version=f"bitnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for add in COMMANDS.values():
        add(sub)
    return p


def _quiet_stdout() -> None:
    """After a closed pipe: send further output (the interpreter's final flush) nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = [DEFAULT_COMMAND] + argv
    args = build_parser().parse_args(argv)
    from bitnn import KernelError

    try:
        return args.func(args)
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        return 130
    except UserError as e:
        print(f"bitnn-run: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KernelError) as e:  # from the environment or the input
        print(f"bitnn-run: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: commands living in other
    # modules (bitnn.perplexity) import bitnn.cli, and its UserError must be the one caught.
    from bitnn.cli import main as _main

    sys.exit(_main())
