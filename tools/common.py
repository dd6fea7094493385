"""Pieces shared by the training and benchmark scripts in tools/: argument
checks, the learning-rate schedule, checkpoints, metrics files, progress,
machine descriptions, and the benchmarks' scaffolding (the environment for
engines sharing a process, load averages, report headers, interleaved timing
rounds, markdown tables). Imports no numpy at module level: bench_kernels
sets BLAS variables before numpy is imported."""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import sys
import time

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None


def int_list(text: str) -> list[int]:
    """argparse type: "32,64,128" -> [32, 64, 128]; "" -> []."""
    text = text.strip()
    if not text:
        return []
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def add_output_args(g) -> None:
    """The checkpoint, metrics and export flags of the training scripts."""
    g.add_argument("--checkpoint-dir", default=None,
                   help="write last.pt here (after every epoch; see --resume)")
    g.add_argument("--resume", action="store_true", help="continue from <checkpoint-dir>/last.pt")
    g.add_argument("--metrics", default=None, help="write the metrics JSON here")
    g.add_argument("--state-dict", default=None,
                   help="final weights file (default <checkpoint-dir>/model.pt if a "
                        "checkpoint dir is given)")
    g.add_argument("--out", default=None, help="export the trained binary model (.bnb)")
    g.add_argument("--export-from", default=None,
                   help="skip training: export this --state-dict file to --out")


def check_training_args(p: argparse.ArgumentParser, args, positive=()) -> None:
    """The checks on the flags every training script has; ``positive``: names
    of integer flags that must be >= 1. Errors exit through ``p.error``."""
    if args.resume and not args.checkpoint_dir:
        p.error("--resume needs --checkpoint-dir")
    if args.out and args.fp32:
        p.error("--out exports binary models only; drop --fp32")
    if args.export_from and not args.out:
        p.error("--export-from needs --out")
    for name in positive:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")


def command_line(module: str, argv) -> str:
    """The command that reproduces this run (``argv=None``: this process's own)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join([os.path.basename(sys.executable), "-m", module] + args)


def lr_factor(step: int, warmup: int, total: int, min_frac: float) -> float:
    """Multiplier of the peak lr at optimiser step ``step`` (0-based): linear
    warmup over ``warmup`` steps, then cosine decay to ``min_frac``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return min_frac + (1.0 - min_frac) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_cosine(opt, warmup: int, total: int, min_frac: float):
    """A LambdaLR scheduler of ``opt`` following :func:`lr_factor`."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, warmup, total, min_frac))


def torch_load(path: str):
    """A checkpoint or weights file written by :func:`atomic_save`, on the CPU."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def restore(ck: dict, model, opt, sched) -> None:
    """Load a checkpoint's model, optimizer and scheduler states."""
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])


def state_dict_path(args) -> str | None:
    """Where the final weights go: --state-dict, else <checkpoint-dir>/model.pt."""
    if args.state_dict:
        return args.state_dict
    return os.path.join(args.checkpoint_dir, "model.pt") if args.checkpoint_dir else None


