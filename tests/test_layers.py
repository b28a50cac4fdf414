"""The layer rules of DESIGN.md, checked on the source: shards/ imports neither Beam nor DALI, and so on."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "shards": ("apache_beam", "nvidia", "torch"),
    "pipelines": ("nvidia",),
    "loaders": ("apache_beam",),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_rules(package):
    bad = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & set(FORBIDDEN[package])) for p in (ROOT / package).rglob("*.py")
    }
    assert not {k: v for k, v in bad.items() if v}, f"{package}/ breaks the layer rules of DESIGN.md"


def test_every_module_has_a_docstring_and_all():
    missing = []
    for package in ("shards", "pipelines", "loaders", "infra"):
        for p in (ROOT / package).rglob("*.py"):
            tree = ast.parse(p.read_text())
            has_all = any(
                isinstance(n, ast.Assign | ast.AnnAssign)
                and any(
                    getattr(t, "id", None) == "__all__"
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                )
                for n in tree.body
            )
            if not ast.get_docstring(tree) or (not has_all and p.name != "__main__.py"):
                missing.append(str(p.relative_to(ROOT)))
    assert not missing, f"modules without a docstring or __all__ (STYLE 9): {missing}"
