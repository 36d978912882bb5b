"""The README's settings table: one row per GENVIEW_* setting, with the default the code has."""

from __future__ import annotations

import re
from pathlib import Path

from genview.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def test_readme_documents_every_setting():
    """Every GENVIEW_* setting has a row in the README's settings table, with its default."""
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(GENVIEW_\w+)` \|.*$", (REPO / "README.md").read_text(), re.M)}
    for name, field in Settings.model_fields.items():
        variable = f"GENVIEW_{name.upper()}"
        assert variable in rows, f"README has no row for {variable}"
        if field.default_factory is not None:
            continue  # computed at start-up (e.g. a per-user folder): the README says it in words
        default = field.default
        shown = ("unset" if default is None else "empty" if default == "" else str(default).lower()
                 if isinstance(default, bool) else str(int(default)) if isinstance(default, float)
                 and default.is_integer() else str(default))
        assert shown in rows[variable].split("|")[2], f"README gives another default for {variable}: {rows[variable]}"
