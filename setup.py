"""Build the C core (csrc/) and the Cython binding bitnn._core.

The portable core is compiled with the target's baseline flags. Each SIMD
kernel file is compiled on its own with the flags of its instruction set and
is only called after run-time CPU detection (csrc/cpu.c), so the installed
package runs on any CPU of the architecture. Nothing uses -march=native.

Environment: BITNN_NO_SIMD=1 builds the reference kernel only.
"""
import glob
import os
import platform
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CORE_SOURCES = ["csrc/cpu.c", "csrc/ops.c", "csrc/threadpool.c", "csrc/kernel_ref.c",
                "csrc/json.c", "csrc/bnb.c", "csrc/conv.c", "csrc/model.c",
                "csrc/lm.c", "csrc/sampler.c", "csrc/tokenizer.c", "csrc/unicode_tables.c"]
# -ffp-contract=off: no fused multiply-add may change a rounding anywhere, so
# that every kernel matches the reference bit for bit (docs/packing.md).
CORE_FLAGS = ["-O3", "-std=c11", "-fPIC", "-ffp-contract=off", "-Wall", "-Wextra",
              "-Wno-unused-parameter", "-Wno-missing-field-initializers"]


def simd_sources():
    """(source, flags, macro) for the SIMD kernels of the machine we build for."""
    if os.environ.get("BITNN_NO_SIMD") == "1":
        return []
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return [("csrc/kernel_avx2.c", ["-mavx2"], "BITNN_HAVE_AVX2"),
                ("csrc/kernel_avx512.c", ["-mavx512f", "-mavx512bw"], "BITNN_HAVE_AVX512"),
                ("csrc/kernel_avx512_vnni.c", ["-mavx512f", "-mavx512bw", "-mavx512vnni"],
                 "BITNN_HAVE_AVX512VNNI"),
                ("csrc/kernel_avx512_gfni.c", ["-mavx512f", "-mavx512bw", "-mavx512vnni",
                                               "-mavx512vbmi", "-mgfni"], "BITNN_HAVE_AVX512GFNI")]
    if machine in ("aarch64", "arm64"):
        return [("csrc/kernel_neon.c", [], "BITNN_HAVE_NEON")]
    return []


class BuildCore(build_ext):
    """Compile csrc/ into objects with per-file flags, then link them in."""

    def build_extension(self, ext):
        if self.compiler.compiler_type == "msvc":
            sys.exit("bitnn needs a GCC- or Clang-compatible compiler (POSIX threads)")
        simd = simd_sources()
        macros = [(macro, "1") for _, _, macro in simd]
        objects = self.compiler.compile(CORE_SOURCES, output_dir=self.build_temp,
                                        macros=macros, include_dirs=["csrc"],
                                        extra_postargs=CORE_FLAGS, depends=glob.glob("csrc/*.h"))
        for source, flags, _ in simd:
            objects += self.compiler.compile([source], output_dir=self.build_temp,
                                             include_dirs=["csrc"], extra_postargs=CORE_FLAGS + flags,
                                             depends=glob.glob("csrc/*.h"))
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


extensions = [
    Extension(
        "bitnn._core",
        sources=["bitnn/_core.pyx"],
        # Any C change must relink the extension (the core objects are built in BuildCore).
        depends=sorted(glob.glob("csrc/*.[ch]") + glob.glob("bitnn/*.pxi") + ["bitnn/_core.pxd"]),
        include_dirs=["csrc", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O2"],
        libraries=["m"],
        extra_link_args=["-pthread"],
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildCore},
)
