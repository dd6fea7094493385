"""The runtime tokenizer (csrc/text/tokenizer.c, bitnn/tokenizer.py).

Parity: small byte-level BPE and WordPiece tokenizers are trained with HF `tokenizers`
on the "train" texts of tests/data/tokenizer_corpus.jsonl.gz (tools/make_test_corpus.py)
and must give the same ids as HF on its 10,000 held-out "test" texts, in several
configurations. The rest needs no HF: round trips, the stream decoder, bad input.
"""
import gzip
import json
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnn import _core
from bitnn.errors import FormatError
from bitnn.tokenizer import StreamDecoder, Tokenizer, spec_from_hf

CORPUS = os.path.join(os.path.dirname(__file__), "data", "tokenizer_corpus.jsonl.gz")
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def byte_alphabet():
    from bitnn.tokenizer import _byte_alphabet

    return _byte_alphabet()


ALPHA = byte_alphabet()


def to_alpha(data: bytes) -> str:
    return "".join(ALPHA[b] for b in data)


def small_bpe_spec(**extra):
    """A hand-made byte-level spec: the 256 bytes, a few merges, one special token."""
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n"), ("Ġa", "n"),
              ("Ġan", "d"), (to_alpha("é".encode())[0], to_alpha("é".encode())[1]),
              (to_alpha("😀".encode())[:2][0], to_alpha("😀".encode())[1])]
    vocab = ["<|endoftext|>"] + ALPHA
    for a, b in merges:
        if a + b not in vocab:
            vocab.append(a + b)
    spec = {"type": "byte_bpe", "vocab": vocab, "merges": [list(m) for m in merges],
            "added_tokens": [{"id": 0, "special": True}]}
    spec.update(extra)
    return spec


def small_wordpiece_spec(**extra):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "un", "##aff", "##able",
             "aff", "##s", "cat", ",", ".", "'", "s", "do", "n", "##'", "t", "!", "中", "e",
             "##e", "é", "##n"]
    spec = {"type": "wordpiece", "vocab": vocab,
            "added_tokens": [{"id": i, "special": True} for i in range(5)],
            "template": {"prefix": [2], "suffix": [3]}}
    spec.update(extra)
    return spec


# ----------------------------------------------------------------- HF parity
@pytest.fixture(scope="module")
def corpus():
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    train = [t for split, t in rows if split == "train"]
    test = [t for split, t in rows if split == "test"]
    assert len(test) >= 10_000
    assert sum(any(ord(c) > 127 for c in t) for t in test) >= 2000
    return train, test


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def hf_bpe(hf, corpus):
    tok = hf.ByteLevelBPETokenizer()
    tok.train_from_iterator(corpus[0], vocab_size=2000, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    return tok._tokenizer


@pytest.fixture(scope="module")
def hf_wordpiece(hf, corpus):
    tok = hf.BertWordPieceTokenizer()
    tok.train_from_iterator(corpus[0], vocab_size=2000, min_frequency=2, show_progress=False)
    return tok._tokenizer


def variant(hf, base, edit):
    """A copy of a HF tokenizer with its JSON edited (edit(dict) works in place)."""
    j = json.loads(base.to_str())
    edit(j)
    return hf.Tokenizer.from_str(json.dumps(j))


def check_parity(hf_tok, texts, add_special=False):
    ours = Tokenizer.from_hf(hf_tok)
    want = [e.ids for e in hf_tok.encode_batch(texts, add_special_tokens=add_special)]
    got = [ours.encode(t, add_special_tokens=add_special) for t in texts]
    bad = [i for i in range(len(texts)) if want[i] != got[i]]
    assert not bad, (f"{len(bad)} of {len(texts)} texts differ; first {texts[bad[0]]!r}: "
                     f"HF {want[bad[0]][:30]} ours {got[bad[0]][:30]}")
    for skip in (False, True):
        want_text = hf_tok.decode_batch(want, skip_special_tokens=skip)
        got_text = [ours.decode(ids, skip_special_tokens=skip) for ids in want]
        bad = [i for i in range(len(texts)) if want_text[i] != got_text[i]]
        assert not bad, f"decode differs: HF {want_text[bad[0]]!r} ours {got_text[bad[0]]!r}"
    return ours


def test_byte_bpe_parity(hf_bpe, corpus):
    ours = check_parity(hf_bpe, corpus[1])
    assert ours.kind == "byte_bpe" and ours.vocab_size == hf_bpe.get_vocab_size()
    for t in corpus[1][:2000]:  # lossless on real text
        assert ours.decode(ours.encode(t)) == t


def test_byte_bpe_parity_prefix_space_template_ignore_merges(hf, hf_bpe, corpus):
    def edit(j):
        j["pre_tokenizer"]["add_prefix_space"] = True
        j["model"]["ignore_merges"] = True
        j["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0],
                                                 "tokens": ["<|endoftext|>"]}}}
    tok = variant(hf, hf_bpe, edit)
    check_parity(tok, corpus[1], add_special=True)
    check_parity(tok, corpus[1][:3000], add_special=False)


