"""bitnn: binary normalized neural networks on ordinary CPUs.

``import bitnn`` needs only numpy. The PyTorch training layers live in
:mod:`bitnn.nn` and are imported only when used.
"""
from bitnn._version import __version__
from bitnn.errors import FormatError, KernelError

try:
    from bitnn import _core  # noqa: F401  (the compiled C core)
except ImportError as _e:
    import os as _os

    raise ImportError(
        f"bitnn's compiled core (bitnn._core) is missing in {_os.path.dirname(__file__)}: "
        "Python found this source tree before an installed bitnn (running from the "
        "repository root does that). Build it in place with 'python3 setup.py build_ext "
        "--inplace', or run from another directory."
        + ("" if "partially initialized" in str(_e) else f" ({_e})")) from None
from bitnn.ops import PackedWeights, linear, pack_bits, unpack_bits

__all__ = ["__version__", "FormatError", "KernelError", "linear", "PackedWeights", "pack_bits",
           "unpack_bits", "system_info", "load", "export"]


def system_info() -> dict:
    """What this copy of bitnn can do on this machine.

    Keys: ``version``, ``cpu_features`` (usable by this process: cpuid and OS
    support), ``kernels_compiled``, ``kernels_supported``, ``kernel`` (the one
    used by default; ``None`` and ``kernel_error`` set when BITNN_KERNEL
    asks for one that cannot run), ``threads`` (default thread count),
    ``available_cpus``, ``precisions`` (numeric modes), ``precision`` (the
    default of :func:`load`), ``int8_kernel`` (the kernel that precision
    "int8" runs with the default kernel).
    """
    from bitnn import _core

    info = {
        "version": __version__,
        "cpu_features": _core.cpu_features(),
        "kernels_compiled": _core.kernels_compiled(),
        "kernels_supported": _core.kernels_supported(),
        "available_cpus": _core.available_cpus(),
    }
    info["precisions"] = list(_core.PRECISIONS)
    info["precision"] = "fp32"  # the default of bitnn.load
    try:
        info["kernel"] = _core.default_kernel()
        info["int8_kernel"] = _core.int8_kernel()
    except KernelError as e:
        info["kernel"] = None
        info["kernel_error"] = str(e)
    try:
        info["threads"] = _core.default_threads()
    except ValueError as e:
        info["threads"] = None
        info["threads_error"] = str(e)
    return info


def load(path, threads=None, *, mmap=True, kernel=None, precision="fp32"):
    """Open a .bnb model file or a bundled model by name; see :func:`bitnn.model.load`."""
    from bitnn.model import load as _load

    return _load(path, threads, mmap=mmap, kernel=kernel, precision=precision)


def export(model, path, **metadata) -> int:
    """Write a trained binary PyTorch model to a .bnb file (returns its size in bytes);
    see :func:`bitnn.exporter.export`."""
    from bitnn.exporter import export as _export

    return _export(model, path, **metadata)


def __getattr__(name):
    # Torch-dependent parts load on first use so that `import bitnn` stays light.
    if name == "nn":
        import importlib

        return importlib.import_module("bitnn.nn")
    raise AttributeError(f"module 'bitnn' has no attribute {name!r}")
