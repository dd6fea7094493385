"""Each build fact has one home, and the other places read it.

* the C files, their include folders and flags: csrc/sources.py (setup.py,
  tests/c/run.sh and tests/c/run_fuzz.sh read it; the README's Layout table
  names each file's folder);
* the version: bitnn/_version.py (pyproject reads it as a dynamic attribute,
  csrc/include/bitnn.h gets it as a -D define);
* the test dependencies: requirements-test.txt, which the pyproject [test]
  extra repeats exactly.
"""

import importlib.util
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sources():
    spec = importlib.util.spec_from_file_location("bitnn_sources", ROOT / "csrc" / "sources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pyproject():
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_every_c_file_is_listed_once(sources):
    listed = sources.core_sources() + [f for files in sources.SIMD.values() for f, _, _ in files]
    assert len(listed) == len(set(listed)), f"listed twice: {sorted(listed)}"
    on_disk = {p.relative_to(ROOT / "csrc").as_posix() for p in (ROOT / "csrc").rglob("*.c")}
    assert set(listed) == on_disk, (f"not in csrc/sources.py: {sorted(on_disk - set(listed))}; "
                                    f"listed but missing: {sorted(set(listed) - on_disk)}")


def test_include_dirs_hold_every_header_once(sources):
    # Headers are included by name alone (#include "bnb.h") through the include
    # folders, so every header folder is one and no two headers share a name.
    csrc = ROOT / "csrc"
    headers = [p.relative_to(csrc) for p in csrc.rglob("*.h")]
    assert sorted({h.parent.as_posix() for h in headers}) == sorted(sources.INCLUDE_DIRS)
    names = [h.name for h in headers]
    assert len(names) == len(set(names)), f"header names used twice: {sorted(names)}"
    assert sources.include_dirs() == sources.INCLUDE_DIRS
    assert sources.include_dirs("csrc") == [f"csrc/{d}" for d in sources.INCLUDE_DIRS]


def readme_layout() -> dict:
    """The README's Layout table: {path: what}, brace groups expanded in the names."""
    rows = re.findall(r"^\| `([^`]+)` \| (.*) \|$", (ROOT / "README.md").read_text(), re.M)
    return dict(rows)


def expand_braces(text: str) -> set:
    names = set()
    for word in re.findall(r"`([^`]+)`", text):
        parts = re.split(r"\{([^}]*)\}", word)
        options = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
        names.update("".join(choice) for choice in itertools.product(*options))
    return names


def test_readme_layout_names_every_c_file_in_its_folder():
    layout = readme_layout()
    csrc = ROOT / "csrc"
    for path in sorted(csrc.rglob("*.[ch]")):
        folder = f"csrc/{path.parent.relative_to(csrc).as_posix()}/"
        assert folder in layout, f"README Layout has no row for {folder}"
        assert path.name in expand_braces(layout[folder]), (
            f"README Layout row {folder} does not name {path.name}")


def test_sources_cli_prints_what_the_build_uses(sources):
    def run(*args):
        return subprocess.run([sys.executable, str(ROOT / "csrc" / "sources.py"), *args],
                              capture_output=True, text=True)

    flags = run("flags")
    assert flags.returncode == 0
    name, value = sources.version_macro()
    assert flags.stdout.split() == sources.FLAGS + [f"-D{name}={value}"]
    assert run("core", "kernels").stdout.split() == sources.CORE["kernels"]
    assert run("includes").stdout.split() == sources.INCLUDE_DIRS
    assert run("simd", "amd64").stdout.split() == [
        f"{f}:{m}:{','.join(fl)}" for f, m, fl in sources.SIMD["x86_64"]]
    bad = run("core", "no-such-group")
    assert bad.returncode == 2 and "unknown source group" in bad.stderr
    assert bad.stderr.count("\n") == 1  # one line, no traceback


def test_version_has_one_home(sources, pyproject):
    import bitnn

    text = (ROOT / "bitnn" / "_version.py").read_text()
    assert sources.version() == bitnn.__version__
    assert f'__version__ = "{bitnn.__version__}"' in text
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "bitnn._version.__version__"}
    header = (ROOT / "csrc" / "include" / "bitnn.h").read_text()
    assert not re.search(r'BITNN_VERSION_STRING\s+"', header), "bitnn.h hard-codes the version"


def requirement_lines(path: Path) -> list:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def test_test_extra_matches_requirements_file(pyproject):
    extra = pyproject["project"]["optional-dependencies"]["test"]
    assert sorted(extra) == sorted(requirement_lines(ROOT / "requirements-test.txt"))
