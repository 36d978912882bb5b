"""Print the project's dependencies (and those of the extras named) from pyproject.toml, one a line.

Used by the Dockerfile to install the dependencies from pyproject.toml alone, before the source is
copied, so that editing the source does not invalidate that layer:
    python requirements.py [EXTRA,EXTRA...] > requirements.txt
An extra that names the project itself (`genview[serve,train]`) is replaced by those extras' dependencies,
so pip never sees a requirement on the package it is installing; each line is printed once. An extra that
pyproject.toml does not define adds nothing.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: str = "") -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    self_reference = re.compile(rf"^{re.escape(project['name'])}\[([^\]]*)\]$", re.I)
    out: list[str] = []

    def add(lines: list[str], seen_extras: set[str]) -> None:
        for line in lines:
            if match := self_reference.match(line.replace(" ", "")):
                for extra in match.group(1).split(","):
                    if extra not in seen_extras:
                        seen_extras.add(extra)
                        add(optional.get(extra, []), seen_extras)
            elif line not in out:
                out.append(line)

    add(list(project["dependencies"]), set())
    add([f"{project['name']}[{extras}]"], set())
    return out


if __name__ == "__main__":
    here = Path.cwd() / "pyproject.toml"
    print("\n".join(requirements(here, sys.argv[1] if len(sys.argv) > 1 else "")))
