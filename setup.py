"""Build the C core (csrc/) and the Cython binding bitnn._core.

The portable core is compiled with the target's baseline flags. Each SIMD
kernel file is compiled on its own with the flags of its instruction set and
is only called after run-time CPU detection (csrc/kernels/cpu.c), so the installed
package runs on any CPU of the architecture. Nothing uses -march=native.

Environment: BITNN_NO_SIMD=1 builds the reference kernel only.
"""
import glob
import importlib.util
import os
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def load_sources():
    """csrc/sources.py: the one list of C files, include folders and flags (tests/c/ reads it
    too)."""
    path = os.path.join("csrc", "sources.py")
    spec = importlib.util.spec_from_file_location("bitnn_sources", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOURCES = load_sources()
CORE_SOURCES = ["csrc/" + f for f in SOURCES.core_sources()]
CORE_FLAGS = SOURCES.FLAGS
# The header folders, for the C core and for the Cython module's cdef extern lines.
INCLUDE_DIRS = SOURCES.include_dirs("csrc")
HEADERS = sorted(h for d in INCLUDE_DIRS for h in glob.glob(os.path.join(d, "*.h")))
# csrc/include/bitnn.h gets the version of bitnn/_version.py from this define.
VERSION_MACRO = SOURCES.version_macro()


def simd_sources():
    """(source, flags, macro) for the SIMD kernels of the machine we build for."""
    if os.environ.get("BITNN_NO_SIMD") == "1":
        return []
    return [("csrc/" + f, flags, macro) for f, macro, flags in SOURCES.simd_sources()]


class BuildCore(build_ext):
    """Compile csrc/ into objects with per-file flags, then link them in."""

    def _accepts(self, flags, source):
        """Whether the compiler takes a kernel file's flags (an older GCC lacks -mamx-*):
        a kernel it cannot build is left out, and run-time dispatch never picks it."""
        try:
            from setuptools.errors import CompileError
        except ImportError:  # older setuptools
            from distutils.errors import CompileError

        with tempfile.TemporaryDirectory() as d:
            probe = os.path.join(d, "probe.c")
            with open(probe, "w") as f:
                f.write("int bitnn_probe;\n")
            try:
                self.compiler.compile([probe], output_dir=d, extra_postargs=flags)
                return True
            except CompileError:
                print(f"bitnn: the compiler does not take {' '.join(flags)}: building "
                      f"without {source}", file=sys.stderr)
                return False

    def build_extension(self, ext):
        if self.compiler.compiler_type == "msvc":
            sys.exit("bitnn needs a GCC- or Clang-compatible compiler (POSIX threads)")
        simd = [k for k in simd_sources() if self._accepts(k[1], k[0])]
        macros = [(macro, "1") for _, _, macro in simd] + [VERSION_MACRO]
        objects = self.compiler.compile(CORE_SOURCES, output_dir=self.build_temp,
                                        macros=macros, include_dirs=INCLUDE_DIRS,
                                        extra_postargs=CORE_FLAGS, depends=HEADERS)
        for source, flags, _ in simd:
            objects += self.compiler.compile([source], output_dir=self.build_temp,
                                             macros=[VERSION_MACRO], include_dirs=INCLUDE_DIRS,
                                             extra_postargs=CORE_FLAGS + flags, depends=HEADERS)
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


extensions = [
    Extension(
        "bitnn._core",
        sources=["bitnn/_core.pyx"],
        # Any C change must relink the extension (the core objects are built in BuildCore).
        depends=sorted(glob.glob("csrc/**/*.[ch]", recursive=True) + glob.glob("bitnn/*.pxi")
                       + ["bitnn/_core.pxd", "csrc/sources.py", "bitnn/_version.py"]),
        include_dirs=INCLUDE_DIRS + [np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), VERSION_MACRO],
        extra_compile_args=["-O2"],
        libraries=["m"],
        extra_link_args=["-pthread"],
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildCore},
)
