"""Text tokenizers of the runtime: byte-level BPE and WordPiece, with HF's ids.

The work happens in C (csrc/text/tokenizer.c); HF ``tokenizers`` is needed only to convert a
trained HF tokenizer into bitnn's spec (:func:`spec_from_hf`). The spec's schema and
every behaviour (special tokens, invalid UTF-8, decoding) is in docs/tokenizer.md.

    >>> tok = Tokenizer(spec)                 # a dict, or its JSON text
    >>> ids = tok.encode("Hello, world")
    >>> tok.decode(ids)
    'Hello, world'
    >>> stream = tok.stream()                 # for generation: text pieces that are
    >>> "".join(stream.feed(i) for i in ids) + stream.flush()   # always whole UTF-8
    'Hello, world'
"""
import json

__all__ = ["StreamDecoder", "Tokenizer", "spec_from_hf"]


class Tokenizer:
    """A byte-level BPE or WordPiece tokenizer built from a spec (docs/tokenizer.md).

    A bad spec raises :class:`bitnn.FormatError` (a ValueError) saying what is wrong.
    Encoding and decoding release the GIL; one Tokenizer may be used from many threads.
    """

    def __init__(self, spec):
        from bitnn import _core

        if isinstance(spec, dict):
            text = json.dumps(spec, ensure_ascii=False)
        elif isinstance(spec, (str, bytes, bytearray)):
            text = spec
        else:
            raise TypeError(f"spec must be a dict or its JSON text, not {type(spec).__name__}")
        if isinstance(text, str):
            text = text.encode("utf-8", "surrogatepass")
        self._core = _core.CTokenizer(bytes(text))
        self._spec_json = bytes(text)

    @classmethod
    def _adopt(cls, core, spec_json):
        """A Tokenizer around a CTokenizer already built in C (a model loader's), whose
        spec is the JSON text that spec_json() returns (called only when asked for)."""
        self = cls.__new__(cls)
        self._core = core
        self._spec_json = spec_json
        return self

    @property
    def spec(self) -> dict:
        """The spec (a new dict on each access), e.g. to store it in a .bnb header."""
        text = self._spec_json() if callable(self._spec_json) else self._spec_json
        return json.loads(text)

    @classmethod
    def from_hf(cls, tok):
        """The same tokenizer as a HF `tokenizers` one (see :func:`spec_from_hf`)."""
        return cls(spec_from_hf(tok))

    @property
    def kind(self) -> str:
        """"byte_bpe" or "wordpiece"."""
        return self._core.kind

    @property
    def vocab_size(self) -> int:
        return self._core.vocab_size

    def encode(self, text, add_special_tokens: bool = False) -> list:
        """Token ids of `text` (a str, or bytes holding UTF-8).

        Any input encodes: invalid UTF-8 in bytes, and lone surrogates in a str, read as
        U+FFFD per maximal invalid subpart (Python's "replace" error handler).
        add_special_tokens wraps the ids in the spec's template (e.g. [CLS] ... [SEP]);
        unlike HF, it is off by default, which is what a language model's prompt wants.
        """
        if isinstance(text, str):
            data = text.encode("utf-8", "surrogatepass")
        elif isinstance(text, (bytes, bytearray, memoryview)):
            data = bytes(text)
        else:
            raise TypeError(f"text must be str or bytes, not {type(text).__name__}")
        return self._core.encode(data, bool(add_special_tokens))

    def decode_bytes(self, ids, skip_special_tokens: bool = False) -> bytes:
        """The bytes of `ids`: for byte-level BPE exactly the bytes that were encoded."""
        return self._core.decode(_as_ids(ids), bool(skip_special_tokens), False)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """The text of `ids`; invalid UTF-8 (only possible at the byte level, e.g. a cut
        sequence) becomes U+FFFD here, at the very end. Special tokens are kept unless
        skip_special_tokens (HF skips them by default)."""
        return self.decode_bytes(ids, skip_special_tokens).decode("utf-8", "replace")

    def stream(self, skip_special_tokens: bool = False) -> "StreamDecoder":
        """A decoder to feed ids one at a time (see :class:`StreamDecoder`)."""
        return StreamDecoder(self, skip_special_tokens)

    def token_bytes(self, id: int) -> bytes:
        """The bytes token `id` stands for (byte-level: raw bytes, maybe not UTF-8)."""
        return self._core.token_bytes(id)

    def id_to_token(self, id: int) -> str:
        """The vocab string of `id`, as HF shows it (byte-level: in HF's byte alphabet)."""
        return self._core.token_string(id)

    def token_to_id(self, token: str):
        """The id of a vocab string, or None."""
        return self._core.token_to_id(token)

    def is_special(self, id: int) -> bool:
        return self._core.is_special(id)

    def __repr__(self):
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


