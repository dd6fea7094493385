#!/usr/bin/env python3
"""Generate csrc/text/unicode_tables.c, the character data of the tokenizer (csrc/text/tokenizer.c).

The tokenizer must give the ids HF `tokenizers` gives, and HF's Rust code reads its
character properties from three different Unicode versions:

  * the byte-level pre-tokenizer regex runs in Oniguruma: \\p{L}, \\p{N} and \\s of
    Unicode 16.0 (checked against tokenizers 0.23);
  * the BERT normalizer and pre-tokenizer use the `unicode_categories` crate, whose
    tables are Unicode 8.0: control/format/private-use (clean_text), Mn (strip_accents)
    and P* (punctuation splitting); its NFD also knows no character assigned after 8.0
    that has a decomposition (we decompose exactly the characters assigned in 8.0);
  * lowercasing and `char::is_whitespace` come from Rust's std: Unicode 17.0.

So the generator reads the general categories, combining classes and case mappings of
those exact versions from the database headers that ship in the source distributions of
PyPI's `unicodedata2` (the same tables as CPython's `unicodedata`, one release per
Unicode version), and takes canonical decompositions (immutable once assigned) from
this Python's `unicodedata`. Usage:

    python3 tools/gen_unicode_tables.py            # downloads the sdists with pip
    python3 tools/gen_unicode_tables.py --sdist-dir DIR   # or use ones already there

The output is deterministic: it does not depend on this Python's Unicode version.
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import unicodedata

VERSIONS = {"bert": "8.0.0", "regex": "16.0.0", "case": "17.0.0"}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "csrc", "text",
                   "unicode_tables.c")
NCP = 0x110000

# Property bits: keep in sync with csrc/text/unicode_tables.h.
BL_LETTER = 1 << 0     # Oniguruma \p{L} (Unicode 16.0)
BL_NUMBER = 1 << 1     # Oniguruma \p{N}
WHITESPACE = 1 << 2    # Oniguruma \s == Rust char::is_whitespace == White_Space
BERT_CONTROL = 1 << 3  # unicode_categories is_other(): Cc, Cf, Co, Cs in Unicode 8.0
BERT_MN = 1 << 4       # unicode_categories is_mark_nonspacing(): Mn in Unicode 8.0
BERT_PUNCT = 1 << 5    # ASCII punctuation or unicode_categories is_punctuation(): P* in 8.0
CJK = 1 << 6           # the "Chinese character" ranges of HF's BertNormalizer
HAS_LOWER = 1 << 7     # lowercase mapping differs from the character (Unicode 17.0)
HAS_DECOMP = 1 << 8    # canonical decomposition (assigned in Unicode 8.0; not Hangul)
HAS_CCC = 1 << 9       # canonical combining class != 0 (Unicode 8.0)

# HF tokenizers/src/normalizers/bert.rs, is_chinese_char (note 0x2B920, not 0x2B820).
CJK_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3


# ------------------------------------------------------------ reading the headers
def fetch_sdists(dest):
    for v in VERSIONS.values():
        if not glob.glob(os.path.join(dest, f"unicodedata2-{v}.tar.gz")):
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                            ":all:", f"unicodedata2=={v}", "-d", dest], check=True)


def read_member(sdist_dir, version, name):
    path = os.path.join(sdist_dir, f"unicodedata2-{version}.tar.gz")
    with tarfile.open(path) as tf:
        return tf.extractfile(f"unicodedata2-{version}/unicodedata2/{name}").read().decode()


def c_array(text, name):
    """The initializer of `... name[] = { ... };` as a flat list of ints or tuples."""
    m = re.search(r"\b" + re.escape(name) + r"\[\]\s*=\s*\{(.*?)\n\};", text, re.DOTALL)
    if not m:
        raise SystemExit(f"array {name} not found")
    body = m.group(1)
    if "{" in body:
        return [tuple(int(x) for x in rec.split(",")) for rec in re.findall(r"\{([^{}]*)\}", body)]
    if '"' in body:
        return re.findall(r'"([^"]*)"', body)
    return [int(x) for x in re.findall(r"-?\d+", body)]


def c_define(text, name):
    return int(re.search(r"#define\s+" + name + r"\s+(\d+)", text).group(1))


def two_stage_lookup(text, records_name):
    """code point -> record, for CPython's index1/index2 tables in one header."""
    shift = c_define(text, "SHIFT")
    index1, index2 = c_array(text, "index1"), c_array(text, "index2")
    records = c_array(text, records_name)
    mask = (1 << shift) - 1
    return [records[index2[(index1[cp >> shift] << shift) + (cp & mask)]] for cp in range(NCP)]


