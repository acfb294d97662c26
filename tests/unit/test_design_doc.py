"""docs/design.md is true to the package: every module has its row in a room table, and every
module path, folder or ``room/module.Name`` the doc names exists."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "bus_tasks"
DESIGN = ROOT / "docs" / "design.md"

# Paths under these start at the project root; every other path starts at bus_tasks/.
ROOT_FOLDERS = ("bus_tasks/", "bench/", "tests/", "docs/", "deploy/", "config/")

# A table row whose first cell is one backticked path: `core/view.py`, `frontdoors/http/web/`.
ROW = re.compile(r"^\|\s*`([\w./]*(?:/|\.py))`\s*\|", re.MULTILINE)  # a module's or folder's row
# A module path (`aggregator/ingest.py`) or a folder (`transport/kombu/`), anywhere in the doc.
FILE = re.compile(r"(?<![\w./<-])((?:\w+/)*\w+\.py)\b")
FOLDER = re.compile(r"(?<![\w./<-])((?:[a-z_]+/)+)(?![\w.<])")
# A name in a module: `core/view.TaskView`, `aggregator/authorization.caller_of`.
NAME = re.compile(r"(?<![\w./<-])((?:[a-z_]+/)+[a-z_]+)\.([A-Za-z_]\w*)")
NOT_NAMES = {"py", "md", "toml", "json", "html", "js", "css", "svg", "png"}


def _only_reexports(tree: ast.Module) -> bool:
    """An ``__init__.py`` of a docstring, imports and ``__all__``: nothing of its own to describe."""
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Assign) and all(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            continue
        return False
    return True


def package_modules(package: Path) -> set[str]:
    """What the room tables must list: every module, as its path under the package, and every
    folder of files without Python (the web view's assets), with a trailing slash."""
    found: set[str] = set()
    for path in package.rglob("*"):
        if "__pycache__" in path.parts:
            continue
        relative = path.relative_to(package).as_posix()
        if path.is_file() and path.suffix == ".py":
            if path.name == "__init__.py" and _only_reexports(ast.parse(path.read_text(encoding="utf-8"))):
                continue
            found.add(relative)
        elif path.is_dir() and not any(path.glob("*.py")) and any(p.is_file() for p in path.iterdir()):
            found.add(relative + "/")
    return found


def _resolve(spelled: str, root: Path, package: Path) -> Path:
    return root / spelled if spelled.startswith(ROOT_FOLDERS) else package / spelled


def _is_in_package(spelled: str) -> bool:
    return not spelled.startswith(ROOT_FOLDERS)


def missing_rows(text: str, package: Path) -> list[str]:
    """Modules of the package without a row in the doc's room tables."""
    rows = {spelled for spelled in ROW.findall(text) if _is_in_package(spelled)}
    return sorted(package_modules(package) - rows)


def repeated_rows(text: str) -> list[str]:
    """Modules with more than one row: each belongs to exactly one room."""
    return sorted(spelled for spelled, count in Counter(ROW.findall(text)).items() if count > 1)


def _top_level_names(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def gone_paths(text: str, root: Path, package: Path) -> list[str]:
    """Paths, folders and module names the doc spells that the code does not have."""
    gone: set[str] = set()
    for spelled in FILE.findall(text) + FOLDER.findall(text) + ROW.findall(text):
        if not _resolve(spelled, root, package).exists():
            gone.add(spelled)
    for spelled, name in NAME.findall(text):
        if name in NOT_NAMES:
            continue
        base = _resolve(spelled, root, package)
        module = next((m for m in (base.with_suffix(".py"), base / "__init__.py") if m.is_file()), None)
        if module is None:
            gone.add(f"{spelled}.py")
        elif name not in _top_level_names(module):
            gone.add(f"{spelled}.{name}")
    return sorted(gone)


def test_every_module_of_the_package_has_a_row_in_a_room_table() -> None:
    assert missing_rows(DESIGN.read_text(encoding="utf-8"), PACKAGE) == []


def test_every_module_has_one_row_only() -> None:
    assert repeated_rows(DESIGN.read_text(encoding="utf-8")) == []


def test_every_path_and_name_the_design_spells_exists() -> None:
    assert gone_paths(DESIGN.read_text(encoding="utf-8"), ROOT, PACKAGE) == []


# The checks themselves, on a small package of their own: each can fail, and names what fails.


@pytest.fixture
def package(tmp_path: Path) -> Path:
    files = {
        "pkg/__init__.py": '"""Re-exports only."""\nfrom pkg.core.view import View\n__all__ = ["View"]\n',
        "pkg/core/__init__.py": "",
        "pkg/core/view.py": "class View:\n    pass\n",
        "pkg/plugins/__init__.py": "def installed() -> None:\n    pass\n",
        "pkg/names.py": 'RPC = "rpc"\n',
        "pkg/web/index.html": "<html></html>\n",
        "bench/cli.py": "",
    }
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return tmp_path / "pkg"


def test_a_module_without_a_row_is_named(package: Path) -> None:
    doc = "| module | what |\n|---|---|\n| `core/view.py` | the view |\n| `names.py` | names |\n"
    assert missing_rows(doc, package) == ["plugins/__init__.py", "web/"]


def test_re_exporting_packages_and_root_paths_need_no_row(package: Path) -> None:
    doc = (
        "| `core/view.py` | x |\n| `names.py` | x |\n| `plugins/__init__.py` | x |\n| `web/` | x |\n"
        "| `bench/cli.py` | x |\n"
    )
    assert missing_rows(doc, package) == []
    assert gone_paths(doc, package.parent, package) == []


def test_a_module_listed_twice_is_named() -> None:
    assert repeated_rows("| `names.py` | a |\n| `core/view.py` | b |\n| `names.py` | c |\n") == ["names.py"]


def test_a_path_a_folder_or_a_name_that_is_gone_is_named(package: Path) -> None:
    doc = (
        "`core/model.py` holds it; see `store/`; ``core/view.View`` and ``core/view.Gone``;\n"
        "```\n core/paging.Pager ─▶ names.py, tests/gone.py, `docs/design.md`\n```\n"
    )
    assert gone_paths(doc, package.parent, package) == [
        "core/model.py",
        "core/paging.py",
        "core/view.Gone",
        "store/",
        "tests/gone.py",
    ]
