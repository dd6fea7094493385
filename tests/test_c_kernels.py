"""Runs tests/c/run.sh: every kernel against the reference in plain C.

* native: the host's kernels (x86: ref, AVX2, AVX-512) built as setup.py does;
* sanitize: the same under AddressSanitizer + UBSan;
* aarch64: cross-compiled and run under qemu-aarch64, which checks the NEON
  kernel on an x86 machine (needs `apt-get install gcc-aarch64-linux-gnu
  qemu-user`; skipped without them).

Each part is skipped cleanly when its tools are missing (run.sh exits 77),
except under BITNN_CI=1 (set by .ci/run, which installs the tools): there a
part that cannot run fails, so CI never passes with NEON silently unchecked.

Also a short run of the loader fuzzer (tests/c/run_fuzz.sh, AddressSanitizer
+ UBSan); .ci/run runs it longer.
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
        reason = reason[0] if reason else f"{part}: skipped"
        if os.environ.get("BITNN_CI") == "1":
            pytest.fail(f"BITNN_CI=1 and {reason}")
        pytest.skip(reason)
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


def test_loader_fuzz_briefly():
    """A few seconds of tests/c/run_fuzz.sh: no sanitizer report, some inputs valid."""
    if shutil.which("python3") is None:
        pytest.skip("run_fuzz.sh writes its seeds with python3")
    p = subprocess.run(["sh", os.path.join(HERE, "c", "run_fuzz.sh"), "3"], capture_output=True,
                       text=True, timeout=600)
    out = p.stdout + p.stderr
    if p.returncode != 0 and "fsanitize" in out and "fuzz_bnb:" not in out \
            and os.environ.get("BITNN_CI") != "1":
        pytest.skip("this compiler cannot build with -fsanitize=address,undefined")
    assert p.returncode == 0, out[-4000:]
    m = re.search(r"fuzz_bnb: (\d+) inputs: (\d+) valid files, (\d+) rejected", out)
    assert m and int(m.group(1)) > 1000 and int(m.group(2)) > 0, out[-2000:]