class StreamDecoder:
    """Decode ids as they are generated: every piece returned is complete UTF-8.

    feed(id or ids) returns the text that is certain so far; bytes that start a UTF-8
    sequence the next token may complete are held back. flush() returns what is held
    (an incomplete sequence becomes U+FFFD) and resets. The pieces joined equal
    Tokenizer.decode of all the ids.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self._tok = tokenizer
        self._skip = bool(skip_special_tokens)
        self._pending = b""
        self._started = False  # WordPiece: a token after the first is joined with a space

    def feed(self, ids) -> str:
        from bitnn import _core

        if not isinstance(ids, (list, tuple)):
            ids = [ids]
        data = self._tok._core.decode(_as_ids(ids), self._skip, self._started)
        self._started = self._started or bool(data)
        data = self._pending + data
        keep = _core.utf8_incomplete_tail(data)
        self._pending = data[len(data) - keep:] if keep else b""
        return data[:len(data) - keep].decode("utf-8", "replace")

    def flush(self) -> str:
        text = self._pending.decode("utf-8", "replace")
        self._pending = b""
        self._started = False
        return text


def _as_ids(ids):
    """A list or tuple of ids (checked, one by one, in C)."""
    return ids if isinstance(ids, (list, tuple)) else list(ids)


# --------------------------------------------------------------- from HF tokenizers
def spec_from_hf(tok) -> dict:
    """Convert a HF `tokenizers` tokenizer into bitnn's tokenizer spec.

    Supported: byte-level BPE (ByteLevel pre-tokenizer and decoder, BPE model, no
    normalizer or Lowercase: what `ByteLevelBPETokenizer` builds) and WordPiece
    (BertNormalizer or none, BertPreTokenizer, WordPiece decoder: what
    `BertWordPieceTokenizer` builds); added tokens without lstrip/rstrip/single_word;
    post-processors that put fixed tokens around the text (Bert, Roberta, Template,
    ByteLevel). Anything else raises ValueError naming what is not supported.
    """
    inner = getattr(tok, "_tokenizer", tok)  # tokenizers.implementations wrap a Tokenizer
    if not hasattr(inner, "to_str"):
        raise TypeError(f"expected a tokenizers.Tokenizer, got {type(tok).__name__}")
    j = json.loads(inner.to_str())
    if j.get("truncation"):
        raise ValueError("truncation is not supported: call no_truncation() first")
    if j.get("padding"):
        raise ValueError("padding is not supported: call no_padding() first")
    model = j.get("model") or {}
    mtype = model.get("type")
    if mtype == "BPE":
        spec = _bpe_spec(j, model)
    elif mtype == "WordPiece":
        spec = _wordpiece_spec(j, model)
    else:
        raise ValueError(f"model {mtype!r} is not supported (BPE with ByteLevel, or WordPiece)")
    vocab, added = _vocab(j, model)
    spec["vocab"] = vocab
    if len(model["vocab"]) != len(vocab):
        spec["model_vocab_size"] = len(model["vocab"])
    if added:
        spec["added_tokens"] = added
    template = _template(j.get("post_processor"), len(vocab))
    if template:
        spec["template"] = template
    return spec


def _vocab(j, model):
    """Id-ordered vocab (model then added-only tokens) and the added-token entries."""
    mv = model["vocab"]
    tokens = {i: t for t, i in mv.items()}
    if sorted(tokens) != list(range(len(mv))):
        raise ValueError("the model's vocab ids are not 0..n-1 without gaps")
    added = []
    for a in j.get("added_tokens") or []:
        for flag in ("lstrip", "rstrip", "single_word"):
            if a.get(flag):
                raise ValueError(f"added token {a['content']!r}: {flag}=True is not supported")
        i = a["id"]
        if i in tokens and tokens[i] != a["content"]:
            raise ValueError(f"added token {a['content']!r} has id {i}, which the model "
                             f"vocab gives to {tokens[i]!r}")
        tokens[i] = a["content"]
        entry = {"id": i, "special": bool(a.get("special", False))}
        if bool(a.get("normalized", not entry["special"])) != (not entry["special"]):
            entry["normalized"] = bool(a.get("normalized"))
        added.append(entry)
    if sorted(tokens) != list(range(len(tokens))):
        raise ValueError("token ids (model and added tokens) are not 0..n-1 without gaps")
    return [tokens[i] for i in range(len(tokens))], sorted(added, key=lambda a: a["id"])


def _single(component, what):
    """A component, or the only member of a Sequence of one."""
    if component and component.get("type") == "Sequence":
        members = component.get("normalizers") or component.get("pretokenizers") or \
            component.get("decoders") or []
        if len(members) != 1:
            raise ValueError(f"a Sequence {what} is not supported")
        return members[0]
    return component


_BPE_HOWTO = (": train a tokenizers.ByteLevelBPETokenizer (or give Tokenizer(BPE()) "
              "pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False), decoder = "
              "decoders.ByteLevel() and BpeTrainer(initial_alphabet="
              "pre_tokenizers.ByteLevel.alphabet())), or a BertWordPieceTokenizer; "
              "see docs/tokenizer.md")


def _bpe_spec(j, model):
    for key, ok in (("dropout", None), ("continuing_subword_prefix", (None, "")),
                    ("end_of_word_suffix", (None, "")), ("byte_fallback", (False, None))):
        value = model.get(key)
        if key == "dropout" and value not in (None, 0, 0.0):
            raise ValueError("BPE dropout is not supported (encoding would be random)")
        if key != "dropout" and value not in ok:
            raise ValueError(f"BPE {key}={value!r} is not supported")
    pre = _single(j.get("pre_tokenizer"), "pre-tokenizer")
    if not pre or pre.get("type") != "ByteLevel":
        raise ValueError(f"BPE needs the ByteLevel pre-tokenizer, got "
                         f"{pre and pre.get('type')!r}{_BPE_HOWTO}")
    dec = _single(j.get("decoder"), "decoder")
    if not dec or dec.get("type") != "ByteLevel":
        raise ValueError(f"BPE needs the ByteLevel decoder, got {dec and dec.get('type')!r}"
                         f"{_BPE_HOWTO}")
    norm = _single(j.get("normalizer"), "normalizer")
    if norm and norm.get("type") != "Lowercase":
        raise ValueError(f"normalizer {norm.get('type')!r} is not supported with byte-level "
                         "BPE (none or Lowercase)")
    merges = [m.split(" ") if isinstance(m, str) else list(m) for m in model["merges"]]
    if any(len(m) != 2 for m in merges):
        raise ValueError("a merge is not a pair of tokens")
    # an unk_token is harmless only when it can never be produced: every byte has a token
    if model.get("unk_token") is not None and any(c not in model["vocab"]
                                                  for c in _byte_alphabet()):
            raise ValueError("BPE with an unk_token and bytes missing from the vocab is not "
                             "supported")
    spec = {"type": "byte_bpe", "merges": merges,
            "add_prefix_space": bool(pre.get("add_prefix_space", True)),
            "use_regex": bool(pre.get("use_regex", True))}
    if norm:
        spec["lowercase"] = True
    if model.get("ignore_merges"):
        spec["ignore_merges"] = True
    return spec


def _byte_alphabet():
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(0x100 + n))
            n += 1
    return out


def _wordpiece_spec(j, model):
    pre = _single(j.get("pre_tokenizer"), "pre-tokenizer")
    if not pre or pre.get("type") != "BertPreTokenizer":
        raise ValueError(f"WordPiece needs the BertPreTokenizer, got {pre and pre.get('type')!r}")
    norm = _single(j.get("normalizer"), "normalizer")
    if norm is None:
        norm = {"clean_text": False, "handle_chinese_chars": False, "strip_accents": False,
                "lowercase": False}
    elif norm.get("type") != "BertNormalizer":
        raise ValueError(f"normalizer {norm.get('type')!r} is not supported with WordPiece "
                         "(BertNormalizer or none)")
    dec = _single(j.get("decoder"), "decoder")
    if not dec or dec.get("type") != "WordPiece":
        raise ValueError(f"WordPiece needs the WordPiece decoder, got {dec and dec.get('type')!r}")
    prefix = model.get("continuing_subword_prefix", "##")
    if dec.get("prefix", "##") != prefix:
        raise ValueError(f"the decoder's prefix {dec.get('prefix')!r} differs from the model's "
                         f"{prefix!r}")
    lowercase = bool(norm.get("lowercase", True))
    strip = norm.get("strip_accents")
    return {"type": "wordpiece", "unk_token": model.get("unk_token", "[UNK]"),
            "continuing_subword_prefix": prefix,
            "max_input_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
            "clean_text": bool(norm.get("clean_text", True)),
            "handle_chinese_chars": bool(norm.get("handle_chinese_chars", True)),
            "strip_accents": lowercase if strip is None else bool(strip),
            "lowercase": lowercase, "cleanup": bool(dec.get("cleanup", True))}


def _template(pp, n_vocab):
    """{"prefix": [...], "suffix": [...]} for post-processors that wrap the text."""
    if not pp:
        return None
    kind = pp.get("type")
    if kind == "Sequence":
        prefix, suffix = [], []
        for p in pp.get("processors", []):
            t = _template(p, n_vocab)
            if t:
                prefix = t["prefix"] + prefix
                suffix = suffix + t["suffix"]
        return {"prefix": prefix, "suffix": suffix} if prefix or suffix else None
    if kind == "ByteLevel":
        return None
    if kind in ("BertProcessing", "RobertaProcessing"):
        return {"prefix": [pp["cls"][1]], "suffix": [pp["sep"][1]]}
    if kind == "TemplateProcessing":
        prefix, suffix, seen = [], [], False
        for piece in pp["single"]:
            if "Sequence" in piece:
                if piece["Sequence"]["id"] != "A" or seen:
                    raise ValueError("a template with other than one $A is not supported")
                seen = True
                continue
            ids = pp["special_tokens"][piece["SpecialToken"]["id"]]["ids"]
            (suffix if seen else prefix).extend(ids)
        if any(not 0 <= i < n_vocab for i in prefix + suffix):
            raise ValueError("the template names an id outside the vocab")
        return {"prefix": prefix, "suffix": suffix} if prefix or suffix else None
    raise ValueError(f"post-processor {kind!r} is not supported")

