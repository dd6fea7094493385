# The .bnb model file (csrc/format/bnb.h; the format is docs/format.md).
# Included at the end of _core.pyx, so it shares that module's cimports; the
# C declarations and the BnbFile / _BnbHandle attributes are in _core.pxd.
import os as _os

from libc.errno cimport errno

from bitnn.errors import FormatError

cdef enum:
    _ERRLEN = 1024


cdef object _bnb_error(bitnn_status s, const char *err, int sys_errno, object path):
    """The Python exception for a failed bnb_open / bnb_open_buffer."""
    msg = err.decode("utf-8", "replace")
    if s == BITNN_EFORMAT:
        return FormatError(f"{path}: {msg}" if path is not None else msg)
    if s == BITNN_ESYS:
        return OSError(sys_errno, _os.strerror(sys_errno), path)
    if s == BITNN_ENOMEM:
        return MemoryError(msg or "out of memory")
    return RuntimeError(f"bitnn core: {bitnn_status_str(s).decode()}: {msg}")


cdef class _BnbHandle:
    """Owns a bnb_file (declared in _core.pxd); closes it when the last reference goes."""

    def __dealloc__(self):
        if self.ptr != NULL:
            bnb_close(self.ptr)
            self.ptr = NULL


cdef class BnbFile:
    """An open, fully validated .bnb model file (docs/format.md).

    ``BnbFile(path, mmap=True)`` or ``BnbFile.open(path, mmap=True)`` maps
    the file (``mmap=False`` reads it into memory); ``BnbFile.from_bytes(b)``
    validates a copy of an in-memory file. Every check of the format runs
    before this returns: a malformed file raises :class:`bitnn.FormatError`
    (a ValueError) whose message says what is wrong; a missing or unreadable
    file raises the matching OSError (FileNotFoundError, ...).

    ``tensor(name)`` returns a read-only numpy view of the file's bytes (no
    copy): uint64 ``(rows, words_per_row)`` for a ``bits`` tensor (packed as
    in docs/packing.md, a 1-D shape being one row), float32 with the
    tensor's shape for ``f32``. A view keeps the file's memory alive, also
    after :meth:`close`. The object is a context manager.
    """

    def __init__(self, path, mmap=True):
        _bnb_open_path(self, path, mmap)

    @classmethod
    def open(cls, path, mmap=True):
        """Open and validate the file at ``path`` (str or os.PathLike)."""
        cdef BnbFile self = cls.__new__(cls)
        _bnb_open_path(self, path, mmap)
        return self

    @classmethod
    def from_bytes(cls, data):
        """Validate a whole .bnb file held in memory (any bytes-like object; copied)."""
        cdef BnbFile self = cls.__new__(cls)
        mv = memoryview(data)
        if not mv.c_contiguous:
            mv = memoryview(mv.tobytes())
        mv = mv.cast("B")
        cdef const unsigned char[::1] buf = mv
        cdef const void *p = &buf[0] if buf.shape[0] else NULL
        cdef size_t n = buf.shape[0]
        cdef char err[_ERRLEN]
        err[0] = 0
        cdef bnb_file *f = NULL
        cdef bitnn_status s
        with nogil:
            s = bnb_open_buffer(p, n, &f, err, _ERRLEN)
        if s != BITNN_OK:
            raise _bnb_error(s, err, 0, None)
        _bnb_adopt(self, f, None, False)
        return self

    def close(self):
        """Release the file. Tensor views already handed out stay valid (they
        keep the memory until they go); everything else raises ValueError."""
        self.ptr = NULL
        self.handle = None

    @property
    def closed(self):
        return self.ptr == NULL

    def __enter__(self):
        _bnb_live(self)
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def file_size(self):
        """Size of the file in bytes."""
        return bnb_file_size(_bnb_live(self))

    @property
    def header(self):
        """The JSON header, as text."""
        cdef size_t n = 0
        cdef const char *text = bnb_header_text(_bnb_live(self), &n)
        if self._header is None:
            self._header = text[:n].decode("utf-8")  # the parser checked it is UTF-8
        return self._header

    @property
    def meta(self):
        """The JSON header as Python values (cached; do not modify it), converted from
        the tree the C loader parsed (the text is parsed once). The model description
        in it is checked only when a model is built from the file (bitnn.load)."""
        cdef bnb_file *f = _bnb_live(self)
        if self._meta is None:
            self._meta = _bjson_to_py(bnb_meta(f))
        return self._meta

    @property
    def tensor_names(self):
        """Names of the tensors, in the order of the header's "tensors" object."""
        cdef bnb_file *f = _bnb_live(self)
        return [bnb_tensor_at(f, i).name.decode("utf-8") for i in range(bnb_tensor_count(f))]

    def __contains__(self, name):
        try:
            _bnb_find(self, name)
        except (KeyError, TypeError):
            return False
        return True

    def tensor(self, name):
        """Read-only numpy view of a tensor (see the class docstring)."""
        cdef const bnb_tensor *t = _bnb_find(self, name)
        cdef cnp.npy_intp dims[4]
        cdef int nd, typenum, d
        if t.dtype == BNB_DTYPE_BITS:
            nd = 2
            dims[0] = <cnp.npy_intp>t.rows
            dims[1] = <cnp.npy_intp>((t.cols + 63) // 64)
            typenum = cnp.NPY_UINT64
        else:
            nd = t.ndim
            for d in range(nd):
                dims[d] = <cnp.npy_intp>t.shape[d]
            typenum = cnp.NPY_FLOAT32
        arr = cnp.PyArray_SimpleNewFromData(nd, dims, typenum, <void *>t.data)
        cnp.PyArray_CLEARFLAGS(<cnp.ndarray>arr, cnp.NPY_ARRAY_WRITEABLE)
        cnp.set_array_base(<cnp.ndarray>arr, self.handle)  # the view keeps the file alive
        return arr

    def __repr__(self):
        where = repr(self.path) if self.path is not None else "<bytes>"
        if self.ptr == NULL:
            return f"<BnbFile {where} (closed)>"
        return (f"<BnbFile {where}: {bnb_tensor_count(self.ptr)} tensors, "
                f"{bnb_file_size(self.ptr)} bytes{', mmap' if self.mmapped else ''}>")


cdef _bnb_open_path(BnbFile self, path, mmap):
    if self.handle is not None:
        raise ValueError("this BnbFile is already open")
    fs = _os.fsencode(path)  # TypeError for a non-path
    shown = _os.fsdecode(fs)
    if b"\0" in fs:
        raise ValueError(f"embedded NUL byte in path {shown!r}")
    cdef const char *cpath = fs
    cdef int flags = 0 if mmap else BNB_OPEN_NO_MMAP
    cdef char err[_ERRLEN]
    err[0] = 0
    cdef bnb_file *f = NULL
    cdef bitnn_status s
    cdef int e = 0
    with nogil:
        s = bnb_open(cpath, flags, &f, err, _ERRLEN)
        e = errno
    if s != BITNN_OK:
        raise _bnb_error(s, err, e, shown)
    _bnb_adopt(self, f, shown, bool(mmap))


cdef _bnb_adopt(BnbFile self, bnb_file *f, path, bint mmapped):
    cdef _BnbHandle h = _BnbHandle.__new__(_BnbHandle)
    h.ptr = f
    self.handle = h
    self.ptr = f
    self.path = path
    self.mmapped = mmapped


cdef bnb_file *_bnb_live(BnbFile self) except NULL:
    """The open file, or ValueError once closed."""
    if self.ptr == NULL:
        raise ValueError("I/O operation on a closed .bnb file")
    return self.ptr


cdef const bnb_tensor *_bnb_find(BnbFile self, name) except NULL:
    """The tensor called `name`, or KeyError."""
    cdef bnb_file *f = _bnb_live(self)
    if not isinstance(name, str):
        raise TypeError(f"tensor names are str, not {type(name).__name__}")
    try:
        b = name.encode("utf-8")
    except UnicodeEncodeError:
        b = None
    cdef const bnb_tensor *t = NULL
    if b is not None and b"\0" not in b:
        t = bnb_tensor_find(f, b)
    if t == NULL:
        where = f" in {self.path}" if self.path is not None else ""
        raise KeyError(f"no tensor {name!r}{where}")
    return t


def fnv1a64(data, h=None):
    """64-bit FNV-1a of a bytes-like object (docs/format.md); pass the previous
    result as ``h`` to continue over a following piece."""
    mv = memoryview(data)
    if not mv.c_contiguous:
        mv = memoryview(mv.tobytes())
    mv = mv.cast("B")
    cdef const unsigned char[::1] buf = mv
    cdef uint64_t state = BNB_CHECKSUM_INIT if h is None else <uint64_t>h
    cdef size_t n = buf.shape[0]
    if n:
        with nogil:
            state = bnb_checksum_update(state, &buf[0], n)
    return state


cdef object _bjson_to_py(const bjson *v):
    cdef size_t i
    if v.type == BJSON_NULL:
        return None
    if v.type == BJSON_TRUE:
        return True
    if v.type == BJSON_FALSE:
        return False
    if v.type == BJSON_NUMBER:
        lit = v.str[:v.len].decode("ascii")
        # like json.loads: int for an integer literal, float otherwise
        return v.number if any(c in lit for c in ".eE") else int(lit)
    if v.type == BJSON_STRING:
        return v.str[:v.len].decode("utf-8")
    if v.type == BJSON_ARRAY:
        return [_bjson_to_py(&v.items[i]) for i in range(v.count)]
    return {v.keys[i].decode("utf-8"): _bjson_to_py(&v.items[i]) for i in range(v.count)}


def _json_parse(data):
    """Parse JSON bytes with the C parser (csrc/format/json.c). Test hook: returns
    what json.loads would, or raises FormatError with the C message."""
    cdef bytes b = bytes(data)
    cdef char err[_ERRLEN]
    err[0] = 0
    cdef bjson *root = NULL
    cdef bitnn_status s = bjson_parse(b, len(b), &root, err, _ERRLEN)
    if s != BITNN_OK:
        raise _bnb_error(s, err, 0, None)
    try:
        return _bjson_to_py(root)
    finally:
        bjson_free(root)


def _json_get_int(data, long long lo, long long hi):
    """bjson_get_int on a JSON number literal (test hook): the int, or None."""
    cdef bytes b = bytes(data)
    cdef char err[_ERRLEN]
    cdef bjson *root = NULL
    cdef long long out = 0
    if bjson_parse(b, len(b), &root, err, _ERRLEN) != BITNN_OK:
        raise _bnb_error(BITNN_EFORMAT, err, 0, None)
    try:
        return out if bjson_get_int(root, lo, hi, &out) else None
    finally:
        bjson_free(root)