def write_json(path: str, obj, log=print, indent: int = 2, default=None) -> None:
    """Write ``obj`` as indented JSON, creating the directory; ``log`` (None:
    silent) gets "wrote PATH". ``default``: as json.dump's."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent, default=default)
    if log is not None:
        log(f"wrote {path}")


def environment(**extra) -> dict:
    """torch and Python versions, machine and CPU count for a metrics file."""
    import torch

    return {"torch": torch.__version__, "python": platform.python_version(), **extra,
            "machine": platform.machine(), "cpus": os.cpu_count()}


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves half a file."""
    import torch

    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Progress:
    """A tqdm bar, or a line every 10% when tqdm is missing, or nothing.

    ``update(**shown)`` advances one step; ``shown`` maps names to
    ``(value, format)`` pairs, e.g. ``loss=(0.41, ".4f")``.
    """

    def __init__(self, total: int, desc: str, enabled: bool, initial: int = 0, every: int = 20):
        self.total, self.desc, self.n, self.every = total, desc, initial, every
        self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False,
                        dynamic_ncols=True) if (enabled and tqdm is not None) else None
        self.simple = enabled and tqdm is None
        self.t0 = time.time()

    def update(self, **shown) -> None:
        self.n += 1
        text = {k: format(v, f) for k, (v, f) in shown.items()}
        if self.bar is not None:
            self.bar.update(1)
            if self.n % self.every == 0 or self.n == self.total:
                self.bar.set_postfix(**text)
        elif self.simple and (self.n % max(1, self.total // 10) == 0 or self.n == self.total):
            fields = " ".join(f"{k} {v}" for k, v in text.items())
            print(f"  {self.desc} {self.n}/{self.total} {fields} ({time.time() - self.t0:.0f}s)",
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cpu_name() -> str:
    """Model name from /proc/cpuinfo, with the x86 family/model (names can be vague)."""
    cpu = platform.processor() or platform.machine()
    fam = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "model name":
                    cpu = val
                elif key in ("cpu family", "model"):
                    fam[key] = val
                elif not key:
                    break
    except OSError:
        pass
    if fam:
        cpu += f" (family {fam.get('cpu family')}, model {fam.get('model')})"
    return cpu


def machine_info() -> dict:
    """CPU, Python, numpy, bitnn.system_info() and the versions of the peers
    that import (torch, with whether it has oneDNN; onnxruntime) for a
    benchmark report."""
    import numpy as np

    info = {"cpu": cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "numpy": np.__version__,
            "cpu_identity": cpu_identity()}
    try:
        import bitnn

        info["bitnn"] = bitnn.system_info()
    except Exception as e:  # noqa: BLE001 - report, don't fail
        info["bitnn"] = f"unavailable: {e}"
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
    except ImportError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


# x86 (vendor, family) -> [(first model, last model, microarchitecture)], from
# the vendors' family/model numbers; a CPU not listed is reported as unknown.
_X86_MICROARCH = {
    ("AuthenticAMD", 23): [(0x00, 0x2F, "Zen / Zen+"), (0x30, 0xFF, "Zen 2")],
    ("AuthenticAMD", 25): [(0x00, 0x0F, "Zen 3"), (0x10, 0x1F, "Zen 4"), (0x20, 0x5F, "Zen 3"),
                           (0x60, 0x7F, "Zen 4"), (0xA0, 0xAF, "Zen 4")],
    ("AuthenticAMD", 26): [(0x00, 0xFF, "Zen 5")],
    ("GenuineIntel", 6): [(0x55, 0x55, "Skylake-SP / Cascade Lake / Cooper Lake"),
                          (0x6A, 0x6A, "Ice Lake-SP"), (0x6C, 0x6C, "Ice Lake-D"),
                          (0x7D, 0x7E, "Ice Lake (client)"), (0x8C, 0x8D, "Tiger Lake"),
                          (0x8F, 0x8F, "Sapphire Rapids"), (0x97, 0x9A, "Alder Lake"),
                          (0xAA, 0xAC, "Meteor Lake"), (0xAD, 0xAE, "Granite Rapids"),
                          (0xAF, 0xAF, "Sierra Forest"), (0xB7, 0xB7, "Raptor Lake"),
                          (0xBA, 0xBA, "Raptor Lake"), (0xBD, 0xBD, "Lunar Lake"),
                          (0xBF, 0xBF, "Raptor Lake"), (0xC5, 0xC6, "Arrow Lake"),
                          (0xCF, 0xCF, "Emerald Rapids")],
}


def _lscpu_fields() -> dict:
    """``lscpu``'s "Key: value" lines (C locale), or {} when lscpu is missing."""
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "LC_ALL": "C"}, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = {}
    for line in out.splitlines():
        key, sep, val = line.partition(":")
        if sep:
            fields[key.strip()] = val.strip()
    return fields


def _proc_cpuinfo_fields() -> dict:
    """The first processor's /proc/cpuinfo fields under lscpu's key names."""
    names = {"vendor_id": "Vendor ID", "model name": "Model name", "cpu family": "CPU family",
             "model": "Model", "stepping": "Stepping"}
    fields = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                if not key.strip():
                    break
                if key.strip() in names:
                    fields[names[key.strip()]] = val.strip()
    except OSError:
        pass
    return fields


def microarchitecture(vendor: str, family, model) -> str:
    """The x86 microarchitecture of a vendor/family/model, or "unknown"."""
    try:
        family, model = int(family), int(model)
    except (TypeError, ValueError):
        return "unknown"
    for lo, hi, name in _X86_MICROARCH.get((vendor, family), []):
        if lo <= model <= hi:
            return name
    return "unknown"


def cpu_identity() -> dict:
    """Model name, vendor, family/model/stepping, microarchitecture and cache
    sizes of this machine's CPU (lscpu, else /proc/cpuinfo), plus ``summary``,
    the one line every benchmark prints at its top."""
    fields = _lscpu_fields() or _proc_cpuinfo_fields()
    ident = {"model_name": fields.get("Model name") or platform.processor() or platform.machine(),
             "vendor": fields.get("Vendor ID", "unknown"), "family": fields.get("CPU family"),
             "model": fields.get("Model"), "stepping": fields.get("Stepping"),
             "arch": platform.machine()}
    ident["microarchitecture"] = microarchitecture(ident["vendor"], ident["family"],
                                                   ident["model"])
    for key in ("L1d cache", "L2 cache", "L3 cache"):
        if key in fields:
            ident[key.split()[0] + "_cache"] = fields[key]
    where = ident["vendor"] + "".join(f" {k} {ident[k]}" for k in ("family", "model", "stepping")
                                      if ident[k] is not None)
    caches = ", ".join(f"{k.split('_')[0]} {ident[k]}" for k in ("L1d_cache", "L2_cache",
                                                                "L3_cache") if k in ident)
    ident["summary"] = (f"{ident['model_name']} [{ident['arch']}; {where}; microarchitecture "
                        f"{ident['microarchitecture']} (from family/model)]"
                        + (f"; caches: {caches}" if caches else ""))
    return ident


# ------------------------------------------------------------------ benchmarks

# The benchmarks that time several engines in one process set these before
# torch is imported (set_engine_env): PyTorch's idle OpenMP threads must not
# spin on the cores the engine timed next runs on. (ONNX Runtime's intra-op
# threads are told the same per session: bench_classifier.ort_session.)
ENGINE_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def set_engine_env() -> None:
    """ENGINE_ENV into os.environ, where the caller's environment does not set them."""
    for key, value in ENGINE_ENV.items():
        os.environ.setdefault(key, value)


def now() -> str:
    """The local time with its UTC offset, to the second: a report's date."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def load_average() -> list | None:
    """The 1, 5 and 15 minute load averages, or None where the system has none."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def fmt_load(load, sep: str = " ") -> str:
    """Load averages as "0.12 0.34 0.56" (``sep`` between), "?" for None."""
    return "?" if load is None else sep.join(f"{v:.2f}" for v in load)


def load_now() -> str:
    """The 1-minute load average now, formatted: printed next to each timed cell."""
    load = load_average()
    return fmt_load(load and load[:1])


def begin_report(title: str, machine: dict, versions, **fields) -> dict:
    """A benchmark report: date, machine, loadavg_start, then ``fields``.
    Prints its header: title and date, the CPU, the versions of
    ``versions`` (keys of ``machine``), bitnn.system_info() and the load."""
    report = {"date": now(), "machine": machine, "loadavg_start": load_average(), **fields}
    print(f"# {title}  {report['date']}")
    print(f"cpu: {machine['cpu_identity']['summary']} ({machine['cpus']} logical CPUs)")
    print("  ".join(f"{key} {machine.get(key)}" for key in versions))
    print(f"bitnn.system_info(): {machine['bitnn']}")
    print("load average at start: " + fmt_load(report["loadavg_start"]))
    sys.stdout.flush()
    return report


def stop_report_clock(report: dict, t_start: float) -> None:
    """Records loadavg_end and wall_s (seconds since ``t_start``, a time.time())."""
    report["loadavg_end"] = load_average()
    report["wall_s"] = time.time() - t_start


def close_report(report: dict, json_path: str | None) -> None:
    """Prints the closing line (load average, wall time) and writes the
    report as JSON to ``json_path`` when given."""
    print("\nload average at end: " + fmt_load(report["loadavg_end"])
          + f"; wall time {report['wall_s']:.0f} s")
    if json_path:
        write_json(json_path, report, indent=1, default=str)


def time_rounds(measure, names, rounds: int, budget_s: float | None = None) -> dict:
    """{name: [measure(name) of each round]}: up to ``rounds`` rounds, one
    call per name in each, the order rotating from round to round so that
    every engine sees the same background load. With ``budget_s``, no new
    round starts after the second once the rounds took longer than
    ``budget_s`` per name."""
    names = list(names)
    out = {name: [] for name in names}
    t_start = time.perf_counter()
    for r in range(rounds):
        if (budget_s is not None and r >= 2
                and time.perf_counter() - t_start > budget_s * len(names)):
            break
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(measure(name))
    return out


def ratio_key(a: str, b: str) -> str:
    """The key of the ratio of engine a's figure to engine b's: "a / b"."""
    return f"{a} / {b}"


def md_table(head, rows, align: str) -> str:
    """A markdown table: ``head`` and each of ``rows`` are lists of cells;
    ``align`` has a letter per column, "l" (left) or "r" (right)."""
    rule = "|" + "".join({"l": "---|", "r": "---:|"}[a] for a in align)
    return "\n".join([md_row(head), rule] + [md_row(r) for r in rows])


def md_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def verdict(ok: bool) -> str:
    """How the benchmarks print a target check."""
    return "met" if ok else "NOT met"
