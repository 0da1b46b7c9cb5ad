"""Build a stand-in for the GPU image's python3: a venv that holds exactly the image's packages the project uses.

    .venv/bin/python benchmarks/gpu_image/stand_in.py DEST     # run with the project's venv: it is the source

The packages are the names in rehearsal.txt, each of which must be on the image (constraints.txt), plus
their dependencies as the source venv's metadata declares them. A dependency the image's list lacks is
linked too, and reported: the source's versions are newer than the image's and may need what the image's
versions do not (huggingface-hub 2.x needs httpx2; the image's 1.33 uses httpx), so leaving it out would
fail for version skew, not for a missing wheel. What the rehearsal guards is the project's own imports.
Each kept distribution's top-level files are symbolic links into the source venv's site-packages, so the
stand-in costs no download and a few seconds. Versions are therefore the source venv's (requirements.txt's
pins), not the image's; the report lists both. Exits non-zero when a name in rehearsal.txt is not on the
image or not installed in the source venv.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(path: Path) -> dict[str, str | None]:
    """{normalised name: pinned version or None} of a requirements / constraints file (comments skipped)."""
    out: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[norm(name)] = version.strip() or None
    return out


def closure(roots: list[str], allowed: set[str], installed: dict) -> set[str]:
    """The roots and their dependencies (no extras), through allowed names only."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in allowed:
            continue
        seen.add(name)
        for r in installed[name].requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(norm(req.name))
    return seen


def top_level(dist) -> set[str]:
    """The first path components a distribution installs into site-packages (not ../bin scripts)."""
    return {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", type=Path, help="the venv to create (replaced if it exists)")
    p.add_argument("--wanted", type=Path, default=HERE / "rehearsal.txt")
    p.add_argument("--image", type=Path, default=HERE / "constraints.txt")
    args = p.parse_args(argv)

    image = read_names(args.image)
    installed = {norm(d.metadata["Name"]): d for d in md.distributions()}
    wanted = list(read_names(args.wanted))
    bad = [n for n in wanted if n not in image] + [n for n in wanted if n not in installed]
    if bad:
        print(f"stand_in: not on the image or not installed in {sys.prefix}: {', '.join(bad)}", file=sys.stderr)
        return 2
    keep = closure(wanted, set(installed), installed)
    # a top-level folder shared by several distributions (nvidia/, for one) is linked when all its owners are kept
    owners: dict[str, set[str]] = {}
    for name, dist in installed.items():
        for part in top_level(dist):
            owners.setdefault(part, set()).add(name)
    src = Path(site.getsitepackages()[0])

    if args.dest.exists():
        shutil.rmtree(args.dest)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(args.dest)], check=True)
    (dst,) = (args.dest / "lib").glob("python3*/site-packages")
    for name in sorted(keep):
        for part in sorted(top_level(installed[name])):
            target = dst / part
            if target.exists() or not (src / part).exists():
                continue
            if owners[part] <= keep:
                target.symlink_to(src / part)
            else:  # a shared folder: link the entries of the kept owners one level down
                target.mkdir()
                for f in installed[name].files or []:
                    parts = Path(str(f)).parts
                    if parts[0] == part and len(parts) > 1 and not (target / parts[1]).exists():
                        (target / parts[1]).symlink_to(src / part / parts[1])
        seen = image.get(name, "-") or "?"
        version = installed[name].version
        print(f"  {name:<28} {version:<16} image {seen}{'' if seen in ('?', version) else '  (differs)'}")
    skew = sorted(n for n in keep if n not in image)
    print(f"stand_in: {len(keep)} distributions linked into {args.dest}; dependencies not on the image's list: {skew}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
