# Text tokenizer of the runtime (csrc/text/tokenizer.h). Included by _core.pyx; the Python API
# is bitnn/tokenizer.py.
from libc.stdint cimport int32_t
from libc.stdlib cimport free, malloc

from bitnn.errors import FormatError

cdef extern from "tokenizer.h" nogil:
    ctypedef struct bitnn_tokenizer:
        pass
    ctypedef enum bitnn_tokenizer_kind:
        BITNN_TOKENIZER_BYTE_BPE
        BITNN_TOKENIZER_WORDPIECE
    unsigned BITNN_TOK_ADD_SPECIAL
    unsigned BITNN_TOK_SKIP_SPECIAL
    unsigned BITNN_TOK_CONTINUE
    bitnn_status bitnn_tokenizer_build(const bjson *spec, bitnn_tokenizer **out, char *err,
                                       size_t errlen)
    bitnn_status bitnn_tokenizer_build_json(const char *json, size_t len, bitnn_tokenizer **out,
                                            char *err, size_t errlen)
    void bitnn_tokenizer_free(bitnn_tokenizer *tok)
    bitnn_tokenizer_kind bitnn_tokenizer_type(const bitnn_tokenizer *tok)
    size_t bitnn_tokenizer_vocab_size(const bitnn_tokenizer *tok)
    int bitnn_tokenizer_missing_byte(const bitnn_tokenizer *tok)
    const char *bitnn_tokenizer_token_string(const bitnn_tokenizer *tok, int32_t id, size_t *len)
    const unsigned char *bitnn_tokenizer_token_bytes(const bitnn_tokenizer *tok, int32_t id,
                                                     size_t *len)
    int bitnn_tokenizer_is_special(const bitnn_tokenizer *tok, int32_t id)
    int32_t bitnn_tokenizer_token_to_id(const bitnn_tokenizer *tok, const char *s, size_t len)
    bitnn_status bitnn_tokenizer_encode(const bitnn_tokenizer *tok, const char *text, size_t len,
                                        unsigned flags, int32_t **ids, size_t *n)
    bitnn_status bitnn_tokenizer_decode(const bitnn_tokenizer *tok, const int32_t *ids, size_t n,
                                        unsigned flags, char **out, size_t *len,
                                        size_t *bad_index)
    bitnn_status bitnn_tokenizer_pretokenize(const bitnn_tokenizer *tok, const char *text,
                                             size_t len, char **pieces, size_t **ends,
                                             int32_t **added, size_t *count)
    size_t bitnn_utf8_incomplete_tail(const char *buf, size_t len)


def utf8_incomplete_tail(const unsigned char[::1] data):
    """Bytes at the end of `data` that start a UTF-8 sequence more bytes could complete."""
    if data.shape[0] == 0:
        return 0
    return bitnn_utf8_incomplete_tail(<const char *>&data[0], data.shape[0])


