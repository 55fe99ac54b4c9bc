"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and import-linter really enforces them.

Contracts (docs/ARCHITECTURE.md "Layering and contracts"): the domain (store, review, inference) imports neither Qt
nor widgets nor app; widgets never import app; inference may import review and store, review may import store,
never the other way. `lint-imports` reads the source with grimp (every import statement, lazy ones in functions
too) and needs the root packages importable from its working folder: it runs in the repository root here, and in a
copy of the packages for the negative test (the copy comes first on PYTHONPATH, ahead of the editable install).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "widgets", "inference", "review", "store", "assets")
CONTRACTS = {
    "domain-qt-free": "Domain (store, review, inference) imports neither Qt nor widgets nor app",
    "widgets-no-app": "Widgets never import app",
    "domain-layers": "Domain layers: inference over review over store",
}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` from this interpreter's environment, in cwd (its pyproject.toml), without a cache folder."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache", "--no-logo"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept() -> None:
    proc = lint_imports(REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in out, out
    assert "0 broken" in out


def _copy_sources(dst: Path) -> None:
    """The packages' Python files only (no demo models, icons, caches) and the contracts' pyproject.toml."""
    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__" or (Path(folder, n).is_file() and not n.endswith(".py"))]

    for pkg in PACKAGES:
        if (REPO / pkg).is_dir():
            shutil.copytree(REPO / pkg, dst / pkg, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", dst / "pyproject.toml")


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_a_wrong_import_breaks_the_named_contract(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    _append(tmp_path / "review" / "__init__.py", "import PySide6  # wrong: the domain never imports Qt")
    _append(tmp_path / "widgets" / "__init__.py", "import app  # wrong: widgets never import app")
    _append(tmp_path / "store" / "__init__.py", "import review  # wrong: store is the bottom layer")
    proc = lint_imports(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    for name in CONTRACTS.values():
        assert f"{name} BROKEN" in out, out
    assert "review -> PySide6" in out and "widgets -> app" in out and "store -> review" in out, out
    assert "3 broken" in out, out
