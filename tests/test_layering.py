"""Composition: the library never imports the services or the trainer; workers never import the HTTP apps."""

from __future__ import annotations

import ast
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
