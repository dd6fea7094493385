"""Pieces shared by the training and benchmark scripts in tools/."""
from __future__ import annotations

import argparse
import math
import os
import platform
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
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def lr_factor(step: int, warmup: int, total: int, min_frac: float) -> float:
    """Multiplier of the peak lr at optimiser step ``step`` (0-based): linear
    warmup over ``warmup`` steps, then cosine decay to ``min_frac``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return min_frac + (1.0 - min_frac) * 0.5 * (1.0 + math.cos(math.pi * t))


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
    """CPU, Python, numpy, torch and bitnn.system_info() for a benchmark report."""
    import numpy as np

    info = {"cpu": cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "numpy": np.__version__}
    try:
        import bitnn

        info["bitnn"] = bitnn.system_info()
    except Exception as e:  # noqa: BLE001 - report, don't fail
        info["bitnn"] = f"unavailable: {e}"
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info
