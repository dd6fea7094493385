"""tools/mutants.py stays runnable: every mutant's snippet is in its file exactly
once (else the driver reports it "not applicable" and the bug it stands for goes
unchecked) and its tests exist. A change that moves the mutated code must update
the mutant in the same commit."""
from pathlib import Path

import pytest

from tools.mutants import MUTANTS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_mutant_applies(mutant):
    text = (ROOT / mutant.file).read_text()
    assert text.count(mutant.old) == 1, f"{mutant.id}: snippet found {text.count(mutant.old)} times"
    assert mutant.new != mutant.old
    for t in mutant.tests:
        assert (ROOT / t.split("::")[0]).is_file(), f"{mutant.id}: no {t}"


def test_mutant_ids_unique():
    ids = [m.id for m in MUTANTS]
    assert len(ids) == len(set(ids))