def test_byte_bpe_parity_lowercase_and_added_tokens(hf, corpus):
    tok = hf.ByteLevelBPETokenizer(lowercase=True)
    tok.train_from_iterator(corpus[0], vocab_size=1000, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tok = tok._tokenizer
    # non-special added tokens match normalized (here: lowercased) text; a special one
    # added after training gets an id past the model's vocab
    tok.add_tokens(["romeo", "ÉTÉ", " and", "thee"])
    tok.add_special_tokens(["<|im_start|>", "[MASK]"])
    texts = corpus[1] + ["ROMEO <|im_start|>and thee, ÉTÉ été [MASK]"]
    ours = check_parity(tok, texts)
    assert ours.vocab_size == tok.get_vocab_size()


def test_byte_bpe_parity_missing_bytes(hf, corpus):
    """A BPE trained without the full byte alphabet drops unknown bytes, like HF."""
    tok = hf.Tokenizer(hf.models.BPE())
    tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = hf.decoders.ByteLevel()
    ascii_lines = [t for t in corpus[0] if t.isascii()]
    tok.train_from_iterator(ascii_lines, hf.trainers.BpeTrainer(vocab_size=600,
                                                                show_progress=False))
    check_parity(tok, corpus[1][:3000])


def test_wordpiece_parity(hf_wordpiece, corpus):
    ours = check_parity(hf_wordpiece, corpus[1])
    assert ours.kind == "wordpiece"


@pytest.mark.parametrize("norm", [
    {"clean_text": True, "handle_chinese_chars": True, "strip_accents": False, "lowercase": True},
    {"clean_text": True, "handle_chinese_chars": True, "strip_accents": None, "lowercase": False},
    {"clean_text": False, "handle_chinese_chars": False, "strip_accents": True, "lowercase": False},
    None,
])
def test_wordpiece_parity_normalizer_options(hf, hf_wordpiece, corpus, norm):
    def edit(j):
        j["normalizer"] = None if norm is None else dict(norm, type="BertNormalizer")
    check_parity(variant(hf, hf_wordpiece, edit), corpus[1][:4000])


def test_wordpiece_parity_processor_added_tokens_short_words(hf, hf_wordpiece, corpus):
    def edit(j):
        j["model"]["max_input_chars_per_word"] = 12
        j["post_processor"] = {"type": "BertProcessing", "sep": ["[SEP]", 3],
                               "cls": ["[CLS]", 2]}
    tok = variant(hf, hf_wordpiece, edit)
    tok.add_tokens(["Romeo", "ÉTÉ", "xyz"])  # normalized: lowercased and stripped to match
    tok.add_special_tokens(["<extra>"])
    texts = corpus[1][:4000] + ["ROMEO romeo été ÉTÉ <extra> [CLS] [cls] XYZxyz"]
    check_parity(tok, texts, add_special=True)
    check_parity(tok, texts, add_special=False)


# Characters of every kind, for the fuzz tests against HF.
PIECES = (list(" \t\n\r\x0b\x0c\x85\xa0\u2003\u3000\u2028\u200b'sdtmlrev.,!?-") +
          ["'s", "'ll", "'re", " ", "  ", "<|endoftext|>", "[CLS]", "[SEP]", "[MASK]",
           "e\u0301", "\u0301", "\u0316", "É", "ß", "İ", "Σ", "ς", "中", "日本", "한", "😀",
           "👨‍👩‍👧", "ﬁ", "Å", "½", "٣", "\x00", "\x7f", "\ufffd", "\ue000",
           "\U00031350", "\U00016ea0", "\u08d4", "the", "and", "Romeo", "x" * 101])


@st.composite
def mixed_text(draw):
    parts = draw(st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=3)),
                          max_size=20))
    return "".join(parts)


@FAST
@given(text=mixed_text())
def test_fuzz_parity_against_hf(hf_bpe, hf_wordpiece, text):
    for hf_tok in (hf_bpe, hf_wordpiece):
        ours = _from_hf_cached(hf_tok)
        assert ours.encode(text) == hf_tok.encode(text, add_special_tokens=False).ids