cdef class CTokenizer:
    """A tokenizer built from the JSON text of its spec (docs/tokenizer.md)."""
    cdef bitnn_tokenizer *tok
    cdef readonly size_t vocab_size
    cdef readonly str kind

    def __cinit__(self, bytes spec_json=None):
        if spec_json is None:  # _ctokenizer_adopt fills it in
            return
        cdef char err[512]
        err[0] = 0
        cdef const char *p = spec_json
        cdef size_t n = len(spec_json)
        cdef bitnn_status s
        with nogil:
            s = bitnn_tokenizer_build_json(p, n, &self.tok, err, sizeof(err))
        if s == BITNN_EFORMAT:
            raise FormatError(err.decode("utf-8", "replace"))
        _check(s)
        self.vocab_size = bitnn_tokenizer_vocab_size(self.tok)
        self.kind = ("byte_bpe" if bitnn_tokenizer_type(self.tok) == BITNN_TOKENIZER_BYTE_BPE
                     else "wordpiece")

    def __dealloc__(self):
        if self.tok != NULL:
            bitnn_tokenizer_free(self.tok)
            self.tok = NULL

    cdef int32_t _id(self, id, Py_ssize_t pos=-1) except -1:
        if isinstance(id, bool) or not isinstance(id, (int, np.integer)):
            raise TypeError(f"token ids are integers, not {type(id).__name__}")
        if not 0 <= id < self.vocab_size:
            where = f" at position {pos}" if pos >= 0 else ""
            raise ValueError(f"token id {id}{where} is out of range (vocab size "
                             f"{self.vocab_size})")
        return <int32_t>id

    def encode(self, const unsigned char[::1] text, bint add_special):
        """Ids of UTF-8 bytes (invalid sequences read as U+FFFD), as a list of ints."""
        cdef size_t n = text.shape[0], count = 0, i
        cdef const char *p = <const char *>&text[0] if n else NULL
        cdef int32_t *ids = NULL
        cdef unsigned flags = BITNN_TOK_ADD_SPECIAL if add_special else 0
        cdef bitnn_status s
        if n > 0x7FFFFFFF:
            raise ValueError("text longer than 2 GiB: encode it in parts")
        with nogil:
            s = bitnn_tokenizer_encode(self.tok, p, n, flags, &ids, &count)
        _check(s)
        try:
            return [ids[i] for i in range(count)]
        finally:
            free(ids)

    def decode(self, ids, bint skip_special, bint cont):
        """The bytes of a list or tuple of ids (see bitnn_tokenizer_decode)."""
        cdef Py_ssize_t n = len(ids), i
        if n == 0:
            return b""
        cdef int32_t *buf = <int32_t *>malloc(n * sizeof(int32_t))
        if buf == NULL:
            raise MemoryError()
        cdef char *out = NULL
        cdef size_t length = 0, bad_index = 0
        cdef unsigned flags = ((BITNN_TOK_SKIP_SPECIAL if skip_special else 0) |
                               (BITNN_TOK_CONTINUE if cont else 0))
        cdef bitnn_status s
        try:
            for i in range(n):
                buf[i] = self._id(ids[i], i)
            with nogil:
                s = bitnn_tokenizer_decode(self.tok, buf, <size_t>n, flags, &out, &length,
                                           &bad_index)
            _check(s)
            return out[:length] if length else b""
        finally:
            free(buf)
            free(out)

    def missing_byte(self):
        """byte_bpe: the smallest byte that is no model token (None if all 256 are)."""
        cdef int b = bitnn_tokenizer_missing_byte(self.tok)
        return None if b < 0 else b

    def token_bytes(self, id):
        cdef size_t n = 0
        cdef const unsigned char *p = bitnn_tokenizer_token_bytes(self.tok, self._id(id), &n)
        return p[:n]

    def token_string(self, id):
        cdef size_t n = 0
        cdef const char *p = bitnn_tokenizer_token_string(self.tok, self._id(id), &n)
        return p[:n].decode("utf-8")

    def is_special(self, id):
        return bool(bitnn_tokenizer_is_special(self.tok, self._id(id)))

    def token_to_id(self, str token):
        cdef bytes b = token.encode("utf-8", "surrogatepass")
        cdef int32_t id = bitnn_tokenizer_token_to_id(self.tok, b, len(b))
        return None if id < 0 else id

    def pretokenize(self, const unsigned char[::1] text):
        """[(piece bytes, added token id or -1)]: what the model sees (for tests)."""
        cdef size_t n = text.shape[0], count = 0, i, start = 0
        cdef const char *p = <const char *>&text[0] if n else NULL
        cdef char *pieces = NULL
        cdef size_t *ends = NULL
        cdef int32_t *added = NULL
        cdef bitnn_status s
        with nogil:
            s = bitnn_tokenizer_pretokenize(self.tok, p, n, &pieces, &ends, &added, &count)
        _check(s)
        out = []
        try:
            for i in range(count):
                out.append((pieces[start:ends[i]], added[i]))
                start = ends[i]
        finally:
            free(pieces)
            free(ends)
            free(added)
        return out


cdef CTokenizer _ctokenizer_adopt(bitnn_tokenizer *tok):
    """A CTokenizer that owns tok (built in C, e.g. by the language-model loader)."""
    cdef CTokenizer t = CTokenizer.__new__(CTokenizer)
    t.tok = tok
    t.vocab_size = bitnn_tokenizer_vocab_size(tok)
    t.kind = "byte_bpe" if bitnn_tokenizer_type(tok) == BITNN_TOKENIZER_BYTE_BPE else "wordpiece"
    return t
