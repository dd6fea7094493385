"""The C sources of bitnn, their include folders and the flags they are
compiled with: the one list.

setup.py imports this file; tests/c/run.sh, tests/c/run_fuzz.sh and
.ci/sanitize (through setup.py) read it (``python3 csrc/sources.py
flags|includes|core|simd ...``, below). A C file or folder added to, moved in
or removed from csrc/ is changed here and nowhere else. Paths are relative to
csrc/.

The folders: include/ (bitnn.h, the public header), kernels/ (CPU detection,
the kernels, the ops built on them and the thread pool), format/ (the .bnb
loader and its JSON parser), graph/ (the classifier and language-decoder
graphs, the sampler), text/ (the tokenizer and its Unicode tables). Each
core group below is the portable .c files of one folder (kernels/ also holds
the SIMD kernels), so a C harness that links a group links one folder.
"""
import os
import platform
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION_FILE = os.path.join(HERE, os.pardir, "bitnn", "_version.py")

# Every C file, in every build. -ffp-contract=off: no fused multiply-add may
# change a rounding anywhere, so that every kernel matches the reference bit
# for bit (docs/packing.md). Nothing is compiled with -march=native.
FLAGS = ["-O3", "-std=c11", "-fPIC", "-ffp-contract=off", "-Wall", "-Wextra",
         "-Wno-unused-parameter", "-Wno-missing-field-initializers"]

# The folders searched for headers, in this order, by every C and Cython
# compile: a file includes a header by its name alone (``#include "bnb.h"``),
# wherever the two live, so header names are unique across csrc/
# (tests/test_build_config.py checks it).
INCLUDE_DIRS = ["include", "kernels", "format", "graph", "text"]

# The portable core, compiled with FLAGS only, by group (a group is a folder's
# portable files). The extension links every group; the C harnesses link the
# groups they test (tests/c/run.sh: kernels; tests/c/run_fuzz.sh: format).
CORE = {
    "kernels": ["kernels/cpu.c", "kernels/ops.c", "kernels/threadpool.c",
                "kernels/kernel_ref.c"],
    "format": ["format/json.c", "format/bnb.c"],
    "graph": ["graph/conv.c", "graph/model.c", "graph/lm.c", "graph/sampler.c"],
    "text": ["text/tokenizer.c", "text/unicode_tables.c"],
}

# The SIMD kernels per machine: (file, macro, flags). Each file is compiled on
# its own with its flags; the core is compiled with -D<macro>=1 and calls the
# kernel only after run-time CPU detection (csrc/kernels/cpu.c).
SIMD = {
    "x86_64": [("kernels/kernel_avx2.c", "BITNN_HAVE_AVX2", ["-mavx2"]),
               ("kernels/kernel_avx512.c", "BITNN_HAVE_AVX512", ["-mavx512f", "-mavx512bw"]),
               ("kernels/kernel_avx512_vnni.c", "BITNN_HAVE_AVX512VNNI",
                ["-mavx512f", "-mavx512bw", "-mavx512vnni"]),
               ("kernels/kernel_avx512_gfni.c", "BITNN_HAVE_AVX512GFNI",
                ["-mavx512f", "-mavx512bw", "-mavx512vnni", "-mavx512vbmi", "-mgfni"]),
               ("kernels/kernel_amx.c", "BITNN_HAVE_AMX",
                ["-mavx512f", "-mavx512bw", "-mamx-tile", "-mamx-int8"])],
    "aarch64": [("kernels/kernel_neon.c", "BITNN_HAVE_NEON", [])],
}
MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def version() -> str:
    """The package version, read from bitnn/_version.py (its one home)."""
    with open(VERSION_FILE, encoding="utf-8") as f:
        m = re.search(r'^__version__ = "([^"\\]+)"$', f.read(), re.M)
    if not m:
        raise RuntimeError(f"no __version__ = \"...\" line in {VERSION_FILE}")
    return m.group(1)


def version_macro() -> tuple:
    """(name, value) of the define that gives csrc/include/bitnn.h the version."""
    return ("BITNN_VERSION_STRING", f'"{version()}"')


def include_dirs(root: str = None) -> list:
    """INCLUDE_DIRS, relative to csrc/ or, given ``root`` (the csrc folder), joined to it."""
    return [d if root is None else os.path.join(root, d) for d in INCLUDE_DIRS]


def core_sources(*groups: str) -> list:
    """The core files of ``groups`` (all groups if none), relative to csrc/."""
    unknown = [g for g in groups if g not in CORE]
    if unknown:
        raise ValueError(f"unknown source group(s) {unknown}; known: {sorted(CORE)}")
    return [f for g in (groups or CORE) for f in CORE[g]]


def simd_sources(machine: str = None) -> list:
    """(file, macro, flags) of the SIMD kernels for ``machine`` (default: this one)."""
    machine = (machine or platform.machine()).lower()
    return SIMD.get(MACHINES.get(machine, machine), [])


def main(argv) -> int:
    """Print shell words, one a line:
    ``flags``: FLAGS and the version define; ``includes``: the include
    folders; ``core [GROUP...]``: file paths (all relative to csrc/);
    ``simd [MACHINE]``: ``file:macro:flag,flag`` lines."""
    what, args = (argv[0], argv[1:]) if argv else ("", [])
    if what == "flags" and not args:
        name, value = version_macro()
        lines = FLAGS + [f"-D{name}={value}"]
    elif what == "includes" and not args:
        lines = include_dirs()
    elif what == "core":
        try:
            lines = core_sources(*args)
        except ValueError as e:
            print(f"sources.py: {e}", file=sys.stderr)
            return 2
    elif what == "simd" and len(args) <= 1:
        lines = [f"{f}:{m}:{','.join(fl)}" for f, m, fl in simd_sources(*args)]
    else:
        print("usage: sources.py flags | includes | core [GROUP...] | simd [MACHINE]",
              file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
