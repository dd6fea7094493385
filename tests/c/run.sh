#!/usr/bin/env bash
# Build and run tests/c/test_kernels.c: every compiled kernel against the
# scalar reference, bit for bit, without Python.
#
#   tests/c/run.sh [all|native|sanitize|aarch64]     (default: all)
#
#   native    the host's kernels, with the flags setup.py uses (x86: -mavx2 /
#             -mavx512f -mavx512bw on the kernel files only, nothing else gets them)
#   sanitize  the same under AddressSanitizer + UBSan (skipped if unsupported)
#   aarch64   cross-compiled with aarch64-linux-gnu-gcc (ref + NEON) and run
#             under qemu-aarch64 -L /usr/aarch64-linux-gnu (skipped if either
#             tool is missing); on an aarch64 host "native" covers NEON already
#
# Environment: CC (default cc), PYTHON (default python3; reads csrc/sources.py), CROSS_CC (default aarch64-linux-gnu-gcc),
# QEMU (default qemu-aarch64), QEMU_LD_PREFIX (default /usr/aarch64-linux-gnu),
# FULL=1 runs the full case list under the sanitizers and qemu too (about 6x
# slower there; by default those run the quick list).
# Exit status: 0 all passed, 1 a test failed, 2 a build failed,
# 77 every requested part was skipped (no compiler / no cross tools).
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SRC="$ROOT/csrc"
WHAT="${1:-all}"
CC="${CC:-cc}"
CROSS_CC="${CROSS_CC:-aarch64-linux-gnu-gcc}"
QEMU="${QEMU:-qemu-aarch64}"
QEMU_LD_PREFIX="${QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}"
PYTHON="${PYTHON:-python3}"

# Files, header folders and flags come from csrc/sources.py, the list setup.py
# builds from: FLAGS (-ffp-contract=off matters: a fused multiply-add anywhere
# could change a rounding), the version define, the include folders and the
# core group "kernels".
sources() { "$PYTHON" "$SRC/sources.py" "$@"; }
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "run.sh: needs $PYTHON to read csrc/sources.py (set PYTHON=...)" >&2
    exit 2
fi
FLAGS_TEXT="$(sources flags)" && INCLUDES_TEXT="$(sources includes)" &&
    CORE_TEXT="$(sources core kernels)" || exit 2
mapfile -t FLAGS <<<"$FLAGS_TEXT"
mapfile -t INCLUDES <<<"$INCLUDES_TEXT"
mapfile -t CORE <<<"$CORE_TEXT"
for dir in "${INCLUDES[@]}"; do FLAGS+=(-I"$SRC/$dir"); done

SLOW_ARG=quick
if [ "${FULL:-0}" = 1 ]; then SLOW_ARG=; fi

BUILD="$(mktemp -d "${TMPDIR:-/tmp}/bitnn-ctest.XXXXXX")"
trap 'rm -rf "$BUILD"' EXIT

status=0
ran=0

# build OUT CC EXTRA_FLAGS... -- KERNEL_FILE:MACRO:FLAGS ... (FLAGS comma-separated)
build() {
    local out="$1" cc="$2"
    shift 2
    local extra=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do extra+=("$1"); shift; done
    shift
    local dir="$BUILD/$(basename "$out").o.d"
    mkdir -p "$dir"
    local macros=() objs=()
    local spec file kflags macro obj
    for spec in "$@"; do
        IFS=: read -r file macro kflags <<<"$spec"
        macros+=("-D$macro=1")
        # shellcheck disable=SC2086
        kflags="${kflags//,/ }" # several flags are comma-separated in the spec
        obj="$dir/${file%.c}.o" # file is FOLDER/NAME.c (relative to csrc/)
        mkdir -p "$(dirname "$obj")"
        "$cc" "${FLAGS[@]}" "${extra[@]}" $kflags -c "$SRC/$file" -o "$obj" || return 1
        objs+=("$obj")
    done
    for file in "${CORE[@]}"; do
        obj="$dir/${file%.c}.o"
        mkdir -p "$(dirname "$obj")"
        "$cc" "${FLAGS[@]}" "${extra[@]}" "${macros[@]}" -c "$SRC/$file" -o "$obj" || return 1
        objs+=("$obj")
    done
    "$cc" "${FLAGS[@]}" "${extra[@]}" "${macros[@]}" -c "$HERE/test_kernels.c" -o "$dir/test_kernels.o" || return 1
    "$cc" "${extra[@]}" "$dir/test_kernels.o" "${objs[@]}" -o "$out" -lm -pthread || return 1
}

# The SIMD kernel files for a machine, as csrc/sources.py lists them.
kernels_for() {
    local specs
    specs="$(sources simd "$1")" || return 1
    echo $specs
}

run_test() { # name, command...
    local name="$1"
    shift
    echo "== $name: $*"
    "$@"
    local rc=$?
    ran=1
    if [ $rc -ne 0 ]; then
        echo "== $name: FAILED (exit $rc)"
        status=1
    fi
}

native() {
    if ! command -v "$CC" >/dev/null 2>&1; then
        echo "== native: SKIPPED (no C compiler '$CC')"
        return
    fi
    # shellcheck disable=SC2046
    if ! build "$BUILD/test_kernels" "$CC" -- $(kernels_for "$(uname -m)"); then
        echo "== native: BUILD FAILED"
        status=2
        return
    fi
    run_test native "$BUILD/test_kernels"
}

sanitize() {
    if ! command -v "$CC" >/dev/null 2>&1; then
        echo "== sanitize: SKIPPED (no C compiler '$CC')"
        return
    fi
    local san=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
    if ! echo 'int main(void){return 0;}' | "$CC" "${san[@]}" -x c - -o "$BUILD/san_probe" >/dev/null 2>&1 ||
       ! "$BUILD/san_probe" >/dev/null 2>&1; then
        echo "== sanitize: SKIPPED ($CC cannot build or run with -fsanitize=address,undefined)"
        return
    fi
    # shellcheck disable=SC2046
    if ! build "$BUILD/test_kernels_san" "$CC" "${san[@]}" -- $(kernels_for "$(uname -m)"); then
        echo "== sanitize: BUILD FAILED"
        status=2
        return
    fi
    ASAN_OPTIONS=detect_leaks=1 run_test sanitize "$BUILD/test_kernels_san" $SLOW_ARG
}

aarch64() {
    case "$(uname -m)" in aarch64|arm64)
        echo "== aarch64: the host is aarch64, 'native' runs the NEON kernel"
        return ;;
    esac
    if ! command -v "$CROSS_CC" >/dev/null 2>&1 || ! command -v "$QEMU" >/dev/null 2>&1; then
        echo "== aarch64: SKIPPED (needs $CROSS_CC and $QEMU: apt-get install gcc-aarch64-linux-gnu qemu-user)"
        return
    fi
    # shellcheck disable=SC2046
    if ! build "$BUILD/test_kernels_aarch64" "$CROSS_CC" -- $(kernels_for aarch64); then
        echo "== aarch64: BUILD FAILED"
        status=2
        return
    fi
    run_test aarch64 "$QEMU" -L "$QEMU_LD_PREFIX" "$BUILD/test_kernels_aarch64" $SLOW_ARG
}

case "$WHAT" in
    all) native; sanitize; aarch64 ;;
    native) native ;;
    sanitize) sanitize ;;
    aarch64) aarch64 ;;
    *) echo "usage: $0 [all|native|sanitize|aarch64]" >&2; exit 2 ;;
esac

if [ $status -ne 0 ]; then exit $status; fi
if [ $ran -eq 0 ]; then exit 77; fi
exit 0
