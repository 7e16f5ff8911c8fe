"""The package's own source: which ihl modules a module imports, and a fingerprint of them.

Read from the files next to this one (a checkout or an installed wheel alike), by walking
each module's syntax tree: every ``import`` statement counts, those inside functions too,
since a function's import is code the module runs when called.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package under ``package_dir`` by dotted name."""
    root = package_dir.parent
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, modules: Iterable[str]) -> set[str]:
    """The modules among ``modules`` that module ``name`` (source ``path``) imports, at its top
    level or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    known = set(modules)
    return {module for module in found if module in known and module != name}


def closure(roots: Iterable[str], package_dir: Path = PACKAGE_DIR) -> list[str]:
    """``roots`` and every package module they import, directly or not, sorted. Importing a
    module runs its packages' ``__init__`` too, so those count."""
    files = module_files(package_dir)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parents = [name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1)]
        todo += [*imports(name, files[name], files), *(p for p in parents if p in files)]
    return sorted(seen)


def fingerprint(roots: Iterable[str], package_dir: Path = PACKAGE_DIR) -> str:
    """A SHA-256 of the source of ``closure(roots)``: module names and file contents, so any
    edit to the code those modules run changes it, and nothing else does."""
    files = module_files(package_dir)
    digest = hashlib.sha256()
    for name in closure(roots, package_dir):
        source = files[name].read_bytes()
        digest.update(f"{name}\0{len(source)}\0".encode())
        digest.update(source)
    return digest.hexdigest()
