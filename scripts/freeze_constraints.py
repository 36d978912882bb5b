"""Write constraints.txt: the exact installed version of every package `genview[dev]` needs, transitively.

Unlike `pip freeze`, it leaves out what this environment has but the project does not use. Run it after
installing and testing new versions:  python scripts/freeze_constraints.py > constraints.txt
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
HEADER = """\
# Exact versions CI, the Docker image and the tests install with:  pip install -c constraints.txt -e ".[dev]"
# pyproject.toml holds the ranges; regenerate with:  python scripts/freeze_constraints.py > constraints.txt
"""


def project_requirements(extras: set[str]) -> list[Requirement]:
    """genview's own requirements with the given extras, self-references (`genview[serve]`) expanded."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    reqs, todo, seen = [Requirement(r) for r in project["dependencies"]], set(extras), set()
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for req in map(Requirement, optional[extra]):
            if canonicalize_name(req.name) == "genview":
                todo |= req.extras - seen
            else:
                reqs.append(req)
    return reqs


def installed_closure(roots: list[Requirement]) -> dict[str, str]:
    """{distribution name: installed version} for the roots and everything they require, transitively."""
    pinned: dict[str, str] = {}
    todo = [(root, frozenset(root.extras)) for root in roots]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extras = todo.pop()
        key = (canonicalize_name(req.name), extras)
        if key in done:
            continue
        done.add(key)
        dist = metadata.distribution(req.name)
        pinned[dist.metadata["Name"]] = dist.version
        for dep in map(Requirement, dist.requires or []):
            env = [{"extra": e} for e in extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(e) for e in env):
                todo.append((dep, frozenset(dep.extras)))
    return pinned


def main() -> None:
    pinned = installed_closure(project_requirements({"dev"}))
    lines = [f"{name}=={version.split('+')[0]}" for name, version in sorted(pinned.items(), key=lambda kv: kv[0].lower())]
    sys.stdout.write(HEADER + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
