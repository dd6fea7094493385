"""Runs tests/c/run.sh: every kernel against the reference in plain C.

* native: the host's kernels (x86: ref, AVX2, AVX-512) built as setup.py does;
* sanitize: the same under AddressSanitizer + UBSan;
* aarch64: cross-compiled and run under qemu-aarch64, which checks the NEON
  kernel on an x86 machine (needs `apt-get install gcc-aarch64-linux-gnu
  qemu-user`; skipped without them).

Each part is skipped cleanly when its tools are missing (run.sh exits 77).
"""

import os
import re
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "c", "run.sh")
CC = os.environ.get("CC", "cc")

pytestmark = [
    pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash"),
    pytest.mark.skipif(shutil.which(CC) is None, reason=f"no C compiler ({CC})"),
]


def run_part(part):
    p = subprocess.run(["bash", RUN, part], capture_output=True, text=True, timeout=900)
    out = p.stdout + p.stderr
    if p.returncode == 77 or "SKIPPED" in out:
        reason = [line for line in out.splitlines() if "SKIPPED" in line or "host is" in line]
        pytest.skip(reason[0] if reason else f"{part}: skipped")
    assert p.returncode == 0, f"tests/c/run.sh {part} exited {p.returncode}:\n{out[-6000:]}"
    totals = re.findall(r"^(\d+) passed, (\d+) failed$", out, re.M)
    assert totals, f"no 'N passed, M failed' line:\n{out[-3000:]}"
    for passed, failed in totals:
        assert int(failed) == 0 and int(passed) > 0, out[-3000:]
    return out


def test_native_kernels_match_reference():
    out = run_part("native")
    assert "kernels: ref" in out


def test_kernels_under_sanitizers():
    run_part("sanitize")


def test_neon_kernel_under_qemu():
    out = run_part("aarch64")
    if "host is aarch64" not in out:
        assert "kernels: ref neon" in out, out[-3000:]
