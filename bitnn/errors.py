"""Exceptions raised by bitnn."""


class FormatError(ValueError):
    """A .bnb model file is malformed, truncated or inconsistent."""


class KernelError(RuntimeError):
    """A compute kernel was asked for that this build or this CPU cannot run."""