def categories_and_ccc(sdist_dir, version):
    text = read_member(sdist_dir, version, "unicodedata_db.h")
    assert f'UNIDATA_VERSION "{version}"' in text, version
    names = c_array(text, "_PyUnicode_CategoryNames")
    recs = two_stage_lookup(text, "_PyUnicode_Database_Records")
    return [names[r[0]] for r in recs], [r[1] for r in recs]


def lowercase_full(sdist_dir, version):
    """code point -> tuple of code points (full lowercase mapping, as CPython computes it)."""
    text = read_member(sdist_dir, version, "unicodetype_db.h")
    recs = two_stage_lookup(text, "_PyUnicode_TypeRecords")
    ext = c_array(text, "_PyUnicode_ExtendedCase")
    out = []
    for cp, (_upper, lower, _title, _dec, _dig, flags) in enumerate(recs):
        if flags & 0x4000:  # EXTENDED_CASE_MASK
            index, n = lower & 0xFFFF, lower >> 24
            out.append(tuple(ext[index:index + n]))
        else:
            out.append((cp + lower,))
    return out


# ------------------------------------------------------------------ the tables
def build(sdist_dir):
    cat8, ccc8 = categories_and_ccc(sdist_dir, VERSIONS["bert"])
    cat16, _ = categories_and_ccc(sdist_dir, VERSIONS["regex"])
    lower = lowercase_full(sdist_dir, VERSIONS["case"])
    cjk = bytearray(NCP)
    for lo, hi in CJK_RANGES:
        cjk[lo:hi + 1] = b"\1" * (hi - lo + 1)

    props = [0] * NCP
    lower_map, decomp_map, ccc_map = [], [], []
    for cp in range(NCP):
        if 0xD800 <= cp <= 0xDFFF:
            continue  # never reaches the tables: input is decoded UTF-8
        p = 0
        c16 = cat16[cp]
        if c16[0] == "L":
            p |= BL_LETTER
        if c16[0] == "N":
            p |= BL_NUMBER
        if c16 in ("Zs", "Zl", "Zp") or 0x09 <= cp <= 0x0D or cp == 0x85:
            p |= WHITESPACE
        c8 = cat8[cp]
        if c8 in ("Cc", "Cf", "Co", "Cs"):
            p |= BERT_CONTROL
        if c8 == "Mn":
            p |= BERT_MN
        if c8[0] == "P" or (cp < 0x80 and chr(cp) in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"):
            p |= BERT_PUNCT
        if cjk[cp]:
            p |= CJK
        if lower[cp] != (cp,):
            p |= HAS_LOWER
            lower_map.append((cp, lower[cp]))
        if c8 != "Cn" and not HANGUL_FIRST <= cp <= HANGUL_LAST:
            d = unicodedata.normalize("NFD", chr(cp))
            if d != chr(cp):
                p |= HAS_DECOMP
                decomp_map.append((cp, tuple(ord(x) for x in d)))
        if ccc8[cp]:
            p |= HAS_CCC
            ccc_map.append((cp, ccc8[cp]))
        props[cp] = p
    # Sanity: the well-known cases, so that a wrong header layout cannot pass silently.
    assert props[ord("a")] & BL_LETTER and props[ord("7")] & BL_NUMBER
    assert props[0x3000] & WHITESPACE and not props[0x1C] & WHITESPACE
    assert props[0x0301] & BERT_MN and props[0x300C] & BERT_PUNCT and props[0x200B] & BERT_CONTROL
    assert dict(lower_map)[0x130] == (0x69, 0x307) and dict(lower_map)[0x41] == (0x61,)
    assert dict(decomp_map)[0xE9] == (0x65, 0x301) and dict(ccc_map)[0x301] == 230
    return props, lower_map, decomp_map, ccc_map


def two_stage(values, shift):
    block = 1 << shift
    blocks, index, seen = [], [], {}
    for start in range(0, NCP, block):
        key = tuple(values[start:start + block])
        if key not in seen:
            seen[key] = len(blocks)
            blocks.append(key)
        index.append(seen[key])
    return index, blocks


def c_list(values, per_line=16, fmt="{}"):
    items = [fmt.format(v) for v in values]
    rows = (items[i:i + per_line] for i in range(0, len(items), per_line))
    return "\n".join("    " + ", ".join(row) + "," for row in rows)


def emit(props, lower_map, decomp_map, ccc_map):
    def table_bytes(shift):
        index, blocks = two_stage(props, shift)
        return 2 * len(index) + (2 * len(blocks) << shift)

    best = min(range(4, 11), key=table_bytes)
    index, blocks = two_stage(props, best)
    assert len(blocks) < 65536
    pool = []
    lower_rows, decomp_rows = [], []
    for cp, seq in lower_map:
        lower_rows.append((cp, len(pool), len(seq)))
        pool.extend(seq)
    for cp, seq in decomp_map:
        decomp_rows.append((cp, len(pool), len(seq)))
        pool.extend(seq)
    assert len(pool) < 65536 and max(len(s) for _, s in lower_map + decomp_map) < 256
    out = [
        "/* Generated by tools/gen_unicode_tables.py: do not edit. Character data of the",
        " * tokenizer, in the Unicode versions HF `tokenizers` uses (see the generator):",
        f" * byte-level regex classes {VERSIONS['regex']}, BERT categories {VERSIONS['bert']},",
        f" * lowercase {VERSIONS['case']}. */",
        '#include "unicode_tables.h"',
        "",
        f"#define PROPS_SHIFT {best}",
        f"static const uint16_t props_index[{len(index)}] = {{",
        c_list(index),
        "};",
        f"static const uint16_t props_blocks[{len(blocks)}][{1 << best}] = {{",
    ]
    for b in blocks:
        out.append("    {" + ", ".join(str(v) for v in b) + "},")
    out += [
        "};",
        "",
        f"const uint32_t bitnn_unicode_pool[{len(pool)}] = {{",
        c_list(pool, 10, "0x{:X}"),
        "};",
        f"const bitnn_unicode_mapping bitnn_unicode_lower[{len(lower_rows)}] = {{",
        c_list([f"{{0x{cp:X}, {off}, {n}}}" for cp, off, n in lower_rows], 6),
        "};",
        f"const size_t bitnn_unicode_lower_count = {len(lower_rows)};",
        f"const bitnn_unicode_mapping bitnn_unicode_decomp[{len(decomp_rows)}] = {{",
        c_list([f"{{0x{cp:X}, {off}, {n}}}" for cp, off, n in decomp_rows], 6),
        "};",
        f"const size_t bitnn_unicode_decomp_count = {len(decomp_rows)};",
        f"const bitnn_unicode_ccc bitnn_unicode_ccc_table[{len(ccc_map)}] = {{",
        c_list([f"{{0x{cp:X}, {c}}}" for cp, c in ccc_map], 8),
        "};",
        f"const size_t bitnn_unicode_ccc_count = {len(ccc_map)};",
        "",
        "uint16_t bitnn_unicode_props(uint32_t cp)",
        "{",
        "    if (cp >= 0x110000) return 0;",
        "    return props_blocks[props_index[cp >> PROPS_SHIFT]][cp & ((1u << PROPS_SHIFT) - 1)];",
        "}",
        "",
    ]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sdist-dir", help="folder with unicodedata2-{8.0.0,16.0.0,17.0.0}.tar.gz "
                    "(downloaded with pip when missing)")
    ap.add_argument("-o", "--output", default=OUT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sdist_dir = args.sdist_dir or tmp
        fetch_sdists(sdist_dir)
        tables = build(sdist_dir)
    text = emit(*tables)
    with open(args.output, "w") as f:
        f.write(text)
    print(f"wrote {args.output}: {len(tables[1])} lowercase, {len(tables[2])} decompositions, "
          f"{len(tables[3])} combining classes")


if __name__ == "__main__":
    main()
