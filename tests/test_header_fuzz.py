"""Header-aware fuzzing (tests/header_fuzz.py): semantically mutated model headers with a
valid checksum load as a working model or raise FormatError, never anything else."""
import collections
import gzip

import pytest

import header_fuzz as hf

SEED = 20261202
CASES = 10_000  # the bounded run; the long run is documented in docs/format.md
CHUNKS = 5


@pytest.fixture(scope="module")
def base():
    return hf.bases()


@pytest.fixture(scope="module")
def outcomes():
    return collections.Counter(), collections.Counter()


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_bounded_fuzz(base, outcomes, chunk):
    counts, messages = outcomes
    findings = []
    per = CASES // CHUNKS
    for i in range(chunk * per, (chunk + 1) * per):
        name, raw, what = hf.make_case(base, SEED, i)
        try:
            counts[hf.run_file(raw, messages)] += 1
        except Exception as e:  # a finding: name the case so that it can be replayed
            findings.append(f"case {i} ({name}: {what}): {type(e).__name__}: {e}"[:300])
    assert not findings, "\n".join(findings[:20])


def test_fuzz_reaches_the_model_description(outcomes):
    """The mutations are semantic: most files pass the container checks and fail on the
    model description, in many different rules, and some still make a working model."""
    counts, messages = outcomes
    if sum(counts.values()) < CASES:
        pytest.skip("needs the bounded run (test_bounded_fuzz) in the same session")
    assert counts["ok"] > CASES // 50
    assert counts["format"] > CASES // 2
    assert len(messages) >= 40, sorted(messages)


@pytest.mark.parametrize("path", hf.regression_files(), ids=lambda p: p.name.split(".")[0])
def test_regression_files(path):
    """Every file the fuzzer ever found raising something else now loads or is a FormatError."""
    assert hf.run_file(gzip.decompress(path.read_bytes())) in ("ok", "format")


def test_cases_are_reproducible(base):
    assert hf.make_case(base, 7, 123) == hf.make_case(base, 7, 123)
    assert hf.make_case(base, 7, 123)[1] != hf.make_case(base, 7, 124)[1]
