"""The declared dependencies and the pinned set agree.

pyproject.toml declares compatible ranges (what `pip install .` accepts); requirements.txt pins the set
`make install` installs and the tests run on. Every pin must satisfy its declared range, every declared
package must be pinned, and `pip install .` (dependencies resolved, not --no-deps) into an environment
that holds the pinned set must change nothing but add swclip, giving a working `swclip --help`.
"""

import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, Requirement]:
    """name -> requirement for every dependency in pyproject.toml, core and extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return {canonicalize_name(r.name): r for r in reqs}


def pins(*files: str) -> dict[str, Version]:
    """name -> pinned version from `name==version` lines (comments and blanks skipped)."""
    out = {}
    for name in files:
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            assert m, f"{name}: {line!r} is not a name==version pin"
            out[canonicalize_name(m.group(1))] = Version(m.group(2))
    return out


def test_every_declared_dependency_is_pinned_within_its_range():
    ranges, pinned = declared(), pins("requirements.txt")
    assert {"torch", "numpy", "streamlit", "pytest"} <= ranges.keys()  # core, app and dev were all read
    problems = [f"{name}: declared but not pinned in requirements.txt" for name in ranges if name not in pinned]
    problems += [
        f"{name}=={pinned[name]} is outside the declared {req.specifier}"
        for name, req in ranges.items()
        if name in pinned and not req.specifier.contains(pinned[name], prereleases=True)
    ]
    assert not problems, "\n".join(problems)


def test_the_range_check_catches_a_pin_outside_its_range():
    req = Requirement("numpy>=1.26,<3")
    assert req.specifier.contains(Version("2.4.6"))
    assert not req.specifier.contains(Version("3.0.0"))
    assert not req.specifier.contains(Version("1.25.2"))


@pytest.mark.slow
def test_pip_install_dot_keeps_every_pin_and_gives_a_working_cli(tmp_path):
    """A fresh venv sees the pinned set (this environment's site-packages, through a .pth file); `pip install .`
    without --no-deps and without an index must resolve every dependency to what is there and add only swclip."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "pinned-set.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index", "--no-build-isolation",
         "--no-cache-dir", "--quiet", str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    added = sorted(p.name.split("-")[0].lower() for p in site.glob("*.dist-info"))
    assert added == ["swclip"], f"pip install . installed more than swclip: {added}"
    versions = subprocess.run(
        [py, "-c", "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version "
         "for d in m.distributions()}))"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    seen = {canonicalize_name(k): Version(v) for k, v in __import__("json").loads(versions).items()}
    changed = {n: (str(v), str(seen.get(n))) for n, v in pins("requirements.txt").items() if seen.get(n) != v}
    assert not changed, f"pins changed or missing after pip install .: {changed}"
    cli = subprocess.run([venv / "bin" / "swclip", "--help"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "usage: swclip COMMAND" in cli.stdout, cli.stderr[-2000:]
