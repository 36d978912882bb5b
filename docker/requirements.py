"""Print the project's dependencies (and those of the extras named) from pyproject.toml, one a line.

Used by the Dockerfiles to install the dependencies from pyproject.toml alone, before the source is
copied, so that editing the source does not invalidate that layer:
    python requirements.py [EXTRA,EXTRA...] > requirements.txt
An extra that pyproject.toml does not define adds nothing.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: str = "") -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    return list(project["dependencies"]) + [d for e in extras.split(",") if e.strip() for d in optional.get(e.strip(), [])]


if __name__ == "__main__":
    here = Path.cwd() / "pyproject.toml"
    print("\n".join(requirements(here, sys.argv[1] if len(sys.argv) > 1 else "")))
