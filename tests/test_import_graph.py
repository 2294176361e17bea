"""The packages depend one way: lcs_train <- targets <- lcs_export.

``targets`` never imports ``lcs_export`` (not even inside a function) and ``lcs_train``
imports neither: read from the source (every import statement, at any depth) and checked
again in a fresh interpreter (what importing each package really loads).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: One worker runs this module, so the fresh interpreter below starts once, not once per worker.
pytestmark = pytest.mark.xdist_group("import_graph")

ROOT = Path(__file__).resolve().parent.parent
#: package -> the packages it must never import, in dependency order (what each imports comes first)
FORBIDDEN = {"lcs_train": ("targets", "lcs_export"), "targets": ("lcs_export",)}


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute module an import statement in ``path`` names (relative ones stay inside)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, str(node.args[0].value)))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_source_file_imports_against_the_direction(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files for line, module in _imported_modules(path)
        if module.split(".")[0] in FORBIDDEN[package]
    ]
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def loaded_dependents() -> dict[str, list[str]]:
    """Per package of ``FORBIDDEN``, the packages it must not import that were loaded after
    importing every one of its modules. One fresh interpreter imports the packages in
    ``FORBIDDEN``'s (dependency) order, each checked before the next is imported: a package's
    own dependencies being loaded already changes nothing it could load."""
    modules = {
        package: [package] + [
            ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for path in sorted((ROOT / package).rglob("*.py")) if path.name != "__main__.py"
        ]
        for package in FORBIDDEN
    }
    script = (
        "import importlib, json, sys\n"
        "loaded = {}\n"
        f"for package, names in {modules!r}.items():\n"
        "    for name in names:\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except ModuleNotFoundError as error:\n"
        "            if error.name.split('.')[0] in ('lcs_train', 'targets', 'lcs_export'):\n"
        "                raise\n"
        f"    loaded[package] = sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r}[package]))\n"
        "print(json.dumps(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_a_package_loads_none_of_its_dependents(loaded_dependents: dict[str, list[str]], package: str) -> None:
    assert loaded_dependents[package] == [], f"importing {package} loaded {loaded_dependents[package]}"
