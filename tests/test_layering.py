"""Composition: the library never imports the services or the trainer; workers never import the HTTP apps."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (top level or inside functions), as dotted names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value))
    return names


def offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        bad = sorted(m for m in imported_modules(path) if m.split(".")[0] in forbidden or m in forbidden)
        if bad:
            found[str(path.relative_to(REPO))] = bad
    return found


def test_the_library_imports_neither_services_nor_trainer():
    assert list((REPO / "genview").rglob("*.py")), "no library modules found"
    assert offenders("genview", ("services", "trainer")) == {}


def test_workers_do_not_import_the_http_apps():
    workers = [*REPO.glob("services/*/worker.py"), *REPO.glob("services/*/wiring.py"), REPO / "services/workers.py",
               REPO / "services/worker_loop.py"]
    apps = {"services.generator.app", "services.scorer.app", "services.embedded", "fastapi"}
    assert {str(p.relative_to(REPO)): sorted(imported_modules(p) & apps) for p in workers
            if imported_modules(p) & apps} == {}


def test_the_scan_sees_lazy_and_dynamic_imports(tmp_path):
    probe = tmp_path / "m.py"
    probe.write_text("import importlib\ndef f():\n    from services.cli import main\n"
                     "    importlib.import_module('trainer.run')\n")
    assert {"services.cli", "trainer.run"} <= imported_modules(probe)


SOURCE_FOLDERS = ("genview", "services", "trainer", "bench", "harness", "examples", "scripts")
STORE_PREFIXES = ("inputs", "views", "tenants", "pca", "scores", "score-bodies")
# A store key built by string formatting: an f-string, `+` or `%`/`.format` template that starts with a key prefix.
PREFIX = "(?:%s)/" % "|".join(STORE_PREFIXES)
KEY_BY_FORMAT = re.compile(rf"""(?:\bf|\+\s*)["']{PREFIX}|["']{PREFIX}[^"']*(?:%s|\{{\}}|["']\s*\+)""")


def source_files() -> list[Path]:
    return [p for folder in SOURCE_FOLDERS for p in sorted((REPO / folder).rglob("*.py"))]


def dynamic_imports(path: Path) -> list[int]:
    """Lines that import by a computed name: importlib.import_module, __import__, importlib.util loaders."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in ("import_module", "__import__", "spec_from_file_location", "module_from_spec"):
                lines.append(node.lineno)
    return lines


def test_no_module_imports_by_a_computed_name():
    """Every composition edge is a plain import the scans above see (genview/__init__ is the one lazy table,
    and each of its targets is also imported statically for type checkers, so the scan sees them too)."""
    found = {str(p.relative_to(REPO)): dynamic_imports(p) for p in source_files()}
    found = {path: lines for path, lines in found.items() if lines}
    assert set(found) <= {"genview/__init__.py"}, found
    from genview import _EXPORTS

    assert set(_EXPORTS.values()) <= imported_modules(REPO / "genview/__init__.py")


def test_only_the_store_module_builds_store_keys():
    offending = {}
    for path in source_files():
        if path == REPO / "genview/store.py":
            continue
        hits = [n for n, line in enumerate(path.read_text().splitlines(), 1) if KEY_BY_FORMAT.search(line)]
        if hits:
            offending[str(path.relative_to(REPO))] = hits
    assert offending == {}


def test_the_key_scan_sees_formatted_keys():
    assert KEY_BY_FORMAT.search('k = f"views/{sha}/fg.png"')
    assert KEY_BY_FORMAT.search('k = "tenants/" + tenant')
    assert KEY_BY_FORMAT.search('k = "scores/{}.json".format(x)')
    assert not KEY_BY_FORMAT.search('url = f"/views/{key}"')
    assert not KEY_BY_FORMAT.search('store.list("views")')