_CACHE = {}


def _from_hf_cached(hf_tok):
    if id(hf_tok) not in _CACHE:
        _CACHE[id(hf_tok)] = Tokenizer.from_hf(hf_tok)
    return _CACHE[id(hf_tok)]


def test_every_code_point_pretokenizes_like_hf(hf):
    """The character tables against HF in random contexts: every code point of planes
    0-3 and 14 (all that is assigned outside private use) and a sample of the rest."""
    rng = random.Random(7)
    cps = [c for c in range(1, 0x40000) if not 0xD800 <= c <= 0xDFFF]
    cps += list(range(0xE0000, 0xE1000)) + rng.sample(range(0x40000, 0x110000), 4000)
    rng.shuffle(cps)
    seps = [" ", "  ", "\n", "'s", "1", " a", "\t ", "\u3000", ",", " ."]
    text = "".join(chr(c) + (rng.choice(seps) if rng.random() < 0.3 else "") for c in cps)
    data = text.encode()
    ours = Tokenizer({"type": "byte_bpe", "vocab": ALPHA, "merges": []})
    got = [to_alpha(p) for p, _ in ours._core.pretokenize(data)]
    want = [p for p, _ in hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
            .pre_tokenize_str(text)]
    assert got == want
    ours = Tokenizer({"type": "wordpiece", "vocab": ["[UNK]"]})  # BERT defaults: all on
    got = [p.decode() for p, _ in ours._core.pretokenize(data)]
    norm = hf.normalizers.BertNormalizer().normalize_str(text)
    want = [p for p, _ in hf.pre_tokenizers.BertPreTokenizer().pre_tokenize_str(norm)]
    assert got == want


def test_spec_from_hf_rejects_what_it_cannot_do(hf, hf_bpe, hf_wordpiece):
    def bad(base, edit, match):
        with pytest.raises(ValueError, match=match):
            spec_from_hf(variant(hf, base, edit))

    bad(hf_bpe, lambda j: j["model"].update(dropout=0.1), "dropout")
    bad(hf_bpe, lambda j: j["model"].update(end_of_word_suffix="</w>"), "end_of_word_suffix")
    bad(hf_bpe, lambda j: j.update(normalizer={"type": "NFKC"}), "NFKC")
    bad(hf_bpe, lambda j: j.update(pre_tokenizer={"type": "Whitespace"}), "ByteLevel")
    bad(hf_wordpiece, lambda j: j.update(pre_tokenizer={"type": "Whitespace"}), "BertPre")
    bad(hf_wordpiece, lambda j: j["added_tokens"][0].update(lstrip=True), "lstrip")
    bad(hf_wordpiece, lambda j: j.update(decoder=None), "decoder")
    with pytest.raises(ValueError, match="Unigram"):
        spec_from_hf(hf.Tokenizer(hf.models.Unigram()))
    tok = variant(hf, hf_bpe, lambda j: None)
    tok.enable_truncation(16)
    with pytest.raises(ValueError, match="truncation"):
        spec_from_hf(tok)


def test_spec_round_trips_through_json(hf_wordpiece):
    spec = spec_from_hf(hf_wordpiece)
    a, b = Tokenizer(spec), Tokenizer(json.dumps(spec))
    assert a.spec == b.spec == spec
    text = "Hello, Wörld! 中文 [MASK]"
    assert a.encode(text) == b.encode(text) == hf_wordpiece.encode(text).ids


# ------------------------------------------------------------ no HF needed
def test_empty_and_specials():
    bpe = Tokenizer(small_bpe_spec())
    wp = Tokenizer(small_wordpiece_spec())
    for tok in (bpe, wp):
        assert tok.encode("") == [] and tok.encode(b"") == []
        assert tok.decode([]) == "" and tok.decode_bytes([]) == b""
    ids = bpe.encode("the<|endoftext|>and é 😀")
    assert ids.count(0) == 1 and bpe.is_special(0)
    assert bpe.decode(ids) == "the<|endoftext|>and é 😀"
    assert bpe.decode(ids, skip_special_tokens=True) == "theand é 😀"
    ids = wp.encode("[CLS] The unaffable cats, [MASK] don't! [SEP]")
    # HF's WordPiece decoder: pieces joined by spaces, "##" glued, " ," and " !" cleaned up
    assert wp.decode(ids) == "[CLS] the unaffable cats, [MASK] don ' t! [SEP]"
    assert wp.decode(ids, skip_special_tokens=True) == "the unaffable cats, don ' t!"
    assert wp.encode("x") == [1] and wp.id_to_token(1) == "[UNK]"
    assert wp.encode("the", add_special_tokens=True) == [2, 5, 3]


