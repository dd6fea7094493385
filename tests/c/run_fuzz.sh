#!/bin/sh
# Build tests/c/fuzz_bnb.c with AddressSanitizer + UBSan and fuzz the .bnb
# loader for SECONDS (default 60). Seeds are written with bitnn.format, so the
# package must be importable (python3 setup.py build_ext --inplace).
#   tests/c/run_fuzz.sh [SECONDS]        CC=clang works too; FUZZ_SEED=n varies the run
set -eu
cd "$(dirname "$0")/../.."
SECONDS_TO_RUN=${1:-60}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The flags, the header folders and the loader's files (core group "format")
# come from csrc/sources.py.
FLAGS=$(python3 csrc/sources.py flags)
INCLUDES=$(python3 csrc/sources.py includes | sed 's|^|-Icsrc/|')
FILES=$(python3 csrc/sources.py core format | sed 's|^|csrc/|')
# shellcheck disable=SC2086 # one flag or file a word
${CC:-cc} $FLAGS -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
    $INCLUDES tests/c/fuzz_bnb.c $FILES -o "$WORK/fuzz_bnb"
python3 - "$WORK" <<'PY'
import sys
import numpy as np
from bitnn.format import Bits, write_bnb
d = sys.argv[1]
rng = np.random.default_rng(0)
bits = lambda *s: Bits.from_array(rng.integers(0, 2, s))
write_bnb(f"{d}/a.bnb", {"model": {"kind": "classifier", "name": "a"}, "eps": 1e-5,
                          "labels": ["x", "\u00e9"], "layers": [{"type": "global_avg_pool"}]},
          {"w": bits(4, 3, 3, 2), "b": bits(4), "fc": bits(10, 70), "full": bits(2, 64),
           "m": rng.standard_normal(3).astype(np.float32)})
write_bnb(f"{d}/b.bnb", {}, {})
write_bnb(f"{d}/c.bnb", {"x": [[1, 2], {"y": None}]}, {"only": bits(1)})
write_bnb(f"{d}/d.bnb", {}, {f"t{i}": bits(1 + i, 65) for i in range(6)})
PY
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$WORK/fuzz_bnb" "$SECONDS_TO_RUN" "$WORK"/*.bnb