def test_lookups():
    bpe = Tokenizer(small_bpe_spec())
    the = bpe.token_to_id("Ġthe")
    assert the is not None and bpe.id_to_token(the) == "Ġthe" and bpe.token_bytes(the) == b" the"
    assert bpe.token_to_id("nope") is None
    assert bpe.token_bytes(bpe.token_to_id(to_alpha(b"\xf0"))) == b"\xf0"
    assert bpe.token_bytes(0) == b"<|endoftext|>"
    wp = Tokenizer(small_wordpiece_spec())
    assert wp.token_bytes(wp.token_to_id("##aff")) == b"##aff"
    for tok in (bpe, wp):
        for bad in (-1, tok.vocab_size, 2**40):
            with pytest.raises(ValueError):
                tok.id_to_token(bad)
            with pytest.raises(ValueError):
                tok.token_bytes(bad)
            with pytest.raises(ValueError):
                tok.decode([5, bad])
            with pytest.raises(ValueError):
                tok.stream().feed(bad)
        with pytest.raises(TypeError):
            tok.decode(["a"])
        with pytest.raises(TypeError):
            tok.decode([1.5])
        with pytest.raises(TypeError):
            tok.encode(12)


def test_wordpiece_pieces():
    wp = Tokenizer(small_wordpiece_spec())
    assert wp.encode("unaffable") == [6, 7, 8]
    # greedy longest match: "aff" + "##s"; an unmatched rest makes the whole word [UNK]
    assert wp.encode("affs affx") == [9, 10, 1]
    assert wp.decode([7, 6, 7, 8]) == "##aff unaffable"  # HF keeps a leading "##"
    assert wp.encode("Éé") == [22, 23]  # lowercased, accents stripped
    assert wp.encode("中中") == [21, 21]


def test_invalid_utf8_reads_as_replacement():
    bpe = Tokenizer(small_bpe_spec())
    for data in (b"\xff", b"a\xc3", b"\xe2\x82", b"\xed\xa0\x80x", b"\xf0\x9f\x98", b"\xc0\xaf",
                 b"\xf4\x90\x80\x80", b"ok\x80\x80\xe2\x82\xacz"):
        assert bpe.encode(data) == bpe.encode(data.decode("utf-8", "replace")), data
    assert bpe.encode("\ud800x") == bpe.encode("\ufffd\ufffd\ufffdx")  # lone surrogate


@FAST
@given(st.binary(max_size=40))
def test_any_bytes_encode_like_python_replace(data):
    tok = _small("bpe")
    assert tok.encode(data) == tok.encode(data.decode("utf-8", "replace"))
    wp = _small("wp")
    assert wp.encode(data) == wp.encode(data.decode("utf-8", "replace"))


_SMALL = {}


def _small(kind):
    if kind not in _SMALL:
        _SMALL[kind] = Tokenizer(small_bpe_spec() if kind == "bpe" else small_wordpiece_spec())
    return _SMALL[kind]


@FAST
@given(st.text())
def test_byte_level_round_trip(text):
    tok = _small("bpe")
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")


@FAST
@given(st.text(), st.lists(st.integers(0, 260), max_size=30))
def test_stream_decoder_pieces_are_whole_utf8(text, extra):
    tok = _small("bpe")
    # from valid text: the pieces are the text, and no piece holds a replacement
    # character the text does not have (a cut sequence would show as one)
    stream = tok.stream()
    pieces = [stream.feed(i) for i in tok.encode(text)] + [stream.flush()]
    assert "".join(pieces) == text
    assert "\ufffd" in text or all("\ufffd" not in p for p in pieces)
    # any ids, even ones that make invalid UTF-8: the pieces add up to decode()
    for ids in (extra, tok.encode(text) + extra):
        stream = tok.stream()
        pieces = [stream.feed(i) for i in ids] + [stream.flush()]
        assert "".join(pieces) == tok.decode(ids)


def test_stream_decoder_holds_back_partial_sequences():
    tok = _small("bpe")
    ids = [tok.token_to_id(to_alpha(bytes([b]))) for b in "é😀".encode()]
    stream = StreamDecoder(tok)
    assert [stream.feed(i) for i in ids] == ["", "é", "", "", "", "😀"]
    assert stream.feed(ids[:2]) == "é" and stream.feed(ids[2]) == "" and stream.flush() == "\ufffd"
    wp = Tokenizer(small_wordpiece_spec())
    ids = wp.encode("[CLS] the unaffable cats, don't!")
    for skip in (False, True):
        stream = wp.stream(skip_special_tokens=skip)
        assert "".join(stream.feed(i) for i in ids) + stream.flush() == wp.decode(ids, skip)


def test_utf8_incomplete_tail():
    cases = {b"": 0, b"a": 0, b"\xc3": 1, b"\xc3\xa9": 0, b"\xe2\x82": 2, b"\xe2\x82\xac": 0,
             b"\xf0\x9f\x98": 3, b"\xf0\x9f": 2, b"\xf0": 1, b"\xed\xa0": 0, b"\xe0\x80": 0,
             b"\xf4\x90": 0, b"\xff": 0, b"\x80": 0, b"\xc3\xa9\xe2": 1, b"\xc1": 0}
    for data, want in cases.items():
        assert _core.utf8_incomplete_tail(data) == want, data


@pytest.mark.parametrize("edit,match", [
    (lambda s: s.update(type="unigram"), "unknown type"),
    (lambda s: s.update(vocabulary=[]), "unknown key"),
    (lambda s: s["vocab"].append("Ġthe"), "duplicates"),
    (lambda s: s["vocab"].append(""), "empty"),
    (lambda s: s.update(vocab=[]), "empty"),
    (lambda s: s.update(vocab="abc"), "array"),
    (lambda s: s["merges"].append(["Ġthe", "zzz"]), "not in the model vocab"),
    (lambda s: s["merges"].append(["Ġthe", "Ġthe"]), "merged token"),
    (lambda s: s["merges"].append(["h", "e"]), "repeats"),
    (lambda s: s["merges"].append(["h"]), "pair"),
    (lambda s: s.update(added_tokens=[{"id": 10**6}]), "id below"),
    (lambda s: s.update(added_tokens=[{"id": 0}, {"id": 0}]), "twice"),
    (lambda s: s.update(added_tokens=[{"id": 0, "lstrip": True}]), "unknown key"),
    (lambda s: s.update(template={"prefix": [10**6]}), "id below"),
    (lambda s: s.update(add_prefix_space="yes"), "true or false"),
    (lambda s: s.update(model_vocab_size=0), "model_vocab_size"),
])
def test_bad_byte_bpe_specs(edit, match):
    spec = small_bpe_spec()
    edit(spec)
    with pytest.raises(FormatError, match=match):
        Tokenizer(spec)


@pytest.mark.parametrize("edit,match", [
    (lambda s: s.update(unk_token="<unk>"), "unk_token"),
    (lambda s: s.update(max_input_chars_per_word=-1), "max_input_chars_per_word"),
    (lambda s: s.update(merges=[]), "unknown key"),
    (lambda s: s.update(lowercase=1), "true or false"),
])
def test_bad_wordpiece_specs(edit, match):
    spec = small_wordpiece_spec()
    edit(spec)
    with pytest.raises(FormatError, match=match):
        Tokenizer(spec)


def test_bad_spec_text():
    with pytest.raises(FormatError):
        Tokenizer('{"type": "byte_bpe", "vocab": ["a"], "merges": []')
    with pytest.raises(FormatError):
        Tokenizer('["not an object"]')
    with pytest.raises(TypeError):
        Tokenizer(42)
    assert isinstance(FormatError("x"), ValueError)


def test_threads_share_one_tokenizer(corpus):
    """Encoding releases the GIL and keeps no state in the tokenizer."""
    from concurrent.futures import ThreadPoolExecutor

    tok = _small("bpe")
    texts = corpus[1][:2000]
    want = [tok.encode(t) for t in texts]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(tok.encode, texts))
    assert got == want


def test_large_and_pathological_inputs_are_fast():
    import time

    bpe, wp = _small("bpe"), _small("wp")
    text = ("The quick brown fox, é 中文 😀 don't stop\n" * 25_000)  # ~1.2 MB
    for data in (text, "a" * 1_000_000, " " * 1_000_000, "a" + "\u0301\u0316" * 100_000,
                 "😀" * 250_000, "'s" * 500_000):
        for tok in (bpe, wp):
            t0 = time.perf_counter()
            ids = tok.encode(data)
            assert time.perf_counter() - t0 < 2.0
        assert bpe.decode(bpe.encode(data)) == data
    assert len(ids) > 0
